//! The first implementation of contact flattening, kept as the oracle the member-by-member
//! reader in `super` is tested against (see `super::tests`): it asks the parsed object for
//! each key it maps (a lookup per column, another per column to find the missing ones), then
//! moves the keys it did not ask for to `extras`. Slower, and simple enough to trust.

use std::collections::{BTreeMap, HashSet};

use crate::json::{Json, Object};

use super::{COLUMN_SOURCES, ColumnSet, full_name, numbered, quality_flags, read_utm};
use crate::flatten::reader::{Notes, Obj};
use crate::flatten::table::{Micros, Text};
use crate::flatten::tables::{ContactAnswerRow, ContactEventRow, TrackingParamRow};
use crate::flatten::{Head, Options, Tables};

/// Flattens one contact object the way the first implementation did; returns its event time.
pub(crate) fn flatten(
    head: &Head,
    obj: &Object<'_>,
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
        hook_type: crate::flatten::hook_type(&mut o),
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
    row.missing_fields = missing_fields(obj, &notes.parse_errors);
    row.parse_errors = notes.parse_errors;
    row.quality_flags = quality_flags(&row, options);
    let event_time = row.event_time;
    out.contact_events.push(row);
    event_time
}

/// How a column's source path was found in a payload.
#[derive(PartialEq)]
enum Source {
    /// No key on the way.
    Absent,
    /// A non-object on the way, or a value of the wrong type at the end (a parse error names
    /// the path): nothing could be read.
    Unreadable,
    /// A value read as the column's type, or an explicit `null` (at the end or on the way).
    Read,
}

/// How `path` was found, given the value of its first key and the payload's parse errors.
fn source(value: Option<&Json<'_>>, path: &[&str], errors: &[String]) -> Source {
    let Some(mut current) = value else {
        return Source::Absent;
    };
    for key in &path[1..] {
        match current {
            Json::Object(map) => match map.get(key) {
                None => return Source::Absent,
                Some(next) => current = next,
            },
            Json::Null => return Source::Read,
            _ => return Source::Unreadable,
        }
    }
    let dotted = path.join(".");
    let failed = errors.iter().any(|e| {
        e.strip_prefix(dotted.as_str())
            .is_some_and(|rest| rest.starts_with(": "))
    });
    if failed && !matches!(current, Json::Null) {
        Source::Unreadable
    } else {
        Source::Read
    }
}

/// The carried columns none of whose source paths could be read from a contact payload:
/// absent, or holding a value of the wrong type.
fn missing_fields(obj: &Object<'_>, errors: &[String]) -> ColumnSet {
    let mut missing = ColumnSet::default();
    for (position, (_, paths)) in COLUMN_SOURCES.iter().enumerate() {
        if !paths
            .iter()
            .any(|p| source(obj.get(p[0]), p, errors) == Source::Read)
        {
            missing.insert(position);
        }
    }
    missing
}

/// The elements of a JSON array as strings (non-strings as their JSON text).
fn string_list(v: Option<&Json<'_>>) -> Option<Vec<String>> {
    match v? {
        Json::Array(items) => Some(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.text()))
                .collect(),
        ),
        Json::String(s) => Some(vec![s.to_string()]),
        other => Some(vec![other.text()]),
    }
}

fn tracking_params(
    head: &Head,
    row: &ContactEventRow,
    tracking: &mut Obj<'_, '_>,
    notes: &mut Notes,
    out: &mut Tables,
) {
    let mut positions: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for key in tracking.keys() {
        if let Some(n) = numbered(key, "utmKey_", "") {
            positions.entry(n).or_default().0 = key.to_string();
        } else if let Some(n) = numbered(key, "utmValue_", "") {
            positions.entry(n).or_default().1 = key.to_string();
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
    answers: &mut Obj<'_, '_>,
    notes: &mut Notes,
    out: &mut Tables,
) {
    let mut positions: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for key in answers.keys() {
        if let Some(n) = numbered(key, "", "_question") {
            positions.entry(n).or_default().0 = key.to_string();
        } else if let Some(n) = numbered(key, "", "_response") {
            positions.entry(n).or_default().1 = key.to_string();
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
        .filter(|k| questions.contains(*k))
        .map(str::to_string)
        .collect();
    for label in labels {
        answers.skip(&label);
    }
}

/// A free-text answer: strings as they are, arrays joined with `, `, other scalars as JSON text.
fn answer_text(o: &mut Obj<'_, '_>, key: &str, notes: &mut Notes) -> Option<Text> {
    match o.peek(key) {
        Some(Json::Array(items)) => {
            o.skip(key);
            Some(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.text()))
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
            )
        }
        _ => o.string(key, notes),
    }
}
