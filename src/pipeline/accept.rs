//! Taking events in: dedup against committed and pending ids, buffer room, the log append and
//! the buffer push, for a request ([`Pipeline::accept`], the ack point), a dead letter, and the
//! unlogged batches of replay and rebuild.
//! Invariant: `Ok` only once the events are as durable as configured and buffered; a request's
//! events are taken whole or not at all; an id already written or already pending is answered
//! as a duplicate and not taken again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::buffer::BufferFull;
use crate::disk::DiskFull;
use crate::event::Envelope;
use crate::rejected::Rejection;
use crate::state::{StoreError, id_bytes};
use crate::wal::{Entry, WalError};

use super::Pipeline;

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

impl Pipeline {
    /// Splits events into fresh ones (whose ids are now pending) and the positions of duplicates
    /// (ids already committed, already pending, or repeated within the batch), which it counts
    /// in `hooklake_events_duplicate_total` by event type.
    pub(super) fn claim_ids(
        &self,
        events: Vec<Envelope>,
    ) -> Result<(Vec<Envelope>, Vec<usize>), StoreError> {
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

    pub(super) fn release_ids(&self, events: &[Envelope]) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Mode;
    use crate::pipeline::testutil::*;

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
}
