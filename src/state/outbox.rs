//! The workflow triggers' outbox: each fact waiting for delivery (or given up), the index of
//! when each is due, and the attempts made since the last flush, which that flush writes to
//! `trigger_deliveries` and removes in its own commit.
//! Invariant: a fact enters the outbox only in the commit of the flush that made it, once per
//! `webhook-id` (a fact made again keeps its entry and its attempts); an entry is due exactly
//! when it is neither delivered nor given up; an attempt is recorded in the same transaction as
//! the entry's new state.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, err};
use crate::trigger::matching::Fact;

/// `webhook-id` -> its [`Entry`] as JSON.
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("trigger_outbox");
/// (due time in Unix milliseconds, trigger, `webhook-id`) -> nothing: the entries waiting for an
/// attempt, earliest first; the trigger lets the sender skip those whose target is busy without
/// reading them.
const DUE: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("trigger_due");
/// Counter -> an [`Attempt`] as JSON, until a flush writes it to `trigger_deliveries`.
const ATTEMPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("trigger_attempts");

/// A fact in the outbox and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub fact: Fact,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before the current round (`hooklake triggers retry` starts a new round,
    /// and the retry schedule from its beginning).
    pub round_start: u32,
    /// When the next attempt is due (Unix milliseconds); meaningless once given up.
    pub next_at_ms: u64,
    pub given_up: bool,
    /// When the fact entered the outbox (Unix milliseconds).
    pub created_ms: u64,
}

/// One delivery attempt, as `trigger_deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub trigger: String,
    pub webhook_id: String,
    pub fact_table: String,
    pub event_id: String,
    /// 1 for the first attempt of a fact, then one more each time.
    pub attempt: u32,
    /// Unix microseconds.
    pub attempted_at_us: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
    /// `delivered`, `retrying` or `given_up`.
    pub outcome: String,
    /// Unix microseconds, when retrying.
    pub next_attempt_at_us: Option<i64>,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    /// Try again at this time (Unix milliseconds).
    RetryAt(u64),
    GivenUp,
}

/// Opens `def` for reading; `None` when it was never written.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(err("open table")(e)),
    }
}

