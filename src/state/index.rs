//! The dedup index: the ids a flush writes, appended to `seen_recent` and kept in memory, then
//! merged into a sorted run (`runs.rs`) once [`RECENT_MERGE_IDS`] are recent or at a purge; the
//! Bloom filter in front of it (`filter.rs`); lookups, the purge, and the figures `/metrics`
//! shows.
//! Invariant: the in-memory copy of recent ids changes only after a commit; the filter has no
//! false negatives; a lookup reads the runs of its own snapshot.

use std::sync::RwLockReadGuard;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{IdFilter, META, SEEN_RECENT, Store, StoreError, err, runs};

/// Recent ids merged into the id-keyed tables at once (about 6 MiB of memory at most).
pub const RECENT_MERGE_IDS: usize = 1 << 18;

/// The in-memory part of the dedup index.
pub(super) struct Index {
    /// The ids of `seen_recent`, as committed.
    pub(super) recent: IdSet,
    /// Every id of the runs and of `seen_recent`.
    pub(super) filter: IdFilter,
    /// Counts the changes to the two above: a filter built from a snapshot of the store
    /// replaces the one in use only if nothing changed since the snapshot.
    pub(super) changes: u64,
}

/// A set of event ids (16 bytes each), hashed with ahash: std's SipHash is a cost on every
/// event's dedup check and release, and buys nothing for ids that are hashes already.
pub type IdSet = std::collections::HashSet<[u8; 16], ahash::RandomState>;

impl Store {
    pub(super) fn index_read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Which of `ids` were already written by a committed flush.
    pub fn seen(&self, ids: &[[u8; 16]]) -> Result<Vec<bool>, StoreError> {
        self.with_db(|db| {
            let index = self.index_read();
            let txn = db.begin_read().map_err(err("begin read"))?;
            // The runs of this snapshot: a merge may have replaced those of an older one.
            let (runs, _) = runs::runs(&txn)?;
            let blocks = txn.open_table(runs::BLOCKS).map_err(err("open table"))?;
            ids.iter()
                .map(|id| {
                    Ok(index.recent.contains(id)
                        || (index.filter.may_contain(id) && runs::contains(&blocks, &runs, id)?))
                })
                .collect()
        })
    }

    /// How many ids of the index a commit adding `ids` ids may rewrite: none, unless it merges
    /// the recent ids into a run, which may merge runs up to every one of them.
    pub fn rewritten_by_commit(&self, ids: usize) -> Result<u64, StoreError> {
        if self.index_read().recent.len() + ids < RECENT_MERGE_IDS {
            return Ok(0);
        }
        Ok(self.seen_count()? + ids as u64)
    }

    /// Replaces a full filter with one of twice the room, built from a snapshot of the store
    /// (0.17 s for 1.1 million ids) without holding up lookups; given up if the index changed
    /// meanwhile (a purge), and tried again at the next commit.
    pub(super) fn grow_filter(
        &self,
        db: &Database,
        index: std::sync::RwLockWriteGuard<'_, Index>,
    ) -> Result<(), StoreError> {
        let (snapshot, recent, room, changes) = (
            db.begin_read().map_err(err("begin read"))?,
            index.recent.clone(),
            index.filter.capacity() * 2,
            index.changes,
        );
        drop(index);
        let filter = filter_of(&snapshot, &recent, room)?;
        let mut index = self.index_write();
        if index.changes == changes {
            index.filter = filter;
        }
        Ok(())
    }

    /// Forgets ids received before `cutoff_secs`; returns how many.
    pub fn purge_before(&self, cutoff_secs: u64) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            // Recent ids join a run first, so that the purge sees them all.
            merge_recent(&txn, &[])?;
            // One scan of the index, rewriting only the blocks that lose ids; every ten
            // minutes. The commits of flushes wait meanwhile; acknowledgements do not. The ids
            // it keeps make a new filter: the old one cannot forget.
            let held = {
                let seen = self.index_stats_in(db)?.0;
                usize::try_from(seen).unwrap_or(usize::MAX)
            };
            let mut filter = IdFilter::with_capacity(held);
            let purged = runs::purge(&txn, cutoff_secs, |id| filter.insert(id))?;
            // Taken before the commit: a flush committing between this commit and the clearing
            // below would have its ids cleared from memory, and hidden from lookups until the
            // next merge.
            let mut index = self.index_write();
            txn.commit().map_err(err("commit"))?;
            index.recent.clear();
            index.filter = filter;
            index.changes += 1;
            Ok(purged)
        })
    }

    /// Bytes of memory the dedup index's filter takes.
    pub fn filter_bytes(&self) -> usize {
        self.index_read().filter.bytes()
    }

    /// Ids in the dedup index, and the runs its merged ids are in (a lookup the filter cannot
    /// answer reads a block of each).
    pub fn index_stats(&self) -> Result<(u64, u64), StoreError> {
        self.with_db(|db| self.index_stats_in(db))
    }

    fn index_stats_in(&self, db: &Database) -> Result<(u64, u64), StoreError> {
        let index = self.index_read();
        let txn = db.begin_read().map_err(err("begin read"))?;
        let (runs, ids) = runs::runs(&txn)?;
        Ok((ids + index.recent.len() as u64, runs.len() as u64))
    }

    /// Number of ids in the dedup index.
    pub fn seen_count(&self) -> Result<u64, StoreError> {
        Ok(self.index_stats()?.0)
    }
}

