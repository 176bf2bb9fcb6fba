//! The write-ahead log: every accepted request body (and every kept dead letter) is on disk
//! before it is acknowledged.
//!
//! The log is a directory of segment files named after the sequence number of their first
//! record (`00000000000000000042.wal`); records are laid out as described in [`record`], and
//! written over zeros prepared ahead of time ([`segment`]).
//!
//! **Group commit.** One append at a time holds the log. An append that finds the log free and
//! nobody waiting writes and syncs its record itself, on the caller's thread: at low load an
//! acknowledgement costs one `write` and one `fdatasync`, with no hand-over to another thread.
//! Appends that arrive while the log is held queue up; the writer thread takes every queued
//! append at once, writes them with one `write`, makes them durable with one `fdatasync`, and
//! answers each. Concurrent requests therefore share fsyncs, and throughput does not fall to one
//! request per disk flush.
//!
//! Durability modes: `Fsync` answers an append after the `fdatasync` covering it; `Batch`
//! answers after the `write` and fsyncs at most every `interval` (a power loss can lose the
//! appends of the last interval; a process crash loses nothing, the data is in the page cache).
//!
//! Recovery rules, applied by [`Wal::open`]:
//! 1. Segments are read in order; each record's length and CRC-32C are checked. Nothing but
//!    zeros from a record boundary on is the clean end of a segment (its prepared space).
//! 2. At the first invalid record of the **last** segment (a torn or corrupt tail, the normal
//!    result of a crash mid-write) the segment is truncated to the last valid record (the bytes
//!    after it are zeroed, so the prepared space stays), and the truncation is reported. It is
//!    never trusted and never a reason to refuse to start.
//! 3. An invalid record in an older segment (which a crash cannot produce: only disk damage) ends
//!    that segment; the loss is reported and reading goes on with the next segment.
//! 4. Sequence numbers only grow; a failed append's numbers are never reused, so they may have
//!    gaps. New appends continue after the largest valid sequence number.
//!
//! Invariant: this module knows bytes and sequence numbers only; it does not parse bodies.

pub mod record;
mod segment;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use record::Entry;
use record::{Decoded, decode_record, encode_record};
use segment::{Active, Spare};

/// Default size at which the active segment is closed and a new one started.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most appends one group commit takes at once.
const MAX_GROUP: usize = 4096;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After an `fdatasync` that covers it.
    Fsync,
    /// After the `write`; `fdatasync` at most every `interval`.
    Batch { interval: Duration },
}

/// How to open a log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    pub segment_max_bytes: u64,
    /// Testing hook: while set, every write fails as if the disk were full.
    pub fail_writes: Arc<AtomicBool>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {op} {path}: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("write-ahead log is closed")]
    Closed,
    #[error("a record of {0} bytes is larger than the log takes ({max})", max = record::MAX_PAYLOAD)]
    TooLarge(usize),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError + use<> {
    let path = path.to_path_buf();
    move |e| WalError::Io {
        op,
        path,
        message: e.to_string(),
    }
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Valid records with a sequence number at or after the requested start, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// One line per damaged place that was truncated or skipped.
    pub damage: Vec<String>,
}

/// Where a queued append's sequence number is sent.
type Answer = tokio::sync::oneshot::Sender<Result<u64, WalError>>;

/// Work waiting for the log, and who holds it.
#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<u8>, Answer)>,
    /// An append (inline or the writer thread's group) is writing to the log.
    busy: bool,
    truncate_before: Option<u64>,
    shutdown: bool,
    /// Batch mode: when the oldest write that is not synced yet happened.
    dirty_since: Option<Instant>,
}

struct Shared {
    durability: Durability,
    queue: Mutex<Queue>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Locked only by whoever set `Queue::busy`, so never contended.
    log: Mutex<Log>,
    /// The next sequence number the writer will assign; only grows.
    next_seq: AtomicU64,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the log back after a write (`wrote`: something reached the file) and wakes the
    /// writer thread if it has work.
    fn release(&self, wrote: bool) {
        let mut q = self.queue();
        q.busy = false;
        let batch = matches!(self.durability, Durability::Batch { .. });
        let newly_dirty = batch && wrote && q.dirty_since.is_none();
        if newly_dirty {
            q.dirty_since = Some(Instant::now());
        }
        if newly_dirty || !q.waiting.is_empty() || q.truncate_before.is_some() || q.shutdown {
            self.wake.notify_one();
        }
    }

