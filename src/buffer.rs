//! The in-memory buffer of accepted events and its size-based flush triggers.
//!
//! Invariant: the buffer never holds more than `max_bytes` of newly accepted events: a batch
//! that does not fit is refused whole (the caller answers 503), never accepted in part. Events
//! handed back by a failed flush ([`Buffer::restore`]) are put back first, in their order, even
//! past the bound, because they were already acknowledged. No I/O here.

use crate::event::Envelope;

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

/// A batch the buffer refused, handed back to the caller.
#[derive(Debug)]
pub struct Refused {
    pub full: BufferFull,
    pub batch: Vec<Envelope>,
}

/// Accepted events waiting for the next flush.
#[derive(Debug)]
pub struct Buffer {
    events: Vec<Envelope>,
    bytes: usize,
    limits: Limits,
}

impl Buffer {
    pub fn new(limits: Limits) -> Buffer {
        Buffer {
            events: Vec::new(),
            bytes: 0,
            limits,
        }
    }

    /// Takes a whole batch or none of it. Returns whether a flush is now due.
    pub fn push_all(&mut self, batch: Vec<Envelope>) -> Result<bool, Refused> {
        let added: usize = batch.iter().map(Envelope::approx_bytes).sum();
        if self.bytes + added > self.limits.max_bytes {
            let full = BufferFull {
                buffered_bytes: self.bytes,
                max_bytes: self.limits.max_bytes,
            };
            return Err(Refused { full, batch });
        }
        self.bytes += added;
        self.events.extend(batch);
        Ok(self.flush_due())
    }

    /// Whether a size trigger has fired.
    pub fn flush_due(&self) -> bool {
        self.events.len() >= self.limits.flush_max_rows || self.bytes >= self.limits.flush_max_bytes
    }

    /// Takes every buffered event, oldest first.
    pub fn take(&mut self) -> Vec<Envelope> {
        self.bytes = 0;
        std::mem::take(&mut self.events)
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

    /// The smallest log sequence number of a buffered event (logged events only).
    pub fn min_seq(&self) -> Option<u64> {
        self.events.iter().map(|e| e.seq).filter(|s| *s > 0).min()
    }

    /// Appends events recovered from the log, past the bound if need be (they were
    /// acknowledged before the crash).
    pub fn restore_back(&mut self, events: Vec<Envelope>) {
        self.bytes += events.iter().map(Envelope::approx_bytes).sum::<usize>();
        self.events.extend(events);
    }

    /// Puts back events a failed flush took, ahead of anything accepted since.
    pub fn restore(&mut self, mut events: Vec<Envelope>) {
        self.bytes += events.iter().map(Envelope::approx_bytes).sum::<usize>();
        events.append(&mut self.events);
        self.events = events;
    }

    /// Buffered events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Buffered bytes, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Receive time of the oldest buffered event (microseconds since the epoch).
    pub fn oldest_received_at_us(&self) -> Option<i64> {
        self.events.iter().map(|e| e.received_at_us).min()
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
        assert!(!b.push_all(vec![event(1), event(2)]).unwrap());
        assert!(b.push_all(vec![event(3)]).unwrap());
        assert_eq!(b.take().len(), 3);
        assert!(b.is_empty() && b.bytes() == 0);
    }

    #[test]
    fn byte_trigger_fires() {
        let mut b = Buffer::new(Limits {
            flush_max_rows: 100,
            flush_max_bytes: 1,
            max_bytes: usize::MAX,
        });
        assert!(b.push_all(vec![event(1)]).unwrap());
    }

    #[test]
    fn a_batch_that_does_not_fit_is_refused_whole() {
        let one = event(1).approx_bytes();
        let mut b = Buffer::new(limits(100, 2 * one));
        b.push_all(vec![event(1)]).unwrap();
        let refused = b.push_all(vec![event(2), event(3)]).unwrap_err();
        assert_eq!(refused.full.buffered_bytes, one);
        assert_eq!(refused.batch.len(), 2);
        assert_eq!(b.len(), 1);
        b.push_all(vec![event(4)]).unwrap();
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
        b.push_all(vec![event(1), event(2)]).unwrap();
        let taken = b.take();
        b.push_all(vec![event(3)]).unwrap();
        b.restore(taken);
        let order: Vec<i64> = b.take().iter().map(|e| e.received_at_us).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }
}
