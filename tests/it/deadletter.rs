//! Dead letters: authenticated bodies that cannot be turned into events get their 4xx and are
//! kept in `rejected_events` (without credentials, as durably as events); `replay --rejected`
//! feeds them back exactly once; a body that does not arrive in time gets 408.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::util::{Lake, Response, Server, duckdb, scalar, scan};

const TOKEN: &str = "s3cret-token-0123456789";
const HMAC: &str = "hmac-secret-abcdef";

fn guarded(c: &mut hooklake::config::Config) {
    c.auth_tokens = vec![TOKEN.into()];
    c.hmac_secrets = vec![HMAC.into()];
    c.max_body_bytes = 4096;
    c.max_events_per_request = 2;
    c.rejected_body_max_bytes = 1000;
}

/// POSTs `body` to `uri` with credentials in every place a client may put them.
async fn post(lake: &Lake, uri: &str, body: Vec<u8>) -> Response {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("cookie", format!("session={TOKEN}"))
        .header("x-signature", "sha256=00ff")
        .header("x-forwarded-token", TOKEN)
        .header("x-note", format!("carries {TOKEN} inside"))
        .header("x-request-id", "req-42")
        .body(Body::from(body))
        .unwrap();
    crate::util::send(&lake.router, request).await
}

/// Three contact objects in one body (small, so only the event limit refuses them).
fn three_contacts() -> Vec<u8> {
    let objects: Vec<Value> = (1..=3)
        .map(|n| json!({"id": n, "previewId": format!("contact_{n}"), "status": "POTENTIAL"}))
        .collect();
    serde_json::to_vec(&objects).unwrap()
}

