//! Process metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Counters are keyed by metric name and one optional label; gauges are read from the pipeline
//! when rendering. Invariant: every accepted, rejected or retried thing increments a counter
//! here; nothing in this module blocks for longer than a map update.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counter names and their help text; [`Metrics::add`] only takes these.
const COUNTERS: &[(&str, &str)] = &[
    (
        "hooklake_requests_total",
        "Webhook requests by outcome (accepted, or the rejection reason).",
    ),
    (
        "hooklake_dead_letters_total",
        "Authenticated requests refused for their body (4xx), by result: stored in rejected_events, or failed (disk or buffer full, log write failed).",
    ),
    (
        "hooklake_events_accepted_total",
        "Events accepted into the buffer, by event type.",
    ),
    (
        "hooklake_events_duplicate_total",
        "Events answered 200 but not taken (already written or pending), by event type.",
    ),
    (
        "hooklake_parse_errors_total",
        "Values that could not be read as their column's type.",
    ),
    (
        "hooklake_connections_refused_total",
        "Connections closed at once because max_connections were open.",
    ),
    (
        "hooklake_compactions_total",
        "Partitions compacted, by table.",
    ),
    (
        "hooklake_compaction_failures_total",
        "Partitions a compaction pass could not compact (skipped, tried again next pass), by table.",
    ),
    (
        "hooklake_quality_flags_total",
        "Contact rows flagged by a data-quality rule, by flag.",
    ),
    (
        "hooklake_recovered_events_total",
        "Events put back in the buffer from the write-ahead log at start.",
    ),
    (
        "hooklake_wal_damage_total",
        "Damaged places found in the write-ahead log at start (torn tails, corruption).",
    ),
    (
        "hooklake_dedup_purged_total",
        "Event ids forgotten because they are older than the dedup window.",
    ),
    (
        "hooklake_flushes_total",
        "Flushes by result (ok, empty, failed, held_back: not started for want of disk space).",
    ),
    (
        "hooklake_flush_triggers_total",
        "Flushes started, by trigger.",
    ),
    (
        "hooklake_rows_written_total",
        "Rows written to Parquet, by table.",
    ),
    (
        "hooklake_bytes_written_total",
        "Parquet bytes written, by table.",
    ),
    (
        "hooklake_files_written_total",
        "Parquet files published, by table.",
    ),
];

/// Counters and histograms of one process.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Seconds from receiving a webhook request to answering it (log fsync included).
    pub ack_latency: Histogram,
    /// Seconds a successful flush took, from taking the buffer to the commit.
    pub flush_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Mutex::default(),
            ack_latency: Histogram::new(
                "hooklake_ack_latency_seconds",
                "Time from receiving a webhook request to answering it.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            flush_duration: Histogram::new(
                "hooklake_flush_duration_seconds",
                "Time a successful flush took, commit included.",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
        }
    }
}

/// A Prometheus histogram with fixed buckets; lock-free to observe.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            name,
            help,
            bounds,
            counts,
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} histogram",
            self.name, self.help, self.name
        );
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{}_bucket{{le=\"{le}\"}} {cumulative}", self.name);
        }
        let _ = writeln!(
            out,
            "{}_sum {}",
            self.name,
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{}_count {cumulative}", self.name);
    }
}

/// Point-in-time values the renderer reads from the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub buffer_events: usize,
    pub buffer_bytes: usize,
    pub oldest_unflushed_age_secs: f64,
    pub last_flush_unix_secs: f64,
    pub ready: bool,
    /// Bytes of write-ahead log segments on disk.
    pub wal_bytes: u64,
    /// Bytes of the state store file.
    pub state_bytes: u64,
    /// Bytes of memory of the dedup index's filter.
    pub dedup_filter_bytes: u64,
    /// Ids in the dedup index, and the sorted runs holding its merged ids.
    pub dedup_ids: u64,
    pub dedup_runs: u64,
    /// Per table: published files, and the most files in one partition.
    pub files: Vec<(&'static str, u64, u64)>,
}

impl Metrics {
    /// Adds `n` to counter `name` with label value `label` (the label name is fixed per metric).
    pub fn add(&self, name: &'static str, label: &str, n: u64) {
        debug_assert!(
            COUNTERS.iter().any(|(c, _)| *c == name),
            "unregistered counter {name}"
        );
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry((name, label.to_string())).or_default() += n;
    }

