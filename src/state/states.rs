//! The last known state of every contact and call, which change tracking reads before a flush
//! (the flush's commit writes the advanced states back).
//! Invariant: read only here; a contact or call never seen is absent, not a default state.

use std::collections::HashMap;

use crate::flatten::changes::{CallState, ContactState, ContactStates};
use redb::ReadableDatabase;

use super::{CALLS, CONTACTS, Store, StoreError, err};

/// The contact and call states a flush read and advanced.
#[derive(Debug, Default)]
pub struct States {
    pub contacts: ContactStates,
    pub calls: HashMap<String, CallState>,
    /// Dead letters whose events the flush writes: recorded as replayed by its commit.
    pub replayed: Vec<[u8; 16]>,
    /// Lead scores, counts and contact keys the flush changed (`src/score/`).
    pub scoring: crate::score::Scoring,
    /// Facts of workflow triggers the flush made: put in the outbox by its commit.
    pub outbox: Vec<crate::trigger::matching::Fact>,
    /// Keys of the delivery attempts the flush wrote to `trigger_deliveries`: removed by its
    /// commit.
    pub written_attempts: Vec<u64>,
    /// The deriver's progress: every event of `raw_events` up to this log version is derived
    /// (recorded by the commit; `None` leaves it as it was).
    pub derived_through: Option<i64>,
}

impl Store {
    /// The stored states of these contacts (contacts never seen are absent).
    pub fn contacts(
        &self,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<ContactStates, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let table = txn.open_table(CONTACTS).map_err(err("open table"))?;
            let mut states = ContactStates::default();
            for id in ids {
                if let Some(bytes) = table.get(id).map_err(err("read"))? {
                    let state =
                        ContactState::decode(bytes.value()).map_err(err("decode contact"))?;
                    states.insert(id, state);
                }
            }
            Ok(states)
        })
    }

    /// The stored slots of these calls (calls never seen are absent).
    pub fn calls<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, CallState>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let table = txn.open_table(CALLS).map_err(err("open table"))?;
            let mut states = HashMap::new();
            for id in ids {
                if let Some(bytes) = table.get(id).map_err(err("read"))? {
                    let state: CallState =
                        serde_json::from_slice(bytes.value()).map_err(err("decode call"))?;
                    states.insert(id.to_string(), state);
                }
            }
            Ok(states)
        })
    }
}
