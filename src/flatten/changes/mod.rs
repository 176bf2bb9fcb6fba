//! Change tracking: contact rows + the previous state of each contact -> `attribute_changes` and
//! `status_transitions`, and the next state; call rows + the last slot of each call ->
//! `previous_start_at` and `slot_start_at`.
//!
//! A contact's state is its last snapshot: every attribute as text (flattened column names,
//! `answer:<question>`, `param:<key>`), the event time and id of that snapshot, and when its
//! current status began. Contact rows of a batch are applied in event-time order. A row older
//! than the state (it arrived late) is compared with the state but does not replace it; its
//! rows are flagged `late`. Invariant: pure; the caller loads states before and stores them
//! after, atomically with the flush that writes these rows.
//!
//! The 36 contact columns live in fixed slots (an array per state and per row snapshot, with
//! the row's text borrowed where it already is text), and only the group attributes
//! (`param:`, `answer:`) in a map, so that tracking a row costs array steps rather than a
//! string-keyed map operation per attribute. The rows, and the JSON form of the states, are
//! those of the first implementation (`reference.rs`, the oracle the tests compare this one
//! with). The state store keeps the binary form of [`ContactState::encode`], and still reads
//! the JSON that earlier versions stored.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::Tables;
use super::table::{Micros, Text};
use super::tables::{AttributeChangeRow, ContactEventRow, StatusTransitionRow};
use crate::state::codec::{
    DecodeError, Malformed, Reader, decode, put_text, put_varint, unzigzag, zigzag,
};

#[cfg(test)]
mod reference;

/// The last known slot of a call, as the state store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    /// Event time of the event that set the slot, microseconds since the epoch.
    pub event_time_us: i64,
    /// Start of the latest slot, microseconds since the epoch.
    pub start_at_us: Option<i64>,
}

/// Fills `previous_start_at` and `slot_start_at` of the call rows in `tables`, advancing
/// `states` (call id -> state). Rows are applied in event-time order; a row older than the
/// state does not replace it.
pub fn track_calls(tables: &mut Tables, states: &mut HashMap<String, CallState>) {
    let mut order: Vec<usize> = (0..tables.call_events.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&tables.call_events[a], &tables.call_events[b]);
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });
    for i in order {
        let row = &mut tables.call_events[i];
        let Some(call_id) = row.call_id.clone() else {
            row.slot_start_at = row.start_at;
            continue;
        };
        let previous = states.get(call_id.as_str());
        let known = previous.and_then(|s| s.start_at_us).map(Micros);
        row.previous_start_at = row.old_start_at.or(known);
        row.slot_start_at = match row.event_type.as_str() {
            "call_cancelled" => known.or(row.start_at),
            _ => row.start_at,
        };
        let late = previous.is_some_and(|s| row.event_time.0 < s.event_time_us);
        if !late && row.event_type != "call_cancelled" && row.start_at.is_some() {
            states.insert(
                call_id.to_string(),
                CallState {
                    event_time_us: row.event_time.0,
                    start_at_us: row.start_at.map(|m| m.0),
                },
            );
        }
    }
}

/// iClosed's names in `updatedAttributes` and the attributes each stands for. A name ending in
/// `*` is a prefix: the whole group.
pub const REPORTED_NAMES: &[(&str, &[&str])] = &[
    ("firstName", &["first_name"]),
    ("lastName", &["last_name"]),
    ("email", &["email"]),
    ("phoneNumber", &["phone_number"]),
    ("secondary_email", &["secondary_email"]),
    ("secondary_phoneNumber", &["secondary_phone_number"]),
    ("status", &["status"]),
    ("timeZone", &["time_zone"]),
    ("country", &["country"]),
    ("ipAddress", &["ip_address"]),
    ("userId", &["user_id"]),
    ("accountId", &["account_id"]),
    ("previewId", &["preview_id"]),
    ("createdAt", &["created_at"]),
    ("joinedTime", &["joined_time"]),
    ("disqualifyingGroup", &["disqualifying_group"]),
    ("tracking", &["utm_*", "first_utm_*", "param:*"]),
    ("questionsAndAnswers", &["answer:*"]),
    ("event", &["booking_event_*"]),
    ("latestCall", &["latest_call_*"]),
];

fn matches(pattern: &str, attribute: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => attribute.starts_with(prefix),
        None => pattern == attribute,
    }
}

fn text_ts(t: Option<Micros>) -> Option<String> {
    t.and_then(|m| DateTime::from_timestamp_micros(m.0))
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Number of column slots.
const SLOTS: usize = 36;

/// Positions in [`super::contact::COLUMN_SOURCES`] (and so in a row's `missing_fields`) of the
/// two group columns, after the slots: the slot of a column is its position there.
const ANSWERS: usize = SLOTS;
const PARAMS: usize = SLOTS + 1;

/// The key prefix in a state of the attributes of a group column's position.
fn group_prefix(position: usize) -> Option<&'static str> {
    match position {
        ANSWERS => Some("answer:"),
        PARAMS => Some("param:"),
        _ => None,
    }
}

/// The slot of `status`.
const STATUS: usize = 9;

/// The slot of a contact column, if it has one.
fn slot(name: &str) -> Option<usize> {
    static SLOT: OnceLock<FastMap<&'static str, usize>> = OnceLock::new();
    SLOT.get_or_init(|| COLUMNS.iter().enumerate().map(|(i, c)| (*c, i)).collect())
        .get(name)
        .copied()
}

/// The slots in the order of their names (the order attributes are compared and stored in).
fn slots_by_name() -> &'static [usize; SLOTS] {
    static ORDER: OnceLock<[usize; SLOTS]> = OnceLock::new();
    ORDER.get_or_init(|| {
        let mut order: [usize; SLOTS] = std::array::from_fn(|i| i);
        order.sort_by_key(|&i| COLUMNS[i]);
        order
    })
}

/// The contact columns a state keeps in slots, in slot order, with their kind: the columns of
/// [`super::contact::COLUMN_SOURCES`] that hold one value (its two group columns are kept by
/// key). A test checks the two lists agree. Makes [`COLUMNS`] and the ways a slot meets a
/// row: `column_text` (one slot, for tests), [`column_texts`] (every slot at once, with no
/// dispatch per slot) and [`set_column`].
macro_rules! slots {
    ($($field:ident: $kind:ident),+ $(,)?) => {
        const COLUMNS: [&str; SLOTS] = [$(stringify!($field)),+];

        /// A column of a contact row as text: borrowed when it is text already (for tests: the
        /// tracker reads every slot at once, with [`column_texts`]).
        #[cfg(test)]
        fn column_text(row: &ContactEventRow, slot: usize) -> Option<Cow<'_, str>> {
            type Reader = for<'a> fn(&'a ContactEventRow) -> Option<Cow<'a, str>>;
            const READERS: [Reader; SLOTS] = [$(|row| slot_text!($kind, row.$field)),+];
            READERS.get(slot).and_then(|text| text(row))
        }

        /// Every column of a contact row as text, by slot.
        fn column_texts(row: &ContactEventRow) -> [Option<Cow<'_, str>>; SLOTS] {
            [$(slot_text!($kind, row.$field)),+]
        }

        /// Sets the carried column in `slot` of a contact row from its text form in the state.
        fn set_column(row: &mut ContactEventRow, slot: usize, text: &str) {
            const SETTERS: [fn(&mut ContactEventRow, &str); SLOTS] =
                [$(|row, text| row.$field = slot_parse!($kind, text)),+];
            if let Some(set) = SETTERS.get(slot) {
                set(row, text);
            }
        }
    };
}

/// A column's value as text, by its kind.
macro_rules! slot_text {
    (text, $v:expr) => {
        $v.as_deref().map(Cow::Borrowed)
    };
    (int, $v:expr) => {
        $v.map(|v| Cow::Owned(v.to_string()))
    };
    (time, $v:expr) => {
        text_ts($v).map(Cow::Owned)
    };
}

/// A column's value from its text, by its kind.
macro_rules! slot_parse {
    (text, $t:expr) => {
        Some(Text::from($t))
    };
    (int, $t:expr) => {
        $t.parse::<i64>().ok()
    };
    (time, $t:expr) => {
        super::reader::parse_timestamp($t)
    };
}

slots! {
    account_id: int,
    user_id: int,
    preview_id: text,
    first_name: text,
    last_name: text,
    email: text,
    phone_number: text,
    secondary_email: text,
    secondary_phone_number: text,
    status: text,
    created_at: time,
    joined_time: time,
    time_zone: text,
    country: text,
    ip_address: text,
    booking_event_id: int,
    booking_event_name: text,
    booking_event_type: text,
    booking_event_link_prefix: text,
    booking_event_color: text,
    utm_source: text,
    utm_medium: text,
    utm_campaign: text,
    utm_term: text,
    utm_content: text,
    first_utm_source: text,
    first_utm_medium: text,
    first_utm_campaign: text,
    first_utm_term: text,
    first_utm_content: text,
    latest_call_at: time,
    latest_call_duration_min: int,
    latest_call_host_id: int,
    latest_call_host_name: text,
    latest_call_host_email: text,
    disqualifying_group: text,
}

