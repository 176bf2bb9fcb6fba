//! iClosed events: what kind of event an object is, and its stable id.
//!
//! Routing, in order: the event kind fixed by the URL (`/webhooks/iclosed/{kind}`), else the
//! object's `hookType` when it is a string, else the object's shape. Names are compared after
//! [`fold`], which lower-cases and drops everything but letters and digits, so `Contact created`,
//! `contactCreated`, `contact.created` and `contact_created` are one name.
//!
//! Invariant: this module is pure. The same object always gets the same [`EventType`] (for the
//! same URL kind) and the same [`event_id`], whatever its key order or whitespace.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::json::{Json, Object};

/// Our normalised event types; `Unknown` objects are stored in `raw_events` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    ContactCreated,
    ContactUpdated,
    ContactStatus,
    CallBooked,
    CallCancelled,
    CallRescheduled,
    CallOutcome,
    Unknown,
}

/// What family of table an event type flattens into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Contact,
    Call,
    Outcome,
    Unknown,
}

impl EventType {
    /// Every event type, in a fixed order (used for metrics and summaries).
    pub const ALL: [EventType; 8] = [
        EventType::ContactCreated,
        EventType::ContactUpdated,
        EventType::ContactStatus,
        EventType::CallBooked,
        EventType::CallCancelled,
        EventType::CallRescheduled,
        EventType::CallOutcome,
        EventType::Unknown,
    ];

    /// The snake_case name written to the `event_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ContactCreated => "contact_created",
            EventType::ContactUpdated => "contact_updated",
            EventType::ContactStatus => "contact_status",
            EventType::CallBooked => "call_booked",
            EventType::CallCancelled => "call_cancelled",
            EventType::CallRescheduled => "call_rescheduled",
            EventType::CallOutcome => "call_outcome",
            EventType::Unknown => "unknown",
        }
    }

    pub fn family(self) -> Family {
        match self {
            EventType::ContactCreated | EventType::ContactUpdated | EventType::ContactStatus => {
                Family::Contact
            }
            EventType::CallBooked | EventType::CallCancelled | EventType::CallRescheduled => {
                Family::Call
            }
            EventType::CallOutcome => Family::Outcome,
            EventType::Unknown => Family::Unknown,
        }
    }

    /// Resolves a name used by iClosed (docs identifiers, `hookType` strings, dotted marketing
    /// names) or by us. Returns `None` for a name we do not know.
    pub fn from_name(name: &str) -> Option<EventType> {
        let folded = fold(name);
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == folded)
            .map(|(_, t)| *t)
    }

    /// The URL kinds accepted by `/webhooks/iclosed/{kind}`, for error messages.
    pub fn url_kinds() -> Vec<&'static str> {
        URL_KIND_NAMES.to_vec()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names as users write them in URLs; [`ALIASES`] holds their folded forms and more.
const URL_KIND_NAMES: &[&str] = &[
    "contact_created",
    "contact_updated",
    "contact_status",
    "call_booked",
    "call_cancelled",
    "call_rescheduled",
    "call_outcome",
    "newContactCreated",
    "contactCreated",
    "contactDetailChanged",
    "contactUpdated",
    "contactByStatus",
    "newCallScheduled",
    "callBooked",
    "callCancelled",
    "callRescheduled",
    "callOutcome",
    "outcomeAdded",
    "contact.created",
    "contact.updated",
    "contact.status_changed",
    "call.booked",
    "call.cancelled",
    "call.rescheduled",
    "call.outcome_added",
    "outcome.recorded",
];

/// Folded name -> event type. Covers our names, iClosed's docs and UI identifiers, the dotted
/// names of its marketing page, and the `hookType` strings (documented and inferred).
const ALIASES: &[(&str, EventType)] = &[
    ("contactcreated", EventType::ContactCreated),
    ("newcontactcreated", EventType::ContactCreated),
    ("contactupdated", EventType::ContactUpdated),
    ("contactdetailchanged", EventType::ContactUpdated),
    ("contactdetailsupdated", EventType::ContactUpdated),
    ("contactstatus", EventType::ContactStatus),
    ("contactbystatus", EventType::ContactStatus),
    ("contactstatuschanged", EventType::ContactStatus),
    ("callbooked", EventType::CallBooked),
    ("newcallscheduled", EventType::CallBooked),
    ("callscheduled", EventType::CallBooked),
    ("callcancelled", EventType::CallCancelled),
    ("callcanceled", EventType::CallCancelled),
    ("callrescheduled", EventType::CallRescheduled),
    ("calloutcome", EventType::CallOutcome),
    ("outcomeadded", EventType::CallOutcome),
    ("calloutcomeadded", EventType::CallOutcome),
    ("outcomerecorded", EventType::CallOutcome),
];

