//! The Parquet sink: rows -> date-partitioned files, published atomically.
//!
//! Layout: `<data_dir>/<table>/date=YYYY-MM-DD/part-<flush_seq>.parquet`, where the date is the
//! calendar date of the row's `event_time` in the partition time zone. A flush writes at most one
//! file per table per partition.
//!
//! Publishing is two-phase so that a failed flush leaves nothing behind: every file is first
//! written under a hidden temporary name (`.part-….parquet.tmp`, which no `*.parquet` glob
//! matches) and fsynced; only when all are written are they renamed to their final names and
//! their directories fsynced. Invariant: a reader never sees a partial file, and a flush that
//! returns an error has published no file (temporary files are removed; leftovers of a crash are
//! swept by [`Sink::open`]).

pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use crate::flatten::Tables;
use crate::flatten::table::{Micros, Table};
pub use writer::{FileKind, WriterSettings};

/// Above this many files (or directories), one `syncfs` replaces an fsync each.
const SYNC_EACH_MAX: usize = 32;

/// Suffix of temporary files.
const TMP_SUFFIX: &str = ".tmp";

/// Why a flush could not write its files.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet encoding of {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    /// Work run beside a write made rows of a table the write had rows of: one flush writes
    /// one file per table and partition.
    #[error("{table}: rows made beside a write that has rows of it already")]
    TableTwice { table: &'static str },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + use<> {
    let path = path.to_path_buf();
    move |source| SinkError::Io { op, path, source }
}

/// One file a flush published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileWritten {
    /// Table name.
    pub table: &'static str,
    /// Partition date, `YYYY-MM-DD`.
    pub date: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Rows in the file.
    pub rows: usize,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Writes tables of rows under a data directory.
#[derive(Debug, Clone)]
pub struct Sink {
    root: PathBuf,
    settings: WriterSettings,
    offset: FixedOffset,
    /// The writer's tag in file names (`part-<flush>-<tag>.parquet`), for processes sharing a
    /// lake; `None` for a lake written by one process.
    tag: Option<String>,
}

/// A file written under its temporary name, waiting to be published.
struct Staged {
    tmp: PathBuf,
    final_path: PathBuf,
    file: FileWritten,
}

/// The staging of one table's rows by a worker.
type Job<'a, E> = Box<dyn FnOnce(&mut Vec<Staged>) -> Result<(), E> + Send + 'a>;

/// A job for each table of `t`, largest first: contact snapshots have the most columns, raw
/// payloads the most bytes.
fn jobs<'a, E: From<SinkError>>(sink: &'a Sink, t: &'a Tables, flush_seq: u64) -> Vec<Job<'a, E>> {
    fn job<'a, T: Table + Sync, E: From<SinkError>>(
        sink: &'a Sink,
        rows: &'a [T],
        flush_seq: u64,
    ) -> Job<'a, E> {
        Box::new(move |out: &mut Vec<Staged>| sink.stage(rows, flush_seq, out).map_err(E::from))
    }
    let Tables {
        contact_events,
        tracking_params,
        contact_answers,
        call_events,
        call_outcomes,
        raw_events,
        attribute_changes,
        status_transitions,
        rejected_events,
        lead_scores,
        trigger_deliveries,
    } = t;
    vec![
        job(sink, contact_events, flush_seq),
        job(sink, raw_events, flush_seq),
        job(sink, attribute_changes, flush_seq),
        job(sink, status_transitions, flush_seq),
        job(sink, call_events, flush_seq),
        job(sink, tracking_params, flush_seq),
        job(sink, contact_answers, flush_seq),
        job(sink, call_outcomes, flush_seq),
        job(sink, rejected_events, flush_seq),
        job(sink, lead_scores, flush_seq),
        job(sink, trigger_deliveries, flush_seq),
    ]
}

