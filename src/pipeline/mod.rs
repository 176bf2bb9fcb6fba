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
//! has no room for it ([`crate::disk::flush_bytes`]); a failed commit's files are deleted when it
//! fails, after the state store, opened again, says it was not recorded (hidden until it can
//! say). Invariants: one flush runs at a time; a failed flush puts its events back in the buffer
//! (or keeps them aside while its commit is unconfirmed); an event id is written by at most one
//! committed flush; the async workers never encode Parquet or fsync.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, BufferFull, Limits, Taken};
use crate::config::{self, Config};
use crate::disk::{DiskFull, DiskGuard, FlushSize, NoRoom};
use crate::event::{self, Envelope};
use crate::flatten;
use crate::metrics::{Gauges, Metrics};
use crate::rejected::Rejection;
use crate::sink::{FileWritten, Sink, SinkError, WriterSettings};
use crate::state::{Committed, IdSet, States, Store, StoreError, id_bytes};
use crate::wal::{self, Entry, Wal, WalConfig, WalError};

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

/// Milliseconds a flush spent in each stage (logged with the flush line).
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    flatten_ms: u64,
    load_ms: u64,
    track_ms: u64,
    write_ms: u64,
    commit_ms: u64,
}

/// A flush's events, taken from the buffer, and their rows before change tracking
/// ([`Pipeline::prepare_flush`]).
pub struct Prepared {
    taken: Taken,
    tables: flatten::Tables,
    flatten_ms: u64,
}

/// Flattening, the first stage of a flush: pure, so it may run before the flush lock is held.
fn flatten_taken(taken: &Taken, options: &flatten::Options) -> flatten::Tables {
    let mut tables = flatten::flatten_with(&taken.events, options);
    tables.rejected_events = taken.rejected.iter().map(flatten::rejected_row).collect();
    tables
}

/// What a flush wrote; also the body of `POST /admin/flush`.
#[derive(Debug, Clone, Serialize)]
pub struct FlushReport {
    /// Id shared by every file of the flush (`part-<flush_id>.parquet`); `None` when empty.
    pub flush_id: Option<String>,
    pub reason: FlushReason,
    /// Events flushed.
    pub events: usize,
    /// Dead letters flushed (rows of `rejected_events`).
    pub rejected: usize,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, usize>,
    /// Files published.
    pub files: Vec<FileWritten>,
    /// Values that failed to parse (nulls with a `parse_errors` entry).
    pub parse_errors: usize,
    pub duration_ms: u64,
}

/// A flush failed or was held back; its events are back in the buffer (or, after a commit
/// whose outcome is not known yet, kept for the next flush to settle).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    #[error("flush task failed: {0}")]
    Task(String),
}

/// Why a batch of events was not accepted; the sender should retry later (503).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Full(#[from] BufferFull),
    #[error(transparent)]
    Disk(#[from] DiskFull),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("accept task failed: {0}")]
    Task(String),
}

/// Why the pipeline could not open its data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error(
        "data directory {0} is in use by another hooklake process (lock held on {0}/_hooklake/lock)"
    )]
    Locked(PathBuf),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one accepted request did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Events taken (new, and now durable).
    pub accepted: usize,
    /// Where the events already written or already pending (answered but not taken again) are
    /// among the events given, in order.
    #[serde(skip)]
    pub duplicates: Vec<usize>,
    /// Whether a size trigger fired.
    #[serde(skip)]
    pub flush_due: bool,
}

/// What start-up recovery found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Log records replayed (those after the last committed flush).
    pub records: usize,
    /// Events put back in the buffer from them.
    pub events: usize,
    /// Events in them that a committed flush had already written.
    pub duplicates: usize,
    /// Dead letters put back in the buffer from them.
    pub rejected: usize,
    /// Published files of an uncommitted flush that were removed.
    pub removed_files: usize,
    /// Damaged places in the log (truncated torn tail, skipped corruption).
    pub damage: Vec<String>,
}

/// Whether requests go through the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server: every request is logged before it is acknowledged.
    Logged,
    /// Batch replay: the input files are the durable source; nothing is logged.
    Unlogged,
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

/// A flush whose commit reported an error and whose outcome could not be read back (the state
/// store could not be opened again): redb may have recorded it all the same.
struct Unconfirmed {
    flush_seq: u64,
    /// Its events, kept out of the buffer: written already if the commit was recorded.
    taken: Taken,
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
    /// Refuses events while the data directory's disk is nearly full, and holds flushes back
    /// while it has no room for what they would write.
    disk: Arc<DiskGuard>,
    /// Set by a commit whose outcome is not known; its files are hidden meanwhile. The next
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
    /// The committed replay position at open: what an unlogged pipeline (batch replay) keeps
    /// committing, so the log a server left behind is replayed from the same place at its next
    /// start (dead letters in it are not deduplicated by id; replaying them twice would repeat
    /// them).
    committed_replay_from: u64,
    /// An exclusive lock on `<data_dir>/_hooklake/lock`, held while the pipeline lives.
    _lock: File,
}

