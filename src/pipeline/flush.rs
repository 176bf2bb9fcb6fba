//! A flush: take the buffer, flatten (pure, so it may run before the flush lock is held), load
//! the contact and call states, track changes, check the disk has room for what it writes,
//! publish the files, commit, and truncate the log.
//! Invariant: one flush at a time (only a prepared flush's flattening may run beside the commit
//! of the one before); the async workers never encode Parquet or fsync; the replay position a
//! flush commits is never past an event that is not written yet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::buffer::Taken;
use crate::config::Role;
use crate::disk::{FlushSize, NoRoom};
use crate::event::Envelope;
use crate::flatten;
use crate::rejected::Rejection;
use crate::sink::{FileWritten, SinkError};
use crate::state::{Committed, States, StoreError, id_bytes};

use super::failed::CommitOutcome;
use super::{FlushReason, Pipeline};

/// Milliseconds a flush spent in each stage (logged with the flush line).
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    flatten_ms: u64,
    load_ms: u64,
    track_ms: u64,
    /// Lead scoring, which runs on one of the writing workers: part of `write_ms`.
    score_ms: u64,
    /// Writing the files, and matching triggers against the rows written.
    write_ms: u64,
    lake_ms: u64,
    /// Uploading a remote lake's files.
    upload_ms: u64,
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
    #[error("the lake: {0}")]
    Lake(#[from] crate::lake::LakeError),
    #[error("flush task failed: {0}")]
    Task(String),
}

impl Pipeline {
    /// The first log sequence number that may hold an event not yet committed, given that the
    /// events being flushed are about to be.
    pub(super) fn replay_from(&self) -> u64 {
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
        // Read before the take: an event not taken now arrives after this mark, or its
        // request was under way then (and the mark is at most its arrival).
        let mark = self.arrival_mark();
        let taken = self.buffer().take();
        let report = self.flush_taken(taken, None, reason, None).await?;
        self.watermark_us.fetch_max(mark, Ordering::AcqRel);
        Ok(report)
    }