#[tokio::test]
async fn authenticated_bad_bodies_are_kept_without_credentials_and_replayed_once() {
    let lake = Lake::with(guarded);
    let path = format!("/t/{TOKEN}/webhooks/iclosed");
    let mut oversized = b"[".to_vec();
    oversized.extend(std::iter::repeat_n(b' ', 5000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "invalid_json",
            br#"{"id": 1,"#.to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "invalid_utf8",
            b"{\"a\": \"\xff\xfe\"}".to_vec(),
            400,
            "UTF-8",
        ),
        ("wrong_shape", b"42".to_vec(), 422, "JSON number"),
        ("too_large", oversized, 413, "larger than the limit of 4096"),
        ("too_many_events", three_contacts(), 413, "holds 3 events"),
    ];
    let mut errors = serde_json::Map::new();
    for (reason, body, status, message) in &cases {
        let r = post(&lake, &path, body.clone()).await;
        assert_eq!(r.status.as_u16(), *status, "{reason}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(message), "{reason}: {error}");
        errors.insert(reason.to_string(), error.into());
    }
    // Refused credentials (401) are never kept, bad body or not.
    let r = lake.post("/t/wrong-token/webhooks/iclosed", "{").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_dead_letters_total{result=\"stored\"} 5"),
        "{metrics}"
    );

    // An acknowledged dead letter survives a crash: restart without a flush, recover from the log.
    let lake = lake.restart();
    let report = lake.flush().await;
    assert_eq!(report["rejected"], 5, "{report}");
    assert_eq!(report["events"], 0, "{report}");

    // A second file in the same partition, then compaction merges them (bodies stay bytes).
    // (The restarted lake has no secrets configured: every request counts as authenticated.)
    let r = lake.post("/webhooks/iclosed", "[]").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(lake.flush().await["rejected"], 1);
    let far = chrono::NaiveDate::from_ymd_opt(2999, 1, 1).unwrap();
    let selection = hooklake::compact::Selection {
        table: Some("rejected_events".into()),
        ..Default::default()
    };
    let done = lake
        .pipeline
        .compact(&selection, far, 1 << 28)
        .await
        .unwrap()
        .compacted;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].rows, 6, "{done:?}");
    let empty_array =
        lake.query("select count(*) from {rejected_events} where reason = 'empty_array'");
    assert_eq!(scalar(&empty_array), 1);

    let rows = lake.query(
        "select reason, status, error, source_path, url_kind, headers, hex(body) as body_hex,
                body_utf8, body_truncated, body_bytes, event_type, event_time = received_at as same
         from {rejected_events} where reason != 'empty_array' order by reason",
    );
    assert_eq!(rows.len(), 5, "{rows:?}");
    let by_reason = |reason: &str| {
        rows.iter()
            .find(|r| r["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} row in {rows:?}"))
    };
    for (reason, body, status, _) in &cases {
        let row = by_reason(reason);
        assert_eq!(row["status"], *status, "{row:?}");
        assert_eq!(row["error"], errors[*reason], "the 4xx message: {row:?}");
        assert_eq!(row["source_path"], "/t/***/webhooks/iclosed");
        assert_eq!(row["url_kind"], Value::Null);
        assert_eq!(row["event_type"], "rejected");
        assert_eq!(row["same"], true, "partitioned by date of receipt");
        let headers: Value = serde_json::from_str(row["headers"].as_str().unwrap()).unwrap();
        assert_eq!(headers["x-request-id"], "req-42", "{headers}");
        assert_eq!(headers["content-type"], "application/json", "{headers}");
        for gone in [
            "authorization",
            "cookie",
            "x-signature",
            "x-forwarded-token",
            "x-note",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} kept: {headers}");
        }
        let kept = body.len().min(1000);
        let expected_hex: String = body[..kept].iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(row["body_hex"], expected_hex.as_str(), "{reason}");
        assert_eq!(row["body_bytes"], body.len(), "{reason}");
        assert_eq!(row["body_truncated"], body.len() > 1000, "{reason}");
        assert_eq!(row["body_utf8"], *reason != "invalid_utf8", "{reason}");
    }
    // No secret anywhere in the table, in any column.
    let leaks = lake.query(&format!(
        "select count(*) from (select source_path || headers || error || reason
                || coalesce(url_kind, '') || body::varchar as text from {{rejected_events}})
         where contains(text, '{TOKEN}') or contains(text, '{HMAC}')"
    ));
    assert_eq!(scalar(&leaks), 0);

    // Raise the event limit and replay: the three contacts are written, once.
    let dir = lake.close();
    let replay = |env: &[(&str, &str)]| {
        let out = crate::util::hooklake_command()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["replay", "--rejected"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, summary) = replay(&[("HOOKLAKE_MAX_EVENTS_PER_REQUEST", "10")]);
    assert_eq!(code, Some(3), "the others still fail: {summary}");
    assert!(summary.contains("dead letters found: 6"), "{summary}");
    assert!(summary.contains("replayed now: 1"), "{summary}");
    assert!(summary.contains("still failing: 5"), "{summary}");
    assert!(summary.contains("events accepted: 3"), "{summary}");
    assert!(
        summary.contains("body is not valid UTF-8"),
        "still-failing ones say why: {summary}"
    );
    assert!(
        summary.contains("kept truncated"),
        "a truncated body cannot be replayed: {summary}"
    );
    let contacts = || {
        scalar(&duckdb(&format!(
            "select count(*) from {}",
            scan(dir.path(), "contact_events")
        )))
    };
    assert_eq!(contacts(), 3);
    let source = duckdb(&format!(
        "select distinct source_path from {}",
        scan(dir.path(), "raw_events")
    ));
    assert_eq!(scalar(&source), "/t/***/webhooks/iclosed");

    // A second run replays nothing new and writes nothing.
    let (_, again) = replay(&[("HOOKLAKE_MAX_EVENTS_PER_REQUEST", "10")]);
    assert!(again.contains("already replayed: 1"), "{again}");
    assert!(again.contains("replayed now: 0"), "{again}");
    assert!(again.contains("events accepted: 0"), "{again}");
    assert_eq!(contacts(), 3, "nothing doubles");
    // --since after every receipt finds nothing.
    let (code, later) = {
        let out = crate::util::hooklake_command()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["replay", "--rejected", "--since", "2999-01-01"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{later}");
    assert!(later.contains("dead letters found: 0"), "{later}");

    // A rebuild carries the dead letters and their replay marks over.
    let scratch = tempfile::tempdir().unwrap();
    let rebuilt = scratch.path().join("rebuilt");
    let out = crate::util::hooklake_command()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("rebuild")
        .arg("--into")
        .arg(&rebuilt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = crate::util::hooklake_command()
        .arg("--data-dir")
        .arg(&rebuilt)
        .args(["replay", "--rejected"])
        .env("HOOKLAKE_MAX_EVENTS_PER_REQUEST", "10")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("dead letters found: 6"), "{summary}");
    assert!(summary.contains("already replayed: 1"), "{summary}");
    assert!(summary.contains("events accepted: 0"), "{summary}");
}

#[tokio::test]
async fn an_acknowledged_dead_letter_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HOOKLAKE_AUTH_TOKENS", "[\"kill-token-123456\"]")];
    let server = Server::start_with(dir.path(), &env);
    let (status, _) = hooklake::client::send(
        &server.base,
        "POST",
        "/t/kill-token-123456/webhooks/iclosed/call_booked",
        b"{\"event\": ",
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    // No flush happened: the dead letter is only in the log when the process dies.
    server.kill();
    let server = Server::start_with(dir.path(), &env);
    assert!(server.terminate().success(), "the final flush writes it");
    let rows = duckdb(&format!(
        "select reason, url_kind, source_path, decode(body) as body from {}",
        scan(dir.path(), "rejected_events")
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason"], "invalid_json");
    assert_eq!(rows[0]["url_kind"], "call_booked");
    assert_eq!(
        rows[0]["source_path"],
        "/t/***/webhooks/iclosed/call_booked"
    );
    assert_eq!(rows[0]["body"], "{\"event\": ");
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_kept_still_gets_its_4xx() {
    let lake = Lake::with(guarded);
    lake.pipeline.simulate_log_failure(true);
    let r = post(
        &lake,
        &format!("/t/{TOKEN}/webhooks/iclosed"),
        b"{".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    lake.pipeline.simulate_log_failure(false);
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_dead_letters_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert_eq!(lake.flush().await["rejected"], 0);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("HOOKLAKE_BODY_READ_TIMEOUT_SECS", "1")]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /webhooks/iclosed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n[{\"id\": 1,",
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or(json!(null));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not arrive within 1 s")),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    server.terminate();
}
