//! Contact objects -> `contact_events`, `tracking_params`, `contact_answers`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_schema::DataType;
use serde_json::{Map, Value};

use super::reader::{Notes, Obj};
use super::table::{Cell, Micros, Text};
use super::tables::{ContactAnswerRow, ContactEventRow, TrackingParamRow};
use super::{Head, Options, Tables};

/// Flattens one contact object and returns its event time.
pub(super) fn flatten(
    head: &Head,
    obj: &Map<String, Value>,
    options: &Options,
    out: &mut Tables,
) -> Micros {
    let mut notes = Notes::default();
    let mut o = Obj::root(obj);
    let mut row = ContactEventRow {
        event_id: head.event_id.clone(),
        event_type: head.event_type.clone(),
        received_at: head.received_at,
        contact_id: o.int("id", &mut notes),
        account_id: o.int("accountId", &mut notes),
        user_id: o.int("userId", &mut notes),
        preview_id: o.string("previewId", &mut notes),
        first_name: o.string("firstName", &mut notes),
        last_name: o.string("lastName", &mut notes),
        email: o.string("email", &mut notes),
        phone_number: o.string("phoneNumber", &mut notes),
        secondary_email: o.string("secondary_email", &mut notes),
        secondary_phone_number: o.string("secondary_phoneNumber", &mut notes),
        status: o.string("status", &mut notes),
        created_at: o.timestamp("createdAt", &mut notes),
        updated_at: o.timestamp("updatedAt", &mut notes),
        joined_time: o.timestamp("joinedTime", &mut notes),
        time_zone: o.string("timeZone", &mut notes),
        country: o.string("country", &mut notes),
        ip_address: o.string("ipAddress", &mut notes),
        updated_attributes: string_list(o.take("updatedAttributes")),
        disqualifying_group: o.json("disqualifyingGroup"),
        hook_type: super::hook_type(&mut o),
        ..Default::default()
    };
    row.event_time = row
        .updated_at
        .or(row.created_at)
        .unwrap_or(head.received_at);

    let mut event = o.object("event", &mut notes);
    row.booking_event_id = event.int("id", &mut notes);
    row.booking_event_name = event.string("name", &mut notes);
    row.booking_event_type = event.string("eventType", &mut notes);
    row.booking_event_link_prefix = event.string("linkPrefix", &mut notes);
    row.booking_event_color = event.string("color", &mut notes);
    event.finish(&mut notes);

    let mut call = o.object("latestCall", &mut notes);
    row.latest_call_at = call.timestamp("dateTime", &mut notes);
    row.latest_call_duration_min = call.int("duration", &mut notes);
    let mut host = call.object("user", &mut notes);
    row.latest_call_host_id = host.int("id", &mut notes);
    row.latest_call_host_name = full_name(
        host.string("firstName", &mut notes),
        host.string("lastName", &mut notes),
    );
    row.latest_call_host_email = host.string("email", &mut notes);
    host.finish(&mut notes);
    call.finish(&mut notes);

    let mut tracking = o.object("tracking", &mut notes);
    let utm = read_utm(&mut tracking, false, &mut notes);
    [
        row.utm_source,
        row.utm_medium,
        row.utm_campaign,
        row.utm_term,
        row.utm_content,
    ] = utm;
    let first = read_utm(&mut tracking, true, &mut notes);
    [
        row.first_utm_source,
        row.first_utm_medium,
        row.first_utm_campaign,
        row.first_utm_term,
        row.first_utm_content,
    ] = first;
    tracking_params(head, &row, &mut tracking, &mut notes, out);
    tracking.finish(&mut notes);

    let mut answers = o.object("questionsAndAnswers", &mut notes);
    contact_answers(head, &row, &mut answers, &mut notes, out);
    answers.finish(&mut notes);

    o.finish(&mut notes);
    row.extras = notes.extras_json();
    row.parse_errors = notes.parse_errors;
    row.missing_fields = missing_fields(obj);
    row.quality_flags = quality_flags(&row, options);
    let event_time = row.event_time;
    out.contact_events.push(row);
    event_time
}

