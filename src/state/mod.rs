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

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::flatten::changes::{CallState, ContactState, ContactStates};
use redb::{BackendError, Database, ReadableDatabase, ReadableTable, TableDefinition};

mod filter;
mod runs;
pub use filter::IdFilter;

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
/// Contact id -> its last known state ([`ContactState::encode`]; JSON in stores of earlier versions).
const CONTACTS: TableDefinition<i64, &[u8]> = TableDefinition::new("contacts");
/// Call id -> its last known slot ([`CallState`] as JSON).
const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
/// Compaction id -> the compaction in progress ([`Compaction`] as JSON), until it is finished.
const COMPACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("compactions");
/// Dead-letter id (16 bytes, `rejected_events.event_id`) -> Unix seconds when a committed flush
/// wrote its events (`hooklake replay --rejected`).
const REPLAYED: TableDefinition<&[u8], u64> = TableDefinition::new("rejected_replayed");
/// Named counters: `flush_seq`, `replay_from`, `compaction_seq`, `seen_recent_next`, and the
/// store's `format` ([`FORMAT`]).
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

/// The contact and call states a flush read and advanced.
#[derive(Debug, Default)]
pub struct States {
    pub contacts: ContactStates,
    pub calls: HashMap<String, CallState>,
    /// Dead letters whose events the flush writes: recorded as replayed by its commit.
    pub replayed: Vec<[u8; 16]>,
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

/// What the last committed flush recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the last committed flush (0 before the first).
    pub flush_seq: u64,
    /// First write-ahead log sequence number that may hold events not yet written.
    pub replay_from: u64,
}

/// Recent ids merged into the id-keyed tables at once (about 6 MiB of memory at most).
pub const RECENT_MERGE_IDS: usize = 1 << 18;

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
    /// Testing hook: the fault the store's file simulates ([`Fault`]).
    fault: Arc<AtomicU8>,
}

/// A fault the store's file can simulate, for tests of what follows an I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Every write and sync goes through.
    None = 0,
    /// Writes fail as on a full disk (`ENOSPC`): a commit fails before it is recorded.
    Writes = 1,
    /// Syncs fail after the writes went through: redb reports a failed commit that is in the
    /// file all the same (its documentation warns that a failed commit may be durable).
    Syncs = 2,
    /// The next write fails, then every write goes through again: a disk that was full for a
    /// moment.
    OneWrite = 3,
}

/// How long a lazy re-open waits after a failed one.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The in-memory part of the dedup index.
struct Index {
    /// The ids of `seen_recent`, as committed.
    recent: IdSet,
    /// Every id of the runs and of `seen_recent`.
    filter: IdFilter,
    /// Counts the changes to the two above: a filter built from a snapshot of the store
    /// replaces the one in use only if nothing changed since the snapshot.
    changes: u64,
}

/// A set of event ids (16 bytes each), hashed with ahash: std's SipHash is a cost on every
/// event's dedup check and release, and buys nothing for ids that are hashes already.
pub type IdSet = std::collections::HashSet<[u8; 16], ahash::RandomState>;

/// redb's page cache. Its default (1 GiB) is a ceiling the process's resident memory grows to
/// as the dedup index and contact states grow. It was 64 MiB while id lookups read one big
/// B-tree; with the filter in front and the merged ids in runs, 16 MiB replays as fast (1.1
/// and 3.4 million lines, side by side) with peak RSS 145-156 MiB instead of 225-241.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The database, read-locked for the length of one operation.
struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

/// The store's file, through which the testing hook [`Fault`] acts.
#[derive(Debug)]
struct FileBackend {
    file: redb::backends::FileBackend,
    fault: Arc<AtomicU8>,
}

impl FileBackend {
    fn check(&self, fault: Fault) -> std::io::Result<()> {
        let full = || Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        if self.fault.load(Ordering::Relaxed) == fault as u8 {
            return full();
        }
        if fault == Fault::Writes
            && self
                .fault
                .compare_exchange(
                    Fault::OneWrite as u8,
                    Fault::None as u8,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return full();
        }
        Ok(())
    }
}

impl redb::StorageBackend for FileBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check(Fault::Syncs)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check(Fault::Writes)?;
        self.file.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens or creates the database at `path`, prepares its tables, and loads the in-memory part
