//! Compaction: files of a closed partition merged into one, sorted, duplicates removed; a late
//! event makes a new file that the next pass merges; a crash at any step loses and duplicates
//! nothing.

use std::path::Path;

use serde_json::json;

use crate::util::{Lake, delta_event_ids, duckdb, scan};

/// A contact object with two tracking parameters and two answers: tables with several rows
/// per event get two each.
fn contact(id: i64, minute: u32) -> String {
    json!([{"id": id, "previewId": format!("contact_{id}"), "status": "QUALIFIED", "hookType": "Contact created",
            "updatedAt": format!("2026-03-04T10:{minute:02}:00.000Z"),
            "tracking": {"utm_source": "ads", "utmKey_1": "fbclid", "utmValue_1": format!("f{id}"),
                         "utmKey_2": "gclid", "utmValue_2": format!("g{id}")},
            "questionsAndAnswers": {"1_question": "Budget?", "1_response": "10k",
                                    "2_question": "Team size?", "2_response": format!("{id}")}}])
    .to_string()
}

fn files(dir: &Path, partition: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(partition))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
}

/// Adds a file lying in partition `date` of `table` to the table's Delta log, as a writer that
/// put it there would (a copy of rows already written, or a damaged file).
async fn add_to_log(dir: &Path, table: &str, date: &str, name: &str) {
    use hooklake::lake::{Commit, DataFile, Lake, LakeUrl};
    let lake = Lake::open(&LakeUrl::Local(dir.to_path_buf()), &Default::default()).unwrap();
    let path = dir.join(table).join(format!("date={date}")).join(name);
    let file = DataFile {
        path: format!("date={date}/{name}"),
        date: date.to_string(),
        size: std::fs::metadata(&path).unwrap().len() as i64,
        stats: None,
    };
    let commit = Commit {
        adds: vec![file],
        data_change: true,
        operation: "WRITE",
        ..Default::default()
    };
    lake.table(table).commit(&commit).await.unwrap();
}

