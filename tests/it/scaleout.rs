//! Several receivers and one deriver on a shared S3 lake (SeaweedFS): deliveries spread over
//! two receivers with redeliveries sent to the other one, a receiver killed with SIGKILL
//! mid-load and started again, a deriver crashing mid-flush and another killed mid-load, each
//! replaced by a standby; afterwards every table holds what one process given the same
//! deliveries wrote, row for row. And the lease: a deriver paused past its expiry (SIGSTOP)
//! commits nothing once it resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use hooklake::generate::{Options, leads};
use hooklake::lake::delta::Action;
use hooklake::lake::{Lake, LakeUrl};
use serde_json::Value;

use crate::seaweed::{BUCKET, Seaweed, delta_rs};
use crate::util::{Server, fixture, fixture_names, hooklake_command};

/// The settings of every process of a shared lake at `s3://lake/<prefix>`: quick flushes,
/// polls, lease and state uploads, so that a test sees takeovers within seconds, and passes of
/// a deriver that read a file or two each (a receiver's flush holds about a dozen events).
fn shared_env(store: &Seaweed, prefix: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = store
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (k, v) in [
        ("HOOKLAKE_LAKE_URL", format!("s3://{BUCKET}/{prefix}")),
        ("HOOKLAKE_FLUSH_INTERVAL_SECS", "1".into()),
        ("HOOKLAKE_DERIVE_POLL_SECS", "1".into()),
        ("HOOKLAKE_DERIVE_LEASE_SECS", "4".into()),
        ("HOOKLAKE_DERIVE_SNAPSHOT_SECS", "1".into()),
        ("HOOKLAKE_RECEIVER_TIMEOUT_SECS", "60".into()),
        ("HOOKLAKE_DERIVE_BATCH_EVENTS", "20".into()),
    ] {
        env.push((k.to_string(), v));
    }
    env
}

fn start(dir: &Path, env: &[(String, String)], role: &str) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with_args(dir, &env, &["--role", role])
}

