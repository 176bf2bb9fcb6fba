//! The pipeline: the one place that sequences dedup -> wal -> buffer -> flatten -> sink ->
//! commit, and the flush triggers.
//!
//! [`Pipeline::accept`] is the ack point: it drops ids already written or already pending,
//! reserves buffer room, appends the request to the write-ahead log (group commit), and only then
//! buffers the events, so that when it returns `Ok` the caller may answer 200;
//! [`Pipeline::accept_rejected`] does the same for a dead letter before its 4xx.
//! [`Pipeline::flush`] takes the whole buffer, flattens and encodes it on a blocking thread,
//! publishes the files, and commits the flush in the state store (flush number, log position,
//! event ids); [`Pipeline::open`] recovers from a crash at any point of that sequence (the
//! numbered steps are in ARCHITECTURE.md). A flush is held back, writing nothing, while the disk
//! has no room for it ([`crate::disk::flush_bytes`]); a failed commit's files are reverted in the Delta
//! logs and deleted when it fails, once the state store, opened again, says it was not recorded
//! (left where the logs name them until it can say). Invariants: one flush runs at a time; a failed flush puts its events back in the buffer
//! (or keeps them aside while its commit is unconfirmed); an event id is written by at most one
//! committed flush; the async workers never encode Parquet or fsync.
//!
//! The work is split by stage: `accept.rs` takes events in, `flush.rs` runs a flush,
//! `failed.rs` handles one that does not get through, `recover.rs` opens the directory and
//! recovers, and `triggers.rs` decides when to flush.

mod accept;
mod decay;
mod failed;
mod flush;
mod lake;
mod outbox;
mod recover;
#[cfg(test)]
mod testutil;
mod triggers;

pub use accept::{AcceptError, Outcome};
pub use flush::{Arrival, FlushError, FlushReport, Prepared};
pub use lake::{download_table_at, live_files_at, live_local_files};

/// The random id of the data directory whose state directory (`_hooklake/`) is `state_dir`,
/// created at its first use.
pub fn instance_id_of(state_dir: &std::path::Path) -> std::io::Result<String> {
    lake::instance_id(state_dir)
}
pub use recover::{OpenError, Recovery};
pub use triggers::Triggers;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::Notify;

use crate::buffer::Buffer;
use crate::disk::DiskGuard;
use crate::flatten;
use crate::metrics::{Gauges, Metrics};
use crate::sink::Sink;
use crate::state::{IdSet, Store, StoreError};
use crate::wal::Wal;

use failed::Unconfirmed;
use lake::LakeTables;

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
    /// The deriver, after reading new versions of `raw_events`.
    Derive,
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
            FlushReason::Derive => "derive",
        }
    }
}

/// Whether requests go through the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server: every request is logged before it is acknowledged.
    Logged,
    /// Batch replay: the input files are the durable source; nothing is logged.
    Unlogged,
}

