//! A full disk under load: a small tmpfs that the test fills while requests and flushes go on,
//! first right before a flush's state-store commit, then while Parquet files are written, and
//! frees again. Ingestion and flushing must resume by themselves, and every acknowledged event
//! must be in the tables exactly once. Mounting needs root; the test says why it skips otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hooklake::pipeline::{FlushReason, Pipeline, Triggers};
use tokio_util::sync::CancellationToken;

use crate::util::{Lake, duckdb, scan};

/// A tmpfs mounted on a temporary directory for the life of the value; unmounted when dropped,
/// also when the test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB, or says why it cannot.
    fn mount(mib: u64) -> Result<Tmpfs, String> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, so no tmpfs can be mounted".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file still open (a failed test's pipeline) must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the file system has no byte left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![1u8; chunk];
        while file.write_all(&block).is_ok() {}
    }
}

/// Waits (polling) until `done` holds; panics with `what` after 30 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Posts one contact event after another, each with a new contact id, until `stop`, counting
/// acknowledgements in `acks`; returns the ids answered 200 and how many were answered 503.
async fn load(
    lake: Arc<Lake>,
    first: i64,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> (Vec<i64>, u64) {
    let (mut acked, mut refused) = (Vec::new(), 0);
    let mut id = first;
    while !stop.load(Ordering::Relaxed) {
        let body = format!(
            r#"[{{"id": {id}, "previewId": "p{id}", "status": "POTENTIAL", "updatedAt": "2026-03-04T10:00:00Z"}}]"#
        );
        let answer = lake.post("/webhooks/iclosed", body).await;
        match answer.status {
            StatusCode::OK => {
                acked.push(id);
                acks.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                // A refused client backs off a little, as iClosed's retries do.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
        id += 1;
    }
    (acked, refused)
}

fn flushes(pipeline: &Pipeline, result: &str) -> u64 {
    pipeline.metrics().get("hooklake_flushes_total", result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_load_stops_flushes_until_space_returns_and_loses_nothing() {
    let tmpfs = match Tmpfs::mount(48) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let data_dir: PathBuf = tmpfs.path().join("lake");
    let filler = tmpfs.path().join("filler");
    // The guard off: flushes run into the full disk, which is what this test is about (the
    // guard's hold-back has tests of its own).
    let lake = Arc::new(Lake::with(|c| {
        c.data_dir = data_dir.clone();
        c.min_free_bytes = 0;
    }));
    let pipeline = lake.pipeline.clone();
    let start_triggers = || {
        let stop = CancellationToken::new();
        let task = tokio::spawn(pipeline.clone().run_triggers(
            Triggers {
                interval: Some(Duration::from_millis(100)),
                schedule: None,
            },
            stop.clone(),
        ));
        (stop, task)
    };
    let (stop_triggers, triggers) = start_triggers();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|k| {
            let first = k * 100_000_000 + 1;
            tokio::spawn(load(lake.clone(), first, stop.clone(), acks.clone()))
        })
        .collect();
    let ok_flushes = |n: u64| {
        let pipeline = pipeline.clone();
        move || flushes(&pipeline, "ok") >= n
    };
    until("a first flush", ok_flushes(1)).await;

    // The disk fills between a flush's renames and its commit.
    let fill_at = filler.clone();
    pipeline.before_next_commit(move || fill(&fill_at));
    until("a failed commit", || flushes(&pipeline, "failed") >= 1).await;
    let problem = pipeline.flush_problem().unwrap();
    assert!(
        problem.contains("state store") && problem.contains("No space left on device"),
        "{problem}"
    );
    // Whatever the failed commit's outcome, a glob reader and a Delta reader see the same files:
    // each published file is live in its table's Delta log and each live file is published, so
    // no Delta reader meets a missing file (a flush whose commit outcome cannot be read yet
    // leaves its files where the logs name them; one known not to be recorded is reverted).
    let live = hooklake::pipeline::live_local_files(&data_dir).unwrap();
    for table in hooklake::flatten::TABLE_NAMES {
        let mut published = hooklake::sink::published_files(&data_dir, table).unwrap();
        published.sort();
        let mut logged = live[table].clone().unwrap_or_default();
        logged.sort();
        assert_eq!(published, logged, "{table}");
    }
    let ready = lake.request("GET", "/readyz", "").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    std::fs::remove_file(&filler).unwrap();
    let ok = flushes(&pipeline, "ok");
    until("a flush after the commit failure", ok_flushes(ok + 1)).await;
    until("readiness", || pipeline.flush_problem().is_none()).await;

    // The disk fills while no flush runs: the next one cannot write its Parquet files.
    stop_triggers.cancel();
    triggers.await.unwrap();
    until("buffered events", || {
        pipeline.gauges(true).buffer_events > 0
    })
    .await;
    fill(&filler);
    let err = pipeline.flush(FlushReason::Manual).await.unwrap_err();
    assert!(
        err.to_string().contains("parquet") && err.to_string().contains("No space left"),
        "{err}"
    );
    let (stop_triggers, triggers) = start_triggers();
    std::fs::remove_file(&filler).unwrap();
    let ok = flushes(&pipeline, "ok");
    until("a flush after the write failure", ok_flushes(ok + 1)).await;

    // Requests are answered 200 again by themselves.
    let before = acks.load(Ordering::Relaxed);
    until("new acknowledgements", || {
        acks.load(Ordering::Relaxed) > before + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut refused = 0;
    for loader in loaders {
        let (ids, n) = loader.await.unwrap();
        acked.extend(ids);
        refused += n;
    }
    stop_triggers.cancel();
    triggers.await.unwrap();
    pipeline.flush(FlushReason::Shutdown).await.unwrap();
    assert_eq!(pipeline.gauges(true).buffer_events, 0);

    // Every acknowledged event is in the tables exactly once, and nothing else is.
    for (table, column) in [
        ("contact_events", "contact_id"),
        (
            "raw_events",
            "CAST(json_extract(payload, '$.id') AS BIGINT)",
        ),
    ] {
        let rows = duckdb(&format!(
            "SELECT {column} AS id, count(*) AS n FROM {} GROUP BY 1",
            scan(&data_dir, table)
        ));
        let counts: BTreeMap<i64, u64> = rows
            .iter()
            .map(|r| (r["id"].as_i64().unwrap(), r["n"].as_u64().unwrap()))
            .collect();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "{table}: rows written twice: {twice:?}");
        let mut expected = acked.clone();
        expected.sort();
        let written: Vec<i64> = counts.keys().copied().collect();
        assert_eq!(
            written.len(),
            expected.len(),
            "{table}: {} acknowledged, {} written ({refused} refused)",
            expected.len(),
            written.len()
        );
        assert_eq!(written, expected, "{table}");
    }
    println!(
        "{} events acknowledged, {refused} refused; flushes: {} ok, {} failed",
        acked.len(),
        flushes(&pipeline, "ok"),
        flushes(&pipeline, "failed")
    );
    pipeline.close();
}
