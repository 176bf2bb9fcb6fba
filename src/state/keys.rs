//! Lead scoring's contact keys (`p:<preview id>`, `e:<lower-case email>`, `c:<contact id>`;
//! `src/score/mod.rs`): each key's record, its owner and the counts filed under it
//! ([`KeyRecord`]), found by the key's 128-bit XXH3 hash.
//!
//! Two parts, like the dedup index. The records a flush changes go to `score_keys_recent`,
//! all in one value keyed by a counter, and into a copy in memory that lookups read first.
//! Once [`RECENT_MERGE_KEYS`] records are recent, a commit moves them, in hash order, into the
//! hash-keyed table `score_key_records` and empties `score_keys_recent`. Real keys are random
//! strings: inserted one at a time at every flush, each would land on a leaf of its own and
//! the store would rewrite a page per key; a merge rewrites each leaf once for many keys.
//! Stores of earlier versions kept owners (`score_keys`) and counts (`score_counts`) under the
//! key text; opening such a store moves them into `score_key_records` and drops both.
//! Invariant: the copy in memory is the records of `score_keys_recent` as committed, and
//! changes only under the write lock taken before the commit that changes the table; a
//! record in it is newer than the one of the same key in `score_key_records`.

use std::collections::{BTreeMap, HashMap};

use redb::{
    ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError, WriteTransaction,
};

use super::codec::{DecodeError, decode_binary};
use super::{IdFilter, StoreError, err};
use crate::score::stored::{KeyRecord, decode_counts, put_record, read_record};

/// Key hash -> the key's record (a format byte, then [`put_record`]'s form).
pub(super) const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("score_key_records");
/// Counter -> the records one commit changed: a format byte, then each key's hash (16 bytes,
/// little-endian) and record.
pub(super) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("score_keys_recent");
/// Key text -> its owner, as earlier versions kept it.
const LEGACY_OWNERS: TableDefinition<&str, i64> = TableDefinition::new("score_keys");
/// Key text -> its counts (`score/stored.rs`), as earlier versions kept them.
const LEGACY_COUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("score_counts");

/// Recent records merged into `score_key_records` at once (their map in memory takes up to
/// 16 MiB: 2^18 slots of 64 bytes; twice as many took 38 MiB more at the peak of a
/// million-event replay, the merge's copies included).
/// The library's own tests merge at 64, so that they cross merges.
pub const RECENT_MERGE_KEYS: usize = if cfg!(test) { 64 } else { 1 << 17 };

/// First byte of a stored record and of a batch of recent ones.
const FORMAT: u8 = 1;

/// The recent records, by key hash.
pub type Recent = HashMap<u128, KeyRecord, ahash::RandomState>;

/// The in-memory part: the recent records, and a filter of the hashes of `score_key_records`,
/// which answers most lookups of keys never seen (a new contact's) without reading the table.
pub(super) struct Memory {
    pub(super) recent: Recent,
    pub(super) filter: IdFilter,
}

impl Memory {
    /// Bytes of memory the recent records' map and the filter take (the map's slots counted
    /// whole, 64 bytes each: a key hash and its record).
    pub(super) fn bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<(u128, KeyRecord)>() + self.filter.bytes()
    }

    /// After a commit that recorded `records`: kept as recent, or, when it `merged`, moved
    /// from recent into the filter. A full filter is rebuilt twice as large from `db`; if that
    /// read fails, the full one stays (it still has every hash, and only answers "maybe"
    /// more often).
    pub(super) fn committed(
        &mut self,
        db: &redb::Database,
        merged: bool,
        records: &[(u128, KeyRecord)],
    ) {
        if !merged {
            self.recent.extend(records.iter().copied());
            return;
        }
        for hash in self.recent.keys().chain(records.iter().map(|(h, _)| h)) {
            self.filter.insert(&hash.to_le_bytes());
        }
        self.recent.clear();
        if self.filter.is_full() {
            let room = self.filter.capacity() * 2;
            let rebuilt = db
                .begin_read()
                .map_err(err("begin read"))
                .and_then(|txn| filter_of(&txn, room));
            match rebuilt {
                Ok(filter) => self.filter = filter,
                Err(e) => tracing::warn!(error = %e, "cannot rebuild the filter of key records"),
            }
        }
    }
}

/// How many records `score_key_records` holds in `txn`'s snapshot.
pub(super) fn merged_count(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    records(txn)?.map_or(Ok(0), |t| t.len().map_err(err("read")))
}

