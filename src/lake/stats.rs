//! File statistics for a Delta `add` action (`numRecords`, `minValues`, `maxValues`,
//! `nullCount`), computed from a Parquet file's footer without reading its pages.
//!
//! Invariant: a bound is written only when it holds for every row of the file: a column's
//! minimum or maximum is left out when the footer's value is inexact (truncated), absent in a
//! row group, or of a type Delta readers cannot compare (binary, nested, boolean); timestamps
//! are rounded outwards to the millisecond the format's JSON carries; a `nullCount` is written
//! only when every row group states it.

use std::cmp::Ordering;

use arrow_schema::{DataType, Schema, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// A string bound longer than this many characters is cut (a minimum) or dropped (a maximum).
pub const MAX_STRING_STAT_CHARS: usize = 32;

/// The statistics of one file, in the JSON form of the Delta protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    /// Rows in the file.
    pub num_records: i64,
    /// Smallest value of each column that has one.
    pub min_values: Map<String, Value>,
    /// Largest value of each column that has one.
    pub max_values: Map<String, Value>,
    /// Null values of each column whose count every row group states.
    pub null_count: Map<String, Value>,
}

impl FileStats {
    /// The statistics of a Parquet file from its footer, for the top-level columns of `schema`
    /// (the file's Arrow schema) named in `columns`, or for all of them when `columns` is
    /// `None`.
    pub fn from_metadata(
        metadata: &ParquetMetaData,
        schema: &Schema,
        columns: Option<&[&str]>,
    ) -> FileStats {
        let num_records = metadata.file_metadata().num_rows();
        let mut stats = FileStats {
            num_records,
            min_values: Map::new(),
            max_values: Map::new(),
            null_count: Map::new(),
        };
        let descr = metadata.file_metadata().schema_descr();
        for index in 0..descr.num_columns() {
            let path = descr.column(index).path().parts().to_vec();
            // Only top-level primitive columns have one leaf of their own name.
            let [name] = path.as_slice() else {
                continue;
            };
            if columns.is_some_and(|wanted| !wanted.contains(&name.as_str())) {
                continue;
            }
            let Ok(field) = schema.field_with_name(name) else {
                continue;
            };
            let chunks: Vec<Option<&Statistics>> = metadata
                .row_groups()
                .iter()
                .map(|rg| rg.column(index).statistics())
                .collect();
            if let Some(nulls) = chunks
                .iter()
                .map(|s| s.and_then(|s| s.null_count_opt()))
                .sum::<Option<u64>>()
            {
                stats.null_count.insert(name.clone(), json!(nulls));
            }
            let bounds: Option<Vec<(Value, Value)>> = chunks
                .iter()
                .map(|s| s.and_then(|s| bounds(s, field.data_type())))
                .collect();
            let Some(bounds) = bounds else {
                continue;
            };
            let min = bounds
                .iter()
                .map(|(min, _)| min)
                .min_by(|a, b| compare(a, b));
            let max = bounds
                .iter()
                .map(|(_, max)| max)
                .max_by(|a, b| compare(a, b));
            if let (Some(min), Some(max)) = (min, max) {
                if let Some(min) = lower_bound(min) {
                    stats.min_values.insert(name.clone(), min);
                }
                if let Some(max) = upper_bound(max) {
                    stats.max_values.insert(name.clone(), max);
                }
            }
        }
        stats
    }

    /// The statistics as the JSON text of an `add` action's `stats` field.
    pub fn to_json(&self) -> String {
        json!({
            "numRecords": self.num_records,
            "minValues": self.min_values,
            "maxValues": self.max_values,
            "nullCount": self.null_count,
        })
        .to_string()
    }
}

/// A column chunk's exact minimum and maximum as comparable JSON values, or `None` when they
/// are missing, inexact or of a type without Delta bounds. Timestamps come back as
/// microseconds (numbers), to be formatted by [`lower_bound`] and [`upper_bound`].
fn bounds(statistics: &Statistics, data_type: &DataType) -> Option<(Value, Value)> {
    if !statistics.min_is_exact() || !statistics.max_is_exact() {
        return None;
    }
    match (statistics, data_type) {
        (Statistics::Int64(s), DataType::Timestamp(unit, Some(_))) => {
            let micros = |v: i64| match unit {
                TimeUnit::Second => v.checked_mul(1_000_000),
                TimeUnit::Millisecond => v.checked_mul(1_000),
                TimeUnit::Microsecond => Some(v),
                TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
            };
            let min = micros(*s.min_opt()?)?;
            let max = micros(*s.max_opt()?)?;
            Some((json!({ "ts": min }), json!({ "ts": max })))
        }
        (Statistics::Int64(s), DataType::Int64) => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Int32(s), DataType::Int32 | DataType::Int16 | DataType::Int8) => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Int32(s), DataType::Date32) => {
            let date = |days: i32| {
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::TimeDelta::days(days.into()))
                    .map(|d| d.format("%Y-%m-%d").to_string())
            };
            Some((json!(date(*s.min_opt()?)?), json!(date(*s.max_opt()?)?)))
        }
        (Statistics::Double(s), DataType::Float64) => {
            let (min, max) = (*s.min_opt()?, *s.max_opt()?);
            (min.is_finite() && max.is_finite()).then(|| (json!(min), json!(max)))
        }
        (Statistics::Float(s), DataType::Float32) => {
            let (min, max) = (*s.min_opt()?, *s.max_opt()?);
            (min.is_finite() && max.is_finite()).then(|| (json!(min), json!(max)))
        }
        (Statistics::ByteArray(s), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let min = s.min_opt()?.as_utf8().ok()?.to_string();
            let max = s.max_opt()?.as_utf8().ok()?.to_string();
            Some((json!(min), json!(max)))
        }
        _ => None,
    }
}

