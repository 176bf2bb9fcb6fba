//! Several processes on one shared lake: receivers (`serve --role ingest`) write only
//! `raw_events` and `rejected_events`; the deriver (`serve --role derive`, `derive --once`)
//! follows the `raw_events` Delta log and writes every other table through the same flush as
//! one process, holding the lake's lease (`lease.rs`) while a standby waits. Receivers report
//! a watermark of receive times (`receivers.rs`); the deriver derives, in receive-time order,
//! only the events below the lowest one. Its state store, with its progress (the
//! `raw_events` version reached) committed in each flush's transaction, is uploaded to the
//! lake (`_hooklake/deriver/state.redb`) for the next holder to start from.
//! Invariant: the deriver commits only while its lease holds; what it committed after the
//! state a successor starts from is reverted by that successor (rule R) and derived again.

pub mod lease;
pub mod receivers;
mod state;
mod status;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use object_store::{ObjectStoreExt, UpdateVersion};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::{Envelope, EventType};
use crate::lake::delta::Action;
use crate::lake::{Lake, LakeError, store_error};
use crate::metrics::{DeriverGauges, Metrics};
use crate::pipeline::{FlushReason, Mode, Pipeline};

pub use lease::{Fence, Lease};
pub use receivers::{receiver_reports, report_as_receiver};
pub use status::status_report;

use state::{restore_state, upload_state};

/// An object of the lake with its version (the condition of a later replacement), or `None`
/// if there is none.
pub(crate) async fn get_versioned(
    store: &Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
) -> Result<Option<(bytes::Bytes, UpdateVersion)>, LakeError> {
    let found = match store.get(path).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error("get", path, e)),
    };
    let version = UpdateVersion {
        e_tag: found.meta.e_tag.clone(),
        version: found.meta.version.clone(),
    };
    let bytes = found
        .bytes()
        .await
        .map_err(|e| store_error("get", path, e))?;
    Ok(Some((bytes, version)))
}

/// This machine's name, for reports and the lease.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What the deriver is doing, for `/readyz`, `/metrics` and `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeriverStatus {
    /// `standby`, `holding` or `stopped`.
    pub lease: &'static str,
    /// The `raw_events` version up to which every event is derived.
    pub raw_events_version: Option<i64>,
    /// Events read and not derived yet (waiting for a receiver's watermark).
    pub lag_events: u64,
    /// Age of the oldest of them, seconds.
    pub lag_secs: f64,
    /// Receivers waited for.
    pub receivers: usize,
    /// The last error, until a pass succeeds.
    pub problem: Option<String>,
}

/// Shared between the deriver's loop and its HTTP endpoints.
pub type SharedStatus = Arc<Mutex<DeriverStatus>>;

fn set_status(status: &SharedStatus, metrics: &Metrics, change: impl FnOnce(&mut DeriverStatus)) {
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut s);
    metrics.set_deriver(DeriverGauges {
        lease_held: s.lease == "holding",
        raw_version: s.raw_events_version.unwrap_or(-1),
        lag_seconds: s.lag_secs,
        lag_events: s.lag_events,
        receivers: s.receivers as u64,
    });
}

/// An event read from `raw_events`, waiting for the watermark.
struct Waiting {
    version: i64,
    envelope: Envelope,
}

/// A `raw_events` file the deriver has seen in the log but not read yet.
#[derive(Debug, Clone, PartialEq)]
struct Unread {
    version: i64,
    path: String,
    /// A lower bound of its rows' receive times (its `add` statistics; the smallest possible
    /// value without them).
    min_received_us: i64,
    /// Its rows (statistics), or 1 without them.
    rows: u64,
}

/// Picks the files to read in this pass: the unread ones in order of their earliest receive
/// time, up to `budget` rows (at least one file). Returns them and the receive time below
/// which every event still unread lies at or above (`i64::MAX` when none is left).
fn pick(unread: &mut Vec<Unread>, budget: u64) -> (Vec<Unread>, i64) {
    unread.sort_by_key(|u| (u.min_received_us, u.version));
    let mut rows = 0u64;
    let mut take = 0;
    for u in unread.iter() {
        if take > 0 && rows.saturating_add(u.rows) > budget {
            break;
        }
        rows = rows.saturating_add(u.rows);
        take += 1;
    }
    let picked: Vec<Unread> = unread.drain(..take).collect();
    let bound = unread.first().map_or(i64::MAX, |u| u.min_received_us);
    (picked, bound)
}

