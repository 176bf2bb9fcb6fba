//! Persistent pipeline state in an embedded store (redb): the commit record of the last flush,
//! the index of event ids already written (deduplication), and the last known state of every
//! contact (change tracking).
//!
//! One redb write transaction per flush records, atomically, the flush sequence number whose
//! files are published, the log position replay must start from, the ids of the events the
//! flush wrote, the contact states those events produced, and the dead letters whose events it
//! replayed (`hooklake replay --rejected`: a dead letter is replayed by exactly one committed
//! flush). That transaction is the commit point of a flush (ARCHITECTURE.md, "Durability
//! contract"). Ids older than the dedup window are purged by [`Store::purge_before`].
//!
//! The dedup index has two parts. Ids a flush writes go to `seen_recent`, all in one entry
//! keyed by a counter, so a commit appends one value instead of inserting an id at a time;
//! a copy of those ids is kept in memory for lookups. Once [`RECENT_MERGE_IDS`] are recent, or
//! at a purge, a commit moves them into a new sorted run of the index (`runs.rs`: blocks of
//! sorted ids, runs of one size merged four at a time, so an id is rewritten a few times in
//! all, not at every merge). A purge rewrites the blocks holding ids received before the
//! window. An in-memory filter of every id answers most lookups of new ids without reading
//! the store. Stores of earlier versions kept merged ids in one id-keyed B-tree (`seen`),
//! which every merge rewrote almost whole, and before that also ordered by time
//! (`seen_by_time`); opening such a store moves `seen` into a run and drops both.
//! Invariant: no HTTP and no Parquet here; only ids, times and sequence numbers.
//!
//! The store's tables, its error, compaction intents and replay marks are here; its other
//! parts have files of their own: `open.rs` (the file, its format and conversion, the re-open
//! after an I/O error), `index.rs` (the dedup index, over `runs.rs` and `filter.rs`),
//! `states.rs` (contact and call states), `scores.rs` (lead scores), `keys.rs` (the records
//! of lead scoring's contact keys: owners and counts; their runs in `keyruns.rs`), `outbox.rs`
//! (workflow triggers' facts waiting for delivery, and the attempts made) and `commit.rs` (the
//! commit of a flush).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub mod codec;
mod commit;
mod filter;
mod index;
mod keyruns;
mod keys;
mod open;
mod outbox;
mod runs;
mod scores;
mod states;
pub use commit::Committed;
pub use filter::IdFilter;
pub use index::{IdSet, RECENT_MERGE_IDS, id_bytes};
pub use keys::{RECENT_MERGE_KEYS, key_hash, key_hash_bytes};
pub use open::Fault;
pub use outbox::{Attempt, Entry, Next};
pub use scores::ScoringRead;
pub use states::States;

use index::Index;
use open::CACHE_BYTES;

/// Event id (16 bytes) -> receive time in seconds since the epoch: where earlier versions
/// merged recent ids; moved into a run when a store is opened.
const LEGACY_SEEN: TableDefinition<&[u8], u64> = TableDefinition::new("seen");
/// (receive time in seconds, event id) -> nothing: the same ids ordered by time, which earlier
/// versions kept for purging; deleted when a store is opened.
const LEGACY_SEEN_BY_TIME: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("seen_by_time");
/// Counter -> the ids of one commit, each as the event id (16 bytes) and its receive time in
/// seconds (8 bytes, little-endian): ids committed since the last merge into a run. Stores
/// of earlier versions have one id per entry, which reads the same.
const SEEN_RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("seen_recent");
/// Contact id -> its last known state
/// ([`ContactState::encode`](crate::flatten::changes::ContactState::encode); JSON in stores of
/// earlier versions).
const CONTACTS: TableDefinition<i64, &[u8]> = TableDefinition::new("contacts");
/// Call id -> its last known slot ([`CallState`](crate::flatten::changes::CallState) as JSON).
const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
/// Compaction id -> the compaction in progress ([`Compaction`] as JSON), until it is finished.
const COMPACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("compactions");
/// Dead-letter id (16 bytes, `rejected_events.event_id`) -> Unix seconds when a committed flush
/// wrote its events (`hooklake replay --rejected`).
const REPLAYED: TableDefinition<&[u8], u64> = TableDefinition::new("rejected_replayed");
/// Named counters: `flush_seq`, `replay_from`, `compaction_seq`, `seen_recent_next`, and the
/// store's `format` ([`FORMAT`](open::FORMAT)).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
#[error("state store {op}: {message}")]
pub struct StoreError {
    op: &'static str,
    message: String,
    /// Whether redb met an I/O error (or refuses to go on after one): the store must be closed
    /// and opened again before it works.
    io: bool,
}