/// Orders two bounds of the same column (numbers, strings, dates or timestamps).
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Object(a), Value::Object(b)) => {
            let micros = |m: &Map<String, Value>| m.get("ts").and_then(Value::as_i64);
            micros(a).cmp(&micros(b))
        }
        _ => Ordering::Equal,
    }
}

/// A minimum in Delta's JSON form: timestamps rounded down to the millisecond, strings cut to
/// their first characters (a prefix is never greater than the string).
fn lower_bound(value: &Value) -> Option<Value> {
    match value {
        Value::Object(m) => {
            let micros = m.get("ts")?.as_i64()?;
            timestamp_millis(micros.div_euclid(1000))
        }
        Value::String(s) => Some(json!(
            s.chars().take(MAX_STRING_STAT_CHARS).collect::<String>()
        )),
        other => Some(other.clone()),
    }
}

/// A maximum in Delta's JSON form: timestamps rounded up to the millisecond, strings longer
/// than the limit left out (a cut string would be smaller than the value).
fn upper_bound(value: &Value) -> Option<Value> {
    match value {
        Value::Object(m) => {
            let micros = m.get("ts")?.as_i64()?;
            timestamp_millis(micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0))
        }
        Value::String(s) if s.chars().count() > MAX_STRING_STAT_CHARS => None,
        other => Some(other.clone()),
    }
}

/// Milliseconds since the epoch as the ISO 8601 text Delta statistics use.
fn timestamp_millis(millis: i64) -> Option<Value> {
    let time = chrono::DateTime::from_timestamp_millis(millis)?;
    Some(json!(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow_schema::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// Writes the batches as one Parquet file (one row group each) and returns its stats.
    fn stats_of(batches: &[RecordBatch], columns: Option<&[&str]>) -> FileStats {
        let schema = batches[0].schema();
        let mut bytes = Vec::new();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(props)).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
            writer.flush().unwrap();
        }
        writer.close().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        FileStats::from_metadata(reader.metadata(), &schema, columns)
    }

    fn batch(
        ids: Vec<Option<&str>>,
        counts: Vec<Option<i64>>,
        times: Vec<Option<i64>>,
    ) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, true),
            Field::new("count", DataType::Int64, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(counts)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn bounds_span_row_groups_and_round_outwards() {
        let stats = stats_of(
            &[
                batch(
                    vec![Some("m"), Some("b")],
                    vec![Some(5), None],
                    vec![Some(1_500), Some(2_000)],
                ),
                batch(
                    vec![Some("z"), None],
                    vec![Some(-3), Some(9)],
                    vec![Some(999), None],
                ),
            ],
            None,
        );
        assert_eq!(stats.num_records, 4);
        assert_eq!(stats.min_values["event_id"], json!("b"));
        assert_eq!(stats.max_values["event_id"], json!("z"));
        assert_eq!(stats.min_values["count"], json!(-3));
        assert_eq!(stats.max_values["count"], json!(9));
        // 999 µs rounds down to 0 ms, 2 000 µs is exactly 2 ms.
        assert_eq!(
            stats.min_values["event_time"],
            json!("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            stats.max_values["event_time"],
            json!("1970-01-01T00:00:00.002Z")
        );
        assert_eq!(stats.null_count["event_id"], json!(1));
        assert_eq!(stats.null_count["count"], json!(1));
        assert_eq!(stats.null_count["event_time"], json!(1));
    }

    #[test]
    fn a_max_between_milliseconds_rounds_up_and_long_strings_are_cut() {
        let long = "x".repeat(40);
        let stats = stats_of(
            &[batch(
                vec![Some(&long), Some(&long)],
                vec![Some(1), Some(1)],
                vec![Some(2_001), Some(2_001)],
            )],
            Some(&["event_id", "event_time"]),
        );
        assert_eq!(
            stats.max_values["event_time"],
            json!("1970-01-01T00:00:00.003Z")
        );
        assert_eq!(
            stats.min_values["event_time"],
            json!("1970-01-01T00:00:00.002Z")
        );
        assert_eq!(
            stats.min_values["event_id"],
            json!("x".repeat(MAX_STRING_STAT_CHARS))
        );
        assert!(!stats.max_values.contains_key("event_id"));
        // `count` was not asked for.
        assert!(!stats.min_values.contains_key("count"));
        assert!(!stats.null_count.contains_key("count"));
    }

    #[test]
    fn an_all_null_column_has_a_null_count_and_no_bounds() {
        let stats = stats_of(
            &[batch(vec![None, None], vec![None, None], vec![None, None])],
            None,
        );
        assert_eq!(stats.null_count["count"], json!(2));
        assert!(stats.min_values.is_empty(), "{:?}", stats.min_values);
        let text: Value = serde_json::from_str(&stats.to_json()).unwrap();
        assert_eq!(text["numRecords"], json!(2));
    }
}
