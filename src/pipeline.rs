//! The pipeline: the one place that sequences buffer -> flatten -> sink, and the flush triggers.
//!
//! [`Pipeline::accept`] is the ack point: when it returns `Ok`, the events are in the buffer and
//! the caller may answer 200. (The write-ahead log slots in here, before the buffer.)
//! [`Pipeline::flush`] takes the whole buffer, flattens and encodes it on a blocking thread, and
//! publishes the files; [`Pipeline::run_triggers`] fires flushes on the interval, the cron
//! schedule and the size limits. Invariants: one flush runs at a time; a failed flush puts its
//! events back in the buffer, so no accepted event is dropped by a flush error; the async
//! workers never encode Parquet or fsync.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Limits, Refused};
use crate::config::Config;
use crate::event::Envelope;
use crate::flatten;
use crate::metrics::{Gauges, Metrics};
use crate::sink::{FileWritten, Sink, SinkError, WriterSettings};

/// What made a flush happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushReason {
    Interval,
    Schedule,
    Size,
    Manual,
    Shutdown,
    Replay,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Interval => "interval",
            FlushReason::Schedule => "schedule",
            FlushReason::Size => "size",
            FlushReason::Manual => "manual",
            FlushReason::Shutdown => "shutdown",
            FlushReason::Replay => "replay",
        }
    }
}

/// What a flush wrote; also the body of `POST /admin/flush`.
#[derive(Debug, Clone, Serialize)]
pub struct FlushReport {
    /// Id shared by every file of the flush (`part-<flush_id>.parquet`); `None` when empty.
    pub flush_id: Option<String>,
    pub reason: FlushReason,
    /// Events flushed.
    pub events: usize,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, usize>,
    /// Files published.
    pub files: Vec<FileWritten>,
    /// Values that failed to parse (nulls with a `parse_errors` entry).
    pub parse_errors: usize,
    pub duration_ms: u64,
}

/// A flush failed; its events are back in the buffer.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("flush task failed: {0}")]
    Task(String),
}

/// Time-based flush triggers.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// Flush this often; `None` turns the interval off.
    pub interval: Option<Duration>,
    /// Flush at each occurrence of this cron schedule (UTC).
    pub schedule: Option<croner::Cron>,
}

impl Triggers {
    pub fn from_config(config: &Config) -> Triggers {
        Triggers {
            interval: (config.flush_interval_secs > 0)
                .then(|| Duration::from_secs(config.flush_interval_secs)),
            schedule: config.schedule(),
        }
    }
}

/// Buffer, sink and flush coordination, shared by the HTTP server and batch replay.
pub struct Pipeline {
    buffer: Mutex<Buffer>,
    sink: Sink,
    /// Held for the whole of a flush so flushes never overlap; holds the flush sequence number.
    flush_lock: tokio::sync::Mutex<u64>,
    /// Signalled when a size trigger fires.
    flush_due: Notify,
    metrics: Arc<Metrics>,
    /// Random per process, so two processes writing one directory never pick the same file name.
    instance: String,
    last_flush_unix_secs: AtomicI64,
}

impl Pipeline {
    /// Opens the data directory and builds an empty pipeline.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Pipeline>, SinkError> {
        let settings = WriterSettings {
            zstd_level: config.zstd_level,
            row_group_rows: config.row_group_rows,
        };
        let sink = Sink::open(&config.data_dir, settings, config.partition_offset())?;
        let limits = Limits {
            flush_max_rows: config.flush_max_rows,
            flush_max_bytes: config.flush_max_bytes,
            max_bytes: config.buffer_max_bytes,
        };
        let instance = format!(
            "{:08x}",
            RandomState::new().hash_one(std::process::id()) as u32
        );
        Ok(Arc::new(Pipeline {
            buffer: Mutex::new(Buffer::new(limits)),
            sink,
            flush_lock: tokio::sync::Mutex::new(0),
            flush_due: Notify::new(),
            metrics,
            instance,
            last_flush_unix_secs: AtomicI64::new(0),
        }))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a batch of events, whole or not at all (a refused batch is handed back). Returns
    /// whether a size trigger fired; the trigger task is then notified.
    pub fn accept(&self, batch: Vec<Envelope>) -> Result<bool, Refused> {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for e in &batch {
            *counts.entry(e.event_type.as_str()).or_default() += 1;
        }
        let due = self.buffer().push_all(batch)?;
        for (event_type, n) in counts {
            self.metrics
                .add("hooklake_events_accepted_total", event_type, n);
        }
        if due {
            self.flush_due.notify_one();
        }
        Ok(due)
    }

