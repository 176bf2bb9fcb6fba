//! The on-disk record format of the write-ahead log, and the entry it carries.
//!
//! A record is a 16-byte header followed by the payload:
//!
//! ```text
//! offset  size  field
//! 0       4     payload length N, u32 little-endian (at most MAX_PAYLOAD)
//! 4       4     CRC-32C of bytes 8..16+N (sequence number and payload), u32 little-endian
//! 8       8     sequence number, u64 little-endian, one more than the previous record's
//! 16      N     payload: an encoded [`Entry`]
//! ```
//!
//! An entry is one accepted request body with what is needed to process it again:
//!
//! ```text
//! 0       8     received_at, microseconds since the Unix epoch, i64 little-endian
//! 8       1     URL kind: 0 none, else 1 + index in EventType::ALL
//! 9       2     length P of the source path, u16 little-endian
//! 11      P     source path, UTF-8
//! 11+P    ...   the request body, exactly as received
//! ```
//!
//! A payload whose byte 8 is `0xFF` is not an entry but a dead letter
//! ([`crate::rejected::Rejection`], laid out in its module); [`Entry::decode`] refuses it.

use crate::event::EventType;

/// Size of a record header.
pub const HEADER_LEN: usize = 16;
/// Largest payload a record may carry (64 MiB); a larger length in a header means corruption.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Bytes an [`Entry`]'s payload holds before its path: receive time, URL kind, path length.
const ENTRY_HEAD: usize = 8 + 1 + 2;
/// Largest request body an [`Entry`] can log whatever its path (which is cut at 64 KiB).
pub const MAX_ENTRY_BODY: usize = MAX_PAYLOAD - ENTRY_HEAD - u16::MAX as usize;

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub received_at_us: i64,
    pub url_kind: Option<EventType>,
    pub source_path: String,
    pub body: Vec<u8>,
}

impl Entry {
    /// Encodes the entry as a record payload.
    pub fn encode(&self) -> Vec<u8> {
        let path = self.source_path.as_bytes();
        let path = &path[..path.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(ENTRY_HEAD + path.len() + self.body.len());
        out.extend_from_slice(&self.received_at_us.to_le_bytes());
        let kind = match self.url_kind {
            None => 0u8,
            Some(k) => {
                1 + EventType::ALL
                    .iter()
                    .position(|t| *t == k)
                    .expect("every type is listed") as u8
            }
        };
        out.push(kind);
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes a record payload; `None` if it is not a valid entry.
    pub fn decode(payload: &[u8]) -> Option<Entry> {
        let received_at_us = i64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
        let url_kind = match *payload.get(8)? {
            0 => None,
            k => Some(*EventType::ALL.get(k as usize - 1)?),
        };
        let path_len = u16::from_le_bytes(payload.get(9..ENTRY_HEAD)?.try_into().ok()?) as usize;
        let path_end = ENTRY_HEAD + path_len;
        let source_path = std::str::from_utf8(payload.get(ENTRY_HEAD..path_end)?)
            .ok()?
            .to_string();
        let body = payload.get(path_end..)?.to_vec();
        Some(Entry {
            received_at_us,
            url_kind,
            source_path,
            body,
        })
    }
}

/// Appends one record (header and payload) to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and the offset just past it.
    Record {
        seq: u64,
        payload: &'a [u8],
        next: usize,
    },
    /// The clean end of the data.
    End,
    /// A record that is cut short, or whose length or checksum is wrong.
    Invalid(&'static str),
}

/// Decodes the record starting at `offset` of `data`. The end of the data, or nothing but zeros
/// from `offset` on (space prepared ahead of the writer, even less than a header of it), is the
/// clean end.
pub fn decode_record(data: &[u8], offset: usize) -> Decoded<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest[..rest.len().min(HEADER_LEN)].iter().all(|b| *b == 0) {
        // No record has an all-zero header (sequence numbers start at 1): this is prepared space,
        // possibly less than a header's worth of it at the end of a segment.
        return if rest.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("non-zero bytes after an empty record header")
        };
    }
    if rest.len() < HEADER_LEN {
        return Decoded::Invalid("record header cut short");
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(rest[8..16].try_into().unwrap());
    if len > MAX_PAYLOAD {
        return Decoded::Invalid("record length out of range");
    }
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Invalid("record payload cut short");
    };
    if crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload) != crc {
        return Decoded::Invalid("record checksum mismatch");
    }
    Decoded::Record {
        seq,
        payload,
        next: offset + HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entry = Entry {
            received_at_us: 1_772_000_000_123_456,
            url_kind: Some(EventType::CallOutcome),
            source_path: "/webhooks/iclosed/outcomeAdded".into(),
            body: br#"[{"uuid": 1}]"#.to_vec(),
        };
        assert_eq!(Entry::decode(&entry.encode()), Some(entry.clone()));
        let plain = Entry {
            url_kind: None,
            ..entry
        };
        assert_eq!(Entry::decode(&plain.encode()), Some(plain));
        assert_eq!(Entry::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut data = Vec::new();
        encode_record(7, b"hello", &mut data);
        encode_record(8, b"", &mut data);
        let Decoded::Record { seq, payload, next } = decode_record(&data, 0) else {
            panic!()
        };
        assert_eq!((seq, payload), (7, &b"hello"[..]));
        assert!(matches!(
            decode_record(&data, next),
            Decoded::Record { seq: 8, .. }
        ));
        assert_eq!(decode_record(&data, data.len()), Decoded::End);
        // Prepared space after the last record is a clean end; anything else in it is not.
        let mut prepared = data.clone();
        prepared.resize(data.len() + 4096, 0);
        assert_eq!(decode_record(&prepared, data.len()), Decoded::End);
        // Less prepared space than a record header (a segment filled almost to its size).
        assert_eq!(
            decode_record(&prepared[..data.len() + 10], data.len()),
            Decoded::End
        );
        prepared[data.len() + 100] = 1;
        assert!(matches!(
            decode_record(&prepared, data.len()),
            Decoded::Invalid(_)
        ));
        // A torn tail: a record cut anywhere in its header.
        for cut in 1..HEADER_LEN {
            assert!(matches!(
                decode_record(&data[..cut], 0),
                Decoded::Invalid(_)
            ));
        }
        // Except where what reached the disk is all zeros (the length of an empty record): that
        // cannot be told from prepared space, and no record is acknowledged before it is whole.
        assert_eq!(decode_record(&data[..next + 4], next), Decoded::End);
        assert!(matches!(
            decode_record(&data[..next + 5], next),
            Decoded::Invalid(_)
        ));
        assert_eq!(
            decode_record(&data[..next - 1], 0),
            Decoded::Invalid("record payload cut short")
        );
        // A flipped bit anywhere in the first record.
        for byte in 0..next {
            let mut bad = data.clone();
            bad[byte] ^= 0x10;
            assert!(
                matches!(decode_record(&bad, 0), Decoded::Invalid(_)),
                "flip at {byte}"
            );
        }
    }
}
