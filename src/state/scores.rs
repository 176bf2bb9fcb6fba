//! What lead scoring keeps between flushes: each scored contact's last score
//! ([`ScoreState`]), and each contact key's record, its owner and the counts of calls and
//! outcomes filed under it (`keys.rs`; the keys are in `src/score/mod.rs`).
//! Invariant: written only by the commit of the flush whose rows these are (same transaction);
//! a contact or key never recorded is absent.

use std::collections::HashMap;

use redb::{ReadOnlyTable, ReadableDatabase, TableDefinition, TableError};

use super::{Store, StoreError, err, keys};
use crate::score::stored::{KeyRecord, decode_score, encode_score};
use crate::score::{KeyHash, Map, ScoreState, Scoring};

/// Contact id -> its last score ([`ScoreState`], in the form of `score/stored.rs`).
const LEAD_SCORES: TableDefinition<i64, &[u8]> = TableDefinition::new("lead_scores");
/// Reads `keys` from `table`, each found one with its value (none when the table was never
/// written); one table opened for all of them.
fn read<'k, K, V, T>(
    table: Result<ReadOnlyTable<K, V>, TableError>,
    keys: impl IntoIterator<Item = K::SelfType<'k>>,
    mut decode: impl FnMut(V::SelfType<'_>) -> Result<T, StoreError>,
    mut put: impl FnMut(K::SelfType<'k>, T),
) -> Result<(), StoreError>
where
    K: redb::Key + 'static,
    K::SelfType<'k>: Copy,
    V: redb::Value + 'static,
{
    let table = match table {
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        other => other.map_err(err("open table"))?,
    };
    for key in keys {
        if let Some(value) = table.get(key).map_err(err("read"))? {
            put(key, decode(value.value())?);
        }
    }
    Ok(())
}

/// What [`Store::scoring`] found (what was never recorded is absent).
#[derive(Debug, Default)]
pub struct ScoringRead {
    /// The last score of each contact asked for.
    pub scores: Map<i64, ScoreState>,
    /// The record of each key asked for, by hash.
    pub records: Map<KeyHash, KeyRecord>,
}

impl Store {
    /// The last scores of these contacts and the records of these keys.
    pub fn scoring(&self, contacts: &[i64], keys: &[KeyHash]) -> Result<ScoringRead, StoreError> {
        self.with_db(|db| {
            // Held from the snapshot to the last lookup: a commit changes the recent records
            // only under the write lock, with its transaction.
            let recent = self.recent_keys_read();
            let txn = db.begin_read().map_err(err("begin read"))?;
            let mut scores = Map::default();
            read(
                txn.open_table(LEAD_SCORES),
                contacts.iter().copied(),
                |b| decode_score(b).map_err(err("decode score")),
                |found, s: ScoreState| {
                    scores.insert(found, s);
                },
            )?;
            let found = keys::lookup(&recent, &txn, keys)?;
            let records = keys
                .iter()
                .zip(found)
                .filter_map(|(key, record)| Some((*key, record?)))
                .collect();
            Ok(ScoringRead { scores, records })
        })
    }

    /// How many key records a commit adding `records` writes: those, unless it merges the
    /// recent ones into a run (`keys.rs`); then at most every record of every run as well,
    /// which bounds the runs a merge of levels rewrites.
    pub fn key_records_by_commit(&self, records: usize) -> Result<u64, StoreError> {
        let memory = self.recent_keys_read();
        let recent = memory.recent.len();
        if records == 0 || recent + records < keys::RECENT_MERGE_KEYS {
            return Ok(records as u64);
        }
        Ok(memory.merged() + (recent + records) as u64)
    }

    /// Bytes of memory of lead scoring's recent key records and its runs' filters (`keys.rs`).
    pub fn score_keys_memory_bytes(&self) -> usize {
        self.recent_keys_read().bytes()
    }

    pub(super) fn recent_keys_read(&self) -> std::sync::RwLockReadGuard<'_, keys::Memory> {
        self.recent_keys.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn recent_keys_write(&self) -> std::sync::RwLockWriteGuard<'_, keys::Memory> {
        self.recent_keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every scored contact's last score (the decay pass reads them all).
    pub fn all_scores(&self) -> Result<HashMap<i64, ScoreState>, StoreError> {
        use redb::ReadableTable;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let table = match txn.open_table(LEAD_SCORES) {
                Err(TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
                other => other.map_err(err("open table"))?,
            };
            let mut out = HashMap::new();
            for entry in table.iter().map_err(err("read"))? {
                let (id, bytes) = entry.map_err(err("read"))?;
                let state = decode_score(bytes.value()).map_err(err("decode score"))?;
                out.insert(id.value(), state);
            }
            Ok(out)
        })
    }
}

/// Writes the scores a flush changed, inside that flush's commit transaction (the key
/// records are `keys::write`'s).
pub(super) fn write(txn: &redb::WriteTransaction, scoring: &Scoring) -> Result<(), StoreError> {
    if scoring.scores.is_empty() {
        return Ok(());
    }
    // In key order: neighbouring inserts meet the pages the last one touched.
    let mut bytes = Vec::with_capacity(256);
    let mut scores = txn.open_table(LEAD_SCORES).map_err(err("open table"))?;
    let mut ids: Vec<(&i64, &ScoreState)> = scoring.scores.iter().collect();
    ids.sort_unstable_by_key(|(id, _)| **id);
    for (id, state) in ids {
        bytes.clear();
        encode_score(state, &mut bytes);
        scores
            .insert(*id, bytes.as_slice())
            .map_err(err("insert"))?;
    }
    Ok(())
}
