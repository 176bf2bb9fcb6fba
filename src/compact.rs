//! Compaction: merges the small files of a closed partition into few large ones.
//!
//! A partition is closed once its day is over in the partition time zone, plus a grace period
//! for late events. Its live files (in its table's Delta log) of committed flushes are read,
//! concatenated, sorted by the table's sort key, cleared of rows written twice (the same
//! `event_id`, and `position` or `attribute` in tables with several rows per event), and written
//! as `compact-<id>-<k>.parquet` files of about `target_file_bytes`. The protocol, crash-safe at
//! every step:
//!
//! 1. Write every output under a hidden temporary name and fsync it.
//! 2. Record the intent (partition, inputs, outputs) in the state store.
//! 3. Rename the outputs to their final names; fsync the partition directory.
//! 4. One commit to the table's Delta log: `remove` the inputs, `add` the outputs, with
//!    `dataChange: false`. If another commit removed an input meanwhile (`Clash`), the outputs
//!    are deleted and the partition waits for the next pass.
//! 5. Forget the intent. The inputs stay in place until a vacuum pass deletes them, once
//!    `vacuum_retention_secs` have passed since the commit.
//!
//! [`recover`] (run at start) forgets an intent whose outputs are live in the log, and deletes
//! the outputs of one whose are not (the inputs are still live). A Delta reader sees the inputs
//! or the outputs, never both; a plain Parquet glob sees both from step 3 until the vacuum (the
//! queries in `queries/` remove repeated keys). A late event for a compacted partition lands in
//! a new small file, merged by the next pass.
//! A remote lake's partitions are downloaded to the staging directory first, and each output
//! is uploaded before the commit that names it (`Pipeline::compact`); the staged copies are
//! deleted after the pass, and an output uploaded for a commit that did not happen is deleted
//! with the other untracked uploads at the next start.
//! Invariant: compaction never deletes an input (vacuum does, after the retention), deletes an
//! output only when the log does not hold it, and never touches a file of a flush that is not
//! committed (it merges live files of committed flushes and of compactions only).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::DataType;
use chrono::{Duration, FixedOffset, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::flatten::table::Table;
use crate::flatten::{
    AttributeChangeRow, CallEventRow, CallOutcomeRow, ContactAnswerRow, ContactEventRow,
    LeadScoreRow, RawEventRow, RejectedEventRow, StatusTransitionRow, TrackingParamRow,
    TriggerDeliveryRow,
};
use crate::lake::{CommitOutcome, DataFile, LakeError};
use crate::sink::{FileKind, Sink, compacted_name, flush_seq_of, fsync_dir, is_published};
use crate::state::{Compaction, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// Commits a partition's compaction to its table's log: `(table, date, inputs, outputs)`.
pub type CommitCompaction<'a> =
    dyn Fn(&str, &str, &[String], Vec<DataFile>) -> Result<CommitOutcome, LakeError> + 'a;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CompactError + use<> {
    let path = path.to_path_buf();
    move |e| CompactError::Io {
        op,
        path,
        message: e.to_string(),
    }
}

/// Which partitions to compact.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this table.
    pub table: Option<String>,
    /// Only this date.
    pub date: Option<NaiveDate>,
    /// Only dates before this one.
    pub before: Option<NaiveDate>,
    /// Tables another process flushes (the deriver compacting a shared lake's `raw_events`):
    /// every live file of theirs is committed.
    pub foreign: Vec<&'static str>,
}

/// One partition compacted.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    pub partition: String,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: usize,
    /// Rows written twice (the same key, [`Table::key_columns`]) removed.
    pub duplicates_removed: usize,
}