/// How a holding ended.
enum Held {
    /// Asked to stop (or `--once` done): the lease is released.
    Stopped,
    /// The lease was lost or expired: back to standby.
    Lost,
}

/// Runs the deriver until `stop`: waits for the lease as a standby, then derives while it
/// holds it. With `once`, derives what the receivers' watermarks allow and returns.
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    status: SharedStatus,
    stop: CancellationToken,
    once: bool,
) -> anyhow::Result<()> {
    let lake = Lake::open(&config.lake(), &config.store_options())?;
    let state_dir = config.data_dir.join("_hooklake");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let instance = crate::pipeline::instance_id_of(&state_dir)?;
    let duration = Duration::from_secs(config.derive_lease_secs);
    let mut lease = Lease::new(&lake, &instance, duration);
    let deriver = Deriver {
        config,
        lake: lake.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        stop: stop.clone(),
        once,
    };
    loop {
        set_status(&status, &metrics, |s| s.lease = "standby");
        // Standby until the lease is ours.
        loop {
            match lease.try_take().await {
                Ok(true) => break,
                Ok(false) if once => anyhow::bail!(
                    "another deriver holds the lease ({}); try again when it stops",
                    lake.path(lease::LEASE_OBJECT)
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the deriver lease");
                    set_status(&status, &metrics, |s| s.problem = Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    set_status(&status, &metrics, |s| s.lease = "stopped");
                    return Ok(());
                }
                _ = tokio::time::sleep(lease.renew_every()) => {}
            }
        }
        metrics.add("hooklake_deriver_lease_taken_total", "", 1);
        tracing::info!(instance = %instance, "holding the deriver lease");
        set_status(&status, &metrics, |s| s.lease = "holding");
        let held = hold(&deriver, &mut lease).await;
        match held {
            Ok(Held::Stopped) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!(error = %e, "cannot release the deriver lease");
                }
                set_status(&status, &metrics, |s| s.lease = "stopped");
                return Ok(());
            }
            Ok(Held::Lost) => {
                tracing::warn!("the deriver lease is lost: standing by");
            }
            Err(e) if once => return Err(e),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the deriver failed: standing by");
                set_status(&status, &metrics, |s| s.problem = Some(format!("{e:#}")));
                tokio::time::sleep(lease.renew_every()).await;
            }
        }
    }
}

/// What a deriver works with, for as long as it runs.
struct Deriver<'a> {
    config: &'a Config,
    lake: Lake,
    metrics: Arc<Metrics>,
    status: SharedStatus,
    stop: CancellationToken,
    /// `derive --once`: one pass, then stop.
    once: bool,
}

/// While the lease holds: the state from the lake, a pipeline, then poll after poll.
async fn hold(d: &Deriver<'_>, lease: &mut Lease) -> anyhow::Result<Held> {
    let Deriver {
        config,
        lake,
        metrics,
        ..
    } = d;
    let mut snapshot_version = restore_state(lake, &config.data_dir).await?;
    let mut deriving = Config::clone(config);
    deriving.role = crate::config::Role::Derive;
    let (pipeline, _) = Pipeline::open(&deriving, metrics.clone(), Mode::Unlogged)?;
    pipeline.set_fence(lease.fence());
    let background = CancellationToken::new();
    let tasks = crate::server::derived_background(&deriving, &pipeline, &background);
    let result = derive_polls(d, lease, &pipeline, &mut snapshot_version).await;
    background.cancel();
    for task in tasks {
        let _ = task.await;
    }
    pipeline.close();
    result
}

