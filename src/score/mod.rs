//! Lead scoring: after change tracking, each contact a flush touched is scored from its state
//! (the contact's last snapshot, as change tracking keeps it) and its counts of calls and
//! outcomes, with the configured rules (`rules.rs`); a `lead_scores` row is written when its
//! score or band differs from the last one. The decay pass (`decay.rs`) rescores contacts whose
//! band the days without activity moved.
//!
//! Calls and outcomes find their contact as `queries/views.sql` does: a call is counted under
//! the key `p:<invitee preview id>`, else `e:<lower-case invitee email>`; an outcome under
//! `c:<contact id>`, else `e:<lower-case email>`. A contact owns `c:<its id>`, and `p:`/`e:` of
//! its current preview id and email unless a contact with a lower id carried them first. Its
//! counts are the sums over the keys it owns, so a call that arrives before its contact is
//! counted once that contact appears.
//!
//! Invariant: pure but for reading the state store; the scoring states advance only in the
//! commit of the flush that writes their rows. A late event never moves a score back in time:
//! the contact state it is scored from keeps the newest value of each attribute, and counts do
//! not depend on the order events arrive in.

pub mod decay;
pub mod rules;
pub mod stored;

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::flatten::changes::{Attribute, ContactState};
use crate::flatten::table::{Micros, Text};
use crate::flatten::{LeadScoreRow, Tables};
use crate::state::{Store, StoreError, key_hash, key_hash_bytes};
use rules::{Counts, Evaluation, Rules};
use stored::KeyRecord;

/// A contact's last score, as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    /// The `revision` of its last `lead_scores` row.
    pub revision: i64,
    /// The last evaluation (the score of its last row, or the same score with other reasons).
    pub evaluation: Evaluation,
    /// Event time of its latest event, microseconds since the epoch.
    pub last_activity_us: i64,
    /// Id and type of that event.
    pub last_event_id: String,
    pub last_event_type: String,
}

/// A hash map with ahash: std's SipHash is a cost on the many keys a flush scores.
pub type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// What a flush changed in scoring, for its commit.
#[derive(Debug, Clone, Default)]
pub struct Scoring {
    /// The new score of each contact scored.
    pub scores: Map<i64, ScoreState>,
    /// The new record (owner and counts) of each key whose owner or counts changed, by the
    /// key's hash.
    pub records: Map<KeyHash, KeyRecord>,
}

/// A contact key as the state store keys it: the XXH3-128 hash of its text
/// ([`crate::state::key_hash`]).
pub type KeyHash = u128;

/// The event behind a change: the latest of a contact's events in a flush. It borrows the
/// flush's rows: a row's texts are copied only into the rows and states the flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cause<'r> {
    event_time: Micros,
    event_id: &'r str,
    event_type: &'r str,
    received_at: Micros,
}

fn cause<'r>(
    event_time: Micros,
    event_id: &'r Text,
    event_type: &'r Text,
    received_at: Micros,
) -> Cause<'r> {
    Cause {
        event_time,
        event_id: event_id.as_str(),
        event_type: event_type.as_str(),
        received_at,
    }
}

/// The key a call is counted under.
pub(crate) fn call_key(preview_id: Option<&str>, email: Option<&str>) -> Option<String> {
    match (preview_id, email) {
        (Some(p), _) if !p.is_empty() => Some(prefixed("p:", p)),
        (_, Some(e)) if !e.is_empty() => Some(email_key(e)),
        _ => None,
    }
}

/// `prefix` then `text`, in one allocation.
fn prefixed(prefix: &str, text: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + text.len());
    key.push_str(prefix);
    key.push_str(text);
    key
}

/// `e:` and the lower-case email (ASCII lower-cased in place; other text by Unicode's rules).
fn email_key(email: &str) -> String {
    if email.is_ascii() {
        let mut key = prefixed("e:", email);
        key.make_ascii_lowercase();
        key
    } else {
        prefixed("e:", &email.to_lowercase())
    }
}