/// Dedup, log, buffer, sink, state and flush coordination, shared by the server and replay.
pub struct Pipeline {
    buffer: Mutex<Buffer>,
    sink: Sink,
    store: Arc<Store>,
    wal: Option<Wal>,
    /// Ids of events accepted but not yet committed by a flush; a second copy is a duplicate.
    pending_ids: Mutex<IdSet>,
    /// Requests between their log append and their buffer push: token -> a lower bound of their
    /// log sequence number. A flush never lets replay start after one of them.
    in_flight: Mutex<BTreeMap<u64, u64>>,
    next_token: AtomicU64,
    /// Held for the whole of a flush so flushes never overlap.
    flush_lock: Arc<tokio::sync::Mutex<()>>,
    /// Signalled when a size trigger fires.
    flush_due: Notify,
    metrics: Arc<Metrics>,
    last_flush_unix_secs: AtomicI64,
    dedup_window_secs: u64,
    /// Settings of flattening (known statuses).
    flatten_options: Arc<flatten::Options>,
    /// The lead-scoring rules (`[scoring]`); `None` when scoring is off.
    scoring: Option<Arc<crate::score::rules::Rules>>,
    /// The workflow triggers (`[[triggers]]`); `None` when there are none (or for `rebuild`,
    /// whose facts fired when they were first flushed).
    triggers: Option<Arc<crate::trigger::Triggers>>,
    /// Notified when a commit puts facts in the outbox (the sender looks at once).
    trigger_wake: Arc<Notify>,
    /// Set when delivery attempts may wait to be written to `trigger_deliveries`.
    attempts_waiting: Arc<AtomicBool>,
    /// Refuses events while the data directory's disk is nearly full, and holds flushes back
    /// while it has no room for what they would write.
    disk: Arc<DiskGuard>,
    /// Set by a commit whose outcome is not known; its files stay where the Delta logs name them. The next
    /// flush settles it before anything else ([`Pipeline::settle_unconfirmed`]).
    unconfirmed: Mutex<Option<Unconfirmed>>,
    /// Why the last flush failed or was held back, until a flush commits: the reason `/readyz`
    /// gives while flushes are not getting through.
    flush_problem: Mutex<Option<String>>,
    /// Receive time (microseconds) of the oldest event of the flush in progress or unconfirmed,
    /// `i64::MAX` when there is none: those events are out of the buffer, and still unflushed.
    flushing_oldest_us: AtomicI64,
    /// Testing hook shared with the log: while set, log writes fail as if the disk were full.
    fail_log_writes: Arc<AtomicBool>,
    /// Testing hook: while set, a flush's work panics (as a bug in flattening would).
    panic_flushes: AtomicBool,
    /// Testing hook: run once, by the next flush, between publishing its files and its commit
    /// (a test fills the disk there).
    before_commit: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Set by a failed flush, which may have published some files before failing: the next
    /// flush (taking the same number) removes them before it writes. It rewrites only the
    /// partitions it has rows for, and its change rows may differ (events that arrived since
    /// come first), so a file of the failed attempt left elsewhere would be committed with it.
    leftovers: AtomicBool,
    /// Every table's Delta log: each flush commits there before the state store.
    lake: Arc<LakeTables>,
    /// The highest flush number any table's log has seen from this data directory, as of the
    /// last revert (rule R): the next flush is numbered above it and above the state store's,
    /// so no number is committed to a log twice.
    txn_floor: AtomicU64,
    /// How long a file removed from a log by a compaction is kept before a vacuum deletes it.
    vacuum_retention: Duration,
    /// The data directory (`_hooklake/` holds the state store and the log).
    data_dir: PathBuf,
    /// The committed replay position at open: what an unlogged pipeline (batch replay) keeps
    /// committing, so the log a server left behind is replayed from the same place at its next
    /// start (dead letters in it are not deduplicated by id; replaying them twice would repeat
    /// them).
    committed_replay_from: u64,
    /// What this process writes of the lake: every table, a receiver's tables, or the
    /// deriver's.
    role: crate::config::Role,
    /// The deriver's progress to record with the next flush's commit (a `raw_events`
    /// version): set once the events up to it are in the buffer.
    derived_through: Mutex<Option<i64>>,
    /// Requests under way (token -> when they arrived, microseconds): an event's receive time
    /// is at least its request's arrival, so a flush's watermark never passes one of them.
    arrivals: Mutex<BTreeMap<u64, i64>>,
    /// The receive time (microseconds) below which every event this process will ever
    /// flush is committed: what a receiver reports to the deriver (`i64::MIN` before its
    /// first flush).
    watermark_us: AtomicI64,
    /// An exclusive lock on `<data_dir>/_hooklake/lock`, held while the pipeline lives.
    _lock: File,
}

