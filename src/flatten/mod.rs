//! Flattening: accepted events -> rows of every table.
//!
//! [`flatten`] turns a batch of [`Envelope`]s into [`Tables`]: one `raw_events` row per event,
//! plus the typed rows of its family (contact, call, outcome). Invariant: flattening is pure,
//! synchronous and total: no I/O, no panics on any JSON object, and every event yields its raw
//! row; a value that cannot be read becomes null and a `parse_errors` entry, never a lost event.
//! Later stages (change tracking) plug in here with a per-contact state lookup.

mod call;
pub mod changes;
mod contact;
pub mod docs;
mod outcome;
pub mod reader;
pub mod table;
pub mod tables;

use crate::event::{Envelope, EventType, Family};
use crate::json::{self, Json};
pub use call::preview_id_from_url;
pub use contact::ColumnSet;
use reader::Obj;
use table::{Micros, Table, Text};
pub use tables::{
    AttributeChangeRow, CallEventRow, CallOutcomeRow, ContactAnswerRow, ContactEventRow,
    LeadScoreRow, RawEventRow, RejectedEventRow, StatusTransitionRow, TrackingParamRow,
    TriggerDeliveryRow,
};

/// The rows made from a batch of events, one vector per table.
#[derive(Debug, Default)]
pub struct Tables {
    pub contact_events: Vec<ContactEventRow>,
    pub tracking_params: Vec<TrackingParamRow>,
    pub contact_answers: Vec<ContactAnswerRow>,
    pub call_events: Vec<CallEventRow>,
    pub call_outcomes: Vec<CallOutcomeRow>,
    pub raw_events: Vec<RawEventRow>,
    /// Filled by [`changes::track`], which needs the contacts' previous states.
    pub attribute_changes: Vec<AttributeChangeRow>,
    pub status_transitions: Vec<StatusTransitionRow>,
    /// One row per dead letter, see [`rejected_row`].
    pub rejected_events: Vec<RejectedEventRow>,
    /// Filled by [`crate::score::apply`], after change tracking.
    pub lead_scores: Vec<LeadScoreRow>,
    /// Delivery attempts of workflow triggers, recorded since the last flush
    /// (`src/trigger/deliver.rs`).
    pub trigger_deliveries: Vec<TriggerDeliveryRow>,
}

impl Tables {
    /// Moves every row of `other` after this batch's rows.
    pub fn append(&mut self, mut other: Tables) {
        self.contact_events.append(&mut other.contact_events);
        self.tracking_params.append(&mut other.tracking_params);
        self.contact_answers.append(&mut other.contact_answers);
        self.call_events.append(&mut other.call_events);
        self.call_outcomes.append(&mut other.call_outcomes);
        self.raw_events.append(&mut other.raw_events);
        self.attribute_changes.append(&mut other.attribute_changes);
        self.status_transitions
            .append(&mut other.status_transitions);
        self.rejected_events.append(&mut other.rejected_events);
        self.lead_scores.append(&mut other.lead_scores);
        self.trigger_deliveries
            .append(&mut other.trigger_deliveries);
    }

    /// Rows per table, in table order.
    pub fn row_counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            (ContactEventRow::NAME, self.contact_events.len()),
            (TrackingParamRow::NAME, self.tracking_params.len()),
            (ContactAnswerRow::NAME, self.contact_answers.len()),
            (CallEventRow::NAME, self.call_events.len()),
            (CallOutcomeRow::NAME, self.call_outcomes.len()),
            (RawEventRow::NAME, self.raw_events.len()),
            (AttributeChangeRow::NAME, self.attribute_changes.len()),
            (StatusTransitionRow::NAME, self.status_transitions.len()),
            (RejectedEventRow::NAME, self.rejected_events.len()),
            (LeadScoreRow::NAME, self.lead_scores.len()),
            (TriggerDeliveryRow::NAME, self.trigger_deliveries.len()),
        ]
    }

    /// Number of values that failed to parse, over all typed rows.
    pub fn parse_error_count(&self) -> usize {
        self.contact_events
            .iter()
            .map(|r| r.parse_errors.len())
            .sum::<usize>()
            + self
                .call_events
                .iter()
                .map(|r| r.parse_errors.len())
                .sum::<usize>()
            + self
                .call_outcomes
                .iter()
                .map(|r| r.parse_errors.len())
                .sum::<usize>()
    }
}

