//! Contact objects -> `contact_events`, `tracking_params`, `contact_answers`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_schema::DataType;

use super::reader::{Notes, Obj, coerce};
use super::table::{Cell, Micros, Text};
use super::tables::{ContactAnswerRow, ContactEventRow, TrackingParamRow};
use super::{Head, Options, Tables};
use crate::json::{Json, Object};

#[cfg(test)]
pub(crate) mod reference;

/// Flattens one contact object and returns its event time.
///
/// The object is read member by member: each key is matched once against the keys the table
/// maps, which marks its column present (for `missing_fields`), and a key the table does not
/// map goes to `extras` when it is met. The first implementation looked each column's key up
/// instead, and looked every path up again for `missing_fields`; it is kept as the tests'
/// oracle in `reference.rs`. Parse errors come in the object's key order.
pub(super) fn flatten(
    head: &Head,
    obj: &Object<'_>,
    options: &Options,
    out: &mut Tables,
) -> Micros {
    let mut notes = Notes::default();
    let mut present = ColumnSet::default();
    let mut row = ContactEventRow {
        event_id: head.event_id.clone(),
        event_type: head.event_type.clone(),
        received_at: head.received_at,
        ..Default::default()
    };
    let (mut tracking, mut answers) = (None, None);
    // Unmapped top-level keys go to `extras` last, as the reference's did, so that a
    // top-level key spelled like a nested path (`"tracking.x"`) wins over the nested one.
    let mut unmapped = Vec::new();
    for (key, v) in obj.iter() {
        let errors = notes.parse_errors.len();
        let n = &mut notes;
        let at = || key.to_string();
        let column = match key {
            "id" => {
                row.contact_id = coerce::int(v, at, n);
                continue;
            }
            "updatedAt" => {
                row.updated_at = coerce::timestamp(v, at, n);
                continue;
            }
            "updatedAttributes" => {
                row.updated_attributes = string_list(v);
                continue;
            }
            "hookType" => {
                row.hook_type = super::hook_type_text(v);
                continue;
            }
            "accountId" => {
                row.account_id = coerce::int(v, at, n);
                col::ACCOUNT_ID
            }
            "userId" => {
                row.user_id = coerce::int(v, at, n);
                col::USER_ID
            }
            "previewId" => {
                row.preview_id = coerce::string(v, at, n);
                col::PREVIEW_ID
            }
            "firstName" => {
                row.first_name = coerce::string(v, at, n);
                col::FIRST_NAME
            }
            "lastName" => {
                row.last_name = coerce::string(v, at, n);
                col::LAST_NAME
            }
            "email" => {
                row.email = coerce::string(v, at, n);
                col::EMAIL
            }
            "phoneNumber" => {
                row.phone_number = coerce::string(v, at, n);
                col::PHONE
            }
            "secondary_email" => {
                row.secondary_email = coerce::string(v, at, n);
                col::SECONDARY_EMAIL
            }
            "secondary_phoneNumber" => {
                row.secondary_phone_number = coerce::string(v, at, n);
                col::SECONDARY_PHONE
            }
            "status" => {
                row.status = coerce::string(v, at, n);
                col::STATUS
            }
            "createdAt" => {
                row.created_at = coerce::timestamp(v, at, n);
                col::CREATED_AT
            }
            "joinedTime" => {
                row.joined_time = coerce::timestamp(v, at, n);
                col::JOINED
            }
            "timeZone" => {
                row.time_zone = coerce::string(v, at, n);
                col::TIME_ZONE
            }
            "country" => {
                row.country = coerce::string(v, at, n);
                col::COUNTRY
            }
            "ipAddress" => {
                row.ip_address = coerce::string(v, at, n);
                col::IP_ADDRESS
            }
            "disqualifyingGroup" => {
                row.disqualifying_group = coerce::json(v);
                col::DISQUALIFYING_GROUP
            }
            "event" => {
                booking_event(v, &mut row, &mut present, n);
                continue;
            }
            "latestCall" => {
                latest_call(v, &mut row, &mut present, n);
                continue;
            }
            "tracking" => {
                tracking = Some(v);
                continue;
            }
            "questionsAndAnswers" => {
                answers = Some(v);
                continue;
            }
            _ => {
                unmapped.push((key, v));
                continue;
            }
        };
        // A value that could not be read as its column's type leaves the column missing:
        // carried from the contact's state, not cleared (see `read`).
        read(&mut present, column, errors, &notes);
    }
    row.event_time = row
        .updated_at
        .or(row.created_at)
        .unwrap_or(head.received_at);
    // The groups are present when sent as an object or as null; anything else could not be
    // read, and leaves the contact's last parameters or answers as they were.
    let readable = |v: &Json<'_>| matches!(v, Json::Object(_) | Json::Null);
    if let Some(v) = tracking {
        if readable(v) {
            present.insert(col::TRACKING_PARAMS);
        }
        read_tracking(head, v, &mut row, &mut present, &mut notes, out);
    }
    if let Some(v) = answers {
        if readable(v) {
            present.insert(col::CONTACT_ANSWERS);
        }
        read_answers(head, v, &row, &mut notes, out);
    }
    for (key, v) in unmapped {
        notes.extras.insert(key.to_string(), v.to_value());
    }
    row.extras = notes.extras_json();
    row.parse_errors = notes.parse_errors;
    row.missing_fields = present.complement();
    row.quality_flags = quality_flags(&row, options);
    let event_time = row.event_time;
    out.contact_events.push(row);
    event_time
}