/// The polls of one holding.
async fn derive_polls(
    d: &Deriver<'_>,
    lease: &mut Lease,
    pipeline: &Arc<Pipeline>,
    snapshot_version: &mut Option<UpdateVersion>,
) -> anyhow::Result<Held> {
    let Deriver {
        config,
        lake,
        metrics,
        status,
        stop,
        once,
    } = d;
    let (lake, once) = (lake, *once);
    let raw = lake.table("raw_events");
    let progress = pipeline.store().derived_through()?;
    let mut next_version = progress.map_or(0, |v| v + 1);
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut unread: Vec<Unread> = Vec::new();
    let mut last_upload = Instant::now();
    let mut uploaded_flush = pipeline.store().committed()?.flush_seq;
    let mut next_renew = Instant::now() + lease.renew_every();
    let staging = config.data_dir.join("_hooklake").join("derive");
    let poll = Duration::from_secs(config.derive_poll_secs);
    let timeout_ms = (config.receiver_timeout_secs * 1000) as i64;
    set_status(status, metrics, |s| s.raw_events_version = progress);
    loop {
        if Instant::now() >= next_renew {
            match lease.renew().await {
                Ok(()) => next_renew = Instant::now() + lease.renew_every(),
                Err(lease::LeaseError::Lost) => return Ok(Held::Lost),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the deriver lease");
                    next_renew = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        if !lease.fence().holds() {
            return Ok(Held::Lost);
        }
        // Reports first, then the log: every event below a report's watermark is in a
        // version of raw_events written before the report.
        let pass = async {
            let reports = receivers::list(lake).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            let active = receivers::active(&reports, now_ms, timeout_ms);
            let watermark = receivers::watermark(&active);
            let receivers = active.len();
            let latest = raw.snapshot().await?.version;
            let mut files: Vec<Unread> = Vec::new();
            if let Some(latest) = latest {
                for version in next_version..=latest {
                    let actions =
                        raw.commit_actions(version)
                            .await?
                            .ok_or_else(|| LakeError::Log {
                                table: "raw_events".into(),
                                reason: format!("version {version} is missing"),
                            })?;
                    files.extend(written_files(version, &actions));
                }
            }
            Ok::<_, LakeError>((watermark, receivers, latest, files))
        };
        let (watermark, receivers, latest, files) = match pass.await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read raw_events");
                set_status(status, metrics, |s| s.problem = Some(e.to_string()));
                if once {
                    return Err(e.into());
                }
                if sleep_or_stop(stop, poll).await {
                    return finish(pipeline, lake, lease, snapshot_version, uploaded_flush).await;
                }
                continue;
            }
        };
        unread.extend(files);
        if let Some(latest) = latest {
            next_version = latest + 1;
        }
        // A pass reads at most `derive_batch_events` rows, the earliest files first; an
        // event is derived only below the earliest receive time still unread.
        let (picked, unread_from) = pick(&mut unread, config.derive_batch_events);
        let read = read_events(lake, &raw, &staging, &picked).await?;
        metrics.add("hooklake_deriver_events_read_total", "", read.len() as u64);
        waiting.extend(read);
        // Below the watermark, in receive-time order (the order one process takes them).
        let cutoff = watermark.min(unread_from);
        waiting.sort_by_key(|w| (w.envelope.received_at_us, w.version));
        let ready = waiting.partition_point(|w| w.envelope.received_at_us < cutoff);
        let now: Vec<Waiting> = waiting.drain(..ready).collect();
        let oldest = waiting
            .iter()
            .map(|w| w.version)
            .chain(unread.iter().map(|u| u.version))
            .min();
        let reached = match oldest {
            Some(oldest) => oldest - 1,
            None => next_version - 1,
        };
        let mut now = now.into_iter().map(|w| w.envelope).peekable();
        while now.peek().is_some() {
            let chunk: Vec<Envelope> = now.by_ref().take(1024).collect();
            if pipeline.accept_unlogged(chunk)?.flush_due {
                pipeline.flush(FlushReason::Derive).await?;
            }
        }
        if reached >= 0 {
            pipeline.set_derived_through(reached);
        }
        pipeline.flush(FlushReason::Derive).await?;
        let lag_secs = waiting
            .first()
            .map(|w| {
                ((chrono::Utc::now().timestamp_micros() - w.envelope.received_at_us).max(0) as f64)
                    / 1e6
            })
            .unwrap_or(0.0);
        let progress = pipeline.store().derived_through()?;
        set_status(status, metrics, |s| {
            s.raw_events_version = progress;
            s.lag_events = waiting.len() as u64 + unread.iter().map(|u| u.rows).sum::<u64>();
            s.lag_secs = lag_secs;
            s.receivers = receivers;
            s.problem = None;
        });
        let committed = pipeline.store().committed()?.flush_seq;
        let upload_due = last_upload.elapsed() >= Duration::from_secs(config.derive_snapshot_secs);
        if committed != uploaded_flush && (upload_due || once) {
            upload_state(pipeline, lake, lease, snapshot_version).await?;
            uploaded_flush = committed;
            last_upload = Instant::now();
        }
        if !unread.is_empty() {
            // More of the log to read: the next pass at once (unless asked to stop).
            if stop.is_cancelled() {
                return finish(pipeline, lake, lease, snapshot_version, uploaded_flush).await;
            }
            continue;
        }
        if once {
            return finish(pipeline, lake, lease, snapshot_version, uploaded_flush).await;
        }
        let news = News {
            watermark,
            next_version,
            earliest_waiting: waiting.first().map(|w| w.envelope.received_at_us),
        };
        if wait_for_news(
            lake,
            &raw,
            stop,
            poll.min(lease.renew_every()),
            timeout_ms,
            &news,
        )
        .await
        {
            return finish(pipeline, lake, lease, snapshot_version, uploaded_flush).await;
        }
    }
}