/// Each carried column and the payload paths it is read from; a column is missing when every
/// one of its paths is absent. A path through an explicit `null` is not absent: it clears.
pub const COLUMN_SOURCES: &[(&str, &[&[&str]])] = &[
    ("account_id", &[&["accountId"]]),
    ("user_id", &[&["userId"]]),
    ("preview_id", &[&["previewId"]]),
    ("first_name", &[&["firstName"]]),
    ("last_name", &[&["lastName"]]),
    ("email", &[&["email"]]),
    ("phone_number", &[&["phoneNumber"]]),
    ("secondary_email", &[&["secondary_email"]]),
    ("secondary_phone_number", &[&["secondary_phoneNumber"]]),
    ("status", &[&["status"]]),
    ("created_at", &[&["createdAt"]]),
    ("joined_time", &[&["joinedTime"]]),
    ("time_zone", &[&["timeZone"]]),
    ("country", &[&["country"]]),
    ("ip_address", &[&["ipAddress"]]),
    ("booking_event_id", &[&["event", "id"]]),
    ("booking_event_name", &[&["event", "name"]]),
    ("booking_event_type", &[&["event", "eventType"]]),
    ("booking_event_link_prefix", &[&["event", "linkPrefix"]]),
    ("booking_event_color", &[&["event", "color"]]),
    ("utm_source", &[&["tracking", "utm_source"]]),
    ("utm_medium", &[&["tracking", "utm_medium"]]),
    ("utm_campaign", &[&["tracking", "utm_campaign"]]),
    ("utm_term", &[&["tracking", "utm_term"]]),
    ("utm_content", &[&["tracking", "utm_content"]]),
    ("first_utm_source", &[&["tracking", "first_utm_source"]]),
    ("first_utm_medium", &[&["tracking", "first_utm_medium"]]),
    ("first_utm_campaign", &[&["tracking", "first_utm_campaign"]]),
    ("first_utm_term", &[&["tracking", "first_utm_term"]]),
    ("first_utm_content", &[&["tracking", "first_utm_content"]]),
    ("latest_call_at", &[&["latestCall", "dateTime"]]),
    ("latest_call_duration_min", &[&["latestCall", "duration"]]),
    ("latest_call_host_id", &[&["latestCall", "user", "id"]]),
    (
        "latest_call_host_name",
        &[
            &["latestCall", "user", "firstName"],
            &["latestCall", "user", "lastName"],
        ],
    ),
    (
        "latest_call_host_email",
        &[&["latestCall", "user", "email"]],
    ),
    ("disqualifying_group", &[&["disqualifyingGroup"]]),
    ("contact_answers", &[&["questionsAndAnswers"]]),
    ("tracking_params", &[&["tracking"]]),
];

/// Whether the rest of a path is absent below `value`, the value of its first key (an explicit
/// `null` on the way is not absent).
fn absent_below(value: Option<&Value>, rest: &[&str]) -> bool {
    let mut current = match value {
        None => return true,
        Some(v) => v,
    };
    for key in rest {
        match current {
            Value::Object(map) => match map.get(*key) {
                None => return true,
                Some(next) => current = next,
            },
            _ => return false,
        }
    }
    false
}

/// A set of the columns of [`COLUMN_SOURCES`], one bit per position: the columns a contact
/// payload lacks (`missing_fields`). Change tracking asks about them three times per row, and
/// a bit test replaced a hashed name lookup each time (docs/benchmarks.md, seventh session).
/// The column holds their names, in declaration order.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnSet(u64);

impl std::fmt::Debug for ColumnSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

const _: () = assert!(COLUMN_SOURCES.len() <= 64, "a ColumnSet holds 64 columns");

impl ColumnSet {
    /// The position of a named column in [`COLUMN_SOURCES`].
    fn position_of(name: &str) -> Option<usize> {
        COLUMN_SOURCES.iter().position(|(c, _)| *c == name)
    }

    /// The set of the named columns; a name that is not a carried column is not taken.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = ColumnSet::default();
        for position in names.into_iter().filter_map(Self::position_of) {
            set.insert(position);
        }
        set
    }

    /// Adds the column at `position` in [`COLUMN_SOURCES`].
    pub fn insert(&mut self, position: usize) {
        debug_assert!(position < COLUMN_SOURCES.len());
        self.0 |= 1 << position;
    }

    /// Whether the column at `position` in [`COLUMN_SOURCES`] is in the set.
    pub fn has(self, position: usize) -> bool {
        position < 64 && self.0 >> position & 1 == 1
    }

    /// Whether the named column is in the set.
    pub fn contains(self, name: &str) -> bool {
        Self::position_of(name).is_some_and(|position| self.has(position))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The positions in the set, in increasing order.
    pub fn positions(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let position = bits.trailing_zeros() as usize;
            (bits != 0).then(|| {
                bits &= bits - 1;
                position
            })
        })
    }

    /// The names in the set, in the order of [`COLUMN_SOURCES`].
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.positions().map(|position| COLUMN_SOURCES[position].0)
    }
}