/// Positions in [`COLUMN_SOURCES`] of the columns the reader marks present.
mod col {
    use super::column;
    pub const ACCOUNT_ID: usize = column("account_id");
    pub const USER_ID: usize = column("user_id");
    pub const PREVIEW_ID: usize = column("preview_id");
    pub const FIRST_NAME: usize = column("first_name");
    pub const LAST_NAME: usize = column("last_name");
    pub const EMAIL: usize = column("email");
    pub const PHONE: usize = column("phone_number");
    pub const SECONDARY_EMAIL: usize = column("secondary_email");
    pub const SECONDARY_PHONE: usize = column("secondary_phone_number");
    pub const STATUS: usize = column("status");
    pub const CREATED_AT: usize = column("created_at");
    pub const JOINED: usize = column("joined_time");
    pub const TIME_ZONE: usize = column("time_zone");
    pub const COUNTRY: usize = column("country");
    pub const IP_ADDRESS: usize = column("ip_address");
    pub const DISQUALIFYING_GROUP: usize = column("disqualifying_group");
    pub const BOOKING: [usize; 5] = [
        column("booking_event_id"),
        column("booking_event_name"),
        column("booking_event_type"),
        column("booking_event_link_prefix"),
        column("booking_event_color"),
    ];
    pub const CALL_AT: usize = column("latest_call_at");
    pub const CALL_DURATION: usize = column("latest_call_duration_min");
    pub const HOST_ID: usize = column("latest_call_host_id");
    pub const HOST_NAME: usize = column("latest_call_host_name");
    pub const HOST_EMAIL: usize = column("latest_call_host_email");
    pub const UTM: [usize; 5] = [
        column("utm_source"),
        column("utm_medium"),
        column("utm_campaign"),
        column("utm_term"),
        column("utm_content"),
    ];
    pub const FIRST_UTM: [usize; 5] = [
        column("first_utm_source"),
        column("first_utm_medium"),
        column("first_utm_campaign"),
        column("first_utm_term"),
        column("first_utm_content"),
    ];
    pub const ALL_UTM: [usize; 10] = [
        UTM[0],
        UTM[1],
        UTM[2],
        UTM[3],
        UTM[4],
        FIRST_UTM[0],
        FIRST_UTM[1],
        FIRST_UTM[2],
        FIRST_UTM[3],
        FIRST_UTM[4],
    ];
    pub const CONTACT_ANSWERS: usize = column("contact_answers");
    pub const TRACKING_PARAMS: usize = column("tracking_params");
}

/// The position of a column in [`COLUMN_SOURCES`], found at compile time.
const fn column(name: &str) -> usize {
    let mut i = 0;
    while i < COLUMN_SOURCES.len() {
        let (c, n) = (COLUMN_SOURCES[i].0.as_bytes(), name.as_bytes());
        let mut j = 0;
        while j < c.len() && j < n.len() && c[j] == n[j] {
            j += 1;
        }
        if j == c.len() && j == n.len() {
            return i;
        }
        i += 1;
    }
    panic!("not a column of COLUMN_SOURCES")
}

/// Marks `column` present when the member just read for it gave no parse error (`errors` is
/// how many there were before it): a value of the wrong type, kept in `parse_errors`, leaves
/// the column missing, so change tracking carries the contact's last value instead of seeing
/// it cleared (and then set again by the next event), and `missing_fields` names it.
fn read(present: &mut ColumnSet, column: usize, errors: usize, notes: &Notes) {
    if notes.parse_errors.len() == errors {
        present.insert(column);
    }
}