impl Pipeline {
    /// What this process writes of the lake.
    pub fn role(&self) -> crate::config::Role {
        self.role
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Makes every commit wait on the deriver's lease.
    pub fn set_fence(&self, fence: Arc<crate::derive::Fence>) {
        self.lake.set_fence(fence);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Testing hook: makes log writes fail (as if the disk were full) while `fail` is true.
    pub fn simulate_log_failure(&self, fail: bool) {
        self.fail_log_writes.store(fail, Ordering::Relaxed);
    }

    /// Testing hook: the next flush runs `hook` after publishing its files, before its commit.
    pub fn before_next_commit(&self, hook: impl FnOnce() + Send + 'static) {
        *self.before_commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    /// Testing hook: the free-space guard reads `free` bytes free (`None`: the real figure).
    pub fn simulate_free_bytes(&self, free: Option<u64>) {
        self.disk.simulate_free_bytes(free);
    }

    /// Testing hook: makes the work of flushes panic while `panic` is true.
    pub fn simulate_flush_panic(&self, panic: bool) {
        self.panic_flushes.store(panic, Ordering::Relaxed);
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, IdSet> {
        self.pending_ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state store (for a rebuild carrying replay marks over).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Current gauge values for `/metrics`.
    pub fn gauges(&self, ready: bool) -> Gauges {
        // Disk figures first, so the buffer lock is held only for the counts.
        let wal_bytes = dir_bytes(&self.data_dir.join("_hooklake/wal"));
        let state_bytes =
            std::fs::metadata(self.data_dir.join("_hooklake/state.redb")).map_or(0, |m| m.len());
        let files = self.sink.file_counts();
        // A metric is not worth failing a scrape for: an unreadable store shows as zero here,
        // and as errors in the flushes' own logs and counters.
        let (dedup_ids, dedup_runs) = self.store.index_stats().unwrap_or_default();
        let now_us = Utc::now().timestamp_micros();
        let flushing = self.flushing_oldest_us.load(Ordering::Acquire);
        let buffer = self.buffer();
        Gauges {
            buffer_events: buffer.len(),
            buffer_bytes: buffer.bytes(),
            // Events of a flush in progress (or of one not confirmed) count: they are out of
            // the buffer and not written yet.
            oldest_unflushed_age_secs: buffer
                .oldest_received_at_us()
                .into_iter()
                .chain((flushing != i64::MAX).then_some(flushing))
                .min()
                .map(|t| (now_us - t).max(0) as f64 / 1e6)
                .unwrap_or(0.0),
            last_flush_unix_secs: self.last_flush_unix_secs.load(Ordering::Relaxed) as f64,
            ready,
            wal_bytes,
            state_bytes,
            dedup_filter_bytes: self.store.filter_bytes() as u64,
            score_keys_memory_bytes: self.store.score_keys_memory_bytes() as u64,
            dedup_ids,
            dedup_runs,
            files,
            delta_versions: self.lake.versions(),
        }
    }

    /// Whether the lake is on an object store rather than the local disk.
    pub fn lake_is_remote(&self) -> bool {
        self.lake.is_remote()
    }

    /// Downloads the live files of `table` (as its Delta log names them) into `into`, at their
    /// paths in the lake (`<table>/date=<date>/<name>`): how the commands that read a table's
    /// files read a remote lake's.
    pub async fn download_table(
        &self,
        table: &str,
        into: &std::path::Path,
    ) -> Result<usize, crate::lake::LakeError> {
        self.lake.download_table(table, into).await
    }

    /// Deletes the staged copies of a remote compaction's partitions (inputs and outputs).
    fn remove_staged_partitions<'a>(&self, partitions: impl Iterator<Item = &'a String>) {
        for partition in partitions {
            let dir = self.sink.root().join(partition);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot delete a staged partition");
            }
        }
    }

    /// The offset whose calendar date names partitions.
    pub fn partition_offset(&self) -> chrono::FixedOffset {
        self.sink.offset()
    }

    /// Compacts the selected closed partitions (see [`crate::compact`]), each one a commit to
    /// its table's Delta log, then deletes the files compactions removed more than
    /// `vacuum_retention_secs` ago; runs beside flushes.
    pub async fn compact(
        &self,
        selection: &crate::compact::Selection,
        last_closed: chrono::NaiveDate,
        target_file_bytes: u64,
    ) -> Result<crate::compact::Pass, crate::lake::LakeError> {
        // A receiver of a shared lake leaves compaction to the deriver, which merges the
        // receivers' raw_events files too (each live one is committed: it is in the log).
        let selection = &crate::compact::Selection {
            foreign: match self.role {
                crate::config::Role::Ingest => return Ok(crate::compact::Pass::default()),
                crate::config::Role::Derive => lake::RECEIVED_TABLES.to_vec(),
                crate::config::Role::All => Vec::new(),
            },
            ..selection.clone()
        };
        let mut live = self.lake.live_files().await?;
        // A remote lake's partitions to compact are downloaded to the staging directory first:
        // merging reads and writes local files, and the outputs are uploaded before the commit.
        let downloaded = if self.lake.is_remote() {
            let committed = self
                .store
                .committed()
                .map_err(|e| crate::lake::LakeError::Log {
                    table: "(all)".into(),
                    reason: format!("cannot read the state store: {e}"),
                })?;
            live.retain(|partition, files| {
                crate::compact::wanted(
                    partition,
                    files,
                    selection,
                    last_closed,
                    committed.flush_seq,
                )
            });
            let relative: Vec<String> = live
                .iter()
                .flat_map(|(partition, files)| {
                    files.iter().map(move |f| format!("{partition}/{f}"))
                })
                .collect();
            let downloaded = self.lake.download(self.sink.root(), &relative).await;
            if let Err(e) = downloaded {
                self.remove_staged_partitions(live.keys());
                return Err(e);
            }
            true
        } else {
            false
        };
        let sink = self.sink.clone();
        let store = self.store.clone();
        let lake = self.lake.clone();
        let selection = selection.clone();
        let runtime = tokio::runtime::Handle::current();
        // Merging reads and writes files: a blocking thread, which waits for each partition's
        // commit on the runtime.
        let partitions: Vec<String> = live.keys().cloned().collect();
        let sink_root = self.sink.root().to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let commit = |table: &str,
                          date: &str,
                          inputs: &[String],
                          outputs: Vec<crate::lake::DataFile>| {
                runtime.block_on(async {
                    if downloaded {
                        // The outputs go up before the commit that names them.
                        let relative: Vec<String> = outputs
                            .iter()
                            .map(|f| format!("{table}/{}", f.path))
                            .collect();
                        let relative: Vec<&str> = relative.iter().map(String::as_str).collect();
                        lake.upload_staged(sink_root.as_path(), &relative).await?;
                    }
                    lake.commit_compaction(table, date, inputs, outputs).await
                })
            };
            crate::compact::compact(
                &sink,
                &store,
                &selection,
                last_closed,
                target_file_bytes,
                &live,
                &commit,
            )
        });
        let pass = task.await.map_err(crate::lake::LakeError::Join);
        if downloaded {
            self.remove_staged_partitions(partitions.iter());
        }
        let mut pass = pass?;
        let table = |partition: &str| partition.split('/').next().unwrap_or("").to_string();
        for c in &pass.compacted {
            self.metrics
                .add("hooklake_compactions_total", &table(&c.partition), 1);
        }
        for f in &pass.failed {
            self.metrics.add(
                "hooklake_compaction_failures_total",
                &table(&f.partition),
                1,
            );
        }
        pass.vacuumed = self.lake.vacuum(self.vacuum_retention).await?;
        Ok(pass)
    }

    /// Creates and removes a probe file in the data directory: `Ok` when it is writable.
    pub fn probe_writable(&self) -> std::io::Result<()> {
        let probe = self.data_dir.join("_hooklake").join(".ready-probe");
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)
    }