/// `hooklake status` of the shared lake.
fn status(store: &Seaweed, prefix: &str) -> String {
    let out = hooklake_command()
        .args(["status", "--lake", &format!("s3://{BUCKET}/{prefix}")])
        .envs(store.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the receivers buffer nothing and the deriver has derived every version of
/// raw_events (as `status` says, twice in a row), after `flushed`: the slowest receiver's
/// flush interval and its next report, so that no report read predates the last delivery.
fn wait_derived(store: &Seaweed, prefix: &str, flushed: Duration, within: Duration) {
    std::thread::sleep(flushed + Duration::from_millis(1500));
    let started = Instant::now();
    let mut settled = 0;
    loop {
        let text = status(store, prefix);
        let idle = text
            .lines()
            .filter(|l| l.contains(" running on "))
            .all(|l| l.ends_with(" 0 buffered"));
        if idle && text.contains("(0 versions behind)") {
            settled += 1;
            if settled == 2 {
                return;
            }
        } else {
            settled = 0;
        }
        assert!(
            started.elapsed() < within,
            "not derived within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
}

/// Every row of a Delta table (local path or `s3://` URL) as sorted JSON texts, without the
/// columns in `drop`; with `distinct`, each row once.
fn rows(uri: &str, options: &Value, drop: &[&str], distinct: bool) -> Vec<String> {
    let script = r#"
import json, sys
from deltalake import DeltaTable
uri, options, drop, distinct = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "1"
try:
    dt = DeltaTable(uri, storage_options=options)
except Exception as e:
    if type(e).__name__ == "TableNotFoundError":
        print("[]")
        raise SystemExit
    raise
table = dt.to_pyarrow_table()
names = [n for n in table.column_names if n not in drop]
def keep(r):
    # An event without a time of its own is filed at its receive time, which differs
    # between setups: it is compared as "the receive time".
    if r.get("received_at") is not None and r.get("event_time") == r["received_at"]:
        r["event_time"] = r["date"] = "received"
    return json.dumps({n: r[n] for n in names}, sort_keys=True, default=str)
rows = [keep(r) for r in table.to_pylist()]
if distinct:
    rows = list(set(rows))
print(json.dumps(sorted(rows)))
"#;
    let drop = serde_json::to_string(drop).unwrap();
    let distinct = if distinct { "1" } else { "0" };
    serde_json::from_value(delta_rs(
        script,
        uri,
        &[&options.to_string(), &drop, distinct],
    ))
    .unwrap()
}

/// Each contact's last lead score (the row with the highest revision): `lead_scores` has a row
/// per flush in which a score changed, so its history depends on where flushes fall.
fn last_scores(all: &[String]) -> BTreeMap<i64, (Value, Value)> {
    let mut last: BTreeMap<i64, (i64, Value, Value)> = BTreeMap::new();
    for row in all {
        let row: Value = serde_json::from_str(row).unwrap();
        let contact = row["contact_id"].as_i64().unwrap();
        let revision = row["revision"].as_i64().unwrap_or(0);
        if last.get(&contact).is_none_or(|(r, _, _)| revision > *r) {
            last.insert(
                contact,
                (revision, row["score"].clone(), row["band"].clone()),
            );
        }
    }
    last.into_iter().map(|(c, (_, s, b))| (c, (s, b))).collect()
}

/// The deliveries: the sample payloads and generated leads' on-time deliveries, then their
/// late ones (posted once the rest is written, so that they are late in both setups).
fn deliveries() -> (Vec<String>, Vec<String>) {
    let all = leads(Options {
        contacts: 24,
        seed: 21,
        days: 3,
    })
    .collect::<Vec<_>>();
    let mut on_time: Vec<String> = fixture_names().iter().map(|n| fixture(n)).collect();
    let mut late = Vec::new();
    for delivery in all.iter().flat_map(|l| &l.deliveries) {
        match delivery.late {
            false => on_time.push(delivery.payload.to_string()),
            true => late.push(delivery.payload.to_string()),
        }
    }
    (on_time, late)
}

/// Whether delivery `i` is sent a second time, to the other receiver.
fn redelivered(i: usize) -> bool {
    i % 5 == 3
}

/// Posts `body` and returns the event ids the answer acknowledges.
async fn post(server: &Server, body: &str) -> Vec<String> {
    let (status, answer) = server.post(body).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_and_a_deriver_write_what_one_process_writes() {
    let store = Seaweed::start();
    let (on_time, late) = deliveries();
    assert!(on_time.len() > 100 && !late.is_empty(), "{}", late.len());

    // One process, the same deliveries in the same order, the redeliveries included.
    let local = tempfile::tempdir().unwrap();
    let one = Server::start(local.path());
    let mut acked_one = BTreeSet::new();
    for (i, body) in on_time.iter().enumerate() {
        acked_one.extend(post(&one, body).await);
        if redelivered(i) {
            post(&one, body).await;
        }
    }
    assert!(
        one.hooklake(&["flush", "--url", &one.base])
            .status
            .success()
    );
    for body in &late {
        acked_one.extend(post(&one, body).await);
    }
    assert!(one.terminate().success());

    // The shared lake: two receivers, a deriver that crashes in its first flush between two
    // tables' Delta commits, and a standby.
    let env = shared_env(&store, "shared");
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // The second receiver flushes less often: its events reach raw_events seconds after the
    // first receiver's later ones, and the deriver must wait for them (its watermark).
    let mut slow = env.clone();
    slow.push(("HOOKLAKE_FLUSH_INTERVAL_SECS".into(), "3".into()));
    let mut receivers = vec![
        Some(start(dirs[0].path(), &env, "ingest")),
        Some(start(dirs[1].path(), &slow, "ingest")),
    ];
    let mut crashing = env.clone();
    crashing.push((
        "HOOKLAKE_CRASH_AT".into(),
        "flush-between-delta-commits".into(),
    ));
    let first = start(dirs[2].path(), &crashing, "derive");
    let standby = start(dirs[3].path(), &env, "derive");
    let mut third = None;
    let mut acked = BTreeSet::new();
    let kill_receiver_at = on_time.len() * 2 / 5;
    let restart_receiver_at = on_time.len() * 3 / 5;
    let kill_deriver_at = on_time.len() * 7 / 10;
    for (i, body) in on_time.iter().enumerate() {
        if i == kill_receiver_at {
            // SIGKILL mid-load: what it acknowledged is in its log, and reaches the lake
            // when it starts again.
            receivers[0].take().unwrap().kill();
        }
        if i == restart_receiver_at {
            receivers[0] = Some(start(dirs[0].path(), &env, "ingest"));
        }
        if i == kill_deriver_at {
            // By now the first deriver crashed and the standby holds the lease: a third
            // stands by, and the holder is killed mid-load.
            let log = standby.log_after("holding the deriver lease");
            assert!(log.contains("holding the deriver lease"), "{log}");
            third = Some(start(dirs[4].path(), &env, "derive"));
            std::thread::sleep(Duration::from_millis(300));
        }
        // Paced, so that the deriver works while deliveries arrive.
        tokio::time::sleep(Duration::from_millis(80)).await;
        let alive: Vec<&Server> = receivers.iter().flatten().collect();
        let to = alive[i % alive.len()];
        acked.extend(post(to, body).await);
        if redelivered(i) {
            let other = alive[(i + 1) % alive.len()];
            acked.extend(post(other, body).await);
        }
        if i == kill_deriver_at {
            signal(&standby, "-KILL");
        }
    }
    wait_derived(
        &store,
        "shared",
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    for (i, body) in late.iter().enumerate() {
        let alive: Vec<&Server> = receivers.iter().flatten().collect();
        acked.extend(post(alive[i % alive.len()], body).await);
    }
    wait_derived(
        &store,
        "shared",
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let third = third.unwrap();
    let third_log = third.log_after("holding the deriver lease");
    assert!(
        third_log.contains("holding the deriver lease"),
        "{third_log}"
    );
    for receiver in receivers.into_iter().flatten() {
        assert!(receiver.terminate().success());
    }
    assert!(third.terminate().success());
    let crashed = first.wait();
    assert!(
        !crashed.success(),
        "the first deriver was to crash mid-flush"
    );
    assert_eq!(acked, acked_one, "the same events are acknowledged");

    // Every table, row for row (receive times aside: each setup received at its own time, and
    // an event without a time of its own is filed at its receive time).
    let text = status(&store, "shared");
    assert!(text.contains("receivers: 0 reporting (2 known)"), "{text}");
    let options = store.delta_rs_options();
    for table in hooklake::flatten::TABLE_NAMES {
        let drop = ["received_at"];
        // raw_events keeps each receiver's copy of a redelivery: compared as distinct rows.
        let distinct = table == "raw_events";
        let shared = rows(
            &format!("s3://{BUCKET}/shared/{table}"),
            &options,
            &drop,
            distinct,
        );
        let expected = rows(
            &local.path().join(table).display().to_string(),
            &Value::Object(Default::default()),
            &drop,
            distinct,
        );
        if table == "lead_scores" {
            assert!(!expected.is_empty());
            assert_eq!(last_scores(&shared), last_scores(&expected), "{table}");
            continue;
        }
        assert_eq!(shared.len(), expected.len(), "{table}");
        assert_eq!(shared, expected, "{table}");
    }
    // Each table held rows; the change tables too.
    for table in [
        "contact_events",
        "attribute_changes",
        "status_transitions",
        "call_events",
    ] {
        let n = rows(
            &format!("s3://{BUCKET}/shared/{table}"),
            &options,
            &[],
            false,
        )
        .len();
        assert!(n > 10, "{table}: {n} rows");
    }
}

/// Sends `signal` to `server`.
fn signal(server: &Server, signal: &str) {
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Every commit of every derived table's log: (writer tag of its files, commit time in ms).
async fn derived_commits(store: &Seaweed, prefix: &str) -> Vec<(String, i64)> {
    let url = LakeUrl::parse(&format!("s3://{BUCKET}/{prefix}")).unwrap();
    let lake = Lake::open(&url, &store.options()).unwrap();
    let mut commits = Vec::new();
    for table in hooklake::flatten::TABLE_NAMES {
        if ["raw_events", "rejected_events"].contains(&table) {
            continue;
        }
        let delta = lake.table(table);
        let mut version = 0;
        while let Some(actions) = delta.commit_actions(version).await.unwrap() {
            let at = actions
                .iter()
                .find_map(|a| match a {
                    Action::CommitInfo(info) => info["timestamp"].as_i64(),
                    _ => None,
                })
                .unwrap_or_default();
            for action in &actions {
                if let Action::Add(add) = action {
                    let name = add.path.rsplit('/').next().unwrap_or_default();
                    let tag = hooklake::sink::writer_tag_of(name).unwrap_or_default();
                    commits.push((tag.to_string(), at));
                }
            }
            version += 1;
        }
    }
    commits
}

/// Posts `bodies` to `receiver`, noting what it acknowledged, and waits until it is derived.
async fn post_and_derive(
    store: &Seaweed,
    receiver: &Server,
    bodies: &[String],
    acked: &mut BTreeSet<String>,
) {
    for body in bodies {
        acked.extend(post(receiver, body).await);
    }
    wait_derived(
        store,
        "paused",
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deriver_paused_past_its_lease_commits_nothing_once_it_resumes() {
    let store = Seaweed::start();
    let env = shared_env(&store, "paused");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let receiver = start(dirs[0].path(), &env, "ingest");
    let holder = start(dirs[1].path(), &env, "derive");
    let log = holder.log_after("holding the deriver lease");
    assert!(log.contains("holding the deriver lease"), "{log}");
    let standby = start(dirs[2].path(), &env, "derive");
    let batches: Vec<Vec<String>> = [31, 32, 33]
        .into_iter()
        .map(|seed| {
            leads(Options {
                contacts: 6,
                seed,
                days: 2,
            })
            .flat_map(|l| l.deliveries)
            .filter(|d| !d.late)
            .map(|d| d.payload.to_string())
            .collect()
        })
        .collect();
    let mut acked = BTreeSet::new();
    post_and_derive(&store, &receiver, &batches[0], &mut acked).await;

    // Each role says what it does: the receiver its watermark, the deriver its lease and
    // progress, the standby that it waits.
    let ready = |server: &Server| {
        let base = server.base.clone();
        async move {
            let (status, text) = hooklake::client::send(&base, "GET", "/readyz", b"")
                .await
                .unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let (code, body) = ready(&receiver).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["role"], "ingest", "{body}");
    assert!(
        body["watermark_age_secs"].as_f64().unwrap() < 10.0,
        "{body}"
    );
    let (code, body) = ready(&holder).await;
    assert_eq!(
        (code, &body["lease"], &body["lag_events"]),
        (200, &"holding".into(), &0.into()),
        "{body}"
    );
    assert!(body["raw_events_version"].as_i64().unwrap() >= 0, "{body}");
    let (_, body) = ready(&standby).await;
    assert_eq!(body["lease"], "standby", "{body}");
    let metrics = hooklake::client::send(&holder.base, "GET", "/metrics", b"")
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains("hooklake_deriver_lease_held 1"),
        "{metrics}"
    );

    // Paused while holding the lease: the standby takes it over once it expires (4 s).
    signal(&holder, "-STOP");
    let log = standby.log_after("holding the deriver lease");
    assert!(log.contains("holding the deriver lease"), "{log}");
    post_and_derive(&store, &receiver, &batches[1], &mut acked).await;
    let resumed_at = chrono::Utc::now().timestamp_millis();
    signal(&holder, "-CONT");
    let log = holder.log_after("the deriver lease is lost");
    assert!(log.contains("the deriver lease is lost"), "{log}");
    post_and_derive(&store, &receiver, &batches[2], &mut acked).await;

    // Nothing of the paused deriver's was committed after it resumed; the standby committed.
    let tag: String = std::fs::read_to_string(dirs[1].path().join("_hooklake/instance-id"))
        .unwrap()
        .trim()
        .chars()
        .take(16)
        .collect();
    let commits = derived_commits(&store, "paused").await;
    assert!(commits.iter().any(|(t, _)| *t == tag), "{commits:?}");
    assert!(commits.iter().any(|(t, _)| *t != tag), "{commits:?}");
    let late: Vec<_> = commits
        .iter()
        .filter(|(t, at)| *t == tag && *at >= resumed_at)
        .collect();
    assert!(late.is_empty(), "committed after resuming: {late:?}");
    // And every acknowledged event is derived once.
    let options = store.delta_rs_options();
    let mut derived: Vec<String> = ["contact_events", "call_events", "call_outcomes"]
        .iter()
        .flat_map(|t| {
            crate::seaweed::delta_event_ids_at(&format!("s3://{BUCKET}/paused/{t}"), &options)
        })
        .collect();
    derived.sort();
    let acked: Vec<String> = acked.into_iter().collect();
    assert_eq!(derived, acked);
    assert!(receiver.terminate().success());
    assert!(standby.terminate().success());
    assert!(holder.terminate().success());
}