/// The members of a nested object, or `None` after noting why not: `null` marks every column
/// below it present (an explicit null clears them); any other non-object is a parse error,
/// kept in `extras` whole, and leaves the columns below it missing (nothing could be read).
fn nested<'v, 'a>(
    v: &'v Json<'a>,
    path: &str,
    present: &mut ColumnSet,
    below: &[usize],
    notes: &mut Notes,
) -> Option<&'v Object<'a>> {
    if let Json::Object(o) = v {
        return Some(o);
    }
    if matches!(v, Json::Null) {
        below.iter().for_each(|c| present.insert(*c));
    } else {
        coerce::not_an_object(v, path.to_string(), notes);
        notes.extras.insert(path.to_string(), v.to_value());
    }
    None
}

/// `event`: the booking event type of the contact.
fn booking_event(v: &Json<'_>, row: &mut ContactEventRow, present: &mut ColumnSet, n: &mut Notes) {
    let Some(event) = nested(v, "event", present, &col::BOOKING, n) else {
        return;
    };
    for (key, v) in event.iter() {
        let errors = n.parse_errors.len();
        let at = || format!("event.{key}");
        let slot = match key {
            "id" => {
                row.booking_event_id = coerce::int(v, at, n);
                0
            }
            "name" => {
                row.booking_event_name = coerce::string(v, at, n);
                1
            }
            "eventType" => {
                row.booking_event_type = coerce::string(v, at, n);
                2
            }
            "linkPrefix" => {
                row.booking_event_link_prefix = coerce::string(v, at, n);
                3
            }
            "color" => {
                row.booking_event_color = coerce::string(v, at, n);
                4
            }
            _ => {
                n.extras.insert(at(), v.to_value());
                continue;
            }
        };
        read(present, col::BOOKING[slot], errors, n);
    }
}

/// `latestCall` and its `user`, the host.
fn latest_call(v: &Json<'_>, row: &mut ContactEventRow, present: &mut ColumnSet, n: &mut Notes) {
    const HOST: [usize; 3] = [col::HOST_ID, col::HOST_NAME, col::HOST_EMAIL];
    const ALL: [usize; 5] = [col::CALL_AT, col::CALL_DURATION, HOST[0], HOST[1], HOST[2]];
    let Some(call) = nested(v, "latestCall", present, &ALL, n) else {
        return;
    };
    for (key, v) in call.iter() {
        let errors = n.parse_errors.len();
        let at = || format!("latestCall.{key}");
        match key {
            "dateTime" => {
                row.latest_call_at = coerce::timestamp(v, at, n);
                read(present, col::CALL_AT, errors, n);
            }
            "duration" => {
                row.latest_call_duration_min = coerce::int(v, at, n);
                read(present, col::CALL_DURATION, errors, n);
            }
            "user" => {
                let Some(user) = nested(v, "latestCall.user", present, &HOST, n) else {
                    continue;
                };
                let (mut first, mut last) = (None, None);
                for (key, v) in user.iter() {
                    let errors = n.parse_errors.len();
                    let at = || format!("latestCall.user.{key}");
                    let column = match key {
                        "id" => {
                            row.latest_call_host_id = coerce::int(v, at, n);
                            col::HOST_ID
                        }
                        "firstName" => {
                            first = coerce::string(v, at, n);
                            col::HOST_NAME
                        }
                        "lastName" => {
                            last = coerce::string(v, at, n);
                            col::HOST_NAME
                        }
                        "email" => {
                            row.latest_call_host_email = coerce::string(v, at, n);
                            col::HOST_EMAIL
                        }
                        _ => {
                            n.extras.insert(at(), v.to_value());
                            continue;
                        }
                    };
                    read(present, column, errors, n);
                }
                row.latest_call_host_name = full_name(first, last);
            }
            _ => {
                n.extras.insert(at(), v.to_value());
            }
        }
    }
}

/// A numbered member (`utmKey_3`, `3_response`): its number, which half of a pair it is,
/// its key and its value.
type Numbered<'v, 'a> = (i64, Half, &'v str, &'v Json<'a>);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Half {
    /// `utmKey_N`, `N_question`.
    Name,
    /// `utmValue_N`, `N_response`.
    Value,
}