/// Every table's directory name, in pipeline order.
pub const TABLE_NAMES: [&str; 11] = [
    "contact_events",
    "tracking_params",
    "contact_answers",
    "call_events",
    "call_outcomes",
    "raw_events",
    "attribute_changes",
    "status_transitions",
    "rejected_events",
    "lead_scores",
    "trigger_deliveries",
];

/// `$f::<Row>()` for every table's row type, in pipeline order.
macro_rules! for_each_table {
    ($f:ident) => {
        vec![
            $f::<ContactEventRow>(),
            $f::<TrackingParamRow>(),
            $f::<ContactAnswerRow>(),
            $f::<CallEventRow>(),
            $f::<CallOutcomeRow>(),
            $f::<RawEventRow>(),
            $f::<AttributeChangeRow>(),
            $f::<StatusTransitionRow>(),
            $f::<RejectedEventRow>(),
            $f::<LeadScoreRow>(),
            $f::<TriggerDeliveryRow>(),
        ]
    };
}

/// Names and documentation of every table, in pipeline order (used for `docs/tables.md`).
pub fn table_docs() -> Vec<(&'static str, &'static str, Vec<table::ColumnDoc>)> {
    fn doc<T: Table>() -> (&'static str, &'static str, Vec<table::ColumnDoc>) {
        (T::NAME, T::description(), T::columns())
    }
    for_each_table!(doc)
}

/// Every table's name and Arrow schema, in pipeline order.
pub fn table_schemas() -> Vec<(&'static str, arrow_schema::SchemaRef)> {
    fn schema<T: Table>() -> (&'static str, arrow_schema::SchemaRef) {
        (T::NAME, T::schema())
    }
    for_each_table!(schema)
}

/// The columns every row of an event shares.
pub(crate) struct Head {
    event_id: Text,
    event_type: Text,
    received_at: Micros,
}

/// Settings flattening depends on.
#[derive(Debug, Clone)]
pub struct Options {
    /// Statuses that are not flagged `status_unknown` (compared case-insensitively).
    pub known_statuses: Vec<String>,
    /// Threads a large batch is flattened on.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            known_statuses: crate::config::DEFAULT_KNOWN_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            threads: 1,
        }
    }
}

/// Flattens a batch of events into rows of every table, with default options.
pub fn flatten(events: &[Envelope]) -> Tables {
    flatten_with(events, &Options::default())
}

/// Flattens a batch of events into rows of every table.
pub fn flatten_with(events: &[Envelope], options: &Options) -> Tables {
    // Large batches (a flush) are split in as many parts as `options.threads`, flattened side
    // by side; the rows come out in the same order as one pass would give.
    const SPLIT_ABOVE: usize = 4096;
    // Every event makes a raw row, and most make a contact row: sized once rather than by
    // doubling, since a contact row is over a kilobyte and each doubling copies them all. The
    // first part has room for the whole batch, which the other parts are appended to.
    let one_pass = |(events, room): (&[Envelope], usize)| {
        let mut out = Tables {
            contact_events: Vec::with_capacity(room),
            raw_events: Vec::with_capacity(room),
            ..Tables::default()
        };
        for envelope in events {
            flatten_one(envelope, options, &mut out);
        }
        out
    };
    let threads = options.threads.max(1);
    if threads == 1 || events.len() <= SPLIT_ABOVE {
        return one_pass((events, events.len()));
    }
    let chunks: Vec<(&[Envelope], usize)> = events
        .chunks(events.len().div_ceil(threads))
        .enumerate()
        .map(|(i, chunk)| (chunk, if i == 0 { events.len() } else { chunk.len() }))
        .collect();
    let parts = crate::parallel::map(chunks, one_pass);
    let mut parts = parts.into_iter();
    let mut out = parts.next().unwrap_or_default();
    for part in parts {
        out.append(part);
    }
    out
}

/// Flattens one event into `out`.
pub fn flatten_one(envelope: &Envelope, options: &Options, out: &mut Tables) {
    let head = Head {
        event_id: Text::from(envelope.event_id.as_str()),
        event_type: Text::from(envelope.event_type.as_str()),
        received_at: Micros(envelope.received_at_us),
    };
    // Parsed again (the buffer holds text), into the tree of borrowed strings. Contacts, most
    // events, are read from it member by member; calls and outcomes key by key.
    let tree = Json::parse(&envelope.raw);
    let empty = json::Object::default();
    let object = tree
        .as_ref()
        .ok()
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let event_time = match envelope.event_type.family() {
        Family::Contact => contact::flatten(&head, object, options, out),
        Family::Call => call::flatten(&head, envelope.event_type, object, out),
        Family::Outcome => outcome::flatten(&head, object, out),
        Family::Unknown => head.received_at,
    };
    let hook_type = object.get("hookType").and_then(hook_type_text);
    debug_assert!(envelope.event_type != EventType::Unknown || event_time == head.received_at);
    out.raw_events.push(RawEventRow {
        event_id: head.event_id,
        event_type: head.event_type,
        received_at: head.received_at,
        event_time,
        hook_type,
        source_path: Text::from(envelope.source_path.as_str()),
        payload: envelope.raw.clone(),
    });
}