/// How an outcome counts: whether it is a no-show (`no_sale_reason` `NO_SHOW`; else it was
/// held) and whether it is won (`outcome` `SALE` or `WON`).
pub(crate) fn outcome_kind(row: &crate::flatten::CallOutcomeRow) -> (bool, bool) {
    let is = |v: &Option<Text>, names: &[&str]| {
        v.as_deref()
            .is_some_and(|v| names.iter().any(|n| v.eq_ignore_ascii_case(n)))
    };
    (
        is(&row.no_sale_reason, &["NO_SHOW"]),
        is(&row.outcome, &["SALE", "WON"]),
    )
}

/// The key an outcome is counted under.
pub(crate) fn outcome_key(contact_id: Option<i64>, email: Option<&str>) -> Option<String> {
    match (contact_id, email) {
        (Some(id), _) => Some(format!("c:{id}")),
        (None, Some(e)) if !e.is_empty() => Some(email_key(e)),
        _ => None,
    }
}

/// The hash of the key [`call_key`] makes, without making it (most keys are made on the
/// stack).
fn call_key_hash(preview_id: Option<&str>, email: Option<&str>) -> Option<KeyHash> {
    match (preview_id, email) {
        (Some(p), _) if !p.is_empty() => Some(hash_of("p:", p, false)),
        (_, Some(e)) if !e.is_empty() => Some(hash_of("e:", e, true)),
        _ => None,
    }
}

/// The hash of the key [`outcome_key`] makes, without making it.
fn outcome_key_hash(contact_id: Option<i64>, email: Option<&str>) -> Option<KeyHash> {
    match (contact_id, email) {
        (Some(id), _) => Some(id_key_hash(id)),
        (None, Some(e)) if !e.is_empty() => Some(hash_of("e:", e, true)),
        _ => None,
    }
}

/// The hash of `c:<id>`, written on the stack.
fn id_key_hash(id: i64) -> KeyHash {
    // "c:", a sign and the 19 digits of the longest i64.
    let mut buf = [0u8; 24];
    let mut at = buf.len();
    let mut rest = id.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if id < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    at -= 2;
    buf[at..at + 2].copy_from_slice(b"c:");
    key_hash_bytes(&buf[at..])
}

/// The hash of `prefix` then `text`, lower-cased when `lower` as [`email_key`] does; made in
/// a buffer on the stack when short and, if lower-cased, ASCII.
fn hash_of(prefix: &str, text: &str, lower: bool) -> KeyHash {
    let mut buf = [0u8; 160];
    let len = prefix.len() + text.len();
    if len > buf.len() || (lower && !text.is_ascii()) {
        return key_hash(&if lower {
            email_key(text)
        } else {
            prefixed(prefix, text)
        });
    }
    buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
    buf[prefix.len()..len].copy_from_slice(text.as_bytes());
    if lower {
        buf[..len].make_ascii_lowercase();
    }
    key_hash_bytes(&buf[..len])
}

/// A contact's keys: `c:<id>`, its own by name, and `p:`/`e:` of its current values, which
/// it owns unless a contact with a lower id carried them first.
#[derive(Debug, Clone, Copy)]
struct ContactKeys {
    own: KeyHash,
    carried: [Option<KeyHash>; 2],
}

impl ContactKeys {
    fn carried(&self) -> impl Iterator<Item = KeyHash> + '_ {
        self.carried.iter().flatten().copied()
    }

    fn all(&self) -> impl Iterator<Item = KeyHash> + '_ {
        std::iter::once(self.own).chain(self.carried())
    }
}