/// A filter of every hash of `score_key_records` in `txn`, with room for `room` at least.
fn filter_of(txn: &redb::ReadTransaction, room: usize) -> Result<IdFilter, StoreError> {
    let Some(table) = records(txn)? else {
        return Ok(IdFilter::with_capacity(room));
    };
    let held = usize::try_from(table.len().map_err(err("scan"))?).unwrap_or(usize::MAX);
    let mut filter = IdFilter::with_capacity(room.max(held.saturating_mul(2)));
    for entry in table.iter().map_err(err("scan"))? {
        let (hash, _) = entry.map_err(err("scan"))?;
        filter.insert(&hash.value().to_le_bytes());
    }
    Ok(filter)
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

/// Reads one stored record of `score_key_records`.
fn stored(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    decode_binary(bytes, FORMAT, "key record", read_record).map_err(damaged)
}

/// `score_key_records` in `txn`'s snapshot; none before the first merge.
fn records(
    txn: &redb::ReadTransaction,
) -> Result<Option<ReadOnlyTable<u128, &'static [u8]>>, StoreError> {
    match txn.open_table(RECORDS) {
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        other => other.map(Some).map_err(err("open table")),
    }
}

/// The in-memory part of the store in `txn`: its recent records as committed (later batches
/// replace earlier records) and the filter of the others.
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
    Ok(Memory {
        recent,
        // Room for two merges before the first rebuild (512 KiB).
        filter: filter_of(txn, 2 * RECENT_MERGE_KEYS)?,
    })
}

/// The records of `hashes`, in their order (none for a key never recorded): the recent copy
/// first, then `score_key_records` of `txn`'s snapshot.
pub(super) fn lookup(
    memory: &Memory,
    txn: &redb::ReadTransaction,
    hashes: &[u128],
) -> Result<Vec<Option<KeyRecord>>, StoreError> {
    let table = records(txn)?;
    hashes
        .iter()
        .map(|hash| {
            if let Some(record) = memory.recent.get(hash) {
                return Ok(Some(*record));
            }
            match &table {
                Some(_) if !memory.filter.may_contain(&hash.to_le_bytes()) => Ok(None),
                Some(table) => table
                    .get(*hash)
                    .map_err(err("read"))?
                    .map(|bytes| stored(bytes.value()))
                    .transpose(),
                None => Ok(None),
            }
        })
        .collect()
}

/// Records `records` (hash order not needed) in `txn`: appended to `score_keys_recent`, or,
/// once the `recent` ones (the copy in memory) and they reach [`RECENT_MERGE_KEYS`], merged
/// with every recent record into `score_key_records`. Returns whether it merged.
pub(super) fn write(
    txn: &WriteTransaction,
    recent: &Recent,
    records: &[(u128, KeyRecord)],
) -> Result<bool, StoreError> {
    if records.is_empty() {
        return Ok(false);
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
        return Ok(false);
    }
    // The newest record of each key, this commit's else the recent one, in hash order: each
    // leaf is rewritten once.
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
    put_all(txn, newest)?;
    table.retain(|_, _| false).map_err(err("clear"))?;
    Ok(true)
}

/// Inserts records into `score_key_records`, in the order given.
fn put_all(
    txn: &WriteTransaction,
    records: impl IntoIterator<Item = (u128, KeyRecord)>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(RECORDS).map_err(err("open table"))?;
    let mut bytes = Vec::with_capacity(32);
    for (hash, record) in records {
        bytes.clear();
        bytes.push(FORMAT);
        put_record(&record, &mut bytes);
        table
            .insert(hash, bytes.as_slice())
            .map_err(err("insert"))?;
    }
    Ok(())
}

/// Moves an earlier version's owners and counts, kept under the key text, into
/// `score_key_records`, and drops their tables.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut all: BTreeMap<u128, KeyRecord> = BTreeMap::new();
    {
        // Opened for writing, a table that does not exist is created, empty, and dropped below.
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
    if !all.is_empty() {
        put_all(txn, all)?;
    }
    txn.delete_table(LEGACY_OWNERS)
        .map_err(err("delete table"))?;
    txn.delete_table(LEGACY_COUNTS)
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
        let merged = txn.open_table(RECORDS).map_or(0, |t| t.len().unwrap());
        (recent, merged)
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
    fn a_filter_that_fills_is_rebuilt_larger_with_every_merged_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let room = store.recent_keys_read().filter.capacity();
        // More keys than the smallest filter holds, in commits of 1 000 (each merges).
        let n = room + 5_000;
        for (seq, chunk) in (0..n).collect::<Vec<_>>().chunks(1_000).enumerate() {
            let records: Vec<(String, KeyRecord)> = chunk
                .iter()
                .map(|i| (format!("p:{i}"), record(Some(*i as i64), 1)))
                .collect();
            commit(&store, seq as u64 + 1, &records);
        }
        assert!(store.recent_keys_read().filter.capacity() > room);
        assert!(!store.recent_keys_read().filter.is_full());
        let keys: Vec<String> = (0..n).step_by(97).map(|i| format!("p:{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(found(&store, &refs).iter().all(Option::is_some));
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