/// Lower-cases and keeps only ASCII letters and digits: the form names are compared in.
pub fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Decides the event type of `object`, given the kind fixed by the URL, if any.
pub fn route(object: &Object, url_kind: Option<EventType>) -> EventType {
    if let Some(kind) = url_kind {
        return kind;
    }
    match object.get("hookType") {
        // An empty hookType names nothing: routed by shape, as a missing one.
        Some(Json::String(hook)) if hook.trim().is_empty() => route_by_shape(object),
        // A hookType we do not know names a trigger we do not understand: keep it raw rather
        // than guess from the shape (see ARCHITECTURE.md, "Routing").
        Some(Json::String(hook)) => EventType::from_name(hook).unwrap_or(EventType::Unknown),
        _ => route_by_shape(object),
    }
}

/// Routes an object without a usable `hookType` by the keys it has.
fn route_by_shape(object: &Object) -> EventType {
    let has = |k: &str| object.contains_key(k);
    if has("callOutcome") && has("contactId") {
        return EventType::CallOutcome;
    }
    if has("event_type") && has("event") && has("invitee") {
        let event = object.get("event").and_then(Json::as_object);
        let flag = |k: &str| event.and_then(|e| e.get(k)).is_some_and(truthy);
        let rescheduled = has_value(event, "old_start_time")
            || object
                .get("invitee")
                .and_then(Json::as_object)
                .and_then(|i| i.get("is_reschedule"))
                .is_some_and(truthy);
        return if flag("canceled") {
            EventType::CallCancelled
        } else if rescheduled {
            EventType::CallRescheduled
        } else {
            EventType::CallBooked
        };
    }
    // A partial update may carry little more than `id` and `updatedAttributes`.
    if has("id") && (has("previewId") || has("updatedAttributes")) {
        return if has("updatedAttributes") {
            EventType::ContactUpdated
        } else {
            EventType::ContactCreated
        };
    }
    EventType::Unknown
}

fn has_value(object: Option<&Object>, key: &str) -> bool {
    object
        .and_then(|o| o.get(key))
        .is_some_and(|v| *v != Json::Null)
}

/// `true`, `"true"` (any case) and `1` are true.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Bool(b) => *b,
        Json::String(s) => s.trim().eq_ignore_ascii_case("true"),
        Json::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// The stable id of an object: the first 128 bits of the SHA-256 of its canonical JSON text
/// (keys sorted at every level, no whitespace), as 32 lower-case hex digits.
///
/// Identical redeliveries, and copies that differ only in key order or whitespace, share an id.
pub fn event_id(object: &Object) -> String {
    // Built in one buffer and hashed once: many small hasher updates cost more than the hash.
    let mut canonical = Vec::with_capacity(1024);
    object.write_canonical(&mut canonical);
    let digest = Sha256::digest(&canonical);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for byte in &digest[..16] {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 0xf) as usize] as char);
    }
    out
}

/// One accepted event object with what the pipeline needs to process it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Stable id, see [`event_id`].
    pub event_id: String,
    /// Routed type.
    pub event_type: EventType,
    /// When hooklake received it, in microseconds since the Unix epoch (UTC).
    pub received_at_us: i64,
    /// Request path it came in on (or `replay:<file>` for batch input).
    pub source_path: String,
    /// The object's exact JSON text as it arrived (what `raw_events.payload` stores). The parsed
    /// form is not kept: a buffered event costs its text only, and flattening parses it again
    /// (parsing is cheap next to the memory a parsed tree holds while events wait). Shared, not
    /// copied, with the `raw_events` row made from it.
    pub raw: Arc<str>,
    /// Sequence number of the write-ahead log record that holds it (0 when not logged).
    pub seq: u64,
}

