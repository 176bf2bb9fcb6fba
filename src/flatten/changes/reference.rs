//! The first implementation of contact change tracking, kept as the oracle the current one is
//! checked against (`tracking_matches_the_first_implementation`): every attribute as text in
//! `BTreeMap`s, one snapshot map per row. Correct and simple, but a map lookup or insert for every
//! attribute of every row made it a third of a replay's time. It is a copy on purpose, sharing
//! only the tables and small helpers the two have always shared: an oracle that calls the code
//! it checks checks nothing of it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{REPORTED_NAMES, matches, set_column, slot, text_ts};
use crate::flatten::Tables;
use crate::flatten::table::Text;
use crate::flatten::tables::{AttributeChangeRow, ContactEventRow, StatusTransitionRow};

/// A row's text as the first implementation had it.
fn text(v: &Option<Text>) -> Option<String> {
    v.as_deref().map(String::from)
}

/// Key/value pairs of a contact row: tracking parameters or question/answer pairs.
type Pairs = Vec<(Option<String>, Option<String>)>;

/// Attribute/value pairs taken from a state.
type Attributes = Vec<(String, String)>;

/// The last known snapshot of a contact, as the state store keeps it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RefState {
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
/// The attributes of one contact row (with its tracking parameters and answers) as text.
fn snapshot(
    row: &ContactEventRow,
    params: &[(Option<String>, Option<String>)],
    answers: &[(Option<String>, Option<String>)],
) -> BTreeMap<String, String> {
    let fields: [(&str, Option<String>); 36] = [
        ("account_id", row.account_id.map(|v| v.to_string())),
        ("user_id", row.user_id.map(|v| v.to_string())),
        ("preview_id", text(&row.preview_id)),
        ("first_name", text(&row.first_name)),
        ("last_name", text(&row.last_name)),
        ("email", text(&row.email)),
        ("phone_number", text(&row.phone_number)),
        ("secondary_email", text(&row.secondary_email)),
        ("secondary_phone_number", text(&row.secondary_phone_number)),
        ("status", text(&row.status)),
        ("created_at", text_ts(row.created_at)),
        ("joined_time", text_ts(row.joined_time)),
        ("time_zone", text(&row.time_zone)),
        ("country", text(&row.country)),
        ("ip_address", text(&row.ip_address)),
        (
            "booking_event_id",
            row.booking_event_id.map(|v| v.to_string()),
        ),
        ("booking_event_name", text(&row.booking_event_name)),
        ("booking_event_type", text(&row.booking_event_type)),
        (
            "booking_event_link_prefix",
            text(&row.booking_event_link_prefix),
        ),
        ("booking_event_color", text(&row.booking_event_color)),
        ("utm_source", text(&row.utm_source)),
        ("utm_medium", text(&row.utm_medium)),
        ("utm_campaign", text(&row.utm_campaign)),
        ("utm_term", text(&row.utm_term)),
        ("utm_content", text(&row.utm_content)),
        ("first_utm_source", text(&row.first_utm_source)),
        ("first_utm_medium", text(&row.first_utm_medium)),
        ("first_utm_campaign", text(&row.first_utm_campaign)),
        ("first_utm_term", text(&row.first_utm_term)),
        ("first_utm_content", text(&row.first_utm_content)),
        ("latest_call_at", text_ts(row.latest_call_at)),
        (
            "latest_call_duration_min",
            row.latest_call_duration_min.map(|v| v.to_string()),
        ),
        (
            "latest_call_host_id",
            row.latest_call_host_id.map(|v| v.to_string()),
        ),
        ("latest_call_host_name", text(&row.latest_call_host_name)),
        ("latest_call_host_email", text(&row.latest_call_host_email)),
        ("disqualifying_group", text(&row.disqualifying_group)),
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
pub fn track(tables: &mut Tables, states: &mut HashMap<i64, RefState>) {
    let mut params: HashMap<&str, Pairs> = HashMap::new();
    for p in &tables.tracking_params {
        params
            .entry(p.event_id.as_str())
            .or_default()
            .push((text(&p.key), text(&p.value)));
    }
    let mut answers: HashMap<&str, Pairs> = HashMap::new();
    for a in &tables.contact_answers {
        answers
            .entry(a.event_id.as_str())
            .or_default()
            .push((text(&a.question), text(&a.response)));
    }
    let mut rows = std::mem::take(&mut tables.contact_events);
    let (changes, transitions) = track_rows(&mut rows, &params, &answers, states);
    tables.contact_events = rows;
    tables.attribute_changes = changes;
    tables.status_transitions = transitions;
}
/// The change and transition rows of `rows` (one batch), advancing `states`; each row not older
/// than its contact's state is carried from that state just before it is applied.
fn track_rows(
    rows: &mut [ContactEventRow],
    params: &HashMap<&str, Pairs>,
    answers: &HashMap<&str, Pairs>,
    states: &mut HashMap<i64, RefState>,
) -> (Vec<AttributeChangeRow>, Vec<StatusTransitionRow>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });
    let mut changes = Vec::new();
    let mut transitions = Vec::new();
    for i in order {
        let Some(contact_id) = rows[i].contact_id else {
            continue;
        };
        if let Some(state) = states.get(&contact_id) {
            carry(&mut rows[i], state);
        }
        let row = &rows[i];
        let empty = Vec::new();
        let mut snap = snapshot(
            row,
            params.get(row.event_id.as_str()).unwrap_or(&empty),
            answers.get(row.event_id.as_str()).unwrap_or(&empty),
        );
        // Absent fields are unchanged: compare with the previous values, never with nothing
        // (late rows are not carried in the table, but are compared the same way).
        if let Some(previous) = states.get(&contact_id) {
            for column in row.missing_fields.names() {
                let group = match column {
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
                            snap.entry(column.to_string())
                                .or_insert_with(|| value.clone());
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
                from_status: from.map(Text::from),
                to_status: status.as_deref().map(Text::from),
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
                RefState {
                    event_time_us: row.event_time.0,
                    event_id: row.event_id.to_string(),
                    status_since_us: status.as_ref().map(|_| transitioned_at.0),
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
                .filter(|&since| old_status.is_some() && since <= transitioned_at.0)
                .map(|since| (transitioned_at.0 - since) as f64 / 1e6);
            transitions.push(transition(old_status.clone(), seconds, late));
        }
        let held = (
            std::mem::take(&mut previous.values),
            std::mem::take(&mut previous.set_at),
        );
        let (values, set_at) = merge(Some(held), row, &snap);
        let next = if late {
            // Latest data wins per attribute: the late payload only fills in what no newer
            // payload has sent; the snapshot's time stays, and a status that won began with it.
            let status_since_us = if values.get("status") != old_status.as_ref() {
                Some(transitioned_at.0)
            } else {
                previous.status_since_us
            };
            RefState {
                values,
                set_at,
                status_since_us,
                ..previous
            }
        } else {
            let status_since_us = if status_changed {
                Some(transitioned_at.0)
            } else {
                previous.status_since_us
            };
            RefState {
                event_time_us: row.event_time.0,
                event_id: row.event_id.to_string(),
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
    let missing_fields: HashSet<&str> = row.missing_fields.names().collect();
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
    for key in crate::flatten::contact::COLUMN_SOURCES
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
        crate::flatten::contact::COLUMN_SOURCES
            .iter()
            .map(|(c, _)| *c)
            .collect()
    })
}

/// Fills the absent single-valued fields of `row` with its contact's values in `state`, unless
/// the row is older than the state.
fn carry(row: &mut ContactEventRow, state: &RefState) {
    if row.event_time.0 < state.event_time_us {
        return;
    }
    let to_set: Attributes = row
        .missing_fields
        .names()
        .filter_map(|c| state.values.get(c).map(|v| (c.to_string(), v.clone())))
        .collect();
    for (column, text) in &to_set {
        if let Some(slot) = slot(column) {
            set_column(row, slot, text);
        }
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
            attribute: attribute.into(),
            old_value: old_value.map(Text::from),
            new_value: new_value.map(Text::from),
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
