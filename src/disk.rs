//! Free-space guard: refuses new events before the data directory's file system fills up, and
//! holds a flush back while the file system has no room for what the flush would write.
//!
//! Invariant: for requests, `statvfs` runs at most once per [`CHECK_EVERY`]; between checks the
//! last answer is reused, so the guard costs a mutex and a clock read per request. A flush
//! reads the free space afresh ([`DiskGuard::check_room`]), once per flush.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The disk is too full to take more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disk nearly full: {free_bytes} bytes free, min_free_bytes is {min_free_bytes}")]
pub struct DiskFull {
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

/// A flush would leave less than `min_free_bytes` free: it is held back, its events stay
/// buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "not enough disk space for a flush: {free_bytes} bytes free, the flush needs about {needed_bytes} and min_free_bytes is {min_free_bytes}"
)]
pub struct NoRoom {
    pub free_bytes: u64,
    pub needed_bytes: u64,
    pub min_free_bytes: u64,
}

/// What a flush is about to write, in the units [`flush_bytes`] prices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushSize {
    /// Bytes of the flushed events as the buffer counts them (`Envelope::approx_bytes`).
    pub event_bytes: u64,
    /// Parquet files the flush writes (one per table and partition).
    pub files: u64,
    /// Contact and call states the commit stores.
    pub states: u64,
    /// Event ids the commit adds to the dedup index.
    pub ids: u64,
    /// Ids of the dedup index the commit rewrites when it merges recent ids into a run (0 when
    /// it does not merge).
    pub rewritten_ids: u64,
    /// Lead scoring's key records the commit writes: those the flush changed, plus, when it
    /// merges the recent ones into their table, every record of the table (`state/keys.rs`).
    pub key_records: u64,
}

/// Parquet bytes per byte of buffered event, at most: measured 0.5-1.25 on generated traffic
/// (0.5 for flushes of 20 000 events, up to 1.25 for flushes of 500, whose files are small),
/// doubled for payloads that compress worse.
pub const PARQUET_BYTES_PER_EVENT_BYTE: u64 = 2;
/// Bytes of a Parquet file beyond its rows (footer, schema, statistics): 5-13.5 KB measured
/// for files of one row.
pub const FILE_BYTES: u64 = 16 * 1024;
/// Bytes a state-store commit takes whatever it holds (the pages of each table's path, the
/// allocator state): 24 KiB measured for one contact.
pub const COMMIT_BYTES: u64 = 256 * 1024;
/// Bytes of a commit per contact or call state: redb copies each page it changes, and the file
/// took 140-330 more bytes of disk per event (one state and one id each) in the measured
/// flushes.
pub const STATE_BYTES: u64 = 512;
/// Bytes of a commit per new id (24 bytes of entry, in one value per commit).
pub const ID_BYTES: u64 = 64;
/// Bytes per id a merge into a run writes (24 bytes of entry, in blocks of 1 024), with room for
/// the pages of the runs it replaces, which are freed only once it commits.
pub const RUN_ID_BYTES: u64 = 48;

/// Bytes per key record a commit writes: about 30 bytes of record and its 16-byte hash, with
/// room for the B-tree's pages a merge replaces, which are freed only once it commits.
pub const KEY_RECORD_BYTES: u64 = 128;

/// A bound on the disk space a flush of `size` takes while it runs: its Parquet files and its
/// state-store commit (redb writes a commit's pages beside the ones they replace, so the file
/// grows before it can reuse them).
pub fn flush_bytes(size: FlushSize) -> u64 {
    size.event_bytes
        .saturating_mul(PARQUET_BYTES_PER_EVENT_BYTE)
        .saturating_add(size.files.saturating_mul(FILE_BYTES))
        .saturating_add(COMMIT_BYTES)
        .saturating_add(size.states.saturating_mul(STATE_BYTES))
        .saturating_add(size.ids.saturating_mul(ID_BYTES))
        .saturating_add(size.rewritten_ids.saturating_mul(RUN_ID_BYTES))
        .saturating_add(size.key_records.saturating_mul(KEY_RECORD_BYTES))
}

pub struct DiskGuard {
    path: PathBuf,
    min_free_bytes: u64,
    /// When free space was last read, and what it was.
    last: Mutex<Option<(Instant, u64)>>,
    /// Testing hook: the free space to report instead of the file system's (`u64::MAX`: none).
    simulated_free: AtomicU64,
}

