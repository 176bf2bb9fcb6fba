//! A flush's rows → the facts its triggers fire on, each with its stable `webhook-id`, the row
//! as JSON and the contact's current snapshot; and the body of a fact's request (the default
//! JSON, or the trigger's template).
//! Invariant: pure; a fact's id is a hash of the trigger's name, the table and the row's key
//! columns (`Table::key_columns`, and the contact id), never of when or in which flush it was
//! made.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{CallFact, Direction, On, Trigger, Triggers};
use crate::flatten::table::Table;
use crate::flatten::{
    AttributeChangeRow, CallEventRow, CallOutcomeRow, LeadScoreRow, StatusTransitionRow, Tables,
};

/// A fact a trigger fires on, as the outbox keeps it until it is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// `webhook-id`: `msg_` and 32 hex digits.
    pub webhook_id: String,
    pub trigger: String,
    /// The table of the row: `status_transitions`, `attribute_changes`, `call_events`,
    /// `call_outcomes` or `lead_scores`.
    pub table: String,
    /// Event id and time (microseconds) of the row.
    pub event_id: String,
    pub event_time_us: i64,
    /// The row, its columns by name (timestamps as RFC 3339 text).
    pub row: Value,
    /// The contact's attributes after the flush (`contact_id` and the `contact_events` column
    /// names, `param:<key>`, `answer:<question>`), when the row names a known contact.
    pub contact: Option<Map<String, Value>>,
}

/// How [`facts`] finds a row's contact.
pub trait Contacts {
    /// The contact's current attributes (with `contact_id`).
    fn snapshot(&self, contact_id: i64) -> Option<Map<String, Value>>;
    /// The contact that owns a call key (`p:<preview id>`, `e:<lower-case email>`).
    fn owner(&self, key: &str) -> Option<i64>;
}

/// The facts of `tables`' rows for every trigger, in trigger then row order.
pub fn facts(triggers: &Triggers, tables: &Tables, contacts: &dyn Contacts) -> Vec<Fact> {
    let mut out = Vec::new();
    for t in &triggers.triggers {
        match t.config.on {
            On::Status => collect(t, &tables.status_transitions, contacts, &mut out, |r| {
                (status_matches(t, r), r.contact_id, r.late)
            }),
            On::Attribute => collect(t, &tables.attribute_changes, contacts, &mut out, |r| {
                (attribute_matches(t, r), r.contact_id, r.late)
            }),
            On::Score => collect(t, &tables.lead_scores, contacts, &mut out, |r| {
                (score_matches(t, r), r.contact_id, false)
            }),
            On::Call => {
                collect(t, &tables.call_events, contacts, &mut out, |r| {
                    let owner = call_owner(r, contacts);
                    (call_matches(t, r), owner, false)
                });
                collect(t, &tables.call_outcomes, contacts, &mut out, |r| {
                    (outcome_matches(t, r), outcome_owner(r, contacts), false)
                });
            }
        }
    }
    out
}

