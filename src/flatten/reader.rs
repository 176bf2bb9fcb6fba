//! Reading typed values out of a JSON object without losing anything.
//!
//! An [`Obj`] hands out the keys a flattener asks for, coerced to the column's type where that is
//! unambiguous (`"45"` is the integer 45, `"true"` is true, a number is a string), and records
//! every key it was not asked for. [`Obj::finish`] moves those unread keys into the row's
//! `extras`, by dotted path. Invariant: every key of the object ends up in a column, in
//! `extras`, or is named by the flattener as a documented duplicate ([`Obj::skip`]); a value of
//! the wrong type becomes null plus an entry in `parse_errors`, never a dropped event.
//!
//! Objects are the borrowed tree of [`crate::json`]. Calls and outcomes are read through an
//! [`Obj`]; contacts, most events, member by member (`contact/`), with the same [`coerce`]
//! functions.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::table::{Micros, Text};
use crate::json::{Json, Object};

/// What a row collects besides its columns: unmapped keys and values that did not parse.
#[derive(Debug, Default)]
pub struct Notes {
    /// Unmapped keys by dotted path.
    pub extras: Map<String, Value>,
    /// `path: problem`, one per value that could not be read.
    pub parse_errors: Vec<String>,
}

impl Notes {
    /// The extras as JSON text, or `None` when there are none.
    pub fn extras_json(&self) -> Option<String> {
        (!self.extras.is_empty()).then(|| Value::Object(self.extras.clone()).to_string())
    }

    /// Notes that the value at `path` could not be read: `problem` says why.
    pub(crate) fn problem(&mut self, path: String, problem: &str) {
        self.parse_errors.push(format!("{path}: {problem}"));
    }

    fn error(&mut self, path: String, expected: &str, got: &Json<'_>) {
        let mut shown = got.text();
        if shown.len() > 80 {
            let cut = (0..=80)
                .rev()
                .find(|i| shown.is_char_boundary(*i))
                .unwrap_or(0);
            shown.truncate(cut);
            shown.push('…');
        }
        self.parse_errors
            .push(format!("{path}: expected {expected}, got {shown}"));
    }
}

/// The coercions of every column type. Each takes the value (`null` gives `None` and no
/// error) and the value's dotted path, made only when the value does not parse.
pub mod coerce {
    use super::*;

    /// A string column: strings as they are, numbers and booleans as their JSON text.
    pub fn string(v: &Json<'_>, path: impl FnOnce() -> String, notes: &mut Notes) -> Option<Text> {
        match v {
            Json::Null => None,
            Json::String(s) => Some(Text::from(s.as_ref())),
            Json::Number(_) | Json::Bool(_) => Some(v.text().into()),
            Json::Array(_) | Json::Object(_) => {
                notes.error(path(), "a string", v);
                None
            }
        }
    }

