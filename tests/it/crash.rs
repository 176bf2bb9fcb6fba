//! Crash safety of the real binary: SIGKILL at random moments, restarts on the same directory,
//! and a DuckDB check that every acknowledged event is in the tables exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hooklake::client;

use crate::util::{Server, delta_event_ids, duckdb, scan};

/// Events sent in all.
const EVENTS: usize = 8000;
/// Concurrent clients.
const CLIENTS: usize = 12;
/// Rounds that end with SIGKILL, before a last one that ends with SIGTERM.
const KILL_ROUNDS: u64 = 6;

/// A small deterministic generator, so a failing run can be repeated.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn body(n: usize) -> String {
    format!(
        r#"[{{"id": {n}, "previewId": "contact_{n:06}", "status": "QUALIFIED", "hookType": "Contact created",
             "createdAt": "2026-03-04T10:00:00.000Z", "updatedAt": "2026-03-04T10:{:02}:{:02}.000Z"}}]"#,
        (n / 60) % 60,
        n % 60
    )
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Event bodies still to deliver (never answered 200).
    queue: VecDeque<usize>,
    /// Event number -> event id, for every delivery answered 200 (accepted or duplicate).
    acked: BTreeMap<usize, String>,
    /// Deliveries answered 200 as duplicates.
    duplicates: usize,
}