impl StoreError {
    /// Whether this error came from the file system (a full disk, say), not from the data.
    pub fn is_io(&self) -> bool {
        self.io
    }
}

fn err<E: std::fmt::Display + 'static>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError {
        op,
        io: is_io(&e),
        message: e.to_string(),
    }
}

/// Whether a redb error is an I/O error or redb's refusal to go on after one.
fn is_io(error: &dyn std::any::Any) -> bool {
    use redb::{CommitError, DatabaseError, StorageError, TableError, TransactionError};
    let storage = |e: &StorageError| matches!(e, StorageError::Io(_) | StorageError::PreviousIo);
    if let Some(e) = error.downcast_ref::<StorageError>() {
        storage(e)
    } else if let Some(e) = error.downcast_ref::<TransactionError>() {
        matches!(e, TransactionError::Storage(s) if storage(s))
    } else if let Some(e) = error.downcast_ref::<TableError>() {
        matches!(e, TableError::Storage(s) if storage(s))
    } else if let Some(e) = error.downcast_ref::<CommitError>() {
        matches!(e, CommitError::Storage(s) if storage(s))
    } else if let Some(e) = error.downcast_ref::<DatabaseError>() {
        matches!(e, DatabaseError::Storage(s) if storage(s))
    } else if let Some(e) = error.downcast_ref::<redb::Error>() {
        matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
    } else {
        error.downcast_ref::<std::io::Error>().is_some()
    }
}

/// A compaction between its intent and its end: which files it replaces with which.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compaction {
    /// Partition directory, relative to the data directory.
    pub partition: String,
    /// File names replaced.
    pub inputs: Vec<String>,
    /// File names written.
    pub outputs: Vec<String>,
}

/// The store; cheap to share behind an `Arc`.
///
/// After an I/O error (a full disk, say) redb refuses every later operation until its file is
/// closed and opened again. The store does that itself: an operation that meets such an error
/// marks the store broken, and the next operation (at most one attempt a second; at once with
/// [`Store::reopen`]) drops the database, which releases redb's lock on the file, opens it again
/// (redb repairs what the failed commit left) and reloads the in-memory part of the index from
/// it. Operations hold a read lock on the database for their whole length and a re-open holds
/// the write lock, so no transaction ever spans two opens.
pub struct Store {
    path: PathBuf,
    /// The open database; `None` while a re-open after an I/O error has not succeeded.
    db: RwLock<Option<Database>>,
    /// Set by an I/O error, cleared by a successful re-open.
    broken: AtomicBool,
    /// When a re-open was last tried, so that a full disk is not probed by every request.
    reopen_tried: Mutex<Option<Instant>>,
    /// What lookups of the dedup index read before its runs. A lookup holds the read lock
    /// from the start of its read transaction to its last lookup, so a merge (which empties the
    /// recent ids after its commit) can never hide an id from it. A purge takes the write lock
    /// before its transaction commits, so that no flush commits between that commit and the
    /// purge's changes here. Always taken after the lock on `db`, never before.
    index: RwLock<Index>,
    /// Lead scoring's recent key records (`keys.rs`), locked like `index`: a lookup holds the
    /// read lock from its snapshot to its last lookup, and a commit takes the write lock
    /// before its transaction begins. Always taken after the lock on `db`, never before.
    recent_keys: RwLock<keys::Memory>,
    /// Testing hook: the fault the store's file simulates ([`Fault`]).
    fault: Arc<AtomicU8>,
}

