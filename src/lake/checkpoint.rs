//! Delta checkpoints: a table's snapshot at one version as one Parquet file, one action per
//! row, in the columns `txn`, `add`, `remove`, `metaData` and `protocol` (the protocol's
//! "classic" checkpoint; maps are stored as Parquet maps named `key_value`, as Spark writes
//! them).
//!
//! Both directions go through the actions' JSON form: writing decodes their JSON lines into
//! Arrow with the checkpoint schema, reading encodes the checkpoint's rows back to JSON lines
//! and parses them as a commit's lines are parsed. Invariant: reading a checkpoint this module
//! wrote gives back the actions it was written from, in order.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::LakeError;
use super::delta::Action;

/// Actions decoded into one Arrow batch at a time.
const BATCH_ROWS: usize = 8192;

/// `map<string, string>` as Delta checkpoints store it.
fn string_map() -> DataType {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn structure(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

/// The schema of a checkpoint file.
pub fn schema() -> SchemaRef {
    let long = |name: &str| Field::new(name, DataType::Int64, true);
    let string = |name: &str| Field::new(name, DataType::Utf8, true);
    let boolean = |name: &str| Field::new(name, DataType::Boolean, true);
    let map = |name: &str| Field::new(name, string_map(), true);
    Arc::new(Schema::new(vec![
        structure(
            "txn",
            vec![string("appId"), long("version"), long("lastUpdated")],
        ),
        structure(
            "add",
            vec![
                string("path"),
                map("partitionValues"),
                long("size"),
                long("modificationTime"),
                boolean("dataChange"),
                string("stats"),
            ],
        ),
        structure(
            "remove",
            vec![
                string("path"),
                long("deletionTimestamp"),
                boolean("dataChange"),
                boolean("extendedFileMetadata"),
                map("partitionValues"),
                long("size"),
            ],
        ),
        structure(
            "metaData",
            vec![
                string("id"),
                string("name"),
                string("description"),
                structure("format", vec![string("provider"), map("options")]),
                string("schemaString"),
                Field::new(
                    "partitionColumns",
                    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                    true,
                ),
                map("configuration"),
                long("createdTime"),
            ],
        ),
        structure(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
            ],
        ),
    ]))
}

/// The checkpoint file of `actions` (commit infos are left out, as the protocol says).
pub fn write(actions: &[Action]) -> Result<Bytes, LakeError> {
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props))
        .map_err(|source| parquet_error("checkpoint", source))?;
    let kept: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::CommitInfo(_)))
        .collect();
    for chunk in kept.chunks(BATCH_ROWS) {
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .build_decoder()?;
        let mut lines = String::new();
        for action in chunk {
            lines.push_str(&action.to_line());
            lines.push('\n');
        }
        decoder.decode(lines.as_bytes())?;
        if let Some(batch) = decoder.flush()? {
            writer
                .write(&batch)
                .map_err(|source| parquet_error("checkpoint", source))?;
        }
    }
    writer
        .close()
        .map_err(|source| parquet_error("checkpoint", source))?;
    Ok(Bytes::from(out))
}

/// The actions of a checkpoint file (`path` names it in errors).
pub fn read(bytes: Bytes, path: &str) -> Result<Vec<Action>, LakeError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|source| parquet_error(path, source))?;
    let mut actions = Vec::new();
    for batch in reader {
        let batch = batch?;
        let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
        writer.write(&batch)?;
        writer.finish()?;
        let text = writer.into_inner();
        let text = String::from_utf8_lossy(&text);
        for line in text.lines() {
            let action = Action::parse(line).map_err(|e| LakeError::Log {
                table: path.to_string(),
                reason: format!("checkpoint row {line}: {e}"),
            })?;
            actions.extend(action);
        }
    }
    Ok(actions)
}

fn parquet_error(path: &str, source: parquet::errors::ParquetError) -> LakeError {
    LakeError::Parquet {
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lake::delta::{Add, Format, Metadata, Protocol, Remove, Txn};

    #[test]
    fn a_checkpoint_reads_back_as_its_actions() {
        let actions = vec![
            Action::Protocol(Protocol {
                min_reader_version: 1,
                min_writer_version: 2,
            }),
            Action::Metadata(Metadata {
                id: "a7f0".into(),
                name: Some("raw_events".into()),
                description: None,
                format: Format {
                    provider: "parquet".into(),
                    options: BTreeMap::new(),
                },
                schema_string: "{\"type\":\"struct\",\"fields\":[]}".into(),
                partition_columns: vec!["date".into()],
                configuration: BTreeMap::from([("k".into(), Some("v".into()))]),
                created_time: Some(12),
            }),
            Action::Txn(Txn {
                app_id: "hooklake".into(),
                version: 41,
                last_updated: Some(99),
            }),
            Action::Add(Add {
                path: "date=2024-05-01/part-000000000041.parquet".into(),
                partition_values: BTreeMap::from([("date".into(), Some("2024-05-01".into()))]),
                size: 1234,
                modification_time: 77,
                data_change: true,
                stats: Some("{\"numRecords\":3}".into()),
            }),
            Action::Remove(Remove {
                path: "date=2024-05-01/part-000000000040.parquet".into(),
                deletion_timestamp: Some(78),
                data_change: false,
                extended_file_metadata: Some(true),
                partition_values: Some(BTreeMap::from([(
                    "date".into(),
                    Some("2024-05-01".into()),
                )])),
                size: Some(1000),
            }),
        ];
        let mut with_info = actions.clone();
        with_info.push(Action::CommitInfo(
            serde_json::json!({"operation": "WRITE"}),
        ));
        let bytes = write(&with_info).unwrap();
        assert_eq!(read(bytes, "test").unwrap(), actions);
    }
}
