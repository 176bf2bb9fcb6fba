//! Call objects (booked, cancelled, rescheduled) -> `call_events`.

use serde_json::Value;

use super::contact::{full_name, read_utm};
use super::reader::{Notes, Obj};
use super::table::{Micros, Text};
use super::tables::CallEventRow;
use super::{Head, Tables};
use crate::event::EventType;
use crate::json::{Json, Object};

/// Display-only copies of the slot times (`11:30am - Friday, March 6, 2026`), never parsed.
const PRETTY_TIMES: &[&str] = &[
    "start_time_pretty",
    "end_time_pretty",
    "invitee_start_time_pretty",
    "invitee_end_time_pretty",
];

/// Flattens one call object and returns its event time.
pub(super) fn flatten(head: &Head, kind: EventType, obj: &Object<'_>, out: &mut Tables) -> Micros {
    let mut notes = Notes::default();
    let mut o = Obj::root(obj);
    let mut row = CallEventRow {
        event_id: head.event_id.clone(),
        event_type: head.event_type.clone(),
        received_at: head.received_at,
        hook_type: super::hook_type(&mut o),
        ..Default::default()
    };

    let mut template = o.object("event_type", &mut notes);
    row.event_type_id = template.string("uuid", &mut notes);
    row.event_type_name = template.string("name", &mut notes);
    row.event_type_slug = template.string("slug", &mut notes);
    row.event_type_kind = template.string("kind", &mut notes);
    row.event_type_category = template.string("type", &mut notes);
    let mut owner = template.object("owner", &mut notes);
    row.event_type_owner_type = owner.string("type", &mut notes);
    owner.finish(&mut notes);
    row.duration_min = minutes(&mut template, "duration", "durationUnit", &mut notes);
    template.finish(&mut notes);

    let mut event = o.object("event", &mut notes);
    row.call_id = event.string("uuid", &mut notes);
    row.call_type = event.string("type", &mut notes);
    row.start_at = first_timestamp(&mut event, &["utc_start_time", "start_time"], &mut notes);
    row.end_at = first_timestamp(&mut event, &["utc_end_time", "end_time"], &mut notes);
    row.old_start_at = event.timestamp("old_start_time", &mut notes);
    row.booked_at = event.timestamp("created_at", &mut notes);
    row.canceled = event.boolean("canceled", &mut notes);
    row.canceled_at = event.timestamp("canceled_at", &mut notes);
    row.cancel_reason = event.non_empty_string("cancel_reason", &mut notes);
    row.canceler_name = event.string("canceler_name", &mut notes);
    row.location = event.string("location", &mut notes);
    // The invitee-local slot is the same instant in the invitee's offset: a duplicate when equal.
    skip_if_same_instant(&mut event, "invitee_start_time", row.start_at);
    skip_if_same_instant(&mut event, "invitee_end_time", row.end_at);
    for key in PRETTY_TIMES {
        event.skip(key);
    }
    (row.host_name, row.host_email) = primary_assignee(&mut event, &mut notes);
    let mut setter = event.object("setter", &mut notes);
    row.setter_name = full_name(
        setter.string("firstName", &mut notes),
        setter.string("lastName", &mut notes),
    );
    row.setter_email = setter.string("email", &mut notes);
    setter.finish(&mut notes);
    let event_map = obj.get("event").and_then(Json::as_object);
    event.finish(&mut notes);

    let mut invitee = o.object("invitee", &mut notes);
    row.invitee_id = invitee.string("uuid", &mut notes);
    row.invitee_email = invitee.string("email", &mut notes);
    row.invitee_name = invitee.string("name", &mut notes);
    row.reschedule_reason = invitee.non_empty_string("reschedule_reason", &mut notes);
    row.is_reschedule = invitee.boolean("is_reschedule", &mut notes);
    row.invitee_phone = invitee.string("text_reminder_number", &mut notes);
    if let Some(url) = invitee.string("previewUrl", &mut notes) {
        row.invitee_preview_id = preview_id_from_url(&url);
        if row.invitee_preview_id.is_none() {
            notes
                .extras
                .insert("invitee.previewUrl".into(), Value::String(url.to_string()));
        }
    }
    // iClosed mirrors the cancel fields of `event` on `invitee`; equal copies are duplicates,
    // a copy that differs is kept in extras.
    for key in ["canceled", "canceler_name", "cancel_reason", "canceled_at"] {
        let theirs = event_map.and_then(|e| e.get(key));
        if invitee.peek(key).is_none() || invitee.peek(key) == theirs {
            invitee.skip(key);
        }
    }
    invitee.finish(&mut notes);

    row.answers = o.json("questions_and_responses");
    let mut tracking = o.object("tracking", &mut notes);
    [
        row.utm_source,
        row.utm_medium,
        row.utm_campaign,
        row.utm_term,
        row.utm_content,
    ] = read_utm(&mut tracking, false, &mut notes);
    tracking.finish(&mut notes);

    o.finish(&mut notes);
    row.event_time = match kind {
        EventType::CallCancelled => row.canceled_at,
        EventType::CallRescheduled => None,
        _ => row.booked_at,
    }
    .unwrap_or(head.received_at);
    row.extras = notes.extras_json();
    row.parse_errors = notes.parse_errors;
    let event_time = row.event_time;
    out.call_events.push(row);
    event_time
}

