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
mod reading;
mod state;
mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use object_store::{ObjectStoreExt, UpdateVersion};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::Envelope;
use crate::lake::{Lake, LakeError, store_error};
use crate::metrics::{DeriverGauges, Metrics};
use crate::pipeline::{FlushReason, Mode, Pipeline};

pub use lease::{Fence, Lease};
pub use receivers::{receiver_reports, report_as_receiver};
pub use status::status_report;

use reading::{Unread, Waiting, pick, read_events, written_files};
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
        // The earliest receive time not derived yet: waiting, or in a file not read yet (whose
        // statistics give one).
        let behind = waiting
            .first()
            .map(|w| w.envelope.received_at_us)
            .into_iter()
            .chain(unread.first().map(|u| u.min_received_us))
            .filter(|&t| t > i64::MIN)
            .min();
        let lag_secs = behind
            .map(|t| ((chrono::Utc::now().timestamp_micros() - t).max(0) as f64) / 1e6)
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
        // `--once` uploads once, at its end (`finish`).
        if committed != uploaded_flush && upload_due && !once {
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
