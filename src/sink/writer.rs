//! Parquet writer properties: compression, dictionaries, statistics, row groups, sort order.
//!
//! Invariant: every file hooklake writes gets its properties from [`writer_properties`], so
//! compression is always set explicitly (the parquet crate's default is none): ZSTD, except for
//! the column chunks of a one-row-group file that hold little ([`compression_by_size`]): those
//! with next to nothing are stored as they are, and in a flush's files the small ones get
//! Snappy. Compacted files never use Snappy.

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

/// Properties for a file of table `T` written for `kind`: ZSTD (at `settings.zstd_level` for a
/// compacted file, [`FLUSH_ZSTD_LEVEL`] for a flush's), page-level statistics (min/max
/// that let DuckDB skip row groups and pages), bounded row groups, the sort order rows are
/// written in, and dictionaries: in compacted files for every column but [`NO_DICTIONARY`], in
/// a flush's files for none. A flush's file holds a flush's rows of one partition, too few to
/// repeat many values: without dictionaries the write stage of a million-event replay took 13%
/// less time and its flush files came out 1% smaller (docs/benchmarks.md, Batch replay,
/// 2026-11-27).
/// Compaction gives each closed partition's file its dictionaries.
pub fn writer_properties<T: Table>(settings: WriterSettings, kind: FileKind) -> WriterProperties {
    let level = match kind {
        FileKind::Flush => FLUSH_ZSTD_LEVEL,
        FileKind::Compacted => settings.zstd_level,
    };
    let level = ZstdLevel::try_new(level).unwrap_or_default();
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
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("hooklake {}", env!("CARGO_PKG_VERSION")));
    for column in columns.iter().filter(|c| NO_STATISTICS.contains(&c.name)) {
        let path = ColumnPath::from(column.name);
        builder = builder.set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    match kind {
        FileKind::Flush => builder = builder.set_dictionary_enabled(false),
        FileKind::Compacted => {
            for (_, column) in NO_DICTIONARY.iter().filter(|(table, _)| *table == T::NAME) {
                builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
            }
        }
    }
    builder.build()
}

/// Columns with a new value in every row, left without a dictionary in compacted files: the
/// writer would fill a dictionary page with their values, give up on it, and write them
/// plainly after all. Without one, the write stage took 2-5% less time and the compacted lake
/// of the benchmark went from 182 to 178 bytes per event (docs/benchmarks.md, Batch replay,
/// 2026-11-27).
const NO_DICTIONARY: &[(&str, &str)] = &[
    ("raw_events", "payload"),
    ("raw_events", "event_id"),
    ("contact_events", "event_id"),
    ("call_events", "event_id"),
    ("call_outcomes", "event_id"),
];

/// Columns of JSON text or raw request data, written without statistics in every table that
/// has them: no query filters on their order, so their minimum and maximum prune nothing, and
/// computing them compared every value with the smallest and largest so far (JSON objects share
/// long prefixes). Without them, the parquet crate's encoding of `raw_events` took 0.71-0.72 ->
/// 0.67-0.69 µs per event (docs/benchmarks.md, Per-stage timings, 2026-11-27).
pub const NO_STATISTICS: &[&str] = &[
    "payload",
    "extras",
    "disqualifying_group",
    "headers",
    "body",
];

/// Column chunks whose values take fewer bytes than this (written plainly) are stored
/// uncompressed. Most are all null: a flush's small files hold many sparse columns, and 77 of
/// the 168 columns of a million-event replay's files came out larger compressed than not. Each
/// compressed chunk costs a ZSTD compressor and decompressor, whose creation asks the CPU for
/// its features; on a virtual machine `cpuid` traps to the hypervisor (4.1 µs a call here), and
/// creating them was 15% of the replay's write stage in a profile. Below this size, leaving
/// chunks uncompressed made that replay's files slightly smaller and took 4% off its CPU; at
/// 1 KiB the files grew (docs/benchmarks.md, Batch replay, 2026-11-27).
pub const COMPRESS_MIN_BYTES: usize = 256;