    /// An integer column: integers, integral floats and digit strings.
    pub fn int(v: &Json<'_>, path: impl FnOnce() -> String, notes: &mut Notes) -> Option<i64> {
        let parsed = match v {
            Json::Null => return None,
            Json::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }),
            Json::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            notes.error(path(), "an integer", v);
        }
        parsed
    }

    /// A float column: numbers and numeric strings.
    pub fn float(v: &Json<'_>, path: impl FnOnce() -> String, notes: &mut Notes) -> Option<f64> {
        let parsed = match v {
            Json::Null => return None,
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        if parsed.is_none() {
            notes.error(path(), "a number", v);
        }
        parsed
    }

    /// A boolean column: booleans, `"true"`/`"false"` (any case), 0 and 1.
    pub fn boolean(v: &Json<'_>, path: impl FnOnce() -> String, notes: &mut Notes) -> Option<bool> {
        let parsed = match v {
            Json::Null => return None,
            Json::Bool(b) => Some(*b),
            Json::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Json::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            Json::Number(n) if n.as_i64() == Some(1) => Some(true),
            Json::Number(n) if n.as_i64() == Some(0) => Some(false),
            _ => None,
        };
        if parsed.is_none() {
            notes.error(path(), "a boolean", v);
        }
        parsed
    }

    /// A timestamp column, see [`parse_timestamp`]; an empty string is null.
    pub fn timestamp(
        v: &Json<'_>,
        path: impl FnOnce() -> String,
        notes: &mut Notes,
    ) -> Option<Micros> {
        let parsed = match v {
            Json::Null => return None,
            Json::String(s) if s.trim().is_empty() => return None,
            Json::String(s) => parse_timestamp(s),
            Json::Number(n) => n.as_i64().and_then(epoch_to_micros),
            _ => None,
        };
        if parsed.is_none() {
            notes.error(path(), "a timestamp", v);
        }
        parsed
    }

    /// A JSON column: the value's JSON text, whatever its type (`null` is null).
    pub fn json(v: &Json<'_>) -> Option<Text> {
        (!matches!(v, Json::Null)).then(|| v.text().into())
    }

    /// The items of an array as text: strings as they are, other values as their JSON text.
    pub fn item_texts<'v>(items: &'v [Json<'_>]) -> impl Iterator<Item = String> + 'v {
        items.iter().map(|i| match i {
            Json::String(s) => s.to_string(),
            _ => i.text(),
        })
    }

    /// The error for a value that should have been an object (`null` is not an error).
    pub fn not_an_object(v: &Json<'_>, path: String, notes: &mut Notes) {
        if !matches!(v, Json::Null) {
            notes.error(path, "an object", v);
        }
    }
}

/// A JSON object being read; see the module docs.
pub struct Obj<'a, 'j> {
    map: Option<&'a Object<'j>>,
    /// Dotted path of this object from the event root (`""` for the root).
    path: String,
    /// Keys already read or skipped.
    used: Vec<&'a str>,
}

impl<'a, 'j> Obj<'a, 'j> {
    /// The root object of an event.
    pub fn root(map: &'a Object<'j>) -> Obj<'a, 'j> {
        Obj {
            map: Some(map),
            path: String::new(),
            used: Vec::new(),
        }
    }

    /// Whether the object was present at all.
    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// The keys of the object, in its order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a, 'j> {
        self.map.into_iter().flat_map(|m| m.iter().map(|(k, _)| k))
    }

    /// The dotted path of `key` in the payload.
    pub(crate) fn full(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Marks `key` read and returns its value unless absent or null.
    pub fn take(&mut self, key: &str) -> Option<&'a Json<'j>> {
        let (k, v) = self.map?.get_entry(key)?;
        self.used.push(k);
        (!matches!(v, Json::Null)).then_some(v)
    }

    /// Marks `key` as a documented duplicate of data kept elsewhere.
    pub fn skip(&mut self, key: &str) {
        let _ = self.take(key);
    }

    /// Returns the raw value of `key` without marking it read.
    pub fn peek(&self, key: &str) -> Option<&'a Json<'j>> {
        self.map?.get(key).filter(|v| !matches!(v, Json::Null))
    }

    /// A string column, see [`coerce::string`].
    pub fn string(&mut self, key: &str, notes: &mut Notes) -> Option<Text> {
        let v = self.take(key)?;
        coerce::string(v, || self.full(key), notes)
    }

    /// Like [`Obj::string`], but an empty or all-blank string is null.
    pub fn non_empty_string(&mut self, key: &str, notes: &mut Notes) -> Option<Text> {
        self.string(key, notes).filter(|s| !s.trim().is_empty())
    }

    /// An integer column, see [`coerce::int`].
    pub fn int(&mut self, key: &str, notes: &mut Notes) -> Option<i64> {
        let v = self.take(key)?;
        coerce::int(v, || self.full(key), notes)
    }

    /// A float column, see [`coerce::float`].
    pub fn float(&mut self, key: &str, notes: &mut Notes) -> Option<f64> {
        let v = self.take(key)?;
        coerce::float(v, || self.full(key), notes)
    }

    /// A boolean column, see [`coerce::boolean`].
    pub fn boolean(&mut self, key: &str, notes: &mut Notes) -> Option<bool> {
        let v = self.take(key)?;
        coerce::boolean(v, || self.full(key), notes)
    }

    /// A timestamp column, see [`coerce::timestamp`].
    pub fn timestamp(&mut self, key: &str, notes: &mut Notes) -> Option<Micros> {
        let v = self.take(key)?;
        coerce::timestamp(v, || self.full(key), notes)
    }

    /// A JSON column: the value's JSON text, whatever its type.
    pub fn json(&mut self, key: &str) -> Option<Text> {
        self.take(key).and_then(coerce::json)
    }

    /// A nested object; absent or null gives an empty [`Obj`], another type is a parse error
    /// (the value stays in `extras` so nothing is lost).
    pub fn object(&mut self, key: &str, notes: &mut Notes) -> Obj<'a, 'j> {
        let path = self.full(key);
        let map = match self.peek(key) {
            Some(Json::Object(m)) => {
                self.skip(key);
                Some(m)
            }
            Some(other) => {
                coerce::not_an_object(other, path.clone(), notes);
                None
            }
            None => {
                self.skip(key);
                None
            }
        };
        Obj {
            map,
            path,
            used: Vec::new(),
        }
    }

    /// Moves every key not read or skipped into `notes.extras`, by dotted path.
    pub fn finish(self, notes: &mut Notes) {
        let Some(map) = self.map else { return };
        for (k, v) in map.iter() {
            // `used` holds the object's own keys (from `get_entry`), so identity is equality.
            if !self.used.iter().any(|u| std::ptr::eq(*u, k)) {
                notes.extras.insert(self.full(k), v.to_value());
            }
        }
    }
}

/// Seconds or milliseconds since the epoch (values above 10^11 are milliseconds).
fn epoch_to_micros(n: i64) -> Option<Micros> {
    let micros = if n.abs() >= 100_000_000_000 {
        n.checked_mul(1_000)?
    } else {
        n.checked_mul(1_000_000)?
    };
    in_range(Micros(micros))
}

/// The first and last instants a timestamp may name: from 0001-01-02 to 9999-12-30 UTC, so
/// that its day is a four-digit year in any partition time zone. Beyond them, a value is a
/// parse error: a `date=` partition named `+10000-01-01` made DuckDB read the whole table's
/// `date` as text, and times beyond chrono's range were all filed under one day, whose files
/// collided in the flush (which then failed at every attempt).
pub const EARLIEST_US: i64 = -62_135_510_400_000_000;
pub const LATEST_US: i64 = 253_402_128_000_000_000;

/// `t`, if it is within [`EARLIEST_US`]..[`LATEST_US`].
fn in_range(t: Micros) -> Option<Micros> {
    (EARLIEST_US..LATEST_US).contains(&t.0).then_some(t)
}

/// Parses the timestamp styles iClosed uses, to microseconds UTC:
/// RFC 3339 with `Z` or an offset, with or without a fraction (`2026-03-04T14:07:12.418Z`,
/// `2026-03-06T11:30:00-05:00`); the same with a space for `T`; zone-less date-times
/// (`2026-03-06 16:30:00.000`), read as UTC; and bare dates, read as midnight UTC.
pub fn parse_timestamp(s: &str) -> Option<Micros> {
    parse_any_timestamp(s).and_then(in_range)
}

/// [`parse_timestamp`] without the range check.
fn parse_any_timestamp(s: &str) -> Option<Micros> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Micros(t.timestamp_micros()));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(Micros(t.timestamp_micros()));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(Micros(t.and_utc().timestamp_micros()));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Micros(DateTime::<Utc>::from_naive_utc_and_offset(t, Utc).timestamp_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn timestamps_in_every_iclosed_style() {
        let check = |input: &str, expected: &str| {
            assert_eq!(
                parse_timestamp(input),
                Some(Micros(ts(expected))),
                "{input}"
            );
        };
        check("2026-03-04T14:07:12.418Z", "2026-03-04T14:07:12.418Z");
        check("2026-03-06T11:30:00-05:00", "2026-03-06T16:30:00Z");
        check("2026-03-12T19:00:00Z", "2026-03-12T19:00:00Z");
        check("2026-06-02T13:48:21.307", "2026-06-02T13:48:21.307Z");
        check("2026-03-06 16:30:00.000", "2026-03-06T16:30:00Z");
        check("2026-03-06 11:30:00-05:00", "2026-03-06T16:30:00Z");
        check("2026-03-06", "2026-03-06T00:00:00Z");
        assert_eq!(parse_timestamp("11:30am - Friday, March 6, 2026"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn timestamps_outside_four_digit_years_are_not_read() {
        assert!(parse_timestamp("0001-01-02T00:00:00Z").is_some());
        assert!(parse_timestamp("9999-12-29T23:59:59Z").is_some());
        for far in [
            "0001-01-01T12:00:00Z",
            "9999-12-31T23:30:00-05:00",
            "9999-12-30T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(far), None, "{far}");
        }
        // Epoch numbers (seconds, or milliseconds from 10^11 on) likewise.
        assert!(epoch_to_micros(1_773_000_000_000).is_some());
        for far in [
            9_000_000_000_000_000,
            -9_000_000_000_000_000,
            -70_000_000_000,
        ] {
            assert_eq!(epoch_to_micros(far), None, "{far}");
        }
    }

    #[test]
    fn coercions_and_errors() {
        let text = json!({"a": "45", "b": 3.0, "c": "x", "d": "TRUE", "e": {"k": 1}, "f": null,
                          "g": 1773000000000i64, "h": [1], "unread": 7})
        .to_string();
        let tree = Json::parse(&text).unwrap();
        let mut notes = Notes::default();
        let mut o = Obj::root(tree.as_object().unwrap());
        assert_eq!(o.int("a", &mut notes), Some(45));
        assert_eq!(o.int("b", &mut notes), Some(3));
        assert_eq!(o.int("c", &mut notes), None);
        assert_eq!(o.boolean("d", &mut notes), Some(true));
        assert_eq!(o.string("e", &mut notes), None);
        assert_eq!(o.string("f", &mut notes), None);
        assert_eq!(
            o.timestamp("g", &mut notes),
            Some(Micros(1_773_000_000_000_000))
        );
        let child = o.object("h", &mut notes);
        assert!(!child.is_present());
        assert_eq!(o.string("missing", &mut notes), None);
        o.finish(&mut notes);
        assert_eq!(
            notes.parse_errors,
            vec![
                "c: expected an integer, got \"x\"",
                "e: expected a string, got {\"k\":1}",
                "h: expected an object, got [1]"
            ]
        );
        // `h` was not an object, so it is kept in extras with the never-read key.
        assert_eq!(notes.extras_json().unwrap(), r#"{"h":[1],"unread":7}"#);
    }

    #[test]
    fn nested_extras_use_dotted_paths() {
        let text = json!({"t": {"known": "x", "new": 1}}).to_string();
        let tree = Json::parse(&text).unwrap();
        let mut notes = Notes::default();
        let mut root = Obj::root(tree.as_object().unwrap());
        let mut t = root.object("t", &mut notes);
        assert_eq!(t.string("known", &mut notes).as_deref(), Some("x"));
        t.finish(&mut notes);
        root.finish(&mut notes);
        assert_eq!(notes.extras_json().unwrap(), r#"{"t.new":1}"#);
    }
}