    /// The current value of a counter (0 if never incremented).
    pub fn get(&self, name: &'static str, label: &str) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .get(&(name, label.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Renders every counter and the given gauges in the Prometheus text format.
    pub fn render(&self, gauges: Gauges) -> String {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = String::new();
        for (name, help) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, label), value) in &counters {
                if n == name && label.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else if n == name {
                    let _ = writeln!(
                        out,
                        "{name}{{{}=\"{}\"}} {value}",
                        label_name(name),
                        escape(label)
                    );
                }
            }
        }
        let gauge_lines: [(&str, &str, f64); 5] = [
            (
                "hooklake_buffer_events",
                "Events waiting in the buffer.",
                gauges.buffer_events as f64,
            ),
            (
                "hooklake_buffer_bytes",
                "Bytes counted against the buffer bound.",
                gauges.buffer_bytes as f64,
            ),
            (
                "hooklake_oldest_unflushed_event_age_seconds",
                "Age of the oldest event not yet flushed, buffered or in a flush not yet committed (0 when none).",
                gauges.oldest_unflushed_age_secs,
            ),
            (
                "hooklake_last_flush_timestamp_seconds",
                "Unix time of the last successful flush (0 before the first).",
                gauges.last_flush_unix_secs,
            ),
            (
                "hooklake_ready",
                "1 when the server accepts events.",
                if gauges.ready { 1.0 } else { 0.0 },
            ),
        ];
        for (name, help, value) in gauge_lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let sizes = [
            (
                "hooklake_wal_bytes",
                "Bytes of the write-ahead log directory on disk (segments are created at full size, zero-filled, plus one prepared spare).",
                gauges.wal_bytes,
            ),
            (
                "hooklake_state_store_bytes",
                "Bytes of the state store (dedup index, contact and call states).",
                gauges.state_bytes,
            ),
            (
                "hooklake_dedup_filter_bytes",
                "Bytes of memory of the Bloom filter in front of the dedup index (1.25-2.5 per id in the index).",
                gauges.dedup_filter_bytes,
            ),
            (
                "hooklake_dedup_ids",
                "Event ids in the dedup index (those received within the dedup window).",
                gauges.dedup_ids,
            ),
            (
                "hooklake_dedup_runs",
                "Sorted runs holding the dedup index's merged ids: a lookup the filter cannot answer reads one block of each.",
                gauges.dedup_runs,
            ),
        ];
        for (name, help, value) in sizes {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hooklake_parquet_files Published Parquet files, by table.\n# TYPE hooklake_parquet_files gauge"
        );
        for (table, files, _) in &gauges.files {
            let _ = writeln!(out, "hooklake_parquet_files{{table=\"{table}\"}} {files}");
        }
        let _ = writeln!(
            out,
            "# HELP hooklake_partition_files_max Most files in one partition, by table (compaction merges them).\n\
             # TYPE hooklake_partition_files_max gauge"
        );
        for (table, _, max) in &gauges.files {
            let _ = writeln!(
                out,
                "hooklake_partition_files_max{{table=\"{table}\"}} {max}"
            );
        }
        self.ack_latency.render(&mut out);
        self.flush_duration.render(&mut out);
        out
    }
}

fn label_name(metric: &str) -> &'static str {
    match metric {
        "hooklake_requests_total" => "outcome",
        "hooklake_events_accepted_total" | "hooklake_events_duplicate_total" => "event_type",
        "hooklake_flushes_total" | "hooklake_dead_letters_total" => "result",
        "hooklake_flush_triggers_total" => "trigger",
        "hooklake_quality_flags_total" => "flag",
        _ => "table",
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.add("hooklake_events_accepted_total", "call_booked", 2);
        m.add("hooklake_events_accepted_total", "call_booked", 1);
        m.add("hooklake_requests_total", "bad \"json\"", 1);
        assert_eq!(m.get("hooklake_events_accepted_total", "call_booked"), 3);
        let text = m.render(Gauges {
            buffer_events: 4,
            ready: true,
            ..Default::default()
        });
        assert!(
            text.contains("hooklake_events_accepted_total{event_type=\"call_booked\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("hooklake_requests_total{outcome=\"bad \\\"json\\\"\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nhooklake_buffer_events 4\n"), "{text}");
        assert!(text.contains("\nhooklake_ready 1\n"), "{text}");
        m.ack_latency.observe(Duration::from_micros(700));
        m.ack_latency.observe(Duration::from_secs(10));
        let text = m.render(Gauges::default());
        assert!(
            text.contains("hooklake_ack_latency_seconds_bucket{le=\"0.0005\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hooklake_ack_latency_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hooklake_ack_latency_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("hooklake_ack_latency_seconds_sum 10.0007\n"),
            "{text}"
        );
    }
}
