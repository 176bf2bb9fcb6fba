//! The runs of lead scoring's merged key records (`keys.rs`). A run is a table of its own,
//! `score_key_run_<id>`, of blocks of up to [`BLOCK`] records in hash order, each keyed by its
//! first hash; a record takes [`ENTRY`] bytes (the hash, an owner flag, the owner, six counts,
//! little-endian), so that a lookup reads one block and searches it by halves. Writing a run
//! inserts a block per [`BLOCK`] records instead of a B-tree entry per record.
//!
//! Runs are tiered: once [`FANOUT`] runs share a level, they are merged, streamed block by
//! block in hash order with each key's newest record kept (that of the run with the highest
//! id), into one run of the next level. `score_key_runs` lists them with their level and size.
//! Invariant: within a run hashes are sorted and unique; a run of a higher id is newer than one
//! of a lower id (every run of a level is newer than every run of a higher level, and a merge
//! takes all the runs of its level, into a run with a new, higher id).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::filter::IdFilter;
use super::runs::list;
use super::{StoreError, err};
use crate::score::rules::Counts;
use crate::score::stored::KeyRecord;

/// Run id -> (level, records in the run).
pub(super) const RUNS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("score_key_runs");
/// Runs of one level merged into one of the next.
pub(super) const FANOUT: usize = 4;
/// Records per block (24.5 KiB): a lookup reads one block.
const BLOCK: usize = 512;
/// Bytes of a stored record: hash 16, owner flag 1, owner 8, six counts of 4.
pub(super) const ENTRY: usize = 49;

/// A run as memory keeps it: its id, level and size, and a filter of its hashes.
pub(super) struct Run {
    pub(super) id: u64,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the tests' view of levels")
    )]
    pub(super) level: u64,
    pub(super) count: u64,
    pub(super) filter: IdFilter,
}

/// The name of run `id`'s table.
fn name(id: u64) -> String {
    format!("score_key_run_{id}")
}

/// Run `id`'s table: first hash of a block -> the block.
fn table(name: &str) -> TableDefinition<'_, u128, &'static [u8]> {
    TableDefinition::new(name)
}

