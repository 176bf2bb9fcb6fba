//! Lead scoring's contact keys (`p:<preview id>`, `e:<lower-case email>`, `c:<contact id>`;
//! `src/score/mod.rs`): each key's record, its owner and the counts filed under it
//! ([`KeyRecord`]), found by the key's 128-bit XXH3 hash.
//!
//! Two parts, like the dedup index. The records a flush changes go to `score_keys_recent`,
//! all in one value keyed by a counter, and into a copy in memory that lookups read first.
//! Once [`RECENT_MERGE_KEYS`] records are recent, a commit writes them, in hash order, as a new
//! run (`keyruns.rs`: a table of blocks of records) and empties `score_keys_recent`; runs are
//! tiered, four of a level merged into one of the next, so a record is rewritten once per
//! level it climbs, where one table holding every merged record had most of its leaves
//! rewritten at every merge (real keys are random strings, spread over the whole table).
//! Stores of format 3 kept merged records in that one table (`score_key_records`), and earlier
//! ones owners (`score_keys`) and counts (`score_counts`) under the key text; opening such a
//! store makes them a run and drops the old tables.
//! Invariant: the copy in memory is the records of `score_keys_recent` as committed, and
//! changes only under the write lock taken before the commit that changes the tables; a record
//! in it is newer than any of the same key in a run.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};

use super::codec::{DecodeError, decode_binary};
use super::keyruns::{self, Finder, Run};
use super::{StoreError, err};
use crate::score::stored::{KeyRecord, decode_counts, put_record, read_record};

/// Key hash -> the key's record (a format byte, then [`put_record`]'s form): where stores of
/// format 3 kept the merged records; made a run when opened.
const LEGACY_RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("score_key_records");
/// Counter -> the records one commit changed: a format byte, then each key's hash (16 bytes,
/// little-endian) and record.
pub(super) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("score_keys_recent");
/// Key text -> its owner, as earlier versions kept it.
const LEGACY_OWNERS: TableDefinition<&str, i64> = TableDefinition::new("score_keys");
/// Key text -> its counts (`score/stored.rs`), as earlier versions kept them.
const LEGACY_COUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("score_counts");

/// Recent records written as one run at once (their map in memory takes up to
/// 16 MiB: 2^18 slots of 64 bytes; twice as many took 38 MiB more at the peak of a
/// million-event replay, the merge's copies included).
/// The library's own tests merge at 64, so that they cross merges.
pub const RECENT_MERGE_KEYS: usize = if cfg!(test) { 64 } else { 1 << 17 };

/// First byte of a stored record and of a batch of recent ones.
const FORMAT: u8 = 1;

/// The recent records, by key hash.
pub type Recent = HashMap<u128, KeyRecord, ahash::RandomState>;

/// The in-memory part: the recent records, and the runs, newest (highest id) first.
pub(super) struct Memory {
    pub(super) recent: Recent,
    runs: Vec<Run>,
}

/// What a commit that merged did to the runs: those it wrote (with their filters) and the ids
/// of those it merged away.
#[derive(Default)]
pub(super) struct Merged {
    added: Vec<Run>,
    removed: Vec<u64>,
}

impl Memory {
    /// Bytes of memory the recent records' map and the runs' filters take (the map's slots
    /// counted whole, 64 bytes each: a key hash and its record).
    pub(super) fn bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<(u128, KeyRecord)>()
            + self.runs.iter().map(|r| r.filter.bytes()).sum::<usize>()
    }

    /// After a commit that recorded `records`: kept as recent, or, when it merged, the runs
    /// follow what it did and the recent records are gone into them.
    pub(super) fn committed(&mut self, merged: Option<Merged>, records: &[(u128, KeyRecord)]) {
        let Some(merged) = merged else {
            self.recent.extend(records.iter().copied());
            return;
        };
        self.recent.clear();
        self.runs.retain(|r| !merged.removed.contains(&r.id));
        self.runs.extend(merged.added);
        self.runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
    }

    /// How many records the runs hold.
    pub(super) fn merged(&self) -> u64 {
        self.runs.iter().map(|r| r.count).sum()
    }

    /// The runs of each level, for tests: (level, runs) in level order.
    #[cfg(test)]
    fn levels(&self) -> Vec<(u64, usize)> {
        let mut out: BTreeMap<u64, usize> = BTreeMap::new();
        for r in &self.runs {
            *out.entry(r.level).or_default() += 1;
        }
        out.into_iter().collect()
    }
}

