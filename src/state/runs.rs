//! The merged part of the dedup index: sorted runs of ids, stored in blocks.
//!
//! A run is a sorted list of (event id, receive time) entries, 24 bytes each (the id, then
//! the time in seconds as a little-endian `u64`), stored in blocks of up to [`BLOCK_IDS`]
//! entries keyed by (run, the block's first id). Writing a run appends blocks, so an id costs
//! a copy instead of a B-tree insert. A lookup reads the one block of a run that may hold the
//! id (the last whose first id is not above it) and searches it.
//!
//! Runs are tiered: the recent ids of many commits become one run of level 0, and once
//! [`FANOUT`] runs share a level they merge, streamed block by block, into one run of the next
//! level. An id is rewritten once per level it climbs (log4 of the index over the recent
//! ids), where the single B-tree this replaces rewrote most of its leaves, every id's, at
//! every merge. Invariant: within a run ids are sorted and unique, and an id is in one run.

use std::collections::HashMap;
use std::ops::Bound;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{StoreError, err};

/// (run, first id of the block) -> the block's entries, sorted by id.
pub(super) const BLOCKS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("seen_runs");
/// Run -> (level, ids in the run).
pub(super) const RUNS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("seen_run_levels");

/// Bytes of one entry: the id, then its receive time.
pub(super) const ENTRY: usize = 24;
/// Entries per block (24 KiB): small enough that a lookup reads little, large enough that a
/// block's key is a small part of the index.
const BLOCK_IDS: usize = 1024;
/// Runs of one level that merge into one of the next.
const FANOUT: usize = 4;

const FIRST: [u8; 16] = [0; 16];
const LAST: [u8; 16] = [0xff; 16];

/// Every run of a table listing runs (this index's, or lead scoring's key records': `keyruns.rs`)
/// as (run, level, entries), oldest first.
pub(super) fn list(
    table: &impl ReadableTable<u64, (u64, u64)>,
) -> Result<Vec<(u64, u64, u64)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(err("scan"))? {
        let (run, meta) = entry.map_err(err("scan"))?;
        let (level, ids) = meta.value();
        out.push((run.value(), level, ids));
    }
    Ok(out)
}

/// The runs of the index, newest first, and the ids they hold.
pub(super) fn runs(txn: &redb::ReadTransaction) -> Result<(Vec<u64>, u64), StoreError> {
    let list = list(&txn.open_table(RUNS).map_err(err("open table"))?)?;
    let ids = list.iter().map(|(_, _, ids)| ids).sum();
    Ok((list.into_iter().rev().map(|(run, _, _)| run).collect(), ids))
}

