//! Opening the store: its file (through which the testing hook [`Fault`] acts), redb's page
//! cache, the format check, the conversion of an earlier version's dedup index and scoring
//! keys, and the re-open after an I/O error.
//! Invariant: a store of a later `format` is refused and left as it is; the page cache is
//! bounded (16 MiB); after an I/O error the store is closed and opened again (the in-memory
//! recent ids, filter and recent key records reloaded from the file) before its next
//! operation, under a lock no operation holds across.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{BackendError, Database, ReadableDatabase, ReadableTable};

use super::index::{IdSet, Index, filter_of, recent_entries};
use super::{
    CALLS, COMPACTIONS, CONTACTS, LEGACY_SEEN, LEGACY_SEEN_BY_TIME, META, REPLAYED, SEEN_RECENT,
    Store, StoreError, err, keys, runs,
};

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

/// redb's page cache. Its default (1 GiB) is a ceiling the process's resident memory grows to
/// as the dedup index and contact states grow. It was 64 MiB while id lookups read one big
/// B-tree; with the filter in front and the merged ids in runs, 16 MiB replays as fast (1.1
/// and 3.4 million lines, side by side) with peak RSS 145-156 MiB instead of 225-241.
pub(super) const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The database, read-locked for the length of one operation.
pub(super) struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

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

/// The open database and the in-memory parts loaded from it.
struct Parts {
    db: Database,
    index: Index,
    recent_keys: keys::Memory,
}

/// Opens or creates the database at `path`, prepares its tables (converting an earlier
/// version's), and loads the in-memory parts of the dedup index and of the key records from it.
fn open_parts(path: &Path, fault: &Arc<AtomicU8>) -> Result<Parts, StoreError> {
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
        keys::migrate(&txn)?;
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
    let recent_keys = keys::load(&db.begin_read().map_err(err("begin read"))?)?;
    Ok(Parts {
        db,
        index,
        recent_keys,
    })
}

impl Store {
    /// Opens or creates the store file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let parts = open_parts(path, &fault)?;
        Ok(Store {
            path: path.to_path_buf(),
            db: RwLock::new(Some(parts.db)),
            broken: AtomicBool::new(false),
            reopen_tried: Mutex::new(None),
            index: RwLock::new(parts.index),
            recent_keys: RwLock::new(parts.recent_keys),
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

    /// Copies the store's file to `dest` (synced) while no transaction runs: the copy is the
    /// store as of its last commit, which redb opens like the original.
    pub fn copy_to(&self, dest: &Path) -> Result<u64, StoreError> {
        let _exclusive = self.db.write().unwrap_or_else(|e| e.into_inner());
        let copy = || -> std::io::Result<u64> {
            let bytes = std::fs::copy(&self.path, dest)?;
            std::fs::File::open(dest)?.sync_all()?;
            Ok(bytes)
        };
        copy().map_err(err("copy the store"))
    }

    /// Closes the database and opens it again, reloading the in-memory part of the index from
    /// the file; what redb asks for after an I/O error. On failure the store stays broken (every
    /// operation fails) until a later re-open succeeds.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index_write();
        let mut recent_keys = self.recent_keys_write();
        *self.reopen_tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        // Closed first: redb locks its file, and refuses a second handle on it.
        drop(db.take());
        self.broken.store(true, Ordering::Release);
        let parts = open_parts(&self.path, &self.fault)?;
        *db = Some(parts.db);
        let changes = index.changes + 1;
        *index = Index {
            changes,
            ..parts.index
        };
        *recent_keys = parts.recent_keys;
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "state store opened again after an I/O error");
        Ok(())
    }

    /// The open database, opened again first if an I/O error closed it (at most one attempt
    /// per [`REOPEN_EVERY`]).
    pub(super) fn db(&self) -> Result<Db<'_>, StoreError> {
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
    pub(super) fn with_db<T>(
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
}

/// The store format this version writes: 4 since lead scoring's merged key records are kept in
/// tiered runs (`keys.rs`; a version of format 3 would not find them, and refuses the store);
/// 3 since they are kept by hash (a version of format 2 would not find them); 2 since the
/// dedup index is kept in runs. Versions before 2 wrote no number (and do not check it: a
/// store opened by one of them afterwards loses the runs from its lookups).
pub(super) const FORMAT: u64 = 4;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::flush;
    use crate::state::{Committed, States};

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
        let later = format!("format {}", FORMAT + 1);
        assert!(error.to_string().contains(&later), "{error}");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT + 1);
    }
}
