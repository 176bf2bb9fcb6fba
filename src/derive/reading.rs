//! What a pass of the deriver reads: the files each `raw_events` version added, with their
//! row counts and earliest receive times from the `add` statistics; the choice of files for a
//! pass (earliest first, up to a budget of rows); and their events, downloaded and parsed.
//! Invariant: every event of a file a pass did not read was received at or after the bound
//! [`pick`] returns, so a pass derives nothing a later file should have come before.

use std::path::Path;

use anyhow::Context;
use object_store::ObjectStoreExt;

use crate::event::{Envelope, EventType};
use crate::lake::delta::Action;
use crate::lake::{Lake, store_error};

/// An event read from `raw_events`, waiting for the watermark.
pub(super) struct Waiting {
    pub version: i64,
    pub envelope: Envelope,
}

/// A `raw_events` file the deriver has seen in the log but not read yet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Unread {
    pub version: i64,
    pub path: String,
    /// A lower bound of its rows' receive times (its `add` statistics; the smallest possible
    /// value without them).
    pub min_received_us: i64,
    /// Its rows (statistics), or 1 without them.
    pub rows: u64,
}

/// Picks the files to read in this pass: the unread ones in order of their earliest receive
/// time, up to `budget` rows (at least one file). Returns them and the receive time below
/// which every event still unread lies at or above (`i64::MAX` when none is left).
pub(super) fn pick(unread: &mut Vec<Unread>, budget: u64) -> (Vec<Unread>, i64) {
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

/// The files a version of `raw_events` added with new rows (flushes; not compactions), with
/// what their statistics say of them.
pub(super) fn written_files(version: i64, actions: &[Action]) -> Vec<Unread> {
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
pub(super) async fn read_events(
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