/// of the dedup index from it.
fn open_parts(path: &Path, fault: &Arc<AtomicU8>) -> Result<(Database, Index), StoreError> {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(err("open"))?;
    let backend = FileBackend {
        file: redb::backends::FileBackend::new(file).map_err(err("open"))?,
        fault: fault.clone(),
    };
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(err("open"))?;
    let txn = db.begin_write().map_err(err("begin"))?;
    {
        check_format(&txn)?;
        txn.open_table(runs::BLOCKS).map_err(err("create table"))?;
        txn.open_table(runs::RUNS).map_err(err("create table"))?;
        migrate_seen(&txn)?;
        txn.delete_table(LEGACY_SEEN_BY_TIME)
            .map_err(err("delete table"))?;
        txn.open_table(META).map_err(err("create table"))?;
        txn.open_table(CONTACTS).map_err(err("create table"))?;
        txn.open_table(CALLS).map_err(err("create table"))?;
        txn.open_table(COMPACTIONS).map_err(err("create table"))?;
        txn.open_table(REPLAYED).map_err(err("create table"))?;
        txn.open_table(SEEN_RECENT).map_err(err("create table"))?;
    }
    txn.commit().map_err(err("commit"))?;
    let mut recent = IdSet::default();
    {
        let txn = db.begin_read().map_err(err("begin read"))?;
        let table = txn.open_table(SEEN_RECENT).map_err(err("open table"))?;
        for entry in table.iter().map_err(err("scan"))? {
            let (_, value) = entry.map_err(err("scan"))?;
            recent.extend(recent_entries(value.value())?.map(|(id, _)| id));
        }
    }
    let filter = filter_of(&db.begin_read().map_err(err("begin read"))?, &recent, 0)?;
    let index = Index {
        recent,
        filter,
        changes: 0,
    };
    Ok((db, index))
}

