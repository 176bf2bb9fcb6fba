//! The commit of a flush: one write transaction recording its sequence number, the replay
//! position, the ids it wrote, the contact and call states it produced and the dead letters it
//! replayed; and the commit record read back.
//! Invariant: one transaction per flush is its commit point, and the in-memory part of the
//! index changes only after it; an error does not mean that nothing was recorded: the record,
//! read after a re-open, says.

use redb::{Database, ReadableDatabase};

use super::index::{RECENT_MERGE_IDS, append_recent, merge_recent};
use super::{CALLS, CONTACTS, META, REPLAYED, States, Store, StoreError, err};
use crate::score::stored::KeyRecord;

/// What the last committed flush recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the last committed flush (0 before the first).
    pub flush_seq: u64,
    /// First write-ahead log sequence number that may hold events not yet written.
    pub replay_from: u64,
}

/// The `meta` key of the deriver's progress (the `raw_events` version reached, plus one).
const DERIVED_THROUGH: &str = "derived_through";

impl Store {
    /// The deriver's progress: the `raw_events` log version up to which every event is
    /// derived, as the last commit recorded it (`None` before any).
    pub fn derived_through(&self) -> Result<Option<i64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let meta = txn.open_table(META).map_err(err("open table"))?;
            let stored = meta
                .get(DERIVED_THROUGH)
                .map_err(err("read"))?
                .map(|v| v.value());
            Ok(stored.filter(|v| *v > 0).map(|v| v as i64 - 1))
        })
    }

    /// The last commit record.
    pub fn committed(&self) -> Result<Committed, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let meta = txn.open_table(META).map_err(err("open table"))?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(k)
                    .map_err(err("read"))?
                    .map(|v| v.value())
                    .unwrap_or(0))
            };
            Ok(Committed {
                flush_seq: get("flush_seq")?,
                replay_from: get("replay_from")?,
            })
        })
    }

    /// Records a flush: its sequence number, the replay position, the ids it wrote (with their
    /// receive times in seconds) and the contact and call states it produced. Durable when it
    /// returns. An error does not mean that nothing was recorded: redb may have made a failed
    /// commit durable, so [`Store::committed`] (after a re-open) is the answer.
    pub fn commit(
        &self,
        record: Committed,
        ids: &[([u8; 16], u64)],
        states: &States,
    ) -> Result<(), StoreError> {
        let keys: Vec<(u128, KeyRecord)> = states
            .scoring
            .records
            .iter()
            .map(|(key, record)| (*key, *record))
            .collect();
        self.with_db(|db| {
            let mut recent_keys = self.recent_keys_write();
            let (merge, keys_merged) =
                self.commit_in(db, record, ids, states, &keys, &recent_keys.recent)?;
            recent_keys.committed(keys_merged, &keys);
            drop(recent_keys);
            let mut index = self.index_write();
            if merge {
                index.recent.clear();
            } else {
                index.recent.extend(ids.iter().map(|(id, _)| *id));
            }
            for (id, _) in ids {
                index.filter.insert(id);
            }
            index.changes += 1;
            if index.filter.is_full() {
                self.grow_filter(db, index)?;
            }
            Ok(())
        })
    }

    /// The transaction of [`Store::commit`]; returns whether it merged the recent ids into a
    /// run, and what it did to the runs of key records if it merged the recent ones
    /// (`recent_keys`) into a run.
    fn commit_in(
        &self,
        db: &Database,
        record: Committed,
        ids: &[([u8; 16], u64)],
        states: &States,
        keys: &[(u128, KeyRecord)],
        recent_keys: &super::keys::Recent,
    ) -> Result<(bool, Option<super::keys::Merged>), StoreError> {
        let txn = db.begin_write().map_err(err("begin write"))?;
        {
            let mut table = txn.open_table(CALLS).map_err(err("open table"))?;
            for (id, state) in &states.calls {
                let bytes = serde_json::to_vec(state).map_err(err("encode call"))?;
                table
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(err("insert"))?;
            }
        }
        {
            let mut table = txn.open_table(CONTACTS).map_err(err("open table"))?;
            let mut bytes = Vec::with_capacity(1024);
            for (id, state) in &states.contacts {
                bytes.clear();
                state.encode(&mut bytes);
                table.insert(*id, bytes.as_slice()).map_err(err("insert"))?;
            }
        }
        if !states.replayed.is_empty() {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let mut table = txn.open_table(REPLAYED).map_err(err("open table"))?;
            for id in &states.replayed {
                table.insert(&id[..], now).map_err(err("insert"))?;
            }
        }
        super::scores::write(&txn, &states.scoring)?;
        let keys_merged = super::keys::write(&txn, recent_keys, keys)?;
        super::outbox::write(
            &txn,
            &states.outbox,
            &states.written_attempts,
            chrono::Utc::now().timestamp_millis().max(0) as u64,
        )?;
        let recent_count = self.index_read().recent.len();
        let merge = recent_count + ids.len() >= RECENT_MERGE_IDS;
        if merge {
            merge_recent(&txn, ids)?;
        } else {
            append_recent(&txn, ids)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(err("open table"))?;
            meta.insert("flush_seq", record.flush_seq)
                .map_err(err("insert"))?;
            meta.insert("replay_from", record.replay_from)
                .map_err(err("insert"))?;
            if let Some(version) = states.derived_through {
                // Stored plus one, so that 0 (the default of a missing key) means none.
                meta.insert(DERIVED_THROUGH, version.max(-1) as u64 + 1)
                    .map_err(err("insert"))?;
            }
        }
        txn.commit().map_err(err("commit"))?;
        Ok((merge, keys_merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::changes::{CallState, ContactState};
    use crate::state::testutil::flush;
    use crate::state::{Fault, id_bytes};

    #[test]
    fn a_commit_that_reports_a_failed_sync_may_be_recorded_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        store.simulate_fault(Fault::Syncs);
        let failed = store
            .commit(flush(1), &[([1; 16], 1)], &States::default())
            .unwrap_err();
        assert!(failed.is_io(), "{failed}");
        store.simulate_fault(Fault::None);
        store.reopen().unwrap();
        // The writes reached the file before the sync failed: the commit is there, and the
        // in-memory index, reloaded from the file, knows its ids.
        assert_eq!(store.committed().unwrap(), flush(1));
        assert_eq!(store.seen(&[[1; 16]]).unwrap(), [true]);
    }

    #[test]
    fn commits_survive_reopen_and_purge_forgets_old_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let a = id_bytes("00112233445566778899aabbccddeeff");
        let b = id_bytes("ffeeddccbbaa99887766554433221100");
        // A column, a group attribute, and a time for an attribute cleared since.
        let contact: ContactState = serde_json::from_value(serde_json::json!({
            "event_time_us": 1, "event_id": "e", "status_since_us": null,
            "values": {"status": "QUALIFIED", "param:gclid": "x"},
            "set_at": {"status": 1, "email": 1},
        }))
        .unwrap();
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.committed().unwrap(), Committed::default());
            let mut states = States::default();
            states.contacts.insert(7, contact.clone());
            states.calls.insert(
                "c".into(),
                CallState {
                    event_time_us: 2,
                    start_at_us: Some(3),
                },
            );
            let record = Committed {
                flush_seq: 1,
                replay_from: 5,
            };
            store
                .commit(record, &[(a, 100), (b, 200)], &states)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.committed().unwrap(),
            Committed {
                flush_seq: 1,
                replay_from: 5
            }
        );
        let contacts = store.contacts([7, 8]).unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[&7], contact);
        assert_eq!(contacts[&7].set_at().len(), 2);
        assert_eq!(store.calls(["c", "d"]).unwrap()["c"].start_at_us, Some(3));
        assert_eq!(
            store.seen(&[a, b, [0; 16]]).unwrap(),
            vec![true, true, false]
        );
        assert_eq!(store.purge_before(150).unwrap(), 1);
        assert_eq!(store.seen(&[a, b]).unwrap(), vec![false, true]);
        assert_eq!(store.seen_count().unwrap(), 1);
    }
}
