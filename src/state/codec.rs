//! The primitives of the state store's binary forms (contact states, scores, counts): varints,
//! zigzag-coded integers and length-prefixed UTF-8 text, a reader that checks every bound, and
//! [`decode`], which tells the binary form from the JSON stores written before it held.
//! Invariant: a read past the end, an overlong varint or text that is not UTF-8 is
//! [`Malformed`] at the byte where it was found, never a default.

/// Where stored bytes stopped making sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub usize);

/// Why stored bytes could not be read; the first field names what they hold.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} JSON: {1}")]
    Json(&'static str, serde_json::Error),
    #[error("{0} cut short or malformed at byte {1}")]
    Malformed(&'static str, usize),
    #[error("{0} in an unknown format ({1})")]
    Format(&'static str, u8),
}

/// Reads stored bytes that hold `what`: the binary form (first byte `format`; `binary` reads
/// the rest, and nothing may follow it), or the JSON that stores written before that form hold
/// (an object).
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    format: u8,
    what: &'static str,
    binary: impl FnOnce(&mut Reader<'_>) -> Result<T, Malformed>,
) -> Result<T, DecodeError> {
    match bytes.first() {
        Some(b'{' | b' ' | b'\n' | b'\r' | b'\t') if format != bytes[0] => {
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(what, e))
        }
        _ => decode_binary(bytes, format, what, binary),
    }
}

/// Reads stored bytes that hold `what` in a binary form only (first byte `format`; `binary`
/// reads the rest, and nothing may follow it): for forms no store ever held as JSON.
pub fn decode_binary<T>(
    bytes: &[u8],
    format: u8,
    what: &'static str,
    binary: impl FnOnce(&mut Reader<'_>) -> Result<T, Malformed>,
) -> Result<T, DecodeError> {
    match bytes.first() {
        Some(&b) if b == format => {
            let mut r = Reader::new(bytes, 1);
            let value = binary(&mut r).and_then(|v| r.end().map(|()| v));
            value.map_err(|m| DecodeError::Malformed(what, m.0))
        }
        Some(&other) => Err(DecodeError::Format(what, other)),
        None => Err(DecodeError::Malformed(what, 0)),
    }
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed integer, zigzag-coded (small magnitudes take one byte).
pub fn put_int(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

pub fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Reads a binary form from byte `at` on.
pub struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    pub fn new(bytes: &'b [u8], at: usize) -> Reader<'b> {
        Reader { bytes, at }
    }

    /// The error at the current position.
    pub fn malformed(&self) -> Malformed {
        Malformed(self.at)
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    pub fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self.bytes.get(self.at).ok_or_else(|| self.malformed())?;
        self.at += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.malformed())
    }

    pub fn int(&mut self) -> Result<i64, Malformed> {
        Ok(unzigzag(self.varint()?))
    }

    pub fn text(&mut self) -> Result<String, Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.malformed())?;
        let end = self.at.checked_add(len).ok_or_else(|| self.malformed())?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| self.malformed())?;
        let text = std::str::from_utf8(slice).map_err(|_| self.malformed())?;
        self.at = end;
        Ok(text.to_string())
    }

    /// Nothing may follow the value.
    pub fn end(&self) -> Result<(), Malformed> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.malformed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_cut_bytes_are_malformed() {
        let mut out = Vec::new();
        for v in [0, -1, 1, i64::MIN, i64::MAX, 300] {
            put_int(&mut out, v);
        }
        put_text(&mut out, "é€x");
        let mut r = Reader::new(&out, 0);
        for v in [0, -1, 1, i64::MIN, i64::MAX, 300] {
            assert_eq!(r.int().unwrap(), v);
        }
        assert_eq!(r.text().unwrap(), "é€x");
        assert_eq!(r.end(), Ok(()));
        let mut cut = Reader::new(&out[..out.len() - 1], 0);
        for _ in 0..6 {
            cut.int().unwrap();
        }
        assert!(cut.text().is_err());
        // Eleven continuation bytes: longer than any u64.
        assert!(Reader::new(&[0x80; 11], 0).varint().is_err());
        assert!(Reader::new(&[2, 0xff, 0xfe], 0).text().is_err());
    }
}
