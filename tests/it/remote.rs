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
