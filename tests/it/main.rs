#![recursion_limit = "256"]

mod auth;
mod changes;
mod compact;
mod crash;
mod deadletter;
mod hostile;
mod http;
mod lake;
mod queries;
mod rebuild;
mod replay;
mod serve;
mod truth;
mod util;