    /// A request arrived: until the guard is dropped (after its events are buffered or
    /// refused), no flush reports a watermark past `now`.
    pub fn arriving(self: &Arc<Self>) -> Arrival {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Utc::now().timestamp_micros());
        Arrival {
            pipeline: self.clone(),
            token,
        }
    }

    /// The lowest of now and the arrival of every request under way.
    fn arrival_mark(&self) -> i64 {
        let now = Utc::now().timestamp_micros();
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.values().copied().min().map_or(now, |a| a.min(now))
    }

    /// The receive time (microseconds) below which every event this process will flush is
    /// committed, as of its last flush (`None` before its first): what a receiver reports.
    pub fn watermark_us(&self) -> Option<i64> {
        let mark = self.watermark_us.load(Ordering::Acquire);
        (mark != i64::MIN).then_some(mark)
    }

    /// Records the deriver's progress (a `raw_events` version) with the next flush's commit:
    /// call it once every event up to that version is in the buffer (or a duplicate).
    pub fn set_derived_through(&self, version: i64) {
        *self
            .derived_through
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(version);
    }

    /// Why flushes are not getting through (the last failure, or a flush held back for disk
    /// space), until one commits; `None` while they succeed.
    pub fn flush_problem(&self) -> Option<String> {
        self.flush_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_flush_problem(&self, problem: Option<String>) {
        *self.flush_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// Opens the state store again if an I/O error closed it: what redb asks for before the
    /// next attempt.
    pub(super) fn reopen_store_if_broken(&self) -> Result<(), StoreError> {
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

    /// Flushes `taken` (flattened already, with the time it took, or not yet) with the trigger
    /// delivery attempts recorded since the last flush; the caller holds the flush lock.
    /// `written` hears once the files are published.
    async fn flush_taken(
        &self,
        taken: Taken,
        flattened: Option<(flatten::Tables, u64)>,
        reason: FlushReason,
        written: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<FlushReport, FlushError> {
        let attempts = match self.take_attempts() {
            Ok(a) => a,
            Err(e) => return Err(self.flush_failed(taken, e.into())),
        };
        let took_attempts = !attempts.is_empty();
        let result = self
            .flush_with_attempts(taken, attempts, flattened, reason, written)
            .await;
        if result.is_err() && took_attempts {
            self.attempts_left();
        }
        result
    }

    async fn flush_with_attempts(
        &self,
        taken: Taken,
        attempts: Vec<(u64, crate::state::Attempt)>,
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
        if taken.is_empty() && attempts.is_empty() {
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
        let committed = match self
            .reopen_store_if_broken()
            .and_then(|()| self.store.committed())
        {
            Ok(c) => c.flush_seq,
            Err(e) => return Err(self.flush_failed(taken, e.into())),
        };
        // After a failed flush, first undo what it may have committed to the Delta logs (rule
        // R); the next number is above every one a log has seen.
        let leftovers = self.leftovers.swap(false, Ordering::AcqRel);
        if leftovers {
            match self.lake.revert_uncommitted(committed).await {
                Ok(reverted) => {
                    self.txn_floor
                        .fetch_max(reverted.txn_floor, Ordering::AcqRel);
                }
                Err(e) => return Err(self.flush_failed(taken, e.into())),
            }
        }
        let flush_seq = committed.max(self.txn_floor.load(Ordering::Acquire)) + 1;
        let sink = self.sink.clone();
        let store = self.store.clone();
        let disk = self.disk.clone();
        let options = self.flatten_options.clone();
        let scoring = self.scoring.clone();
        let triggers = self.triggers.clone();
        let role = self.role;
        let derived_through = *self
            .derived_through
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let panics = self.panic_flushes.load(Ordering::Relaxed);
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
                // A receiver of a shared lake writes only what it received; the deriver
                // makes the rest from raw_events.
                if role == Role::Ingest {
                    tables = flatten::Tables {
                        raw_events: std::mem::take(&mut tables.raw_events),
                        rejected_events: std::mem::take(&mut tables.rejected_events),
                        ..Default::default()
                    };
                }
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
                    ..Default::default()
                };
                lap(&mut stages.load_ms);
                let rules = scoring.as_ref().filter(|_| role != Role::Ingest);
                // What lead scoring needs of each contact's state is taken as it is tracked.
                let seen = match rules {
                    Some(rules) => flatten::changes::track_then(
                        &mut tables,
                        &mut states.contacts,
                        options.threads,
                        &|id, state| crate::score::Seen::of(rules, id, state),
                    ),
                    None => {
                        flatten::changes::track_with(
                            &mut tables,
                            &mut states.contacts,
                            options.threads,
                        );
                        Vec::new()
                    }
                };
                flatten::changes::track_calls(&mut tables, &mut states.calls);
                lap(&mut stages.track_ms);
                // Delivery attempts recorded since the last flush.
                tables.trigger_deliveries = attempts
                    .iter()
                    .map(|(_, a)| super::outbox::delivery_row(a))
                    .collect();
                states.written_attempts = attempts.iter().map(|(key, _)| *key).collect();
                if role == Role::Derive {
                    // The receivers wrote these; the deriver's progress says how far it read.
                    tables.raw_events.clear();
                    tables.rejected_events.clear();
                    states.derived_through = derived_through;
                }
                if leftovers {
                    sink.remove_uncommitted(committed)?;
                }
                // Nothing is written without room for all of it (disk.rs prices each part).
                // Lead scores are made while the files are written, so their part is priced
                // by bounds: a row's date is that of one of the flush's events, and the key
                // records that change are those of its calls and outcomes and the two keys
                // each snapshot carries.
                let (score_files, score_keys) = match rules {
                    Some(_) => (
                        sink.partitions(&tables.contact_events)
                            + sink.partitions(&tables.call_events)
                            + sink.partitions(&tables.call_outcomes),
                        tables.call_events.len()
                            + tables.call_outcomes.len()
                            + 2 * tables.contact_events.len(),
                    ),
                    None => (0, 0),
                };
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
                    files: sink.files_for(&tables) + score_files,
                    states: (states.contacts.len() + states.calls.len()) as u64,
                    ids: taken.events.len() as u64,
                    rewritten_ids: store.rewritten_by_commit(taken.events.len())?,
                    key_records: store.key_records_by_commit(score_keys)?,
                };
                disk.check_room(crate::disk::flush_bytes(size))?;
                // Lead scoring reads the states change tracking advanced (src/score/), on
                // one of the writing workers while the others encode this flush's files.
                let score_ms = std::sync::atomic::AtomicU64::new(0);
                let (files, made, scored) = sink.write_with(&tables, flush_seq, || {
                    let Some(rules) = rules else {
                        return Ok((flatten::Tables::default(), None));
                    };
                    let started = Instant::now();
                    let (scored, rows) = crate::score::apply(
                        &tables,
                        &states.contacts,
                        &seen,
                        rules,
                        &store,
                        options.threads,
                    )?;
                    score_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let made = flatten::Tables {
                        lead_scores: rows,
                        ..Default::default()
                    };
                    Ok::<_, FlushError>((made, Some(scored)))
                })?;
                tables.lead_scores = made.lead_scores;
                if let Some(scored) = scored {
                    states.scoring = scored;
                }
                stages.score_ms = score_ms.into_inner();
                // Workflow triggers' facts (score changes among them), put in the outbox by
                // this flush's commit.
                if let Some(triggers) = triggers.as_ref().filter(|_| role != Role::Ingest) {
                    states.outbox = super::outbox::facts(
                        triggers,
                        &tables,
                        &states.contacts,
                        &states.scoring.records,
                        &store,
                    )?;
                }
                let rows: BTreeMap<&'static str, usize> = tables.row_counts().into_iter().collect();
                let parse_errors = tables.parse_error_count();
                let mut flags: BTreeMap<String, u64> = BTreeMap::new();
                for flag in tables.contact_events.iter().flat_map(|r| &r.quality_flags) {
                    *flags.entry(flag.clone()).or_default() += 1;
                }
                // What each table's Delta commit adds: sizes and statistics from the footers.
                let data_files = super::lake::data_files(&sink, &files)?;
                lap(&mut stages.write_ms);
                Ok::<_, FlushError>((
                    rows,
                    parse_errors,
                    flags,
                    (files, data_files),
                    states,
                    stages,
                ))
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
        let (rows, parse_errors, flags, (files, data_files), states, mut stages) = match result {
            Ok(done) => done,
            Err(FlushError::NoRoom(no)) => return Err(self.flush_held_back(taken, no)),
            Err(e) => return Err(self.flush_failed(taken, e)),
        };
        if let Some(written) = written {
            // The receiver may be gone; the flush goes on regardless.
            let _ = written.send(());
        }
        crate::failpoint::hit("flush-after-renames");
        // A remote lake: the staged files go up, all of them, before any commit names them.
        if self.lake.is_remote() {
            let upload_started = Instant::now();
            let relative: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            match self.lake.upload_staged(self.sink.root(), &relative).await {
                Ok(bytes) => self.lake_uploaded(bytes, relative.len(), upload_started.elapsed()),
                Err(e) => {
                    self.lake_failed(&e);
                    return Err(self.flush_failed(taken, e.into()));
                }
            }
            stages.upload_ms = upload_started.elapsed().as_millis() as u64;
            crate::failpoint::hit("flush-after-upload");
        }
        // Each table's Delta commit, with the transaction (app id, flush number); a failure
        // fails the whole flush, and the next one reverts what was committed.
        let lake_started = Instant::now();
        match self.lake.commit_flush(flush_seq, &data_files).await {
            Ok(versions) => self.lake_committed(&versions),
            Err(e) => {
                self.lake_failed(&e);
                return Err(self.flush_failed(taken, e.into()));
            }
        }
        stages.lake_ms = lake_started.elapsed().as_millis() as u64;
        crate::failpoint::hit("flush-after-delta-commits");
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
        // The deriver's lease, once more before the commit point.
        if let Err(e) = self.lake.check_fence() {
            return Err(self.flush_failed(taken, e.into()));
        }
        if let Err(e) = self.store.commit(record, &ids, &states) {
            // redb may have recorded a commit that reports an error: the store, opened again,
            // says which.
            match self.failed_commit_outcome(flush_seq, e) {
                CommitOutcome::Recorded => {}
                CommitOutcome::NotRecorded(e) => {
                    // Reverted in the logs and deleted now, so that no reader sees rows of a
                    // flush that did not commit (if this fails, the next flush does it:
                    // `leftovers`).
                    let undone = match self.lake.revert_uncommitted(committed).await {
                        Ok(reverted) => {
                            self.txn_floor
                                .fetch_max(reverted.txn_floor, Ordering::AcqRel);
                            self.sink
                                .remove_uncommitted(committed)
                                .map(drop)
                                .map_err(FlushError::from)
                        }
                        Err(e) => Err(e.into()),
                    };
                    if let Err(removal) = undone {
                        tracing::error!(error = %removal, "cannot delete the files of a flush that did not commit");
                    }
                    return Err(self.flush_failed(taken, e));
                }
                CommitOutcome::Unknown(e) => {
                    return Err(self.commit_unconfirmed(flush_seq, taken, e));
                }
            }
        }
        crate::failpoint::hit("flush-after-commit");
        self.facts_committed(&states.outbox);
        if self.lake.is_remote() {
            // Uploaded and committed: the staged copies are no longer needed.
            for f in &files {
                let path = self.sink.root().join(&f.path);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot delete a staged file");
                }
            }
        }
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
            score_ms = stages.score_ms,
            write_ms = stages.write_ms,
            lake_ms = stages.lake_ms,
            upload_ms = stages.upload_ms,
            commit_ms = stages.commit_ms,
            "flushed"
        );
        Ok(report)
    }
}

/// A request under way, from its arrival until its events are buffered or refused
/// ([`Pipeline::arriving`]).
pub struct Arrival {
    pipeline: Arc<Pipeline>,
    token: u64,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.pipeline
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
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
    use crate::pipeline::Mode;
    use crate::pipeline::testutil::*;

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
}