/// What the last pass left: the watermark it used, the next `raw_events` version to read and
/// the receive time of the earliest event still waiting.
struct News {
    watermark: i64,
    next_version: i64,
    earliest_waiting: Option<i64>,
}

/// Waits up to `wait` for the next pass, looking at the receivers' reports every second: a
/// pass is due early once the lowest watermark has moved past the last pass's and either a new
/// `raw_events` version exists or a waiting event is now below it (receivers that flush on the
/// clock are then derived within about a second). True when asked to stop meanwhile.
async fn wait_for_news(
    lake: &Lake,
    raw: &crate::lake::DeltaTable,
    stop: &CancellationToken,
    wait: Duration,
    timeout_ms: i64,
    last: &News,
) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if sleep_or_stop(stop, left.min(Duration::from_secs(1))).await {
            return true;
        }
        let Ok(reports) = receivers::list(lake).await else {
            continue;
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let watermark = receivers::watermark(&receivers::active(&reports, now_ms, timeout_ms));
        if watermark <= last.watermark {
            continue;
        }
        if last.earliest_waiting.is_some_and(|t| t < watermark)
            || matches!(raw.commit_actions(last.next_version).await, Ok(Some(_)))
        {
            return false;
        }
    }
}

/// Sleeps `wait`; true when asked to stop meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// A clean stop: the state uploaded for the next holder, unless the last upload holds it
/// (the flush number `uploaded_flush` is still the last committed one).
async fn finish(
    pipeline: &Arc<Pipeline>,
    lake: &Lake,
    lease: &Lease,
    snapshot_version: &mut Option<UpdateVersion>,
    uploaded_flush: u64,
) -> anyhow::Result<Held> {
    if pipeline.store().committed()?.flush_seq != uploaded_flush || snapshot_version.is_none() {
        upload_state(pipeline, lake, lease, snapshot_version).await?;
    }
    Ok(Held::Stopped)
}

/// The files a version of `raw_events` added with new rows (flushes; not compactions), with
/// what their statistics say of them.
fn written_files(version: i64, actions: &[Action]) -> Vec<Unread> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(add) if add.data_change => Some(unread_file(version, add)),
            _ => None,
        })
        .collect()
}