/// A group attribute (or a name an older version kept) in a state: its value, and when a
/// payload last sent it (set or cleared). An entry has one or both.
#[derive(Debug, Clone, Default, PartialEq)]
struct Other {
    value: Option<String>,
    at: Option<i64>,
}

/// A contact's attributes as text, with the event time of the payload that last sent each.
#[derive(Debug, Clone, PartialEq)]
struct Attrs {
    /// Value of each column slot; `None` is null.
    cols: [Option<String>; SLOTS],
    /// When each column was last sent (set or cleared): a payload older than that never
    /// overwrites it.
    col_at: [Option<i64>; SLOTS],
    /// Every other attribute, by name.
    others: BTreeMap<String, Other>,
}

impl Default for Attrs {
    fn default() -> Self {
        Attrs {
            cols: std::array::from_fn(|_| None),
            col_at: [None; SLOTS],
            others: BTreeMap::new(),
        }
    }
}

impl Attrs {
    /// Every attribute with a value or a time, in name order: (name, value, time).
    fn named(&self) -> impl Iterator<Item = (&str, Option<&str>, Option<i64>)> {
        let cols = slots_by_name()
            .iter()
            .map(|&i| (COLUMNS[i], self.cols[i].as_deref(), self.col_at[i]));
        let others = self
            .others
            .iter()
            .map(|(k, o)| (k.as_str(), o.value.as_deref(), o.at));
        merge_by_name(cols, others, |e| e.0).filter(|(_, v, at)| v.is_some() || at.is_some())
    }

    fn insert_value(&mut self, name: String, value: String) {
        match slot(&name) {
            Some(i) => self.cols[i] = Some(value),
            None => self.others.entry(name).or_default().value = Some(value),
        }
    }

    fn insert_at(&mut self, name: String, at: i64) {
        match slot(&name) {
            Some(i) => self.col_at[i] = Some(at),
            None => self.others.entry(name).or_default().at = Some(at),
        }
    }
}

/// Two sequences sorted by `key`, as one sorted sequence (`a` first on equal keys).
fn merge_by_name<'a, T>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
    key: impl Fn(&T) -> &'a str,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if key(y) < key(x) => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// The last known snapshot of a contact. The state store keeps it in the binary form of
/// [`ContactState::encode`]; earlier versions stored JSON (`event_time_us`, `event_id`,
/// `status_since_us`, `values`: attribute -> text, `set_at`: attribute -> event time of the
/// payload that last sent it), which still deserializes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "StoredContact")]
pub struct ContactState {
    /// Event time of the snapshot, microseconds since the epoch.
    pub event_time_us: i64,
    /// Id of the event the snapshot came from.
    pub event_id: String,
    /// When the current status began (the transition into it, or first sight).
    pub status_since_us: Option<i64>,
    /// Boxed: the attributes take about 1.5 KiB, and a state moves in and out of its map at
    /// every event of its contact (and at every growth of the map).
    attrs: Box<Attrs>,
}

/// An attribute name (a column name, `param:<key>` or `answer:<question>`) with its slot
/// looked up once, for reading it from many states.
#[derive(Debug, Clone)]
pub struct Attribute {
    name: String,
    slot: Option<usize>,
}

impl Attribute {
    pub fn new(name: &str) -> Attribute {
        Attribute {
            name: name.to_string(),
            slot: slot(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl ContactState {
    /// Attribute -> value as text; a missing attribute is null.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.attrs
            .named()
            .filter_map(|(k, v, _)| Some((k.to_string(), v?.to_string())))
            .collect()
    }

    /// The value of one attribute (a column name, `param:<key>` or `answer:<question>`) as
    /// text; `None` when it has none.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.value_in(slot(name), name)
    }

    /// [`ContactState::value`] of an attribute whose slot is looked up already.
    pub fn get(&self, attribute: &Attribute) -> Option<&str> {
        self.value_in(attribute.slot, &attribute.name)
    }

    fn value_in(&self, slot: Option<usize>, name: &str) -> Option<&str> {
        match slot {
            Some(i) => self.attrs.cols[i].as_deref(),
            None => self.attrs.others.get(name)?.value.as_deref(),
        }
    }

    /// Attribute -> event time of the payload that last sent it.
    pub fn set_at(&self) -> BTreeMap<String, i64> {
        self.attrs
            .named()
            .filter_map(|(k, _, at)| Some((k.to_string(), at?)))
            .collect()
    }
}

/// First byte of a contact state stored in the binary form ([`ContactState::encode`]). A state
/// stored as JSON (before that form) starts with `{`.
const STATE_FORMAT: u8 = 1;

impl ContactState {
    /// Appends the stored form: a format byte, then varints and length-prefixed text. Columns
    /// are bit masks and slot order instead of names, and each time is the distance to the
    /// snapshot's own time (mostly zero, one byte): a quarter of the JSON on generated contacts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(STATE_FORMAT);
        put_varint(out, zigzag(self.event_time_us));
        put_text(out, &self.event_id);
        match self.status_since_us {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put_varint(out, zigzag(self.event_time_us.wrapping_sub(t)));
            }
        }
        let mask = |present: &dyn Fn(usize) -> bool| {
            (0..SLOTS)
                .filter(|&i| present(i))
                .fold(0u64, |m, i| m | 1 << i)
        };
        put_varint(out, mask(&|i| self.attrs.cols[i].is_some()));
        put_varint(out, mask(&|i| self.attrs.col_at[i].is_some()));
        for value in self.attrs.cols.iter().flatten() {
            put_text(out, value);
        }
        for at in self.attrs.col_at.iter().flatten() {
            put_varint(out, zigzag(self.event_time_us.wrapping_sub(*at)));
        }
        put_varint(out, self.attrs.others.len() as u64);
        for (key, other) in &self.attrs.others {
            put_text(out, key);
            out.push(u8::from(other.value.is_some()) | u8::from(other.at.is_some()) << 1);
            if let Some(value) = &other.value {
                put_text(out, value);
            }
            if let Some(at) = other.at {
                put_varint(out, zigzag(self.event_time_us.wrapping_sub(at)));
            }
        }
    }

    /// Reads a stored state: the binary form, or the JSON that versions before it stored.
    pub fn decode(bytes: &[u8]) -> Result<ContactState, DecodeError> {
        decode(bytes, STATE_FORMAT, "contact state", |r| {
            StateReader(r).state()
        })
    }
}

/// Reads the binary form after its format byte.
struct StateReader<'r, 'b>(&'r mut Reader<'b>);

impl StateReader<'_, '_> {
    /// A time stored as its distance to `base`.
    fn time(&mut self, base: i64) -> Result<i64, Malformed> {
        Ok(base.wrapping_sub(unzigzag(self.0.varint()?)))
    }

    fn state(mut self) -> Result<ContactState, Malformed> {
        let event_time_us = unzigzag(self.0.varint()?);
        let event_id = self.0.text()?;
        let status_since_us = match self.0.byte()? {
            0 => None,
            1 => Some(self.time(event_time_us)?),
            _ => return Err(self.0.malformed()),
        };
        let (values, times) = (self.0.varint()?, self.0.varint()?);
        if (values | times) >> SLOTS != 0 {
            return Err(self.0.malformed());
        }
        let mut attrs = Box::<Attrs>::default();
        for i in (0..SLOTS).filter(|i| values >> i & 1 == 1) {
            attrs.cols[i] = Some(self.0.text()?);
        }
        for i in (0..SLOTS).filter(|i| times >> i & 1 == 1) {
            attrs.col_at[i] = Some(self.time(event_time_us)?);
        }
        for _ in 0..self.0.varint()? {
            let key = self.0.text()?;
            let flags = self.0.byte()?;
            if flags > 3 {
                return Err(self.0.malformed());
            }
            let value = if flags & 1 == 1 {
                Some(self.0.text()?)
            } else {
                None
            };
            let at = if flags & 2 == 2 {
                Some(self.time(event_time_us)?)
            } else {
                None
            };
            attrs.others.insert(key, Other { value, at });
        }
        Ok(ContactState {
            event_time_us,
            event_id,
            status_since_us,
            attrs,
        })
    }
}

/// [`ContactState`] as JSON has it.
#[derive(Deserialize)]
struct StoredContact {
    event_time_us: i64,
    event_id: String,
    status_since_us: Option<i64>,
    values: BTreeMap<String, String>,
    #[serde(default)]
    set_at: BTreeMap<String, i64>,
}

impl From<StoredContact> for ContactState {
    fn from(s: StoredContact) -> Self {
        let mut attrs = Box::<Attrs>::default();
        for (k, v) in s.values {
            attrs.insert_value(k, v);
        }
        for (k, at) in s.set_at {
            attrs.insert_at(k, at);
        }
        ContactState {
            event_time_us: s.event_time_us,
            event_id: s.event_id,
            status_since_us: s.status_since_us,
            attrs,
        }
    }
}