/// Finishes or drops compactions a crash interrupted: `live` holds the live files of each
/// partition (`<table>/date=<date>`) in the Delta logs.
pub fn recover(
    store: &Store,
    root: &Path,
    live: &BTreeMap<String, BTreeSet<String>>,
) -> Result<usize, CompactError> {
    let unfinished = store.unfinished_compactions()?;
    for (id, c) in &unfinished {
        let dir = root.join(&c.partition);
        let in_log = live
            .get(&c.partition)
            .is_some_and(|files| c.outputs.iter().all(|o| files.contains(o)));
        if in_log {
            tracing::warn!(partition = %c.partition, "a compaction interrupted after its commit is done");
        } else {
            // Outputs the log never took would duplicate the inputs for a glob reader.
            for output in &c.outputs {
                let path = dir.join(output);
                if path.exists() {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
            }
            if dir.exists() {
                fsync_dir(&dir)?;
            }
            tracing::warn!(partition = %c.partition, "dropped a compaction interrupted before its commit");
        }
        store.end_compaction(*id)?;
    }
    Ok(unfinished.len())
}

/// The last date whose partition is closed at `now`: its day is over in `offset`, plus `grace`.
pub fn last_closed_date(
    now: chrono::DateTime<Utc>,
    offset: FixedOffset,
    grace: Duration,
) -> NaiveDate {
    (now - grace).with_timezone(&offset).date_naive() - Duration::days(1)
}

/// What a compaction pass did: the partitions it compacted, and those it could not.
#[derive(Debug, Default, Serialize)]
pub struct Pass {
    pub compacted: Vec<Compacted>,
    /// Files removed by earlier compactions that the vacuum after this pass deleted.
    pub vacuumed: usize,
    /// A partition that failed (an unreadable file, say) is skipped: the pass goes on with the
    /// others, and the next pass tries it again.
    pub failed: Vec<Failed>,
}

/// A partition a pass could not compact, and why.
#[derive(Debug, Serialize)]
pub struct Failed {
    pub partition: String,
    pub error: String,
}

/// Whether a pass compacts `partition` (`<table>/date=<date>`, with its live `files`): it is
/// selected, closed (at most `last_closed`), and has at least two published files of
/// compactions or of flushes up to `committed`.
pub fn wanted(
    partition: &str,
    files: &BTreeSet<String>,
    selection: &Selection,
    last_closed: NaiveDate,
    committed: u64,
) -> bool {
    let Some((table, date)) = partition.split_once("/date=") else {
        return false;
    };
    let Ok(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
        return false;
    };
    let committed = match selection.foreign.contains(&table) {
        true => u64::MAX,
        false => committed,
    };
    selected(table, date, selection, last_closed) && committed_inputs(files, committed).len() >= 2
}

/// Whether a pass takes the partition `date` of `table`: selected, and closed (at most
/// `last_closed`).
fn selected(table: &str, date: NaiveDate, selection: &Selection, last_closed: NaiveDate) -> bool {
    selection.table.as_deref().is_none_or(|t| t == table)
        && date <= last_closed
        && selection.date.is_none_or(|d| d == date)
        && selection.before.is_none_or(|b| date < b)
}

/// The files of a partition a compaction may merge, sorted: published ones of compactions and
/// of flushes up to `committed`. A flush commits to the log before the state store: a file of a
/// flush the state store has not committed yet may still be reverted, and its events written
/// again; it waits for a later pass.
fn committed_inputs(files: &BTreeSet<String>, committed: u64) -> Vec<String> {
    files
        .iter()
        .filter(|n| is_published(n) && flush_seq_of(n).is_none_or(|seq| seq <= committed))
        .cloned()
        .collect()
}

/// Compacts every selected partition with at least two live files (`live`, by
/// `<table>/date=<date>`), up to `last_closed` included; `commit` commits each to its log.
pub fn compact(
    sink: &Sink,
    store: &Store,
    selection: &Selection,
    last_closed: NaiveDate,
    target_file_bytes: u64,
    live: &BTreeMap<String, BTreeSet<String>>,
    commit: &CommitCompaction,
) -> Pass {
    let mut pass = Pass::default();
    for table in crate::flatten::TABLE_NAMES {
        if selection.table.as_deref().is_some_and(|t| t != table) {
            continue;
        }
        let prefix = format!("{table}/date=");
        let partitions: Vec<(NaiveDate, &BTreeSet<String>)> = live
            .iter()
            .filter_map(|(partition, files)| {
                let date = partition.strip_prefix(&prefix)?;
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
                Some((date, files))
            })
            .collect();
        for (date, files) in partitions {
            if !selected(table, date, selection, last_closed) {
                continue;
            }
            let dir = sink.root().join(table).join(format!("date={date}"));
            let target = Target {
                dir: &dir,
                date: &date.to_string(),
                live: files,
                target_file_bytes,
                commit,
                foreign: selection.foreign.contains(&table),
            };
            let partition = format!("{table}/date={date}");
            let result = match table {
                "contact_events" => {
                    compact_partition::<ContactEventRow>(sink, store, &partition, &target)
                }
                "tracking_params" => {
                    compact_partition::<TrackingParamRow>(sink, store, &partition, &target)
                }
                "contact_answers" => {
                    compact_partition::<ContactAnswerRow>(sink, store, &partition, &target)
                }
                "call_events" => {
                    compact_partition::<CallEventRow>(sink, store, &partition, &target)
                }
                "call_outcomes" => {
                    compact_partition::<CallOutcomeRow>(sink, store, &partition, &target)
                }
                "raw_events" => compact_partition::<RawEventRow>(sink, store, &partition, &target),
                "attribute_changes" => {
                    compact_partition::<AttributeChangeRow>(sink, store, &partition, &target)
                }
                "lead_scores" => {
                    compact_partition::<LeadScoreRow>(sink, store, &partition, &target)
                }
                "rejected_events" => {
                    compact_partition::<RejectedEventRow>(sink, store, &partition, &target)
                }
                "trigger_deliveries" => {
                    compact_partition::<TriggerDeliveryRow>(sink, store, &partition, &target)
                }
                _ => compact_partition::<StatusTransitionRow>(sink, store, &partition, &target),
            };
            match result {
                Ok(Some(c)) => {
                    tracing::info!(
                        partition = %c.partition,
                        files_before = c.files_before,
                        files_after = c.files_after,
                        rows = c.rows,
                        "compacted"
                    );
                    pass.compacted.push(c);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(partition = %partition, error = %e, "partition not compacted; the next pass tries again");
                    pass.failed.push(Failed {
                        partition,
                        error: e.to_string(),
                    });
                }
            }
        }
    }
    pass
}

/// Where and what one partition's compaction merges.
struct Target<'a> {
    /// The partition's directory.
    dir: &'a Path,
    /// Its date, `YYYY-MM-DD`.
    date: &'a str,
    /// Its live files in the table's log.
    live: &'a BTreeSet<String>,
    target_file_bytes: u64,
    commit: &'a CommitCompaction<'a>,
    /// Another process flushes this table: every live file is committed.
    foreign: bool,
}