/// In a flush's files, column chunks whose values take fewer bytes than this are compressed
/// with Snappy rather than ZSTD. Snappy costs next to nothing to set up, where ZSTD's setup
/// (above) outweighs its better ratio on small chunks. A replay of the benchmark's million
/// events used 7% less CPU and 3-6% less time, and its flush files took 20% more bytes. Flush
/// files are short-lived: compaction rewrites a closed partition's files with ZSTD only, so the
/// lake a query reads for long keeps ZSTD's size (docs/benchmarks.md, Batch replay, 2026-11-27).
pub const FLUSH_ZSTD_MIN_BYTES: usize = 64 * 1024;

/// The ZSTD level of a flush's files, whatever `zstd_level` says (it is compacted files'). On
/// a million-event replay, level 1 instead of 3 took the write stage from 5.66 to 4.56 s, and
/// the flush files came out 3% smaller, not larger (docs/benchmarks.md, Batch replay,
/// 2026-11-27).
pub const FLUSH_ZSTD_LEVEL: i32 = 1;

/// Who a file is written for, which decides its ZSTD level, its dictionaries, and how its small
/// column chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A flush's file: written fast, kept until compaction. Synced by the flush, all at once.
    Flush,
    /// A compacted partition: written once, read for long. Synced on its own.
    Compacted,
}