impl Cell for ColumnSet {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        super::table::list_type()
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self> + Clone) -> ArrayRef {
        let names: usize = values.clone().map(|set| set.len()).sum();
        let mut b = ListBuilder::with_capacity(
            StringBuilder::with_capacity(names, names * 16),
            values.len(),
        );
        for set in values {
            set.names().for_each(|name| b.values().append_value(name));
            b.append(true);
        }
        Arc::new(b.finish())
    }
}

/// The carried columns absent from a contact payload.
fn missing_fields(obj: &Map<String, Value>) -> ColumnSet {
    // Columns in a row share their parent object (`event`, `tracking`, `latestCall`): each
    // top-level key is looked up once per run of columns under it.
    let mut last: Option<(&str, Option<&Value>)> = None;
    let mut top = |key: &'static str| match last {
        Some((k, v)) if k == key => v,
        _ => {
            let v = obj.get(key);
            last = Some((key, v));
            v
        }
    };
    let mut missing = ColumnSet::default();
    for (position, (_, paths)) in COLUMN_SOURCES.iter().enumerate() {
        if paths.iter().all(|p| absent_below(top(p[0]), &p[1..])) {
            missing.insert(position);
        }
    }
    missing
}

/// Tolerance before a timestamp counts as in the future (clock skew between iClosed and us).
const FUTURE_TOLERANCE_US: i64 = 5 * 60 * 1_000_000;

/// The basic rules a contact's sent values break.
fn quality_flags(row: &ContactEventRow, options: &Options) -> Vec<String> {
    let mut flags = Vec::new();
    let emails = [&row.email, &row.secondary_email];
    if emails
        .iter()
        .any(|e| e.as_deref().is_some_and(|e| !plausible_email(e)))
    {
        flags.push("email_malformed".to_string());
    }
    let phones = [&row.phone_number, &row.secondary_phone_number];
    if phones
        .iter()
        .any(|p| p.as_deref().is_some_and(|p| !plausible_phone(p)))
    {
        flags.push("phone_malformed".to_string());
    }
    if let Some(status) = &row.status
        && !options
            .known_statuses
            .iter()
            .any(|k| k.eq_ignore_ascii_case(status))
    {
        flags.push("status_unknown".to_string());
    }
    if let (Some(created), Some(updated)) = (row.created_at, row.updated_at)
        && updated < created
    {
        flags.push("updated_before_created".to_string());
    }
    let horizon = row.received_at.0.saturating_add(FUTURE_TOLERANCE_US);
    if [row.created_at, row.updated_at, row.joined_time]
        .iter()
        .flatten()
        .any(|t| t.0 > horizon)
    {
        flags.push("timestamp_in_future".to_string());
    }
    flags
}

/// One `@`, a non-empty local part, a dotted domain, no spaces.
fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
        && !e.chars().any(char::is_whitespace)
}

/// Digits with optional `+` first and common separators; 7 to 15 digits (E.164 allows 15).
fn plausible_phone(p: &str) -> bool {
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let allowed = p
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || " ()-.".contains(c) || (c == '+' && i == 0));
    allowed && (7..=15).contains(&digits)
}

/// The five last-touch `utm_*` values of a tracking object, or the `first_utm_*` ones.
pub(super) fn read_utm(
    tracking: &mut Obj<'_>,
    first_touch: bool,
    notes: &mut Notes,
) -> [Option<Text>; 5] {
    const LAST: [&str; 5] = [
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
    ];
    const FIRST: [&str; 5] = [
        "first_utm_source",
        "first_utm_medium",
        "first_utm_campaign",
        "first_utm_term",
        "first_utm_content",
    ];
    let keys = if first_touch { FIRST } else { LAST };
    keys.map(|key| tracking.string(key, notes))
}

/// `first last`, or whichever is present.
pub(super) fn full_name(first: Option<Text>, last: Option<Text>) -> Option<Text> {
    match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}").trim().into()),
        (f, l) => f.or(l),
    }
}

/// The elements of a JSON array as strings (non-strings as their JSON text).
fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        other => Some(vec![other.to_string()]),
    }
}