fn put(out: &mut Vec<u8>, hash: u128, record: &KeyRecord) {
    out.extend_from_slice(&hash.to_le_bytes());
    out.push(u8::from(record.owner.is_some()));
    out.extend_from_slice(&record.owner.unwrap_or(0).to_le_bytes());
    let c = &record.counts;
    for n in c.values() {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

fn hash_at(block: &[u8], i: usize) -> u128 {
    let at = i * ENTRY;
    u128::from_le_bytes(block[at..at + 16].try_into().expect("16 bytes"))
}

fn record_at(block: &[u8], i: usize) -> Result<KeyRecord, StoreError> {
    let e = &block[i * ENTRY..(i + 1) * ENTRY];
    let u32_at = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4 bytes"));
    let owner = match e[16] {
        0 => None,
        1 => Some(i64::from_le_bytes(e[17..25].try_into().expect("8 bytes"))),
        flag => {
            return Err(err("read key record")(format!(
                "key record with owner flag {flag}"
            )));
        }
    };
    Ok(KeyRecord {
        owner,
        counts: Counts {
            booked: u32_at(25),
            cancelled: u32_at(29),
            rescheduled: u32_at(33),
            held: u32_at(37),
            no_show: u32_at(41),
            won: u32_at(45),
        },
    })
}

/// A block's bytes, checked to hold whole records.
fn checked(block: &[u8]) -> Result<&[u8], StoreError> {
    if block.is_empty() || !block.len().is_multiple_of(ENTRY) {
        return Err(err("read key records")(format!(
            "a block of key records of {} bytes",
            block.len()
        )));
    }
    Ok(block)
}

/// Every run of `txn`'s snapshot with its filter (each run read once), newest first.
pub(super) fn load(txn: &redb::ReadTransaction) -> Result<Vec<Run>, StoreError> {
    let listed = match txn.open_table(RUNS) {
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        other => list(&other.map_err(err("open table"))?)?,
    };
    let mut runs = Vec::with_capacity(listed.len());
    for (id, level, count) in listed {
        let name = name(id);
        let blocks = txn.open_table(table(&name)).map_err(err("open table"))?;
        let mut filter = IdFilter::with_capacity(usize::try_from(count).unwrap_or(usize::MAX));
        for entry in blocks.iter().map_err(err("scan"))? {
            let (_, block) = entry.map_err(err("scan"))?;
            let block = checked(block.value())?;
            for i in 0..block.len() / ENTRY {
                filter.insert(&hash_at(block, i).to_le_bytes());
            }
        }
        runs.push(Run {
            id,
            level,
            count,
            filter,
        });
    }
    runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
    Ok(runs)
}

/// Finds records in the runs of one snapshot, opening each run's table at its first use.
pub(super) struct Finder<'r> {
    runs: &'r [Run],
    tables: Vec<Option<redb::ReadOnlyTable<u128, &'static [u8]>>>,
}

impl<'r> Finder<'r> {
    /// Over `runs`, newest first.
    pub(super) fn new(runs: &'r [Run]) -> Finder<'r> {
        Finder {
            runs,
            tables: runs.iter().map(|_| None).collect(),
        }
    }

    /// The newest record of `hash` in the runs of `txn`'s snapshot.
    pub(super) fn find(
        &mut self,
        txn: &redb::ReadTransaction,
        hash: u128,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let bytes = hash.to_le_bytes();
        for (run, slot) in self.runs.iter().zip(&mut self.tables) {
            if !run.filter.may_contain(&bytes) {
                continue;
            }
            if slot.is_none() {
                let name = name(run.id);
                *slot = Some(txn.open_table(table(&name)).map_err(err("open table"))?);
            }
            let blocks = slot.as_ref().expect("opened above");
            let Some(entry) = blocks.range(..=hash).map_err(err("read"))?.next_back() else {
                continue;
            };
            let (_, block) = entry.map_err(err("read"))?;
            let block = checked(block.value())?;
            let n = block.len() / ENTRY;
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match hash_at(block, mid).cmp(&hash) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return record_at(block, mid).map(Some),
                }
            }
        }
        Ok(None)
    }
}

/// Writes `records` (in hash order, one per hash, at most `bound` of them) as a new run of
/// `level`, listed in `score_key_runs`; returns it with its filter.
pub(super) fn write(
    txn: &WriteTransaction,
    level: u64,
    bound: u64,
    records: impl IntoIterator<Item = Result<(u128, KeyRecord), StoreError>>,
) -> Result<Run, StoreError> {
    let mut runs = txn.open_table(RUNS).map_err(err("open table"))?;
    let id = runs
        .last()
        .map_err(err("read"))?
        .map_or(0, |(k, _)| k.value() + 1);
    let name = name(id);
    let mut blocks = txn.open_table(table(&name)).map_err(err("open table"))?;
    let mut filter = IdFilter::with_capacity(usize::try_from(bound).unwrap_or(usize::MAX));
    let mut count = 0;
    let mut block = Vec::with_capacity(BLOCK * ENTRY);
    let mut first = 0;
    for entry in records {
        let (hash, record) = entry?;
        if block.is_empty() {
            first = hash;
        }
        put(&mut block, hash, &record);
        filter.insert(&hash.to_le_bytes());
        count += 1;
        if block.len() == BLOCK * ENTRY {
            blocks
                .insert(first, block.as_slice())
                .map_err(err("insert"))?;
            block.clear();
        }
    }
    if !block.is_empty() {
        blocks
            .insert(first, block.as_slice())
            .map_err(err("insert"))?;
    }
    runs.insert(id, (level, count)).map_err(err("insert"))?;
    Ok(Run {
        id,
        level,
        count,
        filter,
    })
}

/// A run being merged: its blocks in order, and the place in the current one.
struct Cursor<'t> {
    blocks: redb::Range<'t, u128, &'static [u8]>,
    block: Vec<u8>,
    at: usize,
}

