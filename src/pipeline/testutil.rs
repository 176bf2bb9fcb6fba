//! Helpers shared by the pipeline's tests: pipelines in a temporary directory, requests as
//! the server logs them, and the rows a flush published.
//! Invariant: the free-space guard is off (`min_free_bytes = 0`) unless a test sets it, so the
//! tests do not depend on the host's disk.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::event::{self, Envelope};
use crate::metrics::Metrics;
use crate::wal::Entry;

use super::{Mode, Outcome, Pipeline, Recovery};

pub(super) fn pipeline(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Arc<Pipeline> {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        // The free-space guard has its own tests; these must not depend on the host's disk.
        min_free_bytes: 0,
        ..Config::default()
    };
    edit(&mut config);
    config.validate().unwrap();
    open(&config, Mode::Unlogged).0
}

pub(super) fn open(config: &Config, mode: Mode) -> (Arc<Pipeline>, Recovery) {
    Pipeline::open(config, Arc::new(Metrics::default()), mode).unwrap()
}

pub(super) fn event(n: i64) -> Vec<Envelope> {
    vec![
        Envelope::parse_one(
            &format!(r#"{{"id": {n}, "previewId": "p"}}"#),
            None,
            1_772_000_000_000_000,
            "/w",
        )
        .unwrap(),
    ]
}

pub(super) fn flushes(p: &Pipeline, result: &str) -> u64 {
    p.metrics().get("hooklake_flushes_total", result)
}

/// Lets the trigger task and the flush's blocking thread run to completion without moving
/// the paused clock: yields to the runtime, and gives the blocking pool real time.
pub(super) async fn settle(p: &Pipeline, result: &str, expected: u64) {
    for _ in 0..10_000 {
        if flushes(p, result) >= expected {
            return;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "expected {expected} {result} flushes, saw {}",
        flushes(p, result)
    );
}

/// A request as the server logs it, holding one contact object.
pub(super) fn request(n: i64) -> (Entry, Vec<Envelope>) {
    request_with(format!(
        r#"[{{"id": {n}, "previewId": "p", "updatedAt": "2026-03-04T10:00:00Z"}}]"#
    ))
}

/// A request as the server logs it, with `body`.
pub(super) fn request_with(body: String) -> (Entry, Vec<Envelope>) {
    let entry = Entry {
        received_at_us: 1_772_000_000_000_000,
        url_kind: None,
        source_path: "/w".into(),
        body: body.into_bytes(),
    };
    let events = event::parse_body(
        &entry.body,
        None,
        entry.received_at_us,
        "/w",
        event::BodyLimits::LOGGED,
    )
    .unwrap();
    (entry, events)
}

pub(super) fn logged_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        // The free-space guard has its own tests; these must not depend on the host's disk.
        min_free_bytes: 0,
        ..Config::default()
    }
}

/// The published files of `table` (relative paths, sorted).
pub(super) fn published(dir: &std::path::Path, table: &str) -> Vec<String> {
    crate::sink::published_files(dir, table)
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// Contact rows in the published files, by contact id.
pub(super) fn contact_rows(dir: &std::path::Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for path in crate::sink::published_files(dir, "contact_events").unwrap() {
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("contact_id").unwrap();
            let column = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
                column.as_ref(),
            );
            ids.extend(column.values().iter().copied());
        }
    }
    ids.sort();
    ids
}

pub(super) async fn accept_request(p: &Arc<Pipeline>, n: i64) -> Outcome {
    let (entry, events) = request(n);
    p.accept(entry, events).await.unwrap()
}

/// The flush numbers of a table's live files in its Delta log, sorted.
pub(super) fn delta_flushes(dir: &std::path::Path, table: &str) -> Vec<u64> {
    let live = crate::pipeline::live_local_files(dir).unwrap();
    let mut seqs: Vec<u64> = live[table]
        .iter()
        .flatten()
        .filter_map(|p| crate::sink::flush_seq_of(p.file_name()?.to_str()?))
        .collect();
    seqs.sort();
    seqs
}