/// The JSON form (what versions before [`ContactState::encode`] stored): written by the tests
/// only, to compare states with the first implementation's and to check the old form reads.
#[cfg(test)]
impl Serialize for ContactState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Values<'a>(&'a Attrs);
        impl Serialize for Values<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.named().filter_map(|(k, v, _)| Some((k, v?))))
            }
        }
        struct SetAt<'a>(&'a Attrs);
        impl Serialize for SetAt<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.named().filter_map(|(k, _, at)| Some((k, at?))))
            }
        }
        let mut st = s.serialize_struct("ContactState", 5)?;
        st.serialize_field("event_time_us", &self.event_time_us)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("status_since_us", &self.status_since_us)?;
        st.serialize_field("values", &Values(&self.attrs))?;
        st.serialize_field("set_at", &SetAt(&self.attrs))?;
        st.end()
    }
}

/// `prefix` + `name`, allocated once at its size (`format!` spent a tenth of tracking's time
/// making these keys).
fn prefixed(prefix: &str, name: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + name.len());
    key.push_str(prefix);
    key.push_str(name);
    key
}

/// The attributes of one contact row as text, with the values it lacks taken from the state.
struct Snap<'r> {
    cols: [Option<Cow<'r, str>>; SLOTS],
    /// `param:<key>` and `answer:<question>` (and names only an older state knows).
    others: BTreeMap<String, Cow<'r, str>>,
}

impl<'r> Snap<'r> {
    /// The row's own attributes, with its tracking parameters and answers.
    fn of(
        row: &'r ContactEventRow,
        params: &[(&'r str, &'r str)],
        answers: &[(&'r str, &'r str)],
    ) -> Self {
        let mut others = BTreeMap::new();
        for (key, value) in params {
            others.insert(prefixed("param:", key), Cow::Borrowed(*value));
        }
        for (question, response) in answers {
            others.insert(prefixed("answer:", question), Cow::Borrowed(*response));
        }
        Snap {
            cols: column_texts(row),
            others,
        }
    }

    /// Absent fields are unchanged: they take the previous values (a value the row has, from
    /// carrying, stays).
    fn fill_missing(&mut self, row: &ContactEventRow, previous: &Attrs) {
        for position in row.missing_fields.positions() {
            let Some(prefix) = group_prefix(position) else {
                if position < SLOTS && self.cols[position].is_none() {
                    self.cols[position] = previous.cols[position].clone().map(Cow::Owned);
                }
                continue;
            };
            // The group's keys sit together in the sorted map, from the prefix on.
            let group = previous
                .others
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix));
            for (key, other) in group {
                if let Some(v) = &other.value {
                    self.others
                        .entry(key.clone())
                        .or_insert_with(|| Cow::Owned(v.clone()));
                }
            }
        }
    }
}

/// Computes `attribute_changes` and `status_transitions` for the contact rows in `tables`,
/// advancing `states` (contact id -> state) as it goes.
pub fn track(tables: &mut Tables, states: &mut ContactStates) {
    track_with(tables, states, 1);
}

/// Key/value pairs of each contact row, by the row's index in `contact_events`: its tracking
/// parameters, or its question/answer pairs (pairs with a null side are not attributes).
struct RowPairs<'t> {
    pairs: Vec<(&'t str, &'t str)>,
    /// Where the pairs of each row end in `pairs`.
    ends: Vec<usize>,
}

impl<'t> RowPairs<'t> {
    /// Pairs `items` (rows of `tracking_params` or `contact_answers`) with the contact rows of
    /// the same event. Flattening pushes an event's items and its contact row at the same place
    /// of their tables, so one walk in step pairs them, comparing ids where hashing them was a
    /// tenth of tracking's time; items in any other order are paired by id instead.
    fn of<R>(
        rows: &[ContactEventRow],
        items: &'t [R],
        id: impl Fn(&R) -> &str,
        pair: impl Fn(&'t R) -> Option<(&'t str, &'t str)>,
    ) -> Self {
        let mut out = RowPairs {
            pairs: Vec::with_capacity(items.len()),
            ends: Vec::with_capacity(rows.len()),
        };
        let mut next = 0;
        for row in rows {
            while next < items.len() && id(&items[next]) == row.event_id.as_str() {
                out.pairs.extend(pair(&items[next]));
                next += 1;
            }
            out.ends.push(out.pairs.len());
        }
        if next == items.len() {
            return out;
        }
        let mut by_id: FastMap<&str, Vec<(&'t str, &'t str)>> = FastMap::default();
        for item in items {
            if let Some(p) = pair(item) {
                by_id.entry(id(item)).or_default().push(p);
            }
        }
        out.pairs.clear();
        out.ends.clear();
        for row in rows {
            if let Some(pairs) = by_id.get(row.event_id.as_str()) {
                out.pairs.extend_from_slice(pairs);
            }
            out.ends.push(out.pairs.len());
        }
        out
    }

    /// The pairs of the contact row at `index`.
    fn at(&self, index: usize) -> &[(&'t str, &'t str)] {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        &self.pairs[start..self.ends[index]]
    }
}

/// Contact id -> state.
pub type ContactStates = FastMap<i64, ContactState>;

/// A hash map with a fast hasher (ahash; std's SipHash was a tenth of tracking's time).
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// [`track`] on `threads` threads: contacts are independent, so each thread takes the contacts
/// whose id falls in its share, with their states. Gives the same rows (in another order) and
/// the same states as one thread.
pub fn track_with(tables: &mut Tables, states: &mut ContactStates, threads: usize) {
    track_then(tables, states, threads, &|_, _| ());
}

/// [`track_with`], then `then` applied to the new state of each contact with rows in the
/// batch, by the thread that tracked it, right after its share: while the states are still in
/// the processor's cache (lead scoring reads a few attributes of each). Returns its results, by
/// contact id, in no particular order.
pub fn track_then<S: Send>(
    tables: &mut Tables,
    states: &mut ContactStates,
    threads: usize,
    then: &(impl Fn(i64, &ContactState) -> S + Sync),
) -> Vec<(i64, S)> {
    let mut rows = std::mem::take(&mut tables.contact_events);
    let params = RowPairs::of(
        &rows,
        &tables.tracking_params,
        |p| &p.event_id,
        |p| Some((p.key.as_deref()?, p.value.as_deref()?)),
    );
    let answers = RowPairs::of(
        &rows,
        &tables.contact_answers,
        |a| &a.event_id,
        |a| Some((a.question.as_deref()?, a.response.as_deref()?)),
    );
    let threads = threads.max(1);
    let (changes, transitions, after) = if threads == 1 {
        let mut rows: Vec<&mut ContactEventRow> = rows.iter_mut().collect();
        let indices: Vec<usize> = (0..rows.len()).collect();
        let order = in_time_order(&rows);
        let (changes, transitions) =
            track_rows(&mut rows, &indices, &order, (&params, &answers), states);
        let after = apply_then(&rows, states, then);
        (changes, transitions, after)
    } else {
        // Each thread takes the rows (by reference) and states of its share of the contacts.
        let share = |id: Option<i64>| id.map_or(0, |id| id.rem_euclid(threads as i64) as usize);
        let mut groups: Vec<Share> = (0..threads).map(|_| Default::default()).collect();
        for (index, row) in rows.iter_mut().enumerate() {
            let group = &mut groups[share(row.contact_id)];
            group.0.push(row);
            group.1.push(index);
        }
        for (id, state) in states.drain() {
            groups[share(Some(id))].2.insert(id, state);
        }
        let pairs = (&params, &answers);
        let done = crate::parallel::map(groups, |(mut rows, indices, mut group_states)| {
            let order = in_time_order(&rows);
            let (changes, transitions) =
                track_rows(&mut rows, &indices, &order, pairs, &mut group_states);
            let after = apply_then(&rows, &group_states, then);
            (changes, transitions, group_states, after)
        });
        let (mut changes, mut transitions, mut after) = (Vec::new(), Vec::new(), Vec::new());
        for (mut c, mut t, group_states, mut a) in done {
            changes.append(&mut c);
            transitions.append(&mut t);
            after.append(&mut a);
            states.extend(group_states);
        }
        (changes, transitions, after)
    };
    tables.attribute_changes = changes;
    tables.status_transitions = transitions;
    tables.contact_events = rows;
    after
}

/// `then` applied to the state of each contact with rows among `rows`, once each.
fn apply_then<S>(
    rows: &[&mut ContactEventRow],
    states: &ContactStates,
    then: &impl Fn(i64, &ContactState) -> S,
) -> Vec<(i64, S)> {
    let mut ids: Vec<i64> = rows.iter().filter_map(|r| r.contact_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| Some((id, then(id, states.get(&id)?))))
        .collect()
}

/// One thread's share of a batch: its rows, their indices in the batch, and their states.
type Share<'r> = (Vec<&'r mut ContactEventRow>, Vec<usize>, ContactStates);