/// How many records the runs hold in `txn`'s snapshot.
#[cfg(test)]
fn merged_count(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let runs = super::runs::list(&txn.open_table(keyruns::RUNS).map_err(err("open table"))?)?;
    Ok(runs.iter().map(|(_, _, count)| count).sum())
}

/// The hash a key is stored under: XXH3's 128 bits, so that two keys of one store sharing a
/// hash is as unlikely as two event ids sharing one (about 2^-64 at 2^32 keys).
pub fn key_hash(key: &str) -> u128 {
    key_hash_bytes(key.as_bytes())
}

/// [`key_hash`] of a key's bytes.
pub fn key_hash_bytes(key: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(key)
}

fn damaged(e: DecodeError) -> StoreError {
    err("read key record")(e)
}

/// Reads a batch of recent records, in the order written.
fn batch(bytes: &[u8]) -> Result<Vec<(u128, KeyRecord)>, StoreError> {
    decode_binary(bytes, FORMAT, "recent key records", |r| {
        let mut out = Vec::new();
        while r.left() > 0 {
            let mut hash = [0u8; 16];
            for b in &mut hash {
                *b = r.byte()?;
            }
            out.push((u128::from_le_bytes(hash), read_record(r)?));
        }
        Ok(out)
    })
    .map_err(damaged)
}

/// Reads one stored record of format 3's merged table.
fn stored(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    decode_binary(bytes, FORMAT, "key record", read_record).map_err(damaged)
}

/// The in-memory part of the store in `txn`: its recent records as committed (later batches
/// replace earlier records) and the runs with their filters (each run read once).
pub(super) fn load(txn: &redb::ReadTransaction) -> Result<Memory, StoreError> {
    let mut recent = Recent::default();
    match txn.open_table(RECENT) {
        Err(TableError::TableDoesNotExist(_)) => {}
        other => {
            for entry in other
                .map_err(err("open table"))?
                .iter()
                .map_err(err("scan"))?
            {
                let (_, value) = entry.map_err(err("scan"))?;
                recent.extend(batch(value.value())?);
            }
        }
    }
    let runs = keyruns::load(txn)?;
    Ok(Memory { recent, runs })
}

/// The records of `hashes`, in their order (none for a key never recorded): the recent copy
/// first, then the runs of `txn`'s snapshot, newest first.
pub(super) fn lookup(
    memory: &Memory,
    txn: &redb::ReadTransaction,
    hashes: &[u128],
) -> Result<Vec<Option<KeyRecord>>, StoreError> {
    let mut finder = Finder::new(&memory.runs);
    hashes
        .iter()
        .map(|hash| match memory.recent.get(hash) {
            Some(record) => Ok(Some(*record)),
            None => finder.find(txn, *hash),
        })
        .collect()
}

/// Records `records` (hash order not needed) in `txn`: appended to `score_keys_recent`, or,
/// once the `recent` ones (the copy in memory) and they reach [`RECENT_MERGE_KEYS`], written
/// with every recent record as a new run, and the runs of any level that reaches four
/// merged. Returns what it did to the runs when it merged.
pub(super) fn write(
    txn: &WriteTransaction,
    recent: &Recent,
    records: &[(u128, KeyRecord)],
) -> Result<Option<Merged>, StoreError> {
    if records.is_empty() {
        return Ok(None);
    }
    let mut table = txn.open_table(RECENT).map_err(err("open table"))?;
    if recent.len() + records.len() < RECENT_MERGE_KEYS {
        let next = table
            .last()
            .map_err(err("read"))?
            .map_or(0, |(k, _)| k.value() + 1);
        let mut value = Vec::with_capacity(1 + records.len() * 24);
        value.push(FORMAT);
        for (hash, record) in records {
            value.extend_from_slice(&hash.to_le_bytes());
            put_record(record, &mut value);
        }
        table
            .insert(next, value.as_slice())
            .map_err(err("insert"))?;
        return Ok(None);
    }
    // The newest record of each key, this commit's else the recent one, in hash order.
    let mut mine = records.to_vec();
    // Stable, then reversed: the last given of a key's records stays.
    mine.sort_by_key(|(hash, _)| *hash);
    mine.reverse();
    mine.dedup_by_key(|(hash, _)| *hash);
    let mut newest: Vec<(u128, KeyRecord)> = Vec::with_capacity(recent.len() + mine.len());
    newest.extend(
        recent
            .iter()
            .filter(|(hash, _)| mine.binary_search_by(|(h, _)| hash.cmp(&h)).is_err())
            .map(|(hash, record)| (*hash, *record)),
    );
    newest.append(&mut mine);
    newest.sort_unstable_by_key(|(hash, _)| *hash);
    let run = keyruns::write(txn, 0, newest.len() as u64, newest.into_iter().map(Ok))?;
    table.retain(|_, _| false).map_err(err("clear"))?;
    let (mut added, removed) = keyruns::cascade(txn)?;
    if !removed.contains(&run.id) {
        added.push(run);
    }
    Ok(Some(Merged { added, removed }))
}