    /// Writes payloads as consecutive records; returns the first one's sequence number.
    fn commit(&self, payloads: &[&[u8]]) -> Result<u64, WalError> {
        let mut log = self.log();
        let first_seq = self
            .next_seq
            .fetch_add(payloads.len() as u64, Ordering::AcqRel);
        let mut buf =
            Vec::with_capacity(payloads.iter().map(|p| p.len() + record::HEADER_LEN).sum());
        for (i, payload) in payloads.iter().enumerate() {
            encode_record(first_seq + i as u64, payload, &mut buf);
        }
        log.write(&buf, self.durability == Durability::Fsync)?;
        // Full, or appending (its zeros could not be written) while a prepared spare waits.
        let switch = log.active.appending() && log.spare.is_ready();
        if (log.active.len >= log.segment_max_bytes || switch)
            && let Err(e) = log.roll(self.next_seq.load(Ordering::Acquire))
        {
            tracing::error!(error = %e, "cannot start a new write-ahead log segment; staying on the current one");
        }
        Ok(first_seq)
    }
}

/// Releases the log if an inline append unwinds.
struct Held<'a> {
    shared: &'a Shared,
    wrote: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.shared.release(self.wrote);
    }
}

/// A handle to the log; cloneable, shared by every request.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir`, recovers it, and returns the records
    /// with a sequence number `>= replay_from`.
    pub fn open(config: WalConfig, replay_from: u64) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(&config.dir).map_err(io("create", &config.dir))?;
        let mut segments = list_segments(&config.dir)?;
        let mut recovered = Recovered::default();
        let mut last_seq = 0u64;
        let (mut last_len, mut last_size) = (0u64, 0u64);
        let count = segments.len();
        for (i, (_, path)) in segments.iter().enumerate() {
            let data = fs::read(path).map_err(io("read", path))?;
            let mut offset = 0;
            loop {
                match decode_record(&data, offset) {
                    Decoded::Record { seq, payload, next } => {
                        if seq >= replay_from {
                            recovered.records.push((seq, payload.to_vec()));
                        }
                        last_seq = last_seq.max(seq);
                        offset = next;
                    }
                    Decoded::End => break,
                    Decoded::Invalid(why) => {
                        // Zero fill after the damage is not counted as lost.
                        let damaged = data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
                        let lost = damaged.saturating_sub(offset);
                        if i + 1 == count {
                            let file = OpenOptions::new()
                                .write(true)
                                .open(path)
                                .map_err(io("open", path))?;
                            let zeros = vec![0u8; lost];
                            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, offset as u64)
                                .map_err(io("truncate", path))?;
                            file.sync_all().map_err(io("fsync", path))?;
                            recovered.damage.push(format!(
                                "{}: {why} at byte {offset}; truncated {lost} bytes of torn tail",
                                path.display()
                            ));
                        } else {
                            recovered.damage.push(format!(
                                "{}: {why} at byte {offset}; skipped the remaining {lost} bytes of this segment",
                                path.display()
                            ));
                        }
                        break;
                    }
                }
            }
            last_len = offset as u64;
            last_size = data.len() as u64;
        }
        for line in &recovered.damage {
            tracing::warn!(damage = %line, "write-ahead log damage found during recovery");
        }
        let next_seq = (last_seq + 1).max(replay_from).max(1);
        let max = config.segment_max_bytes;
        let spare = Spare::start(&config.dir, max)?;
        // The last segment goes on if it has prepared space left; a full one, or one written
        // without prepared space (by an earlier version), is closed.
        let active = match segments.last() {
            Some((first, path)) if last_len < max && last_len < last_size => {
                Active::resume(path, *first, last_len)?
            }
            _ => {
                let path = segment_path(&config.dir, next_seq);
                segments.push((next_seq, path.clone()));
                let prepare = !config.fail_writes.load(Ordering::Relaxed);
                Active::create(&path, next_seq, &spare, prepare)?
            }
        };
        fsync_dir(&config.dir)?;
        let shared = Arc::new(Shared {
            durability: config.durability,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            log: Mutex::new(Log {
                dir: config.dir.clone(),
                segment_max_bytes: max,
                fail_writes: config.fail_writes.clone(),
                segments,
                active,
                broken: false,
                spare,
            }),
            next_seq: AtomicU64::new(next_seq),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("wal-writer".into())
                .spawn(move || run(&shared))
                .map_err(|e| WalError::Io {
                    op: "start",
                    path: PathBuf::new(),
                    message: e.to_string(),
                })?
        };
        Ok((
            Wal {
                shared,
                thread: Arc::new(Mutex::new(Some(thread))),
            },
            recovered,
        ))
    }

    /// Appends one payload; returns its sequence number once it is as durable as configured.
    ///
    /// When the log is free and nobody waits, the write and its sync happen right here, on the
    /// caller's thread (a tokio worker is blocked for one `fdatasync`); otherwise the append
    /// joins the writer thread's next group.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        // Recovery refuses a longer record (and everything after it in its segment): never
        // acknowledge one.
        if payload.len() > record::MAX_PAYLOAD {
            return Err(WalError::TooLarge(payload.len()));
        }
        let shared = &*self.shared;
        // Either the payload comes back (write it here) or it is queued (wait for the answer).
        let queued = {
            let mut q = shared.queue();
            if q.shutdown {
                return Err(WalError::Closed);
            }
            if !q.busy && q.waiting.is_empty() {
                q.busy = true;
                Ok(payload)
            } else {
                let (done, answer) = tokio::sync::oneshot::channel();
                q.waiting.push((payload, done));
                if !q.busy {
                    shared.wake.notify_one();
                }
                Err(answer)
            }
        };
        match queued {
            Ok(payload) => {
                let mut held = Held {
                    shared,
                    wrote: false,
                };
                let result = shared.commit(&[&payload]);
                held.wrote = result.is_ok();
                result
            }
            Err(answer) => answer.await.map_err(|_| WalError::Closed)?,
        }
    }

    /// A lower bound of the sequence number of any append started after this call.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_seq.load(Ordering::Acquire)
    }

    /// Deletes every closed segment whose records all have sequence numbers below `seq`.
    pub fn truncate_before(&self, seq: u64) {
        let mut q = self.shared.queue();
        q.truncate_before = Some(q.truncate_before.map_or(seq, |s| s.max(seq)));
        self.shared.wake.notify_one();
    }

    /// Makes everything written durable and stops the writer thread.
    pub fn close(&self) {
        {
            let mut q = self.shared.queue();
            q.shutdown = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: group commits of queued appends, batch-mode syncs, segment deletion.
fn run(shared: &Shared) {
    let mut q = shared.queue();
    loop {
        if q.busy {
            // While an append holds the log, a batch-mode sync that falls due must not wait for
            // a wake-up: the append's `release` wakes the thread only when the log was clean,
            // so with unsynced records the thread would sleep until the next queued append,
            // truncation or shutdown, past `durability_batch_ms`.
            q = match busy_wait(shared.durability, q.dirty_since) {
                Some(limit) => {
                    shared
                        .wake
                        .wait_timeout(q, limit)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => shared.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
            };
            continue;
        }
        if !q.waiting.is_empty() {
            let take = q.waiting.len().min(MAX_GROUP);
            let group: Vec<_> = q.waiting.drain(..take).collect();
            q.busy = true;
            drop(q);
            let mut held = Held {
                shared,
                wrote: false,
            };
            let payloads: Vec<&[u8]> = group.iter().map(|(p, _)| p.as_slice()).collect();
            let result = shared.commit(&payloads);
            held.wrote = result.is_ok();
            drop(held);
            for (i, (_, done)) in group.into_iter().enumerate() {
                let _ = done.send(result.clone().map(|first| first + i as u64));
            }
            q = shared.queue();
            continue;
        }
        if let Some(seq) = q.truncate_before.take() {
            q.busy = true;
            drop(q);
            shared.log().truncate_before(seq);
            shared.release(false);
            q = shared.queue();
            continue;
        }
        if let (Durability::Batch { interval }, Some(since)) = (shared.durability, q.dirty_since) {
            let elapsed = since.elapsed();
            if elapsed >= interval || q.shutdown {
                q.dirty_since = None;
                q.busy = true;
                drop(q);
                if let Err(e) = shared.log().active.sync() {
                    tracing::error!(error = %e, "write-ahead log fsync failed");
                }
                shared.release(false);
                q = shared.queue();
            } else {
                q = shared
                    .wake
                    .wait_timeout(q, interval - elapsed)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            continue;
        }
        if q.shutdown {
            break;
        }
        q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
    }
    drop(q);
    let _ = shared.log().active.sync();
}

/// How long the writer thread may wait while an append holds the log: until the batch-mode
/// sync is due (at least a millisecond, so a late sync is retried without spinning) when there
/// are unsynced records, else until woken.
fn busy_wait(durability: Durability, dirty_since: Option<Instant>) -> Option<Duration> {
    match (durability, dirty_since) {
        (Durability::Batch { interval }, Some(since)) => Some(
            interval
                .saturating_sub(since.elapsed())
                .max(Duration::from_millis(1)),
        ),
        _ => None,
    }
}

/// The segments on disk and the one being written.
struct Log {
    dir: PathBuf,
    segment_max_bytes: u64,
    fail_writes: Arc<AtomicBool>,
    /// Every segment on disk, oldest first, the active one last.
    segments: Vec<(u64, PathBuf)>,
    active: Active,
    /// A failed write could not be undone; the next write must repair the file first.
    broken: bool,
    spare: Spare,
}

impl Log {
    fn write(&mut self, buf: &[u8], sync: bool) -> Result<(), WalError> {
        let path = self.active.path().to_path_buf();
        if self.broken {
            self.active.repair().map_err(io("repair", &path))?;
            self.broken = false;
        }
        let written = if self.fail_writes.load(Ordering::Relaxed) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "simulated: no space left on device",
            ))
        } else {
            self.active.write(buf, sync)
        };
        if written.is_ok() && self.active.half_full() {
            self.spare.request();
        }
        written.map_err(|e| {
            // Undo a partial write so no garbage sits before the next good record.
            self.broken = self.active.repair().is_err();
            tracing::error!(error = %e, path = %path.display(), "write-ahead log append failed");
            io("append", &path)(e)
        })
    }

    /// Closes the active segment and starts a new one whose first record will be `first`.
    fn roll(&mut self, first: u64) -> Result<(), WalError> {
        self.active
            .sync()
            .map_err(io("fsync", self.active.path()))?;
        let path = segment_path(&self.dir, first);
        let prepare = !self.fail_writes.load(Ordering::Relaxed);
        let created = Active::create(&path, first, &self.spare, prepare)
            .and_then(|active| fsync_dir(&self.dir).map(|()| active));
        let active = match created {
            Ok(active) => active,
            Err(e) => {
                // The file may exist: left behind, it would look like the segment of records
                // `first` on, which the old segment goes on holding, and a truncation after a
                // restart would delete the old one by it.
                if path.exists() {
                    let _ = fs::remove_file(&path);
                    let _ = fsync_dir(&self.dir);
                }
                return Err(e);
            }
        };
        self.segments.push((first, path));
        self.active = active;
        Ok(())
    }

    fn truncate_before(&mut self, seq: u64) {
        // A segment can go when the next one starts at or before `seq`; the active one stays.
        let mut keep_from = 0;
        for i in 0..self.segments.len().saturating_sub(1) {
            if self.segments[i + 1].0 <= seq && self.segments[i].0 != self.active.first {
                let path = &self.segments[i].1;
                match fs::remove_file(path) {
                    Ok(()) => keep_from = i + 1,
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "cannot delete a flushed log segment");
                        break;
                    }
                }
            } else {
                break;
            }
        }
        self.segments.drain(..keep_from);
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// Segments in `dir`, ordered by first sequence number.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            durability: Durability::Fsync,
            segment_max_bytes: 1024 * 1024,
            fail_writes: Arc::new(AtomicBool::new(false)),
        }
    }

    fn payloads(r: &Recovered) -> Vec<(u64, String)> {
        r.records
            .iter()
            .map(|(s, p)| (*s, String::from_utf8(p.clone()).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn appends_survive_reopen_and_replay_starts_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert!(r.records.is_empty());
        let appends = (0..50).map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(format!("p{i}").into_bytes()).await.unwrap() })
        });
        let mut seqs = Vec::new();
        for a in appends {
            seqs.push(a.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
        wal.close();
        let (wal, r) = Wal::open(config(dir.path()), 48).unwrap();
        assert_eq!(
            r.records.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![48, 49, 50]
        );
        assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), 51);
        wal.close();
    }

    #[test]
    fn a_sync_due_while_an_append_holds_the_log_is_not_left_to_a_wake_up() {
        let interval = Duration::from_millis(10);
        let batch = Durability::Batch { interval };
        // Unsynced records: wait no longer than until the sync is due, and never for nothing.
        let dirty = Instant::now();
        assert!(busy_wait(batch, Some(dirty)).is_some_and(|d| d <= interval));
        let overdue = Instant::now() - Duration::from_secs(1);
        assert_eq!(
            busy_wait(batch, Some(overdue)),
            Some(Duration::from_millis(1))
        );
        // Nothing to sync, or every append synced by itself: wait to be woken.
        assert_eq!(busy_wait(batch, None), None);
        assert_eq!(busy_wait(Durability::Fsync, Some(dirty)), None);
    }

    #[tokio::test]
    async fn a_record_larger_than_recovery_reads_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path()), 0).unwrap();
        let err = wal
            .append(vec![b'x'; record::MAX_PAYLOAD + 1])
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::TooLarge(_)), "{err}");
        assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), 1);
        wal.close();
    }

    /// A closed log in `dir` holding `payloads`; returns its (only) segment.
    async fn closed_log(dir: &Path, payloads: &[&[u8]]) -> PathBuf {
        let (wal, _) = Wal::open(config(dir), 0).unwrap();
        for p in payloads {
            wal.append(p.to_vec()).await.unwrap();
        }
        wal.close();
        list_segments(dir).unwrap()[0].1.clone()
    }

    /// Polls `done` for up to five seconds (background work of the log's threads).
    fn wait_until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end of the records in a segment (what follows is zero fill).
    fn written_len(data: &[u8]) -> usize {
        data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
    }

    #[tokio::test]
    async fn segments_are_written_over_prepared_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path()), 0).unwrap();
        wal.append(b"first".to_vec()).await.unwrap();
        let segment = list_segments(dir.path()).unwrap()[0].1.clone();
        let data = fs::read(&segment).unwrap();
        assert_eq!(data.len(), 1024 * 1024, "the whole segment is prepared");
        assert_eq!(written_len(&data), record::HEADER_LEN + 5);
        wal.close();
        // A reopened log continues right after its last record, not after the zero fill.
        let (wal, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert!(r.damage.is_empty(), "{:?}", r.damage);
        assert_eq!(wal.append(b"second".to_vec()).await.unwrap(), 2);
        wal.close();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(
            payloads(&r),
            vec![(1, "first".into()), (2, "second".into())]
        );
        assert!(r.damage.is_empty(), "{:?}", r.damage);
    }

    #[tokio::test]
    async fn the_next_segment_is_prepared_while_the_current_one_fills() {
        let dir = tempfile::tempdir().unwrap();
        // A stale, incomplete spare from a crash is never used.
        fs::write(dir.path().join("spare.tmp"), b"garbage").unwrap();
        let (wal, _) = Wal::open(config(dir.path()), 0).unwrap();
        assert!(!dir.path().join("spare.tmp").exists());
        let record = vec![b'r'; 100 * 1024];
        // Past half of the first segment: the spare is asked for.
        for _ in 0..6 {
            wal.append(record.clone()).await.unwrap();
        }
        let spare = dir.path().join("spare.zero");
        wait_until(|| spare.exists());
        assert_eq!(fs::metadata(&spare).unwrap().len(), 1024 * 1024);
        assert!(fs::read(&spare).unwrap().iter().all(|b| *b == 0));
        // Filling the segment rolls onto the spare, which becomes the new segment. (The 11th
        // record does not fit in what is left: it is appended past the end, then the roll.)
        for _ in 0..6 {
            wal.append(record.clone()).await.unwrap();
        }
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 2, "{segments:?}");
        assert!(!spare.exists(), "the spare was taken");
        let newest = fs::read(&segments[1].1).unwrap();
        assert_eq!(newest.len(), 1024 * 1024);
        assert_eq!(written_len(&newest), record::HEADER_LEN + record.len());
        wal.close();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(r.records.len(), 12);
        assert!(r.damage.is_empty(), "{:?}", r.damage);
    }

    #[tokio::test]
    async fn a_torn_tail_is_truncated_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let segment = closed_log(dir.path(), &[b"first", b"second"]).await;
        // A torn write: the last 3 bytes of the last record never reached the disk.
        let mut data = fs::read(&segment).unwrap();
        let end = written_len(&data);
        data[end - 3..end].fill(0);
        fs::write(&segment, &data).unwrap();
        let (wal, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "first".into())]);
        assert_eq!(r.damage.len(), 1);
        assert!(
            r.damage[0].contains("checksum mismatch") && r.damage[0].contains("truncated"),
            "{:?}",
            r.damage
        );
        // Appends continue after the torn record's number, which is never reused.
        assert_eq!(wal.append(b"third".to_vec()).await.unwrap(), 2);
        wal.close();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "first".into()), (2, "third".into())]);
        assert!(r.damage.is_empty());
    }

    #[tokio::test]
    async fn a_record_cut_short_at_the_end_of_the_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let segment = closed_log(dir.path(), &[b"first", b"second"]).await;
        // A log written without prepared space (as earlier versions did), cut mid-record.
        let data = fs::read(&segment).unwrap();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(written_len(&data) as u64 - 3).unwrap();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "first".into())]);
        assert!(
            r.damage[0].contains("cut short") && r.damage[0].contains("truncated 19 bytes"),
            "{:?}",
            r.damage
        );
    }

    #[tokio::test]
    async fn a_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let segment = closed_log(dir.path(), &[b"aaaa", b"bbbb"]).await;
        let mut data = fs::read(&segment).unwrap();
        let last = written_len(&data) - 1;
        data[last] ^= 1;
        fs::write(&segment, data).unwrap();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "aaaa".into())]);
        assert!(r.damage[0].contains("checksum mismatch"), "{:?}", r.damage);
    }

    #[tokio::test]
    async fn garbage_in_the_prepared_space_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let segment = closed_log(dir.path(), &[b"kept"]).await;
        // A later record's second page reached the disk, its first did not.
        let mut data = fs::read(&segment).unwrap();
        data[8192..8200].fill(0xab);
        fs::write(&segment, data).unwrap();
        let (wal, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "kept".into())]);
        assert!(
            r.damage[0].contains("non-zero bytes") && r.damage[0].contains("truncated"),
            "{:?}",
            r.damage
        );
        wal.append(b"after".to_vec()).await.unwrap();
        wal.close();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "kept".into()), (2, "after".into())]);
        assert!(r.damage.is_empty(), "{:?}", r.damage);
    }

    #[tokio::test]
    async fn failed_writes_are_reported_and_leave_no_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let fail = cfg.fail_writes.clone();
        let (wal, _) = Wal::open(cfg.clone(), 0).unwrap();
        wal.append(b"ok".to_vec()).await.unwrap();
        fail.store(true, Ordering::Relaxed);
        let err = wal.append(b"lost".to_vec()).await.unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        fail.store(false, Ordering::Relaxed);
        assert_eq!(wal.append(b"later".to_vec()).await.unwrap(), 3);
        wal.close();
        let (_, r) = Wal::open(cfg, 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "ok".into()), (3, "later".into())]);
        assert!(r.damage.is_empty());
    }

    #[tokio::test]
    async fn a_log_opened_on_a_full_disk_starts_and_recovers_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        cfg.fail_writes.store(true, Ordering::Relaxed);
        // The first segment cannot be zero-filled: the log starts anyway, and refuses appends.
        let (wal, r) = Wal::open(cfg.clone(), 0).unwrap();
        assert!(r.damage.is_empty());
        assert!(wal.append(b"refused".to_vec()).await.is_err());
        cfg.fail_writes.store(false, Ordering::Relaxed);
        assert_eq!(wal.append(b"kept".to_vec()).await.unwrap(), 2);
        let first = list_segments(dir.path()).unwrap()[0].1.clone();
        assert_eq!(
            fs::read(&first).unwrap().len(),
            record::HEADER_LEN + 4,
            "records are appended to a segment that could not be prepared"
        );
        // Once a spare is ready, the log moves onto it.
        let spare = dir.path().join("spare.zero");
        wait_until(|| spare.exists());
        assert!(spare.exists());
        assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), 3);
        assert_eq!(wal.append(b"last".to_vec()).await.unwrap(), 4);
        wal.close();
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 2, "{segments:?}");
        let second = fs::read(&segments[1].1).unwrap();
        assert_eq!(second.len(), 1024 * 1024);
        assert_eq!(written_len(&second), record::HEADER_LEN + 4);
        let (_, r) = Wal::open(cfg, 0).unwrap();
        assert_eq!(
            payloads(&r),
            vec![(2, "kept".into()), (3, "next".into()), (4, "last".into())]
        );
        assert!(r.damage.is_empty(), "{:?}", r.damage);
    }

    #[tokio::test]
    async fn segments_roll_and_flushed_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            segment_max_bytes: 50,
            ..config(dir.path())
        };
        let (wal, _) = Wal::open(cfg.clone(), 0).unwrap();
        for i in 0..10 {
            wal.append(vec![b'x'; 60 + i]).await.unwrap();
        }
        // Each 76+ byte record fills a segment (the roll after the last one may still be under way).
        let before: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(before[..10], (1..=10).collect::<Vec<u64>>());
        wal.truncate_before(6);
        wal.append(b"y".to_vec()).await.unwrap();
        // Deletion is the writer thread's background work: wait for it.
        let firsts = || -> Vec<u64> {
            let segments = list_segments(dir.path()).unwrap();
            segments.iter().map(|(s, _)| *s).collect()
        };
        wait_until(|| firsts().first() == Some(&6));
        assert_eq!(firsts(), vec![6, 7, 8, 9, 10, 11]);
        wal.close();
        let (_, r) = Wal::open(cfg, 0).unwrap();
        assert_eq!(r.records.first().map(|(s, _)| *s), Some(6));
        assert_eq!(r.records.len(), 6);
    }

    #[tokio::test]
    async fn batch_mode_acknowledges_before_fsync_and_syncs_later() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            durability: Durability::Batch {
                interval: Duration::from_millis(5),
            },
            ..config(dir.path())
        };
        let (wal, _) = Wal::open(cfg.clone(), 0).unwrap();
        for _ in 0..20 {
            wal.append(b"fast".to_vec()).await.unwrap();
        }
        // Acknowledged unsynced: the writer thread syncs within the interval, with no further
        // append, truncation or shutdown to wake it (only its sync clears `dirty_since`).
        wait_until(|| wal.shared.queue().dirty_since.is_none());
        assert!(wal.shared.queue().dirty_since.is_none(), "never synced");
        wal.close();
        let (_, r) = Wal::open(cfg, 0).unwrap();
        assert_eq!(r.records.len(), 20);
    }
}