    /// Forgets event ids older than the dedup window; returns how many.
    pub fn purge_dedup_index(&self) -> Result<u64, StoreError> {
        let cutoff = (Utc::now().timestamp().max(0) as u64).saturating_sub(self.dedup_window_secs);
        let purged = self.store.purge_before(cutoff)?;
        self.metrics.add("hooklake_dedup_purged_total", "", purged);
        Ok(purged)
    }

    /// Makes the log durable and stops its writer (after the final flush).
    pub fn close(&self) {
        if let Some(wal) = &self.wal {
            wal.close();
        }
    }
}

/// Total size of the files in a directory (0 if it cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testutil::*;

    #[tokio::test]
    async fn compaction_leaves_the_files_of_a_flush_not_yet_committed() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        let mut last = None;
        for n in 1..=2 {
            let (entry, events) = request(n);
            p.accept(entry, events).await.unwrap();
            last = Some(p.flush(FlushReason::Manual).await.unwrap());
        }
        // A file of flush 3, which has not committed: not in the Delta log, never merged.
        let partition = "contact_events/date=2026-03-04";
        let flush2 = last.unwrap();
        let file2 = &flush2
            .files
            .iter()
            .find(|f| f.path.starts_with(partition))
            .unwrap()
            .path;
        let from = dir.path().join(file2);
        let uncommitted = from.with_file_name("part-000000000003.parquet");
        std::fs::copy(&from, &uncommitted).unwrap();
        let done = p
            .compact(
                &crate::compact::Selection::default(),
                chrono::NaiveDate::from_ymd_opt(2100, 1, 1).unwrap(),
                1 << 30,
            )
            .await
            .unwrap()
            .compacted;
        let ours = done.iter().find(|c| c.partition == partition).unwrap();
        assert_eq!((ours.files_before, ours.rows), (2, 2));
        assert!(uncommitted.exists(), "the uncommitted flush's file is left");
        p.close();
    }

    #[tokio::test]
    async fn compaction_splits_a_partition_into_files_of_about_the_target_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = logged_config(dir.path());
        // The merged inputs are deleted by the vacuum right after the pass.
        config.vacuum_retention_secs = 0;
        let (p, _) = open(&config, Mode::Logged);
        for n in [3, 1, 2] {
            let (entry, events) = request(n);
            p.accept(entry, events).await.unwrap();
            p.flush(FlushReason::Manual).await.unwrap();
        }
        // A target below one row's bytes: a file per row.
        let selection = crate::compact::Selection {
            table: Some("contact_events".into()),
            ..Default::default()
        };
        let done = p
            .compact(
                &selection,
                chrono::NaiveDate::from_ymd_opt(2100, 1, 1).unwrap(),
                1,
            )
            .await
            .unwrap()
            .compacted;
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].files_before, done[0].files_after), (3, 3));
        let partition = dir.path().join("contact_events/date=2026-03-04");
        let mut names: Vec<String> = std::fs::read_dir(&partition)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // In name order, the files hold the contacts sorted.
        let ids: Vec<i64> = names
            .iter()
            .map(|name| {
                let file = std::fs::File::open(partition.join(name)).unwrap();
                let batch =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap()
                        .next()
                        .unwrap()
                        .unwrap();
                let column = batch.column_by_name("contact_id").unwrap();
                arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
                    column.as_ref(),
                )
                .value(0)
            })
            .collect();
        assert_eq!(ids, [1, 2, 3], "{names:?}");
        p.close();
    }
}
