//! What each receiver of a shared lake reports to the deriver: one object per receiver
//! (`_hooklake/receivers/<instance>.json`), written after its flushes and at least every few
//! seconds, with its watermark: the receive time below which every event it will ever write
//! is in `raw_events` already. The deriver derives only events below the lowest watermark of
//! the receivers that reported lately, in receive-time order, so that change tracking sees
//! them in the order one process would have.
//! Invariant: a report is written only after the flush whose watermark it carries committed;
//! a receiver that restarts keeps its last watermark until its first flush.

use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lake::{Lake, LakeError, store_error};
use crate::pipeline::Pipeline;

/// The directory of the reports, inside the lake.
pub const REPORTS_DIR: &str = "_hooklake/receivers";

/// One receiver's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The receiver's instance id (its data directory's).
    pub instance: String,
    /// Its host name and listen address, for `status`.
    pub host: String,
    pub listen: String,
    /// Receive time (microseconds) below which every event it will write is written.
    pub watermark_us: i64,
    /// When the report was written, milliseconds since the epoch.
    pub reported_at_ms: i64,
    /// Its last committed flush's number.
    pub flush_seq: u64,
    /// Events buffered, not yet written.
    pub buffered_events: u64,
    /// Set by a receiver that stopped cleanly (everything it acknowledged is written).
    pub stopped: bool,
}

fn report_path(lake: &Lake, instance: &str) -> object_store::path::Path {
    lake.path(&format!("{REPORTS_DIR}/{instance}.json"))
}

/// Writes `report` (replacing the receiver's previous one).
pub async fn publish(lake: &Lake, report: &Report) -> Result<(), LakeError> {
    let path = report_path(lake, &report.instance);
    let body = serde_json::to_vec(report).expect("a report serializes");
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| store_error("put", &path, e))?;
    Ok(())
}

/// The report of receiver `instance`, if it has one.
pub async fn read(lake: &Lake, instance: &str) -> Result<Option<Report>, LakeError> {
    let path = report_path(lake, instance);
    match lake.store().get(&path).await {
        Ok(found) => {
            let bytes = found
                .bytes()
                .await
                .map_err(|e| store_error("get", &path, e))?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error("get", &path, e)),
    }
}

/// Every receiver's report (an unreadable one is skipped with a warning).
pub async fn list(lake: &Lake) -> Result<Vec<Report>, LakeError> {
    use futures::TryStreamExt;
    let prefix = lake.path(REPORTS_DIR);
    let listed: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error("list", &prefix, e))?;
    let mut reports = Vec::with_capacity(listed.len());
    for meta in listed {
        let path = meta.location;
        let bytes = match lake.store().get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| store_error("get", &path, e))?,
            // Deleted since the listing.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store_error("get", &path, e)),
        };
        match serde_json::from_slice(&bytes) {
            Ok(report) => reports.push(report),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "skipping an unreadable receiver report")
            }
        }
    }
    reports.sort_by(|a: &Report, b| a.instance.cmp(&b.instance));
    Ok(reports)
}

/// The receivers the deriver waits for: those running that reported within `timeout_ms`.
pub fn active(reports: &[Report], now_ms: i64, timeout_ms: i64) -> Vec<&Report> {
    reports
        .iter()
        .filter(|r| !r.stopped && now_ms - r.reported_at_ms <= timeout_ms)
        .collect()
}

/// The receive time below which the deriver may derive: the lowest watermark of the active
/// receivers (`i64::MAX` when none is active: everything in `raw_events` is final).
pub fn watermark(active: &[&Report]) -> i64 {
    active
        .iter()
        .map(|r| r.watermark_us)
        .min()
        .unwrap_or(i64::MAX)
}

/// A receiver's reports: one before it listens (its last watermark, or now), then after each
/// flush and at least every few seconds, and a last one marked stopped after its final
/// flush (`stopped`).
pub async fn report_as_receiver(
    pipeline: &Arc<Pipeline>,
    config: &Config,
    stopped: bool,
) -> Result<(), LakeError> {
    let lake = Lake::open(&config.lake(), &config.store_options())?;
    let instance = crate::pipeline::instance_id_of(&pipeline.data_dir().join("_hooklake"))
        .map_err(|e| LakeError::Local {
            path: pipeline.data_dir().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let previous = read(&lake, &instance).await?;
    let watermark_us = match (pipeline.watermark_us(), previous) {
        (Some(mark), _) => mark,
        // Not flushed yet in this process: the last report's watermark still holds (what
        // the log recovered is above it), else now (nothing was received before).
        (None, Some(previous)) => previous.watermark_us,
        (None, None) => chrono::Utc::now().timestamp_micros(),
    };
    let now = chrono::Utc::now();
    pipeline
        .metrics()
        .set_receiver_watermark_age(((now.timestamp_micros() - watermark_us).max(0) as f64) / 1e6);
    let gauges = pipeline.gauges(true);
    publish(
        &lake,
        &Report {
            instance,
            host: super::host_name(),
            listen: config.listen.clone(),
            watermark_us,
            reported_at_ms: now.timestamp_millis(),
            flush_seq: pipeline.store().committed().map_or(0, |c| c.flush_seq),
            buffered_events: gauges.buffer_events as u64,
            stopped,
        },
    )
    .await
}

/// Reports every second while the receiver runs (the deriver waits for its watermark).
pub async fn receiver_reports(pipeline: Arc<Pipeline>, config: Config, stop: CancellationToken) {
    loop {
        if let Err(e) = report_as_receiver(&pipeline, &config, false).await {
            tracing::warn!(error = %e, "cannot write this receiver's report to the lake");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(instance: &str, watermark_us: i64, reported_at_ms: i64, stopped: bool) -> Report {
        Report {
            instance: instance.into(),
            host: "h".into(),
            listen: "l".into(),
            watermark_us,
            reported_at_ms,
            flush_seq: 0,
            buffered_events: 0,
            stopped,
        }
    }

    #[test]
    fn the_watermark_waits_for_running_receivers_that_reported_lately() {
        let reports = [
            report("a", 5_000, 10_000, false),
            report("b", 3_000, 10_000, false),
            // Silent for longer than the timeout: no longer waited for.
            report("c", 1_000, 1_000, false),
            // Stopped cleanly: everything it took is written.
            report("d", 2_000, 10_000, true),
        ];
        let active = active(&reports, 12_000, 5_000);
        let names: Vec<&str> = active.iter().map(|r| r.instance.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(watermark(&active), 3_000);
        assert_eq!(watermark(&[]), i64::MAX);
    }
}
