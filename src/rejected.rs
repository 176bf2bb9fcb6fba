//! Dead letters: an authenticated request whose body could not be turned into events, kept for
//! the `rejected_events` table and `hooklake replay --rejected`.
//!
//! A [`Rejection`] is made by the ingest layer after it answered (or is about to answer) a 4xx,
//! travels through the write-ahead log and the buffer like an accepted request, and becomes one
//! `rejected_events` row at the next flush. Its log payload shares the first 8 bytes of an
//! [`crate::wal::Entry`] (receive time) and puts [`TAG`] where an entry has its URL kind, which
//! no entry uses, so the two never decode as each other:
//!
//! ```text
//! 0       8     received_at, microseconds since the Unix epoch, i64 little-endian
//! 8       1     TAG (0xFF)
//! 9       4     length M of the metadata, u32 little-endian
//! 13      M     metadata: JSON object (status, reason, error, path, URL kind, headers, lengths)
//! 13+M    ...   the kept body bytes (at most `rejected_body_max_bytes`)
//! ```
//!
//! Invariant: pure (no I/O); a rejection never holds a credential, because the ingest layer
//! hands it headers already stripped of them and a path already redacted, and its id depends
//! only on what it keeps.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::EventType;

/// The byte at offset 8 of a log payload that marks a rejection (an entry's URL kind is 0-8).
pub const TAG: u8 = 0xFF;
/// Largest `rejected_body_max_bytes` (16 MiB): a rejection must fit in one log record.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One rejected request, as logged and as written to `rejected_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When hooklake received it, in microseconds since the Unix epoch (UTC).
    pub received_at_us: i64,
    /// Everything but the body and the receive time.
    pub meta: Meta,
    /// The body as received, cut at the configured cap.
    pub body: Vec<u8>,
    /// Sequence number of the log record that holds it (0 when not logged).
    pub seq: u64,
}

/// What a rejection records about its request besides the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// HTTP status of the answer.
    pub status: u16,
    /// Stable short reason (the `hooklake_requests_total` label).
    pub reason: String,
    /// The message of the answer's `{"error": ...}`.
    pub error: String,
    /// Request path with any secret path segment redacted.
    pub source_path: String,
    /// Event kind fixed by the URL, if any.
    pub url_kind: Option<EventType>,
    /// Headers without credentials, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Length of the whole body, when known (a body over the size limit sent without
    /// `Content-Length` is not read to its end).
    pub body_bytes: Option<u64>,
    /// Whether `body` holds less than the whole body.
    pub body_truncated: bool,
}

impl Rejection {
    /// A rejection keeping at most `cap` bytes of `body`. `whole_len` is the length of the whole
    /// body when known; `body` may itself be only a prefix of it. A cut that would split a UTF-8
    /// character of a text body moves back to the character's start, so the kept text decodes.
    pub fn new(received_at_us: i64, mut meta: Meta, body: &[u8], cap: usize) -> Rejection {
        let mut keep = body.len().min(cap);
        if keep < body.len()
            && let Err(e) = std::str::from_utf8(&body[..keep])
            && e.error_len().is_none()
        {
            keep = e.valid_up_to();
        }
        meta.body_truncated = keep < body.len() || meta.body_bytes.is_none_or(|n| n > keep as u64);
        Rejection {
            received_at_us,
            meta,
            body: body[..keep].to_vec(),
            seq: 0,
        }
    }

    /// The id of the rejected request: 32 hex digits of the SHA-256 of its receive time, path and
    /// kept body. The same logged rejection gets the same id after a crash and replay.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.received_at_us.to_le_bytes());
        hasher.update((self.meta.source_path.len() as u64).to_le_bytes());
        hasher.update(self.meta.source_path.as_bytes());
        hasher.update(&self.body);
        hasher.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Bytes this rejection holds in memory, roughly: what the buffer bound counts.
    pub fn approx_bytes(&self) -> usize {
        let headers: usize = self
            .meta
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        self.body.len() + headers + self.meta.error.len() + self.meta.source_path.len() + 128
    }