/// The `rejected_events` row of a dead letter.
pub fn rejected_row(r: &crate::rejected::Rejection) -> RejectedEventRow {
    RejectedEventRow {
        event_id: r.id().into(),
        event_type: "rejected".into(),
        received_at: Micros(r.received_at_us),
        event_time: Micros(r.received_at_us),
        status: i64::from(r.meta.status),
        reason: r.meta.reason.clone().into(),
        error: r.meta.error.clone().into(),
        source_path: r.meta.source_path.clone().into(),
        url_kind: r.meta.url_kind.map(|k| k.as_str().into()),
        headers: r.headers_json().into(),
        body: r.body.clone(),
        body_utf8: r.body_is_utf8(),
        body_truncated: r.meta.body_truncated,
        body_bytes: r.meta.body_bytes.map(|n| n.min(i64::MAX as u64) as i64),
    }
}

/// Reads `hookType` as sent: a string as it is, another non-null value as its JSON text.
fn hook_type(o: &mut Obj<'_, '_>) -> Option<Text> {
    o.take("hookType").and_then(hook_type_text)
}

fn hook_type_text(v: &Json<'_>) -> Option<Text> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(Text::from(s.as_ref())),
        _ => Some(v.text().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receive time of test events: 2027-01-15, after every fixture's timestamps.
    const RECEIVED_US: i64 = 1_800_000_000_000_000;

    fn envelope(text: &str, kind: Option<EventType>) -> Envelope {
        Envelope::parse_one(text, kind, RECEIVED_US, "/webhooks/iclosed").unwrap()
    }

    #[test]
    fn a_batch_split_across_threads_gives_the_rows_of_one_pass_in_order() {
        let events: Vec<Envelope> = crate::generate::in_time_order(crate::generate::Options {
            contacts: 1500,
            seed: 3,
            days: 10,
        })
        .iter()
        .map(|v| envelope(&v.to_string(), None))
        .collect();
        assert!(events.len() > 4096, "{} events", events.len());
        let one = flatten_with(&events, &Options::default());
        for threads in [2, 3] {
            let options = Options {
                threads,
                ..Options::default()
            };
            let split = flatten_with(&events, &options);
            assert_eq!(split.row_counts(), one.row_counts(), "{threads} threads");
            let ids = |t: &Tables| -> Vec<Text> {
                let raw = t.raw_events.iter().map(|r| r.event_id.clone());
                let answers = t.contact_answers.iter().map(|r| r.event_id.clone());
                raw.chain(answers).collect()
            };
            assert_eq!(ids(&split), ids(&one), "{threads} threads");
        }
    }

    /// The repository's sample payloads (`examples/payloads/`), one JSON array per file.
    pub(crate) fn payloads_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/payloads")
    }

    /// The object inside a sample payload, as compact JSON text.
    fn fixture(name: &str) -> String {
        let path = payloads_dir().join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value[0].to_string()
    }

    #[test]
    fn contact_fixture_maps_every_key() {
        let t = flatten(&[envelope(&fixture("contact_created.json"), None)]);
        let row = &t.contact_events[0];
        assert_eq!(row.contact_id, Some(73051));
        assert_eq!(
            row.first_utm_campaign.as_deref(),
            Some("coaching_search_jan_2026")
        );
        assert_eq!(
            row.latest_call_host_name.as_deref(),
            Some("Oluwaseun Brandt")
        );
        assert_eq!(row.updated_attributes, None);
        assert_eq!(row.disqualifying_group.as_deref(), Some("[]"));
        // Every documented key has a column or a table, so nothing is left over.
        assert_eq!(row.extras, None);
        assert!(row.parse_errors.is_empty());
        let params: Vec<_> = t
            .tracking_params
            .iter()
            .map(|p| (p.position, p.key.clone().unwrap()))
            .collect();
        assert_eq!(
            params,
            vec![(1, "fbclid".into()), (2, "landing_page".into())]
        );
        assert_eq!(t.contact_answers.len(), 5);
        assert_eq!(t.raw_events.len(), 1);
        assert_eq!(t.raw_events[0].event_time, row.event_time);
    }

    #[test]
    fn call_fixture_maps_every_key() {
        let t = flatten(&[envelope(&fixture("call_cancelled.json"), None)]);
        let row = &t.call_events[0];
        assert_eq!(row.event_type, "call_cancelled");
        assert_eq!(row.cancel_reason, None);
        assert_eq!(row.canceled, Some(true));
        assert_eq!(
            row.invitee_preview_id.as_deref(),
            Some("contact_Rt6uW1eYo4Ps")
        );
        assert_eq!(row.host_email.as_deref(), Some("kwame.osei@example.com"));
        assert_eq!(row.event_time, row.canceled_at.unwrap());
        assert_eq!(row.extras, None);
        assert_eq!(row.duration_min, Some(30));
        assert_eq!(row.event_type_owner_type.as_deref(), Some("setter"));
    }

    #[test]
    fn every_fixture_maps_without_extras_or_parse_errors() {
        let mut seen = 0;
        for entry in std::fs::read_dir(payloads_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.ends_with(".json") {
                continue;
            }
            let t = flatten(&[envelope(&fixture(&name), None)]);
            let extras: Vec<_> = t
                .contact_events
                .iter()
                .map(|r| &r.extras)
                .chain(t.call_events.iter().map(|r| &r.extras))
                .chain(t.call_outcomes.iter().map(|r| &r.extras))
                .collect();
            assert_eq!(extras, vec![&None], "{name}");
            assert_eq!(t.parse_error_count(), 0, "{name}");
            let flags: Vec<&String> = t
                .contact_events
                .iter()
                .flat_map(|r| &r.quality_flags)
                .collect();
            assert!(flags.is_empty(), "{name}: {flags:?}");
            seen += 1;
        }
        assert_eq!(seen, 10);
    }

    #[test]
    fn unknown_nested_keys_land_in_extras() {
        let t = flatten(&[envelope(
            r#"{"uuid": 1, "callOutcome": "WON", "contactId": 2, "deal": {"value": 5, "currency": "EUR"}, "coupon": "X"}"#,
            None,
        )]);
        let row = &t.call_outcomes[0];
        assert_eq!(row.deal_value, Some(5.0));
        assert_eq!(
            row.extras.as_deref(),
            Some(r#"{"coupon":"X","deal.currency":"EUR"}"#)
        );
    }

    #[test]
    fn wrong_types_become_null_and_parse_errors() {
        let t = flatten(&[envelope(
            r#"{"id": "abc", "previewId": "contact_x", "createdAt": "yesterday", "tracking": [1], "status": {"a": 1}}"#,
            None,
        )]);
        let row = &t.contact_events[0];
        assert_eq!(row.contact_id, None);
        assert_eq!(row.status, None);
        assert_eq!(row.event_time.0, RECEIVED_US);
        assert_eq!(row.parse_errors.len(), 4, "{:?}", row.parse_errors);
        assert!(row.extras.as_deref().unwrap().contains("\"tracking\":[1]"));
    }

    #[test]
    fn unknown_events_are_raw_only() {
        let t = flatten(&[envelope(
            r#"{"hookType": "Note added", "note": "hi"}"#,
            None,
        )]);
        assert_eq!(t.raw_events.len(), 1);
        assert_eq!(t.raw_events[0].event_type, "unknown");
        assert_eq!(t.raw_events[0].hook_type.as_deref(), Some("Note added"));
        assert_eq!(t.row_counts().iter().map(|(_, n)| n).sum::<usize>(), 1);
    }

    #[test]
    fn quality_flags_are_raised_by_payloads_built_for_them() {
        let base = serde_json::json!({"id": 1, "previewId": "p", "status": "QUALIFIED", "email": "ada@example.com",
            "phoneNumber": "+44 7700 900318", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T01:00:00Z"});
        let flags = |edit: serde_json::Value| {
            let mut object = base.clone();
            for (k, v) in edit.as_object().unwrap() {
                object[k] = v.clone();
            }
            let t = flatten(&[envelope(&object.to_string(), None)]);
            t.contact_events[0].quality_flags.clone()
        };
        assert!(flags(serde_json::json!({})).is_empty());
        let check = |edit: serde_json::Value, flag: &str| {
            assert_eq!(flags(edit.clone()), vec![flag.to_string()], "{edit}")
        };
        check(
            serde_json::json!({"email": "ada.example.com"}),
            "email_malformed",
        );
        check(
            serde_json::json!({"secondary_email": "ada@localhost"}),
            "email_malformed",
        );
        check(
            serde_json::json!({"phoneNumber": "call me maybe"}),
            "phone_malformed",
        );
        check(
            serde_json::json!({"secondary_phoneNumber": "12"}),
            "phone_malformed",
        );
        check(
            serde_json::json!({"status": "STRATEGY_CALL_HELD"}),
            "status_unknown",
        );
        check(
            serde_json::json!({"updatedAt": "2025-12-31T00:00:00Z"}),
            "updated_before_created",
        );
        check(
            serde_json::json!({"createdAt": "2027-06-01T00:00:00Z", "updatedAt": "2027-06-01T01:00:00Z"}),
            "timestamp_in_future",
        );
        // Casing of a known status does not matter, and the list is configurable.
        assert!(flags(serde_json::json!({"status": "qualified"})).is_empty());
        let custom = Options {
            known_statuses: vec!["STRATEGY_CALL_HELD".into()],
            ..Options::default()
        };
        let mut object = base.clone();
        object["status"] = serde_json::json!("STRATEGY_CALL_HELD");
        let t = flatten_with(&[envelope(&object.to_string(), None)], &custom);
        assert!(t.contact_events[0].quality_flags.is_empty());
    }

    mod properties {
        use super::super::*;
        use crate::event::{Envelope, EventType};
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// Keys flattening knows, mixed with arbitrary ones.
        fn key() -> impl Strategy<Value = String> {
            let known = [
                "id",
                "previewId",
                "status",
                "email",
                "createdAt",
                "updatedAt",
                "tracking",
                "event",
                "latestCall",
                "questionsAndAnswers",
                "updatedAttributes",
                "disqualifyingGroup",
                "user",
                "dateTime",
                "utm_source",
                "utmKey_1",
                "utmValue_1",
                "1_question",
                "1_response",
                "event_type",
                "invitee",
                "uuid",
                "utc_start_time",
                "canceled",
                "extended_assigned_to",
                "primary",
                "previewUrl",
                "callOutcome",
                "contactId",
                "deal",
                "dealValue",
                "transaction",
                "hookType",
                "durationUnit",
                "duration",
            ];
            prop_oneof![
                proptest::sample::select(known.to_vec()).prop_map(str::to_string),
                proptest::collection::vec(any::<char>(), 0..8)
                    .prop_map(|c| c.into_iter().collect()),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| serde_json::json!(f)),
                proptest::collection::vec(any::<char>(), 0..12)
                    .prop_map(|c| Value::String(c.into_iter().collect())),
                proptest::sample::select(vec![
                    "2026-03-04T14:07:12.418Z",
                    "45",
                    "true",
                    "HOURS",
                    "https://x/?preview=contact_1"
                ])
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(key(), inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = Map<String, Value>> {
            proptest::collection::btree_map(key(), value(), 0..12)
                .prop_map(|m| m.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Flattening (and change tracking) is total: any object under any event type gives
            /// its raw row and typed rows that convert to Arrow, and never panics.
            #[test]
            fn flattening_any_object_never_panics(object in object(), kind in proptest::sample::select(EventType::ALL.to_vec())) {
                let text = Value::Object(object).to_string();
                for url_kind in [None, Some(kind)] {
                    let envelope = Envelope::parse_one(&text, url_kind, 1_772_000_000_000_000, "/p").unwrap();
                    let mut tables = flatten(std::slice::from_ref(&envelope));
                    changes::track(&mut tables, &mut changes::ContactStates::default());
                    changes::track_calls(&mut tables, &mut std::collections::HashMap::new());
                    prop_assert_eq!(tables.raw_events.len(), 1);
                    let typed = tables.contact_events.len() + tables.call_events.len() + tables.call_outcomes.len();
                    prop_assert!(typed <= 1);
                    prop_assert_eq!(typed == 1, envelope.event_type != EventType::Unknown);
                    ContactEventRow::to_batch(&tables.contact_events);
                    CallEventRow::to_batch(&tables.call_events);
                    CallOutcomeRow::to_batch(&tables.call_outcomes);
                    RawEventRow::to_batch(&tables.raw_events);
                    TrackingParamRow::to_batch(&tables.tracking_params);
                    ContactAnswerRow::to_batch(&tables.contact_answers);
                    AttributeChangeRow::to_batch(&tables.attribute_changes);
                    StatusTransitionRow::to_batch(&tables.status_transitions);
                }
            }
        }
    }
}
