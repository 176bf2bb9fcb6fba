//! The in-memory buffer of accepted events and its size-based flush triggers.
//!
//! Invariant: the buffer never holds more than `max_bytes` of newly accepted events: room for a
//! batch is reserved before it is logged, and a batch that does not fit is refused whole (the
//! caller answers 503), never accepted in part. Events
//! handed back by a failed flush ([`Buffer::restore`]) are put back first, in their order, even
//! past the bound, because they were already acknowledged. Dead letters ([`Rejection`]) wait
//! here beside the events and count against the same bound, and the ids of replayed dead
//! letters wait for the flush that commits their events. No I/O here.

use crate::event::Envelope;
use crate::rejected::Rejection;

/// Everything one flush takes from the buffer.
#[derive(Debug, Default)]
pub struct Taken {
    /// Accepted events, oldest first.
    pub events: Vec<Envelope>,
    /// Dead letters, oldest first.
    pub rejected: Vec<Rejection>,
    /// Ids of dead letters whose events are among `events` (`hooklake replay --rejected`): the
    /// flush that commits the events records them as replayed in the same transaction.
    pub replayed: Vec<[u8; 16]>,
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rejected.is_empty() && self.replayed.is_empty()
    }

    fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(Envelope::approx_bytes)
            .sum::<usize>()
            + self
                .rejected
                .iter()
                .map(Rejection::approx_bytes)
                .sum::<usize>()
    }
}

/// Size limits of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Buffered events that make a flush due.
    pub flush_max_rows: usize,
    /// Buffered bytes that make a flush due.
    pub flush_max_bytes: usize,
    /// Hard bound on buffered bytes.
    pub max_bytes: usize,
}

/// The buffer is full; the batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer full: {buffered_bytes} bytes buffered, bound is {max_bytes}")]
pub struct BufferFull {
    pub buffered_bytes: usize,
    pub max_bytes: usize,
}

/// Accepted events waiting for the next flush.
#[derive(Debug)]
pub struct Buffer {
    events: Vec<Envelope>,
    rejected: Vec<Rejection>,
    replayed: Vec<[u8; 16]>,
    bytes: usize,
    limits: Limits,
}

impl Buffer {
    pub fn new(limits: Limits) -> Buffer {
        Buffer {
            events: Vec::new(),
            rejected: Vec::new(),
            replayed: Vec::new(),
            bytes: 0,
            limits,
        }
    }

    /// Whether a size trigger has fired.
    pub fn flush_due(&self) -> bool {
        self.len() >= self.limits.flush_max_rows || self.bytes >= self.limits.flush_max_bytes
    }

    /// Takes every buffered event, dead letter and replay mark, oldest first.
    pub fn take(&mut self) -> Taken {
        self.bytes = 0;
        Taken {
            events: std::mem::take(&mut self.events),
            rejected: std::mem::take(&mut self.rejected),
            replayed: std::mem::take(&mut self.replayed),
        }
    }