/// The change and transition rows of `rows` (one batch; `indices` are their places in the
/// batch, which `pairs` (parameters, answers) go by), taken in event-time `order` (from
/// [`in_time_order`]), advancing `states`. Each row not older than its contact's state has its
/// missing columns carried from that state just before it is applied: the state then holds
/// every earlier row of the batch, late ones included (carried in a pass of their own before
/// tracking, rows took values a late row of the same batch had since replaced, and a change
/// back to them was reported).
fn track_rows(
    rows: &mut [impl std::ops::DerefMut<Target = ContactEventRow>],
    indices: &[usize],
    order: &[usize],
    (params, answers): (&RowPairs, &RowPairs),
    states: &mut ContactStates,
) -> (Vec<AttributeChangeRow>, Vec<StatusTransitionRow>) {
    let mut changes = Vec::new();
    let mut transitions = Vec::new();
    for &i in order {
        let index = indices[i];
        let Some(contact_id) = rows[i].contact_id else {
            continue;
        };
        let previous = states.remove(&contact_id);
        if let Some(previous) = &previous {
            carry(&mut rows[i], previous);
        }
        let row = &*rows[i];
        let mut snap = Snap::of(row, params.at(index), answers.at(index));
        // Absent fields are unchanged: compare with the previous values, never with nothing
        // (late rows are not carried in the table, but are compared the same way).
        if let Some(previous) = &previous {
            snap.fill_missing(row, &previous.attrs);
        }
        let transitioned_at = row.updated_at.unwrap_or(row.event_time);
        let status: Option<Text> = snap.cols[STATUS].as_deref().map(Text::from);
        let transition =
            |from: Option<Text>, seconds: Option<f64>, late: bool| StatusTransitionRow {
                event_id: row.event_id.clone(),
                event_type: row.event_type.clone(),
                received_at: row.received_at,
                event_time: row.event_time,
                contact_id: row.contact_id,
                from_status: from,
                to_status: status.clone(),
                transitioned_at,
                seconds_in_from_status: seconds,
                first_utm_source: row.first_utm_source.clone(),
                first_utm_campaign: row.first_utm_campaign.clone(),
                utm_source: row.utm_source.clone(),
                utm_campaign: row.utm_campaign.clone(),
                late,
            };
        let Some(previous) = previous else {
            transitions.push(transition(None, None, false));
            states.insert(
                contact_id,
                ContactState {
                    event_time_us: row.event_time.0,
                    event_id: row.event_id.to_string(),
                    // A status's time starts once one is known.
                    status_since_us: status.as_ref().map(|_| transitioned_at.0),
                    attrs: merge(Box::default(), row, &snap),
                },
            );
            continue;
        };
        let late = row.event_time.0 < previous.event_time_us;
        // A null status keeps the status too: a contact always has one.
        if status.is_none()
            && let Some(kept) = &previous.attrs.cols[STATUS]
        {
            snap.cols[STATUS] = Some(Cow::Owned(kept.clone()));
        }
        diff(row, &previous.attrs, &snap, late, &mut changes);
        let old_status: Option<Text> = previous.attrs.cols[STATUS].as_deref().map(Text::from);
        let status_changed = status.is_some() && status != old_status;
        if status_changed {
            // No time in a status that was never known (null `from_status`), nor before it
            // began (a late event compared with a newer state).
            let seconds = previous
                .status_since_us
                .filter(|&since| old_status.is_some() && since <= transitioned_at.0)
                .map(|since| (transitioned_at.0 - since) as f64 / 1e6);
            transitions.push(transition(old_status.clone(), seconds, late));
        }
        let ContactState {
            event_time_us,
            event_id,
            status_since_us,
            attrs,
        } = previous;
        let attrs = merge(attrs, row, &snap);
        let next = if late {
            // Latest data wins per attribute: the late payload only fills in what no newer
            // payload has sent; the snapshot's time stays. If its status won (no newer payload
            // sent one), that status began with it.
            let status_since_us = if attrs.cols[STATUS].as_deref() != old_status.as_deref() {
                Some(transitioned_at.0)
            } else {
                status_since_us
            };
            ContactState {
                event_time_us,
                event_id,
                status_since_us,
                attrs,
            }
        } else {
            let status_since_us = if status_changed {
                Some(transitioned_at.0)
            } else {
                status_since_us
            };
            ContactState {
                event_time_us: row.event_time.0,
                event_id: row.event_id.to_string(),
                status_since_us,
                attrs,
            }
        };
        states.insert(contact_id, next);
    }
    (changes, transitions)
}

/// The state attributes after `row`: every attribute the row sent (set, or cleared with null)
/// wins unless a newer payload already sent it; absent attributes keep their values. Takes
/// the previous attributes by value and updates them in place.
fn merge(mut attrs: Box<Attrs>, row: &ContactEventRow, snap: &Snap) -> Box<Attrs> {
    let t = row.event_time.0;
    let missing = row.missing_fields;
    let (no_answers, no_params) = (missing.has(ANSWERS), missing.has(PARAMS));
    for i in 0..SLOTS {
        let absent = missing.has(i);
        let value = snap.cols[i].as_deref();
        // A null status keeps the status: a contact always has one.
        if absent || (i == STATUS && value.is_none()) {
            continue;
        }
        if attrs.col_at[i].is_some_and(|newer| newer > t) {
            continue;
        }
        match value {
            Some(v) if attrs.cols[i].as_deref() != Some(v) => attrs.cols[i] = Some(v.to_string()),
            Some(_) => {}
            None => attrs.cols[i] = None,
        }
        attrs.col_at[i] = Some(t);
    }
    // The other attributes the row may have sent: those it holds, and those the state holds
    // that the row lacks (a group key absent from a sent group was cleared).
    let sent = |key: &str| {
        if key.starts_with("answer:") {
            !no_answers
        } else if key.starts_with("param:") {
            !no_params
        } else {
            !missing.contains(key)
        }
    };
    let held: Vec<String> = attrs
        .others
        .iter()
        .filter(|(k, o)| o.value.is_some() && !snap.others.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect();
    let mut apply = |key: &str, value: Option<&str>| {
        if key == "contact_answers" || key == "tracking_params" || !sent(key) {
            return;
        }
        if let Some(other) = attrs.others.get_mut(key) {
            if other.at.is_some_and(|newer| newer > t) {
                return;
            }
            if other.value.as_deref() != value {
                other.value = value.map(str::to_string);
            }
            other.at = Some(t);
        } else {
            let other = Other {
                value: value.map(str::to_string),
                at: Some(t),
            };
            attrs.others.insert(key.to_string(), other);
        }
    };
    for (key, value) in &snap.others {
        apply(key, Some(value));
    }
    for key in &held {
        apply(key, None);
    }
    attrs
}

/// The indices of `rows` in event-time order (then receive time, then id): the order rows are
/// applied in.
fn in_time_order(rows: &[impl std::ops::Deref<Target = ContactEventRow>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&*rows[a], &*rows[b]);
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });
    order
}

/// Fills the missing single-valued columns of `row` from its contact's `state`, unless the row
/// is older than the state (a late row is not carried in the table).
fn carry(row: &mut ContactEventRow, state: &ContactState) {
    if row.event_time.0 < state.event_time_us || row.missing_fields.is_empty() {
        return;
    }
    let slots: Vec<usize> = row
        .missing_fields
        .positions()
        .filter(|&p| p < SLOTS)
        .collect();
    for slot in slots {
        if let Some(text) = &state.attrs.cols[slot] {
            set_column(row, slot, text);
        }
    }
}