impl Cursor<'_> {
    /// The hash at the cursor, reading the next block when this one is done.
    fn head(&mut self) -> Result<Option<u128>, StoreError> {
        if self.at * ENTRY >= self.block.len() {
            match self.blocks.next() {
                None => return Ok(None),
                Some(entry) => {
                    let (_, block) = entry.map_err(err("scan"))?;
                    self.block = checked(block.value())?.to_vec();
                    self.at = 0;
                }
            }
        }
        Ok(Some(hash_at(&self.block, self.at)))
    }
}

/// The smallest hash at the cursors with its newest record (the last cursor's that holds it),
/// every cursor at that hash moved past it. `heads` is room for the cursors' hashes, kept
/// between calls (one call per record merged).
fn next_newest(
    cursors: &mut [Cursor<'_>],
    heads: &mut Vec<Option<u128>>,
) -> Result<Option<(u128, KeyRecord)>, StoreError> {
    heads.clear();
    for c in cursors.iter_mut() {
        heads.push(c.head()?);
    }
    let Some(hash) = heads.iter().flatten().min().copied() else {
        return Ok(None);
    };
    let mut newest = None;
    for (c, head) in cursors.iter_mut().zip(heads.iter()) {
        if *head == Some(hash) {
            newest = Some(record_at(&c.block, c.at)?);
            c.at += 1;
        }
    }
    Ok(newest.map(|r| (hash, r)))
}

/// Merges the runs of each level that has [`FANOUT`] of them into one of the next level, level
/// by level; their tables are dropped. Returns the runs it wrote and the ids it merged away.
pub(super) fn cascade(txn: &WriteTransaction) -> Result<(Vec<Run>, Vec<u64>), StoreError> {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut level = 0;
    loop {
        let listed = list(&txn.open_table(RUNS).map_err(err("open table"))?)?;
        // Oldest first: of a hash's records, the last cursor's is the newest.
        let ids: Vec<u64> = listed
            .iter()
            .filter(|(_, l, _)| *l == level)
            .map(|(id, _, _)| *id)
            .collect();
        if ids.len() < FANOUT {
            return Ok((added, removed));
        }
        let names: Vec<String> = ids.iter().map(|id| name(*id)).collect();
        let bound = listed
            .iter()
            .filter(|(_, l, _)| *l == level)
            .map(|(_, _, count)| count)
            .sum();
        let run = {
            let tables = names
                .iter()
                .map(|n| txn.open_table(table(n)).map_err(err("open table")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut cursors = tables
                .iter()
                .map(|t| {
                    Ok(Cursor {
                        blocks: t.iter().map_err(err("scan"))?,
                        block: Vec::new(),
                        at: 0,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut heads = Vec::with_capacity(cursors.len());
            let merged = std::iter::from_fn(|| next_newest(&mut cursors, &mut heads).transpose());
            write(txn, level + 1, bound, merged)?
        };
        added.push(run);
        let mut runs = txn.open_table(RUNS).map_err(err("open table"))?;
        for (id, name) in ids.iter().zip(&names) {
            runs.remove(*id).map_err(err("remove"))?;
            txn.delete_table(table(name)).map_err(err("delete table"))?;
        }
        added.retain(|r| !ids.contains(&r.id));
        removed.extend(ids);
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_stored_in_its_fixed_width_and_read_back() {
        let record = KeyRecord {
            owner: Some(-5),
            counts: Counts {
                booked: 1,
                cancelled: 2,
                rescheduled: 3,
                held: 4,
                no_show: 5,
                won: u32::MAX,
            },
        };
        let mut block = Vec::new();
        put(&mut block, 7, &record);
        put(&mut block, u128::MAX, &KeyRecord::default());
        assert_eq!(block.len(), 2 * ENTRY);
        assert_eq!((hash_at(&block, 0), hash_at(&block, 1)), (7, u128::MAX));
        assert_eq!(record_at(&block, 0).unwrap(), record);
        assert_eq!(record_at(&block, 1).unwrap(), KeyRecord::default());
        block[ENTRY + 16] = 2;
        assert!(record_at(&block, 1).is_err());
        assert!(checked(&block[..ENTRY + 1]).is_err());
        assert!(checked(&[]).is_err());
    }
}