impl Pipeline {
    /// Opens the data directory, recovers from any crash, and returns a pipeline whose buffer
    /// holds every logged event not yet committed.
    pub fn open(
        config: &Config,
        metrics: Arc<Metrics>,
        mode: Mode,
    ) -> Result<(Arc<Pipeline>, Recovery), OpenError> {
        let state_dir = config.data_dir.join("_hooklake");
        let ioerr = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(&state_dir).map_err(ioerr(&state_dir))?;
        let lock_path = state_dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(ioerr(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked(config.data_dir.clone()));
        }
        let store = Store::open(&state_dir.join("state.redb"))?;
        let committed = store.committed()?;
        let settings = WriterSettings {
            zstd_level: config.zstd_level,
            row_group_rows: config.row_group_rows,
            threads: config.flush_threads,
        };
        let sink = Sink::open(&config.data_dir, settings, config.partition_offset())?;
        crate::compact::recover(&store, &config.data_dir).map_err(|e| OpenError::Io {
            path: config.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // Files hidden after a commit that failed without saying whether it was recorded: the
        // commit record decides.
        let (_, unconfirmed_removed) = sink.settle_unconfirmed(committed.flush_seq)?;
        let mut recovery = Recovery {
            removed_files: sink.remove_uncommitted(committed.flush_seq)?.len()
                + unconfirmed_removed,
            ..Default::default()
        };
        let limits = Limits {
            flush_max_rows: config.flush_max_rows,
            flush_max_bytes: config.flush_max_bytes,
            max_bytes: config.buffer_max_bytes,
        };
        let fail_log_writes = Arc::new(AtomicBool::new(false));
        let (wal, records) = match mode {
            Mode::Unlogged => (None, Vec::new()),
            Mode::Logged => {
                let durability = match config.durability {
                    config::Durability::Fsync => wal::Durability::Fsync,
                    config::Durability::Batch => wal::Durability::Batch {
                        interval: Duration::from_millis(config.durability_batch_ms),
                    },
                };
                let wal_config = WalConfig {
                    dir: state_dir.join("wal"),
                    durability,
                    segment_max_bytes: config.wal_segment_max_bytes,
                    fail_writes: fail_log_writes.clone(),
                };
                let (wal, recovered) = Wal::open(wal_config, committed.replay_from)?;
                recovery.damage = recovered.damage;
                (Some(wal), recovered.records)
            }
        };
        let pipeline = Pipeline {
            buffer: Mutex::new(Buffer::new(limits)),
            sink,
            store: Arc::new(store),
            wal,
            pending_ids: Mutex::new(IdSet::default()),
            in_flight: Mutex::new(BTreeMap::new()),
            next_token: AtomicU64::new(0),
            flush_lock: Arc::new(tokio::sync::Mutex::new(())),
            flush_due: Notify::new(),
            metrics,
            last_flush_unix_secs: AtomicI64::new(0),
            dedup_window_secs: config.dedup_window_hours * 3600,
            disk: Arc::new(DiskGuard::new(&config.data_dir, config.min_free_bytes)),
            unconfirmed: Mutex::new(None),
            flush_problem: Mutex::new(None),
            flushing_oldest_us: AtomicI64::new(i64::MAX),
            flatten_options: Arc::new(flatten::Options {
                known_statuses: config.known_statuses.clone(),
                threads: config.flush_threads,
            }),
            fail_log_writes,
            panic_flushes: AtomicBool::new(false),
            before_commit: Mutex::new(None),
            leftovers: AtomicBool::new(false),
            committed_replay_from: committed.replay_from,
            _lock: lock,
        };
        pipeline.replay_log(records, &mut recovery)?;
        pipeline.metrics.add(
            "hooklake_recovered_events_total",
            "",
            recovery.events as u64,
        );
        pipeline.metrics.add(
            "hooklake_wal_damage_total",
            "",
            recovery.damage.len() as u64,
        );
        if recovery.records > 0 || recovery.removed_files > 0 || !recovery.damage.is_empty() {
            tracing::info!(
                records = recovery.records,
                events = recovery.events,
                duplicates = recovery.duplicates,
                rejected = recovery.rejected,
                removed_files = recovery.removed_files,
                damage = recovery.damage.len(),
                "recovered from the write-ahead log"
            );
        }
        Ok((Arc::new(pipeline), recovery))
    }

    /// Puts the events of logged records back in the buffer, through the same parsing and
    /// dedup as live traffic (but not the buffer bound: they were acknowledged).
    fn replay_log(
        &self,
        records: Vec<(u64, Vec<u8>)>,
        recovery: &mut Recovery,
    ) -> Result<(), StoreError> {
        for (seq, payload) in records {
            recovery.records += 1;
            if let Some(mut rejection) = Rejection::decode(&payload) {
                rejection.seq = seq;
                recovery.rejected += 1;
                self.buffer().push_rejected_unbounded(rejection);
                continue;
            }
            let Some(entry) = Entry::decode(&payload) else {
                recovery
                    .damage
                    .push(format!("log record {seq}: payload is not a request entry"));
                continue;
            };
            // The body was validated before it was logged; parse it with the widest limits so a
            // lowered setting cannot lose it.
            let events = match event::parse_body(
                &entry.body,
                entry.url_kind,
                entry.received_at_us,
                &entry.source_path,
                event::BodyLimits::LOGGED,
            ) {
                Ok(events) => events,
                Err(e) => {
                    recovery.damage.push(format!("log record {seq}: {e}"));
                    continue;
                }
            };
            let (mut fresh, duplicates) = self.claim_ids(events)?;
            recovery.duplicates += duplicates.len();
            recovery.events += fresh.len();
            for e in &mut fresh {
                e.seq = seq;
            }
            self.buffer().push_unbounded(fresh);
        }
        Ok(())
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

    /// Splits events into fresh ones (whose ids are now pending) and the positions of duplicates
    /// (ids already committed, already pending, or repeated within the batch), which it counts
    /// in `hooklake_events_duplicate_total` by event type.
    fn claim_ids(&self, events: Vec<Envelope>) -> Result<(Vec<Envelope>, Vec<usize>), StoreError> {
        let ids: Vec<[u8; 16]> = events.iter().map(|e| id_bytes(&e.event_id)).collect();
        let mut pending = self.pending();
        let committed = self.store.seen(&ids)?;
        let mut fresh = Vec::with_capacity(events.len());
        let mut positions = Vec::new();
        let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (position, ((event, id), seen)) in
            events.into_iter().zip(ids).zip(committed).enumerate()
        {
            if !seen && pending.insert(id) {
                fresh.push(event);
            } else {
                positions.push(position);
                *by_type.entry(event.event_type.as_str()).or_default() += 1;
            }
        }
        drop(pending);
        for (event_type, n) in by_type {
            self.metrics
                .add("hooklake_events_duplicate_total", event_type, n);
        }
        Ok((fresh, positions))
    }

    fn release_ids(&self, events: &[Envelope]) {
        let mut pending = self.pending();
        for e in events {
            pending.remove(&id_bytes(&e.event_id));
        }
    }

    /// Takes a request's events: duplicates are dropped, the rest are logged (if this pipeline
    /// logs) and buffered, whole or not at all. `entry` is the request as the log keeps it.
    ///
    /// Runs to completion even if the caller stops waiting (the work is a spawned task), so a
    /// client that disconnects cannot leave an event logged but not buffered.
    pub async fn accept(
        self: &Arc<Self>,
        entry: Entry,
        events: Vec<Envelope>,
    ) -> Result<Outcome, AcceptError> {
        let this = self.clone();
        tokio::spawn(async move { this.accept_now(entry, events).await })
            .await
            .map_err(|e| AcceptError::Task(e.to_string()))?
    }

    async fn accept_now(
        &self,
        entry: Entry,
        events: Vec<Envelope>,
    ) -> Result<Outcome, AcceptError> {
        let (mut fresh, duplicates) = self.claim_ids(events)?;
        if fresh.is_empty() {
            return Ok(self.finish_accept(0, duplicates, false));
        }
        if let Err(full) = self.disk.check() {
            self.release_ids(&fresh);
            return Err(full.into());
        }
        let bytes: usize = fresh.iter().map(Envelope::approx_bytes).sum();
        if let Err(full) = self.buffer().reserve(bytes) {
            self.release_ids(&fresh);
            return Err(full.into());
        }
        if let Some(wal) = &self.wal {
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            self.in_flight().insert(token, wal.next_seq());
            let appended = wal.append(entry.encode()).await;
            let seq = match appended {
                Ok(seq) => seq,
                Err(e) => {
                    self.in_flight().remove(&token);
                    self.buffer().unreserve(bytes);
                    self.release_ids(&fresh);
                    return Err(e.into());
                }
            };
            for e in &mut fresh {
                e.seq = seq;
            }
            self.count_accepted(&fresh);
            let accepted = fresh.len();
            let flush_due = self.buffer().push_reserved(fresh);
            self.in_flight().remove(&token);
            return Ok(self.finish_accept(accepted, duplicates, flush_due));
        }
        self.count_accepted(&fresh);
        let accepted = fresh.len();
        let flush_due = self.buffer().push_reserved(fresh);
        Ok(self.finish_accept(accepted, duplicates, flush_due))
    }

    /// Keeps a dead letter: logged (if this pipeline logs) and buffered for the next flush, with
    /// the same durability as an accepted request. `Ok` means it is as durable as configured.
    /// Refused (an error, nothing kept) when the disk is nearly full, the buffer is full or the
    /// log cannot be written; the caller still answers its 4xx.
    pub async fn accept_rejected(
        self: &Arc<Self>,
        rejection: Rejection,
    ) -> Result<(), AcceptError> {
        let this = self.clone();
        tokio::spawn(async move { this.accept_rejected_now(rejection).await })
            .await
            .map_err(|e| AcceptError::Task(e.to_string()))?
    }

    async fn accept_rejected_now(&self, mut rejection: Rejection) -> Result<(), AcceptError> {
        self.disk.check()?;
        let bytes = rejection.approx_bytes();
        self.buffer().reserve(bytes)?;
        let mut token = None;
        if let Some(wal) = &self.wal {
            let t = self.next_token.fetch_add(1, Ordering::Relaxed);
            self.in_flight().insert(t, wal.next_seq());
            token = Some(t);
            match wal.append(rejection.encode()).await {
                Ok(seq) => rejection.seq = seq,
                Err(e) => {
                    self.in_flight().remove(&t);
                    self.buffer().unreserve(bytes);
                    return Err(e.into());
                }
            }
        }
        let flush_due = self.buffer().push_rejected_reserved(rejection);
        if let Some(t) = token {
            self.in_flight().remove(&t);
        }
        self.finish_accept(0, Vec::new(), flush_due);
        Ok(())
    }

    /// Buffers a dead letter without logging it (a rebuild carrying `rejected_events` over).
    pub fn accept_rejected_unlogged(&self, rejection: Rejection) -> bool {
        self.buffer().push_rejected_unbounded(rejection)
    }

    /// Takes the events of a replayed dead letter without logging them (like
    /// [`Pipeline::accept_unlogged`]) and marks `id` replayed by the flush that writes them.
    pub fn accept_replayed(
        &self,
        batch: Vec<Envelope>,
        id: [u8; 16],
    ) -> Result<Outcome, StoreError> {
        let (fresh, duplicates) = self.claim_ids(batch)?;
        self.count_accepted(&fresh);
        let accepted = fresh.len();
        let flush_due = {
            let mut buffer = self.buffer();
            buffer.mark_replayed(id);
            buffer.push_unbounded(fresh)
        };
        Ok(self.finish_accept(accepted, duplicates, flush_due))
    }

    /// Which of these dead letters a committed flush already replayed.
    pub fn replayed(&self, ids: &[[u8; 16]]) -> Result<Vec<bool>, StoreError> {
        self.store.replayed(ids)
    }

    /// The state store (for a rebuild carrying replay marks over).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn count_accepted(&self, events: &[Envelope]) {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for e in events {
            *counts.entry(e.event_type.as_str()).or_default() += 1;
        }
        for (event_type, n) in counts {
            self.metrics
                .add("hooklake_events_accepted_total", event_type, n);
        }
    }

    fn finish_accept(&self, accepted: usize, duplicates: Vec<usize>, flush_due: bool) -> Outcome {
        if flush_due {
            self.flush_due.notify_one();
        }
        Outcome {
            accepted,
            duplicates,
            flush_due,
        }
    }

    /// Takes a batch without logging it (batch replay: the input files are the durable source).
    /// Duplicates are dropped; the bound is not checked, since replay flushes whenever a flush is
    /// due.
    pub fn accept_unlogged(&self, batch: Vec<Envelope>) -> Result<Outcome, StoreError> {
        let (fresh, duplicates) = self.claim_ids(batch)?;
        self.count_accepted(&fresh);
        let accepted = fresh.len();
        let flush_due = self.buffer().push_unbounded(fresh);
        Ok(self.finish_accept(accepted, duplicates, flush_due))
    }

    /// Current gauge values for `/metrics`.
    pub fn gauges(&self, ready: bool) -> Gauges {
        // Disk figures first, so the buffer lock is held only for the counts.
        let wal_bytes = dir_bytes(&self.sink.root().join("_hooklake/wal"));
        let state_bytes =
            std::fs::metadata(self.sink.root().join("_hooklake/state.redb")).map_or(0, |m| m.len());
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
            dedup_ids,
            dedup_runs,
            files,
        }
    }

