//! The pipeline's Delta tables on a local lake: a lake with a checkpoint read through the
//! documented glob, an existing lake without logs converted in place, and files a compaction
//! removed kept until the vacuum retention has passed.

use serde_json::json;

use crate::util::{Lake, delta_event_ids, duckdb, scan};

fn contact(id: i64) -> serde_json::Value {
    json!({"id": id, "previewId": format!("contact_{id}"), "status": "QUALIFIED",
           "updatedAt": "2026-03-04T10:00:00.000Z"})
}

/// Distinct and total `event_id`s of a table read through the documented glob.
fn globbed(dir: &std::path::Path, table: &str) -> (i64, i64) {
    let rows = duckdb(&format!(
        "select count(*) as n, count(distinct event_id) as ids from {}",
        scan(dir, table)
    ));
    (
        rows[0]["n"].as_i64().unwrap(),
        rows[0]["ids"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_lake_with_a_checkpoint_reads_alike_through_the_glob_and_delta_rs() {
    let lake = Lake::new();
    // Version 0 creates the table; the tenth flush is version 10, which gets a checkpoint.
    for id in 1..=10 {
        lake.post_events(&[contact(id)]).await;
        lake.flush().await;
    }
    let log = lake.dir.path().join("contact_events/_delta_log");
    assert!(
        log.join("00000000000000000010.checkpoint.parquet").exists(),
        "{:?}",
        std::fs::read_dir(&log).unwrap().collect::<Vec<_>>()
    );
    // The documented glob skips the checkpoint, a Parquet file under _delta_log/.
    assert_eq!(globbed(lake.dir.path(), "contact_events"), (10, 10));
    assert_eq!(delta_event_ids(lake.dir.path(), "contact_events").len(), 10);
}

#[tokio::test]
async fn an_existing_lake_without_logs_is_converted_at_start_without_rewriting_its_files() {
    let lake = Lake::new();
    for id in 1..=3 {
        lake.post_events(&[contact(id)]).await;
        lake.flush().await;
    }
    let dir = lake.close();
    // A lake as written before tables had logs.
    for table in hooklake::flatten::TABLE_NAMES {
        let _ = std::fs::remove_dir_all(dir.path().join(table).join("_delta_log"));
    }
    let file = dir
        .path()
        .join("raw_events/date=2026-03-04/part-000000000002.parquet");
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let lake = Lake::open_dir(dir);
    assert_eq!(delta_event_ids(lake.dir.path(), "raw_events").len(), 3);
    assert_eq!(delta_event_ids(lake.dir.path(), "contact_events").len(), 3);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before
    );
    // Flushes go on from there.
    lake.post_events(&[contact(4)]).await;
    lake.flush().await;
    assert_eq!(delta_event_ids(lake.dir.path(), "raw_events").len(), 4);
}

#[tokio::test]
async fn compacted_inputs_stay_until_the_retention_passes_and_delta_readers_never_see_them() {
    let lake = Lake::with(|c| c.vacuum_retention_secs = 3600);
    for id in 1..=3 {
        lake.post_events(&[contact(id)]).await;
        lake.flush().await;
    }
    let far = chrono::NaiveDate::from_ymd_opt(2999, 1, 1).unwrap();
    let selection = hooklake::compact::Selection {
        table: Some("raw_events".into()),
        ..Default::default()
    };
    let pass = lake
        .pipeline
        .compact(&selection, far, 1 << 28)
        .await
        .unwrap();
    assert_eq!((pass.compacted.len(), pass.vacuumed), (1, 0));
    // Within the retention a glob sees every row twice, a Delta reader once.
    assert_eq!(globbed(lake.dir.path(), "raw_events"), (6, 3));
    assert_eq!(delta_event_ids(lake.dir.path(), "raw_events").len(), 3);
    let dir = lake.close();
    // Once the retention is over, the vacuum deletes the inputs.
    let lake = Lake::open_with(dir, |c| c.vacuum_retention_secs = 0);
    let pass = lake
        .pipeline
        .compact(&selection, far, 1 << 28)
        .await
        .unwrap();
    assert_eq!((pass.compacted.len(), pass.vacuumed), (0, 3));
    assert_eq!(globbed(lake.dir.path(), "raw_events"), (3, 3));
    assert_eq!(delta_event_ids(lake.dir.path(), "raw_events").len(), 3);
}
