//! The lake module against real stores and real readers: a local-disk table and a SeaweedFS S3
//! server started here, each read back by the Python `deltalake` package (delta-rs) and, on
//! local disk, by DuckDB through the documented `date=*/*.parquet` glob.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use hooklake::lake::{
    Commit, CommitOutcome, DataFile, DeltaTable, Lake, LakeError, LakeUrl, StoreOptions,
};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};

use crate::seaweed::{BUCKET, Seaweed};
use crate::util::duckdb;

const TABLE: &str = "contact_events";
const APP: &str = "hooklake-test";

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Int64, true),
    ]))
}

/// Writes a Parquet file of rows `ids` (amount = index) to `dir/name` and returns its path.
fn parquet_file(dir: &Path, name: &str, ids: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids.to_vec())),
        Arc::new(
            TimestampMicrosecondArray::from(
                (0..ids.len() as i64)
                    .map(|i| 1_714_521_600_000_000 + i * 1_000_500)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from((0..ids.len() as i64).collect::<Vec<_>>())),
    ];
    let batch = RecordBatch::try_new(schema(), columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    path
}

/// Describes and uploads local files into `table`, returning their descriptions.
async fn upload(lake: &Lake, table: &DeltaTable, files: &[(PathBuf, &str)]) -> Vec<DataFile> {
    let mut described = Vec::new();
    let mut uploads = Vec::new();
    for (local, date) in files {
        let name = local.file_name().unwrap().to_str().unwrap();
        let file = DataFile::from_local(local, date, name).unwrap();
        uploads.push((local.clone(), table.file_path(&file.path)));
        described.push(file);
    }
    lake.upload_all(uploads).await.unwrap();
    described
}

fn flush(adds: Vec<DataFile>, seq: i64) -> Commit {
    Commit {
        adds,
        removes: Vec::new(),
        data_change: true,
        txn: Some((APP.to_string(), seq)),
        operation: "WRITE",
    }
}

/// What the Python `deltalake` package (delta-rs) reads from a table.
fn delta_rs(uri: &str, options: &Value) -> Value {
    let script = r#"
import json, sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]))
t = dt.to_pyarrow_table()
ids = t.column("event_id").to_pylist()
dates = sorted({str(d) for d in t.column("date").to_pylist()})
print(json.dumps({"version": dt.version(), "ids": sorted(ids), "dates": dates,
                  "files": len(dt.file_uris()), "txn": dt.transaction_version(sys.argv[3])}))
"#;
    crate::seaweed::delta_rs(script, uri, &[&options.to_string(), APP])
}