impl Sink {
    /// Opens (creating if needed) a data directory, and removes temporary files a crashed flush
    /// left behind.
    pub fn open(
        root: &Path,
        settings: WriterSettings,
        offset: FixedOffset,
    ) -> Result<Sink, SinkError> {
        fs::create_dir_all(root).map_err(io("create directory", root))?;
        let sink = Sink {
            root: root.to_path_buf(),
            settings,
            offset,
            tag: None,
        };
        for path in
            sink.files_matching(|name| name.starts_with('.') && name.ends_with(TMP_SUFFIX))?
        {
            tracing::warn!(path = %path.display(), "removing temporary file left by an interrupted flush");
            fs::remove_file(&path).map_err(io("remove", &path))?;
        }
        Ok(sink)
    }

    /// Names this writer's files `part-<flush>-<tag>.parquet`, so that processes sharing a lake
    /// never write the same name.
    pub fn with_tag(mut self, tag: Option<String>) -> Sink {
        self.tag = tag;
        self
    }

    /// Deletes the published files of flushes after `committed` (a flush that crashed or failed
    /// between its renames and its commit record), durably: their directories are synced, so a
    /// power loss cannot bring one back under a number a later flush commits. Returns the files
    /// removed.
    pub fn remove_uncommitted(&self, committed: u64) -> Result<Vec<PathBuf>, SinkError> {
        let uncommitted =
            self.files_matching(|name| flush_seq_of(name).is_some_and(|seq| seq > committed))?;
        for path in &uncommitted {
            tracing::warn!(path = %path.display(), "removing a file of a flush that was never committed");
            fs::remove_file(path).map_err(io("remove", path))?;
        }
        let dirs: BTreeSet<&Path> = uncommitted.iter().filter_map(|p| p.parent()).collect();
        for dir in dirs {
            fsync_dir(dir)?;
        }
        Ok(uncommitted)
    }

    /// How many files writing `tables` makes: one per table and partition.
    pub fn files_for(&self, tables: &Tables) -> u64 {
        self.partitions(&tables.contact_events)
            + self.partitions(&tables.tracking_params)
            + self.partitions(&tables.contact_answers)
            + self.partitions(&tables.call_events)
            + self.partitions(&tables.call_outcomes)
            + self.partitions(&tables.raw_events)
            + self.partitions(&tables.attribute_changes)
            + self.partitions(&tables.status_transitions)
            + self.partitions(&tables.rejected_events)
            + self.partitions(&tables.lead_scores)
            + self.partitions(&tables.trigger_deliveries)
    }

