//! The write-ahead log: every accepted request body (and every kept dead letter) is on disk
//! before it is acknowledged.
//!
//! The log is a directory of segment files named after the sequence number of their first
//! record (`00000000000000000042.wal`); records are laid out as described in [`record`]. One
//! writer thread owns the active segment and does **group commit**: it takes every append that
//! is waiting, writes them with one `write`, makes them durable with one `fdatasync`, and only
//! then answers each of them. Concurrent requests therefore share fsyncs, and throughput does not
//! fall to one request per disk flush.
//!
//! Durability modes: `Fsync` answers an append after the `fdatasync` covering it; `Batch`
//! answers after the `write` and fsyncs at most every `interval` (a power loss can lose the
//! appends of the last interval; a process crash loses nothing, the data is in the page cache).
//!
//! Recovery rules, applied by [`Wal::open`]:
//! 1. Segments are read in order; each record's length and CRC-32C are checked.
//! 2. At the first invalid record of the **last** segment (a torn or corrupt tail, the normal
//!    result of a crash mid-write) the segment is truncated to the last valid record, and the
//!    truncation is reported. It is never trusted and never a reason to refuse to start.
//! 3. An invalid record in an older segment (which a crash cannot produce: only disk damage) ends
//!    that segment; the loss is reported and reading goes on with the next segment.
//! 4. Sequence numbers only grow; a failed append's numbers are never reused, so they may have
//!    gaps. New appends continue after the largest valid sequence number.
//!
//! Invariant: this module knows bytes and sequence numbers only; it does not parse bodies.

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use record::Entry;
use record::{Decoded, decode_record, encode_record};

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

/// An append waiting for its group commit, and where to send its sequence number.
type Pending = (Vec<u8>, tokio::sync::oneshot::Sender<Result<u64, WalError>>);

enum Command {
    Append {
        payload: Vec<u8>,
        done: tokio::sync::oneshot::Sender<Result<u64, WalError>>,
    },
    TruncateBefore(u64),
    Shutdown,
}