/// `props` adjusted, column by column, to the size of each flat column of `batch` (a file's
/// only row group): under [`COMPRESS_MIN_BYTES`] uncompressed, and in a flush's file under
/// [`FLUSH_ZSTD_MIN_BYTES`] Snappy. Larger columns and nested ones keep `props`' ZSTD.
pub fn compression_by_size(
    props: WriterProperties,
    batch: &RecordBatch,
    kind: FileKind,
) -> WriterProperties {
    let zstd_min = match kind {
        FileKind::Flush => FLUSH_ZSTD_MIN_BYTES,
        FileKind::Compacted => COMPRESS_MIN_BYTES,
    };
    let lighter: Vec<(&str, Compression)> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter_map(|(field, array)| {
            let codec = match value_bytes(array.as_ref())? {
                n if n < COMPRESS_MIN_BYTES => Compression::UNCOMPRESSED,
                n if n < zstd_min => Compression::SNAPPY,
                _ => return None,
            };
            Some((field.name().as_str(), codec))
        })
        .collect();
    if lighter.is_empty() {
        return props;
    }
    let mut builder = props.into_builder();
    for (name, codec) in lighter {
        builder = builder.set_column_compression(ColumnPath::from(name), codec);
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
    use crate::flatten::{ContactEventRow, RawEventRow};

    #[test]
    fn compression_and_statistics_are_explicit() {
        let settings = WriterSettings {
            zstd_level: 5,
            row_group_rows: 200_000,
            threads: 1,
        };
        let props = writer_properties::<ContactEventRow>(settings, FileKind::Compacted);
        let col = ColumnPath::from("email");
        assert_eq!(
            props.compression(&col),
            Compression::ZSTD(ZstdLevel::try_new(5).unwrap())
        );
        assert_eq!(props.statistics_enabled(&col), EnabledStatistics::Page);
        assert!(props.dictionary_enabled(&col));
        assert!(!props.dictionary_enabled(&ColumnPath::from("event_id")));
        for (table, column) in NO_DICTIONARY {
            let schema = crate::flatten::table_schemas()
                .into_iter()
                .find(|(name, _)| name == table)
                .unwrap_or_else(|| panic!("{table} is a table"))
                .1;
            assert!(schema.field_with_name(column).is_ok(), "{table}.{column}");
        }
        assert_eq!(props.max_row_group_row_count(), Some(200_000));
        let sorting = props.sorting_columns().unwrap();
        let names: Vec<&str> = sorting
            .iter()
            .map(|s| ContactEventRow::columns()[s.column_idx as usize].name)
            .collect();
        assert_eq!(names, vec!["contact_id", "event_time", "event_id"]);
        // A flush's files: the same, without dictionaries, and at ZSTD's first level.
        let flush = writer_properties::<ContactEventRow>(settings, FileKind::Flush);
        assert!(!flush.dictionary_enabled(&col));
        assert!(!flush.dictionary_enabled(&ColumnPath::from("status")));
        assert_eq!(
            flush.compression(&col),
            Compression::ZSTD(ZstdLevel::try_new(FLUSH_ZSTD_LEVEL).unwrap())
        );
        assert_eq!(flush.statistics_enabled(&col), EnabledStatistics::Page);
        assert_eq!(flush.sorting_columns(), props.sorting_columns());
        // JSON text has no statistics, in either kind of file; every name is a column somewhere.
        for kind in [FileKind::Flush, FileKind::Compacted] {
            let raw = writer_properties::<RawEventRow>(settings, kind);
            assert_eq!(
                raw.statistics_enabled(&ColumnPath::from("payload")),
                EnabledStatistics::None
            );
            assert_eq!(
                raw.statistics_enabled(&ColumnPath::from("event_id")),
                EnabledStatistics::Page
            );
            let contact = writer_properties::<ContactEventRow>(settings, kind);
            assert_eq!(
                contact.statistics_enabled(&ColumnPath::from("extras")),
                EnabledStatistics::None
            );
        }
        for column in NO_STATISTICS {
            assert!(
                crate::flatten::table_schemas()
                    .iter()
                    .any(|(_, schema)| schema.field_with_name(column).is_ok()),
                "{column} is a column"
            );
        }
    }

    #[test]
    fn small_columns_are_stored_plainly_or_with_snappy_by_the_kind_of_file() {
        let settings = WriterSettings {
            zstd_level: 3,
            row_group_rows: 1000,
            threads: 1,
        };
        // 300 rows: an event id and an email in every row, a contact id in every row (2400
        // bytes), 300 bytes of extras in every row (90 000 bytes), a sparse column with one
        // short value, an all-null column, and a list column (nested: left as configured).
        let rows: Vec<ContactEventRow> = (0..300)
            .map(|i| ContactEventRow {
                event_id: format!("event-{i:06}").into(),
                contact_id: Some(i),
                email: Some(format!("lead{i}@example.com").into()),
                secondary_email: (i == 7).then(|| "x@example.com".into()),
                extras: Some(format!("{{\"note\":\"{i:0>288}\"}}")),
                missing_fields: crate::flatten::ColumnSet::of(["email"]),
                ..Default::default()
            })
            .collect();
        let batch = ContactEventRow::to_batch(&rows);
        let list_leaf =
            ColumnPath::new(vec!["missing_fields".into(), "list".into(), "item".into()]);
        for (kind, small, level) in [
            (FileKind::Flush, Compression::SNAPPY, FLUSH_ZSTD_LEVEL),
            (
                FileKind::Compacted,
                Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
                3,
            ),
        ] {
            let zstd = Compression::ZSTD(ZstdLevel::try_new(level).unwrap());
            let props = compression_by_size(
                writer_properties::<ContactEventRow>(settings, kind),
                &batch,
                kind,
            );
            let of = |name: &str| props.compression(&ColumnPath::from(name));
            assert_eq!(of("event_id"), small, "{kind:?}");
            assert_eq!(of("contact_id"), small, "{kind:?}: 300 ids take 2400 bytes");
            assert_eq!(of("email"), small, "{kind:?}");
            assert_eq!(of("extras"), zstd, "{kind:?}: 90 000 bytes");
            assert_eq!(of("secondary_email"), Compression::UNCOMPRESSED, "{kind:?}");
            assert_eq!(
                of("updated_at"),
                Compression::UNCOMPRESSED,
                "{kind:?}: all null"
            );
            assert_eq!(props.compression(&list_leaf), zstd, "{kind:?}");
        }
        // A slice counts only its own values.
        let slice = batch.slice(0, 20);
        let props = compression_by_size(
            writer_properties::<ContactEventRow>(settings, FileKind::Flush),
            &slice,
            FileKind::Flush,
        );
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