fn decode(bytes: &[u8]) -> Result<Entry, StoreError> {
    serde_json::from_slice(bytes).map_err(err("decode outbox entry"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(err("encode outbox"))
}

/// In a flush's commit: puts each new fact in the outbox, due now; removes the attempts the
/// flush wrote to `trigger_deliveries`.
pub(super) fn write(
    txn: &redb::WriteTransaction,
    facts: &[Fact],
    written_attempts: &[u64],
    now_ms: u64,
) -> Result<(), StoreError> {
    if !facts.is_empty() {
        let mut outbox = txn.open_table(OUTBOX).map_err(err("open table"))?;
        let mut due = txn.open_table(DUE).map_err(err("open table"))?;
        for fact in facts {
            if outbox
                .get(fact.webhook_id.as_str())
                .map_err(err("read"))?
                .is_some()
            {
                continue;
            }
            let entry = Entry {
                fact: fact.clone(),
                attempts: 0,
                round_start: 0,
                next_at_ms: now_ms,
                given_up: false,
                created_ms: now_ms,
            };
            outbox
                .insert(fact.webhook_id.as_str(), encode(&entry)?.as_slice())
                .map_err(err("insert"))?;
            due.insert(
                (now_ms, fact.trigger.as_str(), fact.webhook_id.as_str()),
                (),
            )
            .map_err(err("insert"))?;
        }
    }
    if !written_attempts.is_empty() {
        let mut attempts = txn.open_table(ATTEMPTS).map_err(err("open table"))?;
        for key in written_attempts {
            attempts.remove(*key).map_err(err("remove"))?;
        }
    }
    Ok(())
}

impl Store {
    /// Up to `limit` entries due at `now_ms` that `take` accepts (given their trigger and id),
    /// earliest first; only those are read.
    pub fn due_deliveries(
        &self,
        now_ms: u64,
        limit: usize,
        mut take: impl FnMut(&str, &str) -> bool,
    ) -> Result<Vec<Entry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let (Some(due), Some(outbox)) = (open_read(&txn, DUE)?, open_read(&txn, OUTBOX)?)
            else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in due
                .range(..(now_ms.saturating_add(1), "", ""))
                .map_err(err("read"))?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = item.map_err(err("read"))?;
                let (_, trigger, id) = key.value();
                if !take(trigger, id) {
                    continue;
                }
                if let Some(bytes) = outbox.get(id).map_err(err("read"))? {
                    out.push(decode(bytes.value())?);
                }
            }
            Ok(out)
        })
    }

    /// When the earliest waiting entry is due (Unix milliseconds), and how many are waiting.
    pub fn next_delivery(&self) -> Result<(Option<u64>, u64), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let Some(due) = open_read(&txn, DUE)? else {
                return Ok((None, 0));
            };
            let first = due.first().map_err(err("read"))?.map(|(k, _)| k.value().0);
            Ok((first, due.len().map_err(err("read"))?))
        })
    }

    /// Records an attempt at delivering `id` and what comes next; false (nothing recorded) when
    /// the entry is not waiting any more.
    pub fn record_attempt(
        &self,
        id: &str,
        attempt: &Attempt,
        next: Next,
    ) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            {
                let mut outbox = txn.open_table(OUTBOX).map_err(err("open table"))?;
                let Some(mut entry) = outbox
                    .get(id)
                    .map_err(err("read"))?
                    .map(|b| decode(b.value()))
                    .transpose()?
                else {
                    return Ok(false);
                };
                if entry.given_up {
                    return Ok(false);
                }
                let mut due = txn.open_table(DUE).map_err(err("open table"))?;
                let trigger = entry.fact.trigger.clone();
                due.remove((entry.next_at_ms, trigger.as_str(), id))
                    .map_err(err("remove"))?;
                entry.attempts = attempt.attempt;
                match next {
                    Next::Delivered => {
                        outbox.remove(id).map_err(err("remove"))?;
                    }
                    Next::RetryAt(at) => {
                        entry.next_at_ms = at;
                        due.insert((at, trigger.as_str(), id), ())
                            .map_err(err("insert"))?;
                        outbox
                            .insert(id, encode(&entry)?.as_slice())
                            .map_err(err("insert"))?;
                    }
                    Next::GivenUp => {
                        entry.given_up = true;
                        outbox
                            .insert(id, encode(&entry)?.as_slice())
                            .map_err(err("insert"))?;
                    }
                }
                let mut attempts = txn.open_table(ATTEMPTS).map_err(err("open table"))?;
                let key = attempts
                    .last()
                    .map_err(err("read"))?
                    .map_or(0, |(k, _)| k.value() + 1);
                attempts
                    .insert(key, encode(attempt)?.as_slice())
                    .map_err(err("insert"))?;
            }
            txn.commit().map_err(err("commit"))?;
            Ok(true)
        })
    }

    /// Puts given-up entries back in line, due now, with the retry schedule from its start:
    /// those of `trigger` (all when `None`) whose fact entered the outbox at or after
    /// `since_ms`. Returns how many.
    pub fn retry_given_up(
        &self,
        trigger: Option<&str>,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            let mut count = 0;
            {
                let mut outbox = txn.open_table(OUTBOX).map_err(err("open table"))?;
                let mut again = Vec::new();
                for item in outbox.iter().map_err(err("read"))? {
                    let (k, v) = item.map_err(err("read"))?;
                    let entry = decode(v.value())?;
                    if entry.given_up
                        && trigger.is_none_or(|t| t == entry.fact.trigger)
                        && entry.created_ms >= since_ms
                    {
                        again.push((k.value().to_string(), entry));
                    }
                }
                let mut due = txn.open_table(DUE).map_err(err("open table"))?;
                for (id, mut entry) in again {
                    entry.given_up = false;
                    entry.round_start = entry.attempts;
                    entry.next_at_ms = now_ms;
                    outbox
                        .insert(id.as_str(), encode(&entry)?.as_slice())
                        .map_err(err("insert"))?;
                    due.insert((now_ms, entry.fact.trigger.as_str(), id.as_str()), ())
                        .map_err(err("insert"))?;
                    count += 1;
                }
            }
            txn.commit().map_err(err("commit"))?;
            Ok(count)
        })
    }

    /// Forgets the given-up entries whose fact entered the outbox before `before_ms`; returns
    /// how many.
    pub fn purge_given_up(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            let purged;
            {
                let mut outbox = txn.open_table(OUTBOX).map_err(err("open table"))?;
                let mut old = Vec::new();
                for item in outbox.iter().map_err(err("read"))? {
                    let (k, v) = item.map_err(err("read"))?;
                    let entry = decode(v.value())?;
                    if entry.given_up && entry.created_ms < before_ms {
                        old.push(k.value().to_string());
                    }
                }
                for id in &old {
                    outbox.remove(id.as_str()).map_err(err("remove"))?;
                }
                purged = old.len();
            }
            txn.commit().map_err(err("commit"))?;
            Ok(purged)
        })
    }

    /// Up to `limit` attempts not yet written to `trigger_deliveries`, with their keys.
    pub fn unwritten_attempts(&self, limit: usize) -> Result<Vec<(u64, Attempt)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let Some(table) = open_read(&txn, ATTEMPTS)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in table.iter().map_err(err("read"))?.take(limit) {
                let (k, v) = item.map_err(err("read"))?;
                let attempt = serde_json::from_slice(v.value()).map_err(err("decode attempt"))?;
                out.push((k.value(), attempt));
            }
            Ok(out)
        })
    }

    /// The outbox entry of `id`, if there is one.
    pub fn outbox_entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let Some(table) = open_read(&txn, OUTBOX)? else {
                return Ok(None);
            };
            let entry = table.get(id).map_err(err("read"))?;
            entry.map(|b| decode(b.value())).transpose()
        })
    }

    /// Every entry of the outbox (for tests and `hooklake triggers`).
    pub fn outbox_entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let Some(table) = open_read(&txn, OUTBOX)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in table.iter().map_err(err("read"))? {
                let (_, v) = item.map_err(err("read"))?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
    }
}

