//! `hooklake rebuild`: recompute every table and the state store from `raw_events`.
//!
//! Reads every published `raw_events` file of a data directory, orders the events by event time
//! (then receive time and id), and feeds them through a fresh pipeline into a new directory:
//! the same parsing, routing (an event keeps its recorded type; `unknown` ones are routed again,
//! so a new mapping can claim them), flattening, change tracking and dedup as live traffic, with
//! the original receive times and paths. In place, the new directory is then exchanged with the
//! old one in one atomic `renameat2(RENAME_EXCHANGE)`, and the old one is kept beside it.
//! `rejected_events` does not depend on the mapping: its rows are carried over unchanged, with
//! the marks of those `hooklake replay --rejected` already replayed. So are the workflow
//! triggers' outbox (deliveries waiting or given up) and `trigger_deliveries`; the rebuilt
//! pipeline fires no trigger (its facts fired when they were first flushed).
//! A source a server stopped abruptly may hold acknowledged events in its log, not yet in any
//! table: they are written first, as `serve` would at its next start (rebuild reads only the
//! tables, and the log would otherwise be set aside with the old contents, never replayed).
//! A remote lake's tables are read from a downloaded copy of their live files, and rebuilt into
//! a new, empty lake (`--into-lake`): an object store cannot exchange two prefixes atomically,
//! so nothing is exchanged and the source lake is left as it is.
//! Invariant: apart from that, the source directory and lake are only read (and the directory
//! locked against a running server) until the exchange.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::Config;
use crate::event::{Envelope, EventType};
use crate::metrics::Metrics;
use crate::pipeline::{FlushReason, Mode, Pipeline};
use crate::replay::Summary;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0} is in use by another hooklake process; stop it first")]
    Locked(PathBuf),
    #[error(
        "the lake is at {0}, outside the data directory: rebuild works on a lake in its data directory"
    )]
    LakeElsewhere(String),
    #[error("cannot rebuild into that lake: {0}")]
    NewLake(String),
    #[error("target {0} already exists and is not empty")]
    TargetExists(PathBuf),
    #[error("cannot exchange {0} and {1}: {2}")]
    Exchange(PathBuf, PathBuf, std::io::Error),
    #[error(transparent)]
    Open(#[from] crate::pipeline::OpenError),
    #[error(transparent)]
    Flush(#[from] crate::pipeline::FlushError),
    #[error(transparent)]
    Store(#[from] crate::state::StoreError),
}

/// One row of `raw_events`.
pub(crate) struct Raw {
    pub event_time: i64,
    pub received_at: i64,
    pub event_id: String,
    pub event_type: String,
    pub source_path: String,
    pub payload: String,
}

/// What a rebuild did.
#[derive(Debug)]
pub struct Report {
    pub summary: Summary,
    /// The rebuilt data directory (and lake, unless it is remote).
    pub rebuilt: PathBuf,
    /// The rebuilt remote lake, when the source lake was remote.
    pub lake: Option<String>,
    /// In place: where the previous contents were moved.
    pub previous: Option<PathBuf>,
    /// Events found in the source's log and written to its tables before the rebuild.
    pub from_log: usize,
}

/// Rebuilds `config.data_dir` into `into`, or in place when `into` is `None`. A remote lake is
/// rebuilt into the new lake `into_lake` (an object store has no atomic exchange of
/// directories), with its state in `into` (default: a sibling of the data directory); the
/// source lake is left as it is.
pub async fn rebuild(
    config: &Config,
    into: Option<&Path>,
    into_lake: Option<&str>,
) -> Result<Report, RebuildError> {
    let source = config.data_dir.clone();
    let source_lake = config.lake();
    let remote = !source_lake.is_local();
    if !remote && source_lake != crate::lake::LakeUrl::Local(source.clone()) {
        return Err(RebuildError::LakeElsewhere(source_lake.to_string()));
    }
    let target_lake =
        match (remote, into_lake) {
            (true, Some(url)) => {
                let url = crate::lake::LakeUrl::parse(url)
                    .map_err(|e| RebuildError::NewLake(e.to_string()))?;
                if url == source_lake {
                    return Err(RebuildError::NewLake("it is the lake being rebuilt".into()));
                }
                let tables = crate::pipeline::live_files_at(&url, &config.store_options())
                    .map_err(|e| RebuildError::NewLake(e.to_string()))?;
                if tables.values().any(Option::is_some) {
                    return Err(RebuildError::NewLake(format!("{url} already holds tables")));
                }
                Some(url.to_string())
            }
            (true, None) => {
                return Err(RebuildError::NewLake(
                    "a remote lake is rebuilt into a new one: give --into-lake URL".into(),
                ));
            }
            (false, Some(_)) => return Err(RebuildError::NewLake(
                "--into-lake is for a remote lake; a local lake is rebuilt in place or --into DIR"
                    .into(),
            )),
            (false, None) => None,
        };
    let from_log = write_what_the_log_holds(config).await?;
    let _lock = lock(&source)?;
    // The tables rebuild reads: a remote lake's live files are downloaded first.
    let copy = match remote {
        true => {
            let copy = tempfile::tempdir_in(&source).map_err(|e| RebuildError::Read {
                path: source.clone(),
                message: e.to_string(),
            })?;
            for table in ["raw_events", "rejected_events", "trigger_deliveries"] {
                crate::pipeline::download_table_at(
                    &source_lake,
                    &config.store_options(),
                    table,
                    copy.path(),
                )
                .await
                .map_err(|e| RebuildError::Read {
                    path: PathBuf::from(format!("{source_lake}/{table}")),
                    message: e.to_string(),
                })?;
            }
            Some(copy)
        }
        false => None,
    };
    let tables_at = copy
        .as_ref()
        .map_or(source.clone(), |c| c.path().to_path_buf());
    let mut raws = read_raw_events(&tables_at)?;
    // Copies of one event id (there should be none) are dropped by the pipeline's dedup.
    raws.sort_by(|a, b| {
        (a.event_time, a.received_at, &a.event_id).cmp(&(b.event_time, b.received_at, &b.event_id))
    });

    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = match into {
        Some(dir) => dir.to_path_buf(),
        None => sibling(&source, &format!("rebuild-{stamp}")),
    };
    if target.exists()
        && std::fs::read_dir(&target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(RebuildError::TargetExists(target));
    }
    let target_config = Config {
        data_dir: target.clone(),
        lake_url: target_lake.clone(),
        triggers: Vec::new(),
        ..config.clone()
    };
    let (pipeline, _) =
        Pipeline::open(&target_config, Arc::new(Metrics::default()), Mode::Unlogged)?;
    let mut summary = Summary::default();
    let progress = indicatif::ProgressBar::new(raws.len() as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for raw in raws {
        progress.inc(1);
        let kind = EventType::from_name(&raw.event_type).filter(|t| *t != EventType::Unknown);
        let envelope =
            match Envelope::parse_one(&raw.payload, kind, raw.received_at, &raw.source_path) {
                Ok(e) => e,
                Err(e) => {
                    summary.rejected.push(crate::replay::Rejection {
                        file: "raw_events".into(),
                        place: format!("event {}", raw.event_id),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
        summary.bodies += 1;
        *summary
            .by_type
            .entry(envelope.event_type.as_str())
            .or_default() += 1;
        let outcome = pipeline.accept_unlogged(vec![envelope])?;
        summary.duplicates += outcome.duplicates.len();
        if outcome.flush_due {
            summary.add_flush(pipeline.flush(FlushReason::Replay).await?);
        }
    }
    // Dead letters and their replay marks, as they were.
    let letters =
        crate::replay_rejected::read_rejected(&tables_at).map_err(|e| RebuildError::Read {
            path: tables_at.join("rejected_events"),
            message: e.to_string(),
        })?;
    for letter in letters {
        if pipeline.accept_rejected_unlogged(letter) {
            summary.add_flush(pipeline.flush(FlushReason::Replay).await?);
        }
    }
    // The triggers' outbox and delivery history, written by the last flush.
    let history = read_deliveries(&tables_at)?;
    pipeline.import_outbox(&source.join("_hooklake/state.redb"), &history)?;
    summary.add_flush(pipeline.flush(FlushReason::Replay).await?);
    let marks = crate::state::Store::read_replayed(&source.join("_hooklake/state.redb"))?;
    pipeline.store().put_replayed(&marks)?;
    progress.finish_and_clear();
    drop(pipeline);

    drop(copy);
    let previous = match (into, &target_lake) {
        (Some(_), _) | (None, Some(_)) => None,
        (None, None) => {
            exchange(&source, &target)?;
            // `target` now holds the previous contents; give it a name that says so.
            let kept = sibling(&source, &format!("before-rebuild-{stamp}"));
            std::fs::rename(&target, &kept)
                .map_err(|e| RebuildError::Exchange(target.clone(), kept.clone(), e))?;
            Some(kept)
        }
    };
    let rebuilt = if into.is_some() || target_lake.is_some() {
        target
    } else {
        source
    };
    Ok(Report {
        summary,
        rebuilt,
        lake: target_lake,
        previous,
        from_log,
    })
}

/// Recovers the source's log, if it has one, and flushes what it held (events acknowledged
/// by a server that stopped before writing them); returns how many events that wrote.
async fn write_what_the_log_holds(config: &Config) -> Result<usize, RebuildError> {
    if !config.data_dir.join("_hooklake").join("wal").is_dir() {
        return Ok(0);
    }
    let (pipeline, _) = Pipeline::open(config, Arc::new(Metrics::default()), Mode::Logged)?;
    // Events and dead letters alike; an empty flush writes nothing.
    let written = pipeline.flush(FlushReason::Manual).await?.events;
    pipeline.close();
    if written > 0 {
        tracing::info!(
            events = written,
            "wrote the events left in the log before rebuilding"
        );
    }
    Ok(written)
}

/// `<dir>.<suffix>` next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// Takes the source directory's lock, so no server writes it meanwhile.
fn lock(dir: &Path) -> Result<File, RebuildError> {
    let state = dir.join("_hooklake");
    std::fs::create_dir_all(&state).map_err(|e| RebuildError::Read {
        path: state.clone(),
        message: e.to_string(),
    })?;
    let path = state.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RebuildError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
    file.try_lock()
        .map_err(|_| RebuildError::Locked(dir.to_path_buf()))?;
    Ok(file)
}

/// Calls `each` with every batch of every published file of `table`; an error names the file.
fn for_each_batch(
    dir: &Path,
    table: &str,
    mut each: impl FnMut(&RecordBatch) -> Result<(), String>,
) -> Result<(), RebuildError> {
    let files = crate::sink::published_files(dir, table).map_err(|e| RebuildError::Read {
        path: dir.join(table),
        message: e.to_string(),
    })?;
    for path in files {
        let read = |message: String| RebuildError::Read {
            path: path.clone(),
            message,
        };
        let file = File::open(&path).map_err(|e| read(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| read(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| read(e.to_string()))?;
            each(&batch).map_err(read)?;
        }
    }
    Ok(())
}

/// Every row of every published `raw_events` file.
fn read_raw_events(dir: &Path) -> Result<Vec<Raw>, RebuildError> {
    let mut raws = Vec::new();
    for_each_batch(dir, "raw_events", |batch| append_rows(batch, &mut raws))?;
    Ok(raws)
}

/// Every row of `trigger_deliveries` (once per trigger, `webhook-id` and attempt), as attempts.
fn read_deliveries(dir: &Path) -> Result<Vec<crate::state::Attempt>, RebuildError> {
    use arrow_array::{Float64Array, Int64Array};
    fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| format!("trigger_deliveries has no readable column {name}"))
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for_each_batch(dir, "trigger_deliveries", |batch| {
        let text = |name: &str| col::<StringArray>(batch, name);
        let (trigger, id, table, event, error, outcome) = (
            text("trigger")?,
            text("webhook_id")?,
            text("fact_table")?,
            text("event_id")?,
            text("error")?,
            text("outcome")?,
        );
        let attempt = col::<Int64Array>(batch, "attempt")?;
        let status = col::<Int64Array>(batch, "status_code")?;
        let latency = col::<Float64Array>(batch, "latency_ms")?;
        let at = col::<TimestampMicrosecondArray>(batch, "event_time")?;
        let next = col::<TimestampMicrosecondArray>(batch, "next_attempt_at")?;
        for i in 0..batch.num_rows() {
            let key = (
                trigger.value(i).to_string(),
                id.value(i).to_string(),
                attempt.value(i),
            );
            if !seen.insert(key) {
                continue;
            }
            out.push(crate::state::Attempt {
                trigger: trigger.value(i).to_string(),
                webhook_id: id.value(i).to_string(),
                fact_table: table.value(i).to_string(),
                event_id: event.value(i).to_string(),
                attempt: u32::try_from(attempt.value(i)).unwrap_or(u32::MAX),
                attempted_at_us: at.value(i),
                status_code: status
                    .is_valid(i)
                    .then(|| u16::try_from(status.value(i)).unwrap_or(0)),
                error: error.is_valid(i).then(|| error.value(i).to_string()),
                latency_ms: if latency.is_valid(i) {
                    latency.value(i)
                } else {
                    0.0
                },
                outcome: outcome.value(i).to_string(),
                next_attempt_at_us: next.is_valid(i).then(|| next.value(i)),
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// Appends the rows of a `raw_events` batch to `out`.
pub(crate) fn append_rows(batch: &RecordBatch, out: &mut Vec<Raw>) -> Result<(), String> {
    fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, String> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| format!("column {name} is missing or not text"))
    }
    fn times<'a>(
        batch: &'a RecordBatch,
        name: &str,
    ) -> Result<&'a TimestampMicrosecondArray, String> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| format!("column {name} is missing or not a timestamp"))
    }
    let (ids, types, paths, payloads) = (
        strings(batch, "event_id")?,
        strings(batch, "event_type")?,
        strings(batch, "source_path")?,
        strings(batch, "payload")?,
    );
    let (event_times, received) = (times(batch, "event_time")?, times(batch, "received_at")?);
    for i in 0..batch.num_rows() {
        out.push(Raw {
            event_time: event_times.value(i),
            received_at: received.value(i),
            event_id: ids.value(i).to_string(),
            event_type: types.value(i).to_string(),
            source_path: paths.value(i).to_string(),
            payload: payloads.value(i).to_string(),
        });
    }
    Ok(())
}

/// Atomically exchanges two directories (Linux `renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<(), RebuildError> {
    use std::os::unix::ffi::OsStrExt;
    let fail = |e: std::io::Error| RebuildError::Exchange(a.to_path_buf(), b.to_path_buf(), e);
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes()).map_err(|e| fail(e.into()))?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes()).map_err(|e| fail(e.into()))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}