    /// The partitions (files) `rows` are written to.
    pub fn partitions<T: Table>(&self, rows: &[T]) -> u64 {
        let shift = i64::from(self.offset.local_minus_utc()) * 1_000_000;
        let days: std::collections::HashSet<i64> = rows
            .iter()
            .map(|r| (r.event_time().0 + shift).div_euclid(86_400_000_000))
            .collect();
        days.len() as u64
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes every table's rows as one file per partition, named after `flush_seq`, and
    /// publishes them all or none.
    pub fn write(&self, tables: &Tables, flush_seq: u64) -> Result<Vec<FileWritten>, SinkError> {
        self.write_with(tables, flush_seq, || {
            Ok::<_, SinkError>((Tables::default(), ()))
        })
        .map(|(files, _, ())| files)
    }

    /// [`Sink::write`], with `beside` run on one of the workers while the others stage
    /// `tables`: work that reads the rows being written and makes rows of other tables (a
    /// flush's lead scores), which that worker then stages. All the files are published
    /// together; if `beside` fails, none is, and its error is returned. Returns the files, the
    /// tables `beside` made, and its result.
    pub fn write_with<R: Send, E: From<SinkError> + Send>(
        &self,
        tables: &Tables,
        flush_seq: u64,
        beside: impl FnOnce() -> Result<(Tables, R), E> + Send,
    ) -> Result<(Vec<FileWritten>, Tables, R), E> {
        let mut staged = Vec::new();
        let result = self
            .stage_all(tables, flush_seq, beside, &mut staged)
            .and_then(|made| {
                self.sync_files(staged.iter().map(|s| s.tmp.as_path()))
                    .map_err(E::from)?;
                // Workers finish in any order; files are published and reported in path order.
                staged.sort_by(|a, b| a.final_path.cmp(&b.final_path));
                let files = self.publish(std::mem::take(&mut staged)).map_err(E::from)?;
                Ok((files, made))
            });
        match result {
            Ok((files, (more, r))) => Ok((files, more, r)),
            Err(e) => {
                for s in &staged {
                    let _ = fs::remove_file(&s.tmp);
                }
                Err(e)
            }
        }
    }

    /// Stages every table on `settings.threads` workers (encoding and compressing is most of a
    /// flush's time): they take the tables from a queue, largest first, with `beside` and the
    /// tables it makes second. Returns what `beside` made.
    fn stage_all<R: Send, E: From<SinkError> + Send>(
        &self,
        t: &Tables,
        flush_seq: u64,
        beside: impl FnOnce() -> Result<(Tables, R), E> + Send,
        staged: &mut Vec<Staged>,
    ) -> Result<(Tables, R), E> {
        let made_slot = std::sync::Mutex::new(None);
        let beside: Job<'_, E> = Box::new(|out: &mut Vec<Staged>| {
            let (more, r) = beside()?;
            let twice = (t.row_counts().into_iter())
                .zip(more.row_counts())
                .find(|((_, here), (_, made))| *here > 0 && *made > 0);
            if let Some(((table, _), _)) = twice {
                return Err(SinkError::TableTwice { table }.into());
            }
            self.stage_every(&more, flush_seq, out)?;
            *made_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((more, r));
            Ok(())
        });
        let mut jobs = jobs(self, t, flush_seq);
        jobs.insert(1, beside);
        let queue = std::sync::Mutex::new(std::collections::VecDeque::from(jobs));
        let work = |out: &mut Vec<Staged>| -> Result<(), E> {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                match next {
                    Some(stage) => stage(out)?,
                    None => return Ok(()),
                }
            }
        };
        let outs: Vec<Vec<Staged>> = (0..self.settings.threads.max(1))
            .map(|_| Vec::new())
            .collect();
        let done = crate::parallel::map(outs, |mut out| {
            let result = work(&mut out);
            (out, result)
        });
        // Whatever happened, the caller removes every temporary staged by any worker.
        let mut result = Ok(());
        for (mut out, worker) in done {
            staged.append(&mut out);
            result = result.and(worker);
        }
        drop(queue);
        let made = made_slot.into_inner().unwrap_or_else(|p| p.into_inner());
        result.map(|()| made.expect("no worker failed, so every job ran, beside too"))
    }

    /// Stages every table of `t` on this thread.
    fn stage_every(
        &self,
        t: &Tables,
        flush_seq: u64,
        out: &mut Vec<Staged>,
    ) -> Result<(), SinkError> {
        jobs(self, t, flush_seq)
            .into_iter()
            .try_for_each(|job| job(out))
    }

    /// The partition date of an event time.
    pub fn partition_date(&self, t: Micros) -> String {
        let utc = DateTime::from_timestamp_micros(t.0).unwrap_or_default();
        utc.with_timezone(&self.offset)
            .format("%Y-%m-%d")
            .to_string()
    }

    /// Writes the rows of one table, one temporary file per partition.
    fn stage<T: Table>(
        &self,
        rows: &[T],
        flush_seq: u64,
        staged: &mut Vec<Staged>,
    ) -> Result<(), SinkError> {
        // Rows grouped by their day in the partition time zone (named once per day).
        let day_us = 86_400_000_000_i64;
        let shift = i64::from(self.offset.local_minus_utc()) * 1_000_000;
        let mut by_day: BTreeMap<i64, Vec<&T>> = BTreeMap::new();
        for row in rows {
            let day = (row.event_time().0 + shift).div_euclid(day_us);
            by_day.entry(day).or_default().push(row);
        }
        // Named by date: days that would share a name (not expected: event times are kept
        // within a four-digit year) share a file rather than overwrite each other's.
        let mut partitions: BTreeMap<String, Vec<&T>> = BTreeMap::new();
        for (day, mut rows) in by_day {
            let date = self.partition_date(Micros(day * day_us - shift));
            partitions.entry(date).or_default().append(&mut rows);
        }
        for (date, mut rows) in partitions {
            T::sort(&mut rows);
            let dir = self.root.join(T::NAME).join(format!("date={date}"));
            fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
            let name = tagged_file_name(flush_seq, self.tag.as_deref());
            let final_path = dir.join(&name);
            let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
            staged.push(Staged {
                tmp: tmp.clone(),
                final_path,
                file: FileWritten {
                    table: T::NAME,
                    path: format!("{}/date={date}/{name}", T::NAME),
                    date,
                    rows: rows.len(),
                    bytes: 0,
                },
            });
            let batches = rows
                .chunks(self.settings.row_group_rows)
                .map(T::refs_to_batch);
            let bytes = self.write_file::<T>(&tmp, batches, FileKind::Flush)?;
            staged.last_mut().expect("just pushed").file.bytes = bytes;
        }
        Ok(())
    }

    /// Writes batches of table `T` to `path` with the table's writer properties, as a file of
    /// `kind` (a compacted file is fsynced here, a flush's files later, together); returns its
    /// size.
    pub fn write_file<T: Table>(
        &self,
        path: &Path,
        batches: impl Iterator<Item = arrow_array::RecordBatch>,
        kind: FileKind,
    ) -> Result<u64, SinkError> {
        let file = File::create(path).map_err(io("create", path))?;
        let file =
            self.encode::<T, _>(file, batches, kind)
                .map_err(|source| SinkError::Parquet {
                    path: path.to_path_buf(),
                    source,
                })?;
        if kind == FileKind::Compacted {
            file.sync_all().map_err(io("fsync", path))?;
        }
        Ok(file.metadata().map_err(io("stat", path))?.len())
    }

    /// Encodes batches of table `T` as a Parquet file of `kind` into `out`, with the table's
    /// writer properties; returns `out`.
    pub fn encode<T: Table, W: std::io::Write + Send>(
        &self,
        out: W,
        batches: impl Iterator<Item = arrow_array::RecordBatch>,
        kind: FileKind,
    ) -> Result<W, parquet::errors::ParquetError> {
        let mut batches = batches.peekable();
        let mut props = writer::writer_properties::<T>(self.settings, kind);
        // Batches are row groups of `row_group_rows`: a shorter first one is the only one, so
        // its columns' sizes are the file's.
        if let Some(first) = batches.peek()
            && first.num_rows() < self.settings.row_group_rows
        {
            props = writer::compression_by_size(props, first, kind);
        }
        let mut writer = ArrowWriter::try_new(out, T::schema(), Some(props))?;
        for batch in batches {
            writer.write(&batch)?;
        }
        writer.into_inner()
    }

    /// Makes written files durable: one fsync each when there are few, else one `syncfs` of the
    /// data directory's file system (a backfill spanning years writes thousands of files per
    /// flush, and an fsync each would dominate its time).
    fn sync_files<'a>(
        &self,
        files: impl ExactSizeIterator<Item = &'a Path>,
    ) -> Result<(), SinkError> {
        if files.len() > SYNC_EACH_MAX {
            return sync_filesystem(&self.root);
        }
        for path in files {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync", path))?;
        }
        Ok(())
    }

    /// The offset whose calendar date names partitions.
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    /// The settings files are written with.
    pub fn settings(&self) -> WriterSettings {
        self.settings
    }

    /// Renames staged files to their final names and makes the renames durable.
    fn publish(&self, staged: Vec<Staged>) -> Result<Vec<FileWritten>, SinkError> {
        let mut dirs = Vec::new();
        let mut written = Vec::with_capacity(staged.len());
        crate::failpoint::hit("flush-before-rename");
        for (i, s) in staged.iter().enumerate() {
            if i == 1 {
                crate::failpoint::hit("flush-between-renames");
            }
            if let Err(e) = fs::rename(&s.tmp, &s.final_path) {
                // Undo this flush so its events can be retried without duplicates.
                for done in &staged[..i] {
                    let _ = fs::remove_file(&done.final_path);
                }
                for rest in &staged[i..] {
                    let _ = fs::remove_file(&rest.tmp);
                }
                return Err(io("rename", &s.tmp)(e));
            }
            let dir = s
                .final_path
                .parent()
                .expect("files live in a partition directory")
                .to_path_buf();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        // The partition directories hold the new names; their parents (table directories and
        // the root) may hold new directories.
        let mut parents: Vec<PathBuf> = dirs
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf))
            .collect();
        parents.sort();
        parents.dedup();
        parents.push(self.root.clone());
        if dirs.len() + parents.len() > SYNC_EACH_MAX {
            sync_filesystem(&self.root)?;
        } else {
            for dir in dirs.iter().chain(&parents) {
                fsync_dir(dir)?;
            }
        }
        for s in staged {
            written.push(s.file);
        }
        Ok(written)
    }

    /// Per table: published files, and the most files in one partition.
    pub fn file_counts(&self) -> Vec<(&'static str, u64, u64)> {
        crate::flatten::TABLE_NAMES
            .iter()
            .map(|table| {
                let partitions = read_dirs(&self.root.join(table)).unwrap_or_default();
                let counts: Vec<u64> = partitions
                    .iter()
                    .map(|p| {
                        fs::read_dir(p)
                            .map(|entries| {
                                entries
                                    .filter_map(Result::ok)
                                    .filter(|e| e.file_name().to_str().is_some_and(is_published))
                                    .count() as u64
                            })
                            .unwrap_or(0)
                    })
                    .collect();
                (
                    *table,
                    counts.iter().sum(),
                    counts.iter().copied().max().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Every file under `<root>/<table>/<partition>/` whose name satisfies `keep`.
    fn files_matching(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, SinkError> {
        let mut found = Vec::new();
        // Table directories, not hooklake's own state (`_hooklake`) or other hidden entries.
        let tables = read_dirs(&self.root)?
            .into_iter()
            .filter(|d| !name_of(d).starts_with(['_', '.']));
        for table in tables {
            for partition in read_dirs(&table)?
                .into_iter()
                .filter(|d| name_of(d).starts_with("date="))
            {
                for entry in fs::read_dir(&partition).map_err(io("list", &partition))? {
                    let path = entry.map_err(io("list", &partition))?.path();
                    if path.file_name().and_then(|n| n.to_str()).is_some_and(&keep) {
                        found.push(path);
                    }
                }
            }
        }
        Ok(found)
    }
}

fn name_of(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// The name of the `k`-th output file of compaction `id`.
pub fn compacted_name(id: u64, k: usize) -> String {
    format!("compact-{id:012}-{k:03}.parquet")
}

/// Whether a file name is a published data file (of a flush or a compaction).
pub fn is_published(name: &str) -> bool {
    flush_seq_of(name).is_some() || (name.starts_with("compact-") && name.ends_with(".parquet"))
}

/// The flush sequence number in a published file name (`part-000000000042.parquet`, or
/// `part-000000000042-<tag>.parquet` from a process sharing its lake).
pub fn flush_seq_of(name: &str) -> Option<u64> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (digits, tag) = match stem.split_once('-') {
        Some((digits, tag)) => (digits, Some(tag)),
        None => (stem, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    (tag_ok && digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// The writer's tag in a flush's file name (`part-<flush>-<tag>.parquet`), if it has one.
pub fn writer_tag_of(name: &str) -> Option<&str> {
    flush_seq_of(name)?;
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    stem.split_once('-').map(|(_, tag)| tag)
}

/// Every published file of `table` under `root`, in path order (none when the table is absent).
pub fn published_files(root: &Path, table: &str) -> Result<Vec<PathBuf>, SinkError> {
    let table_dir = root.join(table);
    if !table_dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for partition in read_dirs(&table_dir)?
        .into_iter()
        .filter(|d| name_of(d).starts_with("date="))
    {
        for entry in fs::read_dir(&partition).map_err(io("list", &partition))? {
            let path = entry.map_err(io("list", &partition))?.path();
            if is_published(name_of(&path)) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The sub-directories of `dir`.
fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>, SinkError> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        if entry.file_type().map_err(io("stat", dir))?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Makes everything written to the file system holding `dir` durable (Linux `syncfs`).
fn sync_filesystem(dir: &Path) -> Result<(), SinkError> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir).map_err(io("open", dir))?;
    // SAFETY: `handle` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(io("syncfs", dir)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes the entries of a directory (new names, removed names) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync directory", dir))
}

/// The name of a flush's file in each partition it touches: deterministic, so a flush that is
/// redone after a failed commit overwrites its own files instead of adding copies.
pub fn file_name(flush_seq: u64) -> String {
    format!("part-{flush_seq:012}.parquet")
}

/// [`file_name`] with the writer's tag, for processes sharing a lake.
pub fn tagged_file_name(flush_seq: u64, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("part-{flush_seq:012}-{tag}.parquet"),
        None => file_name(flush_seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Envelope;

    fn settings() -> WriterSettings {
        WriterSettings {
            threads: 2,
            zstd_level: 3,
            row_group_rows: 1000,
        }
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn file_names_are_pinned() {
        assert_eq!(file_name(42), "part-000000000042.parquet");
        assert_eq!(flush_seq_of("part-000000000042.parquet"), Some(42));
        assert_eq!(flush_seq_of("part-42.parquet"), None);
        let tagged = tagged_file_name(42, Some("r1a2"));
        assert_eq!(tagged, "part-000000000042-r1a2.parquet");
        assert_eq!(flush_seq_of(&tagged), Some(42));
        assert_eq!(writer_tag_of(&tagged), Some("r1a2"));
        assert_eq!(writer_tag_of("part-000000000042.parquet"), None);
        assert_eq!(flush_seq_of("part-000000000042-.parquet"), None);
        assert_eq!(flush_seq_of("part-000000000042-A.parquet"), None);
        assert_eq!(flush_seq_of(".part-000000000042.parquet.tmp"), None);
    }

    #[test]
    fn uncommitted_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        let event = Envelope::parse_one(r#"{"id": 1, "previewId": "p"}"#, None, 0, "/w").unwrap();
        sink.write(&crate::flatten::flatten(std::slice::from_ref(&event)), 1)
            .unwrap();
        let files = sink.write(&crate::flatten::flatten(&[event]), 2).unwrap();
        let removed = sink.remove_uncommitted(1).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(files.iter().all(|f| !dir.path().join(&f.path).exists()));
        assert!(
            dir.path()
                .join("raw_events/date=1970-01-01/part-000000000001.parquet")
                .exists()
        );
    }

    #[test]
    fn a_flush_makes_one_file_per_table_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        let event = Envelope::parse_one(r#"{"id": 1, "previewId": "p"}"#, None, 0, "/w").unwrap();
        let tables = || crate::flatten::flatten(std::slice::from_ref(&event));
        assert_eq!(sink.files_for(&tables()), 2, "contact_events, raw_events");
        assert_eq!(sink.write(&tables(), 2).unwrap().len(), 2);
    }

    #[test]
    fn partition_date_follows_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        // 2026-03-04T23:30:00Z
        let t = Micros(1_772_667_000_000_000);
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        assert_eq!(sink.partition_date(t), "2026-03-04");
        let east =
            Sink::open(dir.path(), settings(), FixedOffset::east_opt(3600).unwrap()).unwrap();
        assert_eq!(east.partition_date(t), "2026-03-05");
    }

    #[test]
    fn writes_one_file_per_table_and_partition_and_sweeps_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        let events: Vec<Envelope> = [
            r#"{"id": 1, "previewId": "p", "updatedAt": "2026-03-04T10:00:00Z"}"#,
            r#"{"id": 2, "previewId": "p", "updatedAt": "2026-03-05T10:00:00Z"}"#,
            r#"{"id": 1, "previewId": "p", "updatedAt": "2026-03-04T11:00:00Z"}"#,
        ]
        .iter()
        .map(|t| Envelope::parse_one(t, None, 0, "/w").unwrap())
        .collect();
        let files = sink.write(&crate::flatten::flatten(&events), 1).unwrap();
        let mut summary: Vec<(&str, &str, usize)> = files
            .iter()
            .map(|f| (f.table, f.date.as_str(), f.rows))
            .collect();
        // Two workers stage the tables, so the files come in the order they finish.
        summary.sort();
        assert_eq!(
            summary,
            vec![
                ("contact_events", "2026-03-04", 2),
                ("contact_events", "2026-03-05", 1),
                ("raw_events", "2026-03-04", 2),
                ("raw_events", "2026-03-05", 1),
            ]
        );
        for f in &files {
            assert!(dir.path().join(&f.path).is_file());
            assert!(f.bytes > 0);
        }
        let stray = dir
            .path()
            .join("contact_events/date=2026-03-04/.part-x.parquet.tmp");
        fs::write(&stray, b"partial").unwrap();
        Sink::open(dir.path(), settings(), utc()).unwrap();
        assert!(!stray.exists());
    }

    #[test]
    fn a_failed_flush_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        // A file where the raw_events table directory should be makes the last table fail.
        fs::write(dir.path().join("raw_events"), b"not a directory").unwrap();
        let event = Envelope::parse_one(r#"{"id": 1, "previewId": "p"}"#, None, 0, "/w").unwrap();
        let err = sink
            .write(&crate::flatten::flatten(&[event]), 1)
            .unwrap_err();
        assert!(err.to_string().contains("raw_events"), "{err}");
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(leftovers, vec![dir.path().join("raw_events")]);
    }

    fn contact_and_call() -> (Tables, Tables) {
        let contact = Envelope::parse_one(
            r#"{"id": 7, "email": "a@b.c"}"#,
            Some(crate::event::EventType::ContactCreated),
            0,
            "/w",
        )
        .unwrap();
        let call = Envelope::parse_one(
            r#"{"hookType": "Call booked", "invitee": {}, "event": {"uuid": "c1"}}"#,
            None,
            0,
            "/w",
        )
        .unwrap();
        let calls = Tables {
            call_events: crate::flatten::flatten(&[call]).call_events,
            ..Default::default()
        };
        (crate::flatten::flatten(&[contact]), calls)
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = walk(dir).into_iter().filter(|p| p.is_file()).collect();
        files.sort();
        files
    }

    #[test]
    fn rows_made_beside_a_write_are_published_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        let (tables, calls) = contact_and_call();
        assert!(tables.call_events.is_empty() && !calls.call_events.is_empty());
        let (files, made, seen) = sink
            .write_with(&tables, 3, || {
                // It reads the rows being written.
                let seen = tables.contact_events[0].contact_id;
                Ok::<_, SinkError>((calls, seen))
            })
            .unwrap();
        assert_eq!(seen, Some(7));
        assert_eq!(made.call_events.len(), 1);
        let names: Vec<&str> = files.iter().map(|f| f.table).collect();
        assert!(names.contains(&"contact_events"), "{names:?}");
        assert!(names.contains(&"call_events"), "{names:?}");
        assert!(
            names.windows(2).all(|w| w[0] <= w[1]),
            "path order: {names:?}"
        );
        let on_disk: Vec<PathBuf> = files.iter().map(|f| dir.path().join(&f.path)).collect();
        let mut sorted = on_disk.clone();
        sorted.sort();
        assert_eq!(files_in(dir.path()), sorted);
    }

    #[test]
    fn a_failure_beside_a_write_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path(), settings(), utc()).unwrap();
        let (tables, _) = contact_and_call();
        let err = sink
            .write_with(&tables, 1, || {
                Err::<(Tables, ()), _>(SinkError::TableTwice { table: "beside" })
            })
            .unwrap_err();
        assert!(err.to_string().contains("beside"), "{err}");
        assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
        // Rows of a table the write has rows of are refused, not written over each other.
        let (tables, _) = contact_and_call();
        let (again, _) = contact_and_call();
        let err = sink
            .write_with(&tables, 2, || Ok::<_, SinkError>((again, ())))
            .unwrap_err();
        assert!(err.to_string().starts_with("contact_events"), "{err}");
        assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