    /// Whether the body is valid UTF-8.
    pub fn body_is_utf8(&self) -> bool {
        std::str::from_utf8(&self.body).is_ok()
    }

    /// The headers as one JSON object: name -> value, repeated names joined with `, `.
    pub fn headers_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.meta.headers {
            match map.get_mut(name) {
                Some(serde_json::Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(value);
                }
                _ => {
                    map.insert(name.clone(), value.clone().into());
                }
            }
        }
        serde_json::Value::Object(map).to_string()
    }

    /// Encodes the rejection as a log record payload (layout in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("metadata serializes");
        let mut out = Vec::with_capacity(13 + meta.len() + self.body.len());
        out.extend_from_slice(&self.received_at_us.to_le_bytes());
        out.push(TAG);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes a log record payload; `None` if it is not a rejection.
    pub fn decode(payload: &[u8]) -> Option<Rejection> {
        let received_at_us = i64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
        if *payload.get(8)? != TAG {
            return None;
        }
        let len = u32::from_le_bytes(payload.get(9..13)?.try_into().ok()?) as usize;
        let meta: Meta =
            serde_json::from_slice(payload.get(13..13usize.checked_add(len)?)?).ok()?;
        Some(Rejection {
            received_at_us,
            meta,
            body: payload.get(13 + len..)?.to_vec(),
            seq: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(body_bytes: Option<u64>) -> Meta {
        Meta {
            status: 400,
            reason: "invalid_json".into(),
            error: "body is not valid JSON".into(),
            source_path: "/t/***/webhooks/iclosed".into(),
            url_kind: Some(EventType::CallBooked),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into()),
            ],
            body_bytes,
            body_truncated: false,
        }
    }

    #[test]
    fn rejections_round_trip_and_never_decode_as_entries() {
        let r = Rejection::new(1_772_000_000_000_000, meta(Some(4)), b"\xff\xfe{x", 100);
        assert!(!r.meta.body_truncated);
        assert!(!r.body_is_utf8());
        let payload = r.encode();
        assert_eq!(Rejection::decode(&payload), Some(r.clone()));
        assert_eq!(crate::wal::Entry::decode(&payload), None);
        let entry = crate::wal::Entry {
            received_at_us: 1,
            url_kind: None,
            source_path: "/w".into(),
            body: b"{}".to_vec(),
        };
        assert_eq!(Rejection::decode(&entry.encode()), None);
        assert_eq!(Rejection::decode(&payload[..12]), None);
        assert_eq!(
            r.headers_json(),
            r#"{"content-type":"application/json","x-a":"1, 2"}"#
        );
    }

    #[test]
    fn long_bodies_are_cut_at_the_cap_on_a_character_boundary() {
        // "é" is two bytes: a cap of 4 would split the second one.
        let body = "aééé".as_bytes();
        let r = Rejection::new(0, meta(Some(body.len() as u64)), body, 4);
        assert_eq!(r.body, "aé".as_bytes());
        assert!(r.meta.body_truncated && r.body_is_utf8());
        // Bytes that are not UTF-8 anyway are cut exactly at the cap.
        let r = Rejection::new(0, meta(Some(6)), b"\xff\xff\xff\xff\xff\xff", 4);
        assert_eq!(r.body.len(), 4);
        // A body whose end was never read is truncated even if all that was read is kept.
        let r = Rejection::new(0, meta(None), b"[[[", 100);
        assert!(r.meta.body_truncated);
        let whole = Rejection::new(0, meta(Some(3)), b"[[[", 3);
        assert!(!whole.meta.body_truncated);
        assert_ne!(r.id(), Rejection::new(1, meta(None), b"[[[", 100).id());
        assert_eq!(r.id().len(), 32);
    }
}
