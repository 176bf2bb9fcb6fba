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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::Tables;
use super::table::Micros;
use super::tables::{AttributeChangeRow, ContactEventRow, StatusTransitionRow};

/// Key/value pairs of a contact row: tracking parameters or question/answer pairs.
type Pairs = Vec<(Option<String>, Option<String>)>;

/// Attribute/value pairs taken from a state.
type Attributes = Vec<(String, String)>;

/// The last known snapshot of a contact, as the state store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactState {
    /// Event time of the snapshot, microseconds since the epoch.
    pub event_time_us: i64,
    /// Id of the event the snapshot came from.
    pub event_id: String,
    /// When the current status began (the transition into it, or first sight).
    pub status_since_us: Option<i64>,
    /// Attribute -> value as text; a missing key is null.
    pub values: BTreeMap<String, String>,
    /// Attribute -> event time of the payload that last sent it (set or cleared): a payload
    /// older than that never overwrites it.
    #[serde(default)]
    pub set_at: BTreeMap<String, i64>,
}

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
        let previous = states.get(&call_id);
        let known = previous.and_then(|s| s.start_at_us).map(Micros);
        row.previous_start_at = row.old_start_at.or(known);
        row.slot_start_at = match row.event_type.as_str() {
            "call_cancelled" => known.or(row.start_at),
            _ => row.start_at,
        };
        let late = previous.is_some_and(|s| row.event_time.0 < s.event_time_us);
        if !late && row.event_type != "call_cancelled" && row.start_at.is_some() {
            states.insert(
                call_id,
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

/// The attributes of one contact row (with its tracking parameters and answers) as text.
pub fn snapshot(
    row: &ContactEventRow,
    params: &[(Option<String>, Option<String>)],
    answers: &[(Option<String>, Option<String>)],
) -> BTreeMap<String, String> {
    let fields: [(&str, Option<String>); 36] = [
        ("account_id", row.account_id.map(|v| v.to_string())),
        ("user_id", row.user_id.map(|v| v.to_string())),
        ("preview_id", row.preview_id.clone()),
        ("first_name", row.first_name.clone()),
        ("last_name", row.last_name.clone()),
        ("email", row.email.clone()),
        ("phone_number", row.phone_number.clone()),
        ("secondary_email", row.secondary_email.clone()),
        ("secondary_phone_number", row.secondary_phone_number.clone()),
        ("status", row.status.clone()),
        ("created_at", text_ts(row.created_at)),
        ("joined_time", text_ts(row.joined_time)),
        ("time_zone", row.time_zone.clone()),
        ("country", row.country.clone()),
        ("ip_address", row.ip_address.clone()),
        (
            "booking_event_id",
            row.booking_event_id.map(|v| v.to_string()),
        ),
        ("booking_event_name", row.booking_event_name.clone()),
        ("booking_event_type", row.booking_event_type.clone()),
        (
            "booking_event_link_prefix",
            row.booking_event_link_prefix.clone(),
        ),
        ("booking_event_color", row.booking_event_color.clone()),
        ("utm_source", row.utm_source.clone()),
        ("utm_medium", row.utm_medium.clone()),
        ("utm_campaign", row.utm_campaign.clone()),
        ("utm_term", row.utm_term.clone()),
        ("utm_content", row.utm_content.clone()),
        ("first_utm_source", row.first_utm_source.clone()),
        ("first_utm_medium", row.first_utm_medium.clone()),
        ("first_utm_campaign", row.first_utm_campaign.clone()),
        ("first_utm_term", row.first_utm_term.clone()),
        ("first_utm_content", row.first_utm_content.clone()),
        ("latest_call_at", text_ts(row.latest_call_at)),
        (
            "latest_call_duration_min",
            row.latest_call_duration_min.map(|v| v.to_string()),
        ),
        (
            "latest_call_host_id",
            row.latest_call_host_id.map(|v| v.to_string()),
        ),
        ("latest_call_host_name", row.latest_call_host_name.clone()),
        ("latest_call_host_email", row.latest_call_host_email.clone()),
        ("disqualifying_group", row.disqualifying_group.clone()),
    ];
    let mut values: BTreeMap<String, String> = fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    for (key, value) in params {
        if let (Some(k), Some(v)) = (key, value) {
            values.insert(format!("param:{k}"), v.clone());
        }
    }
    for (question, response) in answers {
        if let (Some(q), Some(r)) = (question, response) {
            values.insert(format!("answer:{q}"), r.clone());
        }
    }
    values
}

/// Computes `attribute_changes` and `status_transitions` for the contact rows in `tables`,
/// advancing `states` (contact id -> state) as it goes.
pub fn track(tables: &mut Tables, states: &mut HashMap<i64, ContactState>) {
    track_with(tables, states, 1);
}

/// [`track`] on `threads` threads: contacts are independent, so each thread takes the contacts
/// whose id falls in its share, with their states. Gives the same rows (in another order) and
/// the same states as one thread.
pub fn track_with(tables: &mut Tables, states: &mut HashMap<i64, ContactState>, threads: usize) {
    let mut params: HashMap<&str, Pairs> = HashMap::new();
    for p in &tables.tracking_params {
        params
            .entry(p.event_id.as_str())
            .or_default()
            .push((p.key.clone(), p.value.clone()));
    }
    let mut answers: HashMap<&str, Pairs> = HashMap::new();
    for a in &tables.contact_answers {
        answers
            .entry(a.event_id.as_str())
            .or_default()
            .push((a.question.clone(), a.response.clone()));
    }
    let threads = threads.max(1);
    if threads == 1 {
        carry(&mut tables.contact_events, states);
        let (changes, transitions) = track_rows(&tables.contact_events, &params, &answers, states);
        tables.attribute_changes = changes;
        tables.status_transitions = transitions;
        return;
    }
    let share = |id: Option<i64>| id.map_or(0, |id| id.rem_euclid(threads as i64) as usize);
    let rows = std::mem::take(&mut tables.contact_events);
    let total = rows.len();
    tables.attribute_changes.clear();
    tables.status_transitions.clear();
    let mut groups: Vec<Share> = (0..threads).map(|_| Default::default()).collect();
    for (i, row) in rows.into_iter().enumerate() {
        let group = &mut groups[share(row.contact_id)];
        group.0.push(i);
        group.1.push(row);
    }
    for (id, state) in states.drain() {
        groups[share(Some(id))].2.insert(id, state);
    }
    let (params, answers) = (&params, &answers);
    let done = crate::parallel::map(groups, |(positions, mut rows, mut group_states)| {
        carry(&mut rows, &group_states);
        let (changes, transitions) = track_rows(&rows, params, answers, &mut group_states);
        (positions, rows, changes, transitions, group_states)
    });
    let mut slots: Vec<Option<ContactEventRow>> = (0..total).map(|_| None).collect();
    for (positions, rows, mut changes, mut transitions, group_states) in done {
        for (i, row) in positions.into_iter().zip(rows) {
            slots[i] = Some(row);
        }
        tables.attribute_changes.append(&mut changes);
        tables.status_transitions.append(&mut transitions);
        states.extend(group_states);
    }
    tables.contact_events = slots.into_iter().flatten().collect();
}

/// One thread's share of a batch: the rows' positions in the batch, the rows, their states.
type Share = (Vec<usize>, Vec<ContactEventRow>, HashMap<i64, ContactState>);

/// The change and transition rows of `rows` (one batch, carried), advancing `states`.
fn track_rows(
    rows: &[ContactEventRow],
    params: &HashMap<&str, Pairs>,
    answers: &HashMap<&str, Pairs>,
    states: &mut HashMap<i64, ContactState>,
) -> (Vec<AttributeChangeRow>, Vec<StatusTransitionRow>) {
    let mut order: Vec<&ContactEventRow> = rows.iter().collect();
    order.sort_by(|a, b| {
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });
    let mut changes = Vec::new();
    let mut transitions = Vec::new();
    for row in order {
        let Some(contact_id) = row.contact_id else {
            continue;
        };
        let empty = Vec::new();
        let mut snap = snapshot(
            row,
            params.get(row.event_id.as_str()).unwrap_or(&empty),
            answers.get(row.event_id.as_str()).unwrap_or(&empty),
        );
        // Absent fields are unchanged: compare with the previous values, never with nothing
        // (late rows are not carried in the table, but are compared the same way).
        if let Some(previous) = states.get(&contact_id) {
            for column in &row.missing_fields {
                let group = match column.as_str() {
                    "contact_answers" => Some("answer:"),
                    "tracking_params" => Some("param:"),
                    _ => None,
                };
                match group {
                    // The group's keys sit together in the sorted map, from the prefix on.
                    Some(prefix) => {
                        let keys = previous
                            .values
                            .range::<str, _>((
                                std::ops::Bound::Included(prefix),
                                std::ops::Bound::Unbounded,
                            ))
                            .take_while(|(k, _)| k.starts_with(prefix));
                        for (key, value) in keys {
                            snap.entry(key.clone()).or_insert_with(|| value.clone());
                        }
                    }
                    None => {
                        if let Some(value) = previous.values.get(column) {
                            snap.entry(column.clone()).or_insert_with(|| value.clone());
                        }
                    }
                }
            }
        }
        let transitioned_at = row.updated_at.unwrap_or(row.event_time);
        let status = snap.get("status").cloned();
        let transition =
            |from: Option<String>, seconds: Option<f64>, late: bool| StatusTransitionRow {
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
        let Some(mut previous) = states.remove(&contact_id) else {
            transitions.push(transition(None, None, false));
            let (values, set_at) = merge(None, row, &snap);
            states.insert(
                contact_id,
                ContactState {
                    event_time_us: row.event_time.0,
                    event_id: row.event_id.clone(),
                    status_since_us: Some(transitioned_at.0),
                    values,
                    set_at,
                },
            );
            continue;
        };
        let late = row.event_time.0 < previous.event_time_us;
        // A null status keeps the status too: a contact always has one.
        if let (None, Some(kept)) = (&status, previous.values.get("status")) {
            snap.insert("status".into(), kept.clone());
        }
        diff(row, &previous.values, &snap, late, &mut changes);
        let old_status = previous.values.get("status").cloned();
        let status_changed = status.is_some() && status != old_status;
        if status_changed {
            let seconds = previous
                .status_since_us
                .map(|since| (transitioned_at.0 - since) as f64 / 1e6);
            transitions.push(transition(old_status, seconds, late));
        }
        let held = (
            std::mem::take(&mut previous.values),
            std::mem::take(&mut previous.set_at),
        );
        let (values, set_at) = merge(Some(held), row, &snap);
        let next = if late {
            // Latest data wins per attribute: the late payload only fills in what no newer
            // payload has sent; the snapshot's time and status history stay.
            ContactState {
                values,
                set_at,
                ..previous
            }
        } else {
            let status_since_us = if status_changed {
                Some(transitioned_at.0)
            } else {
                previous.status_since_us
            };
            ContactState {
                event_time_us: row.event_time.0,
                event_id: row.event_id.clone(),
                status_since_us,
                values,
                set_at,
            }
        };
        states.insert(contact_id, next);
    }
    (changes, transitions)
}

/// The state values after `row`: every attribute the row sent (set, or cleared with null) wins
/// unless a newer payload already sent it; absent attributes keep their values. Takes the
/// previous values and times by value and updates them in place.
fn merge(
    previous: Option<(BTreeMap<String, String>, BTreeMap<String, i64>)>,
    row: &ContactEventRow,
    snap: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, i64>) {
    let t = row.event_time.0;
    let (mut values, mut set_at) = previous.unwrap_or_default();
    let missing_fields: HashSet<&str> = row.missing_fields.iter().map(String::as_str).collect();
    let missing = |name: &str| missing_fields.contains(name);
    let sent = |key: &str| {
        if key.starts_with("answer:") {
            !missing("contact_answers")
        } else if key.starts_with("param:") {
            !missing("tracking_params")
        } else {
            !missing(key)
        }
    };
    let held: Vec<String> = values
        .keys()
        .filter(|k| !snap.contains_key(*k))
        .cloned()
        .collect();
    let mut apply = |key: &str| {
        if key == "contact_answers" || key == "tracking_params" || !sent(key) {
            return;
        }
        // A null status keeps the status: a contact always has one.
        if key == "status" && !snap.contains_key("status") {
            return;
        }
        if set_at.get(key).is_some_and(|&newer| newer > t) {
            return;
        }
        match snap.get(key) {
            Some(v) if values.get(key) != Some(v) => {
                values.insert(key.to_string(), v.clone());
            }
            Some(_) => {}
            None => {
                values.remove(key);
            }
        }
        match set_at.get_mut(key) {
            Some(at) => *at = t,
            None => {
                set_at.insert(key.to_string(), t);
            }
        }
    };
    // Every attribute the row may have sent, once: what it holds, the columns it left null,
    // and the keys the state holds that the row lacks (a group key absent from a sent group
    // was cleared).
    for key in snap.keys() {
        apply(key);
    }
    let columns = contact_columns();
    for key in super::contact::COLUMN_SOURCES
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !snap.contains_key(*c))
    {
        apply(key);
    }
    for key in held.iter().filter(|k| !columns.contains(k.as_str())) {
        apply(key);
    }
    (values, set_at)
}

/// The contact columns a state may hold, as a set.
fn contact_columns() -> &'static HashSet<&'static str> {
    static COLUMNS: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(|| {
        super::contact::COLUMN_SOURCES
            .iter()
            .map(|(c, _)| *c)
            .collect()
    })
}

/// Fills the absent fields of contact rows with the contact's last known values, in event-time
/// order (a batch may hold several events of one contact). Rows older than the state they meet
/// are not carried: the values they would get come from a later snapshot. The values of an
/// earlier row of the batch are only rendered when a later row lacks something.
fn carry(rows: &mut [ContactEventRow], states: &HashMap<i64, ContactState>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });
    // The newest row of each contact so far in this batch: its event time and index.
    let mut latest: HashMap<i64, (i64, usize)> = HashMap::new();
    for i in order {
        let Some(contact_id) = rows[i].contact_id else {
            continue;
        };
        let in_batch = latest.get(&contact_id).copied();
        let known_time = in_batch
            .map(|(t, _)| t)
            .or_else(|| states.get(&contact_id).map(|s| s.event_time_us));
        let current = known_time.is_none_or(|time| rows[i].event_time.0 >= time);
        if !current {
            continue;
        }
        if !rows[i].missing_fields.is_empty() {
            let pick = |values: &BTreeMap<String, String>| -> Attributes {
                rows[i]
                    .missing_fields
                    .iter()
                    .filter_map(|c| values.get(c).map(|v| (c.clone(), v.clone())))
                    .collect()
            };
            let to_set = match in_batch {
                Some((_, j)) => pick(&snapshot(&rows[j], &[], &[])),
                None => states
                    .get(&contact_id)
                    .map(|s| pick(&s.values))
                    .unwrap_or_default(),
            };
            for (column, text) in &to_set {
                set_column(&mut rows[i], column, text);
            }
        }
        latest.insert(contact_id, (rows[i].event_time.0, i));
    }
}