impl Store {
    /// Copies the outbox and the unwritten attempts of the store at `path` (a rebuild carrying
    /// them over), then appends `history` (attempts already in `trigger_deliveries`) to the
    /// attempts the next flush writes. Returns the number of outbox entries copied.
    pub fn import_outbox(
        &self,
        path: &std::path::Path,
        history: &[Attempt],
    ) -> Result<usize, StoreError> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut due: Vec<(u64, String, String)> = Vec::new();
        let mut attempts: Vec<Vec<u8>> = Vec::new();
        if path.exists() {
            let db = redb::Builder::new()
                .set_cache_size(super::open::CACHE_BYTES)
                .open(path)
                .map_err(err("open"))?;
            let txn = db.begin_read().map_err(err("begin read"))?;
            if let Some(t) = open_read(&txn, OUTBOX)? {
                for item in t.iter().map_err(err("read"))? {
                    let (k, v) = item.map_err(err("read"))?;
                    entries.push((k.value().to_string(), v.value().to_vec()));
                }
            }
            if let Some(t) = open_read(&txn, DUE)? {
                for item in t.iter().map_err(err("read"))? {
                    let (k, _) = item.map_err(err("read"))?;
                    let (at, trigger, id) = k.value();
                    due.push((at, trigger.to_string(), id.to_string()));
                }
            }
            if let Some(t) = open_read(&txn, ATTEMPTS)? {
                for item in t.iter().map_err(err("read"))? {
                    let (_, v) = item.map_err(err("read"))?;
                    attempts.push(v.value().to_vec());
                }
            }
        }
        for a in history {
            attempts.push(encode(a)?);
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            {
                let mut outbox = txn.open_table(OUTBOX).map_err(err("open table"))?;
                for (id, bytes) in &entries {
                    outbox
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(err("insert"))?;
                }
                let mut due_table = txn.open_table(DUE).map_err(err("open table"))?;
                for (at, trigger, id) in &due {
                    due_table
                        .insert((*at, trigger.as_str(), id.as_str()), ())
                        .map_err(err("insert"))?;
                }
                let mut table = txn.open_table(ATTEMPTS).map_err(err("open table"))?;
                let first = table
                    .last()
                    .map_err(err("read"))?
                    .map_or(0, |(k, _)| k.value() + 1);
                for (key, bytes) in (first..).zip(&attempts) {
                    table.insert(key, bytes.as_slice()).map_err(err("insert"))?;
                }
            }
            txn.commit().map_err(err("commit"))?;
            Ok(entries.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Committed, States};

    fn fact(id: &str, trigger: &str) -> Fact {
        Fact {
            webhook_id: id.to_string(),
            trigger: trigger.to_string(),
            table: "status_transitions".to_string(),
            event_id: format!("e-{id}"),
            event_time_us: 1,
            row: serde_json::json!({"event_id": format!("e-{id}")}),
            contact: None,
        }
    }

    fn attempt(e: &Entry, outcome: &str) -> Attempt {
        Attempt {
            trigger: e.fact.trigger.clone(),
            webhook_id: e.fact.webhook_id.clone(),
            fact_table: e.fact.table.clone(),
            event_id: e.fact.event_id.clone(),
            attempt: e.attempts + 1,
            attempted_at_us: 5,
            status_code: Some(500),
            error: Some("HTTP 500".into()),
            latency_ms: 1.0,
            outcome: outcome.to_string(),
            next_attempt_at_us: None,
        }
    }

    fn commit(store: &Store, seq: u64, facts: Vec<Fact>, written: Vec<u64>) {
        let states = States {
            outbox: facts,
            written_attempts: written,
            ..States::default()
        };
        store
            .commit(
                Committed {
                    flush_seq: seq,
                    replay_from: 0,
                },
                &[],
                &states,
            )
            .unwrap();
    }

    #[test]
    fn facts_wait_until_delivered_or_given_up_and_attempts_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert!(
            store
                .due_deliveries(u64::MAX, 10, |_, _| true)
                .unwrap()
                .is_empty()
        );
        commit(&store, 1, vec![fact("a", "t1"), fact("b", "t2")], vec![]);
        let due = store.due_deliveries(u64::MAX, 10, |_, _| true).unwrap();
        assert_eq!(due.len(), 2);
        // Made again (a flush rewritten after a crash): the entry is kept as it is.
        let a = due
            .iter()
            .find(|e| e.fact.webhook_id == "a")
            .unwrap()
            .clone();
        assert!(
            store
                .record_attempt(
                    "a",
                    &attempt(&a, "retrying"),
                    Next::RetryAt(a.next_at_ms + 60_000)
                )
                .unwrap()
        );
        commit(&store, 2, vec![fact("a", "t1")], vec![]);
        let entries = store.outbox_entries().unwrap();
        assert_eq!(entries.len(), 2);
        let a = entries
            .iter()
            .find(|e| e.fact.webhook_id == "a")
            .unwrap()
            .clone();
        assert_eq!(a.attempts, 1);
        // Due later now: not in the first pass, in one after its time.
        let now = a.next_at_ms - 60_000;
        let ids: Vec<String> = store
            .due_deliveries(now, 10, |_, _| true)
            .unwrap()
            .into_iter()
            .map(|e| e.fact.webhook_id)
            .collect();
        assert_eq!(ids, ["b"]);
        assert_eq!(store.next_delivery().unwrap(), (Some(now), 2));
        // Only what the sender can take is read: nothing of a busy trigger.
        assert!(
            store
                .due_deliveries(now, 10, |t, _| t != "t2")
                .unwrap()
                .is_empty()
        );
        // b delivered: gone; a given up: kept, not due.
        let b = store
            .due_deliveries(now, 10, |_, _| true)
            .unwrap()
            .remove(0);
        assert!(
            store
                .record_attempt("b", &attempt(&b, "delivered"), Next::Delivered)
                .unwrap()
        );
        assert!(
            store
                .record_attempt("a", &attempt(&a, "given_up"), Next::GivenUp)
                .unwrap()
        );
        assert!(
            !store
                .record_attempt("a", &attempt(&a, "given_up"), Next::GivenUp)
                .unwrap()
        );
        assert!(
            store
                .due_deliveries(u64::MAX, 10, |_, _| true)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_delivery().unwrap(), (None, 0));
        let left = store.outbox_entries().unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].given_up && left[0].attempts == 2);
        // Three attempts wait to be written; a flush writes two of them.
        let waiting = store.unwritten_attempts(10).unwrap();
        assert_eq!(waiting.len(), 3);
        commit(
            &store,
            3,
            vec![],
            waiting.iter().take(2).map(|(k, _)| *k).collect(),
        );
        let rest = store.unwritten_attempts(10).unwrap();
        assert_eq!(rest, waiting[2..].to_vec());
        // Given-up entries are forgotten once older than the cut-off, not before.
        assert_eq!(store.purge_given_up(left[0].created_ms).unwrap(), 0);
        // Retry: only the named trigger's, and only those since the time given.
        assert_eq!(store.retry_given_up(Some("t2"), 0, 7).unwrap(), 0);
        assert_eq!(store.retry_given_up(Some("t1"), u64::MAX, 7).unwrap(), 0);
        assert_eq!(store.retry_given_up(Some("t1"), 0, 7).unwrap(), 1);
        let again = store.due_deliveries(7, 10, |_, _| true).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].attempts, again[0].round_start, again[0].given_up),
            (2, 2, false)
        );

        // A rebuild carries the outbox and the attempts over, and the history after them.
        let other = Store::open(&dir.path().join("t.redb")).unwrap();
        drop(store);
        let history = vec![attempt(&a, "retrying")];
        assert_eq!(
            other
                .import_outbox(&dir.path().join("s.redb"), &history)
                .unwrap(),
            1
        );
        assert_eq!(other.due_deliveries(7, 10, |_, _| true).unwrap(), again);
        let carried = other.unwritten_attempts(10).unwrap();
        assert_eq!(carried.len(), 2);
        assert_eq!(carried[0].1, rest[0].1);
        assert_eq!(carried[1].1, history[0]);
        // Given up again, then forgotten once past the cut-off.
        let e = &again[0];
        let last = Attempt {
            attempt: e.attempts + 1,
            ..attempt(e, "given_up")
        };
        assert!(
            other
                .record_attempt(&e.fact.webhook_id, &last, Next::GivenUp)
                .unwrap()
        );
        assert_eq!(other.purge_given_up(e.created_ms + 1).unwrap(), 1);
        assert!(other.outbox_entries().unwrap().is_empty());
    }
}