/// A handle to the log; cloneable, shared by every request.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
    /// The next sequence number the writer will assign; only grows.
    next_seq: Arc<AtomicU64>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir`, recovers it, and returns the records
    /// with a sequence number `>= replay_from`.
    pub fn open(config: WalConfig, replay_from: u64) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(&config.dir).map_err(io("create", &config.dir))?;
        let mut segments = list_segments(&config.dir)?;
        let mut recovered = Recovered::default();
        let mut last_seq = 0u64;
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
                        let lost = data.len() - offset;
                        if i + 1 == count {
                            let file = OpenOptions::new()
                                .write(true)
                                .open(path)
                                .map_err(io("open", path))?;
                            file.set_len(offset as u64).map_err(io("truncate", path))?;
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
        }
        for line in &recovered.damage {
            tracing::warn!(damage = %line, "write-ahead log damage found during recovery");
        }
        let next_seq = (last_seq + 1).max(replay_from).max(1);
        if segments.is_empty() {
            segments.push((next_seq, segment_path(&config.dir, next_seq)));
        }
        let (first, path) = segments.last().cloned().expect("at least one segment");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let len = file.seek(SeekFrom::End(0)).map_err(io("seek", &path))?;
        fsync_dir(&config.dir)?;
        let next = Arc::new(AtomicU64::new(next_seq));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            config,
            segments: segments.iter().map(|(s, p)| (*s, p.clone())).collect(),
            active: Segment {
                first,
                path,
                file,
                len,
            },
            next_seq: next.clone(),
            broken: false,
            dirty_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| WalError::Io {
                op: "start",
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        Ok((
            Wal {
                tx,
                next_seq: next,
                thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            },
            recovered,
        ))
    }

    /// Appends one payload; returns its sequence number once it is as durable as configured.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Command::Append { payload, done })
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// A lower bound of the sequence number of any append started after this call.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Deletes every closed segment whose records all have sequence numbers below `seq`.
    pub fn truncate_before(&self, seq: u64) {
        let _ = self.tx.send(Command::TruncateBefore(seq));
    }

    /// Makes everything written durable and stops the writer thread.
    pub fn close(&self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

/// The writer thread's state.
struct Writer {
    config: WalConfig,
    /// Every segment on disk, oldest first, the active one last.
    segments: Vec<(u64, PathBuf)>,
    active: Segment,
    next_seq: Arc<AtomicU64>,
    /// A failed write could not be undone; the next batch must repair the file first.
    broken: bool,
    /// In batch mode, when the oldest unsynced write happened.
    dirty_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let first = match (self.config.durability, self.dirty_since) {
                (Durability::Batch { interval }, Some(since)) => {
                    match rx.recv_timeout(interval.saturating_sub(since.elapsed())) {
                        Ok(c) => c,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_batch();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            let mut group = Vec::new();
            let mut stop = false;
            let mut command = Some(first);
            while let Some(c) = command.take() {
                match c {
                    Command::Append { payload, done } => group.push((payload, done)),
                    Command::TruncateBefore(seq) => self.truncate_before(seq),
                    Command::Shutdown => stop = true,
                }
                if !stop && group.len() < MAX_GROUP {
                    command = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit(group);
            }
            if stop {
                break;
            }
        }
        let _ = self.active.file.sync_data();
    }

    /// Writes a group of appends, makes them durable, and answers each.
    fn commit(&mut self, group: Vec<Pending>) {
        let first_seq = self
            .next_seq
            .fetch_add(group.len() as u64, Ordering::AcqRel);
        let mut buf = Vec::with_capacity(
            group
                .iter()
                .map(|(p, _)| p.len() + record::HEADER_LEN)
                .sum(),
        );
        for (i, (payload, _)) in group.iter().enumerate() {
            encode_record(first_seq + i as u64, payload, &mut buf);
        }
        let result = self.write_durably(&buf);
        for (i, (_, done)) in group.into_iter().enumerate() {
            let _ = done.send(result.clone().map(|()| first_seq + i as u64));
        }
        if result.is_ok()
            && self.active.len >= self.config.segment_max_bytes
            && let Err(e) = self.roll()
        {
            tracing::error!(error = %e, "cannot start a new write-ahead log segment; staying on the current one");
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> Result<(), WalError> {
        let path = self.active.path.clone();
        if self.broken {
            self.active
                .file
                .set_len(self.active.len)
                .map_err(io("repair", &path))?;
            self.active
                .file
                .seek(SeekFrom::Start(self.active.len))
                .map_err(io("seek", &path))?;
            self.broken = false;
        }
        let written = if self.config.fail_writes.load(Ordering::Relaxed) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "simulated: no space left on device",
            ))
        } else {
            self.active
                .file
                .write_all(buf)
                .and_then(|()| match self.config.durability {
                    Durability::Fsync => self.active.file.sync_data(),
                    Durability::Batch { .. } => Ok(()),
                })
        };
        match written {
            Ok(()) => {
                self.active.len += buf.len() as u64;
                if matches!(self.config.durability, Durability::Batch { .. })
                    && self.dirty_since.is_none()
                {
                    self.dirty_since = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) => {
                // Undo a partial write so no garbage sits before the next good record.
                let undone = self.active.file.set_len(self.active.len).and_then(|()| {
                    self.active
                        .file
                        .seek(SeekFrom::Start(self.active.len))
                        .map(drop)
                });
                self.broken = undone.is_err();
                tracing::error!(error = %e, path = %path.display(), "write-ahead log append failed");
                Err(io("append", &path)(e))
            }
        }
    }

    fn sync_batch(&mut self) {
        if let Err(e) = self.active.file.sync_data() {
            tracing::error!(error = %e, "write-ahead log fsync failed");
        }
        self.dirty_since = None;
    }

    /// Closes the active segment and starts a new one.
    fn roll(&mut self) -> Result<(), WalError> {
        self.active
            .file
            .sync_data()
            .map_err(io("fsync", &self.active.path))?;
        let first = self.next_seq.load(Ordering::Acquire);
        let path = segment_path(&self.config.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("create", &path))?;
        fsync_dir(&self.config.dir)?;
        self.segments.push((first, path.clone()));
        self.active = Segment {
            first,
            path,
            file,
            len: 0,
        };
        self.dirty_since = None;
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
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
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

    #[tokio::test]
    async fn a_torn_tail_is_truncated_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path()), 0).unwrap();
        wal.append(b"first".to_vec()).await.unwrap();
        wal.append(b"second".to_vec()).await.unwrap();
        wal.close();
        let segment = list_segments(dir.path()).unwrap()[0].1.clone();
        let len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (wal, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "first".into())]);
        assert_eq!(r.damage.len(), 1);
        assert!(
            r.damage[0].contains("cut short") && r.damage[0].contains("truncated"),
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
    async fn a_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path()), 0).unwrap();
        wal.append(b"aaaa".to_vec()).await.unwrap();
        wal.append(b"bbbb".to_vec()).await.unwrap();
        wal.close();
        let segment = list_segments(dir.path()).unwrap()[0].1.clone();
        let mut data = fs::read(&segment).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&segment, data).unwrap();
        let (_, r) = Wal::open(config(dir.path()), 0).unwrap();
        assert_eq!(payloads(&r), vec![(1, "aaaa".into())]);
        assert!(r.damage[0].contains("checksum mismatch"), "{:?}", r.damage);
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
        let after: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(after, vec![6, 7, 8, 9, 10, 11]);
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
        wal.close();
        let (_, r) = Wal::open(cfg, 0).unwrap();
        assert_eq!(r.records.len(), 20);
    }
}