    /// Reserves room for `bytes` of events that will be pushed with [`Buffer::push_reserved`]
    /// (after they are logged), or refuses when the bound would be passed.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), BufferFull> {
        if self.bytes + bytes > self.limits.max_bytes {
            return Err(BufferFull {
                buffered_bytes: self.bytes,
                max_bytes: self.limits.max_bytes,
            });
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back a reservation that will not be used.
    pub fn unreserve(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Adds events whose bytes were reserved. Returns whether a flush is now due.
    pub fn push_reserved(&mut self, batch: Vec<Envelope>) -> bool {
        self.events.extend(batch);
        self.flush_due()
    }

    /// Adds a dead letter whose bytes were reserved. Returns whether a flush is now due.
    pub fn push_rejected_reserved(&mut self, rejection: Rejection) -> bool {
        self.rejected.push(rejection);
        self.flush_due()
    }

    /// Adds a dead letter without checking the bound (recovered from the log, or carried by a
    /// rebuild).
    pub fn push_rejected_unbounded(&mut self, rejection: Rejection) -> bool {
        self.bytes += rejection.approx_bytes();
        self.rejected.push(rejection);
        self.flush_due()
    }

    /// Records that the dead letter `id` was replayed: its events are buffered.
    pub fn mark_replayed(&mut self, id: [u8; 16]) {
        self.replayed.push(id);
    }

    /// The smallest log sequence number of a buffered event or dead letter (logged ones only).
    pub fn min_seq(&self) -> Option<u64> {
        let events = self.events.iter().map(|e| e.seq);
        let rejected = self.rejected.iter().map(|r| r.seq);
        events.chain(rejected).filter(|s| *s > 0).min()
    }

    /// Appends events without checking the bound: events recovered from the log (they were
    /// acknowledged before the crash) and batch replay (which flushes whenever a flush is due,
    /// so it never holds more than `flush_max_bytes` plus one body). Returns whether a flush is
    /// now due.
    pub fn push_unbounded(&mut self, events: Vec<Envelope>) -> bool {
        self.bytes += events.iter().map(Envelope::approx_bytes).sum::<usize>();
        self.events.extend(events);
        self.flush_due()
    }

    /// Puts back what a failed flush took, ahead of anything accepted since.
    pub fn restore(&mut self, mut taken: Taken) {
        self.bytes += taken.bytes();
        taken.events.append(&mut self.events);
        self.events = taken.events;
        taken.rejected.append(&mut self.rejected);
        self.rejected = taken.rejected;
        taken.replayed.append(&mut self.replayed);
        self.replayed = taken.replayed;
    }

    /// Buffered events and dead letters (each is a row of a flush).
    pub fn len(&self) -> usize {
        self.events.len() + self.rejected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rejected.is_empty() && self.replayed.is_empty()
    }

    /// Buffered bytes, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Receive time of the oldest buffered event (microseconds since the epoch).
    pub fn oldest_received_at_us(&self) -> Option<i64> {
        let events = self.events.iter().map(|e| e.received_at_us);
        events
            .chain(self.rejected.iter().map(|r| r.received_at_us))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> Envelope {
        Envelope::parse_one(&format!(r#"{{"n": {n}}}"#), None, n, "/w").unwrap()
    }

    fn limits(rows: usize, max_bytes: usize) -> Limits {
        Limits {
            flush_max_rows: rows,
            flush_max_bytes: usize::MAX,
            max_bytes,
        }
    }

    #[test]
    fn row_trigger_fires_at_the_limit() {
        let mut b = Buffer::new(limits(3, usize::MAX));
        assert!(!b.push_unbounded(vec![event(1), event(2)]));
        assert!(b.push_unbounded(vec![event(3)]));
        assert_eq!(b.take().events.len(), 3);
        assert!(b.is_empty() && b.bytes() == 0);
    }

    #[test]
    fn byte_trigger_fires() {
        let mut b = Buffer::new(Limits {
            flush_max_rows: 100,
            flush_max_bytes: 1,
            max_bytes: usize::MAX,
        });
        assert!(b.push_unbounded(vec![event(1)]));
    }

    #[test]
    fn reservations_count_against_the_bound() {
        let one = event(1).approx_bytes();
        let mut b = Buffer::new(limits(2, 2 * one));
        b.reserve(one).unwrap();
        b.reserve(one).unwrap();
        assert!(b.reserve(1).is_err());
        b.unreserve(one);
        let mut e = event(1);
        e.seq = 9;
        assert!(!b.push_reserved(vec![e]));
        assert_eq!((b.len(), b.bytes(), b.min_seq()), (1, one, Some(9)));
    }

    #[test]
    fn restore_puts_events_back_first() {
        let mut b = Buffer::new(limits(100, usize::MAX));
        b.push_unbounded(vec![event(1), event(2)]);
        let taken = b.take();
        b.push_unbounded(vec![event(3)]);
        b.restore(taken);
        let order: Vec<i64> = b.take().events.iter().map(|e| e.received_at_us).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }

    #[test]
    fn dead_letters_count_as_rows_and_hold_back_the_log() {
        let mut b = Buffer::new(limits(2, usize::MAX));
        let meta = crate::rejected::Meta {
            status: 400,
            reason: "invalid_json".into(),
            error: "e".into(),
            source_path: "/w".into(),
            url_kind: None,
            headers: Vec::new(),
            body_bytes: Some(1),
            body_truncated: false,
        };
        let mut r = Rejection::new(5, meta, b"{", 100);
        r.seq = 3;
        let mut e = event(1);
        e.seq = 7;
        assert!(!b.push_reserved(vec![e]));
        assert!(b.push_rejected_unbounded(r), "two rows make a flush due");
        assert_eq!(
            (b.len(), b.min_seq(), b.oldest_received_at_us()),
            (2, Some(3), Some(1))
        );
        b.mark_replayed([9; 16]);
        let taken = b.take();
        assert!(b.is_empty() && b.bytes() == 0);
        assert_eq!(
            (
                taken.events.len(),
                taken.rejected.len(),
                taken.replayed.len()
            ),
            (1, 1, 1)
        );
        b.restore(taken);
        assert_eq!((b.len(), b.min_seq()), (2, Some(3)));
    }
}