/// A duration in minutes from a number key and a unit key (`MINUTES` or `HOURS`). An unknown
/// unit stays in extras and the number is taken as minutes.
pub(super) fn minutes(
    o: &mut Obj<'_, '_>,
    key: &str,
    unit_key: &str,
    notes: &mut Notes,
) -> Option<i64> {
    let value = o.int(key, notes);
    let unit = o
        .peek(unit_key)
        .and_then(Json::as_str)
        .map(str::to_ascii_uppercase);
    match unit.as_deref() {
        Some("HOURS" | "HOUR") => {
            o.skip(unit_key);
            let minutes = value.and_then(|v| v.checked_mul(60));
            if let (Some(hours), None) = (value, minutes) {
                notes.problem(o.full(key), &format!("{hours} hours do not fit in minutes"));
            }
            minutes
        }
        Some("MINUTES" | "MINUTE") => {
            o.skip(unit_key);
            value
        }
        _ => value,
    }
}

/// The first of `keys` that holds a timestamp. A later key that names the same instant (or
/// is null) is a duplicate, marked read; one that names another instant stays unread, so it
/// is kept in `extras` rather than lost (iClosed's own examples disagree between `utc_*` and
/// the local times).
fn first_timestamp(o: &mut Obj<'_, '_>, keys: &[&str], notes: &mut Notes) -> Option<Micros> {
    let mut found = None;
    for key in keys {
        if found.is_none() {
            found = o.timestamp(key, notes);
            continue;
        }
        if matches!(o.peek(key), Some(Json::Null)) {
            o.skip(key);
        } else {
            skip_if_same_instant(o, key, found);
        }
    }
    found
}

/// Marks `key` read when it names `instant` (the same time, in any offset): a duplicate. A key
/// naming another time stays unread, so it is kept in `extras`.
fn skip_if_same_instant(o: &mut Obj<'_, '_>, key: &str, instant: Option<Micros>) {
    let named = o
        .peek(key)
        .and_then(Json::as_str)
        .and_then(super::reader::parse_timestamp);
    if named.is_some() && named == instant {
        o.skip(key);
    }
}

/// Name and email of the assignee marked `primary`, else of the first one.
///
/// `assigned_to` (number -> name) repeats the names of `extended_assigned_to`; when every name
/// it holds is also in `extended_assigned_to` it is a duplicate and skipped, else it stays in
/// extras.
fn primary_assignee(event: &mut Obj<'_, '_>, notes: &mut Notes) -> (Option<Text>, Option<Text>) {
    // iClosed sends an object keyed by position; a list of the same people is read alike.
    let extended: Option<Vec<&Json>> = match event.peek("extended_assigned_to") {
        Some(Json::Object(map)) => Some(map.iter().map(|(_, v)| v).collect()),
        Some(Json::Array(list)) => Some(list.iter().collect()),
        _ => None,
    };
    let mut chosen: Option<&Object> = None;
    if let Some(values) = extended {
        let count = values.len();
        let people: Vec<&Object> = values.into_iter().filter_map(Json::as_object).collect();
        let is_primary = |p: &&Object| {
            matches!(p.get("primary"), Some(Json::Bool(true)))
                || p.get("primary")
                    .and_then(Json::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case("true"))
        };
        chosen = people
            .iter()
            .find(|p| is_primary(p))
            .or(people.first())
            .copied();
        let names: Vec<&str> = people
            .iter()
            .filter_map(|p| p.get("name").and_then(Json::as_str))
            .collect();
        let short_is_copy = event
            .peek("assigned_to")
            .and_then(Json::as_object)
            .is_some_and(|m| {
                m.iter()
                    .all(|(_, v)| v.as_str().is_some_and(|n| names.contains(&n)))
            });
        if short_is_copy {
            event.skip("assigned_to");
        }
        // Only one person is wholly in the row's host columns; with more, the others would be
        // lost, so the object stays in `extras`.
        let all_plain = count == 1
            && people.len() == count
            && people.iter().all(|p| {
                p.iter()
                    .all(|(k, _)| matches!(k, "name" | "email" | "primary"))
            });
        if all_plain {
            event.skip("extended_assigned_to");
        }
    }
    let Some(person) = chosen else {
        return (None, None);
    };
    let mut p = Obj::root(person);
    (p.string("name", notes), p.string("email", notes))
}