    /// Current gauge values for `/metrics`.
    pub fn gauges(&self, ready: bool) -> Gauges {
        let buffer = self.buffer();
        let now_us = Utc::now().timestamp_micros();
        Gauges {
            buffer_events: buffer.len(),
            buffer_bytes: buffer.bytes(),
            oldest_unflushed_age_secs: buffer
                .oldest_received_at_us()
                .map(|t| (now_us - t).max(0) as f64 / 1e6)
                .unwrap_or(0.0),
            last_flush_unix_secs: self.last_flush_unix_secs.load(Ordering::Relaxed) as f64,
            ready,
        }
    }

    /// Flushes everything buffered now. On error the events are back in the buffer.
    pub async fn flush(&self, reason: FlushReason) -> Result<FlushReport, FlushError> {
        let mut seq = self.flush_lock.lock().await;
        let started = Instant::now();
        self.metrics
            .add("hooklake_flush_triggers_total", reason.as_str(), 1);
        let events = self.buffer().take();
        let mut report = FlushReport {
            flush_id: None,
            reason,
            events: events.len(),
            rows: BTreeMap::new(),
            files: Vec::new(),
            parse_errors: 0,
            duration_ms: 0,
        };
        if events.is_empty() {
            self.metrics.add("hooklake_flushes_total", "empty", 1);
            return Ok(report);
        }
        *seq += 1;
        let flush_id = format!(
            "{}-{:04}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
            *seq % 10_000,
            self.instance
        );
        let sink = self.sink.clone();
        let id = flush_id.clone();
        let task = tokio::task::spawn_blocking(move || {
            let tables = flatten::flatten(&events);
            let rows: BTreeMap<&'static str, usize> = tables.row_counts().into_iter().collect();
            let parse_errors = tables.parse_error_count();
            let result = sink.write(tables, &id);
            (events, rows, parse_errors, result)
        });
        let (events, rows, parse_errors, result) = match task.await {
            Ok(done) => done,
            Err(e) => {
                // The events moved into the task are gone only if the task panicked; flattening
                // and writing do not panic by design, so this is a bug worth a loud log.
                self.metrics.add("hooklake_flushes_total", "failed", 1);
                tracing::error!(error = %e, "flush task panicked");
                return Err(FlushError::Task(e.to_string()));
            }
        };
        match result {
            Ok(files) => {
                for f in &files {
                    self.metrics.add("hooklake_files_written_total", f.table, 1);
                    self.metrics
                        .add("hooklake_bytes_written_total", f.table, f.bytes);
                }
                for (table, n) in &rows {
                    self.metrics
                        .add("hooklake_rows_written_total", table, *n as u64);
                }
                self.metrics
                    .add("hooklake_parse_errors_total", "all", parse_errors as u64);
                self.metrics.add("hooklake_flushes_total", "ok", 1);
                self.last_flush_unix_secs
                    .store(Utc::now().timestamp(), Ordering::Relaxed);
                report.flush_id = Some(flush_id);
                report.rows = rows;
                report.files = files;
                report.parse_errors = parse_errors;
                report.duration_ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    flush_id = report.flush_id.as_deref().unwrap_or(""),
                    reason = reason.as_str(),
                    events = report.events,
                    files = report.files.len(),
                    duration_ms = report.duration_ms,
                    "flushed"
                );
                Ok(report)
            }
            Err(e) => {
                self.metrics.add("hooklake_flushes_total", "failed", 1);
                tracing::error!(error = %e, events = events.len(), "flush failed; events kept for the next flush");
                self.buffer().restore(events);
                Err(e.into())
            }
        }
    }

    /// Fires flushes on the time triggers and size triggers until `shutdown` is cancelled.
    ///
    /// The final flush at shutdown is the caller's, after it has stopped accepting events.
    pub async fn run_triggers(self: Arc<Self>, triggers: Triggers, shutdown: CancellationToken) {
        let mut interval = triggers.interval.map(|period| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        // The last occurrence of the schedule that fired: the next one is strictly after it, so
        // a timer that wakes a little early cannot fire the same occurrence twice.
        let mut last_occurrence: Option<DateTime<Utc>> = None;
        loop {
            let next = triggers
                .schedule
                .as_ref()
                .and_then(|s| next_occurrence(s, last_occurrence));
            let until_schedule = next.map(|(_, wait)| wait);
            let reason = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { interval.as_mut().expect("guarded").tick().await }, if interval.is_some() => {
                    FlushReason::Interval
                }
                _ = tokio::time::sleep(until_schedule.unwrap_or_default()), if until_schedule.is_some() => {
                    last_occurrence = next.map(|(at, _)| at);
                    FlushReason::Schedule
                }
                _ = self.flush_due.notified() => FlushReason::Size,
            };
            if self.flush(reason).await.is_err() {
                // Back off so a persistent failure (disk full) does not spin; events stay buffered.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The schedule's next occurrence strictly after both now and `after`, and the wait until it.
fn next_occurrence(
    schedule: &croner::Cron,
    after: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, Duration)> {
    let now = Utc::now();
    let from = after.map_or(now, |a| a.max(now));
    let next = schedule.find_next_occurrence(&from, false).ok()?;
    Some((next, (next - now).to_std().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Arc<Pipeline> {
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        edit(&mut config);
        config.validate().unwrap();
        Pipeline::new(&config, Arc::new(Metrics::default())).unwrap()
    }

    fn event(n: i64) -> Vec<Envelope> {
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

    fn flushes(p: &Pipeline, result: &str) -> u64 {
        p.metrics().get("hooklake_flushes_total", result)
    }

    /// Lets the trigger task and the flush's blocking thread run to completion without moving
    /// the paused clock: yields to the runtime, and gives the blocking pool real time.
    async fn settle(p: &Pipeline, result: &str, expected: u64) {
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

    #[tokio::test(start_paused = true)]
    async fn interval_trigger_fires_and_skips_empty_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |c| c.flush_interval_secs = 60);
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            p.clone()
                .run_triggers(Triggers::from_config(&Config::default()), stop.clone()),
        );
        p.accept(event(1)).unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(flushes(&p, "ok"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle(&p, "ok", 1).await;
        assert_eq!(
            p.metrics().get("hooklake_flush_triggers_total", "interval"),
            1
        );
        assert_eq!(p.gauges(true).buffer_events, 0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle(&p, "empty", 1).await;
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_trigger_fires() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |_| {});
        let stop = CancellationToken::new();
        let triggers = Triggers {
            interval: None,
            schedule: crate::config::parse_schedule("* * * * *").ok(),
        };
        let task = tokio::spawn(p.clone().run_triggers(triggers, stop.clone()));
        p.accept(event(1)).unwrap();
        // The next minute boundary is at most 60 s of (paused) time away.
        tokio::time::sleep(Duration::from_secs(61)).await;
        settle(&p, "ok", 1).await;
        // The schedule follows the wall clock while the test clock is paused: within 61 s of
        // test time the next occurrence and at most one more (on an empty buffer) can fire.
        let fired = p.metrics().get("hooklake_flush_triggers_total", "schedule");
        assert!((1..=2).contains(&fired), "{fired}");
        assert_eq!(
            p.metrics().get("hooklake_flush_triggers_total", "interval"),
            0
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn size_trigger_fires_without_waiting_for_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |c| c.flush_max_rows = 2);
        let stop = CancellationToken::new();
        let triggers = Triggers {
            interval: None,
            schedule: None,
        };
        let task = tokio::spawn(p.clone().run_triggers(triggers, stop.clone()));
        assert!(!p.accept(event(1)).unwrap());
        assert!(p.accept(event(2)).unwrap());
        settle(&p, "ok", 1).await;
        assert_eq!(p.metrics().get("hooklake_flush_triggers_total", "size"), 1);
        assert_eq!(
            p.metrics()
                .get("hooklake_rows_written_total", "contact_events"),
            2
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |_| {});
        p.accept(event(1)).unwrap();
        std::fs::write(dir.path().join("raw_events"), b"in the way").unwrap();
        assert!(p.flush(FlushReason::Manual).await.is_err());
        assert_eq!(p.gauges(true).buffer_events, 1);
        std::fs::remove_file(dir.path().join("raw_events")).unwrap();
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.events, 1);
        assert_eq!(report.rows["raw_events"], 1);
        assert_eq!(report.files.len(), 2);
    }
}