/// Sets a carried column of a contact row from its text form in the state.
fn set_column(row: &mut ContactEventRow, column: &str, text: &str) {
    let s = || Some(text.to_string());
    let i = || text.parse::<i64>().ok();
    let t = || super::reader::parse_timestamp(text);
    match column {
        "account_id" => row.account_id = i(),
        "user_id" => row.user_id = i(),
        "preview_id" => row.preview_id = s(),
        "first_name" => row.first_name = s(),
        "last_name" => row.last_name = s(),
        "email" => row.email = s(),
        "phone_number" => row.phone_number = s(),
        "secondary_email" => row.secondary_email = s(),
        "secondary_phone_number" => row.secondary_phone_number = s(),
        "status" => row.status = s(),
        "created_at" => row.created_at = t(),
        "joined_time" => row.joined_time = t(),
        "time_zone" => row.time_zone = s(),
        "country" => row.country = s(),
        "ip_address" => row.ip_address = s(),
        "booking_event_id" => row.booking_event_id = i(),
        "booking_event_name" => row.booking_event_name = s(),
        "booking_event_type" => row.booking_event_type = s(),
        "booking_event_link_prefix" => row.booking_event_link_prefix = s(),
        "booking_event_color" => row.booking_event_color = s(),
        "utm_source" => row.utm_source = s(),
        "utm_medium" => row.utm_medium = s(),
        "utm_campaign" => row.utm_campaign = s(),
        "utm_term" => row.utm_term = s(),
        "utm_content" => row.utm_content = s(),
        "first_utm_source" => row.first_utm_source = s(),
        "first_utm_medium" => row.first_utm_medium = s(),
        "first_utm_campaign" => row.first_utm_campaign = s(),
        "first_utm_term" => row.first_utm_term = s(),
        "first_utm_content" => row.first_utm_content = s(),
        "latest_call_at" => row.latest_call_at = t(),
        "latest_call_duration_min" => row.latest_call_duration_min = i(),
        "latest_call_host_id" => row.latest_call_host_id = i(),
        "latest_call_host_name" => row.latest_call_host_name = s(),
        "latest_call_host_email" => row.latest_call_host_email = s(),
        "disqualifying_group" => row.disqualifying_group = s(),
        // Groups carried in the state only (their rows are not repeated).
        _ => {}
    }
}