/// Flushes, compacts, races and checkpoints one table; returns what the Delta log holds.
/// `read` reads the table with delta-rs.
async fn exercise(lake: &Lake, work: &Path, read: impl Fn() -> Value) {
    let table = lake.table(TABLE).with_checkpoint_interval(3);
    assert_eq!(table.create_if_absent(&schema()).await.unwrap(), 0);
    // A second writer finds the table and does not create it again.
    assert_eq!(
        lake.table(TABLE).create_if_absent(&schema()).await.unwrap(),
        0
    );

    let f1 = parquet_file(work, "part-000000000001.parquet", &["a1", "a2", "a3"]);
    let f1b = work.join("b").join("part-000000000001.parquet");
    std::fs::create_dir_all(f1b.parent().unwrap()).unwrap();
    std::fs::copy(parquet_file(work, "tmp-b.parquet", &["b1", "b2"]), &f1b).unwrap();
    let adds = upload(lake, &table, &[(f1, "2024-05-01"), (f1b, "2024-05-02")]).await;
    assert_eq!(adds[0].stats.as_ref().unwrap().num_records, 3);
    let outcome = table.commit(&flush(adds.clone(), 1)).await.unwrap();
    assert_eq!(
        outcome,
        CommitOutcome::Committed {
            version: 1,
            retries: 0
        }
    );
    // The same flush again (a retry after a crash) is recognised by its transaction id.
    assert_eq!(
        table.commit(&flush(adds, 1)).await.unwrap(),
        CommitOutcome::AlreadyCommitted { txn_version: 1 }
    );

    let f2 = parquet_file(work, "part-000000000002.parquet", &["a4", "a5"]);
    let adds = upload(lake, &table, &[(f2, "2024-05-01")]).await;
    table.commit(&flush(adds, 2)).await.unwrap();
    let before = read();
    assert_eq!(before["version"], 2);
    assert_eq!(before["files"], 3);
    assert_eq!(before["txn"], 2);

    // Two writers race for version 3: a flush and a compaction of 2024-05-01, each from the
    // snapshot at version 2. The compaction loses, reads the flush, finds no clash, retries.
    let compactor = lake.table(TABLE);
    assert_eq!(compactor.snapshot().await.unwrap().version, Some(2));
    let f3 = parquet_file(work, "part-000000000003.parquet", &["b3"]);
    let adds = upload(lake, &table, &[(f3, "2024-05-02")]).await;
    assert_eq!(
        table.commit(&flush(adds, 3)).await.unwrap(),
        CommitOutcome::Committed {
            version: 3,
            retries: 0
        }
    );
    let merged = parquet_file(work, "compacted-1.parquet", &["a1", "a2", "a3", "a4", "a5"]);
    let adds = upload(lake, &compactor, &[(merged, "2024-05-01")]).await;
    let removed = vec![
        "date=2024-05-01/part-000000000001.parquet".to_string(),
        "date=2024-05-01/part-000000000002.parquet".to_string(),
    ];
    let compaction = Commit {
        adds,
        removes: removed.clone(),
        data_change: false,
        txn: None,
        operation: "OPTIMIZE",
    };
    assert_eq!(
        compactor.commit(&compaction).await.unwrap(),
        CommitOutcome::Committed {
            version: 4,
            retries: 1
        }
    );
    // A second compaction of the same files, from a stale snapshot, clashes: the files it
    // would remove are gone.
    let late = lake.table(TABLE);
    let error = late.commit(&compaction).await.unwrap_err();
    assert!(matches!(error, LakeError::Clash { .. }), "{error}");

    let after = read();
    assert_eq!(after["version"], 4);
    assert_eq!(
        after["ids"],
        json!(["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3"])
    );
    assert_eq!(after["dates"], json!(["2024-05-01", "2024-05-02"]));
    assert_eq!(after["files"], 3);
    assert_eq!(after["txn"], 3);

    // A checkpoint was written at version 3; a fresh reader starts from it.
    let log = ObjectPath::from(format!("{}/_delta_log", lake.table_path(TABLE)));
    let hint = lake
        .store()
        .get(&log.clone().join("_last_checkpoint"))
        .await
        .unwrap();
    let hint: Value = serde_json::from_slice(&hint.bytes().await.unwrap()).unwrap();
    assert_eq!(hint["version"], 3);
    let fresh = lake.table(TABLE);
    assert_eq!(fresh.txn_version(APP).await.unwrap(), Some(3));
    assert_eq!(fresh.txn_version("another-app").await.unwrap(), None);
    let snapshot = fresh.snapshot().await.unwrap();
    assert_eq!(snapshot.version, Some(4));
    assert_eq!(snapshot.files.len(), 3);
    let first = &snapshot.files["date=2024-05-02/part-000000000001.parquet"];
    let stats: Value = serde_json::from_str(first.stats.as_ref().unwrap()).unwrap();
    assert_eq!(stats["numRecords"], 2);
    assert_eq!(stats["minValues"]["event_id"], "b1");
    assert_eq!(stats["maxValues"]["event_time"], "2024-05-01T00:00:01.001Z");
    assert_eq!(stats["nullCount"]["amount"], 0);

    // An upload that never reached the log is untracked; the removed files are not.
    let orphan = parquet_file(work, "part-000000000009.parquet", &["z9"]);
    upload(lake, &table, &[(orphan, "2024-05-03")]).await;
    let untracked = table.untracked_files().await.unwrap();
    assert_eq!(
        untracked.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        [format!(
            "{}/date=2024-05-03/part-000000000009.parquet",
            lake.table_path(TABLE)
        )]
    );
    lake.store().delete(&untracked[0]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_table_is_read_alike_by_delta_rs_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let url = LakeUrl::parse(&format!("file://{}", root.display())).unwrap();
    let lake = Lake::open(&url, &StoreOptions::default()).unwrap();
    let uri = root.join(TABLE).display().to_string();
    exercise(&lake, &work, || delta_rs(&uri, &json!({}))).await;

    // The documented glob does not pick up the checkpoint, which the wider one would.
    let table_dir = root.join(TABLE);
    let glob = |pattern: &str| {
        duckdb(&format!(
            "SELECT count(*) AS n FROM glob('{}/{pattern}')",
            table_dir.display()
        ))[0]["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(glob("*/*.parquet") - glob("date=*/*.parquet"), 1);
    let read = || {
        duckdb(&format!(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, min(date)::VARCHAR AS first \
             FROM read_parquet('{}/date=*/*.parquet', hive_partitioning = true)",
            table_dir.display()
        ))[0]
            .clone()
    };
    // Until the files the compaction removed are deleted, a glob reader sees their rows twice
    // (delta-rs above did not); afterwards it sees what the Delta snapshot holds.
    let seen = read();
    assert_eq!(
        (seen["n"].as_i64(), seen["ids"].as_i64()),
        (Some(13), Some(8))
    );
    for name in ["part-000000000001.parquet", "part-000000000002.parquet"] {
        std::fs::remove_file(table_dir.join("date=2024-05-01").join(name)).unwrap();
    }
    let seen = read();
    assert_eq!(
        (seen["n"].as_i64(), seen["ids"].as_i64()),
        (Some(8), Some(8))
    );
    assert_eq!(seen["first"], "2024-05-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_each_get_their_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &LakeUrl::parse(dir.path().to_str().unwrap()).unwrap(),
        &StoreOptions::default(),
    )
    .unwrap();
    lake.table(TABLE).create_if_absent(&schema()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..6i64 {
        let local = parquet_file(
            dir.path(),
            &format!("w{writer}.parquet"),
            &[&format!("w{writer}")],
        );
        let lake = lake.clone();
        tasks.spawn(async move {
            let table = lake.table(TABLE);
            let adds = upload(&lake, &table, &[(local, "2024-05-01")]).await;
            let commit = Commit {
                txn: Some((format!("writer-{writer}"), 1)),
                ..flush(adds, 1)
            };
            table.commit(&commit).await.unwrap()
        });
    }
    let mut versions = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let CommitOutcome::Committed { version, .. } = done.unwrap() else {
            panic!("every writer commits");
        };
        versions.push(version);
    }
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let read = delta_rs(&dir.path().join(TABLE).display().to_string(), &json!({}));
    assert_eq!(read["version"], 6);
    assert_eq!(read["ids"], json!(["w0", "w1", "w2", "w3", "w4", "w5"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_table_on_seaweedfs_is_read_by_delta_rs() {
    let server = Seaweed::start();
    let url = LakeUrl::parse(&format!("s3://{BUCKET}/lakes/one")).unwrap();
    let lake = Lake::open(&url, &server.options()).unwrap();

    // Wrong credentials are refused and classified, without the secret in the message.
    let wrong = Lake::open(
        &url,
        &StoreOptions {
            secret_access_key: Some("not-the-secret".into()),
            ..server.options()
        },
    )
    .unwrap();
    let error = wrong.table(TABLE).snapshot().await.unwrap_err();
    assert_eq!(
        error.store_kind(),
        Some(hooklake::lake::StoreErrorKind::Auth),
        "{error}"
    );
    assert!(!error.to_string().contains("not-the-secret"), "{error}");

    let work = tempfile::tempdir().unwrap();
    let options = server.delta_rs_options();
    let uri = format!("s3://{BUCKET}/lakes/one/{TABLE}");
    exercise(&lake, work.path(), || delta_rs(&uri, &options)).await;

    // A file above the multipart threshold goes up in parts and comes back whole.
    let big: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = work.path().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    let key = ObjectPath::from("lakes/one/big.bin");
    assert_eq!(lake.upload(&local, &key).await.unwrap(), big.len() as u64);
    let back = lake.store().get(&key).await.unwrap().bytes().await.unwrap();
    assert!(back == big, "the multipart upload came back different");

    // The store gone: errors are classified as unavailable (and transient).
    drop(server);
    let error = lake.table("other").snapshot().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
}
