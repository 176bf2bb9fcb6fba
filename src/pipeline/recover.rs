//! Opening the data directory: its lock, the state store, the files of a flush past the commit
//! record (reverted in the Delta logs and removed: rule R), log recovery, and
//! the logged records put back in the buffer.
//! Invariant: one process per data directory (an exclusive lock held while the pipeline
//! lives); every logged event not yet committed is back in the buffer, through the same parsing
//! and dedup as live traffic; a committed flush is never replayed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::buffer::{Buffer, Limits};
use crate::config::{self, Config};
use crate::disk::DiskGuard;
use crate::event;
use crate::flatten;
use crate::metrics::Metrics;
use crate::rejected::Rejection;
use crate::sink::{Sink, SinkError, WriterSettings};
use crate::state::{IdSet, Store, StoreError};
use crate::wal::{self, Entry, Wal, WalConfig, WalError};

use super::lake::LakeTables;
use super::{Mode, Pipeline};
use crate::lake::Lake;

/// Why the pipeline could not open its data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error("the lake: {0}")]
    Lake(#[from] crate::lake::LakeError),
    #[error(
        "data directory {0} is in use by another hooklake process (lock held on {0}/_hooklake/lock)"
    )]
    Locked(PathBuf),
    #[error("[scoring]: {0}")]
    Scoring(#[from] crate::score::rules::RuleError),
    #[error("[[triggers]]: {0}")]
    Triggers(#[from] crate::trigger::TriggerError),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// Published files of an uncommitted flush that were removed (from the Delta logs, the
    /// store, or both), and data files no log named.
    pub removed_files: usize,
    /// Files of a lake written without Delta logs that were added to new logs.
    pub converted_files: usize,
    /// Damaged places in the log (truncated torn tail, skipped corruption).
    pub damage: Vec<String>,
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
        let lake_url = config.lake();
        let store_options = config.store_options();
        // A local lake is written in place; a remote lake's files are written to the staging
        // directory and uploaded from there. What staging holds at start belongs to flushes
        // the state store committed (uploaded and in the logs) or never committed (rule R and
        // `delete_untracked` clear their uploads): none of it is needed again.
        let lake_root = match lake_url.local_path() {
            Some(path) => path.to_path_buf(),
            None => {
                let staging = state_dir.join("staging");
                match std::fs::remove_dir_all(&staging) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ioerr(&staging)(e)),
                }
                std::fs::create_dir_all(&staging).map_err(ioerr(&staging))?;
                staging
            }
        };
        let instance = super::lake::instance_id(&state_dir).map_err(ioerr(&state_dir))?;
        // Processes sharing a lake tag their file names, and own only what their role writes;
        // derivers share one transaction id, so that two never commit the same flush number.
        let role = config.role;
        let tag =
            (role != config::Role::All).then(|| instance.chars().take(16).collect::<String>());
        let app_id = match role {
            config::Role::Derive => super::lake::DERIVER_APP_ID.to_string(),
            _ => super::lake::app_id(&instance),
        };
        let owned = super::lake::Owned {
            tables: match role {
                config::Role::All => None,
                config::Role::Ingest => Some(super::lake::RECEIVED_TABLES.to_vec()),
                config::Role::Derive => Some(super::lake::derived_tables()),
            },
            tag: (role == config::Role::Ingest)
                .then(|| tag.clone())
                .flatten(),
        };
        let sink = Sink::open(&lake_root, settings, config.partition_offset())?.with_tag(tag);
        // The lake's side, on a runtime of its own (this function is synchronous): convert a
        // lake without logs, revert a flush that never reached the state store (rule R),
        // delete what no log names, and list what is live for compaction's recovery.
        let (converted, reverted, untracked, live) = crate::lake::block_on(async {
            let tables = LakeTables::new(Lake::open(&lake_url, &store_options)?, app_id.clone())
                .with_owned(owned.clone());
            let converted = if tables.is_remote() {
                // A remote lake is only ever written with its logs.
                0
            } else {
                tables.convert(&lake_root, committed.flush_seq).await?
            };
            // A deriver fences off the one before it first, so that rule R sees all it did.
            let fence = match role {
                config::Role::Derive => tables.fence_derivers(committed.flush_seq).await?,
                _ => 0,
            };
            let mut reverted = tables.revert_uncommitted(committed.flush_seq).await?;
            reverted.txn_floor = reverted.txn_floor.max(fence);
            let untracked = tables.delete_untracked().await?;
            let live = tables.live_files().await?;
            Ok::<_, crate::lake::LakeError>((converted, reverted, untracked, live))
        })
        .map_err(ioerr(&lake_root))??;
        crate::compact::recover(&store, &lake_root, &live).map_err(|e| OpenError::Io {
            path: lake_root.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut recovery = Recovery {
            removed_files: sink.remove_uncommitted(committed.flush_seq)?.len()
                + reverted.removed
                + untracked,
            converted_files: converted,
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
            scoring: match config.scoring.enabled {
                true => Some(Arc::new(crate::score::rules::Rules::new(&config.scoring)?)),
                false => None,
            },
            triggers: match config.triggers.is_empty() {
                true => None,
                false => Some(Arc::new(crate::trigger::Triggers::new(&config.triggers)?)),
            },
            trigger_wake: Arc::new(Notify::new()),
            // The first flush looks for attempts an earlier run recorded and did not write.
            attempts_waiting: Arc::new(AtomicBool::new(true)),
            fail_log_writes,
            panic_flushes: AtomicBool::new(false),
            before_commit: Mutex::new(None),
            leftovers: AtomicBool::new(false),
            lake: Arc::new(
                LakeTables::new(Lake::open(&lake_url, &store_options)?, app_id).with_owned(owned),
            ),
            role,
            derived_through: Mutex::new(None),
            arrivals: Mutex::new(BTreeMap::new()),
            watermark_us: AtomicI64::new(i64::MIN),
            txn_floor: AtomicU64::new(reverted.txn_floor),
            vacuum_retention: Duration::from_secs(config.vacuum_retention_secs),
            data_dir: config.data_dir.clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::FlushReason;
    use crate::pipeline::testutil::*;

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

    #[tokio::test]
    async fn a_crash_after_a_failed_commit_that_was_recorded_keeps_its_files_at_start() {
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
        assert_eq!(contact_rows(dir.path()), [1], "recorded: its files stand");
        assert_eq!(recovery.events, 0, "{recovery:?}");
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