/// `prefix<N><suffix>` -> N, for keys like `utmKey_3` or `3_question`.
#[inline]
fn numbered(key: &str, prefix: &str, suffix: &str) -> Option<i64> {
    // Every key of `tracking` and `questionsAndAnswers` comes here twice: the digits that must
    // follow the prefix and precede the suffix turn most keys away before any comparison.
    let bytes = key.as_bytes();
    if bytes.len() <= prefix.len() + suffix.len()
        || !bytes[prefix.len()].is_ascii_digit()
        || !bytes[bytes.len() - suffix.len() - 1].is_ascii_digit()
    {
        return None;
    }
    let n = key.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn tracking_params(
    head: &Head,
    row: &ContactEventRow,
    tracking: &mut Obj<'_>,
    notes: &mut Notes,
    out: &mut Tables,
) {
    let mut positions: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for key in tracking.keys() {
        if let Some(n) = numbered(key, "utmKey_", "") {
            positions.entry(n).or_default().0 = key.clone();
        } else if let Some(n) = numbered(key, "utmValue_", "") {
            positions.entry(n).or_default().1 = key.clone();
        }
    }
    for (position, (key_name, value_name)) in positions {
        out.tracking_params.push(TrackingParamRow {
            event_id: head.event_id.clone(),
            event_type: head.event_type.clone(),
            received_at: head.received_at,
            event_time: row.event_time,
            contact_id: row.contact_id,
            position,
            key: if key_name.is_empty() {
                None
            } else {
                tracking.string(&key_name, notes)
            },
            value: if value_name.is_empty() {
                None
            } else {
                answer_text(tracking, &value_name, notes)
            },
        });
    }
}

fn contact_answers(
    head: &Head,
    row: &ContactEventRow,
    answers: &mut Obj<'_>,
    notes: &mut Notes,
    out: &mut Tables,
) {
    let mut positions: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for key in answers.keys() {
        if let Some(n) = numbered(key, "", "_question") {
            positions.entry(n).or_default().0 = key.clone();
        } else if let Some(n) = numbered(key, "", "_response") {
            positions.entry(n).or_default().1 = key.clone();
        }
    }
    let mut questions = HashSet::new();
    for (position, (question_key, response_key)) in positions {
        let question = if question_key.is_empty() {
            None
        } else {
            answers.string(&question_key, notes)
        };
        let response = if response_key.is_empty() {
            None
        } else {
            answer_text(answers, &response_key, notes)
        };
        if let Some(q) = &question {
            questions.insert(q.clone());
        }
        out.contact_answers.push(ContactAnswerRow {
            event_id: head.event_id.clone(),
            event_type: head.event_type.clone(),
            received_at: head.received_at,
            event_time: row.event_time,
            contact_id: row.contact_id,
            position,
            question,
            response,
        });
    }
    // The label-keyed copies of numbered answers are documented duplicates; any other label
    // key is an answer we have no number for, and stays in extras.
    let labels: Vec<String> = answers
        .keys()
        .filter(|k| questions.contains(k.as_str()))
        .cloned()
        .collect();
    for label in labels {
        answers.skip(&label);
    }
}

/// A free-text answer: strings as they are, arrays joined with `, `, other scalars as JSON text.
fn answer_text(o: &mut Obj<'_>, key: &str, notes: &mut Notes) -> Option<Text> {
    match o.peek(key) {
        Some(Value::Array(items)) => {
            o.skip(key);
            Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
            )
        }
        _ => o.string(key, notes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_need_digits_between_prefix_and_suffix() {
        assert_eq!(numbered("utmKey_3", "utmKey_", ""), Some(3));
        assert_eq!(numbered("utmValue_12", "utmValue_", ""), Some(12));
        assert_eq!(numbered("12_question", "", "_question"), Some(12));
        assert_eq!(numbered("0_response", "", "_response"), Some(0));
        for (key, prefix, suffix) in [
            ("utmKey_", "utmKey_", ""),
            ("utmKey_3a", "utmKey_", ""),
            ("utmKey_a3", "utmKey_", ""),
            ("utmValue_12", "utmKey_", ""),
            ("utm_source", "utmKey_", ""),
            ("utmKey_99999999999999999999", "utmKey_", ""),
            ("_question", "", "_question"),
            ("1x_question", "", "_question"),
            ("3_response", "", "_question"),
            ("é3_question", "", "_question"),
            ("3", "", "_question"),
            ("", "utmKey_", ""),
        ] {
            assert_eq!(numbered(key, prefix, suffix), None, "{key:?}");
        }
    }

    #[test]
    fn a_column_set_reads_back_its_names_in_declaration_order() {
        let set = ColumnSet::of(["tracking_params", "email", "no_such_column", "account_id"]);
        assert_eq!(
            set.names().collect::<Vec<_>>(),
            ["account_id", "email", "tracking_params"]
        );
        assert_eq!(set.len(), 3);
        assert!(set.contains("email") && !set.contains("status"));
        assert!(!set.contains("no_such_column"));
        assert!(ColumnSet::default().is_empty());
        let all = ColumnSet::of(COLUMN_SOURCES.iter().map(|(c, _)| *c));
        assert_eq!(all.len(), COLUMN_SOURCES.len());
        assert!(all.positions().eq(0..COLUMN_SOURCES.len()));
        assert_eq!(
            format!("{set:?}"),
            r#"["account_id", "email", "tracking_params"]"#
        );
    }
}