/// An added file's row count and earliest receive time, from its `add` statistics.
fn unread_file(version: i64, add: &crate::lake::delta::Add) -> Unread {
    let stats: Option<serde_json::Value> = add
        .stats
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let rows = stats
        .as_ref()
        .and_then(|s| s.get("numRecords")?.as_u64())
        .unwrap_or(1)
        .max(1);
    // The statistics round a timestamp's minimum down to the millisecond: still a bound.
    let min_received_us = stats
        .as_ref()
        .and_then(|s| s.get("minValues")?.get("received_at")?.as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(i64::MIN, |t| t.timestamp_micros());
    Unread {
        version,
        path: add.path.clone(),
        min_received_us,
        rows,
    }
}

/// Downloads `files` (path in the table, with their version) and reads their events.
async fn read_events(
    lake: &Lake,
    raw: &crate::lake::DeltaTable,
    staging: &Path,
    files: &[Unread],
) -> anyhow::Result<Vec<Waiting>> {
    let mut out = Vec::new();
    if files.is_empty() {
        return Ok(out);
    }
    std::fs::create_dir_all(staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    for Unread { version, path, .. } in files {
        let key = raw.file_path(path);
        let bytes = match lake.store().get(&key).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| store_error("get", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => {
                // A flush a receiver reverted (it never reached its state store): its events
                // come again in a later version.
                if !raw.snapshot().await?.files.contains_key(path) {
                    tracing::info!(path = %path, "skipping a raw_events file since reverted");
                    continue;
                }
                anyhow::bail!("raw_events/{path} is live in the log but missing from the store");
            }
            Err(e) => return Err(store_error("get", &key, e).into()),
        };
        let rows = tokio::task::spawn_blocking(move || read_raw(bytes))
            .await?
            .with_context(|| format!("reading raw_events/{path}"))?;
        for raw in rows {
            let kind = EventType::from_name(&raw.event_type).filter(|t| *t != EventType::Unknown);
            match Envelope::parse_one(&raw.payload, kind, raw.received_at, &raw.source_path) {
                Ok(envelope) => out.push(Waiting {
                    version: *version,
                    envelope,
                }),
                Err(e) => tracing::warn!(
                    event_id = %raw.event_id,
                    error = %e,
                    "a raw_events row no longer parses; it is not derived"
                ),
            }
        }
    }
    Ok(out)
}

/// The rows of one `raw_events` file.
fn read_raw(bytes: bytes::Bytes) -> anyhow::Result<Vec<crate::rebuild::Raw>> {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        crate::rebuild::append_rows(&batch?, &mut rows).map_err(anyhow::Error::msg)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::delta::Add;

    fn add(path: &str, stats: Option<&str>) -> Add {
        Add {
            path: path.into(),
            partition_values: Default::default(),
            size: 1,
            modification_time: 0,
            data_change: true,
            stats: stats.map(str::to_string),
        }
    }

    #[test]
    fn files_are_read_earliest_first_within_the_budget() {
        let with = add(
            "a.parquet",
            Some(r#"{"numRecords":40,"minValues":{"received_at":"2026-12-07T10:00:00.123Z"}}"#),
        );
        let u = unread_file(3, &with);
        assert_eq!((u.version, u.rows), (3, 40));
        assert_eq!(u.min_received_us, 1_796_637_600_123_000);
        // Without statistics a file is one row received at the earliest possible time.
        let bare = unread_file(4, &add("b.parquet", None));
        assert_eq!((bare.rows, bare.min_received_us), (1, i64::MIN));
        let at = |version, min, rows| Unread {
            version,
            path: format!("{version}"),
            min_received_us: min,
            rows,
        };
        let mut unread = vec![
            at(1, 300, 50),
            at(2, 100, 50),
            at(3, 200, 50),
            at(4, 400, 500),
        ];
        let (picked, bound) = pick(&mut unread, 100);
        assert_eq!(picked, vec![at(2, 100, 50), at(3, 200, 50)]);
        assert_eq!(bound, 300);
        // A file larger than the budget is still read, alone.
        let (picked, bound) = pick(&mut unread, 100);
        assert_eq!(picked, vec![at(1, 300, 50)]);
        assert_eq!(bound, 400);
        let (picked, bound) = pick(&mut unread, 100);
        assert_eq!(picked, vec![at(4, 400, 500)]);
        assert_eq!(bound, i64::MAX);
        assert!(unread.is_empty());
    }
}