/// The `contact_…` key in a preview URL: the `preview` query value, else a path segment.
pub fn preview_id_from_url(url: &str) -> Option<Text> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let from_query = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "preview" || k == "previewId").then(|| v.into())
    });
    from_query
        .or_else(|| {
            path.rsplit('/')
                .find(|seg| seg.starts_with("contact_"))
                .map(Text::from)
        })
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_ids_from_urls() {
        let check = |url: &str, expected: Option<&str>| {
            assert_eq!(preview_id_from_url(url).as_deref(), expected, "{url}");
        };
        check(
            "https://app.example.com/preview?preview=contact_Vb3nK8wQe2Rt",
            Some("contact_Vb3nK8wQe2Rt"),
        );
        check(
            "https://app.example.com/x?a=1&previewId=contact_a-b_c",
            Some("contact_a-b_c"),
        );
        check(
            "https://app.example.com/contacts/contact_Rt6uW1eYo4Ps",
            Some("contact_Rt6uW1eYo4Ps"),
        );
        check("https://app.example.com/contacts/42", None);
    }

    #[test]
    fn assignees_sent_as_a_list_are_read_like_the_keyed_object() {
        let host = |assigned: serde_json::Value| {
            let body = serde_json::json!({"hookType": "Call booked", "invitee": {},
                "event_type": {"uuid": "1"},
                "event": {"uuid": "c1", "extended_assigned_to": assigned}});
            let e = crate::event::Envelope::parse_one(&body.to_string(), None, 0, "/w").unwrap();
            let t = crate::flatten::flatten(&[e]);
            let row = &t.call_events[0];
            (
                row.host_name.clone(),
                row.host_email.clone(),
                row.extras.clone(),
            )
        };
        let a = serde_json::json!({"name": "A", "email": "a@x.com"});
        let b = serde_json::json!({"name": "B", "email": "b@x.com", "primary": true});
        for assigned in [
            serde_json::json!({"1": a.clone(), "2": b.clone()}),
            serde_json::json!([a.clone(), b.clone()]),
        ] {
            let (name, email, extras) = host(assigned);
            assert_eq!((name, email), (Some("B".into()), Some("b@x.com".into())));
            // The other assignee has no column: the object stays in extras, A included.
            let extras = extras.expect("extras");
            assert!(
                extras.contains("event.extended_assigned_to") && extras.contains("a@x.com"),
                "{extras}"
            );
        }
        // One assignee is wholly in the host columns.
        assert_eq!(
            host(serde_json::json!({"1": b})),
            (Some("B".into()), Some("b@x.com".into()), None)
        );
    }

    #[test]
    fn a_duration_in_hours_too_large_for_minutes_is_an_error() {
        let body = serde_json::json!({"hookType": "Call booked", "invitee": {},
            "event_type": {"uuid": "1", "duration": i64::MAX, "durationUnit": "HOURS"},
            "event": {"uuid": "c1"}});
        let e = crate::event::Envelope::parse_one(&body.to_string(), None, 0, "/w").unwrap();
        let row = crate::flatten::flatten(&[e]).call_events.remove(0);
        assert_eq!(row.duration_min, None);
        assert!(
            row.parse_errors
                .iter()
                .any(|e| e.starts_with("event_type.duration: ")),
            "{:?}",
            row.parse_errors
        );
    }

    #[test]
    fn a_local_time_that_disagrees_with_the_utc_one_is_kept() {
        let row = |start: &str| {
            let body = serde_json::json!({"hookType": "Call booked", "invitee": {},
                "event_type": {"uuid": "1"},
                "event": {"uuid": "c1", "utc_start_time": "2026-03-06T16:30:00+00:00",
                          "start_time": start}});
            let e = crate::event::Envelope::parse_one(&body.to_string(), None, 0, "/w").unwrap();
            crate::flatten::flatten(&[e]).call_events.remove(0)
        };
        // The same instant in another offset: a duplicate.
        let same = row("2026-03-06T11:30:00-05:00");
        assert_eq!(same.extras, None);
        let other = row("2026-03-06T11:30:00+01:00");
        assert_eq!(other.start_at, same.start_at, "utc_start_time wins");
        assert!(
            other
                .extras
                .as_deref()
                .is_some_and(|e| e.contains("event.start_time")),
            "{:?}",
            other.extras
        );
    }
}