/// Whether any of `runs` holds `id`.
pub(super) fn contains(
    blocks: &impl ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    runs: &[u64],
    id: &[u8; 16],
) -> Result<bool, StoreError> {
    for &run in runs {
        let mut range = blocks
            .range((run, &FIRST[..])..=(run, &id[..]))
            .map_err(err("read"))?;
        if let Some(entry) = range.next_back() {
            let (_, block) = entry.map_err(err("read"))?;
            if search(block.value(), id) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Binary search of a block for `id`.
fn search(block: &[u8], id: &[u8; 16]) -> bool {
    let (entries, _) = block.as_chunks::<ENTRY>();
    entries.binary_search_by(|e| e[..16].cmp(id)).is_ok()
}

/// Calls `f` with every id of every run.
pub(super) fn for_each_id(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(&[u8; 16]),
) -> Result<(), StoreError> {
    let blocks = txn.open_table(BLOCKS).map_err(err("open table"))?;
    for entry in blocks.iter().map_err(err("scan"))? {
        let (_, block) = entry.map_err(err("scan"))?;
        for e in block.value().chunks_exact(ENTRY) {
            f(e[..16].try_into().expect("16 bytes"));
        }
    }
    Ok(())
}

/// Adds `entries` (in any order) as a new run of level 0, then merges the runs of any level
/// that has [`FANOUT`] of them, lowest level first.
pub(super) fn add(
    txn: &WriteTransaction,
    mut entries: Vec<([u8; 16], u64)>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable_by_key(|(id, _)| *id);
    entries.dedup_by_key(|(id, _)| *id);
    write_run(txn, entries.into_iter().map(Ok), |_| 0)?;
    loop {
        let mut by_level: HashMap<u64, Vec<u64>> = HashMap::new();
        for (run, level, _) in list(&txn.open_table(RUNS).map_err(err("open table"))?)? {
            by_level.entry(level).or_default().push(run);
        }
        let full = by_level
            .into_iter()
            .filter(|(_, runs)| runs.len() >= FANOUT)
            .min_by_key(|(level, _)| *level);
        let Some((level, runs)) = full else {
            return Ok(());
        };
        merge(txn, &runs, level + 1)?;
    }
}

/// Adds the sorted entries of an earlier version's id-keyed B-tree as one run, at the level
/// its size would have reached.
pub(super) fn add_sorted(
    txn: &WriteTransaction,
    sorted: impl Iterator<Item = Result<([u8; 16], u64), StoreError>>,
) -> Result<(), StoreError> {
    write_run(txn, sorted, |ids| {
        let level = (ids / super::RECENT_MERGE_IDS as u64)
            .max(1)
            .ilog(FANOUT as u64);
        u64::from(level)
    })
}

/// Writes entries given in id order as a new run, at the level `level_of` gives for its
/// number of ids (none, if there are no entries).
fn write_run(
    txn: &WriteTransaction,
    sorted: impl Iterator<Item = Result<([u8; 16], u64), StoreError>>,
    level_of: impl FnOnce(u64) -> u64,
) -> Result<(), StoreError> {
    let run = next_run(txn)?;
    let ids = {
        let mut blocks = txn.open_table(BLOCKS).map_err(err("open table"))?;
        let mut writer = Writer::new(run);
        for item in sorted {
            let (id, secs) = item?;
            writer.push(&mut blocks, &entry(&id, secs))?;
        }
        writer.finish(&mut blocks)?
    };
    if ids > 0 {
        txn.open_table(RUNS)
            .map_err(err("open table"))?
            .insert(run, (level_of(ids), ids))
            .map_err(err("insert"))?;
    }
    Ok(())
}

/// Merges `sources` into one new run of `level`, streamed block by block, and deletes them.
fn merge(txn: &WriteTransaction, sources: &[u64], level: u64) -> Result<(), StoreError> {
    let run = next_run(txn)?;
    let mut blocks = txn.open_table(BLOCKS).map_err(err("open table"))?;
    let mut readers: Vec<Reader> = sources.iter().map(|&r| Reader::new(r)).collect();
    let mut writer = Writer::new(run);
    loop {
        let mut least: Option<(usize, [u8; ENTRY])> = None;
        for (i, reader) in readers.iter_mut().enumerate() {
            if let Some(head) = reader.peek(&blocks)?
                && least.is_none_or(|(_, l)| head[..16] < l[..16])
            {
                least = Some((i, head));
            }
        }
        let Some((i, head)) = least else { break };
        readers[i].advance();
        // Runs never share an id; were one written twice, it would be kept once.
        if writer.last_id() != Some(&head[..16]) {
            writer.push(&mut blocks, &head)?;
        }
    }
    let count = writer.finish(&mut blocks)?;
    for &source in sources {
        blocks
            .retain_in((source, &FIRST[..])..=(source, &LAST[..]), |_, _| false)
            .map_err(err("remove"))?;
    }
    let mut runs = txn.open_table(RUNS).map_err(err("open table"))?;
    for &source in sources {
        runs.remove(source).map_err(err("remove"))?;
    }
    runs.insert(run, (level, count)).map_err(err("insert"))?;
    Ok(())
}

/// Removes the entries received before `cutoff_secs` from every run, calling `kept` with each
/// id that stays; returns how many were removed. Only blocks that lose entries are rewritten.
pub(super) fn purge(
    txn: &WriteTransaction,
    cutoff_secs: u64,
    mut kept: impl FnMut(&[u8; 16]),
) -> Result<u64, StoreError> {
    let mut blocks = txn.open_table(BLOCKS).map_err(err("open table"))?;
    let keys: Vec<(u64, [u8; 16])> = blocks
        .iter()
        .map_err(err("scan"))?
        .map(|e| {
            let (key, _) = e.map_err(err("scan"))?;
            let (run, first) = key.value();
            Ok((run, first.try_into().expect("16-byte ids")))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut removed: HashMap<u64, u64> = HashMap::new();
    for (run, first) in keys {
        let block = blocks
            .get((run, &first[..]))
            .map_err(err("read"))?
            .map(|b| b.value().to_vec())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(block.len());
        for e in block.chunks_exact(ENTRY) {
            let secs = u64::from_le_bytes(e[16..].try_into().expect("8 bytes"));
            if secs >= cutoff_secs {
                out.extend_from_slice(e);
                kept(e[..16].try_into().expect("16 bytes"));
            }
        }
        if out.len() == block.len() {
            continue;
        }
        *removed.entry(run).or_default() += ((block.len() - out.len()) / ENTRY) as u64;
        blocks.remove((run, &first[..])).map_err(err("remove"))?;
        if !out.is_empty() {
            blocks
                .insert((run, &out[..16]), out.as_slice())
                .map_err(err("insert"))?;
        }
    }
    let mut runs = txn.open_table(RUNS).map_err(err("open table"))?;
    let mut purged = 0;
    for (run, n) in removed {
        purged += n;
        let (level, count) = runs
            .get(run)
            .map_err(err("read"))?
            .map_or((0, 0), |m| m.value());
        if count > n {
            runs.insert(run, (level, count - n))
                .map_err(err("insert"))?;
        } else {
            runs.remove(run).map_err(err("remove"))?;
        }
    }
    Ok(purged)
}

/// The (level, ids) of every run, oldest first.
#[cfg(test)]
pub(super) fn levels(txn: &redb::ReadTransaction) -> Result<Vec<(u64, u64)>, StoreError> {
    let list = list(&txn.open_table(RUNS).map_err(err("open table"))?)?;
    Ok(list
        .into_iter()
        .map(|(_, level, ids)| (level, ids))
        .collect())
}

fn entry(id: &[u8; 16], secs: u64) -> [u8; ENTRY] {
    let mut e = [0; ENTRY];
    e[..16].copy_from_slice(id);
    e[16..].copy_from_slice(&secs.to_le_bytes());
    e
}

/// A number no run has: one above the highest.
fn next_run(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let table = txn.open_table(RUNS).map_err(err("open table"))?;
    let last = table.last().map_err(err("read"))?;
    Ok(last.map_or(0, |(run, _)| run.value() + 1))
}

type Blocks<'t> = redb::Table<'t, (u64, &'static [u8]), &'static [u8]>;

/// Writes the blocks of one run, entries given in order.
struct Writer {
    run: u64,
    block: Vec<u8>,
    count: u64,
    last: Option<[u8; 16]>,
}

impl Writer {
    fn new(run: u64) -> Writer {
        Writer {
            run,
            block: Vec::with_capacity(BLOCK_IDS * ENTRY),
            count: 0,
            last: None,
        }
    }

    fn last_id(&self) -> Option<&[u8]> {
        self.last.as_ref().map(|id| &id[..])
    }

    fn push(&mut self, blocks: &mut Blocks, entry: &[u8; ENTRY]) -> Result<(), StoreError> {
        debug_assert!(self.last_id().is_none_or(|last| last < &entry[..16]));
        self.block.extend_from_slice(entry);
        self.last = Some(entry[..16].try_into().expect("16 bytes"));
        self.count += 1;
        if self.block.len() == BLOCK_IDS * ENTRY {
            self.write_block(blocks)?;
        }
        Ok(())
    }

    fn write_block(&mut self, blocks: &mut Blocks) -> Result<(), StoreError> {
        if !self.block.is_empty() {
            blocks
                .insert((self.run, &self.block[..16]), self.block.as_slice())
                .map_err(err("insert"))?;
            self.block.clear();
        }
        Ok(())
    }

    /// Writes the last block; returns the number of entries written.
    fn finish(mut self, blocks: &mut Blocks) -> Result<u64, StoreError> {
        self.write_block(blocks)?;
        Ok(self.count)
    }
}

/// Reads one run's entries in order, a block at a time (copied, so that the table can be
/// written between reads).
struct Reader {
    run: u64,
    block: Vec<u8>,
    pos: usize,
    /// First id of the block in `block`, once one was read.
    at: Option<[u8; 16]>,
    done: bool,
}

impl Reader {
    fn new(run: u64) -> Reader {
        Reader {
            run,
            block: Vec::new(),
            pos: 0,
            at: None,
            done: false,
        }
    }

    /// The next entry, or `None` at the end of the run.
    fn peek(&mut self, blocks: &Blocks) -> Result<Option<[u8; ENTRY]>, StoreError> {
        if self.pos >= self.block.len() && !self.done {
            let lower = match &self.at {
                None => Bound::Included((self.run, &FIRST[..])),
                Some(at) => Bound::Excluded((self.run, &at[..])),
            };
            let upper = Bound::Included((self.run, &LAST[..]));
            let next = blocks
                .range::<(u64, &[u8])>((lower, upper))
                .map_err(err("read"))?
                .next();
            match next {
                None => self.done = true,
                Some(e) => {
                    let (key, block) = e.map_err(err("read"))?;
                    self.at = Some(key.value().1.try_into().expect("16-byte ids"));
                    self.block.clear();
                    self.block.extend_from_slice(block.value());
                    self.pos = 0;
                }
            }
        }
        if self.done {
            return Ok(None);
        }
        Ok(Some(
            self.block[self.pos..self.pos + ENTRY]
                .try_into()
                .expect("whole entries"),
        ))
    }

    fn advance(&mut self) {
        self.pos += ENTRY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    /// A deterministic stream of well-spread ids, none all zeros.
    fn id(n: u64) -> [u8; 16] {
        let n = n + 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        id[8..].copy_from_slice(&n.to_le_bytes());
        id
    }

    fn found(db: &redb::Database, ids: impl Iterator<Item = [u8; 16]>) -> Vec<bool> {
        let txn = db.begin_read().unwrap();
        let (runs, _) = runs(&txn).unwrap();
        let blocks = txn.open_table(BLOCKS).unwrap();
        ids.map(|id| contains(&blocks, &runs, &id).unwrap())
            .collect()
    }

    #[test]
    fn runs_merge_by_level_and_find_every_id_they_were_given() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("runs.redb")).unwrap();
        let mut added = 0u64;
        // Batches of uneven sizes, most over a block, one of a single id.
        let sizes = [
            3000, 1, 2500, 700, 4100, 1024, 1025, 90, 5000, 2048, 3, 1500, 2600, 800, 7, 3300, 1200,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let txn = db.begin_write().unwrap();
            let batch: Vec<([u8; 16], u64)> = (added..added + size)
                .rev()
                .map(|n| (id(n), 1_000 + n % 10))
                .collect();
            add(&txn, batch).unwrap();
            txn.commit().unwrap();
            added += size;
            let txn = db.begin_read().unwrap();
            let levels = levels(&txn).unwrap();
            assert_eq!(runs(&txn).unwrap().1, added, "after batch {i}");
            for level in 0..4 {
                let runs = levels.iter().filter(|(l, _)| *l == level).count();
                assert!(
                    runs < FANOUT,
                    "batch {i}: {runs} runs of level {level}: {levels:?}"
                );
            }
            assert!(
                found(&db, (0..added).map(id)).into_iter().all(|f| f),
                "batch {i}"
            );
            assert!(
                !found(&db, (added..added + 2000).map(id))
                    .into_iter()
                    .any(|f| f),
                "batch {i}"
            );
        }
        // 17 batches: four merges into level 1, one of those into level 2.
        let txn = db.begin_read().unwrap();
        let mut by_level: Vec<u64> = levels(&txn).unwrap().into_iter().map(|(l, _)| l).collect();
        by_level.sort();
        assert_eq!(by_level, [0, 2]);
        // Extremes: below every block's first id, above every last id.
        assert_eq!(
            found(&db, [[0u8; 16], [0xff; 16]].into_iter()),
            [false, false]
        );
        let mut every = 0;
        for_each_id(&txn, |_| every += 1).unwrap();
        assert_eq!(every, added);
        drop(txn);

        // A purge removes exactly the ids received before the cutoff, from every run.
        let txn = db.begin_write().unwrap();
        let mut kept = 0u64;
        let purged = purge(&txn, 1_004, |_| kept += 1).unwrap();
        txn.commit().unwrap();
        let expected: Vec<bool> = (0..added).map(|n| 1_000 + n % 10 >= 1_004).collect();
        assert_eq!(purged, expected.iter().filter(|k| !**k).count() as u64);
        assert_eq!(kept, added - purged);
        assert_eq!(found(&db, (0..added).map(id)), expected);
        let txn = db.begin_read().unwrap();
        assert_eq!(runs(&txn).unwrap().1, kept);
        drop(txn);
        // Purging every id leaves no runs.
        let txn = db.begin_write().unwrap();
        assert_eq!(purge(&txn, u64::MAX, |_| ()).unwrap(), kept);
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        assert!(levels(&txn).unwrap().is_empty());
        assert!(txn.open_table(BLOCKS).unwrap().is_empty().unwrap());
    }

    #[test]
    fn an_id_given_twice_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("runs.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        add(&txn, vec![(id(1), 5), (id(2), 5), (id(1), 6)]).unwrap();
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(runs(&txn).unwrap().1, 2);
        assert_eq!(
            found(&db, [id(1), id(2), id(3)].into_iter()),
            [true, true, false]
        );
    }
}
