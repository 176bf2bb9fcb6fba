//! `hooklake status --lake URL`: a shared lake's receivers (from their reports), the deriver
//! holding the lease, and how far the last uploaded deriver state is behind `raw_events`.
//! Invariant: reads the lake, never writes it.

use crate::config::Config;
use crate::lake::Lake;

use super::lease::{self, Lease};
use super::receivers;
use super::state::STATE_OBJECT;

/// `hooklake status --lake URL`: the receivers that reported, the lease's holder, and how far
/// the deriver is behind `raw_events`.
pub async fn status_report(config: &Config) -> anyhow::Result<String> {
    use std::fmt::Write;
    let lake = Lake::open(&config.lake(), &config.store_options())?;
    let mut out = String::new();
    let now = chrono::Utc::now();
    let reports = receivers::list(&lake).await?;
    let timeout_ms = (config.receiver_timeout_secs * 1000) as i64;
    let active = receivers::active(&reports, now.timestamp_millis(), timeout_ms);
    writeln!(out, "lake: {}", config.lake())?;
    writeln!(
        out,
        "receivers: {} reporting ({} known)",
        active.len(),
        reports.len()
    )?;
    for r in &reports {
        let state = if r.stopped {
            "stopped"
        } else if active.iter().any(|a| a.instance == r.instance) {
            "running"
        } else {
            "silent"
        };
        writeln!(
            out,
            "  {} {} on {} ({}): reported {:.1} s ago, watermark {:.1} s ago, last flush {}, {} buffered",
            r.instance,
            state,
            r.host,
            r.listen,
            (now.timestamp_millis() - r.reported_at_ms) as f64 / 1e3,
            (now.timestamp_micros() - r.watermark_us) as f64 / 1e6,
            r.flush_seq,
            r.buffered_events
        )?;
    }
    let store = lake.store().clone();
    match Lease::read(&store, &lake.path(lease::LEASE_OBJECT)).await? {
        None => writeln!(out, "deriver: none has held the lease")?,
        Some((body, _)) => {
            let age = (now.timestamp_millis() - body.renewed_at_ms) as f64 / 1e3;
            let state = if body.released {
                "released"
            } else if age <= body.duration_secs as f64 {
                "held"
            } else {
                "expired"
            };
            writeln!(
                out,
                "deriver: lease {state} by {} on {}, renewed {age:.1} s ago (lasts {} s)",
                body.holder, body.host, body.duration_secs
            )?;
        }
    }
    let raw = lake.table("raw_events").snapshot().await?;
    let derived = derived_version(&lake).await?;
    match (raw.version, derived) {
        (None, _) => writeln!(out, "raw_events: no table yet")?,
        (Some(latest), Some(reached)) => writeln!(
            out,
            "raw_events: version {latest}; derived through {reached} ({} versions behind)",
            latest - reached
        )?,
        (Some(latest), None) => writeln!(
            out,
            "raw_events: version {latest}; no derived state uploaded yet"
        )?,
    }
    Ok(out)
}

/// The progress recorded in the deriver's state as last uploaded.
async fn derived_version(lake: &Lake) -> anyhow::Result<Option<i64>> {
    let key = lake.path(STATE_OBJECT);
    let Some((bytes, _)) = super::get_versioned(lake.store(), &key).await? else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.redb");
    std::fs::write(&path, &bytes)?;
    let store = crate::state::Store::open(&path)?;
    Ok(store.derived_through()?)
}