    /// The offset whose calendar date names partitions.
    pub fn partition_offset(&self) -> chrono::FixedOffset {
        self.sink.offset()
    }

    /// Compacts the selected closed partitions (see [`crate::compact`]); runs beside flushes.
    pub fn compact(
        &self,
        selection: &crate::compact::Selection,
        last_closed: chrono::NaiveDate,
        target_file_bytes: u64,
    ) -> crate::compact::Pass {
        let pass = crate::compact::compact(
            &self.sink,
            &self.store,
            selection,
            last_closed,
            target_file_bytes,
        );
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
        pass
    }

    /// Creates and removes a probe file in the data directory: `Ok` when it is writable.
    pub fn probe_writable(&self) -> std::io::Result<()> {
        let probe = self.sink.root().join("_hooklake").join(".ready-probe");
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

    /// The first log sequence number that may hold an event not yet committed, given that the
    /// events being flushed are about to be.
    fn replay_from(&self) -> u64 {
        let Some(wal) = &self.wal else {
            return self.committed_replay_from;
        };
        first_uncommitted(
            || wal.next_seq(),
            || self.in_flight().values().min().copied(),
            || self.buffer().min_seq(),
        )
    }

    /// Flushes everything buffered now. On error the events are back in the buffer.
    pub async fn flush(&self, reason: FlushReason) -> Result<FlushReport, FlushError> {
        let _guard = self.flush_lock.lock().await;
        self.settle_unconfirmed()?;
        let taken = self.buffer().take();
        self.flush_taken(taken, None, reason, None).await
    }

    /// Why flushes are not getting through (the last failure, or a flush held back for disk
    /// space), until one commits; `None` while they succeed.
    pub fn flush_problem(&self) -> Option<String> {
        self.flush_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_flush_problem(&self, problem: Option<String>) {
        *self.flush_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// Settles a flush whose commit failed without saying whether it was recorded: opens the
    /// state store again if need be and reads the commit record. Recorded, the flush's hidden
    /// files are published again and its events are done; not recorded, its files are deleted
    /// and its events go back to the buffer, for this flush to write under the same number.
    /// Until the record can be read, nothing else is flushed (an error).
    fn settle_unconfirmed(&self) -> Result<(), FlushError> {
        let mut slot = self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(flush_seq) = slot.as_ref().map(|u| u.flush_seq) else {
            return Ok(());
        };
        let settled = self
            .reopen_store_if_broken()
            .and_then(|()| self.store.committed())
            .map_err(FlushError::from)
            .and_then(|committed| {
                self.sink.settle_unconfirmed(committed.flush_seq)?;
                Ok(committed)
            });
        let committed = match settled {
            Ok(committed) => committed,
            Err(e) => {
                self.metrics.add("hooklake_flushes_total", "failed", 1);
                tracing::error!(error = %e, flush_seq, "cannot tell whether a failed commit was recorded; nothing is flushed until it can");
                self.set_flush_problem(Some(format!(
                    "cannot tell whether flush {flush_seq} was committed: {e}"
                )));
                return Err(e);
            }
        };
        let unconfirmed = slot.take().expect("checked above");
        drop(slot);
        if committed.flush_seq >= flush_seq {
            tracing::warn!(
                flush_seq,
                events = unconfirmed.taken.events.len(),
                "a commit that reported an error was recorded; its files are published again"
            );
            self.release_ids(&unconfirmed.taken.events);
            if let Some(wal) = &self.wal {
                wal.truncate_before(committed.replay_from);
            }
            self.metrics.add("hooklake_flushes_total", "ok", 1);
            self.last_flush_unix_secs
                .store(Utc::now().timestamp(), Ordering::Relaxed);
            self.set_flush_problem(None);
        } else {
            tracing::info!(
                flush_seq,
                events = unconfirmed.taken.events.len(),
                "a failed commit was not recorded; its files are deleted and its events flushed again"
            );
            self.buffer().restore(unconfirmed.taken);
        }
        self.flushing_oldest_us.store(i64::MAX, Ordering::Release);
        Ok(())
    }

    /// Opens the state store again if an I/O error closed it: what redb asks for before the
    /// next attempt.
    fn reopen_store_if_broken(&self) -> Result<(), StoreError> {
        if self.store.is_broken() {
            self.store.reopen()?;
        }
        Ok(())
    }

    /// Takes everything buffered now and flattens it, the first stage of a flush, without the
    /// flush lock: flattening is pure, so it may run while the flush before commits. Replay
    /// flattens the next batch while the previous flush's commit runs
    /// ([`Pipeline::spawn_flush`]).
    pub async fn prepare_flush(&self) -> Result<Prepared, FlushError> {
        let started = Instant::now();
        let taken = self.buffer().take();
        let options = self.flatten_options.clone();
        let panics = self.panic_flushes.load(Ordering::Relaxed);
        let task = tokio::task::spawn_blocking(move || {
            let tables = catch_panic(|| {
                simulated_panic(panics);
                flatten_taken(&taken, &options)
            });
            (taken, tables)
        });
        let (taken, tables) = task.await.map_err(|e| FlushError::Task(e.to_string()))?;
        let tables = match tables {
            Ok(tables) => tables,
            // Flattening does not panic by design; if it does, the events go back to the buffer.
            Err(e) => return Err(self.flush_failed(taken, e)),
        };
        Ok(Prepared {
            taken,
            tables,
            flatten_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Flushes `prepared` in a task of its own, so the caller can go on accepting events
    /// meanwhile (replay reads the next batch while this one is written). Waits first for a
    /// flush in progress: flushes stay one at a time and in order. The receiver hears once
    /// this flush's files are published, before its commit (nothing, if it fails first).
    pub async fn spawn_flush(
        self: &Arc<Self>,
        prepared: Prepared,
        reason: FlushReason,
    ) -> (
        tokio::task::JoinHandle<Result<FlushReport, FlushError>>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let guard = self.flush_lock.clone().lock_owned().await;
        let (written, published) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let Prepared {
                taken,
                tables,
                flatten_ms,
            } = prepared;
            if let Err(e) = this.settle_unconfirmed() {
                return Err(this.flush_failed(taken, e));
            }
            this.flush_taken(taken, Some((tables, flatten_ms)), reason, Some(written))
                .await
        });
        (task, published)
    }

    /// Flushes `taken` (flattened already, with the time it took, or not yet); the caller holds
    /// the flush lock. `written` hears once the files are published.
    async fn flush_taken(
        &self,
        taken: Taken,
        flattened: Option<(flatten::Tables, u64)>,
        reason: FlushReason,
        written: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<FlushReport, FlushError> {
        // A flush's duration counts its flattening, even when that ran before.
        let flattened_ms = flattened.as_ref().map_or(0, |(_, ms)| *ms);
        let now = Instant::now();
        let started = now
            .checked_sub(Duration::from_millis(flattened_ms))
            .unwrap_or(now);
        self.metrics
            .add("hooklake_flush_triggers_total", reason.as_str(), 1);
        let mut report = FlushReport {
            flush_id: None,
            reason,
            events: taken.events.len(),
            rejected: taken.rejected.len(),
            rows: BTreeMap::new(),
            files: Vec::new(),
            parse_errors: 0,
            duration_ms: 0,
        };
        if taken.is_empty() {
            self.metrics.add("hooklake_flushes_total", "empty", 1);
            return Ok(report);
        }
        let oldest = taken
            .events
            .iter()
            .map(|e| e.received_at_us)
            .chain(taken.rejected.iter().map(|r| r.received_at_us))
            .min();
        self.flushing_oldest_us
            .store(oldest.unwrap_or(i64::MAX), Ordering::Release);
        let flush_seq = match self
            .reopen_store_if_broken()
            .and_then(|()| self.store.committed())
        {
            Ok(c) => c.flush_seq + 1,
            Err(e) => return Err(self.flush_failed(taken, e.into())),
        };
        let sink = self.sink.clone();
        let store = self.store.clone();
        let disk = self.disk.clone();
        let options = self.flatten_options.clone();
        let panics = self.panic_flushes.load(Ordering::Relaxed);
        let leftovers = self.leftovers.swap(false, Ordering::AcqRel);
        let task = tokio::task::spawn_blocking(move || {
            // A panic (a bug in flattening or writing) is caught here, so that the events go
            // back to the buffer like those of any failed flush: dropped with the task, they
            // would be missing from the buffer while their ids stayed pending, and the next
            // flush would record a log position past them.
            let result = catch_panic(|| {
                simulated_panic(panics);
                let mut stages = Stages::default();
                let mut clock = Instant::now();
                let mut lap = |slot: &mut u64| {
                    *slot += clock.elapsed().as_millis() as u64;
                    clock = Instant::now();
                };
                let mut tables = match flattened {
                    Some((tables, ms)) => {
                        stages.flatten_ms = ms;
                        tables
                    }
                    None => flatten_taken(&taken, &options),
                };
                // Change tracking needs the previous state of every contact in the batch.
                let ids: BTreeSet<i64> = tables
                    .contact_events
                    .iter()
                    .filter_map(|r| r.contact_id)
                    .collect();
                let calls: BTreeSet<&str> = tables
                    .call_events
                    .iter()
                    .filter_map(|r| r.call_id.as_deref())
                    .collect();
                lap(&mut stages.flatten_ms);
                let mut states = States {
                    contacts: store.contacts(ids)?,
                    calls: store.calls(calls)?,
                    replayed: taken.replayed.clone(),
                };
                lap(&mut stages.load_ms);
                flatten::changes::track_with(&mut tables, &mut states.contacts, options.threads);
                flatten::changes::track_calls(&mut tables, &mut states.calls);
                lap(&mut stages.track_ms);
                let rows: BTreeMap<&'static str, usize> = tables.row_counts().into_iter().collect();
                let parse_errors = tables.parse_error_count();
                let mut flags: BTreeMap<String, u64> = BTreeMap::new();
                for flag in tables.contact_events.iter().flat_map(|r| &r.quality_flags) {
                    *flags.entry(flag.clone()).or_default() += 1;
                }
                if leftovers {
                    sink.remove_uncommitted(flush_seq - 1)?;
                }
                // Nothing is written without room for all of it (disk.rs prices each part).
                let size = FlushSize {
                    event_bytes: taken
                        .events
                        .iter()
                        .map(Envelope::approx_bytes)
                        .sum::<usize>() as u64
                        + taken
                            .rejected
                            .iter()
                            .map(Rejection::approx_bytes)
                            .sum::<usize>() as u64,
                    files: sink.files_for(&tables),
                    states: (states.contacts.len() + states.calls.len()) as u64,
                    ids: taken.events.len() as u64,
                    rewritten_ids: store.rewritten_by_commit(taken.events.len())?,
                };
                disk.check_room(crate::disk::flush_bytes(size))?;
                let files = sink.write(tables, flush_seq)?;
                lap(&mut stages.write_ms);
                Ok::<_, FlushError>((rows, parse_errors, flags, files, states, stages))
            })
            .and_then(|result| result);
            (taken, result)
        });
        let (taken, result) = match task.await {
            Ok(done) => done,
            Err(e) => {
                // Not reached: the task catches panics and is never cancelled.
                self.metrics.add("hooklake_flushes_total", "failed", 1);
                tracing::error!(error = %e, "flush task failed");
                return Err(FlushError::Task(e.to_string()));
            }
        };
        let (rows, parse_errors, flags, files, states, mut stages) = match result {
            Ok(done) => done,
            Err(FlushError::NoRoom(no)) => return Err(self.flush_held_back(taken, no)),
            Err(e) => return Err(self.flush_failed(taken, e)),
        };
        if let Some(written) = written {
            // The receiver may be gone; the flush goes on regardless.
            let _ = written.send(());
        }
        crate::failpoint::hit("flush-after-renames");
        let hook = self
            .before_commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            hook();
        }
        // The commit point: flush number, replay position, the written ids and the contact states,
        // in one transaction.
        let record = Committed {
            flush_seq,
            replay_from: self.replay_from(),
        };
        let ids: Vec<([u8; 16], u64)> = taken
            .events
            .iter()
            .map(|e| {
                (
                    id_bytes(&e.event_id),
                    (e.received_at_us.max(0) / 1_000_000) as u64,
                )
            })
            .collect();
        let commit_started = Instant::now();
        if let Err(e) = self.store.commit(record, &ids, &states) {
            // redb may have recorded a commit that reports an error: the store, opened again,
            // says which.
            match self.failed_commit_outcome(flush_seq, e) {
                CommitOutcome::Recorded => {}
                CommitOutcome::NotRecorded(e) => {
                    // Deleted now, so that no reader sees rows of a flush that did not commit
                    // (if this fails, the next flush deletes them: `leftovers`).
                    if let Err(removal) = self.sink.remove_uncommitted(flush_seq - 1) {
                        tracing::error!(error = %removal, "cannot delete the files of a flush that did not commit");
                    }
                    return Err(self.flush_failed(taken, e));
                }
                CommitOutcome::Unknown(e) => {
                    return Err(self.commit_unconfirmed(flush_seq, taken, &files, e));
                }
            }
        }
        crate::failpoint::hit("flush-after-commit");
        stages.commit_ms = commit_started.elapsed().as_millis() as u64;
        self.release_ids(&taken.events);
        if let Some(wal) = &self.wal {
            wal.truncate_before(record.replay_from);
        }
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
            .add("hooklake_parse_errors_total", "", parse_errors as u64);
        for (flag, n) in &flags {
            self.metrics.add("hooklake_quality_flags_total", flag, *n);
        }
        self.metrics.add("hooklake_flushes_total", "ok", 1);
        self.last_flush_unix_secs
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        self.flushing_oldest_us.store(i64::MAX, Ordering::Release);
        self.set_flush_problem(None);
        report.flush_id = Some(format!("{flush_seq:012}"));
        report.rows = rows;
        report.files = files;
        report.parse_errors = parse_errors;
        report.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics.flush_duration.observe(started.elapsed());
        tracing::info!(
            flush_id = report.flush_id.as_deref().unwrap_or(""),
            reason = reason.as_str(),
            events = report.events,
            files = report.files.len(),
            duration_ms = report.duration_ms,
            flatten_ms = stages.flatten_ms,
            load_state_ms = stages.load_ms,
            track_ms = stages.track_ms,
            write_ms = stages.write_ms,
            commit_ms = stages.commit_ms,
            "flushed"
        );
        Ok(report)
    }

    fn flush_failed(&self, taken: Taken, error: FlushError) -> FlushError {
        self.leftovers.store(true, Ordering::Release);
        self.metrics.add("hooklake_flushes_total", "failed", 1);
        tracing::error!(error = %error, events = taken.events.len(), rejected = taken.rejected.len(), "flush failed; events kept for the next flush");
        self.set_flush_problem(Some(format!("flush failed: {error}")));
        self.buffer().restore(taken);
        self.flushing_oldest_us.store(i64::MAX, Ordering::Release);
        error
    }

    /// A flush held back before writing anything, for want of disk space: its events go back
    /// to the buffer for the next trigger.
    fn flush_held_back(&self, taken: Taken, no: NoRoom) -> FlushError {
        self.metrics.add("hooklake_flushes_total", "held_back", 1);
        tracing::warn!(
            free_bytes = no.free_bytes,
            needed_bytes = no.needed_bytes,
            min_free_bytes = no.min_free_bytes,
            events = taken.events.len(),
            "flush held back: not enough disk space for it; events kept for the next trigger"
        );
        self.set_flush_problem(Some(format!("flush held back: {no}")));
        self.buffer().restore(taken);
        self.flushing_oldest_us.store(i64::MAX, Ordering::Release);
        FlushError::NoRoom(no)
    }

    /// Whether a commit that reported `error` was recorded: the store is opened again if the
    /// error closed it (at once: redb asks for it before the next attempt), and its record read.
    fn failed_commit_outcome(&self, flush_seq: u64, error: StoreError) -> CommitOutcome {
        match self
            .reopen_store_if_broken()
            .and_then(|()| self.store.committed())
        {
            Ok(c) if c.flush_seq >= flush_seq => {
                tracing::warn!(error = %error, flush_seq, "the state store reported a failed commit, which was recorded all the same");
                CommitOutcome::Recorded
            }
            Ok(_) => CommitOutcome::NotRecorded(error.into()),
            Err(reopen) => {
                tracing::warn!(error = %reopen, "cannot open the state store again to read whether the failed commit was recorded");
                CommitOutcome::Unknown(error.into())
            }
        }
    }

    /// A commit failed and the store cannot say yet whether it was recorded: the flush's files
    /// are hidden from readers, and its events kept aside until the next flush settles it.
    fn commit_unconfirmed(
        &self,
        flush_seq: u64,
        taken: Taken,
        files: &[FileWritten],
        error: FlushError,
    ) -> FlushError {
        if let Err(e) = self.sink.hide(files) {
            // Left visible, they are deleted or kept by the next flush once the record is read.
            tracing::error!(error = %e, "cannot hide the files of a flush whose commit failed");
        }
        self.metrics.add("hooklake_flushes_total", "failed", 1);
        tracing::error!(error = %error, flush_seq, events = taken.events.len(), "flush failed, and whether its commit was recorded cannot be read yet; its files are hidden and the next flush settles it");
        self.set_flush_problem(Some(format!("flush failed: {error}")));
        *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Unconfirmed { flush_seq, taken });
        error
    }

    /// Makes the log durable and stops its writer (after the final flush).
    pub fn close(&self) {
        if let Some(wal) = &self.wal {
            wal.close();
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

/// What a commit that reported an error did.
enum CommitOutcome {
    /// It was recorded all the same.
    Recorded,
    /// It was not recorded.
    NotRecorded(FlushError),
    /// The store cannot be read yet to tell.
    Unknown(FlushError),
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

/// Runs `work`, turning a panic into a [`FlushError::Task`] that names it.
fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, FlushError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        FlushError::Task(format!("flush panicked: {message}"))
    })
}

/// Panics when the testing hook [`Pipeline::simulate_flush_panic`] is set.
fn simulated_panic(set: bool) {
    if set {
        panic!("simulated flush panic");
    }
}

/// The lowest of the log's next sequence number, the in-flight requests' and the buffer's,
/// read in that order, while requests go on. A request registers as in flight with a number
/// at most its record's (taken from the log before it appends), then pushes its events into
/// the buffer, and only then leaves the in-flight set. So a request that registered after the
/// first read has a number at least that read's; one that left the in-flight set before the
/// second read is in the buffer at the third. Read the other way round (buffer first), a
/// request could leave the in-flight set between the two reads and be seen by neither: the
/// flush would record a replay position past events it did not write, and a crash before the
/// next flush would lose them from the log.
fn first_uncommitted(
    next_seq: impl FnOnce() -> u64,
    in_flight: impl FnOnce() -> Option<u64>,
    buffered: impl FnOnce() -> Option<u64>,
) -> u64 {
    let next = next_seq();
    let in_flight = in_flight();
    let buffered = buffered();
    [Some(next), in_flight, buffered]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Arc<Pipeline> {
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

    fn open(config: &Config, mode: Mode) -> (Arc<Pipeline>, Recovery) {
        Pipeline::open(config, Arc::new(Metrics::default()), mode).unwrap()
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
        p.accept_unlogged(event(1)).unwrap();
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
        p.accept_unlogged(event(1)).unwrap();
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
        assert!(!p.accept_unlogged(event(1)).unwrap().flush_due);
        assert!(p.accept_unlogged(event(2)).unwrap().flush_due);
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
        p.accept_unlogged(event(1)).unwrap();
        std::fs::write(dir.path().join("raw_events"), b"in the way").unwrap();
        assert!(p.flush(FlushReason::Manual).await.is_err());
        assert_eq!(p.gauges(true).buffer_events, 1);
        std::fs::remove_file(dir.path().join("raw_events")).unwrap();
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.events, 1);
        assert_eq!(report.rows["raw_events"], 1);
        assert_eq!(
            report.files.len(),
            3,
            "contact_events, raw_events, status_transitions"
        );
    }

    /// A request as the server logs it, holding one contact object.
    fn request(n: i64) -> (Entry, Vec<Envelope>) {
        request_with(format!(
            r#"[{{"id": {n}, "previewId": "p", "updatedAt": "2026-03-04T10:00:00Z"}}]"#
        ))
    }

    /// A request as the server logs it, with `body`.
    fn request_with(body: String) -> (Entry, Vec<Envelope>) {
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

    fn logged_config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            // The free-space guard has its own tests; these must not depend on the host's disk.
            min_free_bytes: 0,
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn acknowledged_events_survive_a_crash_and_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        {
            let (p, recovery) = open(&config, Mode::Logged);
            assert_eq!(recovery.records, 0);
            for n in 1..=3 {
                let (entry, events) = request(n);
                assert_eq!(p.accept(entry, events).await.unwrap().accepted, 1);
            }
            let (entry, events) = request(1);
            assert_eq!(
                p.accept(entry, events).await.unwrap().duplicates.len(),
                1,
                "pending ids are duplicates"
            );
            p.close();
            // Dropped without a flush: a crash.
        }
        let (p, recovery) = open(&config, Mode::Logged);
        // The all-duplicate request was answered without being logged.
        assert_eq!(
            (recovery.records, recovery.events, recovery.duplicates),
            (3, 3, 0)
        );
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.rows["contact_events"], 3);
        // Committed ids stay duplicates, across a restart too.
        let (entry, events) = request(2);
        assert_eq!(p.accept(entry, events).await.unwrap().duplicates.len(), 1);
        p.close();
        drop(p);
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!(
            recovery.events, 0,
            "a committed flush is not replayed: {recovery:?}"
        );
        let (entry, events) = request(3);
        assert_eq!(p.accept(entry, events).await.unwrap().duplicates.len(), 1);
        p.close();
    }

    #[tokio::test]
    async fn files_of_an_uncommitted_flush_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        let (entry, events) = request(1);
        p.accept(entry, events).await.unwrap();
        let report = p.flush(FlushReason::Manual).await.unwrap();
        p.close();
        drop(p);
        // A crash after the renames of flush 2 and before its commit leaves its files behind.
        for f in &report.files {
            let from = dir.path().join(&f.path);
            std::fs::copy(&from, from.with_file_name("part-000000000002.parquet")).unwrap();
        }
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!(recovery.removed_files, report.files.len());
        for f in &report.files {
            assert!(dir.path().join(&f.path).exists(), "committed files stay");
        }
        p.close();
    }

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
        // Flush 3 has published its files and not committed yet: its commit may still fail, and
        // the next flush then writes the same events again under the same number.
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
            .compacted;
        let ours = done.iter().find(|c| c.partition == partition).unwrap();
        assert_eq!((ours.files_before, ours.rows), (2, 2));
        assert!(uncommitted.exists(), "the uncommitted flush's file is left");
        p.close();
    }

    #[tokio::test]
    async fn compaction_splits_a_partition_into_files_of_about_the_target_size() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = open(&logged_config(dir.path()), Mode::Logged);
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

    #[test]
    fn a_request_moving_from_in_flight_to_the_buffer_is_seen_either_way() {
        use std::cell::RefCell;
        // A request logged as record 7, while the log's next number is 9 and the buffer holds
        // record 8. It leaves the in-flight set (after pushing its events) between two reads,
        // whichever they are: the position must still be at most 7.
        #[derive(Clone, Copy, PartialEq)]
        enum Where {
            InFlight,
            Buffered,
        }
        let request = RefCell::new(Where::InFlight);
        let reads = RefCell::new(0);
        // After the first read of the in-flight set or the buffer, the request moves.
        let moved_after_first_read = || {
            *reads.borrow_mut() += 1;
            if *reads.borrow() == 1 {
                let seen = *request.borrow();
                *request.borrow_mut() = Where::Buffered;
                return seen;
            }
            *request.borrow()
        };
        let position = first_uncommitted(
            || 9,
            || (moved_after_first_read() == Where::InFlight).then_some(7),
            || {
                Some(if moved_after_first_read() == Where::Buffered {
                    7
                } else {
                    8
                })
            },
        );
        assert_eq!(position, 7);
        // Once neither holds anything, the log's next number.
        assert_eq!(first_uncommitted(|| 9, || None, || None), 9);
    }

    #[tokio::test]
    async fn a_panicking_flush_keeps_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        let (entry, events) = request(1);
        p.accept(entry, events).await.unwrap();
        p.simulate_flush_panic(true);
        let err = p.flush(FlushReason::Manual).await.unwrap_err();
        assert!(err.to_string().contains("simulated flush panic"), "{err}");
        let prepared = p
            .prepare_flush()
            .await
            .err()
            .expect("the prepared flush panics too");
        assert!(matches!(prepared, FlushError::Task(_)), "{prepared}");
        assert_eq!(
            p.gauges(true).buffer_events,
            1,
            "the events are back in the buffer"
        );
        assert_eq!(p.metrics().get("hooklake_flushes_total", "failed"), 2);
        // Meanwhile a redelivery is a duplicate: the event will be written.
        let (entry, events) = request(1);
        assert_eq!(p.accept(entry, events).await.unwrap().duplicates.len(), 1);
        p.simulate_flush_panic(false);
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.events, 1);
        p.close();
        drop(p);
        // Nothing is left to recover, and the event was written once.
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!(recovery.events, 0);
        let (entry, events) = request(1);
        assert_eq!(p.accept(entry, events).await.unwrap().duplicates.len(), 1);
        p.close();
    }

    #[tokio::test]
    async fn the_flush_after_a_failed_one_removes_what_that_one_published() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        let (entry, events) = request(1);
        p.accept(entry, events).await.unwrap();
        let first = p.flush(FlushReason::Manual).await.unwrap();
        // Flush 2 fails after publishing a file in a partition its retry has no rows for.
        let committed = dir.path().join(&first.files[0].path);
        let stale_dir = dir.path().join("contact_events/date=2026-01-01");
        std::fs::create_dir_all(&stale_dir).unwrap();
        let stale = stale_dir.join("part-000000000002.parquet");
        std::fs::copy(&committed, &stale).unwrap();
        let (entry, events) = request(2);
        p.accept(entry, events).await.unwrap();
        p.simulate_flush_panic(true);
        p.flush(FlushReason::Manual).await.unwrap_err();
        p.simulate_flush_panic(false);
        let retry = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(retry.flush_id.as_deref(), Some("000000000002"));
        assert!(
            !stale.exists(),
            "the failed attempt's file is not committed with the retry"
        );
        assert!(committed.exists(), "committed files stay");
        p.close();
    }

    #[tokio::test]
    async fn times_beyond_four_digit_years_are_errors_and_do_not_block_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        // Milliseconds far beyond chrono's range, both ways: they once named one partition
        // twice in a flush, whose files collided, and every flush after failed the same way.
        for (id, updated) in [(1, 9_000_000_000_000_000i64), (2, -9_000_000_000_000_000)] {
            let (entry, events) = request_with(format!(
                r#"[{{"id": {id}, "previewId": "p{id}", "updatedAt": {updated}}}]"#
            ));
            p.accept(entry, events).await.unwrap();
        }
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.events, 2);
        // Filed under the day they were received, with the value named in parse_errors.
        assert_eq!(report.parse_errors, 2);
        assert!(
            report
                .files
                .iter()
                .all(|f| f.path.contains("date=2026-02-25")),
            "{:?}",
            report.files
        );
        p.close();
    }

    #[tokio::test]
    async fn a_failing_log_refuses_requests_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = open(&logged_config(dir.path()), Mode::Logged);
        p.simulate_log_failure(true);
        let (entry, events) = request(1);
        let err = p.accept(entry, events).await.unwrap_err();
        assert!(matches!(err, AcceptError::Log(_)), "{err}");
        assert_eq!(p.gauges(true).buffer_events, 0);
        assert_eq!(
            p.gauges(true).buffer_bytes,
            0,
            "the reservation is given back"
        );
        p.simulate_log_failure(false);
        let (entry, events) = request(1);
        assert_eq!(
            p.accept(entry, events).await.unwrap().accepted,
            1,
            "the failed id is not held as pending"
        );
        p.close();
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        let err = Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Unlogged)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("in use by another hooklake process"),
            "{err}"
        );
        p.close();
    }

    /// The published files of `table` (relative paths, sorted).
    fn published(dir: &std::path::Path, table: &str) -> Vec<String> {
        crate::sink::published_files(dir, table)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    /// Contact rows in the published files, by contact id.
    fn contact_rows(dir: &std::path::Path) -> Vec<i64> {
        let mut ids = Vec::new();
        for path in crate::sink::published_files(dir, "contact_events").unwrap() {
            let file = std::fs::File::open(path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let column = batch.column_by_name("contact_id").unwrap();
                let column = arrow_array::cast::AsArray::as_primitive::<
                    arrow_array::types::Int64Type,
                >(column.as_ref());
                ids.extend(column.values().iter().copied());
            }
        }
        ids.sort();
        ids
    }

    async fn accept_request(p: &Arc<Pipeline>, n: i64) -> Outcome {
        let (entry, events) = request(n);
        p.accept(entry, events).await.unwrap()
    }

    #[tokio::test]
    async fn a_commit_failing_on_a_full_disk_deletes_its_files_and_the_next_flush_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = open(&logged_config(dir.path()), Mode::Logged);
        accept_request(&p, 1).await;
        p.flush(FlushReason::Manual).await.unwrap();
        accept_request(&p, 2).await;
        // The commit's write fails; space is back by the time the store is opened again.
        p.store().simulate_fault(crate::state::Fault::OneWrite);
        let err = p.flush(FlushReason::Manual).await.unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(
            published(dir.path(), "raw_events"),
            ["raw_events/date=2026-03-04/part-000000000001.parquet"],
            "the failed flush's files are deleted at once"
        );
        assert!(p.flush_problem().unwrap().contains("flush failed"));
        assert_eq!(p.gauges(true).buffer_events, 1);
        let retry = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(retry.flush_id.as_deref(), Some("000000000002"));
        assert_eq!(p.flush_problem(), None);
        assert_eq!(contact_rows(dir.path()), [1, 2]);
        p.close();
    }

    #[tokio::test]
    async fn a_commit_whose_outcome_cannot_be_read_hides_its_files_until_the_store_answers() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        accept_request(&p, 1).await;
        p.flush(FlushReason::Manual).await.unwrap();
        accept_request(&p, 2).await;
        // The disk stays full: the store cannot be opened again to read what was recorded.
        p.store().simulate_fault(crate::state::Fault::Writes);
        p.flush(FlushReason::Manual).await.unwrap_err();
        assert_eq!(
            published(dir.path(), "contact_events").len(),
            1,
            "the unconfirmed flush's files are hidden"
        );
        let gauges = p.gauges(true);
        assert_eq!(gauges.buffer_events, 0, "its events are kept aside");
        assert!(
            gauges.oldest_unflushed_age_secs > 0.0,
            "and still count as unflushed"
        );
        // Nothing is flushed until the outcome is known.
        let err = p.flush(FlushReason::Manual).await.unwrap_err();
        assert!(err.to_string().contains("state store"), "{err}");
        assert!(
            p.flush_problem()
                .unwrap()
                .contains("cannot tell whether flush 2")
        );
        // Requests meet the closed store too, until it is opened again (by the next flush, or
        // by a request at most once a second).
        let (entry, events) = request(3);
        assert!(matches!(
            p.accept(entry, events).await,
            Err(AcceptError::Store(_))
        ));
        p.store().simulate_fault(crate::state::Fault::None);
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.flush_id.as_deref(), Some("000000000002"));
        assert_eq!(
            report.events, 1,
            "the failed flush's event, written under its number"
        );
        accept_request(&p, 3).await;
        p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(contact_rows(dir.path()), [1, 2, 3]);
        assert_eq!(p.gauges(true).oldest_unflushed_age_secs, 0.0);
        assert_eq!(p.flush_problem(), None);
        p.close();
        drop(p);
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!((recovery.events, recovery.removed_files), (0, 0));
        p.close();
    }

    #[tokio::test]
    async fn a_commit_recorded_despite_its_error_keeps_its_files_and_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        accept_request(&p, 1).await;
        // The sync fails after the commit's writes reached the file.
        p.store().simulate_fault(crate::state::Fault::Syncs);
        p.flush(FlushReason::Manual).await.unwrap_err();
        assert!(published(dir.path(), "contact_events").is_empty());
        p.store().simulate_fault(crate::state::Fault::None);
        let settled = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(
            settled.events, 0,
            "flush 1 was recorded: nothing to write again"
        );
        assert_eq!(published(dir.path(), "contact_events").len(), 1);
        accept_request(&p, 2).await;
        let report = p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(report.flush_id.as_deref(), Some("000000000002"));
        assert_eq!(contact_rows(dir.path()), [1, 2]);
        assert_eq!(accept_request(&p, 1).await.duplicates.len(), 1);
        p.close();
        drop(p);
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!(recovery.events, 0, "{recovery:?}");
        p.close();
    }

    #[tokio::test]
    async fn a_crash_with_hidden_files_is_settled_by_the_commit_record_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        {
            let (p, _) = open(&config, Mode::Logged);
            accept_request(&p, 1).await;
            p.store().simulate_fault(crate::state::Fault::Syncs);
            p.flush(FlushReason::Manual).await.unwrap_err();
            p.store().simulate_fault(crate::state::Fault::None);
            p.close();
            // Dropped before the next flush: a crash.
        }
        let (p, recovery) = open(&config, Mode::Logged);
        assert_eq!(contact_rows(dir.path()), [1], "recorded: published again");
        assert_eq!(recovery.events, 0, "{recovery:?}");
        p.close();
    }

    #[tokio::test]
    async fn a_flush_without_room_for_what_it_writes_is_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            min_free_bytes: 1_000_000,
            ..logged_config(dir.path())
        };
        let (p, _) = open(&config, Mode::Logged);
        // Above the minimum, below the minimum plus the flush's estimate.
        p.simulate_free_bytes(Some(1_100_000));
        accept_request(&p, 1).await;
        let err = p.flush(FlushReason::Manual).await.unwrap_err();
        assert!(matches!(err, FlushError::NoRoom(_)), "{err}");
        assert!(err.to_string().contains("1100000 bytes free"), "{err}");
        assert_eq!(flushes(&p, "held_back"), 1);
        assert_eq!(flushes(&p, "failed"), 0);
        assert_eq!(p.gauges(true).buffer_events, 1, "the events stay buffered");
        assert!(
            dir.path().join("raw_events").read_dir().is_err(),
            "nothing written"
        );
        assert!(p.flush_problem().unwrap().contains("held back"));
        p.simulate_free_bytes(Some(1 << 40));
        p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(contact_rows(dir.path()), [1]);
        assert_eq!(p.flush_problem(), None);
        p.close();
    }

    #[tokio::test]
    async fn a_store_opened_again_keeps_the_directory_locked() {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        accept_request(&p, 1).await;
        p.store().simulate_fault(crate::state::Fault::OneWrite);
        p.flush(FlushReason::Manual).await.unwrap_err();
        p.flush(FlushReason::Manual).await.unwrap();
        let err = Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Unlogged)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("in use by another hooklake process"),
            "{err}"
        );
        p.close();
    }
}