/// A filter holding every id of the runs in `txn` and of `recent`, with room for `room` ids
/// at least and for those it holds.
pub(super) fn filter_of(
    txn: &redb::ReadTransaction,
    recent: &IdSet,
    room: usize,
) -> Result<IdFilter, StoreError> {
    let held = usize::try_from(runs::runs(txn)?.1).unwrap_or(usize::MAX) + recent.len();
    let mut filter = IdFilter::with_capacity(room.max(held));
    runs::for_each_id(txn, |id| filter.insert(id))?;
    recent.iter().for_each(|id| filter.insert(id));
    Ok(filter)
}

/// Bytes of one id in a `seen_recent` value: the id, then its receive time.
const RECENT_ENTRY: usize = 24;

/// Splits a `seen_recent` value into its ids and their receive times.
pub(super) fn recent_entries(
    value: &[u8],
) -> Result<impl Iterator<Item = ([u8; 16], u64)> + '_, StoreError> {
    if value.is_empty() || !value.len().is_multiple_of(RECENT_ENTRY) {
        return Err(StoreError {
            op: "read recent ids",
            io: false,
            message: format!(
                "entry of {} bytes, expected a multiple of {RECENT_ENTRY}",
                value.len()
            ),
        });
    }
    Ok(value.chunks_exact(RECENT_ENTRY).map(|entry| {
        let (id, secs) = entry.split_at(16);
        (
            id.try_into().expect("16 bytes"),
            u64::from_le_bytes(secs.try_into().expect("8 bytes")),
        )
    }))
}

/// Appends ids to `seen_recent`, all in one entry under the next counter value: one B-tree
/// insert per commit instead of one per id (2.1% of a replay's CPU).
pub(super) fn append_recent(
    txn: &redb::WriteTransaction,
    ids: &[([u8; 16], u64)],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META).map_err(err("open table"))?;
    let next = meta
        .get("seen_recent_next")
        .map_err(err("read"))?
        .map_or(0, |v| v.value());
    let mut value = Vec::with_capacity(ids.len() * RECENT_ENTRY);
    for (id, secs) in ids {
        value.extend_from_slice(id);
        value.extend_from_slice(&secs.to_le_bytes());
    }
    txn.open_table(SEEN_RECENT)
        .map_err(err("open table"))?
        .insert(next, value.as_slice())
        .map_err(err("insert"))?;
    meta.insert("seen_recent_next", next + 1)
        .map_err(err("insert"))?;
    Ok(())
}

/// Moves every id of `seen_recent`, and `ids`, into a new run of the index.
pub(super) fn merge_recent(
    txn: &redb::WriteTransaction,
    ids: &[([u8; 16], u64)],
) -> Result<(), StoreError> {
    let mut all: Vec<([u8; 16], u64)> = ids.to_vec();
    {
        let mut recent = txn.open_table(SEEN_RECENT).map_err(err("open table"))?;
        for entry in recent.iter().map_err(err("scan"))? {
            let (_, value) = entry.map_err(err("scan"))?;
            all.extend(recent_entries(value.value())?);
        }
        recent.retain(|_, _| false).map_err(err("clear"))?;
    }
    runs::add(txn, all)
}

/// Parses a 32-hex-digit event id into its 16 bytes.
pub fn id_bytes(event_id: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, chunk) in event_id.as_bytes().chunks(2).take(16).enumerate() {
        out[i] = hex_byte(chunk);
    }
    out
}