impl DiskGuard {
    pub fn new(path: &Path, min_free_bytes: u64) -> DiskGuard {
        DiskGuard {
            path: path.to_path_buf(),
            min_free_bytes,
            last: Mutex::new(None),
            simulated_free: AtomicU64::new(u64::MAX),
        }
    }

    /// Testing hook: reports `free` bytes free (until called with `None`), read afresh.
    pub fn simulate_free_bytes(&self, free: Option<u64>) {
        self.simulated_free
            .store(free.unwrap_or(u64::MAX), Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn free_bytes(&self) -> std::io::Result<u64> {
        match self.simulated_free.load(Ordering::Relaxed) {
            u64::MAX => free_bytes(&self.path),
            free => Ok(free),
        }
    }

    /// `Ok` when the file system has at least `min_free_bytes` free (or cannot be measured).
    pub fn check(&self) -> Result<(), DiskFull> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < CHECK_EVERY => free,
            _ => match self.free_bytes() {
                Ok(free) => {
                    *last = Some((Instant::now(), free));
                    free
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot measure free disk space; not enforcing min_free_bytes");
                    return Ok(());
                }
            },
        };
        if free < self.min_free_bytes {
            return Err(DiskFull {
                free_bytes: free,
                min_free_bytes: self.min_free_bytes,
            });
        }
        Ok(())
    }

    /// `Ok` when the file system has `needed` bytes free beyond `min_free_bytes` (or cannot be
    /// measured, or the guard is off: `min_free_bytes = 0`). Reads the free space afresh.
    pub fn check_room(&self, needed: u64) -> Result<(), NoRoom> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = match self.free_bytes() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure free disk space; not holding the flush back");
                return Ok(());
            }
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), free));
        if free < self.min_free_bytes.saturating_add(needed) {
            return Err(NoRoom {
                free_bytes: free,
                needed_bytes: needed,
                min_free_bytes: self.min_free_bytes,
            });
        }
        Ok(())
    }
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own and reads the NUL-terminated path.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_below_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert_eq!(DiskGuard::new(dir.path(), 1).check(), Ok(()));
        let err = DiskGuard::new(dir.path(), u64::MAX).check().unwrap_err();
        assert_eq!(err.min_free_bytes, u64::MAX);
        assert!(err.to_string().contains("disk nearly full"));
        assert_eq!(DiskGuard::new(dir.path(), 0).check(), Ok(()));
    }

    #[test]
    fn a_flush_is_held_back_without_room_for_what_it_writes_beyond_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        // Room for the minimum, not for the minimum and the flush.
        let guard = DiskGuard::new(dir.path(), free / 2);
        assert_eq!(guard.check(), Ok(()));
        assert_eq!(guard.check_room(1024), Ok(()));
        let no = guard.check_room(free).unwrap_err();
        assert_eq!((no.needed_bytes, no.min_free_bytes), (free, free / 2));
        assert!(no.to_string().contains("the flush needs about"), "{no}");
        assert_eq!(DiskGuard::new(dir.path(), 0).check_room(u64::MAX), Ok(()));
    }

    fn check(size: FlushSize, expected: u64) {
        assert_eq!(flush_bytes(size), expected, "{size:?}");
    }

    #[test]
    fn the_estimate_prices_files_rows_and_the_commit() {
        // An empty commit still writes pages.
        check(FlushSize::default(), COMMIT_BYTES);
        // 66 395 single-contact events of 300 bytes, in one partition of five tables: 40 MB of
        // Parquet at most, 78 MB in all.
        let burst = FlushSize {
            event_bytes: 66_395 * 300,
            files: 5,
            states: 66_395,
            ids: 66_395,
            rewritten_ids: 0,
            key_records: 0,
        };
        check(burst, 78_424_584);
        // A commit that merges recent ids into a run is priced for rewriting the index.
        let merging = FlushSize {
            rewritten_ids: 1_000_000,
            ..burst
        };
        assert_eq!(flush_bytes(merging) - flush_bytes(burst), 48_000_000);
        // So is one that merges lead scoring's recent key records into their table.
        let keys = FlushSize {
            key_records: 500_000,
            ..burst
        };
        assert_eq!(flush_bytes(keys) - flush_bytes(burst), 64_000_000);
        // Saturates instead of wrapping.
        check(
            FlushSize {
                event_bytes: u64::MAX,
                ..FlushSize::default()
            },
            u64::MAX,
        );
    }
}
