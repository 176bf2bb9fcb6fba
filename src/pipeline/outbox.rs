//! The pipeline's side of workflow triggers: a flush's facts (matched against the contact
//! states it advanced, put in the outbox by its commit), the delivery attempts it writes to
//! `trigger_deliveries`, the sender's handle, and `triggers retry`.
//! Invariant: facts and written attempts go into the state store only through a flush's commit;
//! a flush that fails leaves its attempts for the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use crate::flatten::changes::ContactStates;
use crate::flatten::table::{Micros, Text};
use crate::flatten::{Tables, TriggerDeliveryRow};
use crate::score::stored::KeyRecord;
use crate::state::{Attempt, Store, StoreError};
use crate::trigger::matching::{self, Contacts, Fact};
use crate::trigger::{DeliveryConfig, Triggers, deliver::Deliverer};

use super::Pipeline;

/// Most attempts one flush writes (the rest wait for the next).
pub(super) const ATTEMPTS_PER_FLUSH: usize = 100_000;

/// A flush's view of contacts: the states and key owners it advanced, else the store's. A store
/// error is kept (the first one), and fails the flush: a fact must not lose its contact, and so
/// its filter.
struct FlushContacts<'a> {
    states: &'a ContactStates,
    records: &'a crate::score::Map<crate::score::KeyHash, KeyRecord>,
    store: &'a Store,
    error: std::cell::RefCell<Option<StoreError>>,
}

impl FlushContacts<'_> {
    fn keep<T>(&self, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }
}

fn snapshot_of(id: i64, state: &crate::flatten::changes::ContactState) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("contact_id".into(), id.into());
    for (k, v) in state.values() {
        m.insert(k, Value::String(v));
    }
    m
}

impl Contacts for FlushContacts<'_> {
    fn snapshot(&self, id: i64) -> Option<Map<String, Value>> {
        if let Some(state) = self.states.get(&id) {
            return Some(snapshot_of(id, state));
        }
        let stored = self.keep(self.store.contacts([id]))?;
        stored.get(&id).map(|s| snapshot_of(id, s))
    }

    fn owner(&self, key: &str) -> Option<i64> {
        let hash = crate::state::key_hash(key);
        if let Some(record) = self.records.get(&hash) {
            return record.owner;
        }
        self.keep(self.store.scoring(&[], &[hash]))?
            .records
            .get(&hash)?
            .owner
    }
}

/// The facts of `tables` for `triggers`; `states` are the contacts the flush advanced,
/// `records` the key records (owners and counts) lead scoring changed.
pub(super) fn facts(
    triggers: &Triggers,
    tables: &Tables,
    states: &ContactStates,
    records: &crate::score::Map<crate::score::KeyHash, KeyRecord>,
    store: &Store,
) -> Result<Vec<Fact>, StoreError> {
    let contacts = FlushContacts {
        states,
        records,
        store,
        error: Default::default(),
    };
    let facts = matching::facts(triggers, tables, &contacts);
    match contacts.error.into_inner() {
        Some(e) => Err(e),
        None => Ok(facts),
    }
}

/// The `trigger_deliveries` row of an attempt.
pub(super) fn delivery_row(a: &Attempt) -> TriggerDeliveryRow {
    TriggerDeliveryRow {
        trigger: Text::from(a.trigger.as_str()),
        webhook_id: Text::from(a.webhook_id.as_str()),
        attempt: i64::from(a.attempt),
        event_time: Micros(a.attempted_at_us),
        fact_table: Text::from(a.fact_table.as_str()),
        event_id: Text::from(a.event_id.as_str()),
        status_code: a.status_code.map(i64::from),
        error: a.error.as_deref().map(Text::from),
        latency_ms: Some(a.latency_ms),
        outcome: Text::from(a.outcome.as_str()),
        next_attempt_at: a.next_attempt_at_us.map(Micros),
    }
}

impl Pipeline {
    /// The attempts the next flush writes (with their keys), if the sender recorded any since
    /// the last look; the flag stays set while more wait.
    pub(super) fn take_attempts(&self) -> Result<Vec<(u64, Attempt)>, StoreError> {
        if !self.attempts_waiting.swap(false, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        match self.store.unwritten_attempts(ATTEMPTS_PER_FLUSH) {
            Ok(attempts) => {
                if attempts.len() == ATTEMPTS_PER_FLUSH {
                    self.attempts_waiting.store(true, Ordering::Release);
                }
                Ok(attempts)
            }
            Err(e) => {
                self.attempts_waiting.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// After a flush that took attempts failed: they are still in the store, for the next.
    pub(super) fn attempts_left(&self) {
        self.attempts_waiting.store(true, Ordering::Release);
    }

    /// After a commit that put facts in the outbox: the sender looks now.
    pub(super) fn facts_committed(&self, facts: &[Fact]) {
        if facts.is_empty() {
            return;
        }
        for f in facts {
            self.metrics
                .add("hooklake_trigger_facts_total", &f.trigger, 1);
        }
        self.trigger_wake.notify_one();
    }

    /// The sender of the outbox, when triggers are configured.
    pub fn deliverer(&self, config: &DeliveryConfig) -> Option<Arc<Deliverer>> {
        let triggers = self.triggers.clone()?;
        Some(Arc::new(Deliverer::new(
            self.store.clone(),
            triggers,
            config.clone(),
            self.trigger_wake.clone(),
            self.attempts_waiting.clone(),
            self.metrics.clone(),
        )))
    }

    /// Puts given-up deliveries back in line (`hooklake triggers retry`): those of `trigger`
    /// (all when `None`) that entered the outbox at or after `since_ms`.
    pub fn retry_given_up(
        &self,
        trigger: Option<&str>,
        since_ms: u64,
    ) -> Result<usize, StoreError> {
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let n = self.store.retry_given_up(trigger, since_ms, now)?;
        if n > 0 {
            self.trigger_wake.notify_one();
        }
        Ok(n)
    }

    /// Carries the outbox of the store at `path` and the delivery `history` over (a rebuild);
    /// the next flush writes the history and the copied attempts to `trigger_deliveries`.
    pub fn import_outbox(
        &self,
        path: &std::path::Path,
        history: &[Attempt],
    ) -> Result<usize, StoreError> {
        let n = self.store.import_outbox(path, history)?;
        self.attempts_left();
        Ok(n)
    }

    /// The outbox as it stands (tests, and `/admin/triggers`).
    pub fn outbox(&self) -> Result<Vec<crate::state::Entry>, StoreError> {
        self.store.outbox_entries()
    }
}
