//! The stored form of a contact's score ([`ScoreState`]), of a key's counts ([`Counts`]) and
//! of a key's record ([`KeyRecord`]: its owner and counts): a format byte, then varints and
//! length-prefixed text. Stores written before this form hold JSON for scores and counts,
//! which starts with `{` and is still read.
//! Invariant: `decode(encode(x)) == x`; a value cut short or in an unknown format is an error,
//! never a default.

use super::ScoreState;
use super::rules::{Counts, Evaluation};
use crate::state::codec::{DecodeError, Malformed, Reader, decode, put_int, put_text, put_varint};

/// What the state store keeps under a contact key: the contact that owns it (none for a
/// `c:` key, which is its contact's by name, and for a key no contact has carried yet) and
/// the counts of the calls and outcomes filed under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRecord {
    pub owner: Option<i64>,
    pub counts: Counts,
}

/// First byte of the binary form.
const FORMAT: u8 = 1;

/// Appends the binary form of a score.
pub fn encode_score(state: &ScoreState, out: &mut Vec<u8>) {
    out.push(FORMAT);
    put_int(out, state.revision);
    put_int(out, state.last_activity_us);
    put_text(out, &state.last_event_id);
    put_text(out, &state.last_event_type);
    let e = &state.evaluation;
    put_int(out, e.points);
    put_int(out, e.score);
    put_text(out, &e.band);
    put_varint(out, e.matched.len() as u64);
    for (id, points) in &e.matched {
        put_text(out, id);
        put_int(out, *points);
    }
}

/// Appends the binary form of counts, as earlier versions stored them under the key text
/// (their stores are converted when opened; tests write this form to check that).
#[cfg(test)]
pub fn encode_counts(c: &Counts, out: &mut Vec<u8>) {
    out.push(FORMAT);
    put_counts(c, out);
}

fn put_counts(c: &Counts, out: &mut Vec<u8>) {
    for n in c.values() {
        put_varint(out, u64::from(n));
    }
}

/// Reads a stored score: the binary form or JSON.
pub fn decode_score(bytes: &[u8]) -> Result<ScoreState, DecodeError> {
    decode(bytes, FORMAT, "stored score", |r| {
        let revision = r.int()?;
        let last_activity_us = r.int()?;
        let last_event_id = r.text()?;
        let last_event_type = r.text()?;
        let points = r.int()?;
        let score = r.int()?;
        let band = r.text()?;
        let n = r.varint()?;
        // Each rule takes at least two bytes: a count beyond the bytes left is damage.
        if n > r.left() as u64 {
            return Err(r.malformed());
        }
        let mut matched = Vec::with_capacity(n as usize);
        for _ in 0..n {
            matched.push((r.text()?, r.int()?));
        }
        Ok(ScoreState {
            revision,
            evaluation: Evaluation {
                matched,
                points,
                score,
                band,
            },
            last_activity_us,
            last_event_id,
            last_event_type,
        })
    })
}

/// Reads stored counts: the binary form or JSON.
pub fn decode_counts(bytes: &[u8]) -> Result<Counts, DecodeError> {
    decode(bytes, FORMAT, "stored counts", read_counts)
}

fn read_counts(r: &mut Reader<'_>) -> Result<Counts, Malformed> {
    let mut next = || {
        let v = r.varint()?;
        u32::try_from(v).map_err(|_| r.malformed())
    };
    Ok(Counts {
        booked: next()?,
        cancelled: next()?,
        rescheduled: next()?,
        held: next()?,
        no_show: next()?,
        won: next()?,
    })
}

/// Appends a key record without a format byte (the records of a batch share one): `0`, or
/// `1` and the owner, then the counts.
pub fn put_record(record: &KeyRecord, out: &mut Vec<u8>) {
    match record.owner {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_int(out, id);
        }
    }
    put_counts(&record.counts, out);
}

/// Reads a key record written by [`put_record`].
pub fn read_record(r: &mut Reader<'_>) -> Result<KeyRecord, Malformed> {
    let owner = match r.byte()? {
        0 => None,
        1 => Some(r.int()?),
        _ => return Err(r.malformed()),
    };
    Ok(KeyRecord {
        owner,
        counts: read_counts(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(matched: Vec<(String, i64)>) -> ScoreState {
        ScoreState {
            revision: 7,
            evaluation: Evaluation {
                points: matched.iter().map(|(_, p)| p).sum(),
                score: -3,
                band: "cold".into(),
                matched,
            },
            last_activity_us: -1_700_000_000_000_000,
            last_event_id: "evt_é1".into(),
            last_event_type: "contact_updated".into(),
        }
    }

    #[test]
    fn scores_and_counts_round_trip_and_json_is_still_read() {
        for s in [
            state(vec![]),
            state(vec![("qualified".into(), 30), ("no-show".into(), i64::MIN)]),
        ] {
            let mut bytes = Vec::new();
            encode_score(&s, &mut bytes);
            assert_eq!(decode_score(&bytes).unwrap(), s);
            let json = serde_json::to_vec(&s).unwrap();
            assert!(bytes.len() < json.len());
            assert_eq!(decode_score(&json).unwrap(), s);
        }
        let c = Counts {
            booked: 3,
            cancelled: 0,
            rescheduled: 1,
            held: u32::MAX,
            no_show: 2,
            won: 1,
        };
        let mut bytes = Vec::new();
        encode_counts(&c, &mut bytes);
        assert_eq!(decode_counts(&bytes).unwrap(), c);
        assert_eq!(decode_counts(&serde_json::to_vec(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn key_records_round_trip_and_damage_is_an_error() {
        let counts = Counts {
            booked: 2,
            won: u32::MAX,
            ..Counts::default()
        };
        for owner in [None, Some(0), Some(-5), Some(i64::MIN), Some(i64::MAX)] {
            let record = KeyRecord { owner, counts };
            let mut bytes = Vec::new();
            put_record(&record, &mut bytes);
            let mut r = Reader::new(&bytes, 0);
            assert_eq!(read_record(&mut r).unwrap(), record);
            assert!(r.end().is_ok());
            for cut in 0..bytes.len() {
                assert!(read_record(&mut Reader::new(&bytes[..cut], 0)).is_err());
            }
        }
        // An owner flag other than 0 or 1 is damage.
        assert!(read_record(&mut Reader::new(&[2, 0, 0, 0, 0, 0, 0], 0)).is_err());
    }

    #[test]
    fn damaged_bytes_are_errors() {
        let mut bytes = Vec::new();
        encode_score(&state(vec![("won".into(), 50)]), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(decode_score(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_score(&longer).is_err());
        assert!(matches!(
            decode_score(&[7, 1]),
            Err(DecodeError::Format(_, 7))
        ));
        let mut counts = Vec::new();
        encode_counts(&Counts::default(), &mut counts);
        assert!(decode_counts(&counts[..counts.len() - 1]).is_err());
        // A count above u32 is damage, not a wrapped number.
        let mut big = vec![FORMAT];
        put_varint(&mut big, u64::from(u32::MAX) + 1);
        big.extend([0; 5]);
        assert!(decode_counts(&big).is_err());
    }
}
