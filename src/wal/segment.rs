//! The log's segment files, written in place over zeros prepared ahead of time.
//!
//! A new segment is a file of `segment_max_bytes` zeros, written and synced **before** it
//! becomes a segment. Records then overwrite those zeros: an overwrite changes neither the file
//! size nor its block map, so syncing it flushes data only and never waits for a file system
//! journal commit. On the disk measured here (`ack_bench fsync-overwrite` against `fsync`) a
//! group commit's sync then takes 0.085-0.105 ms at p50 instead of an append's 0.14-0.16 ms
//! (docs/benchmarks.md, Acknowledgement latency and throughput, 2026-11-27). A group that does
//! not fit in what is left of the segment is appended past its end (slower, never wrong), and
//! the segment is closed after it.
//!
//! The next segment is prepared by the spare thread ([`Spare`]) once the current one is half
//! full: zeros are written in small synced pieces to `spare.tmp`, which is renamed to
//! `spare.zero` once complete. Only a complete spare is ever used; a `spare.tmp` found at start
//! is deleted. Without a spare, a new segment is zero-filled when it is started.
//!
//! A durable write is one `pwritev2(RWF_DSYNC)`: the kernel syncs the written range only (and
//! flushes the disk's cache). Where that call is not supported: `write` + `fdatasync`.
//!
//! Invariant: bytes of the active segment at or after `len` are zeros (up to the prepared size)
//! or beyond the end of the file; every byte below `len` belongs to a record written whole.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::{WalError, fsync_dir, io};

/// The spare segment is written and synced this much at a time...
const ZERO_PIECE: usize = 1024 * 1024;
/// ...with this pause between pieces, so a request's sync never queues behind much of it.
const ZERO_PAUSE: Duration = Duration::from_millis(1);

/// After a failed attempt to prepare a spare, the next one waits at least this long.
const SPARE_RETRY: Duration = Duration::from_secs(1);

const SPARE: &str = "spare.zero";
const SPARE_TMP: &str = "spare.tmp";

/// Writes `buf` at `offset` and, if `sync`, makes that range durable before returning.
fn write_at(file: &File, buf: &[u8], offset: u64, sync: bool) -> std::io::Result<()> {
    if !sync {
        return file.write_all_at(buf, offset);
    }
    use std::os::fd::AsRawFd;
    let mut done = 0usize;
    while done < buf.len() {
        let iov = libc::iovec {
            iov_base: buf[done..].as_ptr() as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        // SAFETY: `iov` points into `buf`, which outlives the call; the descriptor is open.
        let n = unsafe {
            libc::pwritev2(
                file.as_raw_fd(),
                &iov,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_DSYNC,
            )
        };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                file.write_all_at(&buf[done..], offset + done as u64)?;
                return file.sync_data();
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Writes `len` zeros to `file` from offset 0, synced piece by piece.
fn zero_fill(file: &File, len: u64, pause: Duration) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_PIECE];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(ZERO_PIECE);
        write_at(file, &zeros[..n], at, true)?;
        at += n as u64;
        if !pause.is_zero() && at < len {
            std::thread::sleep(pause);
        }
    }
    Ok(())
}

/// The next segment, prepared in the background.
pub(super) struct Spare {
    dir: PathBuf,
    size: u64,
    /// `spare.zero` is complete and may be taken.
    ready: Arc<AtomicBool>,
    /// A spare was asked for and is not taken yet (cleared after a failed attempt).
    requested: Arc<AtomicBool>,
    tx: mpsc::Sender<()>,
}

impl Spare {
    /// Starts the spare thread for segments of `size` bytes in `dir`.
    pub(super) fn start(dir: &Path, size: u64) -> Result<Spare, WalError> {
        let _ = fs::remove_file(dir.join(SPARE_TMP));
        let complete = fs::metadata(dir.join(SPARE)).is_ok_and(|m| m.len() == size);
        if !complete {
            let _ = fs::remove_file(dir.join(SPARE));
        }
        let ready = Arc::new(AtomicBool::new(complete));
        let requested = Arc::new(AtomicBool::new(complete));
        let (tx, rx) = mpsc::channel::<()>();
        let (thread_dir, thread_ready, thread_requested) =
            (dir.to_path_buf(), ready.clone(), requested.clone());
        std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || {
                for () in rx {
                    if thread_ready.load(Ordering::Acquire) {
                        continue;
                    }
                    match prepare(&thread_dir, size) {
                        Ok(()) => thread_ready.store(true, Ordering::Release),
                        Err(e) => {
                            tracing::warn!(error = %e, dir = %thread_dir.display(),
                                "cannot prepare the next write-ahead log segment; will try again");
                            let _ = fs::remove_file(thread_dir.join(SPARE_TMP));
                            // A full disk stays full for a while: do not retry on every append.
                            std::thread::sleep(SPARE_RETRY);
                            thread_requested.store(false, Ordering::Release);
                        }
                    }
                }
            })
            .map_err(|e| WalError::Io {
                op: "start spare thread",
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Spare {
            dir: dir.to_path_buf(),
            size,
            requested,
            ready,
            tx,
        })
    }

