//! What lead scoring keeps between flushes: each scored contact's last score
//! ([`ScoreState`]), the counts of calls and outcomes under each contact key, and which
//! contact owns each key (`p:<preview id>`, `e:<lower-case email>`; see `src/score/mod.rs`).
//! Invariant: written only by the commit of the flush whose rows these are (same transaction);
//! a contact, key or count never recorded is absent.

use std::collections::HashMap;

use redb::{ReadOnlyTable, ReadableDatabase, TableDefinition, TableError};

use super::{Store, StoreError, err};
use crate::score::rules::Counts;
use crate::score::stored::{decode_counts, decode_score, encode_counts, encode_score};
use crate::score::{ScoreState, Scoring};

/// Contact id -> its last score ([`ScoreState`], in the form of `score/stored.rs`).
const LEAD_SCORES: TableDefinition<i64, &[u8]> = TableDefinition::new("lead_scores");
/// Contact key -> counts of the calls and outcomes filed under it ([`Counts`], likewise).
const SCORE_COUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("score_counts");
/// Contact key (`p:`, `e:`) -> the lowest contact id that has carried it.
const SCORE_KEYS: TableDefinition<&str, i64> = TableDefinition::new("score_keys");

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

impl Store {
    /// The last scores of these contacts, the counts under these keys, and the owners of these
    /// keys (what was never recorded is absent).
    pub fn scoring(
        &self,
        contacts: &[i64],
        count_keys: &[&str],
        owner_keys: &[&str],
    ) -> Result<Scoring, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let mut out = Scoring::default();
            read(
                txn.open_table(LEAD_SCORES),
                contacts.iter().copied(),
                |b| decode_score(b).map_err(err("decode score")),
                |found, s: ScoreState| {
                    out.scores.insert(found, s);
                },
            )?;
            read(
                txn.open_table(SCORE_COUNTS),
                count_keys.iter().copied(),
                |b| decode_counts(b).map_err(err("decode counts")),
                |key, c: Counts| {
                    out.counts.insert(key.to_string(), c);
                },
            )?;
            read(
                txn.open_table(SCORE_KEYS),
                owner_keys.iter().copied(),
                Ok,
                |key, id| {
                    out.keys.insert(key.to_string(), id);
                },
            )?;
            Ok(out)
        })
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

/// Writes what a flush changed in scoring, inside that flush's commit transaction.
pub(super) fn write(txn: &redb::WriteTransaction, scoring: &Scoring) -> Result<(), StoreError> {
    if scoring.is_empty() {
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
    let mut counts = txn.open_table(SCORE_COUNTS).map_err(err("open table"))?;
    let mut keys: Vec<(&String, &Counts)> = scoring.counts.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, c) in keys {
        bytes.clear();
        encode_counts(c, &mut bytes);
        counts
            .insert(key.as_str(), bytes.as_slice())
            .map_err(err("insert"))?;
    }
    let mut keys = txn.open_table(SCORE_KEYS).map_err(err("open table"))?;
    let mut owners: Vec<(&String, &i64)> = scoring.keys.iter().collect();
    owners.sort_unstable();
    for (key, id) in owners {
        keys.insert(key.as_str(), *id).map_err(err("insert"))?;
    }
    Ok(())
}