impl Envelope {
    /// Parses, routes and identifies one object from its JSON text.
    pub fn parse_one(
        raw: &str,
        url_kind: Option<EventType>,
        received_at_us: i64,
        source_path: &str,
    ) -> Result<Envelope, BodyError> {
        Self::parse_within(raw, raw, url_kind, received_at_us, source_path)
    }

    /// Like [`Envelope::parse_one`], parsing `text`: `raw` with the whitespace around it, so
    /// that a syntax error names its place in the body as sent.
    fn parse_within(
        text: &str,
        raw: &str,
        url_kind: Option<EventType>,
        received_at_us: i64,
        source_path: &str,
    ) -> Result<Envelope, BodyError> {
        let object = match Json::parse(text) {
            Ok(Json::Object(object)) => object,
            Ok(other) => {
                return Err(BodyError::NotAnObject {
                    index: None,
                    found: other.kind(),
                });
            }
            Err(e) => return Err(BodyError::Syntax(e.to_string())),
        };
        Ok(Envelope {
            event_id: event_id(&object),
            event_type: route(&object, url_kind),
            received_at_us,
            source_path: source_path.to_string(),
            raw: raw.into(),
            seq: 0,
        })
    }

    /// The object, parsed again from its text (which was valid when the envelope was made).
    pub fn object(&self) -> Map<String, Value> {
        match serde_json::from_str::<Value>(&self.raw) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Bytes this event holds in memory, roughly: what the buffer bound counts.
    pub fn approx_bytes(&self) -> usize {
        self.raw.len() + self.source_path.len() + self.event_id.len() + 64
    }
}

/// Why a request body is not a batch of events. Each is the sender's fault (a 4xx).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("body is empty: expected a JSON object or an array of objects")]
    Empty,
    #[error("body is not valid UTF-8 (invalid byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("body is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("body is a JSON {0}: expected an object or an array of objects")]
    WrongShape(&'static str),
    #[error("body is an empty array: expected at least one event object")]
    EmptyArray,
    #[error("body holds {found} events; the limit is {max} per request (max_events_per_request)")]
    TooManyEvents { found: usize, max: usize },
    #[error("body has a string longer than {0} bytes (max_string_bytes)")]
    StringTooLong(usize),
    #[error("{} is a JSON {found}: expected an object", .index.map(|i| format!("array element {i}")).unwrap_or_else(|| "the value".into()))]
    NotAnObject {
        index: Option<usize>,
        found: &'static str,
    },
}

/// The JSON type name of a value, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses a request body (a JSON array of objects or one bare object) into envelopes.
///
/// Checks, in order: UTF-8, nesting depth (at most `max_depth`), JSON syntax, shape. On error
/// nothing is returned: a body is accepted whole or not at all.
pub fn parse_body(
    body: &[u8],
    url_kind: Option<EventType>,
    received_at_us: i64,
    source_path: &str,
    limits: BodyLimits,
) -> Result<Vec<Envelope>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::InvalidUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    let shape = scan(text.as_bytes());
    if shape.depth > limits.max_depth {
        return Err(BodyError::TooDeep(limits.max_depth));
    }
    if shape.longest_string > limits.max_string_bytes {
        return Err(BodyError::StringTooLong(limits.max_string_bytes));
    }
    let trimmed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if trimmed.starts_with('{') {
        // One bare object (every NDJSON line): parsed once, with no validating pass first.
        return Envelope::parse_within(text, trimmed, url_kind, received_at_us, source_path)
            .map(|e| vec![e]);
    }
    let top: &RawValue =
        serde_json::from_str(text).map_err(|e| BodyError::Syntax(e.to_string()))?;
    let items: Vec<&RawValue> = match top.get().as_bytes().first() {
        Some(b'[') => {
            serde_json::from_str(top.get()).map_err(|e| BodyError::Syntax(e.to_string()))?
        }
        Some(b'{') => vec![top],
        _ => {
            let value: Value =
                serde_json::from_str(top.get()).map_err(|e| BodyError::Syntax(e.to_string()))?;
            return Err(BodyError::WrongShape(json_kind(&value)));
        }
    };
    if items.is_empty() {
        return Err(BodyError::EmptyArray);
    }
    if items.len() > limits.max_events {
        return Err(BodyError::TooManyEvents {
            found: items.len(),
            max: limits.max_events,
        });
    }
    let many = top.get().starts_with('[');
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            Envelope::parse_one(item.get(), url_kind, received_at_us, source_path).map_err(|e| {
                match e {
                    BodyError::NotAnObject { found, .. } => BodyError::NotAnObject {
                        index: many.then_some(i),
                        found,
                    },
                    other => other,
                }
            })
        })
        .collect()
}