/// The keys of the contact `id` in `state`.
fn contact_keys(id: i64, state: &ContactState) -> ContactKeys {
    static PREVIEW_ID: LazyLock<Attribute> = LazyLock::new(|| Attribute::new("preview_id"));
    static EMAIL: LazyLock<Attribute> = LazyLock::new(|| Attribute::new("email"));
    ContactKeys {
        own: id_key_hash(id),
        carried: [
            call_key_hash(state.get(&PREVIEW_ID), None),
            call_key_hash(None, state.get(&EMAIL)),
        ],
    }
}

/// What scoring needs of a contact's state: its keys and which attribute rules hold. Change
/// tracking takes it from each state it advanced, while the state is in the processor's cache
/// ([`crate::flatten::changes::track_then`]); scoring reads a state itself only for a contact
/// a call or outcome brought in.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    keys: ContactKeys,
    held: Option<rules::AttributesHeld>,
}

impl Seen {
    /// What `rules` need of the state of contact `id`.
    pub fn of(rules: &Rules, id: i64, state: &ContactState) -> Seen {
        Seen {
            keys: contact_keys(id, state),
            held: rules.attributes_held(state),
        }
    }
}

/// Contacts below this many are keyed and scored on the calling thread alone.
const PARALLEL_FROM: usize = 512;

/// What a flush adds under one key: its counts, the latest event filed under it, and, for a
/// `c:` key, its contact.
#[derive(Debug, Clone, Copy)]
struct Added<'r> {
    counts: Counts,
    latest: Cause<'r>,
    contact: Option<i64>,
}

