//! hooklake turns iClosed CRM webhooks into a date-partitioned Parquet lake for DuckDB.
//!
//! One event's path, in module order: [`config`] resolves the settings; [`ingest`] takes the
//! HTTP request and [`event`] parses, routes and identifies each object in its body;
//! [`pipeline`] accepts the events into the [`buffer`] (the point where the 200 is earned) and,
//! when a trigger fires, has [`flatten`] turn them into rows of every table and [`sink`] write
//! those as Parquet files published atomically. [`server`] runs that lifecycle behind a socket,
//! [`replay`] runs it over files, [`metrics`] counts everything, [`query`] and [`report`] read the
//! lake back (tables of numbers; a page of charts), and [`cli`] is the command line.

pub mod config;
pub mod event;
pub mod json;
pub mod rejected;
pub mod ingest;
pub mod wal;
pub mod disk;
pub mod buffer;
pub mod state;
pub mod flatten;
pub mod score;
pub mod trigger;
pub mod sink;
pub mod compact;
pub mod lake;
pub mod pipeline;
pub mod derive;
pub mod metrics;
pub mod server;
pub mod replay;
pub mod replay_rejected;
pub mod rebuild;
pub mod client;
pub mod generate;
pub mod query;
pub mod report;
pub mod cli;
pub mod failpoint;
pub mod parallel;
pub mod memory;