    /// Asks for a spare to be prepared, unless one is ready or on its way.
    pub(super) fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(());
        }
    }

    /// A complete spare is waiting.
    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Renames the spare to `path` if one is ready; `false` if none is.
    fn take(&self, path: &Path) -> Result<bool, WalError> {
        if !self.ready.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let spare = self.dir.join(SPARE);
        self.requested.store(false, Ordering::Release);
        fs::rename(&spare, path).map_err(io("rename", &spare))?;
        Ok(true)
    }
}

/// Writes a complete spare: zeros to `spare.tmp`, synced, renamed to `spare.zero`.
fn prepare(dir: &Path, size: u64) -> Result<(), WalError> {
    let tmp = dir.join(SPARE_TMP);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    zero_fill(&file, size, ZERO_PAUSE).map_err(io("zero-fill", &tmp))?;
    fs::rename(&tmp, dir.join(SPARE)).map_err(io("rename", &tmp))?;
    fsync_dir(dir)
}

/// The segment records are written to.
pub(super) struct Active {
    pub first: u64,
    /// Where the next record goes.
    pub len: u64,
    /// Bytes below this offset exist and are zero or written: writing there is an overwrite.
    prepared: u64,
    /// How far the last failed write may have reached.
    attempted: u64,
    file: File,
    path: PathBuf,
}

impl Active {
    /// Continues an existing segment at `len` (its valid records end there; what follows, up to
    /// the file's size, is zeros).
    pub fn resume(path: &Path, first: u64, len: u64) -> Result<Active, WalError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open", path))?;
        let size = file.metadata().map_err(io("stat", path))?.len();
        Ok(Active {
            first,
            len,
            prepared: size.max(len),
            attempted: len,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Starts the segment whose first record will be `first` at `path`: the spare if one is
    /// ready, else a file zero-filled now. If the zeros cannot be written (a full disk, or
    /// `prepare` is false: the disk-full simulation), the segment starts empty and records are
    /// appended to it: slower, and the log keeps working once space returns. The caller syncs
    /// the directory.
    pub fn create(
        path: &Path,
        first: u64,
        spare: &Spare,
        prepare: bool,
    ) -> Result<Active, WalError> {
        if !(prepare && spare.take(path)?) {
            let started = std::time::Instant::now();
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(io("create", path))?;
            let filled = if prepare {
                zero_fill(&file, spare.size, Duration::ZERO)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "simulated: no space left on device",
                ))
            };
            match filled {
                Ok(()) => {
                    tracing::info!(path = %path.display(), ms = started.elapsed().as_millis() as u64,
                    "write-ahead log segment zero-filled on the spot (no spare was ready)")
                }
                Err(e) => {
                    file.set_len(0).map_err(io("truncate", path))?;
                    tracing::warn!(error = %e, path = %path.display(),
                        "cannot zero-fill a new write-ahead log segment; appending to it instead");
                }
            }
        }
        Active::resume(path, first, 0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `buf` at the write position, durably if `sync`. On error the write position does
    /// not move; the caller calls [`Active::repair`] before the next write.
    pub fn write(&mut self, buf: &[u8], sync: bool) -> std::io::Result<()> {
        self.attempted = self.len + buf.len() as u64;
        write_at(&self.file, buf, self.len, sync)?;
        self.len += buf.len() as u64;
        self.prepared = self.prepared.max(self.len);
        Ok(())
    }

    /// Zeroes whatever a failed write may have left in the prepared space after the write
    /// position, and cuts off anything it appended past it.
    pub fn repair(&mut self) -> std::io::Result<()> {
        let size = self.file.metadata()?.len();
        if size > self.prepared {
            self.file.set_len(self.prepared)?;
        }
        let end = self.attempted.min(self.prepared);
        if end > self.len {
            self.file
                .write_all_at(&vec![0u8; (end - self.len) as usize], self.len)?;
        }
        self.attempted = self.len;
        self.file.sync_data()
    }

    /// No prepared space is left: records are being appended.
    pub fn appending(&self) -> bool {
        self.len >= self.prepared
    }

    /// The segment is past half its prepared size: time to prepare the next one.
    pub fn half_full(&self) -> bool {
        self.len >= self.prepared / 2
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}
