//! The real binary with its lake on S3 (SeaweedFS started here): `serve` and `replay` write the
//! same rows to an `s3://` lake as to a local one, as delta-rs reads each table back; a crash at
//! each new point of a remote flush loses and repeats nothing; and an outage of the store under
//! load ends with every acknowledged event in each table exactly once.

use std::collections::BTreeMap;
use std::path::Path;

use hooklake::flatten::TABLE_NAMES;
use hooklake::generate::{Options, leads};

use crate::seaweed::{BUCKET, SECRET_KEY, Seaweed, delta_event_ids_at};
use crate::util::{Server, delta_event_ids, fixture, fixture_names, hooklake_command};

/// Every delivery of the tests: the sample payloads, then generated leads.
fn deliveries() -> Vec<String> {
    let mut bodies: Vec<String> = fixture_names().iter().map(|n| fixture(n)).collect();
    bodies.extend(
        leads(Options {
            contacts: 15,
            seed: 5,
            days: 3,
        })
        .flat_map(|l| l.deliveries)
        .map(|d| d.payload.to_string()),
    );
    bodies
}

/// The event ids of every table of a local lake.
fn local_tables(dir: &Path) -> BTreeMap<&'static str, Vec<String>> {
    TABLE_NAMES
        .iter()
        .map(|t| (*t, delta_event_ids(dir, t)))
        .collect()
}

/// The event ids of every table of the lake at `s3://lake/<prefix>`.
fn remote_tables(store: &Seaweed, prefix: &str) -> BTreeMap<&'static str, Vec<String>> {
    TABLE_NAMES
        .iter()
        .map(|t| {
            let uri = format!("s3://{BUCKET}/{prefix}/{t}");
            (*t, delta_event_ids_at(&uri, &store.delta_rs_options()))
        })
        .collect()
}

/// The environment of a `hooklake` process whose lake is `s3://lake/<prefix>`.
fn remote_env(store: &Seaweed, prefix: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = store
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push((
        "HOOKLAKE_LAKE_URL".into(),
        format!("s3://{BUCKET}/{prefix}"),
    ));
    env
}

fn start(dir: &Path, env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(dir, &env)
}