/// Compacts one partition of table `T`; `None` when there was nothing to merge.
fn compact_partition<T: Table>(
    sink: &Sink,
    store: &Store,
    partition: &str,
    target: &Target,
) -> Result<Option<Compacted>, CompactError> {
    let Target {
        dir,
        date,
        live,
        target_file_bytes,
        commit,
        foreign,
    } = *target;
    let committed = match foreign {
        true => u64::MAX,
        false => store.committed()?.flush_seq,
    };
    let inputs = committed_inputs(live, committed);
    if inputs.len() < 2 {
        return Ok(None);
    }
    let schema = T::schema();
    let mut batches = Vec::new();
    let mut input_bytes = 0;
    for name in &inputs {
        let path = dir.join(name);
        input_bytes += fs::metadata(&path).map_err(io_err("stat", &path))?.len();
        let file = File::open(&path).map_err(io_err("open", &path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| CompactError::Io {
                op: "read",
                path: path.clone(),
                message: e.to_string(),
            })?;
        for batch in reader {
            let batch = batch.map_err(|e| CompactError::Io {
                op: "read",
                path: path.clone(),
                message: e.to_string(),
            })?;
            if batch.schema().fields() != schema.fields() {
                // Written by a version with another schema: `hooklake rebuild` brings it up to date.
                tracing::warn!(partition, file = %name, "schema differs from the current one; partition not compacted");
                return Ok(None);
            }
            batches.push(batch);
        }
    }
    let all =
        arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| CompactError::Io {
            op: "merge",
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    let order = sorted_unique(&all, T::sort_columns(), T::key_columns());
    let duplicates_removed = all.num_rows() - order.len();
    let merged =
        arrow_select::take::take_record_batch(&all, &UInt32Array::from(order)).map_err(|e| {
            CompactError::Io {
                op: "merge",
                path: dir.to_path_buf(),
                message: e.to_string(),
            }
        })?;

    // Split into files of about the target size, judging by the inputs' bytes per row.
    let rows = merged.num_rows();
    if rows == 0 {
        return Ok(None);
    }
    let per_file = if input_bytes == 0 || rows == 0 {
        rows.max(1)
    } else {
        ((target_file_bytes as f64 / (input_bytes as f64 / rows as f64)) as usize).max(1)
    };
    let id = store.next_compaction_id()?;
    let row_group = sink.settings().row_group_rows;
    let mut outputs = Vec::new();
    for (k, start) in (0..rows).step_by(per_file).enumerate() {
        let name = compacted_name(id, k);
        let tmp = dir.join(format!(".{name}.tmp"));
        let part = merged.slice(start, per_file.min(rows - start));
        let chunks: Vec<RecordBatch> = (0..part.num_rows())
            .step_by(row_group)
            .map(|s| part.slice(s, row_group.min(part.num_rows() - s)))
            .collect();
        sink.write_file::<T>(&tmp, chunks.into_iter(), FileKind::Compacted)?;
        outputs.push(name);
    }
    let intent = Compaction {
        partition: partition.to_string(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
    };
    store.begin_compaction(id, &intent)?;
    crate::failpoint::hit("compact-after-intent");
    for name in &outputs {
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::rename(&tmp, dir.join(name)).map_err(io_err("rename", &tmp))?;
    }
    fsync_dir(dir)?;
    crate::failpoint::hit("compact-after-publish");
    let added = outputs
        .iter()
        .map(|name| DataFile::from_local(&dir.join(name), date, name))
        .collect::<Result<Vec<_>, LakeError>>();
    match added.and_then(|added| commit(T::NAME, date, &inputs, added)) {
        Ok(_) => {}
        Err(e) => {
            // Not in the log (a clash is checked before anything is written; any other error
            // leaves the log as it was or holding the whole commit, which recovery tells).
            if matches!(e, LakeError::Clash { .. }) {
                for name in &outputs {
                    let path = dir.join(name);
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                fsync_dir(dir)?;
                store.end_compaction(id)?;
            }
            return Err(e.into());
        }
    }
    crate::failpoint::hit("compact-after-commit");
    store.end_compaction(id)?;
    Ok(Some(Compacted {
        partition: partition.to_string(),
        files_before: inputs.len(),
        files_after: outputs.len(),
        rows,
        duplicates_removed,
    }))
}

/// Row indices sorted by `sort` (nulls first), keeping the first row of each `key`: the
/// columns that tell one row from another ([`Table::key_columns`]: `event_id`, and in tables
/// with several rows per event `position` or `attribute` too). Keying on `event_id` alone
/// would keep one parameter, answer or change per event.
fn sorted_unique(batch: &RecordBatch, sort: &[&str], key: &[&str]) -> Vec<u32> {
    let columns = |names: &[&str]| -> Vec<&ArrayRef> {
        names
            .iter()
            .filter_map(|k| batch.column_by_name(k))
            .collect()
    };
    let sort = columns(sort);
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by(|&a, &b| {
        sort.iter()
            .map(|c| compare(c, a as usize, b as usize))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let key_names = key;
    let key = columns(key_names);
    let keyable = |c: &&ArrayRef| matches!(c.data_type(), DataType::Utf8 | DataType::Int64);
    if key.is_empty() || key.len() != key_names.len() || !key.iter().all(keyable) {
        // Without the whole key, rows that differ could look the same: keep every row.
        return order;
    }
    let mut seen = HashSet::new();
    order.retain(|&i| {
        let values: Vec<KeyValue> = key.iter().map(|c| key_value(c, i as usize)).collect();
        seen.insert(values)
    });
    order
}

/// One row's value in a key column.
#[derive(PartialEq, Eq, Hash)]
enum KeyValue<'a> {
    Null,
    Text(&'a str),
    Int(i64),
}

fn key_value(column: &ArrayRef, i: usize) -> KeyValue<'_> {
    if column.is_null(i) {
        return KeyValue::Null;
    }
    let any = column.as_any();
    if let Some(c) = any.downcast_ref::<StringArray>() {
        KeyValue::Text(c.value(i))
    } else if let Some(c) = any.downcast_ref::<Int64Array>() {
        KeyValue::Int(c.value(i))
    } else {
        // Not reached: `sorted_unique` keys only on text and integer columns (a test checks
        // every table's key is of those types).
        KeyValue::Null
    }
}

/// Compares two rows of a sort-key column (text, integer or timestamp; nulls first).
fn compare(column: &ArrayRef, a: usize, b: usize) -> std::cmp::Ordering {
    match (column.is_null(a), column.is_null(b)) {
        (true, true) => return std::cmp::Ordering::Equal,
        (true, false) => return std::cmp::Ordering::Less,
        (false, true) => return std::cmp::Ordering::Greater,
        _ => {}
    }
    let any = column.as_any();
    match column.data_type() {
        DataType::Utf8 => {
            let c = any.downcast_ref::<StringArray>().expect("utf8");
            c.value(a).cmp(c.value(b))
        }
        DataType::Int64 => {
            let c = any.downcast_ref::<Int64Array>().expect("int64");
            c.value(a).cmp(&c.value(b))
        }
        DataType::Timestamp(_, _) => {
            let c = any
                .downcast_ref::<TimestampMicrosecondArray>()
                .expect("timestamp");
            c.value(a).cmp(&c.value(b))
        }
        // Sort keys are declared on text, integer and timestamp columns only.
        _ => std::cmp::Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::table::{Micros, Text};

    fn param(event: &str, contact: i64, position: i64, value: &str) -> TrackingParamRow {
        TrackingParamRow {
            event_id: Text::from(event),
            event_type: Text::from("contact_updated"),
            received_at: Micros(1),
            event_time: Micros(10),
            contact_id: Some(contact),
            position,
            key: Some(Text::from("fbclid")),
            value: Some(Text::from(value)),
        }
    }

    #[test]
    fn rows_of_one_event_are_kept_and_rows_written_twice_are_not() {
        // Event `a` has two parameters, each written twice (two flushes); `b` has one.
        let rows = vec![
            param("b", 2, 1, "x"),
            param("a", 1, 2, "q"),
            param("a", 1, 1, "p"),
            param("a", 1, 2, "q"),
            param("a", 1, 1, "p"),
        ];
        let batch = TrackingParamRow::to_batch(&rows);
        let order = sorted_unique(
            &batch,
            TrackingParamRow::sort_columns(),
            TrackingParamRow::key_columns(),
        );
        let kept: Vec<(&str, i64)> = order
            .iter()
            .map(|&i| {
                (
                    rows[i as usize].event_id.as_str(),
                    rows[i as usize].position,
                )
            })
            .collect();
        assert_eq!(kept, [("a", 1), ("a", 2), ("b", 1)]);
    }

    #[test]
    fn every_table_is_keyed_by_event_id_and_what_tells_its_rows_apart() {
        fn key_of<T: Table>() -> (&'static str, &'static [&'static str], Vec<DataType>) {
            let schema = T::schema();
            let types = T::key_columns()
                .iter()
                .map(|c| schema.field_with_name(c).expect(c).data_type().clone())
                .collect();
            (T::NAME, T::key_columns(), types)
        }
        let keys = [
            key_of::<ContactEventRow>(),
            key_of::<TrackingParamRow>(),
            key_of::<ContactAnswerRow>(),
            key_of::<CallEventRow>(),
            key_of::<CallOutcomeRow>(),
            key_of::<RawEventRow>(),
            key_of::<AttributeChangeRow>(),
            key_of::<StatusTransitionRow>(),
            key_of::<RejectedEventRow>(),
            key_of::<LeadScoreRow>(),
            key_of::<TriggerDeliveryRow>(),
        ];
        assert_eq!(keys.len(), crate::flatten::TABLE_NAMES.len());
        // The query views remove rows written twice by the same key.
        let views = include_str!("../queries/views.sql");
        for (table, key, types) in keys {
            let expected: &[&str] = match table {
                // Attempts, not events: one row per attempt at a fact.
                "trigger_deliveries" => &["trigger", "webhook_id", "attempt"],
                "tracking_params" | "contact_answers" => &["event_id", "position"],
                "attribute_changes" => &["event_id", "attribute"],
                "lead_scores" => &["event_id", "revision"],
                _ => &["event_id"],
            };
            assert_eq!(key, expected, "{table}");
            if table != "rejected_events" && table != "trigger_deliveries" {
                let view = format!(
                    "SELECT DISTINCT ON ({}) * FROM stored_{table};",
                    key.join(", ")
                );
                assert!(views.contains(&view), "{table}: views.sql lacks {view}");
            }
            for t in types {
                assert!(
                    matches!(t, DataType::Utf8 | DataType::Int64),
                    "{table}: {t}"
                );
            }
        }
    }

    #[test]
    fn a_partition_closes_when_its_day_and_the_grace_period_are_over() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
        };
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let utc = FixedOffset::east_opt(0).unwrap();
        let grace = Duration::hours(2);
        let minus5 = FixedOffset::west_opt(5 * 3600).unwrap();
        let cases = [
            // 1 a.m. on the 5th: the 4th ended an hour ago, inside the grace period.
            ("2026-03-05T01:00:00Z", utc, "2026-03-03"),
            ("2026-03-05T02:00:00Z", utc, "2026-03-04"),
            // In UTC-5 the 4th ends at 05:00 UTC on the 5th, closing at 07:00 UTC.
            ("2026-03-05T06:59:59Z", minus5, "2026-03-03"),
            ("2026-03-05T07:00:00Z", minus5, "2026-03-04"),
        ];
        for (now, offset, closed) in cases {
            assert_eq!(
                last_closed_date(at(now), offset, grace),
                date(closed),
                "{now}"
            );
        }
    }
}