/// Rows for every attribute that differs or was reported.
fn diff(
    row: &ContactEventRow,
    old: &Attrs,
    new: &Snap,
    late: bool,
    out: &mut Vec<AttributeChangeRow>,
) {
    let reported_names: Vec<&str> = row
        .updated_attributes
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let patterns: Vec<&str> = reported_names
        .iter()
        .flat_map(|name| {
            REPORTED_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, attrs)| attrs.to_vec())
                // A name we have no mapping for is taken as one of our attribute names.
                .unwrap_or_else(|| vec![*name])
        })
        .collect();
    let is_reported = |attribute: &str| patterns.iter().any(|p| matches(p, attribute));
    let mut covered: Vec<&str> = Vec::new();
    let mut push = |attribute: Text,
                    old_value: Option<Text>,
                    new_value: Option<Text>,
                    reported: bool,
                    detected: bool| {
        out.push(AttributeChangeRow {
            event_id: row.event_id.clone(),
            event_type: row.event_type.clone(),
            received_at: row.received_at,
            event_time: row.event_time,
            contact_id: row.contact_id,
            attribute,
            old_value,
            new_value,
            reported,
            detected,
            late,
        });
    };
    // Every attribute either side has a value for, in name order: (name, old, new).
    let cols = slots_by_name()
        .iter()
        .map(|&i| (COLUMNS[i], old.cols[i].as_deref(), new.cols[i].as_deref()));
    let old_others = old
        .others
        .iter()
        .filter_map(|(k, o)| Some((k.as_str(), Some(o.value.as_deref()?), None)));
    let new_others = new
        .others
        .iter()
        .map(|(k, v)| (k.as_str(), None, Some(v.as_ref())));
    // The same name on both sides comes out twice in a row (old first): joined below.
    let mut others = merge_by_name(old_others, new_others, |e| e.0).peekable();
    let others = std::iter::from_fn(move || {
        let (name, o, n) = others.next()?;
        match others.peek() {
            Some(next) if next.0 == name => {
                let (_, _, n2) = others.next()?;
                Some((name, o, n2))
            }
            _ => Some((name, o, n)),
        }
    });
    let attributes =
        merge_by_name(cols, others, |e| e.0).filter(|(_, o, n)| o.is_some() || n.is_some());
    for (name, o, n) in attributes {
        let detected = o != n;
        let reported = !patterns.is_empty() && is_reported(name);
        if detected || reported {
            push(
                Text::from(name),
                o.map(Text::from),
                n.map(Text::from),
                reported,
                detected,
            );
        }
        if reported {
            covered.push(name);
        }
    }
    // A reported name none of whose attributes has a value on either side still gets its row.
    for name in reported_names {
        let attrs: Vec<&str> = REPORTED_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, attrs)| attrs.to_vec())
            .unwrap_or_else(|| vec![name]);
        if !covered.iter().any(|c| attrs.iter().any(|p| matches(p, c))) {
            let attribute = if attrs.len() == 1 && !attrs[0].ends_with('*') {
                attrs[0]
            } else {
                name
            };
            push(Text::from(attribute), None, None, true, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Envelope;
    use serde_json::json;

    fn contact(body: serde_json::Value, received_at_us: i64) -> Envelope {
        Envelope::parse_one(&body.to_string(), None, received_at_us, "/w").unwrap()
    }

    fn run(events: &[Envelope], states: &mut ContactStates) -> Tables {
        let mut tables = crate::flatten::flatten(events);
        track(&mut tables, states);
        tables
    }

    #[test]
    fn tracking_on_several_threads_gives_the_rows_and_states_of_one() {
        let events: Vec<Envelope> = crate::generate::in_time_order(crate::generate::Options {
            contacts: 600,
            seed: 9,
            days: 5,
        })
        .iter()
        .enumerate()
        .map(|(i, v)| contact(v.clone(), 1_800_000_000_000_000 + i as i64))
        .collect();
        // Two batches interleaved in time, so the second meets states and arrives partly late.
        let (a, b): (Vec<_>, Vec<_>) = events
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let strip = |v: Vec<(usize, Envelope)>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
        let (a, b) = (strip(a), strip(b));
        let outcome = |threads: usize| {
            let mut states = ContactStates::default();
            let mut seen = Vec::new();
            for batch in [&a, &b] {
                let mut tables = crate::flatten::flatten(batch);
                let mut after = track_then(&mut tables, &mut states, threads, &|id, state| {
                    (id, format!("{state:?}"))
                });
                // Each contact with rows in the batch once, with its state after the batch.
                after.sort();
                let mut ids: Vec<i64> = tables
                    .contact_events
                    .iter()
                    .filter_map(|r| r.contact_id)
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(after.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
                for (id, (same, state)) in &after {
                    assert_eq!((same, state), (id, &format!("{:?}", states[id])));
                }
                let mut changes: Vec<String> = tables
                    .attribute_changes
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect();
                let mut transitions: Vec<String> = tables
                    .status_transitions
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect();
                changes.sort();
                transitions.sort();
                let carried: Vec<String> = tables
                    .contact_events
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect();
                seen.push((changes, transitions, carried));
            }
            let states: BTreeMap<i64, String> =
                states.iter().map(|(k, v)| (*k, format!("{v:?}"))).collect();
            (seen, states)
        };
        let one = outcome(1);
        assert!(
            one.0[1].0.iter().any(|r| r.contains("late: true")),
            "no late rows"
        );
        assert_eq!(outcome(3), one);
    }

    /// Generated contact events roughed up the ways real deliveries differ: fields left out or
    /// sent as null, statuses repeated or nulled, reported names of every kind (mapped, groups,
    /// unknown, repeated), tracking parameters and answers changed or cleared, and events
    /// delivered late (their time moved back past later ones).
    fn rough_events(seed: u64, contacts: i64) -> Vec<Envelope> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let keys = [
            "firstName",
            "lastName",
            "email",
            "phoneNumber",
            "status",
            "tracking",
            "questionsAndAnswers",
            "event",
            "latestCall",
            "country",
            "timeZone",
            "createdAt",
            "userId",
            "disqualifyingGroup",
            "secondary_email",
            "ipAddress",
        ];
        let reported = [
            "status",
            "email",
            "tracking",
            "questionsAndAnswers",
            "firstName",
            "event",
            "latestCall",
            "mystery",
            "utm_source",
            "answer:Budget",
        ];
        let options = crate::generate::Options {
            contacts,
            seed,
            days: 3,
        };
        let mut out = Vec::new();
        for (i, mut v) in crate::generate::in_time_order(options)
            .into_iter()
            .enumerate()
        {
            let is_contact = v["hookType"]
                .as_str()
                .is_some_and(|h| h.starts_with("Contact"));
            if is_contact {
                let obj = v.as_object_mut().unwrap();
                for _ in 0..next(3) {
                    let key = keys[next(keys.len() as u64) as usize];
                    match next(3) {
                        0 => {
                            obj.remove(key);
                        }
                        1 => {
                            obj.insert(key.into(), serde_json::Value::Null);
                        }
                        _ => {}
                    }
                }
                match next(6) {
                    0 => {
                        obj.insert(
                            "status".into(),
                            json!(["POTENTIAL", "QUALIFIED", "WON"][next(3) as usize]),
                        );
                    }
                    1 => {
                        obj.insert("tracking".into(), json!({"utm_source": format!("s{}", next(3)), "utmKey_1": "k", "utmValue_1": format!("v{}", next(2))}));
                    }
                    2 => {
                        obj.insert(
                            "questionsAndAnswers".into(),
                            json!({"1_question": "Budget", "1_response": format!("{}k", next(3))}),
                        );
                    }
                    3 => {
                        obj.insert("latestCall".into(), json!({"dateTime": "2026-03-02T10:00:00Z", "duration": next(60), "user": {"id": 7, "firstName": "Host"}}));
                    }
                    _ => {}
                }
                let names: Vec<&str> = (0..next(4))
                    .map(|_| reported[next(reported.len() as u64) as usize])
                    .collect();
                match next(4) {
                    0 => {
                        obj.remove("updatedAttributes");
                    }
                    1 => {
                        obj.insert("updatedAttributes".into(), serde_json::Value::Null);
                    }
                    _ => {
                        obj.insert("updatedAttributes".into(), json!(names));
                    }
                }
                if next(8) == 0
                    && let Some(t) = obj
                        .get("updatedAt")
                        .and_then(|t| t.as_str())
                        .and_then(crate::flatten::reader::parse_timestamp)
                {
                    let earlier = t.0 - next(48) as i64 * 3_600_000_000;
                    let text = DateTime::from_timestamp_micros(earlier)
                        .unwrap()
                        .to_rfc3339();
                    obj.insert("updatedAt".into(), json!(text));
                }
            }
            out.push(contact(v, 1_800_000_000_000_000 + i as i64));
        }
        out
    }

    #[test]
    fn tracking_matches_the_first_implementation() {
        for seed in 1..=4 {
            let events = rough_events(seed, 150);
            // Rows late across batches, and rows with absent fields (carried or compared with
            // the state): the cases the comparison is here for.
            let (mut late, mut absent) = (0, 0);
            for batch in [events.len(), 97, 13] {
                for threads in [1, 2] {
                    let mut states = ContactStates::default();
                    let mut reference_states: HashMap<i64, reference::RefState> = HashMap::new();
                    for chunk in events.chunks(batch) {
                        let mut ours = crate::flatten::flatten(chunk);
                        let mut theirs = crate::flatten::flatten(chunk);
                        track_with(&mut ours, &mut states, threads);
                        reference::track(&mut theirs, &mut reference_states);
                        let rows = |t: &Tables| {
                            let debug = |rows: &mut dyn Iterator<Item = String>| {
                                let mut v: Vec<String> = rows.collect();
                                v.sort();
                                v
                            };
                            (
                                debug(&mut t.attribute_changes.iter().map(|r| format!("{r:?}"))),
                                debug(&mut t.status_transitions.iter().map(|r| format!("{r:?}"))),
                                debug(&mut t.contact_events.iter().map(|r| format!("{r:?}"))),
                            )
                        };
                        assert_eq!(
                            rows(&ours),
                            rows(&theirs),
                            "seed {seed}, batches of {batch}, {threads} threads"
                        );
                        late += ours.attribute_changes.iter().filter(|r| r.late).count();
                        absent += ours
                            .contact_events
                            .iter()
                            .filter(|r| !r.missing_fields.is_empty())
                            .count();
                    }
                    assert_eq!(states.len(), reference_states.len());
                    for (id, theirs) in &reference_states {
                        let stored = serde_json::to_value(theirs).unwrap();
                        assert_eq!(
                            serde_json::to_value(&states[id]).unwrap(),
                            stored,
                            "contact {id}"
                        );
                        // A state stored by the first implementation reads back as the same state.
                        let read: ContactState = serde_json::from_value(stored).unwrap();
                        assert_eq!(read, states[id]);
                    }
                }
            }
            assert!(
                late > 0 && absent > 0,
                "seed {seed}: {late} late changes, {absent} rows with absent fields"
            );
        }
    }

    #[test]
    fn stored_states_read_back_in_both_forms_and_damage_is_an_error() {
        let events = rough_events(5, 80);
        let mut states = ContactStates::default();
        for chunk in events.chunks(31) {
            let mut tables = crate::flatten::flatten(chunk);
            track(&mut tables, &mut states);
        }
        assert!(states.len() > 50, "{}", states.len());
        let (mut binary, mut json) = (0, 0);
        for state in states.values() {
            let mut bytes = Vec::new();
            state.encode(&mut bytes);
            assert_eq!(ContactState::decode(&bytes).unwrap(), *state);
            // What versions before the binary form stored.
            let text = serde_json::to_vec(state).unwrap();
            assert_eq!(ContactState::decode(&text).unwrap(), *state);
            for cut in 0..bytes.len() {
                assert!(ContactState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(ContactState::decode(&longer).is_err());
            binary += bytes.len();
            json += text.len();
        }
        assert!(binary * 3 < json, "binary {binary} bytes, JSON {json}");
        assert!(matches!(
            ContactState::decode(&[7, 0]),
            Err(DecodeError::Format(_, 7))
        ));
    }

    #[test]
    fn row_pairs_follow_their_contact_rows_in_any_order() {
        let rows: Vec<ContactEventRow> = ["a", "b", "c"]
            .into_iter()
            .map(|id| ContactEventRow {
                event_id: id.into(),
                ..Default::default()
            })
            .collect();
        // (event id, key, value): a null side is no pair.
        let item = |id: &str, k: Option<&str>, v: &str| {
            (id.to_string(), k.map(str::to_string), v.to_string())
        };
        type Item = (String, Option<String>, String);
        fn pairs_in<'t>(
            rows: &[ContactEventRow],
            items: &'t [Item],
        ) -> Vec<Vec<(&'t str, &'t str)>> {
            let pairs = RowPairs::of(
                rows,
                items,
                |i| &i.0,
                |i| Some((i.1.as_deref()?, i.2.as_str())),
            );
            (0..rows.len()).map(|r| pairs.at(r).to_vec()).collect()
        }
        let owned = |pairs: Vec<Vec<(&str, &str)>>| -> Vec<Vec<(String, String)>> {
            pairs
                .into_iter()
                .map(|r| r.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
                .collect()
        };
        let pairs_of = |items: &[Item]| owned(pairs_in(&rows, items));
        let in_step = [
            item("a", Some("k1"), "1"),
            item("a", None, "x"),
            item("a", Some("k2"), "2"),
            item("c", Some("k3"), "3"),
        ];
        let expected = owned(vec![
            vec![("k1", "1"), ("k2", "2")],
            vec![],
            vec![("k3", "3")],
        ]);
        assert_eq!(pairs_of(&in_step), expected);
        // Out of step (never made by flattening): paired by id all the same.
        let shuffled = [
            item("c", Some("k3"), "3"),
            item("a", Some("k1"), "1"),
            item("a", Some("k2"), "2"),
        ];
        assert_eq!(pairs_of(&shuffled), expected);
        // An item of no row is left out.
        let stray = [item("a", Some("k1"), "1"), item("z", Some("k9"), "9")];
        assert_eq!(
            pairs_of(&stray),
            owned(vec![vec![("k1", "1")], vec![], vec![]])
        );
        assert_eq!(pairs_of(&[]), owned(vec![vec![], vec![], vec![]]));
    }

    #[test]
    fn a_slot_sets_and_reads_the_column_of_its_name() {
        use crate::flatten::table::Table;
        use arrow_array::Array;
        // `set_column`, `column_text` and `column_texts` go by slot number: each slot must
        // reach the column `COLUMNS` names, and that one only.
        for (i, name) in COLUMNS.iter().enumerate() {
            let mut row = ContactEventRow::default();
            for text in ["42", "2026-01-02T03:04:05Z", "x"] {
                set_column(&mut row, i, text);
                if column_text(&row, i).is_some() {
                    assert_eq!(column_text(&row, i).as_deref(), Some(text), "{name}");
                    break;
                }
            }
            assert!(column_text(&row, i).is_some(), "{name}: no text was taken");
            assert_eq!(column_texts(&row)[i], column_text(&row, i), "{name}");
            let others: Vec<&str> = (0..SLOTS)
                .filter(|&j| j != i && column_text(&row, j).is_some())
                .map(|j| COLUMNS[j])
                .collect();
            assert!(others.is_empty(), "{name} also set {others:?}");
            let batch = ContactEventRow::to_batch(&[row]);
            let set: Vec<&str> = COLUMNS
                .iter()
                .filter(|c| batch.column_by_name(c).unwrap().is_valid(0))
                .copied()
                .collect();
            assert_eq!(set, [*name]);
        }
    }

    #[test]
    fn column_slots_are_the_single_valued_contact_columns() {
        // A column's slot is its position among the sources, and the groups come after them.
        let sources: Vec<&str> = crate::flatten::contact::COLUMN_SOURCES
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(sources[..SLOTS], COLUMNS);
        assert_eq!(sources[ANSWERS..], ["contact_answers", "tracking_params"]);
        assert_eq!(COLUMNS[STATUS], "status");
        for (i, column) in COLUMNS.iter().enumerate() {
            assert_eq!(slot(column), Some(i));
        }
    }

    /// (attribute, old, new, reported, detected, late)
    type Change = (Text, Option<Text>, Option<Text>, bool, bool, bool);

    fn changes(t: &Tables) -> Vec<Change> {
        t.attribute_changes
            .iter()
            .map(|c| {
                (
                    c.attribute.clone(),
                    c.old_value.clone(),
                    c.new_value.clone(),
                    c.reported,
                    c.detected,
                    c.late,
                )
            })
            .collect()
    }

    fn s(v: &str) -> Option<Text> {
        Some(v.into())
    }

    fn call(kind: &str, start: &str, old: Option<&str>, received_at_us: i64) -> Envelope {
        let mut event = json!({"uuid": "c1", "utc_start_time": start, "created_at": "2026-01-01T00:00:00Z",
                               "canceled": kind == "Call canceled", "canceled_at": "2026-01-05T00:00:00Z"});
        if let Some(old) = old {
            event["old_start_time"] = json!(old);
        }
        let body = json!({"event_type": {}, "event": event, "invitee": {}, "hookType": kind});
        Envelope::parse_one(&body.to_string(), None, received_at_us, "/w").unwrap()
    }

    #[test]
    fn calls_remember_their_latest_slot() {
        let mut states = HashMap::new();
        // Booked for the 10th, moved to the 12th without old_start_time, then cancelled with the
        // original slot in the payload (iClosed keeps it).
        let events = [
            call(
                "Call booked",
                "2026-01-10T10:00:00Z",
                None,
                1_767_225_600_000_000,
            ),
            call(
                "Call rescheduled",
                "2026-01-12T10:00:00Z",
                None,
                1_767_312_000_000_000,
            ),
            call(
                "Call canceled",
                "2026-01-10T10:00:00Z",
                None,
                1_767_571_200_000_000,
            ),
        ];
        let mut tables = crate::flatten::flatten(&events);
        track_calls(&mut tables, &mut states);
        tables.call_events.sort_by_key(|r| r.event_time);
        let ts = |s: &str| {
            Some(Micros(
                DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros(),
            ))
        };
        let slots: Vec<_> = tables
            .call_events
            .iter()
            .map(|r| (r.event_type.as_str(), r.previous_start_at, r.slot_start_at))
            .collect();
        assert_eq!(
            slots,
            vec![
                ("call_booked", None, ts("2026-01-10T10:00:00Z")),
                (
                    "call_rescheduled",
                    ts("2026-01-10T10:00:00Z"),
                    ts("2026-01-12T10:00:00Z")
                ),
                (
                    "call_cancelled",
                    ts("2026-01-12T10:00:00Z"),
                    ts("2026-01-12T10:00:00Z")
                ),
            ]
        );
        assert_eq!(
            states["c1"].start_at_us,
            ts("2026-01-12T10:00:00Z").map(|m| m.0)
        );
    }

    #[test]
    fn first_sight_is_a_transition_from_nothing_and_no_changes() {
        let mut states = ContactStates::default();
        let t = run(
            &[contact(
                json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "updatedAt": "2026-01-01T00:00:00Z"}),
                0,
            )],
            &mut states,
        );
        assert!(t.attribute_changes.is_empty());
        assert_eq!(t.status_transitions.len(), 1);
        assert_eq!(t.status_transitions[0].from_status, None);
        assert_eq!(t.status_transitions[0].to_status, s("POTENTIAL"));
        assert_eq!(t.status_transitions[0].seconds_in_from_status, None);
        assert_eq!(states[&1].values()["status"], "POTENTIAL");
    }

    #[test]
    fn reported_and_detected_changes_are_told_apart() {
        let mut states = ContactStates::default();
        let first = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x", "phoneNumber": "1",
                           "tracking": {"utm_source": "g", "utmKey_1": "fbclid", "utmValue_1": "c1"},
                           "updatedAt": "2026-01-01T00:00:00Z"});
        let second = json!({"id": 1, "previewId": "p", "status": "QUALIFIED", "email": "b@x", "phoneNumber": "2",
                            "tracking": {"utm_source": "g", "utmKey_1": "fbclid", "utmValue_1": "c2"},
                            "updatedAttributes": ["email", "country", "status", "questionsAndAnswers", "shoeSize"],
                            "updatedAt": "2026-01-01T01:00:00Z"});
        let t = run(&[contact(second, 2), contact(first, 1)], &mut states);
        assert_eq!(
            changes(&t),
            vec![
                ("email".into(), s("a@x"), s("b@x"), true, true, false),
                ("param:fbclid".into(), s("c1"), s("c2"), false, true, false),
                ("phone_number".into(), s("1"), s("2"), false, true, false),
                (
                    "status".into(),
                    s("POTENTIAL"),
                    s("QUALIFIED"),
                    true,
                    true,
                    false
                ),
                ("country".into(), None, None, true, false, false),
                ("questionsAndAnswers".into(), None, None, true, false, false),
                ("shoeSize".into(), None, None, true, false, false),
            ]
        );
        let moves: Vec<_> = t
            .status_transitions
            .iter()
            .map(|r| {
                (
                    r.from_status.clone(),
                    r.to_status.clone(),
                    r.seconds_in_from_status,
                )
            })
            .collect();
        assert_eq!(
            moves,
            vec![
                (None, s("POTENTIAL"), None),
                (s("POTENTIAL"), s("QUALIFIED"), Some(3600.0))
            ]
        );
    }

    #[test]
    fn a_late_event_is_flagged_and_does_not_replace_the_state() {
        let mut states = ContactStates::default();
        let newer = json!({"id": 1, "previewId": "p", "status": "QUALIFIED", "updatedAt": "2026-01-01T02:00:00Z"});
        run(&[contact(newer, 1)], &mut states);
        let older = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "updatedAt": "2026-01-01T01:00:00Z"});
        let t = run(&[contact(older, 2)], &mut states);
        assert_eq!(
            changes(&t),
            vec![(
                "status".into(),
                s("QUALIFIED"),
                s("POTENTIAL"),
                false,
                true,
                true
            )]
        );
        assert_eq!(t.status_transitions.len(), 1);
        assert!(t.status_transitions[0].late);
        assert_eq!(states[&1].values()["status"], "QUALIFIED");
        // A missing status is neither a transition nor a change, and the status is kept.
        let silent = json!({"id": 1, "previewId": "p", "updatedAt": "2026-01-01T03:00:00Z"});
        let t = run(&[contact(silent, 3)], &mut states);
        assert!(t.status_transitions.is_empty() && t.attribute_changes.is_empty());
        assert_eq!(states[&1].values()["status"], "QUALIFIED");
    }

    fn row_of(t: &Tables) -> &ContactEventRow {
        &t.contact_events[0]
    }

    #[test]
    fn absent_fields_are_carried_and_listed_and_change_nothing() {
        let mut states = ContactStates::default();
        let full = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x.io", "firstName": "Ada",
                          "tracking": {"utm_source": "g", "utmKey_1": "fbclid", "utmValue_1": "c1"},
                          "questionsAndAnswers": {"1_question": "Budget", "1_response": "10k"},
                          "updatedAt": "2026-01-01T00:00:00Z"});
        let first = run(&[contact(full, 1)], &mut states);
        assert!(
            row_of(&first).missing_fields.contains("last_name"),
            "first events list their gaps too"
        );
        assert_eq!(row_of(&first).last_name, None);

        let partial = json!({"id": 1, "status": "QUALIFIED", "updatedAttributes": ["status"], "updatedAt": "2026-01-01T01:00:00Z",
                             "hookType": "Contact updated"});
        let t = run(&[contact(partial, 2)], &mut states);
        let row = row_of(&t);
        assert_eq!(
            (
                row.email.clone(),
                row.first_name.clone(),
                row.utm_source.clone()
            ),
            (s("a@x.io"), s("Ada"), s("g"))
        );
        assert_eq!(row.preview_id, s("p"));
        for column in [
            "email",
            "first_name",
            "utm_source",
            "preview_id",
            "contact_answers",
            "tracking_params",
        ] {
            assert!(
                row.missing_fields.contains(column),
                "{column}: {:?}",
                row.missing_fields
            );
        }
        assert!(!row.missing_fields.contains("status"));
        assert_eq!(
            changes(&t),
            vec![(
                "status".into(),
                s("POTENTIAL"),
                s("QUALIFIED"),
                true,
                true,
                false
            )]
        );
        assert_eq!(t.status_transitions[0].from_status, s("POTENTIAL"));

        // An explicit null clears: a change to null, and a null in the row.
        let cleared = json!({"id": 1, "email": null, "updatedAt": "2026-01-01T02:00:00Z", "hookType": "Contact updated"});
        let t = run(&[contact(cleared, 3)], &mut states);
        assert_eq!(row_of(&t).email, None);
        assert!(!row_of(&t).missing_fields.contains("email"));
        assert_eq!(
            changes(&t),
            vec![("email".into(), s("a@x.io"), None, false, true, false)]
        );
        assert!(t.status_transitions.is_empty());
        assert_eq!(states[&1].values().get("email"), None);
        assert_eq!(states[&1].values()["first_name"], "Ada");
        assert_eq!(states[&1].values()["answer:Budget"], "10k");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_and_changes_nothing() {
        let mut states = ContactStates::default();
        let full = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x.io",
                          "hookType": "Contact created",
                          "tracking": {"utm_source": "google", "utm_campaign": "spring"},
                          "latestCall": {"duration": 30},
                          "updatedAt": "2026-01-01T00:00:00Z"});
        let first = run(&[contact(full, 1)], &mut states);
        assert_eq!(first.contact_events.len(), 1, "{first:?}");
        assert!(states.contains_key(&1), "{first:?}");
        // A list where a text goes, a fraction where an integer goes, and a text where the
        // tracking object goes: none of them clears what the contact had.
        let odd = json!({"id": 1, "email": ["a@x.io", "b@x.io"], "latestCall": {"duration": 2.5},
                         "updatedAt": "2026-01-01T01:00:00Z", "hookType": "Contact updated"});
        let t = run(&[contact(odd, 2)], &mut states);
        let row = row_of(&t);
        assert_eq!(row.email, s("a@x.io"), "carried");
        assert_eq!(row.latest_call_duration_min, Some(30));
        for column in ["email", "latest_call_duration_min"] {
            assert!(row.missing_fields.contains(column), "{column}");
        }
        assert!(
            row.parse_errors.iter().any(|e| e.starts_with("email: "))
                && row
                    .parse_errors
                    .iter()
                    .any(|e| e.starts_with("latestCall.duration: ")),
            "{:?}",
            row.parse_errors
        );
        assert_eq!(changes(&t), vec![]);
        let garbled = json!({"id": 1, "tracking": "utm_source=bing",
                             "updatedAt": "2026-01-01T02:00:00Z", "hookType": "Contact updated"});
        let t = run(&[contact(garbled, 3)], &mut states);
        let row = row_of(&t);
        assert_eq!(
            (row.utm_source.clone(), row.utm_campaign.clone()),
            (s("google"), s("spring"))
        );
        assert!(
            row.missing_fields.contains("utm_source")
                && row.missing_fields.contains("tracking_params")
        );
        assert_eq!(changes(&t), vec![]);
        assert_eq!(states[&1].values()["email"], "a@x.io");
        assert_eq!(states[&1].values()["utm_source"], "google");
        // A null still clears.
        let cleared = json!({"id": 1, "tracking": null, "updatedAt": "2026-01-01T03:00:00Z", "hookType": "Contact updated"});
        let t = run(&[contact(cleared, 4)], &mut states);
        assert_eq!(row_of(&t).utm_source, None);
        assert!(
            changes(&t)
                .iter()
                .any(|c| c.0 == "utm_source" && c.2.is_none())
        );
    }

    #[test]
    fn no_time_is_counted_in_a_status_never_known() {
        let mut states = ContactStates::default();
        let partial = json!({"id": 1, "previewId": "p", "hookType": "Contact updated",
                             "updatedAttributes": [], "updatedAt": "2026-01-01T00:00:00Z"});
        let first = run(&[contact(partial, 1)], &mut states);
        assert_eq!(first.status_transitions[0].to_status, None);
        let status = json!({"id": 1, "status": "POTENTIAL", "hookType": "Contact updated",
                            "updatedAt": "2026-01-01T05:00:00Z"});
        let t = run(&[contact(status, 2)], &mut states);
        let row = &t.status_transitions[0];
        assert_eq!(
            (row.from_status.clone(), row.to_status.clone()),
            (None, s("POTENTIAL"))
        );
        assert_eq!(row.seconds_in_from_status, None);
        // From then on, time counts from that transition.
        let next = json!({"id": 1, "status": "QUALIFIED", "hookType": "Contact updated",
                          "updatedAt": "2026-01-01T06:00:00Z"});
        let t = run(&[contact(next, 3)], &mut states);
        assert_eq!(t.status_transitions[0].seconds_in_from_status, Some(3600.0));
    }

    /// A contact event of contact 1 at `hour` o'clock on 2026-01-01, with `fields`.
    fn at(hour: u32, fields: serde_json::Value) -> Envelope {
        let mut body = json!({"id": 1, "hookType": "Contact updated",
                              "updatedAt": format!("2026-01-01T{hour:02}:00:00Z")});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        contact(body, i64::from(hour))
    }

    #[test]
    fn a_row_after_a_late_one_in_its_batch_is_carried_from_what_the_late_one_left() {
        let first = || {
            [
                at(
                    1,
                    json!({"previewId": "p", "status": "POTENTIAL", "email": "a@x.io"}),
                ),
                at(5, json!({"firstName": "Ada"})),
            ]
        };
        let late = || at(3, json!({"status": "QUALIFIED", "email": "b@x.io"}));
        let after = || at(6, json!({"lastName": "L"}));
        // The late event and the one after it in one flush, then in two.
        let mut together = ContactStates::default();
        run(&first(), &mut together);
        let t = run(&[late(), after()], &mut together);
        let mut apart = ContactStates::default();
        run(&first(), &mut apart);
        run(&[late()], &mut apart);
        let a = run(&[after()], &mut apart);
        for tables in [&t, &a] {
            let row = tables
                .contact_events
                .iter()
                .find(|r| r.last_name.is_some())
                .unwrap();
            assert_eq!(
                (row.status.clone(), row.email.clone()),
                (s("QUALIFIED"), s("b@x.io"))
            );
            let of_after: Vec<Change> = changes(tables)
                .into_iter()
                .filter(|c| c.0 == "last_name")
                .collect();
            assert_eq!(
                of_after,
                vec![("last_name".into(), None, s("L"), false, true, false)]
            );
        }
        // Only the late event's own changes (status and email) and transition, flagged late,
        // besides.
        let mut others: Vec<(String, bool)> = changes(&t)
            .into_iter()
            .filter(|c| c.0 != "last_name")
            .map(|c| (c.0.to_string(), c.5))
            .collect();
        others.sort();
        assert_eq!(
            others,
            vec![("email".to_string(), true), ("status".to_string(), true)]
        );
        assert_eq!(t.status_transitions.len(), 1);
        assert!(t.status_transitions[0].late);
        assert_eq!(together[&1].values(), apart[&1].values());
    }

    #[test]
    fn a_late_status_that_wins_starts_its_time_when_it_was_set() {
        // POTENTIAL at 01:00, a partial update at 03:00, QUALIFIED at 02:00 arriving late, then
        // DISQUALIFIED at 04:00: two hours in QUALIFIED, however the flushes fall.
        let seconds = |batches: &[&[u32]]| {
            let event = |hour: u32| match hour {
                1 => at(1, json!({"previewId": "p", "status": "POTENTIAL"})),
                3 => at(3, json!({"firstName": "Ada"})),
                2 => at(2, json!({"status": "QUALIFIED"})),
                _ => at(4, json!({"status": "DISQUALIFIED"})),
            };
            let mut states = ContactStates::default();
            let mut rows = Vec::new();
            for batch in batches {
                let events: Vec<Envelope> = batch.iter().map(|&h| event(h)).collect();
                rows.extend(run(&events, &mut states).status_transitions);
            }
            rows.iter()
                .map(|r| (r.to_status.clone(), r.seconds_in_from_status))
                .collect::<Vec<_>>()
        };
        let last = |v: Vec<(Option<Text>, Option<f64>)>| v.last().cloned().unwrap();
        let expected = (s("DISQUALIFIED"), Some(7200.0));
        assert_eq!(last(seconds(&[&[1, 2, 3, 4]])), expected);
        assert_eq!(last(seconds(&[&[1, 3], &[2], &[4]])), expected);
        assert_eq!(
            last(seconds(&[&[1, 3], &[2]])),
            (s("QUALIFIED"), Some(3600.0))
        );
        // A late transition is compared with the newer state: when that status began after
        // the late event, there is no time to count (it was negative).
        let mut states = ContactStates::default();
        run(
            &[
                at(1, json!({"previewId": "p", "status": "POTENTIAL"})),
                at(3, json!({"status": "QUALIFIED"})),
            ],
            &mut states,
        );
        let t = run(&[at(2, json!({"status": "DISQUALIFIED"}))], &mut states);
        let row = &t.status_transitions[0];
        assert!(row.late);
        assert_eq!(
            (row.from_status.clone(), row.seconds_in_from_status),
            (s("QUALIFIED"), None)
        );
    }

    #[test]
    fn a_null_status_is_not_carried_within_a_batch() {
        let mut states = ContactStates::default();
        let t = run(
            &[
                at(1, json!({"previewId": "r", "status": "POTENTIAL"})),
                at(2, json!({"status": null})),
                at(3, json!({"firstName": "Bo"})),
            ],
            &mut states,
        );
        let row = t
            .contact_events
            .iter()
            .find(|r| r.first_name.is_some())
            .unwrap();
        assert_eq!(row.status, s("POTENTIAL"), "a null status keeps the status");
    }

    #[test]
    fn a_late_payload_fills_in_only_what_no_newer_payload_sent() {
        let mut states = ContactStates::default();
        let e1 = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x.io", "phoneNumber": "+15550001",
                        "updatedAt": "2026-01-01T01:00:00Z"});
        run(&[contact(e1, 1)], &mut states);
        let partial = json!({"id": 1, "status": "QUALIFIED", "updatedAt": "2026-01-01T03:00:00Z", "hookType": "Contact updated"});
        run(&[contact(partial, 2)], &mut states);
        // The full payload that came between them in time arrives last.
        let e2 = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "b@x.io", "phoneNumber": "+15550001",
                        "updatedAt": "2026-01-01T02:00:00Z"});
        let t = run(&[contact(e2, 3)], &mut states);
        assert!(t.attribute_changes.iter().all(|c| c.late));
        assert_eq!(
            states[&1].values()["email"],
            "b@x.io",
            "the late payload is the latest that sent an email"
        );
        assert_eq!(
            states[&1].values()["status"],
            "QUALIFIED",
            "the newer status stays"
        );
        let next =
            json!({"id": 1, "updatedAt": "2026-01-01T04:00:00Z", "hookType": "Contact updated"});
        let t = run(&[contact(next, 4)], &mut states);
        assert_eq!(
            (row_of(&t).email.clone(), row_of(&t).status.clone()),
            (s("b@x.io"), s("QUALIFIED"))
        );
        assert!(t.attribute_changes.is_empty());
    }

    #[test]
    fn within_one_batch_a_partial_update_carries_from_the_event_before_it_in_time() {
        let mut states = ContactStates::default();
        let e1 = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x.io", "updatedAt": "2026-01-01T01:00:00Z"});
        run(&[contact(e1, 1)], &mut states);
        let partial = json!({"id": 1, "status": "QUALIFIED", "updatedAt": "2026-01-01T03:00:00Z", "hookType": "Contact updated"});
        let e2 = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "b@x.io", "updatedAt": "2026-01-01T02:00:00Z"});
        let t = run(&[contact(partial, 2), contact(e2, 3)], &mut states);
        let carried = t
            .contact_events
            .iter()
            .find(|r| r.status == s("QUALIFIED"))
            .unwrap();
        assert_eq!(carried.email, s("b@x.io"));
        assert!(t.attribute_changes.iter().all(|c| !c.late));
    }
}
