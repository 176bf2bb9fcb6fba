//! Parquet writer properties: compression, statistics, row groups, sort order.
//!
//! Invariant: every file hooklake writes gets its properties from [`writer_properties`], so
//! compression is always set explicitly (the parquet crate's default is none): ZSTD, except for
//! the column chunks of a one-row-group file that hold next to nothing
//! ([`uncompress_small_columns`]).

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::flatten::table::Table;

/// Settings shared by every file.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// ZSTD level, 1-22.
    pub zstd_level: i32,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Files staged at once by a flush.
    pub threads: usize,
}

/// Properties for a file of table `T`: ZSTD, page-level statistics (min/max that let DuckDB skip
/// row groups and pages), bounded row groups, and the sort order rows are written in.
pub fn writer_properties<T: Table>(settings: WriterSettings) -> WriterProperties {
    let level = ZstdLevel::try_new(settings.zstd_level).unwrap_or_default();
    let columns = T::columns();
    let sorting = T::sort_columns()
        .iter()
        .filter_map(|name| columns.iter().position(|c| c.name == *name))
        .map(|idx| SortingColumn {
            column_idx: idx as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("hooklake {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Column chunks whose values take fewer bytes than this (written plainly) are stored
/// uncompressed. Most are all null: a flush's small files hold many sparse columns, and 77 of
/// the 168 columns of a million-event replay's files came out larger compressed than not. Each
/// compressed chunk costs a ZSTD compressor and decompressor, whose creation asks the CPU for
/// its features; on a virtual machine `cpuid` traps to the hypervisor (4.1 µs a call here), and
/// creating them was 15% of the replay's Parquet encoding in a profile. Below this size, leaving
/// chunks uncompressed made that replay's files slightly smaller and took 4% off its CPU; at
/// 1 KiB the files grew (docs/benchmarks.md, fifth session).
pub const COMPRESS_MIN_BYTES: usize = 256;

/// `props` with every flat column of `batch` (a file's only row group) whose values take
/// under [`COMPRESS_MIN_BYTES`] stored uncompressed; nested columns keep `props`' compression.
pub fn uncompress_small_columns(props: WriterProperties, batch: &RecordBatch) -> WriterProperties {
    let small: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(_, array)| value_bytes(array.as_ref()).is_some_and(|n| n < COMPRESS_MIN_BYTES))
        .map(|(field, _)| field.name().as_str())
        .collect();
    if small.is_empty() {
        return props;
    }
    let mut builder = props.into_builder();
    for name in small {
        builder = builder.set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED);
    }
    builder.build()
}

/// The bytes a flat column's non-null values take written plainly, or `None` for a nested
/// column (whose Parquet leaves have other paths).
fn value_bytes(array: &dyn Array) -> Option<usize> {
    let present = array.len() - array.null_count();
    match array.data_type() {
        DataType::Utf8 => Some(offsets_span(array.as_string::<i32>().value_offsets())),
        DataType::LargeUtf8 => Some(offsets_span(array.as_string::<i64>().value_offsets())),
        DataType::Binary => Some(offsets_span(array.as_binary::<i32>().value_offsets())),
        DataType::LargeBinary => Some(offsets_span(array.as_binary::<i64>().value_offsets())),
        DataType::Boolean => Some(present.div_ceil(8)),
        other => other.primitive_width().map(|width| present * width),
    }
}

/// Bytes between the first and the last offset of a (possibly sliced) array.
fn offsets_span<O: arrow_array::OffsetSizeTrait>(offsets: &[O]) -> usize {
    match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => last.as_usize().saturating_sub(first.as_usize()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::ContactEventRow;

    #[test]
    fn compression_and_statistics_are_explicit() {
        let props = writer_properties::<ContactEventRow>(WriterSettings {
            zstd_level: 5,
            row_group_rows: 200_000,
            threads: 1,
        });
        let col = ColumnPath::from("email");
        assert_eq!(
            props.compression(&col),
            Compression::ZSTD(ZstdLevel::try_new(5).unwrap())
        );
        assert_eq!(props.statistics_enabled(&col), EnabledStatistics::Page);
        assert_eq!(props.max_row_group_row_count(), Some(200_000));
        let sorting = props.sorting_columns().unwrap();
        let names: Vec<&str> = sorting
            .iter()
            .map(|s| ContactEventRow::columns()[s.column_idx as usize].name)
            .collect();
        assert_eq!(names, vec!["contact_id", "event_time", "event_id"]);
    }

    #[test]
    fn only_columns_with_next_to_no_values_are_left_uncompressed() {
        let settings = WriterSettings {
            zstd_level: 3,
            row_group_rows: 1000,
            threads: 1,
        };
        // 300 rows: an event id and an email in every row, a contact id in every row (2400
        // bytes), a sparse column with one short value, an all-null column, and a list column
        // (nested: left as configured).
        let rows: Vec<ContactEventRow> = (0..300)
            .map(|i| ContactEventRow {
                event_id: format!("event-{i:06}").into(),
                contact_id: Some(i),
                email: Some(format!("lead{i}@example.com").into()),
                secondary_email: (i == 7).then(|| "x@example.com".into()),
                missing_fields: vec!["email"],
                ..Default::default()
            })
            .collect();
        let batch = ContactEventRow::to_batch(&rows);
        let props =
            uncompress_small_columns(writer_properties::<ContactEventRow>(settings), &batch);
        let zstd = Compression::ZSTD(ZstdLevel::try_new(3).unwrap());
        let of = |name: &str| props.compression(&ColumnPath::from(name));
        assert_eq!(of("event_id"), zstd);
        assert_eq!(of("contact_id"), zstd, "300 ids take 2400 bytes");
        assert_eq!(of("email"), zstd);
        assert_eq!(of("secondary_email"), Compression::UNCOMPRESSED);
        assert_eq!(of("updated_at"), Compression::UNCOMPRESSED, "all null");
        assert_eq!(
            props.compression(&ColumnPath::new(vec![
                "missing_fields".into(),
                "list".into(),
                "item".into()
            ])),
            zstd
        );
        // A slice counts only its own values.
        let slice = batch.slice(0, 20);
        let props =
            uncompress_small_columns(writer_properties::<ContactEventRow>(settings), &slice);
        assert_eq!(
            props.compression(&ColumnPath::from("contact_id")),
            Compression::UNCOMPRESSED
        );
        assert_eq!(
            props.compression(&ColumnPath::from("event_id")),
            Compression::UNCOMPRESSED
        );
    }
}