/// Makes the records of earlier versions a run: those of format 3's merged table, or those
/// kept under the key text (owners and counts, in two tables) before; drops the old tables.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut all: BTreeMap<u128, KeyRecord> = BTreeMap::new();
    {
        // Opened for writing, a table that does not exist is created, empty, and dropped below.
        let merged = txn.open_table(LEGACY_RECORDS).map_err(err("open table"))?;
        for entry in merged.iter().map_err(err("scan"))? {
            let (hash, bytes) = entry.map_err(err("scan"))?;
            all.insert(hash.value(), stored(bytes.value())?);
        }
        let owners = txn.open_table(LEGACY_OWNERS).map_err(err("open table"))?;
        for entry in owners.iter().map_err(err("scan"))? {
            let (key, owner) = entry.map_err(err("scan"))?;
            all.entry(key_hash(key.value())).or_default().owner = Some(owner.value());
        }
        let counts = txn.open_table(LEGACY_COUNTS).map_err(err("open table"))?;
        for entry in counts.iter().map_err(err("scan"))? {
            let (key, bytes) = entry.map_err(err("scan"))?;
            let counts = decode_counts(bytes.value()).map_err(damaged)?;
            all.entry(key_hash(key.value())).or_default().counts = counts;
        }
    }
    txn.open_table(keyruns::RUNS).map_err(err("create table"))?;
    if !all.is_empty() {
        // The oldest records: a level above any run yet (a store of format 3 has none), at
        // the level its size would have reached.
        let mut level = 0;
        while (RECENT_MERGE_KEYS as u64) << (2 * level) < all.len() as u64 && level < 16 {
            level += 1;
        }
        keyruns::write(txn, level, all.len() as u64, all.into_iter().map(Ok))?;
    }
    txn.delete_table(LEGACY_OWNERS)
        .map_err(err("delete table"))?;
    txn.delete_table(LEGACY_COUNTS)
        .map_err(err("delete table"))?;
    txn.delete_table(LEGACY_RECORDS)
        .map_err(err("delete table"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Scoring;
    use crate::score::rules::Counts;
    use crate::state::testutil::flush;
    use crate::state::{States, Store};
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};

    fn record(owner: Option<i64>, booked: u32) -> KeyRecord {
        KeyRecord {
            owner,
            counts: Counts {
                booked,
                ..Counts::default()
            },
        }
    }

    fn commit(store: &Store, seq: u64, records: &[(String, KeyRecord)]) {
        let states = States {
            scoring: Scoring {
                records: records.iter().map(|(k, r)| (key_hash(k), *r)).collect(),
                ..Scoring::default()
            },
            ..States::default()
        };
        store.commit(flush(seq), &[], &states).unwrap();
    }

    fn found(store: &Store, keys: &[&str]) -> Vec<Option<KeyRecord>> {
        let hashes: Vec<u128> = keys.iter().map(|k| key_hash(k)).collect();
        let records = store.scoring(&[], &hashes).unwrap().records;
        hashes.iter().map(|h| records.get(h).copied()).collect()
    }

    fn levels(store: &Store) -> (usize, u64) {
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        let recent = txn.open_table(RECENT).unwrap().len().unwrap() as usize;
        (recent, merged_count(&txn).unwrap())
    }

    #[test]
    fn records_are_found_recent_or_merged_the_newest_winning_and_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        // Ten commits of ten keys: the seventh crosses the merge (64 in tests). The third
        // also changes a key of the first: the merge keeps the newer record.
        for seq in 1..=10u64 {
            let mut records: Vec<(String, KeyRecord)> = (0..10)
                .map(|i| (format!("e:{seq}-{i}@x.io"), record(Some(i), seq as u32)))
                .collect();
            if seq == 3 {
                records.push(("e:1-0@x.io".into(), record(Some(-7), 50)));
            }
            // The commit that merges changes a recent key too: its record wins.
            if seq == 7 {
                records.push(("e:2-0@x.io".into(), record(Some(-8), 60)));
            }
            commit(&store, seq, &records);
        }
        let (recent, merged) = levels(&store);
        assert_eq!(
            (recent, merged),
            (3, 70),
            "one merge of 7 commits, 3 recent"
        );
        assert_eq!(
            found(&store, &["e:1-0@x.io", "e:2-0@x.io"]),
            [Some(record(Some(-7), 50)), Some(record(Some(-8), 60))]
        );
        // A merged key gets a new owner and counts: the recent record wins.
        commit(&store, 11, &[("e:1-3@x.io".into(), record(Some(-1), 99))]);
        let keys = [
            "e:1-3@x.io",
            "e:7-0@x.io",
            "e:10-9@x.io",
            "e:11-0@x.io",
            "c:5",
        ];
        let want = vec![
            Some(record(Some(-1), 99)),
            Some(record(Some(0), 7)),
            Some(record(Some(9), 10)),
            None,
            None,
        ];
        assert_eq!(found(&store, &keys), want);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(found(&store, &keys), want);
        // Every merged key passes the filter: none is lost to it.
        for seq in 1..=7 {
            for i in 0..10 {
                let key = format!("e:{seq}-{i}@x.io");
                assert!(found(&store, &[&key])[0].is_some(), "{key}");
            }
        }
    }

    #[test]
    fn a_commit_that_merges_is_priced_for_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let batch = |seq: u64| -> Vec<(String, KeyRecord)> {
            (0..30)
                .map(|i| (format!("e:{seq}-{i}"), record(Some(i), 1)))
                .collect()
        };
        commit(&store, 1, &batch(1));
        commit(&store, 2, &batch(2));
        // 60 recent: 3 more stay recent; 4 more make a merge of 64 into an empty table.
        assert_eq!(store.key_records_by_commit(3).unwrap(), 3);
        assert_eq!(store.key_records_by_commit(4).unwrap(), 64);
        commit(&store, 3, &batch(3));
        assert_eq!(levels(&store), (0, 90));
        commit(&store, 4, &batch(4));
        commit(&store, 5, &batch(5));
        // The next merge rewrites the 90 merged records as well.
        assert_eq!(store.key_records_by_commit(4).unwrap(), 90 + 64);
        assert_eq!(store.key_records_by_commit(0).unwrap(), 0);
    }

    #[test]
    fn runs_merge_level_by_level_and_every_key_keeps_its_newest_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        // 21 commits of 64 keys, each a merge (64 in tests): 16 runs of level 0 make four of
        // level 1, which make one of level 2; five more stay at level 0 and 1. Every commit
        // after the first also rewrites key 0 of the first commit and key 1 of the one before.
        let mut want: BTreeMap<String, KeyRecord> = BTreeMap::new();
        for seq in 1..=21u64 {
            let mut records: Vec<(String, KeyRecord)> = (0..62)
                .map(|i| (format!("p:{seq}-{i}"), record(Some(i), seq as u32)))
                .collect();
            if seq > 1 {
                records.push(("p:1-0".into(), record(Some(-1), 100 + seq as u32)));
                records.push((format!("p:{}-1", seq - 1), record(Some(-2), seq as u32)));
            } else {
                records.push(("p:extra-a".into(), record(None, 1)));
                records.push(("p:extra-b".into(), record(None, 2)));
            }
            for (k, r) in &records {
                want.insert(k.clone(), *r);
            }
            commit(&store, seq, &records);
        }
        assert_eq!(
            store.recent_keys_read().levels(),
            vec![(0, 1), (1, 1), (2, 1)],
            "21 runs of level 0: 16 merged twice, 4 once, 1 not"
        );
        let check = |store: &Store| {
            let keys: Vec<&str> = want.keys().map(String::as_str).collect();
            let records = found(store, &keys);
            for ((key, want), record) in want.iter().zip(records) {
                assert_eq!(record, Some(*want), "{key}");
            }
            assert_eq!(found(store, &["p:22-0", "p:0-0"]), vec![None, None]);
        };
        check(&store);
        // Merged away runs leave no tables.
        {
            let db = store.db().unwrap();
            let txn = db.begin_read().unwrap();
            let tables: Vec<String> = txn
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_string())
                .filter(|n| n.starts_with("score_key_run_"))
                .collect();
            assert_eq!(tables.len(), 3, "{tables:?}");
            // A key is in each run it was written to: 994 keys of the first 16 commits (with
            // the two extra), 250 of the next 4 (with p:1-0 and p:16-1), 64 of the last.
            assert_eq!(merged_count(&txn).unwrap(), 994 + 250 + 64);
            assert_eq!(store.recent_keys_read().merged(), 994 + 250 + 64);
        }
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.recent_keys_read().levels(),
            vec![(0, 1), (1, 1), (2, 1)]
        );
        check(&store);
    }

    #[test]
    fn an_earlier_versions_owners_and_counts_are_moved_into_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            // What earlier versions wrote: owners and counts under the key text (counts in
            // the binary form and, older, JSON).
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut owners = txn.open_table(LEGACY_OWNERS).unwrap();
                owners.insert("e:a@x.io", 7).unwrap();
                owners.insert("p:contact_1", 8).unwrap();
                let mut counts = txn.open_table(LEGACY_COUNTS).unwrap();
                let mut binary = Vec::new();
                crate::score::stored::encode_counts(&record(None, 2).counts, &mut binary);
                counts.insert("e:a@x.io", binary.as_slice()).unwrap();
                let json = serde_json::to_vec(&record(None, 3).counts).unwrap();
                counts.insert("c:9", json.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            found(&store, &["e:a@x.io", "p:contact_1", "c:9", "e:b@x.io"]),
            vec![
                Some(record(Some(7), 2)),
                Some(record(Some(8), 0)),
                Some(record(None, 3)),
                None
            ]
        );
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        for gone in [
            txn.open_table(LEGACY_OWNERS).err(),
            txn.open_table(LEGACY_COUNTS).map(drop).err(),
        ] {
            assert!(matches!(gone, Some(TableError::TableDoesNotExist(_))));
        }
    }

    #[test]
    fn the_merged_records_of_a_format_3_store_become_the_oldest_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            // What format 3 wrote: merged records in one hash-keyed table, recent ones apart.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut merged = txn.open_table(LEGACY_RECORDS).unwrap();
                for (key, r) in [("e:a@x.io", record(Some(7), 2)), ("c:9", record(None, 3))] {
                    let mut bytes = vec![FORMAT];
                    put_record(&r, &mut bytes);
                    merged.insert(key_hash(key), bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.recent_keys_read().levels(), vec![(0, 1)]);
        assert_eq!(
            found(&store, &["e:a@x.io", "c:9", "e:b@x.io"]),
            vec![Some(record(Some(7), 2)), Some(record(None, 3)), None]
        );
        // A newer record of one of its keys wins once merged in turn.
        let newer = [("e:a@x.io".to_string(), record(Some(7), 5))];
        let mut batch: Vec<(String, KeyRecord)> = (0..RECENT_MERGE_KEYS)
            .map(|i| (format!("p:{i}"), record(Some(i as i64), 1)))
            .collect();
        batch.extend(newer.iter().cloned());
        commit(&store, 1, &batch);
        assert_eq!(
            found(&store, &["e:a@x.io", "c:9"]),
            vec![Some(record(Some(7), 5)), Some(record(None, 3))]
        );
        let db = store.db().unwrap();
        let txn = db.begin_read().unwrap();
        assert!(matches!(
            txn.open_table(LEGACY_RECORDS).err(),
            Some(TableError::TableDoesNotExist(_))
        ));
    }

    #[test]
    fn damaged_records_are_errors() {
        let mut bytes = vec![FORMAT];
        put_record(&record(Some(3), 1), &mut bytes);
        assert_eq!(stored(&bytes).unwrap(), record(Some(3), 1));
        assert!(stored(&bytes[..bytes.len() - 1]).is_err());
        assert!(stored(&[]).is_err());
        assert!(stored(&[9, 0]).is_err());
        let mut batch_bytes = vec![FORMAT];
        batch_bytes.extend_from_slice(&5u128.to_le_bytes());
        put_record(&record(None, 4), &mut batch_bytes);
        assert_eq!(batch(&batch_bytes).unwrap(), vec![(5, record(None, 4))]);
        // The format byte alone is an empty batch; any cut after it is damage.
        assert_eq!(batch(&batch_bytes[..1]).unwrap(), vec![]);
        for cut in 2..batch_bytes.len() {
            assert!(batch(&batch_bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(batch(&[2]).is_err());
    }
}