/// Rows for every attribute that differs or was reported.
fn diff(
    row: &ContactEventRow,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
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
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let mut push = |attribute: String,
                    old_value: Option<String>,
                    new_value: Option<String>,
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
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        let detected = o != n;
        let reported = is_reported(key);
        if detected || reported {
            push(key.clone(), o.cloned(), n.cloned(), reported, detected);
        }
        if reported {
            covered.insert(key.as_str());
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
            push(attribute.to_string(), None, None, true, false);
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

    fn run(events: &[Envelope], states: &mut HashMap<i64, ContactState>) -> Tables {
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
            let mut states = HashMap::new();
            let mut seen = Vec::new();
            for batch in [&a, &b] {
                let mut tables = crate::flatten::flatten(batch);
                track_with(&mut tables, &mut states, threads);
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

    /// (attribute, old, new, reported, detected, late)
    type Change = (String, Option<String>, Option<String>, bool, bool, bool);

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

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
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
        let mut states = HashMap::new();
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
        assert_eq!(states[&1].values["status"], "POTENTIAL");
    }

    #[test]
    fn reported_and_detected_changes_are_told_apart() {
        let mut states = HashMap::new();
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
        let mut states = HashMap::new();
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
        assert!(t.status_transitions.iter().all(|r| r.late));
        assert_eq!(states[&1].values["status"], "QUALIFIED");
        // A missing status is neither a transition nor a change, and the status is kept.
        let silent = json!({"id": 1, "previewId": "p", "updatedAt": "2026-01-01T03:00:00Z"});
        let t = run(&[contact(silent, 3)], &mut states);
        assert!(t.status_transitions.is_empty() && t.attribute_changes.is_empty());
        assert_eq!(states[&1].values["status"], "QUALIFIED");
    }

    fn row_of(t: &Tables) -> &ContactEventRow {
        &t.contact_events[0]
    }

    #[test]
    fn absent_fields_are_carried_and_listed_and_change_nothing() {
        let mut states = HashMap::new();
        let full = json!({"id": 1, "previewId": "p", "status": "POTENTIAL", "email": "a@x.io", "firstName": "Ada",
                          "tracking": {"utm_source": "g", "utmKey_1": "fbclid", "utmValue_1": "c1"},
                          "questionsAndAnswers": {"1_question": "Budget", "1_response": "10k"},
                          "updatedAt": "2026-01-01T00:00:00Z"});
        let first = run(&[contact(full, 1)], &mut states);
        assert!(
            row_of(&first)
                .missing_fields
                .contains(&"last_name".to_string()),
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
                row.missing_fields.contains(&column.to_string()),
                "{column}: {:?}",
                row.missing_fields
            );
        }
        assert!(!row.missing_fields.contains(&"status".to_string()));
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
        assert!(!row_of(&t).missing_fields.contains(&"email".to_string()));
        assert_eq!(
            changes(&t),
            vec![("email".into(), s("a@x.io"), None, false, true, false)]
        );
        assert!(t.status_transitions.is_empty());
        assert_eq!(states[&1].values.get("email"), None);
        assert_eq!(states[&1].values["first_name"], "Ada");
        assert_eq!(states[&1].values["answer:Budget"], "10k");
    }

    #[test]
    fn a_late_payload_fills_in_only_what_no_newer_payload_sent() {
        let mut states = HashMap::new();
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
            states[&1].values["email"], "b@x.io",
            "the late payload is the latest that sent an email"
        );
        assert_eq!(
            states[&1].values["status"], "QUALIFIED",
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
        let mut states = HashMap::new();
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