/// The value of one or two hex digits, read as `u8::from_str_radix(_, 16)` reads them (a
/// leading `+` allowed), or 0 when it would fail. Three times per event (dedup, commit,
/// release), without its UTF-8 check and error path.
fn hex_byte(chunk: &[u8]) -> u8 {
    fn digit(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    match *chunk {
        [b'+', d] | [d] => digit(d).unwrap_or(0),
        [hi, lo] => match (digit(hi), digit(lo)) {
            (Some(hi), Some(lo)) => hi << 4 | lo,
            _ => 0,
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Committed, States};

    #[test]
    fn recent_ids_of_an_earlier_version_one_per_entry_read_as_those_of_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let entry = |id: [u8; 16], secs: u64| [&id[..], &secs.to_le_bytes()[..]].concat();
        {
            // What earlier versions wrote: one id per entry, and the next counter value.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut recent = txn.open_table(SEEN_RECENT).unwrap();
                recent.insert(0, entry([1; 16], 100).as_slice()).unwrap();
                recent.insert(1, entry([2; 16], 200).as_slice()).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("seen_recent_next", 2).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.index_read().recent.len(), 2);
        // A commit adds its ids in one entry after them.
        let record = Committed {
            flush_seq: 1,
            replay_from: 0,
        };
        let ids = [([3; 16], 300), ([4; 16], 400)];
        store.commit(record, &ids, &States::default()).unwrap();
        {
            let txn = store.db().unwrap().begin_read().unwrap();
            let recent = txn.open_table(SEEN_RECENT).unwrap();
            let sizes: Vec<(u64, usize)> = recent
                .iter()
                .unwrap()
                .map(|e| e.map(|(k, v)| (k.value(), v.value().len())).unwrap())
                .collect();
            assert_eq!(sizes, [(0, 24), (1, 24), (2, 48)]);
        }
        drop(store);
        let store = Store::open(&path).unwrap();
        let all = [[1; 16], [2; 16], [3; 16], [4; 16], [5; 16]];
        assert_eq!(store.seen(&all).unwrap(), [true, true, true, true, false]);
        // A purge merges both kinds of entry with their receive times.
        assert_eq!(store.purge_before(250).unwrap(), 2);
        assert_eq!(store.seen(&all).unwrap(), [false, false, true, true, false]);
        // A value that is not whole ids is an error that says so, not a guess.
        let value = [0u8; 30];
        let error = recent_entries(&value).err().expect("30 bytes");
        assert!(error.to_string().contains("entry of 30 bytes"), "{error}");
    }

    #[test]
    fn recent_ids_merge_into_the_index_and_stay_seen_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let id = |n: u64| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            id[8..].copy_from_slice(&n.to_le_bytes());
            id
        };
        let batch = |range: std::ops::Range<u64>| -> Vec<([u8; 16], u64)> {
            range.map(|n| (id(n), 1_000 + n % 7)).collect()
        };
        let first = RECENT_MERGE_IDS as u64 - 1000;
        let record = |flush_seq| Committed {
            flush_seq,
            replay_from: 0,
        };
        {
            let store = Store::open(&path).unwrap();
            let states = States::default();
            store.commit(record(1), &batch(0..first), &states).unwrap();
            assert_eq!(store.index_read().recent.len(), first as usize);
            // This commit crosses the threshold: everything moves into the id-keyed tables.
            store
                .commit(record(2), &batch(first..first + 2000), &states)
                .unwrap();
            assert!(store.index_read().recent.is_empty());
            assert_eq!(store.index_stats().unwrap(), (first + 2000, 1));
            store
                .commit(record(3), &batch(first + 2000..first + 2010), &states)
                .unwrap();
            assert_eq!(store.index_read().recent.len(), 10);
            assert_eq!(store.seen_count().unwrap(), first + 2010);
            // The filter grew as ids came in (from room for 52 428), and holds every one.
            let index = store.index_read();
            assert!(index.filter.capacity() >= first as usize + 2010);
            assert!((0..first + 2010).all(|n| index.filter.may_contain(&id(n))));
        }
        let store = Store::open(&path).unwrap();
        let all: Vec<[u8; 16]> = (0..first + 2010).map(id).collect();
        assert!(store.seen(&all).unwrap().into_iter().all(|seen| seen));
        let never: Vec<[u8; 16]> = (first + 2010..first + 12_010).map(id).collect();
        assert!(store.seen(&never).unwrap().into_iter().all(|seen| !seen));
        assert_eq!(store.index_read().recent.len(), 10);
        assert_eq!(store.seen_count().unwrap(), first + 2010);
        let probes: Vec<[u8; 16]> = [
            0,
            first - 1,
            first,
            first + 1999,
            first + 2009,
            first + 2010,
        ]
        .into_iter()
        .map(id)
        .collect();
        assert_eq!(
            store.seen(&probes).unwrap(),
            vec![true, true, true, true, true, false]
        );
        // A purge sees recent and merged ids alike (receive times 1 000 to 1 006).
        let purged = store.purge_before(1_003).unwrap();
        let expected = (0..first + 2010).filter(|n| 1_000 + n % 7 >= 1_003).count() as u64;
        assert_eq!(store.seen_count().unwrap(), expected);
        assert_eq!(purged, first + 2010 - expected);
        assert!(store.index_read().recent.is_empty());
        // The purge's new filter holds what it kept, and lookups find exactly that.
        let kept: Vec<bool> = (0..first + 2010).map(|n| 1_000 + n % 7 >= 1_003).collect();
        assert_eq!(store.seen(&all).unwrap(), kept);
        let index = store.index_read();
        assert!(
            (0..first + 2010)
                .filter(|n| kept[*n as usize])
                .all(|n| index.filter.may_contain(&id(n)))
        );
    }

    #[test]
    fn ids_parse_from_hex() {
        assert_eq!(id_bytes("00ff10")[..3], [0, 255, 16]);
        assert_eq!(id_bytes("0A0b"), {
            let mut id = [0; 16];
            id[..2].copy_from_slice(&[10, 11]);
            id
        });
        // Every one- and two-byte chunk reads as the standard parser reads it, 0 for an error.
        let standard = |chunk: &[u8]| {
            std::str::from_utf8(chunk)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .unwrap_or(0)
        };
        for a in 0..=255u8 {
            assert_eq!(hex_byte(&[a]), standard(&[a]), "{a}");
            for b in 0..=255u8 {
                assert_eq!(hex_byte(&[a, b]), standard(&[a, b]), "{a} {b}");
            }
        }
    }
}
