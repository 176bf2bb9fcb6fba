#![recursion_limit = "256"]

mod auth;
mod changes;
mod compact;
mod crash;
mod deadletter;
mod disk;
mod hostile;
mod http;
mod lake;
mod limit;
mod queries;
mod rebuild;
mod scaleout;
mod remote;
mod replay;
mod report;
mod score;
mod seaweed;
mod serve;
mod standalone;
mod tables;
mod triggers;
mod truth;
mod util;
