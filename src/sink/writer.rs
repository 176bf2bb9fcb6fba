//! Parquet writer properties: compression, statistics, row groups, sort order.
//!
//! Invariant: every file hooklake writes gets its properties from [`writer_properties`], so
//! compression is always set explicitly (the parquet crate's default is none).

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::ContactEventRow;
    use parquet::schema::types::ColumnPath;

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
}