impl Store {
    /// Opens or creates the store file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let (db, index) = open_parts(path, &fault)?;
        Ok(Store {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            reopen_tried: Mutex::new(None),
            index: RwLock::new(index),
            fault,
        })
    }

    /// Testing hook: makes the store's file fail as `fault` says, until called again.
    pub fn simulate_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }

    /// Whether an I/O error closed the store and it has not been opened again since.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Closes the database and opens it again, reloading the in-memory part of the index from
    /// the file; what redb asks for after an I/O error. On failure the store stays broken (every
    /// operation fails) until a later re-open succeeds.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index_write();
        *self.reopen_tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        // Closed first: redb locks its file, and refuses a second handle on it.
        drop(db.take());
        self.broken.store(true, Ordering::Release);
        let (opened, loaded) = open_parts(&self.path, &self.fault)?;
        *db = Some(opened);
        let changes = index.changes + 1;
        *index = Index { changes, ..loaded };
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "state store opened again after an I/O error");
        Ok(())
    }

    /// The open database, opened again first if an I/O error closed it (at most one attempt
    /// per [`REOPEN_EVERY`]).
    fn db(&self) -> Result<Db<'_>, StoreError> {
        if self.is_broken() {
            let tried = *self.reopen_tried.lock().unwrap_or_else(|e| e.into_inner());
            if tried.is_none_or(|at| at.elapsed() >= REOPEN_EVERY) {
                self.reopen()?;
            }
        }
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() || self.is_broken() {
            return Err(StoreError {
                op: "open",
                message: "closed after an I/O error, not opened again yet".into(),
                io: true,
            });
        }
        Ok(Db(guard))
    }

    /// Runs `work` on the open database; an I/O error marks the store broken.
    fn with_db<T>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let result = work(&db);
        if let Err(e) = &result
            && e.io
        {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    fn index_read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
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
        self.with_db(|db| {
            let merge = self.commit_in(db, record, ids, states)?;
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

    /// The transaction of [`Store::commit`]; returns whether it merged the recent ids into a run.
    fn commit_in(
        &self,
        db: &Database,
        record: Committed,
        ids: &[([u8; 16], u64)],
        states: &States,
    ) -> Result<bool, StoreError> {
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
        }
        txn.commit().map_err(err("commit"))?;
        Ok(merge)
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
    fn grow_filter(
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

/// A filter holding every id of the runs in `txn` and of `recent`, with room for `room` ids
/// at least and for those it holds.
fn filter_of(
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

/// The store format this version writes: 2 since the dedup index is kept in runs. Versions
/// before it wrote no number (and do not check it: a store opened by one of them afterwards
/// loses the runs from its lookups).
const FORMAT: u64 = 2;

/// Refuses a store of a later format than this version knows, then records [`FORMAT`].
fn check_format(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(err("open table"))?;
    let found = meta.get("format").map_err(err("read"))?.map(|v| v.value());
    if let Some(found) = found
        && found > FORMAT
    {
        return Err(StoreError {
            op: "open",
            io: false,
            message: format!(
                "the store is of format {found}, written by a later hooklake; this one reads formats up to {FORMAT}"
            ),
        });
    }
    meta.insert("format", FORMAT).map_err(err("insert"))?;
    Ok(())
}

/// Moves the ids of an earlier version's id-keyed B-tree (`seen`, already in key order) into
/// a run, and drops the tree.
fn migrate_seen(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let seen = txn.open_table(LEGACY_SEEN).map_err(err("open table"))?;
        let sorted = seen.iter().map_err(err("scan"))?.map(|entry| {
            let (id, secs) = entry.map_err(err("scan"))?;
            let id: [u8; 16] = id.value().try_into().map_err(|_| StoreError {
                op: "read seen ids",
                io: false,
                message: format!("an id of {} bytes, expected 16", id.value().len()),
            })?;
            Ok((id, secs.value()))
        });
        runs::add_sorted(txn, sorted)?;
    }
    txn.delete_table(LEGACY_SEEN).map_err(err("delete table"))?;
    Ok(())
}

/// Bytes of one id in a `seen_recent` value: the id, then its receive time.
const RECENT_ENTRY: usize = 24;

/// Splits a `seen_recent` value into its ids and their receive times.
fn recent_entries(value: &[u8]) -> Result<impl Iterator<Item = ([u8; 16], u64)> + '_, StoreError> {
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
fn append_recent(txn: &redb::WriteTransaction, ids: &[([u8; 16], u64)]) -> Result<(), StoreError> {
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
fn merge_recent(txn: &redb::WriteTransaction, ids: &[([u8; 16], u64)]) -> Result<(), StoreError> {
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

    fn flush(seq: u64) -> Committed {
        Committed {
            flush_seq: seq,
            replay_from: seq * 10,
        }
    }

    #[test]
    fn a_store_closed_by_an_io_error_is_opened_again_and_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let (a, b) = ([1; 16], [2; 16]);
        store
            .commit(flush(1), &[(a, 1)], &States::default())
            .unwrap();
        store.simulate_fault(Fault::Writes);
        let failed = store
            .commit(flush(2), &[(b, 1)], &States::default())
            .unwrap_err();
        assert!(failed.is_io(), "{failed}");
        assert!(store.is_broken());
        // redb refuses to go on, and opening it again fails while the disk is still full.
        assert!(store.committed().unwrap_err().is_io());
        assert!(store.reopen().is_err());
        assert!(store.is_broken());
        store.simulate_fault(Fault::None);
        store.reopen().unwrap();
        assert!(!store.is_broken());
        assert_eq!(
            store.committed().unwrap(),
            flush(1),
            "the failed commit is not there"
        );
        assert_eq!(store.seen(&[a, b]).unwrap(), [true, false]);
        store
            .commit(flush(2), &[(b, 1)], &States::default())
            .unwrap();
        assert_eq!(store.committed().unwrap(), flush(2));
        assert_eq!(store.seen(&[a, b]).unwrap(), [true, true]);
        // The re-opened database still holds redb's lock on its file.
        let again = Store::open(&dir.path().join("state.redb")).err().unwrap();
        assert!(again.to_string().contains("open"), "{again}");
    }

    #[test]
    fn an_operation_after_an_io_error_opens_the_store_again_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        store.simulate_fault(Fault::Writes);
        store
            .commit(flush(1), &[([1; 16], 1)], &States::default())
            .unwrap_err();
        store.simulate_fault(Fault::None);
        // No re-open was tried yet: the next operation does it.
        assert_eq!(store.committed().unwrap(), Committed::default());
        assert!(!store.is_broken());
    }

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

    #[test]
    fn a_store_of_an_earlier_version_has_its_ids_moved_into_a_run_and_purges_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (old, new) = ([1u8; 16], [2u8; 16]);
        {
            // What earlier versions wrote: each id in `seen` and in `seen_by_time`.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut seen = txn.open_table(LEGACY_SEEN).unwrap();
                let mut by_time = txn.open_table(LEGACY_SEEN_BY_TIME).unwrap();
                for (id, secs) in [(old, 100u64), (new, 200)] {
                    seen.insert(&id[..], secs).unwrap();
                    by_time.insert((secs, &id[..]), ()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        {
            let txn = store.db().unwrap().begin_read().unwrap();
            assert!(matches!(
                txn.open_table(LEGACY_SEEN_BY_TIME),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
            // The id-keyed tree became a run.
            assert!(matches!(
                txn.open_table(LEGACY_SEEN),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
            assert_eq!(runs::levels(&txn).unwrap(), [(0, 2)]);
        }
        assert_eq!(store.seen(&[old, new]).unwrap(), vec![true, true]);
        assert_eq!(store.purge_before(150).unwrap(), 1);
        assert_eq!(store.seen(&[old, new]).unwrap(), vec![false, true]);
        assert_eq!(store.purge_before(150).unwrap(), 0);
    }

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
    fn a_store_of_a_later_format_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(Store::open(&path).unwrap());
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
            drop((meta, txn));
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", FORMAT + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let error = Store::open(&path).err().expect("a later format");
        assert!(error.to_string().contains("format 3"), "{error}");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT + 1);
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