/// Three flushes into the same partition: three files per table.
async fn lake_with_three_files() -> Lake {
    let lake = Lake::new();
    for batch in 0..3 {
        for i in 0..5 {
            // Later flushes carry smaller ids: concatenating the files is not sorted.
            let id = 100 + (2 - batch) * 10 + i;
            let r = lake
                .post("/webhooks/iclosed", contact(id, (40 - id % 40) as u32))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        lake.flush().await;
    }
    lake
}

#[tokio::test]
async fn closed_partitions_become_one_sorted_file_and_late_events_are_merged_next_time() {
    let lake = lake_with_three_files().await;
    let partition = "contact_events/date=2026-03-04";
    assert_eq!(files(lake.dir.path(), partition).len(), 3);
    // A file glimpsed twice (a copy of one file) is cleaned up too.
    let copy_from = lake
        .dir
        .path()
        .join(partition)
        .join(&files(lake.dir.path(), partition)[0]);
    std::fs::copy(
        &copy_from,
        lake.dir
            .path()
            .join(partition)
            .join("compact-000000000999-000.parquet"),
    )
    .unwrap();
    add_to_log(
        lake.dir.path(),
        "contact_events",
        "2026-03-04",
        "compact-000000000999-000.parquet",
    )
    .await;

    // The codecs of a table's column chunks, as DuckDB reads them from the files' metadata.
    let codecs = |table: &str| -> String {
        let rows = duckdb(&format!(
            "select string_agg(distinct compression, ',' order by compression) as c \
             from parquet_metadata('{}/{table}/date=*/*.parquet')",
            lake.dir.path().display()
        ));
        rows[0]["c"].as_str().unwrap_or_default().to_string()
    };
    // Column chunks with a dictionary page.
    let dictionaries = |table: &str| -> u64 {
        let rows = duckdb(&format!(
            "select count(*) filter (where dictionary_page_offset is not null) as n \
             from parquet_metadata('{}/{table}/date=*/*.parquet')",
            lake.dir.path().display()
        ));
        rows[0]["n"].as_u64().expect("a count")
    };
    // Flush files compress their small column chunks (five payloads) with Snappy, and have no
    // dictionaries ...
    assert!(
        codecs("raw_events").contains("SNAPPY"),
        "{}",
        codecs("raw_events")
    );
    assert_eq!(dictionaries("raw_events"), 0);

    let r = lake.post("/admin/compact", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ... compacted files never: the same values, fifteen payloads, are ZSTD.
    let after = codecs("raw_events");
    assert!(
        after.contains("ZSTD") && !after.contains("SNAPPY"),
        "{after}"
    );
    // ... and have them (event_type, hook_type, source_path...), but for payload and event_id.
    assert!(dictionaries("raw_events") > 0);
    let compacted = r.json()["compacted"].as_array().unwrap().clone();
    let ours = compacted
        .iter()
        .find(|c| c["partition"] == partition)
        .unwrap();
    assert_eq!(
        (ours["files_before"].as_u64(), ours["files_after"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(ours["duplicates_removed"], 5);
    assert_eq!(files(lake.dir.path(), partition).len(), 1);
    let rows = duckdb(&format!(
        "select count(*) as n, count(distinct event_id) as ids, \
         bool_and(contact_id >= coalesce(prev, 0)) as sorted from \
         (select event_id, contact_id, lag(contact_id) over (order by file_row_number) as prev \
          from read_parquet('{}/{partition}/*.parquet', file_row_number = true))",
        lake.dir.path().display()
    ));
    assert_eq!(rows[0]["n"], 15);
    assert_eq!(rows[0]["ids"], 15);
    assert_eq!(
        rows[0]["sorted"], true,
        "rows of the compacted file are sorted by contact_id"
    );

    // A late event for the compacted partition: a new small file, merged by the next pass.
    lake.post("/webhooks/iclosed", contact(999, 59)).await;
    lake.flush().await;
    assert_eq!(files(lake.dir.path(), partition).len(), 2);
    lake.post("/admin/compact", "").await;
    assert_eq!(files(lake.dir.path(), partition).len(), 1);
    let n = duckdb(&format!(
        "select count(*) as n from {}",
        scan(lake.dir.path(), "contact_events")
    ));
    assert_eq!(n[0]["n"], 16);
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_partition_files_max{table=\"contact_events\"} 1\n"),
        "{metrics}"
    );
}

fn hooklake(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    crate::util::hooklake_command()
        .arg("--data-dir")
        .arg(dir)
        // Merged inputs are deleted by the vacuum after the pass, so a glob reads each row once.
        .env("HOOKLAKE_VACUUM_RETENTION_SECS", "0")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_crash_at_any_step_of_a_compaction_loses_and_duplicates_nothing() {
    for point in [
        "compact-after-intent",
        "compact-after-publish",
        "compact-after-commit",
    ] {
        let lake = lake_with_three_files().await;
        let dir = lake.close();
        let crashed = hooklake(
            dir.path(),
            &[("HOOKLAKE_CRASH_AT", point)],
            &["compact", "--date", "2026-03-04"],
        );
        assert!(
            String::from_utf8_lossy(&crashed.stderr)
                .contains(&format!("HOOKLAKE_CRASH_AT={point}: aborting")),
            "{point}: the compaction should have crashed there: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        // Whatever a reader sees now, every row is there (at worst twice, which queries remove).
        let ids = duckdb(&format!(
            "select count(distinct event_id) as n from {}",
            scan(dir.path(), "raw_events")
        ));
        assert_eq!(ids[0]["n"], 15, "{point}");
        // The next run recovers the interrupted compaction and compacts.
        let out = hooklake(dir.path(), &[], &["compact", "--date", "2026-03-04"]);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (table, rows_per_event) in [
            ("raw_events", 1),
            ("contact_events", 1),
            ("status_transitions", 1),
            ("tracking_params", 2),
            ("contact_answers", 2),
        ] {
            let rows = duckdb(&format!(
                "select count(*) as n, count(distinct event_id) as ids from {}",
                scan(dir.path(), table)
            ));
            assert_eq!(
                (rows[0]["n"].as_i64(), rows[0]["ids"].as_i64()),
                (Some(15 * rows_per_event), Some(15)),
                "{point}: {table}"
            );
            assert_eq!(
                files(dir.path(), &format!("{table}/date=2026-03-04")).len(),
                1,
                "{point}: {table}"
            );
            let snapshot = delta_event_ids(dir.path(), table);
            assert_eq!(
                snapshot.len() as i64,
                15 * rows_per_event,
                "{point}: {table}: the Delta snapshot"
            );
        }
    }
}

/// Rows of every table, and rows as told apart by the table's key (`event_id`, and `position`
/// or `attribute` where an event has several rows).
fn counts(dir: &Path, table: &str, key: &str) -> (i64, i64) {
    let rows = duckdb(&format!(
        "select count(*) as n, count(distinct ({key})) as k from {}",
        scan(dir, table)
    ));
    (
        rows[0]["n"].as_i64().unwrap(),
        rows[0]["k"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn compaction_keeps_every_row_of_an_event_and_drops_rows_written_twice() {
    let lake = lake_with_three_files().await;
    // Updates that change two attributes each: two attribute_changes rows per event.
    for id in [100, 110, 120] {
        let update = json!([{"id": id, "previewId": format!("contact_{id}"), "status": "DISQUALIFIED",
                             "firstName": "Ann", "hookType": "Contact updated",
                             "updatedAt": "2026-03-04T11:00:00.000Z"}]);
        let r = lake.post("/webhooks/iclosed", update.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    lake.flush().await;
    let tables = [
        ("tracking_params", "event_id, position", 30),
        ("contact_answers", "event_id, position", 30),
        ("attribute_changes", "event_id, attribute", 6),
        ("status_transitions", "event_id", 18),
    ];
    for (table, key, expected) in tables {
        assert_eq!(
            counts(lake.dir.path(), table, key),
            (expected, expected),
            "{table}"
        );
        // Every file of the partition again, as if its rows had been written twice.
        let partition = format!("{table}/date=2026-03-04");
        for (k, name) in files(lake.dir.path(), &partition).iter().enumerate() {
            let dir = lake.dir.path().join(&partition);
            let copy = format!("compact-000000000999-{k:03}.parquet");
            std::fs::copy(dir.join(name), dir.join(&copy)).unwrap();
            add_to_log(lake.dir.path(), table, "2026-03-04", &copy).await;
        }
        assert_eq!(
            counts(lake.dir.path(), table, key),
            (2 * expected, expected),
            "{table}"
        );
    }
    let r = lake.post("/admin/compact", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (table, key, expected) in tables {
        assert_eq!(
            counts(lake.dir.path(), table, key),
            (expected, expected),
            "{table}"
        );
        assert_eq!(
            files(lake.dir.path(), &format!("{table}/date=2026-03-04")).len(),
            1,
            "{table}"
        );
    }
}

#[tokio::test]
async fn the_server_compacts_closed_partitions_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start_with(
        dir.path(),
        &[
            ("HOOKLAKE_COMPACTION_INTERVAL_SECS", "1"),
            ("HOOKLAKE_VACUUM_RETENTION_SECS", "0"),
        ],
    );
    let partition = "contact_events/date=2026-03-04";
    for id in [1, 2, 3] {
        let (status, body) = server.post(&contact(id, 10)).await;
        assert_eq!(status, 200, "{body}");
        let flush = server.hooklake(&["flush", "--url", &server.base]);
        assert!(
            flush.status.success(),
            "{}",
            String::from_utf8_lossy(&flush.stderr)
        );
    }
    // The passes run every second; the partition (a day long past) becomes one file.
    let mut waited = 0;
    while files(dir.path(), partition).len() != 1 {
        assert!(
            waited < 300,
            "not compacted: {:?}",
            files(dir.path(), partition)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    let log = server.log.clone();
    assert!(server.terminate().success());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("compaction pass done")),
        "{:?}",
        log.lock().unwrap()
    );
    let (rows, keys) = counts(dir.path(), "tracking_params", "event_id, position");
    assert_eq!((rows, keys), (6, 6));
}

#[tokio::test]
async fn a_partition_that_cannot_be_read_is_skipped_and_the_others_are_compacted() {
    let lake = lake_with_three_files().await;
    let dir = lake.close();
    let bad = dir
        .path()
        .join("contact_events/date=2026-03-04/compact-000000000999-000.parquet");
    std::fs::write(&bad, b"not parquet").unwrap();
    add_to_log(
        dir.path(),
        "contact_events",
        "2026-03-04",
        "compact-000000000999-000.parquet",
    )
    .await;
    let out = hooklake(dir.path(), &[], &["compact", "--date", "2026-03-04"]);
    assert!(
        !out.status.success(),
        "a failed partition fails the command"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("contact_events/date=2026-03-04: not compacted"),
        "{stderr}"
    );
    // The tables after it were compacted all the same.
    for table in ["raw_events", "tracking_params", "status_transitions"] {
        assert_eq!(
            files(dir.path(), &format!("{table}/date=2026-03-04")).len(),
            1,
            "{table}"
        );
    }
    assert_eq!(files(dir.path(), "contact_events/date=2026-03-04").len(), 4);
    // Once the file is dealt with (removed from the log, then deleted), the next pass compacts
    // the partition.
    {
        use hooklake::lake::{Commit, Lake, LakeUrl};
        let lake = Lake::open(
            &LakeUrl::Local(dir.path().to_path_buf()),
            &Default::default(),
        );
        let commit = Commit {
            removes: vec!["date=2026-03-04/compact-000000000999-000.parquet".into()],
            data_change: true,
            operation: "DELETE",
            ..Default::default()
        };
        let table = lake.unwrap().table("contact_events");
        table.commit(&commit).await.unwrap();
    }
    std::fs::remove_file(&bad).unwrap();
    let out = hooklake(dir.path(), &[], &["compact", "--date", "2026-03-04"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(dir.path(), "contact_events/date=2026-03-04").len(), 1);
}