/// Scores the contacts the flush's rows touch: `contacts` are the states after change
/// tracking (of the contacts with rows in `tables`), with what change tracking saw of each
/// (`seen`, [`Seen::of`]); other contacts whose calls or outcomes are in the flush are read
/// from `store`. Returns what the flush's commit records and the `lead_scores` rows. Contacts
/// are scored on up to `threads` threads.
pub fn apply(
    tables: &Tables,
    contacts: &crate::flatten::changes::ContactStates,
    seen: &[(i64, Seen)],
    rules: &Rules,
    store: &Store,
    threads: usize,
) -> Result<(Scoring, Vec<LeadScoreRow>), StoreError> {
    // Counts added by this flush under each key, with the latest event filed under it.
    let mut added: Map<KeyHash, Added<'_>> = Map::default();
    fn note<'r>(
        added: &mut Map<KeyHash, Added<'r>>,
        key: KeyHash,
        contact: Option<i64>,
        c: Cause<'r>,
        add: impl Fn(&mut Counts),
    ) {
        let a = added.entry(key).or_insert(Added {
            counts: Counts::default(),
            latest: c,
            contact,
        });
        add(&mut a.counts);
        if c > a.latest {
            a.latest = c;
        }
    }
    for row in &tables.call_events {
        let Some(key) = call_key_hash(
            row.invitee_preview_id.as_deref(),
            row.invitee_email.as_deref(),
        ) else {
            continue;
        };
        let c = cause(
            row.event_time,
            &row.event_id,
            &row.event_type,
            row.received_at,
        );
        note(&mut added, key, None, c, |n| {
            match row.event_type.as_str() {
                "call_booked" => n.booked += 1,
                "call_cancelled" => n.cancelled += 1,
                "call_rescheduled" => n.rescheduled += 1,
                _ => {}
            }
        });
    }
    for row in &tables.call_outcomes {
        let Some(key) = outcome_key_hash(row.contact_id, row.contact_email.as_deref()) else {
            continue;
        };
        let (no_show, won) = outcome_kind(row);
        let c = cause(
            row.event_time,
            &row.event_id,
            &row.event_type,
            row.received_at,
        );
        // With a contact id the key is `c:<id>`, that contact's.
        note(&mut added, key, row.contact_id, c, |n| {
            if no_show {
                n.no_show += 1;
            } else {
                n.held += 1;
            }
            if won {
                n.won += 1;
            }
        });
    }
    // Every contact to score, with its latest event in this flush: first those with
    // snapshots in it.
    let mut to_score: Map<i64, Cause<'_>> = Map::default();
    fn bump<'r>(to_score: &mut Map<i64, Cause<'r>>, id: i64, c: Cause<'r>) {
        let l = to_score.entry(id).or_insert(c);
        if c > *l {
            *l = c;
        }
    }
    for row in &tables.contact_events {
        if let Some(id) = row.contact_id {
            bump(
                &mut to_score,
                id,
                cause(
                    row.event_time,
                    &row.event_id,
                    &row.event_type,
                    row.received_at,
                ),
            );
        }
    }
    let mut touched: Vec<i64> = to_score.keys().copied().collect();
    touched.sort_unstable();
    let parts = |n: usize| if n >= PARALLEL_FROM { threads } else { 1 };
    // Each contact's keys and attribute rules, as change tracking saw them, or else from its
    // state.
    let mut seen_of: Map<i64, Seen> = seen.iter().copied().collect();
    for id in &touched {
        if !seen_of.contains_key(id)
            && let Some(state) = contacts.get(id)
        {
            seen_of.insert(*id, Seen::of(rules, *id, state));
        }
    }
    // One read for the touched contacts: their scores, and the records of their keys and of
    // the keys of this flush's calls and outcomes.
    let mut wanted: Vec<KeyHash> = seen_of
        .values()
        .flat_map(|saw| saw.keys.all())
        .chain(added.keys().copied())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let read = store.scoring(&touched, &wanted)?;
    let mut scores = read.scores;
    let mut records = read.records;
    // Owners: the lowest id that carried a key, the contacts of this flush included.
    let mut new_keys: Map<KeyHash, i64> = Map::default();
    for id in &touched {
        let Some(saw) = seen_of.get(id) else {
            continue;
        };
        for key in saw.keys.carried() {
            let record = records.entry(key).or_default();
            if record.owner.is_none_or(|owner| *id < owner) {
                record.owner = Some(*id);
                new_keys.insert(key, *id);
            }
        }
    }
    // Then the owners of this flush's calls and outcomes.
    for (key, a) in &added {
        let owner = a.contact.or_else(|| records.get(key).and_then(|r| r.owner));
        if let Some(id) = owner {
            bump(&mut to_score, id, a.latest);
        }
    }
    // Those only a call or outcome brought in: their states, keys, scores and records.
    let mut ids: Vec<i64> = to_score.keys().copied().collect();
    ids.sort_unstable();
    let brought: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !seen_of.contains_key(id))
        .collect();
    let others = store.contacts(
        brought
            .iter()
            .copied()
            .filter(|id| !contacts.contains_key(id)),
    )?;
    let state_of = |id: &i64| contacts.get(id).or_else(|| others.get(id));
    for id in &brought {
        if let Some(state) = state_of(id) {
            seen_of.insert(*id, Seen::of(rules, *id, state));
        }
    }
    let mut more: Vec<KeyHash> = brought
        .iter()
        .filter_map(|id| seen_of.get(id))
        .flat_map(|saw| saw.keys.all())
        .filter(|k| wanted.binary_search(k).is_err())
        .collect();
    more.sort_unstable();
    more.dedup();
    let more = store.scoring(&brought, &more)?;
    scores.extend(more.scores);
    for (key, record) in more.records {
        records.entry(key).or_insert(record);
    }
    for (key, a) in &added {
        let record = records.entry(*key).or_default();
        record.counts = record.counts.plus(a.counts);
    }
    // The records of the keys whose counts or owner changed, in full.
    let changed: Map<KeyHash, KeyRecord> = added
        .keys()
        .chain(new_keys.keys())
        .map(|key| (*key, records.get(key).copied().unwrap_or_default()))
        .collect();
    let mut out = Scoring {
        records: changed,
        scores: Map::with_capacity_and_hasher(ids.len(), Default::default()),
    };
    // Each contact's new score, and its row when the score or band changed. Only contacts
    // seen in a snapshot are scored: an outcome's contact that has not arrived yet is scored,
    // with it, when it does. Each goes with its last score, taken from the map: an unchanged
    // evaluation, and the last event when it stays the latest, are kept rather than copied.
    let work: Vec<(i64, Option<ScoreState>)> =
        ids.iter().map(|id| (*id, scores.remove(id))).collect();
    let score_one = |(id, before): (i64, Option<ScoreState>)| {
        let saw = seen_of.get(&id)?;
        let latest = to_score[&id];
        // Its own key's counts, and those of the keys it owns.
        let own = records.get(&saw.keys.own);
        let carried = saw.keys.carried().filter_map(|key| records.get(&key));
        let total = own
            .into_iter()
            .chain(carried.filter(|r| r.owner == Some(id)))
            .fold(Counts::default(), |a, r| a.plus(r.counts));
        let (last, before) = match before {
            Some(b) => (
                Some(b.evaluation),
                Some((
                    b.revision,
                    b.last_activity_us,
                    b.last_event_id,
                    b.last_event_type,
                )),
            ),
            None => (None, None),
        };
        let (evaluation, replaced) = match saw.held {
            Some(held) => rules.reevaluate_held(held, &total, last),
            None => rules.reevaluate_contact(state_of(&id)?, &total, last),
        };
        let last_revision = before.as_ref().map(|(revision, ..)| *revision);
        let (last_activity_us, last_event_id, last_event_type) = match before {
            Some((_, at, id, kind)) if at > latest.event_time.0 => (at, id, kind),
            _ => (
                latest.event_time.0,
                latest.event_id.to_string(),
                latest.event_type.to_string(),
            ),
        };
        // A score seen before and not replaced is the same evaluation.
        let changed = last_revision.is_none()
            || replaced
                .as_ref()
                .is_some_and(|old| old.score != evaluation.score || old.band != evaluation.band);
        let revision = last_revision.unwrap_or(0) + i64::from(changed);
        let row = changed.then(|| LeadScoreRow {
            event_id: Text::from(latest.event_id),
            event_type: Text::from(latest.event_type),
            received_at: latest.received_at,
            event_time: latest.event_time,
            contact_id: Some(id),
            revision,
            score: evaluation.score,
            previous_score: replaced.as_ref().map(|old| old.score),
            band: Text::from(evaluation.band.as_str()),
            previous_band: replaced.as_ref().map(|old| Text::from(old.band.as_str())),
            points: evaluation.points,
            reasons: Text::from(reasons(&evaluation).as_str()),
            last_activity_at: Micros(last_activity_us),
        });
        let state = ScoreState {
            revision,
            evaluation,
            last_activity_us,
            last_event_id,
            last_event_type,
        };
        Some((id, row, state))
    };
    let scored = crate::parallel::map_owned(work, parts(ids.len()), score_one);
    let mut rows = Vec::new();
    for (id, row, state) in scored.into_iter().flatten() {
        rows.extend(row);
        out.scores.insert(id, state);
    }
    Ok((out, rows))
}