impl Store {
    /// A new compaction id.
    pub fn next_compaction_id(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            let id = {
                let mut meta = txn.open_table(META).map_err(err("open table"))?;
                let id = meta
                    .get("compaction_seq")
                    .map_err(err("read"))?
                    .map(|v| v.value())
                    .unwrap_or(0)
                    + 1;
                meta.insert("compaction_seq", id).map_err(err("insert"))?;
                id
            };
            txn.commit().map_err(err("commit"))?;
            Ok(id)
        })
    }

    /// Records that compaction `id` is about to publish its outputs (durable when it returns).
    pub fn begin_compaction(&self, id: u64, compaction: &Compaction) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(compaction).map_err(err("encode compaction"))?;
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            txn.open_table(COMPACTIONS)
                .map_err(err("open table"))?
                .insert(id, bytes.as_slice())
                .map_err(err("insert"))?;
            txn.commit().map_err(err("commit"))
        })
    }

    /// Forgets a finished compaction.
    pub fn end_compaction(&self, id: u64) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            txn.open_table(COMPACTIONS)
                .map_err(err("open table"))?
                .remove(id)
                .map_err(err("remove"))?;
            txn.commit().map_err(err("commit"))
        })
    }

    /// Compactions that began and did not end (a crash in between).
    pub fn unfinished_compactions(&self) -> Result<Vec<(u64, Compaction)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let table = txn.open_table(COMPACTIONS).map_err(err("open table"))?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err("scan"))? {
                let (id, bytes) = entry.map_err(err("scan"))?;
                out.push((
                    id.value(),
                    serde_json::from_slice(bytes.value()).map_err(err("decode compaction"))?,
                ));
            }
            Ok(out)
        })
    }

    /// Which of these dead letters a committed flush already replayed.
    pub fn replayed(&self, ids: &[[u8; 16]]) -> Result<Vec<bool>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(err("begin read"))?;
            let table = txn.open_table(REPLAYED).map_err(err("open table"))?;
            ids.iter()
                .map(|id| Ok(table.get(&id[..]).map_err(err("read"))?.is_some()))
                .collect()
        })
    }

    /// Every replayed dead letter and when (for a rebuild, which carries them over).
    pub fn all_replayed(&self) -> Result<Vec<([u8; 16], u64)>, StoreError> {
        self.with_db(|db| all_replayed_in(&db.begin_read().map_err(err("begin read"))?))
    }

    /// The replay marks of the store file at `path`, read without writing to it (the source of a
    /// rebuild); none when the file or its table does not exist.
    pub fn read_replayed(path: &Path) -> Result<Vec<([u8; 16], u64)>, StoreError> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .open(path)
            .map_err(err("open"))?;
        let txn = db.begin_read().map_err(err("begin read"))?;
        match txn.open_table(REPLAYED) {
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(err("open table")(e)),
            Ok(_) => all_replayed_in(&txn),
        }
    }

    /// Records dead letters as replayed at the given times (a rebuild carrying them over).
    pub fn put_replayed(&self, marks: &[([u8; 16], u64)]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(err("begin write"))?;
            {
                let mut table = txn.open_table(REPLAYED).map_err(err("open table"))?;
                for (id, secs) in marks {
                    table.insert(&id[..], secs).map_err(err("insert"))?;
                }
            }
            txn.commit().map_err(err("commit"))
        })
    }
}

/// Every replayed dead letter in `txn`'s snapshot, and when it was replayed.
fn all_replayed_in(txn: &redb::ReadTransaction) -> Result<Vec<([u8; 16], u64)>, StoreError> {
    let table = txn.open_table(REPLAYED).map_err(err("open table"))?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(err("scan"))? {
        let (k, v) = entry.map_err(err("scan"))?;
        if let Ok(id) = <[u8; 16]>::try_from(k.value()) {
            out.push((id, v.value()));
        }
    }
    Ok(out)
}

/// Helpers shared by the store's tests.
#[cfg(test)]
mod testutil {
    use super::Committed;

    pub(super) fn flush(seq: u64) -> Committed {
        Committed {
            flush_seq: seq,
            replay_from: seq * 10,
        }
    }
}
