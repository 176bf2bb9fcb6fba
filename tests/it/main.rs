#![recursion_limit = "256"]

mod http;
mod queries;
mod replay;
mod serve;
mod util;