/// A member: its key and value.
type Member<'v, 'a> = (&'v str, &'v Json<'a>);

/// The pairs of numbered members, by number: for each number, the last name and the last
/// value in key order (what a lookup of the number's key finds), and the members that lost
/// to a later key of the same number (`utmKey_01` before `utmKey_1`), which are not read.
#[allow(clippy::type_complexity)]
fn pairs<'v, 'a>(
    mut members: Vec<Numbered<'v, 'a>>,
) -> (
    Vec<(i64, Option<Member<'v, 'a>>, Option<Member<'v, 'a>>)>,
    Vec<Member<'v, 'a>>,
) {
    // Stable: equal numbers and halves keep key order, so the last of a run is the winner.
    members.sort_by_key(|m| (m.0, m.1));
    let mut out: Vec<(i64, Option<Member>, Option<Member>)> = Vec::new();
    let mut unread = Vec::new();
    for (i, &(number, half, key, value)) in members.iter().enumerate() {
        if members
            .get(i + 1)
            .is_some_and(|next| (next.0, next.1) == (number, half))
        {
            unread.push((key, value));
            continue;
        }
        if out.last().is_none_or(|last| last.0 != number) {
            out.push((number, None, None));
        }
        let last = out.last_mut().expect("pushed above");
        match half {
            Half::Name => last.1 = Some((key, value)),
            Half::Value => last.2 = Some((key, value)),
        }
    }
    (out, unread)
}

/// `tracking`: the last- and first-touch UTM columns, and a `tracking_params` row per
/// numbered `utmKey_N` / `utmValue_N` pair.
fn read_tracking(
    head: &Head,
    v: &Json<'_>,
    row: &mut ContactEventRow,
    present: &mut ColumnSet,
    n: &mut Notes,
    out: &mut Tables,
) {
    const UTM: [&str; 5] = ["source", "medium", "campaign", "term", "content"];
    let Some(tracking) = nested(v, "tracking", present, &col::ALL_UTM, n) else {
        return;
    };
    let (mut last, mut first): ([Option<Text>; 5], [Option<Text>; 5]) = Default::default();
    let mut numbered_members = Vec::new();
    for (key, v) in tracking.iter() {
        let errors = n.parse_errors.len();
        let at = || format!("tracking.{key}");
        if let Some(part) = key.strip_prefix("utm_")
            && let Some(i) = UTM.iter().position(|u| *u == part)
        {
            last[i] = coerce::string(v, at, n);
            read(present, col::UTM[i], errors, n);
        } else if let Some(part) = key.strip_prefix("first_utm_")
            && let Some(i) = UTM.iter().position(|u| *u == part)
        {
            first[i] = coerce::string(v, at, n);
            read(present, col::FIRST_UTM[i], errors, n);
        } else if let Some(number) = numbered(key, "utmKey_", "") {
            numbered_members.push((number, Half::Name, key, v));
        } else if let Some(number) = numbered(key, "utmValue_", "") {
            numbered_members.push((number, Half::Value, key, v));
        } else {
            n.extras.insert(at(), v.to_value());
        }
    }
    [
        row.utm_source,
        row.utm_medium,
        row.utm_campaign,
        row.utm_term,
        row.utm_content,
    ] = last;
    [
        row.first_utm_source,
        row.first_utm_medium,
        row.first_utm_campaign,
        row.first_utm_term,
        row.first_utm_content,
    ] = first;
    let (params, unread) = pairs(numbered_members);
    for (position, key, value) in params {
        out.tracking_params.push(TrackingParamRow {
            event_id: head.event_id.clone(),
            event_type: head.event_type.clone(),
            received_at: head.received_at,
            event_time: row.event_time,
            contact_id: row.contact_id,
            position,
            key: key.and_then(|(k, v)| coerce::string(v, || format!("tracking.{k}"), n)),
            value: value.and_then(|(k, v)| answer_text(v, || format!("tracking.{k}"), n)),
        });
    }
    for (key, v) in unread {
        n.extras.insert(format!("tracking.{key}"), v.to_value());
    }
}

/// `questionsAndAnswers`: a `contact_answers` row per numbered `N_question` / `N_response`
/// pair. iClosed also sends each answer under its question's text; those copies are
/// documented duplicates and dropped, and any other key stays in `extras`.
fn read_answers(head: &Head, v: &Json<'_>, row: &ContactEventRow, n: &mut Notes, out: &mut Tables) {
    let mut ignored = ColumnSet::default();
    let Some(answers) = nested(v, "questionsAndAnswers", &mut ignored, &[], n) else {
        return;
    };
    let mut numbered_members = Vec::new();
    let mut labels = Vec::new();
    for (key, v) in answers.iter() {
        if let Some(number) = numbered(key, "", "_question") {
            numbered_members.push((number, Half::Name, key, v));
        } else if let Some(number) = numbered(key, "", "_response") {
            numbered_members.push((number, Half::Value, key, v));
        } else {
            labels.push((key, v));
        }
    }
    let (pairs, unread) = pairs(numbered_members);
    // A set: a payload may hold thousands of answers and as many labels.
    let mut questions = HashSet::with_capacity(pairs.len());
    for (position, question, response) in pairs {
        let at = |k: &str| format!("questionsAndAnswers.{k}");
        let question = question.and_then(|(k, v)| coerce::string(v, || at(k), n));
        let response = response.and_then(|(k, v)| answer_text(v, || at(k), n));
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
    for (key, v) in labels.into_iter().chain(unread) {
        if !questions.contains(key) {
            n.extras
                .insert(format!("questionsAndAnswers.{key}"), v.to_value());
        }
    }
}

/// A free-text answer: strings as they are, arrays joined with `, `, other scalars as JSON text.
fn answer_text(v: &Json<'_>, path: impl FnOnce() -> String, n: &mut Notes) -> Option<Text> {
    match v {
        Json::Array(items) => Some(
            coerce::item_texts(items)
                .collect::<Vec<_>>()
                .join(", ")
                .into(),
        ),
        _ => coerce::string(v, path, n),
    }
}

/// The elements of a JSON array as strings (non-strings as their JSON text); a single value
/// is a list of one.
fn string_list(v: &Json<'_>) -> Option<Vec<String>> {
    match v {
        Json::Null => None,
        Json::Array(items) => Some(coerce::item_texts(items).collect()),
        Json::String(s) => Some(vec![s.to_string()]),
        _ => Some(vec![v.text()]),
    }
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

/// A set of the columns of [`COLUMN_SOURCES`], one bit per position: the columns a contact
/// payload lacks (`missing_fields`). Change tracking asks about them three times per row, and
/// a bit test instead of a hashed name lookup each time took its stage from 4.1 to 3.6 µs per
/// event (docs/benchmarks.md, Per-stage timings, 2026-11-27).
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

    /// Every column of [`COLUMN_SOURCES`] not in the set.
    pub fn complement(self) -> Self {
        ColumnSet(!self.0 & (u64::MAX >> (64 - COLUMN_SOURCES.len())))
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
    tracking: &mut Obj<'_, '_>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// Flattens `payload` with the member-by-member reader and with the reference, and checks
    /// they give the same rows (parse errors compared as sets: their order differs).
    fn same_as_reference(payload: &Value) {
        let head = Head {
            event_id: "e1".into(),
            event_type: "contact_updated".into(),
            received_at: Micros(1_800_000_000_000_000),
        };
        let options = Options::default();
        let text = payload.to_string();
        let tree = Json::parse(&text).unwrap();
        let (mut ours, mut theirs) = (Tables::default(), Tables::default());
        let a = flatten(&head, tree.as_object().unwrap(), &options, &mut ours);
        let b = reference::flatten(&head, tree.as_object().unwrap(), &options, &mut theirs);
        assert_eq!(a, b, "event time of {text}");
        for row in ours
            .contact_events
            .iter_mut()
            .chain(&mut theirs.contact_events)
        {
            row.parse_errors.sort();
        }
        assert_eq!(ours.contact_events, theirs.contact_events, "{text}");
        assert_eq!(ours.tracking_params, theirs.tracking_params, "{text}");
        assert_eq!(ours.contact_answers, theirs.contact_answers, "{text}");
    }

    /// A small deterministic generator of awkward contact payloads: every mapped key, keys
    /// no column maps, colliding numbered keys, answers under their question's text, and
    /// values of every JSON type (including the strings each coercion accepts).
    struct Awkward(u64);

    impl Awkward {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
        fn scalar(&mut self) -> Value {
            match self.next() % 14 {
                0 => Value::Null,
                1 => json!(self.next() % 1000),
                2 => json!(-3.0),
                3 => json!(2.5),
                4 => json!(self.chance(50)),
                5 => json!(1_773_000_000_000u64),
                6 => json!(["a", 1, null]),
                7 => json!({"k": 1}),
                8 => json!(""),
                9 => json!(" 45 "),
                10 => json!("TRUE"),
                11 => json!("2026-03-06T11:30:00-05:00"),
                12 => json!(self.pick(&["Budget?", "Phone Number", "x@y.co", "é\"q\"\n"])),
                _ => json!(format!("v{}", self.next() % 7)),
            }
        }
        fn object(
            &mut self,
            keys: &[&str],
            nested: impl Fn(&mut Self, &str) -> Option<Value>,
        ) -> Value {
            let mut map = Map::new();
            for key in keys {
                if self.chance(55) {
                    let value = nested(self, key).unwrap_or_else(|| self.scalar());
                    map.insert(key.to_string(), value);
                }
            }
            Value::Object(map)
        }
        /// An object 80% of the time, else any scalar (null included).
        fn maybe_object(
            &mut self,
            keys: &[&str],
            nested: impl Fn(&mut Self, &str) -> Option<Value>,
        ) -> Value {
            if self.chance(80) {
                self.object(keys, nested)
            } else {
                self.scalar()
            }
        }
        fn payload(&mut self) -> Value {
            const ROOT: &[&str] = &[
                "id",
                "accountId",
                "userId",
                "previewId",
                "firstName",
                "lastName",
                "email",
                "phoneNumber",
                "secondary_email",
                "secondary_phoneNumber",
                "status",
                "createdAt",
                "updatedAt",
                "joinedTime",
                "timeZone",
                "country",
                "ipAddress",
                "updatedAttributes",
                "disqualifyingGroup",
                "hookType",
                "event",
                "latestCall",
                "tracking",
                "questionsAndAnswers",
                "unmapped",
                "tracking.gclid",
            ];
            const EVENT: &[&str] = &["id", "name", "eventType", "linkPrefix", "color", "extra"];
            const CALL: &[&str] = &["dateTime", "duration", "user", "extra"];
            const USER: &[&str] = &["id", "firstName", "lastName", "email", "extra"];
            const TRACKING: &[&str] = &[
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "first_utm_source",
                "first_utm_medium",
                "first_utm_campaign",
                "first_utm_term",
                "first_utm_content",
                "utmKey_1",
                "utmValue_1",
                "utmKey_2",
                "utmValue_3",
                "utmKey_01",
                "utmValue_001",
                "utmKey_x",
                "utm_other",
                "gclid",
            ];
            const ANSWERS: &[&str] = &[
                "1_question",
                "1_response",
                "2_question",
                "2_response",
                "01_question",
                "3_response",
                "Budget?",
                "Phone Number",
                "Other label",
            ];
            self.object(ROOT, |g, key| match key {
                "event" => Some(g.maybe_object(EVENT, |_, _| None)),
                "latestCall" => Some(g.maybe_object(CALL, |g, key| {
                    (key == "user").then(|| g.maybe_object(USER, |_, _| None))
                })),
                "tracking" => Some(g.maybe_object(TRACKING, |_, _| None)),
                "questionsAndAnswers" => Some(g.maybe_object(ANSWERS, |_, _| None)),
                "updatedAttributes" if g.chance(50) => Some(json!(["status", "email", 3])),
                _ => None,
            })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn member_by_member_reading_gives_the_reference_rows(seed in 1u64..) {
            same_as_reference(&Awkward(seed).payload());
        }
    }

    #[test]
    fn generated_contacts_and_fixtures_give_the_reference_rows() {
        let generated = crate::generate::in_time_order(crate::generate::Options {
            contacts: 300,
            seed: 5,
            days: 5,
        });
        let mut fixtures = Vec::new();
        for entry in std::fs::read_dir(crate::flatten::tests::payloads_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let value: Value = serde_json::from_str(&text).unwrap();
                fixtures.extend(value.as_array().cloned().unwrap_or_default());
            }
        }
        let contacts: Vec<&Value> = generated
            .iter()
            .chain(&fixtures)
            .filter(|v| {
                v.get("hookType")
                    .and_then(Value::as_str)
                    .is_some_and(|h| h.starts_with("Contact"))
            })
            .collect();
        assert!(contacts.len() > 1000, "{} contacts", contacts.len());
        contacts.into_iter().for_each(same_as_reference);
    }

    #[test]
    fn a_reader_edge_case_each() {
        for payload in [
            json!({}),
            json!({"event": null, "latestCall": {"user": 7}, "tracking": "x"}),
            json!({"tracking": {"utmKey_01": "a", "utmKey_1": "b", "utmValue_1": ["x", 2]}}),
            json!({"questionsAndAnswers": {"1_question": "Q", "Q": "dup", "01_question": "R", "R": 1}}),
            json!({"tracking.utm_source": "top", "tracking": {"zz": 1}, "latestCall": {"user": {"firstName": " ", "lastName": null}}}),
        ] {
            same_as_reference(&payload);
        }
    }

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
