//! Workflow triggers end to end: the `hooklake` binary with `[[triggers]]` sends its facts to a
//! target server on loopback that checks every signature, fails and stalls on purpose, and
//! records what it received. Every matching fact of a generated stream (as the lake's own
//! tables, read with DuckDB, say) is delivered, one `webhook-id` per fact, after retries; no
//! other; none lost across a kill -9 at a flush or at a delivery.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::util::{Server, duckdb, scan};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the target received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    body: Value,
    signed: bool,
}

#[derive(Default)]
struct TargetState {
    requests: Vec<Received>,
    attempts: HashMap<String, u32>,
    /// While false, `/gone` answers 503.
    gone_is_back: bool,
}

/// A webhook receiver on loopback. `/flaky` fails the first 0, 1 or 2 attempts at each id (by
/// the id's last digit), stalling past the sender's timeout on some first attempts; `/gone`
/// answers 503 until told otherwise.
struct Target {
    base: String,
    state: Arc<Mutex<TargetState>>,
}

fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", get("webhook-id"), get("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let fresh = get("webhook-timestamp")
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh && get("webhook-signature").split(' ').any(|s| s == expected)
}

impl Target {
    async fn start() -> Target {
        let state = Arc::new(Mutex::new(TargetState::default()));
        async fn handle(
            State(state): State<Arc<Mutex<TargetState>>>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let path = uri.path().to_string();
            let (attempt, back) = {
                let mut s = state.lock().unwrap();
                s.requests.push(Received {
                    path: path.clone(),
                    id: id.clone(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    signed: signature_ok(&headers, &body),
                });
                let n = s.attempts.entry(id.clone()).or_default();
                *n += 1;
                (*n, s.gone_is_back)
            };
            if path == "/gone" {
                return if back {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
            }
            let digit = u32::from_str_radix(&id[id.len().saturating_sub(1)..], 16).unwrap_or(0);
            let failures = digit % 3;
            if attempt <= failures {
                if attempt == 1 && digit % 5 == 0 {
                    // Past the sender's one-second timeout: a failed attempt it never hears.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    return StatusCode::OK;
                }
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            StatusCode::OK
        }
        let app = axum::Router::new()
            .fallback(axum::routing::post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Target { base, state }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// The configuration file: four triggers on the flaky target, one on the gone one.
fn config(dir: &Path, target: &Target) -> std::path::PathBuf {
    let path = dir.join("hooklake.toml");
    let base = &target.base;
    std::fs::write(
        &path,
        format!(
            r#"
flush_interval_secs = 1
min_free_bytes = 0

[trigger_delivery]
timeout_secs = 1
retry_schedule_secs = [1, 1, 1]

[[triggers]]
name = "qualified"
on = "status"
to = ["QUALIFIED"]
url = "{base}/flaky"
secrets = ["{SECRET}"]

[[triggers]]
name = "email-changed"
on = "attribute"
attributes = ["email"]
url = "{base}/flaky"
secrets = ["{SECRET}"]

[[triggers]]
name = "booked-or-no-show"
on = "call"
calls = ["booked", "no_show"]
url = "{base}/flaky"
secrets = ["{SECRET}"]

[[triggers]]
name = "hot"
on = "score"
bands = ["hot"]
url = "{base}/flaky"
secrets = ["{SECRET}"]

[[triggers]]
name = "won"
on = "call"
calls = ["won"]
url = "{base}/gone"
secrets = ["{SECRET}"]
"#
        ),
    )
    .unwrap();
    path
}

/// What each trigger should fire on, from the lake's tables: trigger -> row keys.
fn expected(data: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let queries = [
        (
            "qualified",
            format!(
                "SELECT 'status_transitions/' || event_id AS k FROM {} WHERE upper(to_status) = 'QUALIFIED' AND NOT late",
                scan(data, "status_transitions")
            ),
        ),
        (
            "email-changed",
            format!(
                "SELECT 'attribute_changes/' || event_id || '/' || attribute AS k FROM {} WHERE attribute = 'email' AND detected AND NOT late",
                scan(data, "attribute_changes")
            ),
        ),
        (
            "booked-or-no-show",
            format!(
                "SELECT 'call_events/' || event_id AS k FROM {} WHERE event_type = 'call_booked' \
                 UNION ALL SELECT 'call_outcomes/' || event_id FROM {} WHERE upper(no_sale_reason) = 'NO_SHOW'",
                scan(data, "call_events"),
                scan(data, "call_outcomes")
            ),
        ),
        (
            "hot",
            format!(
                "SELECT 'lead_scores/' || event_id || '/' || contact_id || '/' || revision AS k FROM {} \
                 WHERE band = 'hot' AND previous_band IS DISTINCT FROM 'hot'",
                scan(data, "lead_scores")
            ),
        ),
        (
            "won",
            format!(
                "SELECT 'call_outcomes/' || event_id AS k FROM {} WHERE upper(outcome) IN ('SALE', 'WON')",
                scan(data, "call_outcomes")
            ),
        ),
    ];
    queries
        .into_iter()
        .map(|(trigger, sql)| {
            let keys: Vec<String> = duckdb(&sql)
                .into_iter()
                .map(|r| r["k"].as_str().unwrap().to_string())
                .collect();
            let set: BTreeSet<String> = keys.iter().cloned().collect();
            assert_eq!(set.len(), keys.len(), "{trigger}: a row twice in the lake");
            (trigger.to_string(), set)
        })
        .collect()
}

/// The row key a request's body names.
fn key_of(body: &Value) -> String {
    let table = body["type"].as_str().unwrap();
    let row = &body["data"];
    let event = row["event_id"].as_str().unwrap();
    match table {
        "attribute_changes" => format!("{table}/{event}/{}", row["attribute"].as_str().unwrap()),
        "lead_scores" => format!("{table}/{event}/{}/{}", row["contact_id"], row["revision"]),
        _ => format!("{table}/{event}"),
    }
}

/// Per trigger, the row keys of the ids received (one key per id, one id per key).
fn delivered(requests: &[Received]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_id: HashMap<&str, (String, String)> = HashMap::new();
    for r in requests {
        let trigger = r.body["trigger"].as_str().unwrap().to_string();
        let key = key_of(&r.body);
        let seen = by_id.entry(&r.id).or_insert((trigger.clone(), key.clone()));
        assert_eq!(*seen, (trigger, key), "one webhook-id, two facts");
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (trigger, key) in by_id.into_values() {
        assert!(
            out.entry(trigger).or_default().insert(key),
            "one fact, two webhook-ids"
        );
    }
    out
}

async fn post_all(server: &Server, events: &[Value]) {
    for chunk in events.chunks(25) {
        let (status, answer) = server.post(&Value::Array(chunk.to_vec()).to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
}

fn events(contacts: i64, seed: u64) -> Vec<Value> {
    hooklake::generate::in_time_order(hooklake::generate::Options {
        contacts,
        seed,
        days: 3,
    })
}

/// Waits until every fact of `want` (on the flaky target) has a 2xx-answered id.
async fn wait_for(target: &Target, want: &BTreeMap<String, BTreeSet<String>>) {
    let flaky: usize = want
        .iter()
        .filter(|(t, _)| *t != "won")
        .map(|(_, keys)| keys.len())
        .sum();
    for _ in 0..600 {
        let got = delivered(
            &target
                .requests()
                .into_iter()
                .filter(|r| r.path == "/flaky")
                .collect::<Vec<_>>(),
        );
        let n: usize = got.values().map(BTreeSet::len).sum();
        if n >= flaky {
            // Delivered means answered 2xx: the last attempt at every id got one.
            let s = target.state.lock().unwrap();
            let done = s.attempts.iter().all(|(id, n)| {
                let digit = u32::from_str_radix(&id[id.len() - 1..], 16).unwrap_or(0);
                s.requests.iter().any(|r| r.id == *id && r.path == "/gone") || *n > digit % 3
            });
            if done {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every fact was delivered within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_fact_is_delivered_once_per_id_after_retries_and_recorded() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), &target);
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    post_all(&server, &events(150, 11)).await;
    let out = server.hooklake(&["flush", "--url", &server.base]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = expected(&data);
    for (trigger, keys) in &want {
        assert!(!keys.is_empty(), "the stream has no fact for {trigger}");
    }
    wait_for(&target, &want).await;

    // The gone target never answered 2xx: its deliveries are given up after 1 + 3 attempts.
    let won = want["won"].len();
    for _ in 0..100 {
        let gone = target
            .requests()
            .iter()
            .filter(|r| r.path == "/gone")
            .count();
        if gone >= won * 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = target.requests();
    assert!(
        requests.iter().all(|r| r.signed),
        "a request without a valid signature"
    );
    let gone: Vec<&Received> = requests.iter().filter(|r| r.path == "/gone").collect();
    assert_eq!(gone.len(), won * 4, "attempts at the gone target");
    let got = delivered(&requests);
    assert_eq!(got, want, "facts received differ from the lake's");

    // Every attempt is in trigger_deliveries, once, with its outcome.
    let out = server.hooklake(&["flush", "--url", &server.base]);
    assert!(out.status.success());
    let rows = duckdb(&format!(
        "SELECT trigger, webhook_id, attempt, outcome, status_code FROM {} ORDER BY ALL",
        scan(&data, "trigger_deliveries")
    ));
    assert_eq!(
        rows.len(),
        requests.len(),
        "one row per request the target saw"
    );
    // The flaky target made the sender retry, after error statuses and after timeouts.
    let retried = duckdb(&format!(
        "SELECT count(*) FILTER (WHERE outcome = 'retrying' AND status_code = 500) AS statuses, \
         count(*) FILTER (WHERE outcome = 'retrying' AND error = 'timed out') AS timeouts, \
         count(*) FILTER (WHERE outcome = 'delivered' AND attempt > 1) AS late_deliveries FROM {}",
        scan(&data, "trigger_deliveries")
    ));
    for what in ["statuses", "timeouts", "late_deliveries"] {
        assert!(
            retried[0][what].as_u64().unwrap() > 0,
            "no {what}: {retried:?}"
        );
    }
    let given_up = rows.iter().filter(|r| r["outcome"] == "given_up").count();
    assert_eq!(given_up, won);
    let delivered_rows = rows.iter().filter(|r| r["outcome"] == "delivered").count();
    assert_eq!(
        delivered_rows,
        want.values().map(BTreeSet::len).sum::<usize>() - won
    );

    // Sent again on demand, the gone target now answering: every one delivered.
    target.state.lock().unwrap().gone_is_back = true;
    let out = server.hooklake(&[
        "triggers",
        "retry",
        "--trigger",
        "won",
        "--url",
        &server.base,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("\"requeued\":{won}")),
        "{text}"
    );
    for _ in 0..100 {
        if target
            .requests()
            .iter()
            .filter(|r| r.path == "/gone")
            .count()
            >= won * 5
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        target
            .requests()
            .iter()
            .filter(|r| r.path == "/gone")
            .count(),
        won * 5
    );
    let status = server.terminate();
    assert!(status.success());
    let rows = duckdb(&format!(
        "SELECT count(*) AS n FROM {} WHERE trigger = 'won' AND outcome = 'delivered' AND attempt = 5",
        scan(&data, "trigger_deliveries")
    ));
    assert_eq!(rows[0]["n"], won as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_a_flush_or_a_delivery_loses_no_fact() {
    for point in [
        "flush-after-delta-commits",
        "flush-after-commit",
        "delivery-after-send",
    ] {
        let target = Target::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = config(dir.path(), &target);
        let args = ["--config", config.to_str().unwrap()];
        let server = Server::start_with_args(&data, &[("HOOKLAKE_CRASH_AT", point)], &args);
        let stream = events(40, 5);
        let (first, rest) = stream.split_at(stream.len() / 2);
        // Posted until the server aborts (what it did not acknowledge is not in the lake, and
        // the expected facts are read from the lake).
        for chunk in first.chunks(25) {
            let body = Value::Array(chunk.to_vec()).to_string();
            match hooklake::client::send(&server.base, "POST", "/webhooks/iclosed", body.as_bytes())
                .await
            {
                Ok((200, _)) => {}
                _ => break,
            }
        }
        // The interval flush (and then the first delivery) reaches the crash point.
        let log = server.log.clone();
        let status = server.wait();
        assert!(!status.success(), "{point}: the server should have aborted");
        let aborted = format!("HOOKLAKE_CRASH_AT={point}: aborting");
        assert!(
            log.lock().unwrap().iter().any(|l| l.contains(&aborted)),
            "{point}: not aborted there"
        );
        let sent_before = target.requests().len();
        let server = Server::start_with_args(&data, &[], &args);
        post_all(&server, rest).await;
        let out = server.hooklake(&["flush", "--url", &server.base]);
        assert!(out.status.success(), "{point}");
        let want = expected(&data);
        wait_for(&target, &want).await;
        let got = delivered(
            &target
                .requests()
                .into_iter()
                .filter(|r| r.path == "/flaky")
                .collect::<Vec<_>>(),
        );
        let mut flaky = want.clone();
        flaky.remove("won");
        assert_eq!(got, flaky, "{point}: facts received differ from the lake's");
        if point == "delivery-after-send" {
            // Every request made before the crash ended without its record (the first to end
            // aborted the process): each was sent again after the restart, same id.
            let requests = target.requests();
            assert!(sent_before >= 1);
            let (before, after) = requests.split_at(sent_before);
            for r in before {
                assert!(
                    after.iter().any(|a| a.id == r.id),
                    "{} was not sent again",
                    r.id
                );
            }
        }
        server.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_test_sends_a_signed_sample_and_prints_the_answer() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &target);
    let config1 = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::hooklake_command()
            .args([
                "--config",
                config1.to_str().unwrap(),
                "triggers",
                "test",
                "hot",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = target.requests();
    let sample = requests.last().expect("the target got the sample");
    assert!(
        sample.signed && sample.id.starts_with("msg_test_"),
        "{sample:?}"
    );
    assert_eq!(sample.body["type"], "lead_scores");
    assert_eq!(sample.body["data"]["band"], "hot");
    // The flaky target fails the first attempts at some ids: the command says what it got.
    let status = if out.status.success() { "200" } else { "500" };
    assert!(
        text.contains(&format!("answer: HTTP {status}")) || text.contains("no answer"),
        "{text}"
    );
    // The gone target answers 503: the command fails, naming the answer.
    let config2 = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::hooklake_command()
            .args([
                "--config",
                config2.to_str().unwrap(),
                "triggers",
                "test",
                "won",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("answer: HTTP 503"));
    // An unknown name is an error that says so.
    let out = crate::util::hooklake_command()
        .args([
            "--config",
            config.to_str().unwrap(),
            "triggers",
            "test",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no trigger named \"nope\""));
}