/// Why `hooklake score --explain` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "contact {0} has no score: it is unknown, or scoring was off when its events were flushed"
    )]
    Unknown(i64),
}

/// `hooklake score --explain`: a contact's current score and band, and each matched rule with
/// its points, from the state store at `path`.
pub fn explain(path: &std::path::Path, contact_id: i64) -> Result<String, ExplainError> {
    let store = Store::open(path)?;
    let state = store
        .scoring(&[contact_id], &[])?
        .scores
        .remove(&contact_id)
        .ok_or(ExplainError::Unknown(contact_id))?;
    Ok(explanation(contact_id, &state))
}

/// The text of [`explain`].
fn explanation(contact_id: i64, state: &ScoreState) -> String {
    use std::fmt::Write;
    let e = &state.evaluation;
    let mut out = format!("contact {contact_id}: score {} ({})\n", e.score, e.band);
    for (id, points) in &e.matched {
        let _ = writeln!(out, "  {points:+5}  {id}");
    }
    if e.matched.is_empty() {
        out.push_str("  no rule matched\n");
    }
    let _ = writeln!(out, "  = {} points before decay and clamping", e.points);
    let last = chrono::DateTime::from_timestamp_micros(state.last_activity_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "last activity {last} ({} {}), revision {}",
        state.last_event_type, state.last_event_id, state.revision
    );
    out
}