/// Sends from the queue until `stop`; a failed delivery goes back to the queue, like iClosed's
/// retries; now and then an acknowledged event is delivered again.
async fn client(base: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Lcg(seed);
    while !stop.load(Ordering::Relaxed) {
        let next = {
            let mut l = ledger.lock().unwrap();
            if rng.next(10) == 0 && !l.acked.is_empty() {
                let nth = rng.next(l.acked.len() as u64) as usize;
                l.acked.keys().nth(nth).copied()
            } else {
                l.queue.pop_front()
            }
        };
        let Some(n) = next else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        match client::send(&base, "POST", "/webhooks/iclosed", body(n).as_bytes()).await {
            Ok((200, text)) => {
                let ack: serde_json::Value = serde_json::from_str(&text).unwrap();
                let id = ack["event_ids"][0].as_str().unwrap().to_string();
                let mut l = ledger.lock().unwrap();
                if ack["duplicates"] == 1 {
                    l.duplicates += 1;
                }
                if let Some(previous) = l.acked.insert(n, id.clone()) {
                    assert_eq!(previous, id, "event {n} changed id");
                }
            }
            _ => {
                {
                    let mut l = ledger.lock().unwrap();
                    if !l.acked.contains_key(&n) {
                        l.queue.push_back(n);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// The lines in which a server reported what it recovered at start.
fn recovery_lines(server: &Server) -> Vec<String> {
    let log = server.log.lock().unwrap();
    log.iter()
        .filter(|l| l.contains("recovered from the write-ahead log"))
        .cloned()
        .collect()
}

async fn run_round(
    server: &Server,
    ledger: &Arc<Mutex<Ledger>>,
    seed: u64,
    until: impl std::future::Future<Output = ()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|c| {
            tokio::spawn(client(
                server.base.clone(),
                ledger.clone(),
                stop.clone(),
                seed * 100 + c,
            ))
        })
        .collect();
    until.await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_written_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Frequent flushes, so kills land before, during and after flushes.
    let env = [
        ("HOOKLAKE_FLUSH_MAX_ROWS", "40"),
        ("HOOKLAKE_FLUSH_INTERVAL_SECS", "1"),
    ];
    let ledger = Arc::new(Mutex::new(Ledger {
        queue: (0..EVENTS).collect(),
        ..Default::default()
    }));
    let mut rng = Lcg(2026);
    let mut recoveries: Vec<String> = Vec::new();
    for round in 0..KILL_ROUNDS {
        let server = Server::start_with(dir.path(), &env);
        recoveries.extend(recovery_lines(&server));
        let lifetime = Duration::from_millis(100 + rng.next(300));
        run_round(&server, &ledger, round, tokio::time::sleep(lifetime)).await;
        // The clients have stopped; kill while the server may still be flushing.
        server.kill();
    }
    let acked_before_last = ledger.lock().unwrap().acked.len();
    assert!(
        acked_before_last > 0,
        "no request was acknowledged before the kills"
    );

    // A last run delivers everything left, then shuts down gracefully.
    let server = Server::start_with(dir.path(), &env);
    recoveries.extend(recovery_lines(&server));
    let drained = {
        let ledger = ledger.clone();
        async move {
            for _ in 0..6000 {
                if ledger.lock().unwrap().acked.len() == EVENTS {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the last run did not deliver every event within 60 s");
        }
    };
    run_round(&server, &ledger, KILL_ROUNDS, drained).await;
    assert!(server.terminate().success());

    let ledger = ledger.lock().unwrap();
    assert_eq!(ledger.acked.len(), EVENTS);
    assert!(
        ledger.duplicates > 0,
        "the test should have redelivered acknowledged events"
    );
    let expected: BTreeSet<&str> = ledger.acked.values().map(String::as_str).collect();
    for table in ["raw_events", "contact_events"] {
        let rows = duckdb(&format!(
            "select event_id, count(*) as n from {} group by event_id",
            scan(dir.path(), table)
        ));
        let mut written = BTreeSet::new();
        for row in &rows {
            let id = row["event_id"].as_str().unwrap();
            assert_eq!(
                row["n"], 1,
                "{table}: event {id} written {} times",
                row["n"]
            );
            written.insert(id);
        }
        assert_eq!(
            written, expected,
            "{table}: the acknowledged events, each exactly once"
        );
        let snapshot = delta_event_ids(dir.path(), table);
        assert_eq!(
            snapshot.iter().map(String::as_str).collect::<Vec<_>>(),
            written.iter().copied().collect::<Vec<_>>(),
            "{table}: the Delta snapshot holds the acknowledged events, each exactly once"
        );
    }
    // The kills must have left acknowledged but unflushed events for the log to bring back.
    assert!(
        !recoveries.is_empty(),
        "no restart recovered anything from the log"
    );
    eprintln!(
        "crash test: {EVENTS} events, {KILL_ROUNDS} kills, {acked_before_last} acknowledged before the last run, \
         {} duplicate deliveries answered; recoveries:\n{}",
        ledger.duplicates,
        recoveries.join("\n")
    );
}

/// Each crash point of a flush, hit deterministically: after a restart every acknowledged event
/// is written exactly once, and redeliveries are recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_flush_loses_and_duplicates_nothing() {
    use crate::util::fixture;
    // Fixtures whose rows fall in several partitions and tables, so a flush has many files.
    let names = [
        "contact_created.json",
        "contact_updated_multi.json",
        "call_cancelled.json",
        "call_outcome.json",
    ];
    for point in [
        "flush-before-rename",
        "flush-between-renames",
        "flush-after-renames",
        "flush-between-delta-commits",
        "flush-after-delta-commits",
        "flush-after-commit",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(dir.path(), &[("HOOKLAKE_CRASH_AT", point)]);
        let mut ids = BTreeSet::new();
        for name in names {
            let (status, ack) = server.post(&fixture(name)).await;
            assert_eq!(status, 200, "{ack}");
            ids.insert(ack["event_ids"][0].as_str().unwrap().to_string());
        }
        let flush = server.hooklake(&["flush", "--url", &server.base]);
        assert!(
            !flush.status.success(),
            "{point}: the flush should have crashed the server"
        );
        let log = server.log.clone();
        let status = server.wait();
        assert!(!status.success(), "{point}: {status}");
        // It died at the point, not of something else before it.
        let aborted = format!("HOOKLAKE_CRASH_AT={point}: aborting");
        assert!(
            log.lock().unwrap().iter().any(|l| l.contains(&aborted)),
            "{point}: {:?}",
            log.lock().unwrap()
        );

        let server = Server::start(dir.path());
        for name in names {
            let (status, ack) = server.post(&fixture(name)).await;
            assert_eq!(status, 200, "{ack}");
            assert_eq!(
                ack["duplicates"], 1,
                "{point}: a redelivery after the crash must be a duplicate: {ack}"
            );
        }
        assert!(server.terminate().success());
        // Every acknowledged event is in its table once: the two contact fixtures, the call, the
        // outcome, and all four raw.
        for (table, events) in [
            ("raw_events", 4),
            ("contact_events", 2),
            ("call_events", 1),
            ("call_outcomes", 1),
        ] {
            let rows = duckdb(&format!(
                "select event_id, count(*) as n from {} group by event_id",
                scan(dir.path(), table)
            ));
            assert_eq!(rows.len(), events, "{point}: {table}: {rows:?}");
            assert!(
                rows.iter().all(|r| r["n"] == 1),
                "{point}: {table} has a duplicate: {rows:?}"
            );
            assert!(
                rows.iter()
                    .all(|r| ids.contains(r["event_id"].as_str().unwrap())),
                "{point}: {table}: {rows:?}"
            );
            // The table's Delta snapshot, read by delta-rs, holds the same rows, each once.
            let mut globbed: Vec<String> = rows
                .iter()
                .map(|r| r["event_id"].as_str().unwrap().to_string())
                .collect();
            globbed.sort();
            assert_eq!(
                delta_event_ids(dir.path(), table),
                globbed,
                "{point}: {table}: the Delta snapshot"
            );
        }
        let raw = duckdb(&format!(
            "select count(*) as n from {}",
            scan(dir.path(), "raw_events")
        ));
        assert_eq!(
            raw[0]["n"],
            names.len(),
            "{point}: every acknowledged event is in raw_events"
        );
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Where a log segment's records end (what follows is its zero-filled prepared space).
fn written_len(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
}

/// The newest log segment of a data directory.
fn last_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("_hooklake/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupt_log_tail_is_reported_and_the_server_starts() {
    use crate::util::fixture;
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "contact_created.json",
        "call_scheduled.json",
        "call_outcome.json",
    ];
    let server = Server::start(dir.path());
    for name in names {
        let (status, _) = client::send(
            &server.base,
            "POST",
            "/webhooks/iclosed",
            fixture(name).as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
    }
    server.kill();

    // A torn write: half a record header right after the last record, in the segment's
    // prepared zeros.
    let segment = last_segment(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    let complete = written_len(&data);
    data[complete..complete + 6].copy_from_slice(&[0x2a, 0, 0, 0, 0x11, 0x22]);
    std::fs::write(&segment, &data).unwrap();
    let server = Server::start(dir.path());
    let (_, metrics) = client::send(&server.base, "GET", "/metrics", b"")
        .await
        .unwrap();
    assert!(
        metrics.contains("\nhooklake_wal_damage_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nhooklake_recovered_events_total 3\n"),
        "{metrics}"
    );
    let log = server.log_after("truncated 6 bytes");
    assert!(
        log.contains("checksum mismatch") && log.contains("truncated 6 bytes"),
        "{log}"
    );
    server.kill();
    let after = std::fs::read(&segment).unwrap();
    assert_eq!(written_len(&after), complete, "the torn tail is cut off");
    assert_eq!(after[..complete], data[..complete]);

    // Disk damage: a flipped bit in the last record. That record is lost, reported, and the
    // server still starts with the others.
    let mut data = after;
    let last = complete - 3;
    data[last] ^= 0x01;
    std::fs::write(&segment, &data).unwrap();
    let server = Server::start(dir.path());
    let log = server.log_after("checksum mismatch");
    assert!(log.contains("checksum mismatch"), "{log}");
    assert!(server.terminate().success());
    let rows = duckdb(&format!(
        "select count(*) as n from {}",
        scan(dir.path(), "raw_events")
    ));
    assert_eq!(rows[0]["n"], 2);
}
