//! `hooklake replay --rejected [--since T]`: dead letters from `rejected_events` back through the
//! normal parsing path, after a mapping fix or a raised limit.
//!
//! Every published `rejected_events` row received at or after `--since` whose id is not marked
//! replayed in the state store is parsed again with the current limits ([`event::parse_body`]
//! with its recorded URL kind, receive time and path). The events of one that parses now go
//! through the same dedup, buffer, flush and commit as any replay, and its id is recorded as
//! replayed **in the commit transaction of the flush that writes them**, so a dead letter is
//! replayed by exactly one committed flush: a second run, or a run after a crash, finds it
//! marked and skips it. One that still fails stays unmarked and is reported with its reason; a
//! body kept truncated cannot be replayed. Invariant: the `rejected_events` files are only read;
//! rows are never removed (the mark is what changes).

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::event::{self, BodyLimits, EventType};
use crate::pipeline::Pipeline;
use crate::rejected::{Meta, Rejection};
use crate::replay::{ReplayError, Summary, flush};
use crate::state::id_bytes;

/// What a `replay --rejected` found and did.
#[derive(Debug, Default)]
pub struct RejectedSummary {
    /// Dead letters at or after `--since`.
    pub found: usize,
    /// Skipped: an earlier run already replayed them.
    pub already_replayed: usize,
    /// Replayed now: their events were written (or were duplicates) and they are marked.
    pub replayed: usize,
    /// Events read, duplicates, still-failing dead letters, rows and files, as for any replay.
    pub summary: Summary,
}

impl fmt::Display for RejectedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dead letters found: {}", self.found)?;
        writeln!(f, "already replayed: {}", self.already_replayed)?;
        writeln!(f, "replayed now: {}", self.replayed)?;
        writeln!(f, "still failing: {}", self.summary.rejected.len())?;
        write!(f, "{}", self.summary)
    }
}

/// Parses `--since`: an RFC 3339 time, or a date (its midnight, UTC). Returns microseconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| {
            d.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros()
        })
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

/// Replays the dead letters of `data_dir` into `pipeline` (see the module docs).
pub async fn replay_rejected(
    pipeline: Arc<Pipeline>,
    data_dir: &Path,
    since_us: Option<i64>,
    limits: BodyLimits,
    max_body_bytes: usize,
) -> Result<RejectedSummary, ReplayError> {
    let mut letters = read_rejected(data_dir)?;
    letters.retain(|r| since_us.is_none_or(|s| r.received_at_us >= s));
    let ids: Vec<[u8; 16]> = letters.iter().map(|r| id_bytes(&r.id())).collect();
    let done = pipeline.replayed(&ids)?;
    let mut out = RejectedSummary {
        found: letters.len(),
        ..Default::default()
    };
    let progress = indicatif::ProgressBar::new(letters.len() as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for ((letter, id), done) in letters.iter().zip(ids).zip(done) {
        progress.inc(1);
        if done {
            out.already_replayed += 1;
            continue;
        }
        out.summary.bodies += 1;
        let events = if letter.meta.body_truncated {
            Err(format!(
                "the body was kept truncated ({} of {} bytes; see rejected_body_max_bytes): it cannot be replayed",
                letter.body.len(),
                letter
                    .meta
                    .body_bytes
                    .map_or("more".to_string(), |n| n.to_string())
            ))
        } else if letter.body.len() > max_body_bytes {
            Err(crate::ingest::ApiError::TooLarge(max_body_bytes).to_string())
        } else {
            event::parse_body(
                &letter.body,
                letter.meta.url_kind,
                letter.received_at_us,
                &letter.meta.source_path,
                limits,
            )
            .map_err(|e| e.to_string())
        };
        match events {
            Ok(events) => {
                for e in &events {
                    *out.summary
                        .by_type
                        .entry(e.event_type.as_str())
                        .or_default() += 1;
                }
                let outcome = pipeline.accept_replayed(events, id)?;
                out.summary.duplicates += outcome.duplicates.len();
                out.replayed += 1;
                if outcome.flush_due {
                    flush(&pipeline, &mut out.summary).await?;
                }
            }
            Err(reason) => out.summary.rejected.push(crate::replay::Rejection {
                file: "rejected_events".into(),
                place: format!("{} ({})", letter.id(), received(letter.received_at_us)),
                reason,
            }),
        }
    }
    flush(&pipeline, &mut out.summary).await?;
    progress.finish_and_clear();
    Ok(out)
}

fn received(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Every dead letter of every published `rejected_events` file, once per id, oldest first.
pub fn read_rejected(data_dir: &Path) -> Result<Vec<Rejection>, ReplayError> {
    let read_err = |path: &Path, message: String| ReplayError::Read {
        file: path.display().to_string(),
        source: std::io::Error::other(message),
    };
    let files = crate::sink::published_files(data_dir, "rejected_events")
        .map_err(|e| read_err(&data_dir.join("rejected_events"), e.to_string()))?;
    let mut letters = Vec::new();
    for path in files {
        let file = File::open(&path).map_err(|e| read_err(&path, e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| read_err(&path, e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| read_err(&path, e.to_string()))?;
            rows(&batch, &mut letters).map_err(|e| read_err(&path, e))?;
        }
    }
    letters.sort_by_key(|r| r.received_at_us);
    let mut seen = HashSet::new();
    letters.retain(|r| seen.insert(r.id()));
    Ok(letters)
}

/// Appends the dead letters of one batch of `rejected_events`.
fn rows(batch: &RecordBatch, out: &mut Vec<Rejection>) -> Result<(), String> {
    fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| format!("rejected_events has no readable column {name}"))
    }
    let received = col::<TimestampMicrosecondArray>(batch, "received_at")?;
    let status = col::<Int64Array>(batch, "status")?;
    let reason = col::<StringArray>(batch, "reason")?;
    let error = col::<StringArray>(batch, "error")?;
    let path = col::<StringArray>(batch, "source_path")?;
    let kind = col::<StringArray>(batch, "url_kind")?;
    let headers = col::<StringArray>(batch, "headers")?;
    let body = col::<BinaryArray>(batch, "body")?;
    let truncated = col::<BooleanArray>(batch, "body_truncated")?;
    let body_bytes = col::<Int64Array>(batch, "body_bytes")?;
    for i in 0..batch.num_rows() {
        let headers: Vec<(String, String)> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(headers.value(i))
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                .collect();
        out.push(Rejection {
            received_at_us: received.value(i),
            meta: Meta {
                status: u16::try_from(status.value(i)).unwrap_or(400),
                reason: reason.value(i).to_string(),
                error: error.value(i).to_string(),
                source_path: path.value(i).to_string(),
                url_kind: (!kind.is_null(i))
                    .then(|| EventType::from_name(kind.value(i)))
                    .flatten()
                    .filter(|t| *t != EventType::Unknown),
                headers,
                body_bytes: (!body_bytes.is_null(i)).then(|| body_bytes.value(i).max(0) as u64),
                body_truncated: truncated.value(i),
            },
            body: body.value(i).to_vec(),
            seq: 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_date() {
        assert_eq!(
            parse_since("2026-03-04"),
            parse_since("2026-03-04T00:00:00Z")
        );
        assert_eq!(
            parse_since("2026-03-04T02:00:00+02:00").unwrap(),
            parse_since("2026-03-04").unwrap()
        );
        assert!(parse_since("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