/// The matched rules as `[{"rule": id, "points": n}, ...]`.
pub fn reasons(evaluation: &Evaluation) -> String {
    use std::fmt::Write;
    // Written directly rather than through a JSON value per rule; the text is the one
    // `serde_json` prints for `[{"rule": id, "points": n}, ...]` (keys sorted).
    let mut out = String::with_capacity(2 + 32 * evaluation.matched.len());
    out.push('[');
    for (i, (id, points)) in evaluation.matched.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"points\":{points},\"rule\":");
        // serde_json escapes only quotes, backslashes and control characters.
        if id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push('"');
            out.push_str(id);
            out.push('"');
        } else {
            out.push_str(&serde_json::to_string(id).expect("a string serializes"));
        }
        out.push('}');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lower_case_emails_as_unicode_does() {
        for email in ["Lead@Example.COM", "ÅSA@Exämple.se", "plain@x.io", "İ@x.io"] {
            assert_eq!(
                call_key(None, Some(email)),
                Some(format!("e:{}", email.to_lowercase()))
            );
            assert_eq!(
                outcome_key(None, Some(email)),
                Some(format!("e:{}", email.to_lowercase()))
            );
        }
        assert_eq!(call_key(Some("pv1"), Some("A@x.io")), Some("p:pv1".into()));
        assert_eq!(call_key(Some(""), Some("")), None);
        assert_eq!(outcome_key(Some(7), Some("A@x.io")), Some("c:7".into()));
    }

    #[test]
    fn key_hashes_are_those_of_the_keys() {
        let long = format!("{}@Example.com", "A".repeat(200));
        let hashed = |key: Option<String>| key.map(|k| key_hash(&k));
        for email in [
            "Lead@Example.COM",
            "ÅSA@Exämple.se",
            "plain@x.io",
            "",
            long.as_str(),
        ] {
            for preview in [
                None,
                Some(""),
                Some("contact_AbC123xyz987"),
                Some(long.as_str()),
            ] {
                assert_eq!(
                    call_key_hash(preview, Some(email)),
                    hashed(call_key(preview, Some(email)))
                );
            }
            for id in [
                None,
                Some(0),
                Some(7),
                Some(-42),
                Some(i64::MAX),
                Some(i64::MIN),
            ] {
                assert_eq!(
                    outcome_key_hash(id, Some(email)),
                    hashed(outcome_key(id, Some(email)))
                );
            }
        }
        assert_eq!(call_key_hash(None, None), None);
        assert_eq!(outcome_key_hash(None, None), None);
    }

    #[test]
    fn reasons_are_the_json_serde_json_prints() {
        for matched in [
            vec![],
            vec![("qualified".to_string(), 30)],
            vec![
                ("a \"quoted\" \\ rule".to_string(), -100),
                ("é\u{1}\n".to_string(), 0),
                ("del \u{7f}, tab \t, ünï".to_string(), 7),
                ("won".to_string(), i64::MIN),
            ],
        ] {
            let list: Vec<serde_json::Value> = matched
                .iter()
                .map(|(id, points)| serde_json::json!({"rule": id, "points": points}))
                .collect();
            let evaluation = Evaluation {
                matched,
                points: 0,
                score: 0,
                band: "cold".into(),
            };
            assert_eq!(
                reasons(&evaluation),
                serde_json::Value::Array(list).to_string()
            );
        }
    }
}
