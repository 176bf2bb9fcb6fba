//! Process metrics, kept in a `prometheus-client` registry and rendered at `GET /metrics` in
//! the Prometheus text format (version 0.0.4).
//!
//! Counters are named by their full sample name (`hooklake_requests_total`) and carry at most
//! one label, whose name is fixed per counter; gauges are read from the pipeline when rendering.
//! The crate owns the format: escaping, number formatting, `_total` suffixes, histogram buckets.
//! Invariant: every accepted, rejected or retried thing increments a counter here; nothing in
//! this module blocks for longer than a map update, except a render, which holds only other
//! renders back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The one label of a labelled metric: its name and value.
type Label = [(&'static str, String); 1];

/// Counter names, the name of their one label (if any) and their help text; [`Metrics::add`]
/// only takes these.
const COUNTERS: &[(&str, Option<&str>, &str)] = &[
    (
        "hooklake_requests_total",
        Some("outcome"),
        "Webhook requests by outcome (accepted, or the rejection reason).",
    ),
    (
        "hooklake_dead_letters_total",
        Some("result"),
        "Authenticated requests refused for their body (4xx), by result: stored in rejected_events, or failed (disk or buffer full, log write failed).",
    ),
    (
        "hooklake_events_accepted_total",
        Some("event_type"),
        "Events accepted into the buffer, by event type.",
    ),
    (
        "hooklake_events_duplicate_total",
        Some("event_type"),
        "Events answered 200 but not taken (already written or pending), by event type.",
    ),
    (
        "hooklake_parse_errors_total",
        None,
        "Values that could not be read as their column's type.",
    ),
    (
        "hooklake_connections_refused_total",
        None,
        "Connections closed at once because max_connections were open.",
    ),
    (
        "hooklake_compactions_total",
        Some("table"),
        "Partitions compacted, by table.",
    ),
    (
        "hooklake_compaction_failures_total",
        Some("table"),
        "Partitions a compaction pass could not compact (skipped, tried again next pass), by table.",
    ),
    (
        "hooklake_quality_flags_total",
        Some("flag"),
        "Contact rows flagged by a data-quality rule, by flag.",
    ),
    (
        "hooklake_recovered_events_total",
        None,
        "Events put back in the buffer from the write-ahead log at start.",
    ),
    (
        "hooklake_wal_damage_total",
        None,
        "Damaged places found in the write-ahead log at start (torn tails, corruption).",
    ),
    (
        "hooklake_dedup_purged_total",
        None,
        "Event ids forgotten because they are older than the dedup window.",
    ),
    (
        "hooklake_flushes_total",
        Some("result"),
        "Flushes by result (ok, empty, failed, held_back: not started for want of disk space).",
    ),
    (
        "hooklake_flush_triggers_total",
        Some("trigger"),
        "Flushes started, by trigger.",
    ),
    (
        "hooklake_rows_written_total",
        Some("table"),
        "Rows written to Parquet, by table.",
    ),
    (
        "hooklake_bytes_written_total",
        Some("table"),
        "Parquet bytes written, by table.",
    ),
    (
        "hooklake_files_written_total",
        Some("table"),
        "Parquet files published, by table.",
    ),
    (
        "hooklake_lake_uploaded_bytes_total",
        None,
        "Bytes of files uploaded to a remote lake by flushes.",
    ),
    (
        "hooklake_lake_uploaded_files_total",
        None,
        "Files uploaded to a remote lake by flushes.",
    ),
    (
        "hooklake_lake_errors_total",
        Some("kind"),
        "Failed uploads and Delta commits of flushes, by kind (unavailable, throttled, auth, not_found, conflict, clash, conflicts: too many lost races, other).",
    ),
    (
        "hooklake_deriver_events_read_total",
        None,
        "Events the deriver read from raw_events (each receiver's copy of a redelivery counted).",
    ),
    (
        "hooklake_deriver_lease_taken_total",
        None,
        "Times this process took the deriver lease.",
    ),
    (
        "hooklake_delta_commits_total",
        Some("table"),
        "Delta log commits of flushes, by table.",
    ),
    (
        "hooklake_delta_commit_retries_total",
        Some("table"),
        "Races for a Delta log version that a flush's commit lost and retried, by table.",
    ),
    (
        "hooklake_trigger_facts_total",
        Some("trigger"),
        "Facts a workflow trigger fired on, put in the outbox by a flush's commit, by trigger.",
    ),
    (
        "hooklake_trigger_attempts_total",
        Some("outcome"),
        "Trigger delivery attempts, by outcome (delivered, retrying, given_up).",
    ),
    (
        "hooklake_trigger_delivered_total",
        Some("trigger"),
        "Trigger requests answered with a 2xx, by trigger.",
    ),
    (
        "hooklake_trigger_given_up_total",
        Some("trigger"),
        "Trigger requests given up once the retry schedule was used up, by trigger.",
    ),
];

/// A counter of [`COUNTERS`]: a single value, or one value per value of its label.
#[derive(Debug)]
enum CounterKind {
    Plain(Counter),
    Labelled(&'static str, Family<Label, Counter>),
}

/// Gauges set from [`Gauges`] at each render.
#[derive(Debug, Default)]
struct GaugeSet {
    buffer_events: Gauge,
    buffer_bytes: Gauge,
    oldest_unflushed_age_secs: Gauge<f64, AtomicU64>,
    last_flush_unix_secs: Gauge<f64, AtomicU64>,
    ready: Gauge,
    wal_bytes: Gauge,
    state_bytes: Gauge,
    dedup_filter_bytes: Gauge,
    score_keys_memory_bytes: Gauge,
    dedup_ids: Gauge,
    dedup_runs: Gauge,
    parquet_files: Family<Label, Gauge>,
    partition_files_max: Family<Label, Gauge>,
    trigger_outbox: Gauge,
    delta_version: Family<Label, Gauge>,
    deriver_lease_held: Gauge,
    deriver_raw_version: Gauge,
    deriver_lag_seconds: Gauge<f64, AtomicU64>,
    deriver_lag_events: Gauge,
    deriver_receivers: Gauge,
    receiver_watermark_age_seconds: Gauge<f64, AtomicU64>,
}

/// What the deriver of a shared lake reports (`/metrics` of `serve --role derive`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeriverGauges {
    pub lease_held: bool,
    /// The `raw_events` version up to which every event is derived (-1: none).
    pub raw_version: i64,
    /// Age of the oldest event read and not derived yet (0 when none waits).
    pub lag_seconds: f64,
    /// Events read from `raw_events` and not derived yet.
    pub lag_events: u64,
    /// Receivers whose watermark the deriver waits for.
    pub receivers: u64,
}

/// Counters, gauges and histograms of one process.
#[derive(Debug)]
pub struct Metrics {
    /// Every metric, in the order `/metrics` shows them.
    registry: Registry,
    /// The counters of [`COUNTERS`] by name, sharing their values with the registry.
    counters: HashMap<&'static str, CounterKind>,
    /// The gauges, sharing their values with the registry.
    gauges: GaugeSet,
    /// Held while the gauges are set and the registry encoded, so that two renders do not
    /// mix their gauge values.
    rendering: Mutex<()>,
    /// Seconds from receiving a webhook request to answering it (log fsync included).
    pub ack_latency: Histogram,
    /// Seconds a successful flush took, from taking the buffer to the commit.
    pub flush_duration: Histogram,
    /// Seconds a flush's uploads to a remote lake took.
    pub lake_upload: Histogram,
    /// Seconds a trigger delivery attempt took, to its answer or failure.
    pub trigger_latency: Histogram,
    /// Seconds from a fact entering the outbox to its delivery at the first attempt.
    pub trigger_first_delivery: Histogram,
}

/// Registers `metric` under `name` (a counter's without its `_total`, which the encoder adds)
/// with `help`, whose final period the encoder adds too.
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    let help = help.strip_suffix('.').unwrap_or(help);
    registry.register(name, help, metric);
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        for (name, label, help) in COUNTERS {
            let family = name
                .strip_suffix("_total")
                .expect("counter names end in _total");
            let kind = match label {
                None => {
                    let counter = Counter::default();
                    register(&mut registry, family, help, counter.clone());
                    CounterKind::Plain(counter)
                }
                Some(label) => {
                    let counters = Family::default();
                    register(&mut registry, family, help, counters.clone());
                    CounterKind::Labelled(label, counters)
                }
            };
            counters.insert(*name, kind);
        }
        let gauges = GaugeSet::default();
        let g = &gauges;
        register(
            &mut registry,
            "hooklake_buffer_events",
            "Events waiting in the buffer.",
            g.buffer_events.clone(),
        );
        register(
            &mut registry,
            "hooklake_buffer_bytes",
            "Bytes counted against the buffer bound.",
            g.buffer_bytes.clone(),
        );
        register(
            &mut registry,
            "hooklake_oldest_unflushed_event_age_seconds",
            "Age of the oldest event not yet flushed, buffered or in a flush not yet committed (0 when none).",
            g.oldest_unflushed_age_secs.clone(),
        );
        register(
            &mut registry,
            "hooklake_last_flush_timestamp_seconds",
            "Unix time of the last successful flush (0 before the first).",
            g.last_flush_unix_secs.clone(),
        );
        register(
            &mut registry,
            "hooklake_ready",
            "1 when the server accepts events.",
            g.ready.clone(),
        );
        let sizes: [(&str, &str, &Gauge); 6] = [
            (
                "hooklake_wal_bytes",
                "Bytes of the write-ahead log directory on disk (segments are created at full size, zero-filled, plus one prepared spare).",
                &g.wal_bytes,
            ),
            (
                "hooklake_state_store_bytes",
                "Bytes of the state store (dedup index, contact and call states).",
                &g.state_bytes,
            ),
            (
                "hooklake_dedup_filter_bytes",
                "Bytes of memory of the Bloom filter in front of the dedup index (1.25-2.5 per id in the index).",
                &g.dedup_filter_bytes,
            ),
            (
                "hooklake_score_keys_memory_bytes",
                "Bytes of memory of lead scoring's recent contact-key records (at most about 16 MiB) and of the Bloom filters of the runs of merged ones (1.25-2.5 bytes per key in a run, 64 KiB at least per run).",
                &g.score_keys_memory_bytes,
            ),
            (
                "hooklake_dedup_ids",
                "Event ids in the dedup index (those received within the dedup window).",
                &g.dedup_ids,
            ),
            (
                "hooklake_dedup_runs",
                "Sorted runs holding the dedup index's merged ids: a lookup the filter cannot answer reads one block of each.",
                &g.dedup_runs,
            ),
        ];
        for (name, help, gauge) in sizes {
            register(&mut registry, name, help, gauge.clone());
        }
        register(
            &mut registry,
            "hooklake_parquet_files",
            "Published Parquet files, by table.",
            g.parquet_files.clone(),
        );
        register(
            &mut registry,
            "hooklake_partition_files_max",
            "Most files in one partition, by table (compaction merges them).",
            g.partition_files_max.clone(),
        );
        register(
            &mut registry,
            "hooklake_trigger_outbox",
            "Trigger facts waiting for a delivery attempt (given-up ones excluded).",
            g.trigger_outbox.clone(),
        );
        register(
            &mut registry,
            "hooklake_deriver_lease_held",
            "1 while this deriver holds the lake's deriver lease (0: a standby).",
            g.deriver_lease_held.clone(),
        );
        register(
            &mut registry,
            "hooklake_deriver_raw_events_version",
            "The raw_events log version up to which the deriver derived every event (-1: none).",
            g.deriver_raw_version.clone(),
        );
        register(
            &mut registry,
            "hooklake_deriver_lag_seconds",
            "Age of the oldest event the deriver read from raw_events and has not derived yet (0 when none waits).",
            g.deriver_lag_seconds.clone(),
        );
        register(
            &mut registry,
            "hooklake_deriver_lag_events",
            "Events the deriver read from raw_events and has not derived yet.",
            g.deriver_lag_events.clone(),
        );
        register(
            &mut registry,
            "hooklake_deriver_receivers",
            "Receivers whose watermark the deriver waits for (those that reported within receiver_timeout_secs).",
            g.deriver_receivers.clone(),
        );
        register(
            &mut registry,
            "hooklake_receiver_watermark_age_seconds",
            "How far behind now the watermark this receiver last reported to the deriver is.",
            g.receiver_watermark_age_seconds.clone(),
        );
        let ack_latency = Histogram::new(
            &mut registry,
            "hooklake_ack_latency_seconds",
            "Time from receiving a webhook request to answering it.",
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        let flush_duration = Histogram::new(
            &mut registry,
            "hooklake_flush_duration_seconds",
            "Time a successful flush took, commit included.",
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        );
        register(
            &mut registry,
            "hooklake_delta_version",
            "The last version this process committed to each table's Delta log, by table.",
            g.delta_version.clone(),
        );
        let lake_upload = Histogram::new(
            &mut registry,
            "hooklake_lake_upload_seconds",
            "Time a flush's uploads to a remote lake took (all its files, several at once).",
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        );
        let trigger_latency = Histogram::new(
            &mut registry,
            "hooklake_trigger_attempt_seconds",
            "Time a trigger delivery attempt took, to its answer or failure.",
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        );
        let trigger_first_delivery = Histogram::new(
            &mut registry,
            "hooklake_trigger_delivery_delay_seconds",
            "Time from a fact entering the outbox (its flush's commit) to its delivery, for facts delivered at the first attempt.",
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        );
        Metrics {
            registry,
            counters,
            gauges,
            rendering: Mutex::new(()),
            ack_latency,
            flush_duration,
            lake_upload,
            trigger_latency,
            trigger_first_delivery,
        }
    }
}

/// A Prometheus histogram of durations in seconds, with fixed buckets.
#[derive(Debug)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new(registry: &mut Registry, name: &str, help: &str, bounds: &[f64]) -> Histogram {
        let histogram =
            prometheus_client::metrics::histogram::Histogram::new(bounds.iter().copied());
        register(registry, name, help, histogram.clone());
        Histogram(histogram)
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
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
    /// Bytes of memory of lead scoring's recent key records and key filter.
    pub score_keys_memory_bytes: u64,
    /// Ids in the dedup index, and the sorted runs holding its merged ids.
    pub dedup_ids: u64,
    pub dedup_runs: u64,
    /// Per table: published files, and the most files in one partition.
    pub files: Vec<(&'static str, u64, u64)>,
    /// Per table: the last version this process committed to its Delta log.
    pub delta_versions: Vec<(&'static str, i64)>,
}

/// A count as a gauge value (gauges are signed; no count here comes near `i64::MAX`).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Adds `n` to counter `name` with label value `label` (the label name is fixed per metric;
    /// an unlabelled counter ignores `label`).
    pub fn add(&self, name: &'static str, label: &str, n: u64) {
        match self.counters.get(name) {
            Some(CounterKind::Plain(counter)) => {
                counter.inc_by(n);
            }
            Some(CounterKind::Labelled(label_name, family)) => {
                family
                    .get_or_create(&[(*label_name, label.to_string())])
                    .inc_by(n);
            }
            None => debug_assert!(false, "unregistered counter {name}"),
        }
    }

    /// Sets the number of trigger facts waiting for an attempt (the sender reads it each pass).
    /// Sets the deriver's gauges.
    pub fn set_deriver(&self, d: DeriverGauges) {
        let g = &self.gauges;
        g.deriver_lease_held.set(i64::from(d.lease_held));
        g.deriver_raw_version.set(d.raw_version);
        g.deriver_lag_seconds.set(d.lag_seconds);
        g.deriver_lag_events.set(signed(d.lag_events));
        g.deriver_receivers.set(signed(d.receivers));
    }

    /// Sets a receiver's watermark age: how far behind now its reported watermark is.
    pub fn set_receiver_watermark_age(&self, secs: f64) {
        self.gauges.receiver_watermark_age_seconds.set(secs);
    }

    pub fn set_trigger_outbox(&self, waiting: u64) {
        self.gauges.trigger_outbox.set(signed(waiting));
    }

    /// The current value of a counter (0 if never incremented).
    pub fn get(&self, name: &'static str, label: &str) -> u64 {
        match self.counters.get(name) {
            Some(CounterKind::Plain(counter)) => counter.get(),
            Some(CounterKind::Labelled(label_name, family)) => family
                .get(&[(*label_name, label.to_string())])
                .map_or(0, |counter| counter.get()),
            None => 0,
        }
    }

    /// Renders every metric, with the given gauge values, in the Prometheus text format.
    pub fn render(&self, values: Gauges) -> String {
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        let g = &self.gauges;
        g.buffer_events.set(signed(values.buffer_events as u64));
        g.buffer_bytes.set(signed(values.buffer_bytes as u64));
        g.oldest_unflushed_age_secs
            .set(values.oldest_unflushed_age_secs);
        g.last_flush_unix_secs.set(values.last_flush_unix_secs);
        g.ready.set(i64::from(values.ready));
        g.wal_bytes.set(signed(values.wal_bytes));
        g.state_bytes.set(signed(values.state_bytes));
        g.dedup_filter_bytes.set(signed(values.dedup_filter_bytes));
        g.score_keys_memory_bytes
            .set(signed(values.score_keys_memory_bytes));
        g.dedup_ids.set(signed(values.dedup_ids));
        g.dedup_runs.set(signed(values.dedup_runs));
        g.parquet_files.clear();
        g.partition_files_max.clear();
        for (table, files, most) in &values.files {
            let label = [("table", table.to_string())];
            g.parquet_files.get_or_create(&label).set(signed(*files));
            g.partition_files_max
                .get_or_create(&label)
                .set(signed(*most));
        }
        g.delta_version.clear();
        for (table, version) in &values.delta_versions {
            g.delta_version
                .get_or_create(&[("table", table.to_string())])
                .set(*version);
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every sample name `/metrics` shows, with its type, its help text and its label names.
    const INVENTORY: &[(&str, &str, &[&str], &str)] = &[
        (
            "hooklake_requests_total",
            "counter",
            &["outcome"],
            "Webhook requests by outcome (accepted, or the rejection reason).",
        ),
        (
            "hooklake_dead_letters_total",
            "counter",
            &["result"],
            "Authenticated requests refused for their body (4xx), by result: stored in rejected_events, or failed (disk or buffer full, log write failed).",
        ),
        (
            "hooklake_events_accepted_total",
            "counter",
            &["event_type"],
            "Events accepted into the buffer, by event type.",
        ),
        (
            "hooklake_events_duplicate_total",
            "counter",
            &["event_type"],
            "Events answered 200 but not taken (already written or pending), by event type.",
        ),
        (
            "hooklake_parse_errors_total",
            "counter",
            &[],
            "Values that could not be read as their column's type.",
        ),
        (
            "hooklake_connections_refused_total",
            "counter",
            &[],
            "Connections closed at once because max_connections were open.",
        ),
        (
            "hooklake_compactions_total",
            "counter",
            &["table"],
            "Partitions compacted, by table.",
        ),
        (
            "hooklake_compaction_failures_total",
            "counter",
            &["table"],
            "Partitions a compaction pass could not compact (skipped, tried again next pass), by table.",
        ),
        (
            "hooklake_quality_flags_total",
            "counter",
            &["flag"],
            "Contact rows flagged by a data-quality rule, by flag.",
        ),
        (
            "hooklake_recovered_events_total",
            "counter",
            &[],
            "Events put back in the buffer from the write-ahead log at start.",
        ),
        (
            "hooklake_wal_damage_total",
            "counter",
            &[],
            "Damaged places found in the write-ahead log at start (torn tails, corruption).",
        ),
        (
            "hooklake_dedup_purged_total",
            "counter",
            &[],
            "Event ids forgotten because they are older than the dedup window.",
        ),
        (
            "hooklake_flushes_total",
            "counter",
            &["result"],
            "Flushes by result (ok, empty, failed, held_back: not started for want of disk space).",
        ),
        (
            "hooklake_flush_triggers_total",
            "counter",
            &["trigger"],
            "Flushes started, by trigger.",
        ),
        (
            "hooklake_rows_written_total",
            "counter",
            &["table"],
            "Rows written to Parquet, by table.",
        ),
        (
            "hooklake_bytes_written_total",
            "counter",
            &["table"],
            "Parquet bytes written, by table.",
        ),
        (
            "hooklake_files_written_total",
            "counter",
            &["table"],
            "Parquet files published, by table.",
        ),
        (
            "hooklake_buffer_events",
            "gauge",
            &[],
            "Events waiting in the buffer.",
        ),
        (
            "hooklake_buffer_bytes",
            "gauge",
            &[],
            "Bytes counted against the buffer bound.",
        ),
        (
            "hooklake_oldest_unflushed_event_age_seconds",
            "gauge",
            &[],
            "Age of the oldest event not yet flushed, buffered or in a flush not yet committed (0 when none).",
        ),
        (
            "hooklake_last_flush_timestamp_seconds",
            "gauge",
            &[],
            "Unix time of the last successful flush (0 before the first).",
        ),
        (
            "hooklake_ready",
            "gauge",
            &[],
            "1 when the server accepts events.",
        ),
        (
            "hooklake_wal_bytes",
            "gauge",
            &[],
            "Bytes of the write-ahead log directory on disk (segments are created at full size, zero-filled, plus one prepared spare).",
        ),
        (
            "hooklake_state_store_bytes",
            "gauge",
            &[],
            "Bytes of the state store (dedup index, contact and call states).",
        ),
        (
            "hooklake_dedup_filter_bytes",
            "gauge",
            &[],
            "Bytes of memory of the Bloom filter in front of the dedup index (1.25-2.5 per id in the index).",
        ),
        (
            "hooklake_score_keys_memory_bytes",
            "gauge",
            &[],
            "Bytes of memory of lead scoring's recent contact-key records (at most about 16 MiB) and of the Bloom filters of the runs of merged ones (1.25-2.5 bytes per key in a run, 64 KiB at least per run).",
        ),
        (
            "hooklake_dedup_ids",
            "gauge",
            &[],
            "Event ids in the dedup index (those received within the dedup window).",
        ),
        (
            "hooklake_dedup_runs",
            "gauge",
            &[],
            "Sorted runs holding the dedup index's merged ids: a lookup the filter cannot answer reads one block of each.",
        ),
        (
            "hooklake_parquet_files",
            "gauge",
            &["table"],
            "Published Parquet files, by table.",
        ),
        (
            "hooklake_partition_files_max",
            "gauge",
            &["table"],
            "Most files in one partition, by table (compaction merges them).",
        ),
        (
            "hooklake_ack_latency_seconds_bucket",
            "histogram",
            &["le"],
            "Time from receiving a webhook request to answering it.",
        ),
        (
            "hooklake_ack_latency_seconds_sum",
            "histogram",
            &[],
            "Time from receiving a webhook request to answering it.",
        ),
        (
            "hooklake_ack_latency_seconds_count",
            "histogram",
            &[],
            "Time from receiving a webhook request to answering it.",
        ),
        (
            "hooklake_flush_duration_seconds_bucket",
            "histogram",
            &["le"],
            "Time a successful flush took, commit included.",
        ),
        (
            "hooklake_flush_duration_seconds_sum",
            "histogram",
            &[],
            "Time a successful flush took, commit included.",
        ),
        (
            "hooklake_flush_duration_seconds_count",
            "histogram",
            &[],
            "Time a successful flush took, commit included.",
        ),
        (
            "hooklake_trigger_attempt_seconds_bucket",
            "histogram",
            &["le"],
            "Time a trigger delivery attempt took, to its answer or failure.",
        ),
        (
            "hooklake_trigger_attempt_seconds_sum",
            "histogram",
            &[],
            "Time a trigger delivery attempt took, to its answer or failure.",
        ),
        (
            "hooklake_trigger_attempt_seconds_count",
            "histogram",
            &[],
            "Time a trigger delivery attempt took, to its answer or failure.",
        ),
        (
            "hooklake_trigger_delivery_delay_seconds_bucket",
            "histogram",
            &["le"],
            "Time from a fact entering the outbox (its flush's commit) to its delivery, for facts delivered at the first attempt.",
        ),
        (
            "hooklake_trigger_delivery_delay_seconds_sum",
            "histogram",
            &[],
            "Time from a fact entering the outbox (its flush's commit) to its delivery, for facts delivered at the first attempt.",
        ),
        (
            "hooklake_trigger_delivery_delay_seconds_count",
            "histogram",
            &[],
            "Time from a fact entering the outbox (its flush's commit) to its delivery, for facts delivered at the first attempt.",
        ),
        (
            "hooklake_trigger_facts_total",
            "counter",
            &["trigger"],
            "Facts a workflow trigger fired on, put in the outbox by a flush's commit, by trigger.",
        ),
        (
            "hooklake_trigger_attempts_total",
            "counter",
            &["outcome"],
            "Trigger delivery attempts, by outcome (delivered, retrying, given_up).",
        ),
        (
            "hooklake_trigger_delivered_total",
            "counter",
            &["trigger"],
            "Trigger requests answered with a 2xx, by trigger.",
        ),
        (
            "hooklake_trigger_given_up_total",
            "counter",
            &["trigger"],
            "Trigger requests given up once the retry schedule was used up, by trigger.",
        ),
        (
            "hooklake_lake_upload_seconds_bucket",
            "histogram",
            &["le"],
            "Time a flush's uploads to a remote lake took (all its files, several at once).",
        ),
        (
            "hooklake_lake_upload_seconds_sum",
            "histogram",
            &[],
            "Time a flush's uploads to a remote lake took (all its files, several at once).",
        ),
        (
            "hooklake_lake_upload_seconds_count",
            "histogram",
            &[],
            "Time a flush's uploads to a remote lake took (all its files, several at once).",
        ),
        (
            "hooklake_lake_uploaded_bytes_total",
            "counter",
            &[],
            "Bytes of files uploaded to a remote lake by flushes.",
        ),
        (
            "hooklake_lake_uploaded_files_total",
            "counter",
            &[],
            "Files uploaded to a remote lake by flushes.",
        ),
        (
            "hooklake_lake_errors_total",
            "counter",
            &["kind"],
            "Failed uploads and Delta commits of flushes, by kind (unavailable, throttled, auth, not_found, conflict, clash, conflicts: too many lost races, other).",
        ),
        (
            "hooklake_delta_commits_total",
            "counter",
            &["table"],
            "Delta log commits of flushes, by table.",
        ),
        (
            "hooklake_delta_commit_retries_total",
            "counter",
            &["table"],
            "Races for a Delta log version that a flush's commit lost and retried, by table.",
        ),
        (
            "hooklake_deriver_events_read_total",
            "counter",
            &[],
            "Events the deriver read from raw_events (each receiver's copy of a redelivery counted).",
        ),
        (
            "hooklake_deriver_lease_taken_total",
            "counter",
            &[],
            "Times this process took the deriver lease.",
        ),
        (
            "hooklake_deriver_lease_held",
            "gauge",
            &[],
            "1 while this deriver holds the lake's deriver lease (0: a standby).",
        ),
        (
            "hooklake_deriver_raw_events_version",
            "gauge",
            &[],
            "The raw_events log version up to which the deriver derived every event (-1: none).",
        ),
        (
            "hooklake_deriver_lag_seconds",
            "gauge",
            &[],
            "Age of the oldest event the deriver read from raw_events and has not derived yet (0 when none waits).",
        ),
        (
            "hooklake_deriver_lag_events",
            "gauge",
            &[],
            "Events the deriver read from raw_events and has not derived yet.",
        ),
        (
            "hooklake_deriver_receivers",
            "gauge",
            &[],
            "Receivers whose watermark the deriver waits for (those that reported within receiver_timeout_secs).",
        ),
        (
            "hooklake_receiver_watermark_age_seconds",
            "gauge",
            &[],
            "How far behind now the watermark this receiver last reported to the deriver is.",
        ),
        (
            "hooklake_delta_version",
            "gauge",
            &["table"],
            "The last version this process committed to each table's Delta log, by table.",
        ),
        (
            "hooklake_trigger_outbox",
            "gauge",
            &[],
            "Trigger facts waiting for a delivery attempt (given-up ones excluded).",
        ),
    ];

    /// What a text exposition shows: per sample name, the type and help of its family and the
    /// names of its labels.
    fn inventory(text: &str) -> BTreeSet<(String, String, Vec<String>, String)> {
        let (mut kind, mut help) = (String::new(), String::new());
        let mut found = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                kind = rest.split_once(' ').unwrap().1.to_string();
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                help = rest.split_once(' ').unwrap().1.to_string();
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap();
                let labels = match line[name_end..].strip_prefix('{') {
                    Some(rest) => rest[..rest.rfind('}').unwrap()]
                        .split(',')
                        .map(|pair| pair.split_once('=').unwrap().0.to_string())
                        .collect(),
                    None => Vec::new(),
                };
                found.insert((
                    line[..name_end].to_string(),
                    kind.clone(),
                    labels,
                    help.clone(),
                ));
            }
        }
        found
    }

    #[test]
    fn every_metric_name_type_label_and_help_text_is_shown() {
        let m = Metrics::default();
        for (name, ..) in COUNTERS {
            let labelled = INVENTORY
                .iter()
                .any(|(n, _, labels, _)| n == name && !labels.is_empty());
            m.add(name, if labelled { "x" } else { "" }, 1);
        }
        m.ack_latency.observe(Duration::from_millis(3));
        m.flush_duration.observe(Duration::from_millis(300));
        let text = m.render(Gauges {
            files: vec![("contact_events", 2, 1)],
            delta_versions: vec![("contact_events", 7)],
            ..Default::default()
        });
        let expected: BTreeSet<_> = INVENTORY
            .iter()
            .map(|(name, kind, labels, help)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                (name.to_string(), kind.to_string(), labels, help.to_string())
            })
            .collect();
        let found = inventory(&text);
        let missing: Vec<_> = expected.difference(&found).collect();
        let extra: Vec<_> = found.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:#?}\nextra {extra:#?}\n{text}"
        );
    }

    #[test]
    fn histograms_keep_their_buckets() {
        let text = Metrics::default().render(Gauges::default());
        let bounds = |name: &str| -> Vec<String> {
            let prefix = format!("{name}_bucket{{le=\"");
            text.lines()
                .filter_map(|l| Some(l.strip_prefix(&prefix)?.split_once('"')?.0.to_string()))
                .collect()
        };
        assert_eq!(
            bounds("hooklake_ack_latency_seconds"),
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1", "2.5", "5", "+Inf"
            ]
        );
        assert_eq!(
            bounds("hooklake_flush_duration_seconds"),
            [
                "0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"
            ]
        );
    }

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