/// Appends the facts of `rows` that `test` (match, contact id, late) and the filter pass.
fn collect<T: Table>(
    t: &Trigger,
    rows: &[T],
    contacts: &dyn Contacts,
    out: &mut Vec<Fact>,
    test: impl Fn(&T) -> (bool, Option<i64>, bool),
) {
    let chosen: Vec<(&T, Option<i64>)> = rows
        .iter()
        .filter_map(|r| {
            let (matched, contact, late) = test(r);
            (matched && (t.config.late || !late)).then_some((r, contact))
        })
        .collect();
    if chosen.is_empty() {
        return;
    }
    let refs: Vec<&T> = chosen.iter().map(|(r, _)| *r).collect();
    let json = rows_as_json(&refs);
    for ((row, contact_id), row_json) in chosen.into_iter().zip(json) {
        let contact = contact_id.and_then(|id| contacts.snapshot(id));
        let value = |name: &str| -> Option<String> {
            if let Some(v) = contact.as_ref().and_then(|c| c.get(name)) {
                return text(v);
            }
            row_json.get(name).and_then(text)
        };
        if !t.filter.iter().all(|f| {
            let v = value(f.attribute());
            f.holds(|_| v.as_deref())
        }) {
            continue;
        }
        out.push(Fact {
            webhook_id: webhook_id(&t.config.name, T::NAME, T::key_columns(), &row_json),
            trigger: t.config.name.clone(),
            table: T::NAME.to_string(),
            event_id: row_json
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            event_time_us: row.event_time().0,
            row: Value::Object(row_json),
            contact,
        });
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The rows as JSON objects, every column present (null included).
fn rows_as_json<T: Table>(rows: &[&T]) -> Vec<Map<String, Value>> {
    let batch = T::refs_to_batch(rows);
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    let written = writer.write(&batch).and_then(|()| writer.finish());
    let parsed: Option<Vec<Map<String, Value>>> = written
        .ok()
        .and_then(|()| serde_json::from_slice(&writer.into_inner()).ok());
    // Every column type of the tables has a JSON form; an empty object would only lose the row's
    // text, never the fact.
    parsed.unwrap_or_else(|| vec![Map::new(); rows.len()])
}

/// `msg_` + the first 16 bytes, in hex, of SHA-256 over the trigger, the table, the contact id
/// and the row's key columns.
fn webhook_id(trigger: &str, table: &str, keys: &[&str], row: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    for part in [trigger, table] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for key in std::iter::once(&"contact_id").chain(keys) {
        h.update(key.as_bytes());
        h.update([1]);
        h.update(row.get(*key).unwrap_or(&Value::Null).to_string().as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

fn in_set(set: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match set {
        None => true,
        Some(set) => value.is_some_and(|v| set.iter().any(|s| s.eq_ignore_ascii_case(v))),
    }
}

fn status_matches(t: &Trigger, r: &StatusTransitionRow) -> bool {
    in_set(&t.config.to, r.to_status.as_deref()) && in_set(&t.config.from, r.from_status.as_deref())
}

/// `*` matches any run of characters; everything else itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn attribute_matches(t: &Trigger, r: &AttributeChangeRow) -> bool {
    r.detected
        && t.config
            .attributes
            .as_ref()
            .is_some_and(|names| names.iter().any(|p| glob_matches(p, &r.attribute)))
        && t.config.value.as_ref().is_none_or(|v| {
            r.new_value
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(v))
        })
}

fn score_matches(t: &Trigger, r: &LeadScoreRow) -> bool {
    if let Some(line) = t.config.crosses {
        return match t.config.direction.unwrap_or(Direction::Up) {
            Direction::Up => r.score >= line && r.previous_score.is_none_or(|p| p < line),
            Direction::Down => r.score < line && r.previous_score.is_some_and(|p| p >= line),
        };
    }
    match (&t.config.bands, r.previous_band.as_deref()) {
        (None, None) => false,
        (None, Some(before)) => before != r.band.as_str(),
        (Some(_), before) => {
            before != Some(r.band.as_str()) && in_set(&t.config.bands, Some(&r.band))
        }
    }
}

fn listed(t: &Trigger, kind: CallFact) -> bool {
    t.config.calls.as_ref().is_some_and(|c| c.contains(&kind))
}

fn call_matches(t: &Trigger, r: &CallEventRow) -> bool {
    let kind = match r.event_type.as_str() {
        "call_booked" => CallFact::Booked,
        "call_cancelled" => CallFact::Cancelled,
        "call_rescheduled" => CallFact::Rescheduled,
        _ => return false,
    };
    listed(t, kind)
}

/// An outcome is `held` unless it is a no-show, and `won` when it is a sale, as lead scoring
/// counts them.
fn outcome_matches(t: &Trigger, r: &CallOutcomeRow) -> bool {
    let (no_show, won) = crate::score::outcome_kind(r);
    listed(t, CallFact::Outcome)
        || (no_show && listed(t, CallFact::NoShow))
        || (!no_show && listed(t, CallFact::Held))
        || (won && listed(t, CallFact::Won))
}

/// The contact owning `key`: its id for `c:<id>`, else the owner lead scoring recorded.
fn owner_of(key: &str, contacts: &dyn Contacts) -> Option<i64> {
    match key.strip_prefix("c:") {
        Some(id) => id.parse().ok(),
        None => contacts.owner(key),
    }
}

/// The contact a call is filed under, as lead scoring files it.
fn call_owner(r: &CallEventRow, contacts: &dyn Contacts) -> Option<i64> {
    crate::score::call_key(r.invitee_preview_id.as_deref(), r.invitee_email.as_deref())
        .and_then(|key| owner_of(&key, contacts))
}

/// The contact an outcome is filed under, as lead scoring files it.
fn outcome_owner(r: &CallOutcomeRow, contacts: &dyn Contacts) -> Option<i64> {
    crate::score::outcome_key(r.contact_id, r.contact_email.as_deref())
        .and_then(|key| owner_of(&key, contacts))
}

/// A sample fact for `hooklake triggers test`: a made-up row of the trigger's table (with the
/// first of its listed values) and a made-up contact; its id is `msg_test_` and a random part.
pub fn sample(t: &Trigger) -> Fact {
    use crate::flatten::table::{Micros, Text};
    let now = Micros(chrono::Utc::now().timestamp_micros());
    let first = |v: &Option<Vec<String>>, default: &str| -> Text {
        Text::from(
            v.as_ref()
                .and_then(|v| v.first())
                .map_or(default, String::as_str),
        )
    };
    let event_id = Text::from("sample");
    let (table, row) = match t.config.on {
        On::Status => {
            let r = StatusTransitionRow {
                event_id: event_id.clone(),
                event_type: Text::from("contact_status_updated"),
                received_at: now,
                event_time: now,
                contact_id: Some(1),
                from_status: Some(first(&t.config.from, "NEW")),
                to_status: Some(first(&t.config.to, "QUALIFIED")),
                transitioned_at: now,
                ..Default::default()
            };
            (StatusTransitionRow::NAME, rows_as_json(&[&r]))
        }
        On::Attribute => {
            let attribute = first(&t.config.attributes, "email").replace('*', "sample");
            let r = AttributeChangeRow {
                event_id: event_id.clone(),
                event_type: Text::from("contact_updated"),
                received_at: now,
                event_time: now,
                contact_id: Some(1),
                attribute: Text::from(attribute),
                old_value: Some(Text::from("before")),
                new_value: Some(Text::from(t.config.value.as_deref().unwrap_or("after"))),
                detected: true,
                ..Default::default()
            };
            (AttributeChangeRow::NAME, rows_as_json(&[&r]))
        }
        On::Call => {
            let kind = t.config.calls.as_ref().and_then(|c| c.first().copied());
            match kind {
                Some(CallFact::Booked | CallFact::Cancelled | CallFact::Rescheduled) | None => {
                    let event_type = match kind {
                        Some(CallFact::Cancelled) => "call_cancelled",
                        Some(CallFact::Rescheduled) => "call_rescheduled",
                        _ => "call_booked",
                    };
                    let r = CallEventRow {
                        event_id: event_id.clone(),
                        event_type: Text::from(event_type),
                        received_at: now,
                        event_time: now,
                        invitee_email: Some(Text::from("sample@example.com")),
                        ..Default::default()
                    };
                    (CallEventRow::NAME, rows_as_json(&[&r]))
                }
                Some(other) => {
                    let (outcome, reason) = match other {
                        CallFact::NoShow => ("NO_SALE", Some("NO_SHOW")),
                        CallFact::Won => ("SALE", None),
                        _ => ("NO_SALE", Some("NOT_A_FIT")),
                    };
                    let r = CallOutcomeRow {
                        event_id: event_id.clone(),
                        event_type: Text::from("call_outcome"),
                        received_at: now,
                        event_time: now,
                        contact_id: Some(1),
                        outcome: Some(Text::from(outcome)),
                        no_sale_reason: reason.map(Text::from),
                        ..Default::default()
                    };
                    (CallOutcomeRow::NAME, rows_as_json(&[&r]))
                }
            }
        }
        On::Score => {
            let line = t.config.crosses.unwrap_or(60);
            let down = t.config.direction == Some(Direction::Down);
            let r = LeadScoreRow {
                event_id: event_id.clone(),
                event_type: Text::from("contact_updated"),
                received_at: now,
                event_time: now,
                contact_id: Some(1),
                revision: 2,
                score: if down { line - 5 } else { line + 5 },
                previous_score: Some(if down { line + 5 } else { line - 5 }),
                band: first(&t.config.bands, "hot"),
                previous_band: Some(Text::from("warm")),
                last_activity_at: now,
                ..Default::default()
            };
            (LeadScoreRow::NAME, rows_as_json(&[&r]))
        }
    };
    let mut contact = Map::new();
    contact.insert("contact_id".into(), 1.into());
    contact.insert("email".into(), "sample@example.com".into());
    contact.insert("first_name".into(), "Sample".into());
    contact.insert("status".into(), "QUALIFIED".into());
    Fact {
        webhook_id: format!("msg_test_{}", uuid::Uuid::new_v4().simple()),
        trigger: t.config.name.clone(),
        table: table.to_string(),
        event_id: event_id.to_string(),
        event_time_us: now.0,
        row: Value::Object(row.into_iter().next().unwrap_or_default()),
        contact: Some(contact),
    }
}

/// The environment bodies are rendered in: no auto-escaping (bodies are JSON or text, and
/// `tojson` escapes a value for JSON).
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Parses a body template, or says why it cannot be.
pub fn check_template(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The request body of `fact` for `trigger`: its template rendered with `trigger`,
/// `webhook_id`, `type`, `timestamp`, `fact` (the row) and `contact`; without a template,
/// `{"type", "trigger", "webhook_id", "timestamp", "data": row, "contact"}` as JSON.
pub fn body(trigger: &Trigger, fact: &Fact) -> Result<Vec<u8>, String> {
    let timestamp = chrono::DateTime::from_timestamp_micros(fact.event_time_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let context = serde_json::json!({
        "type": fact.table,
        "trigger": fact.trigger,
        "webhook_id": fact.webhook_id,
        "timestamp": timestamp,
        "data": fact.row,
        "contact": fact.contact,
    });
    match &trigger.config.body {
        None => serde_json::to_vec(&context).map_err(|e| e.to_string()),
        Some(source) => {
            let mut ctx = context;
            ctx["fact"] = fact.row.clone();
            environment()
                .render_str(source, minijinja::value::Serde(&ctx))
                .map(String::into_bytes)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::flatten::table::{Micros, Text};
    use crate::trigger::tests::parse;

    struct Known(HashMap<i64, Map<String, Value>>, HashMap<String, i64>);
    impl Contacts for Known {
        fn snapshot(&self, id: i64) -> Option<Map<String, Value>> {
            self.0.get(&id).cloned()
        }
        fn owner(&self, key: &str) -> Option<i64> {
            self.1.get(key).copied()
        }
    }

    fn known() -> Known {
        let mut c = HashMap::new();
        for (id, source) in [(1, "google"), (2, "facebook")] {
            let mut m = Map::new();
            m.insert("contact_id".into(), id.into());
            m.insert("utm_source".into(), source.into());
            m.insert("email".into(), format!("c{id}@example.com").into());
            c.insert(id, m);
        }
        Known(c, HashMap::from([("e:c2@example.com".to_string(), 2)]))
    }

    fn transition(
        id: i64,
        event: &str,
        from: Option<&str>,
        to: &str,
        late: bool,
    ) -> StatusTransitionRow {
        StatusTransitionRow {
            event_id: Text::from(event),
            event_type: Text::from("contact_updated"),
            event_time: Micros(1_700_000_000_000_000),
            contact_id: Some(id),
            from_status: from.map(Text::from),
            to_status: Some(Text::from(to)),
            late,
            ..Default::default()
        }
    }

    #[test]
    fn status_facts_match_the_sets_the_filter_and_the_late_setting() {
        let triggers = Triggers::new(&parse(
            r#"
            [[triggers]]
            name = "qualified-google"
            on = "status"
            to = ["qualified"]
            url = "http://127.0.0.1:1/"
            [[triggers.filter]]
            attribute = "utm_source"
            in = ["google"]

            [[triggers]]
            name = "any-late-too"
            on = "status"
            from = ["NEW"]
            url = "http://127.0.0.1:1/"
            late = true
            "#,
        ))
        .unwrap();
        let tables = Tables {
            status_transitions: vec![
                transition(1, "a", Some("NEW"), "QUALIFIED", false),
                transition(2, "b", Some("NEW"), "QUALIFIED", false),
                transition(1, "c", None, "QUALIFIED", false),
                transition(1, "d", Some("NEW"), "QUALIFIED", true),
            ],
            ..Default::default()
        };
        let facts = facts(&triggers, &tables, &known());
        let got: Vec<(&str, &str)> = facts
            .iter()
            .map(|f| (f.trigger.as_str(), f.event_id.as_str()))
            .collect();
        // Contact 2 came from facebook; "d" is late; "c" has no from status.
        assert_eq!(
            got,
            [
                ("qualified-google", "a"),
                ("qualified-google", "c"),
                ("any-late-too", "a"),
                ("any-late-too", "b"),
                ("any-late-too", "d"),
            ]
        );
        let f = &facts[0];
        assert_eq!(f.row["to_status"], "QUALIFIED");
        assert_eq!(f.row["from_status"], "NEW");
        assert!(f.row["first_utm_source"].is_null());
        assert_eq!(f.contact.as_ref().unwrap()["email"], "c1@example.com");
        // Ids: stable for the same trigger and row, different across triggers and rows.
        assert!(f.webhook_id.starts_with("msg_") && f.webhook_id.len() == 36);
        let again = super::facts(&triggers, &tables, &known());
        assert_eq!(again[0].webhook_id, f.webhook_id);
        let ids: std::collections::BTreeSet<&str> =
            facts.iter().map(|f| f.webhook_id.as_str()).collect();
        assert_eq!(ids.len(), facts.len());
    }

    #[test]
    fn attribute_call_and_score_facts() {
        let triggers = Triggers::new(&parse(
            r#"
            [[triggers]]
            name = "utm"
            on = "attribute"
            attributes = ["utm_*"]
            url = "http://127.0.0.1:1/"

            [[triggers]]
            name = "calls"
            on = "call"
            calls = ["booked", "no_show", "won"]
            url = "http://127.0.0.1:1/"
            [[triggers.filter]]
            attribute = "utm_source"
            equals = "facebook"

            [[triggers]]
            name = "hot"
            on = "score"
            bands = ["hot"]
            url = "http://127.0.0.1:1/"

            [[triggers]]
            name = "sixty-down"
            on = "score"
            crosses = 60
            direction = "down"
            url = "http://127.0.0.1:1/"
            "#,
        ))
        .unwrap();
        let change = |event: &str, attribute: &str, detected: bool| AttributeChangeRow {
            event_id: Text::from(event),
            contact_id: Some(1),
            attribute: Text::from(attribute),
            new_value: Some(Text::from("x")),
            detected,
            ..Default::default()
        };
        let call = |event: &str, kind: &str, email: &str| CallEventRow {
            event_id: Text::from(event),
            event_type: Text::from(kind),
            invitee_email: Some(Text::from(email)),
            ..Default::default()
        };
        let outcome = |event: &str, outcome: &str, reason: Option<&str>| CallOutcomeRow {
            event_id: Text::from(event),
            contact_id: Some(2),
            outcome: Some(Text::from(outcome)),
            no_sale_reason: reason.map(Text::from),
            ..Default::default()
        };
        let score = |event: &str, before: Option<(i64, &str)>, after: (i64, &str)| LeadScoreRow {
            event_id: Text::from(event),
            contact_id: Some(1),
            previous_score: before.map(|b| b.0),
            previous_band: before.map(|b| Text::from(b.1)),
            score: after.0,
            band: Text::from(after.1),
            ..Default::default()
        };
        let tables = Tables {
            attribute_changes: vec![
                change("a1", "utm_source", true),
                change("a2", "utm_campaign", false),
                change("a3", "email", true),
            ],
            call_events: vec![
                call("c1", "call_booked", "C2@example.com"),
                call("c2", "call_cancelled", "c2@example.com"),
                call("c3", "call_booked", "nobody@example.com"),
            ],
            call_outcomes: vec![
                outcome("o1", "NO_SALE", Some("NO_SHOW")),
                outcome("o2", "SALE", None),
                outcome("o3", "NO_SALE", Some("PRICE")),
            ],
            lead_scores: vec![
                score("s1", None, (70, "hot")),
                score("s2", Some((50, "warm")), (65, "hot")),
                score("s3", Some((65, "hot")), (55, "warm")),
                score("s4", Some((70, "hot")), (75, "hot")),
            ],
            ..Default::default()
        };
        let got: Vec<(String, String)> = facts(&triggers, &tables, &known())
            .into_iter()
            .map(|f| (f.trigger, f.event_id))
            .collect();
        let want: Vec<(String, String)> = [
            ("utm", "a1"),
            // c3's invitee is no known contact, so the filter finds no utm_source.
            ("calls", "c1"),
            ("calls", "o1"),
            ("calls", "o2"),
            ("hot", "s1"),
            ("hot", "s2"),
            ("sixty-down", "s3"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bodies_are_the_fact_as_json_or_the_rendered_template() {
        let triggers = Triggers::new(&parse(
            r#"
            [[triggers]]
            name = "plain"
            on = "status"
            url = "http://127.0.0.1:1/"

            [[triggers]]
            name = "slack"
            on = "status"
            url = "http://127.0.0.1:1/"
            body = '{"text": {{ (contact.email ~ " is " ~ fact.to_status ~ " \"now\"") | tojson }}}'
            "#,
        ))
        .unwrap();
        let tables = Tables {
            status_transitions: vec![transition(1, "a", Some("NEW"), "QUALIFIED", false)],
            ..Default::default()
        };
        let facts = facts(&triggers, &tables, &known());
        let plain: Value =
            serde_json::from_slice(&body(&triggers.triggers[0], &facts[0]).unwrap()).unwrap();
        assert_eq!(plain["type"], "status_transitions");
        assert_eq!(plain["trigger"], "plain");
        assert_eq!(plain["webhook_id"], facts[0].webhook_id.as_str());
        assert_eq!(plain["data"]["contact_id"], 1);
        assert_eq!(plain["contact"]["utm_source"], "google");
        assert_eq!(plain["timestamp"], "2023-11-14T22:13:20.000000Z");
        let slack: Value =
            serde_json::from_slice(&body(&triggers.triggers[1], &facts[1]).unwrap()).unwrap();
        assert_eq!(
            slack,
            serde_json::json!({"text": "c1@example.com is QUALIFIED \"now\""})
        );
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("utm_*", "utm_source", true),
            ("utm_*", "first_utm_source", false),
            ("*source", "first_utm_source", true),
            ("param:*", "param:gclid", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXc", false),
            ("email", "email", true),
            ("email", "emails", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_matches(p, n), want, "{p} {n}");
        }
    }
}