/// Posts every body; returns the event ids acknowledged (accepted or duplicate).
async fn post_all(server: &Server, bodies: &[String]) -> Vec<String> {
    let mut acked = Vec::new();
    for body in bodies {
        let (status, answer) = server.post(body).await;
        assert_eq!(status, 200, "{answer}");
        for id in answer["event_ids"].as_array().into_iter().flatten() {
            acked.push(id.as_str().unwrap_or_default().to_string());
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_the_same_tables_to_s3_as_to_local_disk() {
    let store = Seaweed::start();
    let bodies = deliveries();

    // Both lakes get the same deliveries flushed at the same point: lead_scores has a row per
    // score change per flush, so its rows depend on where the flushes fall.
    let half = bodies.len() / 2;
    let local = tempfile::tempdir().unwrap();
    let server = Server::start(local.path());
    post_all(&server, &bodies[..half]).await;
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(flush.status.success(), "{flush:?}");
    post_all(&server, &bodies[half..]).await;
    assert!(server.terminate().success());

    let remote = tempfile::tempdir().unwrap();
    let server = start(remote.path(), &remote_env(&store, "e2e"));
    post_all(&server, &bodies[..half]).await;
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(flush.status.success(), "{flush:?}");
    post_all(&server, &bodies[half..]).await;
    let log = server.log.clone();
    assert!(server.terminate().success());

    let expected = local_tables(local.path());
    assert!(
        expected["contact_events"].len() > 10 && expected["call_events"].len() > 5,
        "{expected:?}"
    );
    assert_eq!(remote_tables(&store, "e2e"), expected);
    // DuckDB's delta extension, a second reader, reads the same rows.
    for table in TABLE_NAMES {
        let uri = format!("s3://{BUCKET}/e2e/{table}");
        assert_eq!(
            crate::seaweed::duckdb_event_ids_at(&store, &uri),
            expected[table],
            "{table} read by DuckDB"
        );
    }
    // `hooklake query` on the S3 lake: the same answers as on the local lake. The DuckDB CLI
    // reads S3 through httpfs, installed from the wheel's file (this machine downloads no
    // extension); that file is built for DuckDB 1.5.5, so that CLI runs here.
    let (cli, httpfs) = duckdb_1_5_5();
    for query in ["latest_status", "daily_events", "funnel"] {
        let local_answer = hooklake_command()
            .args(["query", query, "--format", "json", "--data"])
            .arg(local.path())
            .output()
            .unwrap();
        let remote_answer = hooklake_command()
            .args(["query", query, "--format", "json", "--duckdb", &cli])
            .args(["--data", &format!("s3://{BUCKET}/e2e")])
            .envs(store.env())
            .env("HOOKLAKE_DUCKDB_EXTENSIONS", format!("[\"{httpfs}\"]"))
            .output()
            .unwrap();
        assert!(
            remote_answer.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&remote_answer.stderr)
        );
        let rows = |out: &std::process::Output| -> serde_json::Value {
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
        };
        assert!(
            rows(&local_answer)
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{query}"
        );
        assert_eq!(rows(&remote_answer), rows(&local_answer), "{query} on S3");
    }
    // The report of the S3 lake is the local lake's page.
    let page = |data: &str, remote: bool| {
        let out = remote_dir_page(data, remote, &store, &cli, &httpfs);
        // The time the page was made is the one line that may differ.
        out.lines()
            .filter(|l| !l.contains("UTC"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let local_page = page(local.path().to_str().unwrap(), false);
    assert!(
        local_page.matches("<svg").count() >= 5,
        "the period has data: charts are drawn"
    );
    assert_eq!(page(&format!("s3://{BUCKET}/e2e"), true), local_page);
    // Nothing of the lake is left on the local disk but the staging directory, empty.
    assert!(!remote.path().join("contact_events").exists());
    let staged: Vec<_> = walk(&remote.path().join("_hooklake/staging"));
    assert!(staged.is_empty(), "{staged:?}");
    // The secret is in no log line.
    let log = log.lock().unwrap().join("\n");
    assert!(!log.contains(SECRET_KEY), "{log}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[test]
fn replay_writes_the_same_tables_to_s3_as_to_local_disk() {
    let store = Seaweed::start();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.ndjson");
    let lines: Vec<String> = fixture_names()
        .iter()
        .map(|n| serde_json::from_str::<serde_json::Value>(&fixture(n)).unwrap()[0].to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let replay = |dir: &Path, env: &[(String, String)]| {
        let out = hooklake_command()
            .arg("--data-dir")
            .arg(dir)
            .arg("replay")
            .arg(&input)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let local = work.path().join("local");
    replay(&local, &[]);
    let remote = work.path().join("remote");
    let log = replay(&remote, &remote_env(&store, "replayed"));
    assert!(!log.contains(SECRET_KEY), "{log}");
    let expected = local_tables(&local);
    assert!(!expected["raw_events"].is_empty());
    assert_eq!(remote_tables(&store, "replayed"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_point_of_a_remote_flush_loses_and_repeats_nothing() {
    let store = Seaweed::start();
    let bodies = deliveries();
    let points = [
        "upload-mid-batch",
        "flush-after-upload",
        "flush-after-delta-commits",
    ];
    for (round, point) in points.iter().enumerate() {
        let prefix = format!("crash{round}");
        let dir = tempfile::tempdir().unwrap();
        let mut env = remote_env(&store, &prefix);
        env.push(("HOOKLAKE_CRASH_AT".into(), point.to_string()));
        let server = start(dir.path(), &env);
        let mut acked = post_all(&server, &bodies[..20]).await;
        // The flush reaches the crash point and the process aborts.
        let _ = server.hooklake(&["flush", "--url", &server.base]);
        assert!(
            !server.wait().success(),
            "{point}: the process did not crash"
        );
        // Restarted without the crash point: recovery, more deliveries, a clean stop.
        let server = start(dir.path(), &remote_env(&store, &prefix));
        acked.extend(post_all(&server, &bodies[20..40]).await);
        assert!(server.terminate().success());
        let mut acked: Vec<String> = acked.into_iter().collect();
        acked.sort();
        acked.dedup();
        let raw = remote_tables(&store, &prefix)["raw_events"].clone();
        assert_eq!(
            raw, acked,
            "{point}: raw_events is not every acknowledged event once"
        );
    }
}

/// `/readyz`'s status and body.
async fn readyz(server: &Server) -> (u16, String) {
    hooklake::client::send(&server.base, "GET", "/readyz", b"")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_store_under_load_ends_with_every_acknowledged_event_once() {
    let mut store = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = remote_env(&store, "outage");
    env.push(("HOOKLAKE_FLUSH_INTERVAL_SECS".into(), "1".into()));
    // A request to the store that is down fails within seconds rather than minutes.
    env.push(("HOOKLAKE_LAKE_MAX_RETRIES".into(), "1".into()));
    env.push(("HOOKLAKE_LAKE_RETRY_TIMEOUT_SECS".into(), "3".into()));
    let server = start(dir.path(), &env);
    let bodies = deliveries();
    let (before, during) = bodies.split_at(bodies.len() / 3);
    let mut acked = post_all(&server, before).await;
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(flush.status.success(), "{flush:?}");

    // The store goes away for 30 s under load: deliveries are still acknowledged (from the
    // log), flushes fail and back off (1, 2, 4, 8, 16 s apart), and /readyz says why.
    store.stop();
    let outage = std::time::Instant::now();
    let mut reason = String::new();
    for chunk in during.chunks(during.len().div_ceil(25)) {
        acked.extend(post_all(&server, chunk).await);
        let (status, body) = readyz(&server).await;
        if status == 503 && reason.is_empty() {
            reason = body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    }
    assert!(
        reason.contains("flush"),
        "readyz during the outage: {reason:?}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(30).saturating_sub(outage.elapsed())).await;

    // Back: a flush gets through within the longest back-off (at most a minute), and
    // readiness returns.
    store.resume();
    let mut ready = false;
    for _ in 0..700 {
        if readyz(&server).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "not ready 70 s after the store came back");
    let log = server.log.clone();
    assert!(server.terminate().success());
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.matches("flush failed").count() >= 2,
        "fewer than two failed flushes logged: {log}"
    );

    // Every acknowledged event is in raw_events once, and no table with one row per event has
    // an id twice.
    let tables = remote_tables(&store, "outage");
    let mut want: Vec<String> = acked;
    want.sort();
    want.dedup();
    assert_eq!(tables["raw_events"], want);
    for table in [
        "contact_events",
        "call_events",
        "call_outcomes",
        "status_transitions",
    ] {
        let ids = &tables[table];
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(&unique, ids, "{table}: an id twice");
        assert!(!ids.is_empty(), "{table}");
    }
}

/// How many files the Delta snapshot of the table at `uri` holds, as delta-rs reads it.
fn delta_files(store: &Seaweed, uri: &str) -> usize {
    let script = r#"
import json, sys
from deltalake import DeltaTable
print(json.dumps(len(DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])).file_uris())))
"#;
    crate::seaweed::delta_rs(script, uri, &[&store.delta_rs_options().to_string()])
        .as_u64()
        .unwrap() as usize
}

#[test]
fn compaction_merges_a_remote_lakes_closed_partitions_and_keeps_every_row() {
    let store = Seaweed::start();
    let work = tempfile::tempdir().unwrap();
    let lines: Vec<String> = leads(Options {
        contacts: 60,
        seed: 9,
        days: 2,
    })
    .flat_map(|l| l.deliveries)
    .map(|d| d.payload.to_string())
    .collect();
    // One file per 25 lines: replay flushes when a file's batch fills the buffer past
    // replay_flush_max_rows, so each file is a flush of its own.
    let inputs: Vec<String> = lines
        .chunks(25)
        .enumerate()
        .map(|(i, chunk)| {
            let path = work.path().join(format!("in-{i:03}.ndjson"));
            std::fs::write(&path, chunk.join("\n") + "\n").unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let mut env = remote_env(&store, "compacted");
    // Many small flushes, so each partition has many files; replaced files go at once.
    env.push(("HOOKLAKE_REPLAY_FLUSH_MAX_ROWS".into(), "20".into()));
    env.push(("HOOKLAKE_VACUUM_RETENTION_SECS".into(), "0".into()));
    let data = work.path().join("data");
    let run = |args: &[&str]| {
        let out = hooklake_command()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut replay = vec!["replay"];
    replay.extend(inputs.iter().map(String::as_str));
    run(&replay);
    let before = remote_tables(&store, "compacted");
    let uri = format!("s3://{BUCKET}/compacted/contact_events");
    let files_before = delta_files(&store, &uri);
    assert!(files_before >= 20, "{files_before} files");

    let summary = run(&["compact"]);
    assert!(summary.contains("contact_events"), "{summary}");
    // The same rows in every table, read by delta-rs, in far fewer files.
    assert_eq!(remote_tables(&store, "compacted"), before);
    let files_after = delta_files(&store, &uri);
    assert!(
        files_after * 4 <= files_before,
        "{files_before} files before, {files_after} after"
    );
    // Nothing is left staged on the local disk.
    let staged = walk(&data.join("_hooklake/staging"));
    assert!(staged.is_empty(), "{staged:?}");
    // A second pass finds nothing more to merge.
    run(&["compact"]);
    assert_eq!(delta_files(&store, &uri), files_after);
    assert_eq!(remote_tables(&store, "compacted"), before);
}

/// The DuckDB 1.5.5 CLI and its httpfs extension file (from the PyPI wheels scripts/test.sh
/// installs: the CLI under ~/.cache/hooklake/duckdb-cli-1.5.5, the extension with the Python
/// duckdb of that version).
fn duckdb_1_5_5() -> (String, String) {
    let home = std::env::var("HOME").unwrap();
    let cli = format!("{home}/.cache/hooklake/duckdb-cli-1.5.5/duckdb_cli/duckdb");
    assert!(
        Path::new(&cli).is_file(),
        "{cli} is missing: scripts/test.sh installs it (pip install --target ~/.cache/hooklake/duckdb-cli-1.5.5 duckdb-cli==1.5.5)"
    );
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, duckdb_extension_httpfs as h; print(os.path.join(os.path.dirname(h.__file__), 'extensions', 'v1.5.5', 'httpfs.duckdb_extension'))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb-extension-httpfs 1.5.5 is missing (scripts/test.sh installs it)"
    );
    (
        cli,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// `hooklake report` of the lake at `data` for February and March 2026, as HTML.
fn remote_dir_page(data: &str, remote: bool, store: &Seaweed, cli: &str, httpfs: &str) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut command = hooklake_command();
    command
        .args([
            "report",
            "--from",
            "2026-02-01",
            "--to",
            "2026-03-31",
            "--data",
            data,
        ])
        .arg("--out")
        .arg(out.path());
    if remote {
        command
            .args(["--duckdb", cli])
            .envs(store.env())
            .env("HOOKLAKE_DUCKDB_EXTENSIONS", format!("[\"{httpfs}\"]"));
    }
    let run = command.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_an_s3_lake_are_replayed_once() {
    let store = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = remote_env(&store, "letters");
    env.push((
        "HOOKLAKE_AUTH_TOKENS".into(),
        "[\"tok-0123456789abcdef\"]".into(),
    ));
    env.push(("HOOKLAKE_MAX_EVENTS_PER_REQUEST".into(), "2".into()));
    let server = start(dir.path(), &env);
    // Three events in one body, over the limit of two: refused, and kept as a dead letter.
    let events: Vec<serde_json::Value> = leads(Options {
        contacts: 3,
        seed: 2,
        days: 1,
    })
    .map(|l| l.deliveries[0].payload.clone())
    .collect();
    let body = serde_json::Value::Array(events).to_string();
    let (status, answer) = hooklake::client::send(
        &server.base,
        "POST",
        "/t/tok-0123456789abcdef/webhooks/iclosed",
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{answer}");
    assert!(server.terminate().success());
    let tables = remote_tables(&store, "letters");
    assert_eq!(tables["rejected_events"].len(), 1);
    assert!(tables["raw_events"].is_empty());

    // With the limit raised, the dead letter's events go to the S3 lake, once.
    let replay = || {
        let out = hooklake_command()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["replay", "--rejected"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HOOKLAKE_MAX_EVENTS_PER_REQUEST", "10")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = replay();
    assert_eq!(
        remote_tables(&store, "letters")["raw_events"].len(),
        3,
        "{first}"
    );
    let second = replay();
    assert!(second.contains("already replayed: 1"), "{second}");
    assert_eq!(remote_tables(&store, "letters")["raw_events"].len(), 3);
    // The local copy is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn a_remote_lake_is_rebuilt_into_a_new_lake_and_left_as_it_is() {
    let store = Seaweed::start();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.ndjson");
    let lines: Vec<String> = deliveries()
        .iter()
        .flat_map(
            |b| match serde_json::from_str::<serde_json::Value>(b).unwrap() {
                serde_json::Value::Array(items) => items,
                one => vec![one],
            },
        )
        .map(|v| v.to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let env = remote_env(&store, "rb");
    let data = work.path().join("data");
    let run = |args: &[&str]| {
        hooklake_command()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let out = run(&["replay", input.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let before = remote_tables(&store, "rb");
    assert!(!before["contact_events"].is_empty());

    // Without a new lake to write to, a clear error.
    let out = run(&["rebuild"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--into-lake"),
        "{out:?}"
    );

    let rebuilt_dir = work.path().join("rebuilt");
    let target = format!("s3://{BUCKET}/rb2");
    let out = run(&[
        "rebuild",
        "--into",
        rebuilt_dir.to_str().unwrap(),
        "--into-lake",
        &target,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&format!("rebuilt lake: {target}")), "{text}");
    // The same rows in the new lake (lead scores follow the flush sizes: their history may
    // differ, so only their contacts are compared); the source is untouched.
    let after = remote_tables(&store, "rb2");
    for table in TABLE_NAMES {
        if table == "lead_scores" {
            continue;
        }
        assert_eq!(after[table], before[table], "{table}");
    }
    assert_eq!(remote_tables(&store, "rb"), before);
    // Into a lake that already holds tables: refused.
    let out = run(&[
        "rebuild",
        "--into",
        work.path().join("again").to_str().unwrap(),
        "--into-lake",
        &target,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tables"));
}
