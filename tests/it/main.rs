#![recursion_limit = "256"]

mod auth;
mod changes;
mod compact;
mod crash;
mod deadletter;
mod disk;
mod hostile;
mod http;
mod limit;
mod queries;
mod rebuild;
mod replay;
mod report;
mod serve;
mod standalone;
mod truth;
mod util;
