//! A flush that does not get through: one that fails, one held back for want of disk space, and
//! one whose commit reported an error (recorded or not, or not known yet, which the next flush
//! settles before anything else).
//! Invariant: a failed flush puts its events back in the buffer (or, commit outcome unknown,
//! keeps them aside until the next flush settles it); no reader sees a file of a flush that did
//! not commit once that flush has returned; a held-back flush has written nothing.

use std::sync::atomic::Ordering;

use chrono::Utc;

use crate::buffer::Taken;
use crate::disk::NoRoom;
use crate::state::StoreError;

use super::{FlushError, Pipeline};

/// A flush whose commit reported an error and whose outcome could not be read back (the state
/// store could not be opened again): redb may have recorded it all the same.
pub(super) struct Unconfirmed {
    flush_seq: u64,
    /// Its events, kept out of the buffer: written already if the commit was recorded.
    taken: Taken,
}

impl Pipeline {
    /// Settles a flush whose commit failed without saying whether it was recorded: opens the
    /// state store again if need be and reads the commit record. Recorded, the flush's files
    /// stand and its events are done; not recorded, its events go back to the buffer and the
    /// flush that follows reverts its files in the Delta logs (rule R) before it writes them
    /// again under a new number. Until the record can be read, nothing else is flushed (an
    /// error).
    pub(super) fn settle_unconfirmed(&self) -> Result<(), FlushError> {
        let mut slot = self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(flush_seq) = slot.as_ref().map(|u| u.flush_seq) else {
            return Ok(());
        };
        let settled = self
            .reopen_store_if_broken()
            .and_then(|()| self.store.committed())
            .map_err(FlushError::from);
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
                "a commit that reported an error was recorded; its files stand"
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
                "a failed commit was not recorded; its files are reverted and its events flushed again"
            );
            self.buffer().restore(unconfirmed.taken);
            // Its Delta commits stand until the flush that follows reverts them.
            self.leftovers.store(true, Ordering::Release);
        }
        self.flushing_oldest_us.store(i64::MAX, Ordering::Release);
        Ok(())
    }

    pub(super) fn flush_failed(&self, taken: Taken, error: FlushError) -> FlushError {
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
    pub(super) fn flush_held_back(&self, taken: Taken, no: NoRoom) -> FlushError {
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
    pub(super) fn failed_commit_outcome(&self, flush_seq: u64, error: StoreError) -> CommitOutcome {
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

    /// A commit failed and the store cannot say yet whether it was recorded: the flush's events
    /// are kept aside until the next flush settles it. Its files stay where the Delta logs name
    /// them, so a Delta reader never meets a missing file: readers see the flush's rows, which
    /// are acknowledged events, until the settling keeps them (recorded) or reverts them (not).
    pub(super) fn commit_unconfirmed(
        &self,
        flush_seq: u64,
        taken: Taken,
        error: FlushError,
    ) -> FlushError {
        self.metrics.add("hooklake_flushes_total", "failed", 1);
        tracing::error!(error = %error, flush_seq, events = taken.events.len(), "flush failed, and whether its commit was recorded cannot be read yet; the next flush settles it");
        self.set_flush_problem(Some(format!("flush failed: {error}")));
        *self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Unconfirmed { flush_seq, taken });
        error
    }
}

/// What a commit that reported an error did.
pub(super) enum CommitOutcome {
    /// It was recorded all the same.
    Recorded,
    /// It was not recorded.
    NotRecorded(FlushError),
    /// The store cannot be read yet to tell.
    Unknown(FlushError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pipeline::testutil::*;
    use crate::pipeline::{AcceptError, FlushReason, Mode};

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
            4,
            "contact_events, raw_events, status_transitions, lead_scores"
        );
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
        // The failed attempt reached no Delta log: its number is taken again.
        assert_eq!(retry.flush_id.as_deref(), Some("000000000002"));
        assert_eq!(delta_flushes(dir.path(), "raw_events"), [1, 2]);
        assert!(
            !stale.exists(),
            "the failed attempt's file is not committed with the retry"
        );
        assert!(committed.exists(), "committed files stay");
        p.close();
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
        // Flush 2 reached the Delta logs before its commit failed: it was reverted there, and
        // its number is not used again.
        assert_eq!(retry.flush_id.as_deref(), Some("000000000003"));
        assert_eq!(delta_flushes(dir.path(), "raw_events"), [1, 3]);
        assert_eq!(p.flush_problem(), None);
        assert_eq!(contact_rows(dir.path()), [1, 2]);
        p.close();
    }

    #[tokio::test]
    async fn a_commit_whose_outcome_cannot_be_read_leaves_its_files_to_the_delta_logs_until_the_store_answers()
     {
        let dir = tempfile::tempdir().unwrap();
        let config = logged_config(dir.path());
        let (p, _) = open(&config, Mode::Logged);
        accept_request(&p, 1).await;
        p.flush(FlushReason::Manual).await.unwrap();
        accept_request(&p, 2).await;
        // The disk stays full: the store cannot be opened again to read what was recorded.
        p.store().simulate_fault(crate::state::Fault::Writes);
        p.flush(FlushReason::Manual).await.unwrap_err();
        // Its files stay where the Delta logs name them: no Delta reader meets a missing file.
        assert_eq!(published(dir.path(), "contact_events").len(), 2);
        assert_eq!(delta_flushes(dir.path(), "contact_events"), [1, 2]);
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
        assert_eq!(report.flush_id.as_deref(), Some("000000000003"));
        assert_eq!(
            report.events, 1,
            "the failed flush's event, written under the next number (flush 2 was reverted in the Delta logs)"
        );
        accept_request(&p, 3).await;
        p.flush(FlushReason::Manual).await.unwrap();
        assert_eq!(contact_rows(dir.path()), [1, 2, 3]);
        assert_eq!(delta_flushes(dir.path(), "contact_events"), [1, 3, 4]);
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
        assert_eq!(published(dir.path(), "contact_events").len(), 1);
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
}
