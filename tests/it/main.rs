#![recursion_limit = "256"]

mod changes;
mod crash;
mod http;
mod queries;
mod rebuild;
mod replay;
mod serve;
mod util;