/// Limits a request body must stay within.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
    /// Most event objects in one body.
    pub max_events: usize,
    /// Longest JSON string, in bytes of its escaped text.
    pub max_string_bytes: usize,
}

impl BodyLimits {
    /// For bodies validated before (the log): only serde_json's own recursion limit applies, so a
    /// lowered setting cannot lose an acknowledged event.
    pub const LOGGED: BodyLimits = BodyLimits {
        max_depth: 128,
        max_events: usize::MAX,
        max_string_bytes: usize::MAX,
    };

    pub fn from_config(config: &crate::config::Config) -> BodyLimits {
        BodyLimits {
            max_depth: config.max_json_depth,
            max_events: config.max_events_per_request,
            max_string_bytes: config.max_string_bytes,
        }
    }
}

/// What one pass over JSON text finds: nesting depth and longest string.
struct Shape {
    depth: usize,
    longest_string: usize,
}

/// The deepest nesting of arrays and objects, and the longest string, of JSON text (escapes
/// count as their bytes; an unterminated string does not count).
///
/// Most of an event's bytes are inside strings, so a string is crossed with `memchr2` to its
/// next quote or backslash instead of byte by byte (the byte loop was a quarter of the parse
/// stage).
fn scan(bytes: &[u8]) -> Shape {
    let (mut depth, mut max, mut longest) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                let mut at = start;
                loop {
                    let Some(k) = bytes
                        .get(at..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        // Unterminated (or ends in a lone backslash): nothing more to see.
                        return Shape {
                            depth: max,
                            longest_string: longest,
                        };
                    };
                    at += k;
                    if bytes[at] == b'\\' {
                        at += 2;
                        continue;
                    }
                    longest = longest.max(at - start);
                    i = at;
                    break;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Shape {
        depth: max,
        longest_string: longest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The first scan, byte by byte: the oracle of the one above.
    fn scan_bytewise(bytes: &[u8]) -> Shape {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        let (mut string_start, mut longest) = (0usize, 0usize);
        for (i, &b) in bytes.iter().enumerate() {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => {
                        in_string = false;
                        longest = longest.max(i - string_start);
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    string_start = i + 1;
                }
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Shape {
            depth: max,
            longest_string: longest,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn the_scan_finds_what_the_bytewise_scan_found(
            text in proptest::collection::vec(proptest::sample::select(b"\"\\{}[]a:,".to_vec()), 0..80)
        ) {
            let (ours, theirs) = (scan(&text), scan_bytewise(&text));
            proptest::prop_assert_eq!((ours.depth, ours.longest_string), (theirs.depth, theirs.longest_string));
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// `f` applied to the tree parsed from the object's JSON text.
    fn tree_of<R>(m: &Map<String, Value>, f: impl FnOnce(&Object) -> R) -> R {
        let text = Value::Object(m.clone()).to_string();
        let tree = Json::parse(&text).unwrap();
        f(tree.as_object().unwrap())
    }

    fn route_of(m: &Map<String, Value>, kind: Option<EventType>) -> EventType {
        tree_of(m, |o| route(o, kind))
    }

    fn id_of(m: &Map<String, Value>) -> String {
        tree_of(m, event_id)
    }

    #[test]
    fn a_bare_object_parsed_once_places_syntax_errors_as_a_validating_pass_did() {
        let limits = BodyLimits::LOGGED;
        let bodies = [
            "{\"a\":}",
            "{\"a\":1} x",
            "\n\n  {\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":1",
            "\t{\"a\":[1,2}\r\n",
            "{\"a\":\"\\u12\"}",
        ];
        // The same place in the body (the wording may be more precise: "trailing comma" where
        // the validating pass said "key must be a string").
        let place = |m: &str| m[m.rfind(" at line ").expect("a place")..].to_string();
        for body in bodies {
            let validating = serde_json::from_str::<&RawValue>(body)
                .unwrap_err()
                .to_string();
            match parse_body(body.as_bytes(), None, 0, "/w", limits).unwrap_err() {
                BodyError::Syntax(m) => assert_eq!(place(&m), place(&validating), "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        // The stored text is the object without the whitespace around it.
        let ok = parse_body(b"\n {\"id\": 1}\r\n", None, 0, "/w", limits).unwrap();
        assert_eq!(&*ok[0].raw, "{\"id\": 1}");
    }

    #[test]
    fn every_documented_name_resolves() {
        let check = |name: &str, expected: EventType| {
            assert_eq!(EventType::from_name(name), Some(expected), "{name}");
        };
        check("newContactCreated", EventType::ContactCreated);
        check("contact.created", EventType::ContactCreated);
        check("Contact created", EventType::ContactCreated);
        check("contactDetailChanged", EventType::ContactUpdated);
        check("  Contact Updated ", EventType::ContactUpdated);
        check("contactByStatus", EventType::ContactStatus);
        check("newCallScheduled", EventType::CallBooked);
        check("Call canceled", EventType::CallCancelled);
        check("Call cancelled", EventType::CallCancelled);
        check("callRescheduled", EventType::CallRescheduled);
        check("outcomeAdded", EventType::CallOutcome);
        check("call.outcome_added", EventType::CallOutcome);
        assert_eq!(EventType::from_name("Note added"), None);
        for kind in EventType::url_kinds() {
            assert!(EventType::from_name(kind).is_some(), "{kind}");
        }
    }

    #[test]
    fn routing_prefers_url_then_hook_type_then_shape() {
        let contact =
            obj(json!({"id": 1, "previewId": "contact_x", "hookType": "Contact updated"}));
        assert_eq!(route_of(&contact, None), EventType::ContactUpdated);
        assert_eq!(
            route_of(&contact, Some(EventType::ContactStatus)),
            EventType::ContactStatus
        );
        let unknown_hook =
            obj(json!({"id": 1, "previewId": "contact_x", "hookType": "Note added"}));
        assert_eq!(route_of(&unknown_hook, None), EventType::Unknown);
        let partial = obj(json!({"id": 1, "updatedAttributes": ["status"], "status": "QUALIFIED"}));
        assert_eq!(route_of(&partial, None), EventType::ContactUpdated);
        let bare = obj(json!({"id": 1, "previewId": "contact_x"}));
        assert_eq!(route_of(&bare, None), EventType::ContactCreated);
        // An empty hookType names nothing: the shape decides, as without one.
        for blank in ["", "  "] {
            let blank = obj(json!({"id": 1, "previewId": "contact_x", "hookType": blank}));
            assert_eq!(route_of(&blank, None), EventType::ContactCreated);
        }
        let call = obj(json!({"event_type": {}, "event": {"canceled": "true"}, "invitee": {}}));
        assert_eq!(route_of(&call, None), EventType::CallCancelled);
        let moved = obj(json!({"event_type": {}, "event": {"old_start_time": "x"}, "invitee": {}}));
        assert_eq!(route_of(&moved, None), EventType::CallRescheduled);
        let outcome = obj(json!({"callOutcome": "WON", "contactId": 3}));
        assert_eq!(route_of(&outcome, None), EventType::CallOutcome);
        assert_eq!(route_of(&obj(json!({"x": 1})), None), EventType::Unknown);
    }

    #[test]
    fn event_id_ignores_key_order_and_whitespace() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"id": 1, "t": {"b": [1, 2], "a": "x"}}"#).unwrap();
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"t":{"a":"x","b":[1,2]},"id":1}"#).unwrap();
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"t":{"a":"y","b":[1,2]},"id":1}"#).unwrap();
        assert_eq!(id_of(&a), id_of(&b));
        assert_ne!(id_of(&a), id_of(&c));
        assert_eq!(id_of(&a).len(), 32);
        // Pinned so a change of the canonical form is a deliberate, visible decision.
        assert_eq!(id_of(&obj(json!({}))), "44136fa355b3678a1146ad16f7e8649e");
    }

    #[test]
    fn ids_from_the_text_normalise_escapes_but_not_number_spellings() {
        let id = |text: &str| Envelope::parse_one(text, None, 0, "/w").unwrap().event_id;
        let plain = id(r#"{"id": 100, "name": "é/x"}"#);
        assert_eq!(plain, id(r#"{"name":"\u00e9\/x","id":100}"#));
        // What README.md says: numbers are their values as integers or doubles.
        assert_ne!(plain, id(r#"{"id": 100.0, "name": "é/x"}"#));
        assert_ne!(plain, id(r#"{"id": 1e2, "name": "é/x"}"#));
        assert_eq!(id(r#"{"v": 0.1}"#), id(r#"{"v": 0.10000000000000001}"#));
    }

    /// The first implementation of [`event_id`] (the hasher fed piece by piece), kept as the
    /// oracle that the buffered one hashes exactly the same bytes: ids already in users' dedup
    /// indexes and tables must not change.
    fn event_id_reference(object: &Map<String, Value>) -> String {
        fn map(h: &mut Sha256, m: &Map<String, Value>) {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            h.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                h.update(serde_json::to_string(key).unwrap().as_bytes());
                h.update(b":");
                value(h, &m[key]);
            }
            h.update(b"}");
        }
        fn value(h: &mut Sha256, v: &Value) {
            match v {
                Value::Object(m) => map(h, m),
                Value::Array(items) => {
                    h.update(b"[");
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            h.update(b",");
                        }
                        value(h, item);
                    }
                    h.update(b"]");
                }
                scalar => h.update(scalar.to_string().as_bytes()),
            }
        }
        let mut h = Sha256::new();
        map(&mut h, object);
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn event_ids_are_those_of_the_first_implementation() {
        let mut objects: Vec<Map<String, Value>> = vec![obj(json!({
            "quote\"and\\back": "tab\t nl\n ctrl\u{1} é 🎉",
            "n": [1, -2, 3.5, 1e20, 0.1, 12345678901234567890u64, null, true],
            "nested": {"z": {}, "a": [[], [{}]], "m": "x"},
        }))];
        let generated = crate::generate::in_time_order(crate::generate::Options {
            contacts: 60,
            seed: 7,
            days: 10,
        });
        for parsed in generated {
            match parsed {
                Value::Object(m) => objects.push(m),
                Value::Array(items) => objects.extend(items.into_iter().filter_map(|v| match v {
                    Value::Object(m) => Some(m),
                    _ => None,
                })),
                _ => {}
            }
        }
        assert!(objects.len() > 250, "{}", objects.len());
        for object in &objects {
            assert_eq!(id_of(object), event_id_reference(object), "{object:?}");
        }
    }

    #[test]
    fn bodies_parse_or_say_what_is_wrong() {
        let limits = BodyLimits {
            max_depth: 64,
            max_events: 3,
            max_string_bytes: 100,
        };
        let parse = |body: &[u8]| parse_body(body, None, 0, "/w", limits);
        let ok = parse(br#"[{"a": 1}, {"b": [2]}]"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(&*ok[1].raw, r#"{"b": [2]}"#);
        assert_eq!(parse(br#" {"a": 1} "#).unwrap().len(), 1);
        let check = |body: &[u8], expected: &str| {
            let err = parse(body).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        };
        check(b"", "empty");
        check(br#"[{"a": 1"#, "not valid JSON");
        check(b"42", "JSON number");
        check(br#""hi""#, "JSON string");
        check(b"[1, 2]", "array element 0 is a JSON number");
        check(br#"[{}, "x"]"#, "array element 1 is a JSON string");
        check(b"[]", "empty array");
        check(b"\xff\xfe", "UTF-8");
        check(&[b'['; 65], "deeper than 64");
        check(br#"{"a": 1} {"b": 2}"#, "not valid JSON");
        check(b"[{}, {}, {}, {}]", "holds 4 events; the limit is 3");
        check(
            format!(r#"{{"a": "{}"}}"#, "x".repeat(101)).as_bytes(),
            "longer than 100 bytes",
        );
        assert!(parse(format!(r#"{{"a": "{}"}}"#, "x".repeat(100)).as_bytes()).is_ok());
        // Brackets inside strings do not count towards depth.
        assert!(parse(br#"{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#).is_ok());
    }
}
