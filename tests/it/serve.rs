//! The server over a real socket: the library's `serve` with an injected shutdown, and the
//! `hooklake` binary itself (serve, flush, SIGTERM).

use std::time::Duration;

use hooklake::client;
use std::sync::Arc;

use hooklake::config::Config;
use hooklake::metrics::Metrics;
use hooklake::pipeline::{Mode, Pipeline};
use serde_json::Value;

use crate::util::{Server, duckdb, fixture, scalar, scan};

#[tokio::test]
async fn shutdown_flushes_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        min_free_bytes: 0,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (pipeline, _) =
            Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Logged).unwrap();
        hooklake::server::serve(&config, pipeline, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    for name in [
        "contact_created.json",
        "call_scheduled.json",
        "call_outcome.json",
    ] {
        let (status, body) =
            client::send(&base, "POST", "/webhooks/iclosed", fixture(name).as_bytes())
                .await
                .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Nothing is on disk before shutdown (the interval is 60 s)...
    assert!(!dir.path().join("raw_events").exists());
    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.events, 3);
    // ...and everything is after.
    assert_eq!(
        scalar(&duckdb(&format!(
            "select count(*) from {}",
            scan(dir.path(), "raw_events")
        ))),
        3
    );
}

#[tokio::test]
async fn the_binary_serves_flushes_on_request_and_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, body) = client::send(&server.base, "GET", "/readyz", b"")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));

    let (status, _) = client::send(
        &server.base,
        "POST",
        "/webhooks/iclosed/contactCreated",
        fixture("contact_created.json").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let report: Value = serde_json::from_slice(&flush.stdout).unwrap();
    assert_eq!(report["events"], 1);
    assert_eq!(report["rows"]["contact_events"], 1);

    let (status, _) = client::send(
        &server.base,
        "POST",
        "/webhooks/iclosed",
        fixture("call_cancelled.json").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let exit = server.terminate();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    let rows = duckdb(&format!(
        "select event_type, count(*) as n from {} group by all order by all",
        scan(dir.path(), "raw_events")
    ));
    let counts: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![("call_cancelled".into(), 1), ("contact_created".into(), 1)]
    );
}

#[tokio::test]
async fn json_logs_have_a_line_per_accepted_event_and_per_flush() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(
        dir.path(),
        &[("HOOKLAKE_LOG", "hooklake=debug")],
        &["--log-format", "json"],
    );
    let body = fixture("contact_updated.json");
    let expected: Value = serde_json::from_str(&body).unwrap();
    let object = if expected.is_array() {
        &expected[0]
    } else {
        &expected
    };
    for _ in 0..2 {
        let (status, _) = server.post(&body).await;
        assert_eq!(status, 200);
    }
    // A request refused for its body logs no event.
    let (status, _) = server.post("[{").await;
    assert_eq!(status, 400);
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let log = server.log.clone();
    let exit = server.terminate();
    assert!(exit.success(), "{exit}");

    let lines: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with = |message: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect()
    };
    let accepted = with("event accepted");
    assert_eq!(accepted.len(), 1, "{lines:#?}");
    let fields = &accepted[0]["fields"];
    assert_eq!(accepted[0]["level"], "DEBUG");
    assert_eq!(fields["event_type"], "contact_updated");
    assert_eq!(fields["contact_id"], object["id"].to_string());
    assert_eq!(
        fields["updated_attributes"],
        object["updatedAttributes"].to_string()
    );
    assert_eq!(with("duplicate event skipped").len(), 1, "{lines:#?}");
    // The requested flush; the one at shutdown found nothing to write and logs nothing.
    let flushed = with("flushed");
    assert_eq!(flushed.len(), 1, "{lines:#?}");
    assert_eq!(flushed[0]["level"], "INFO");
    assert_eq!(flushed[0]["fields"]["events"], 1);
}

#[tokio::test]
async fn the_flush_command_sends_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = ("HOOKLAKE_ADMIN_TOKEN", "admin-0123456789");
    let server = Server::start_with(dir.path(), &[token]);
    let (status, _) = server.post(&fixture("contact_created.json")).await;
    assert_eq!(status, 200);
    let flush = |env: &[(&str, &str)]| {
        crate::util::hooklake_command()
            .envs(env.iter().copied())
            .args(["flush", "--url", &server.base])
            .output()
            .unwrap()
    };
    let without = flush(&[]);
    assert!(!without.status.success(), "no token, no flush");
    let with = flush(&[token]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let report: Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(report["events"], 1);
}

#[test]
fn flush_without_a_server_names_the_url() {
    let out = crate::util::hooklake_command()
        .args(["flush", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9/admin/flush"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_is_reported_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooklake.toml");
    std::fs::write(&path, "flush_interval = 5\n").unwrap();
    let out = crate::util::hooklake_command()
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flush_interval") && stderr.contains("hooklake.toml"),
        "{stderr}"
    );
    let out = crate::util::hooklake_command()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[test]
fn config_check_and_show_report_the_effective_configuration() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        crate::util::hooklake_command()
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap()
    };
    let ok = run(
        &[("HOOKLAKE_FLUSH_INTERVAL_SECS", "7")],
        &["config", "check"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let shown = run(
        &[("HOOKLAKE_FLUSH_INTERVAL_SECS", "7")],
        &["--data-dir", "/srv/lake", "config", "show"],
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("flush_interval_secs = 7") && text.contains("data_dir = \"/srv/lake\""),
        "{text}"
    );
    let bad = run(
        &[("HOOKLAKE_FLUSH_INTERVAL_SECS", "soon")],
        &["config", "check"],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("flush_interval_secs") && stderr.contains("HOOKLAKE_"),
        "{stderr}"
    );
    let unknown = run(&[("HOOKLAKE_FLUSH_EVERY", "5")], &["config", "check"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("HOOKLAKE_FLUSH_EVERY"));

    // A public address without a webhook secret: `serve` would refuse it, so the check does.
    let open = run(&[("HOOKLAKE_LISTEN", "0.0.0.0:8080")], &["config", "check"]);
    assert!(!open.status.success());
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("no webhook secret"),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    let token = "a-long-random-token-0123456789";
    let secret_env = [
        ("HOOKLAKE_LISTEN", "0.0.0.0:8080"),
        (
            "HOOKLAKE_AUTH_TOKENS",
            "[\"a-long-random-token-0123456789\"]",
        ),
        ("HOOKLAKE_HMAC_SECRETS", "[\"hmac-secret-9876543210\"]"),
        ("HOOKLAKE_FLUSH_INTERVAL_SECS", "7"),
    ];
    let checked = run(&secret_env, &["config", "check"]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // Secrets are masked; a flag wins over the environment.
    let shown = run(&secret_env, &["--data-dir", "/srv/lake", "config", "show"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success());
    assert!(
        !text.contains(token) && !text.contains("hmac-secret-9876543210"),
        "{text}"
    );
    assert!(
        text.contains("auth_tokens") && text.contains("hmac_secrets"),
        "{text}"
    );
    let flagged = run(
        &[("HOOKLAKE_DATA_DIR", "/from/env")],
        &["--data-dir", "/from/flag", "config", "show"],
    );
    let text = String::from_utf8_lossy(&flagged.stdout);
    assert!(text.contains("data_dir = \"/from/flag\""), "{text}");
}

/// Reads from `stream` until the server closes it; `true` if that happens within `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_bounded() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start_with(
        dir.path(),
        &[
            ("HOOKLAKE_MAX_CONNECTIONS", "2"),
            ("HOOKLAKE_HEADER_READ_TIMEOUT_SECS", "1"),
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    // Slowloris: half a request head, then nothing.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /webhooks/iclosed HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    // Both connections are taken: a third is closed at once.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(1)),
        "a connection over the limit is closed"
    );
    // The slow ones are cut off by the header timeout, which frees their places.
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "a slow request head is cut off"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection is cut off"
    );
    let (status, _) = client::send(&server.base, "GET", "/healthz", b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "the server serves again");
    let (_, metrics) = client::send(&server.base, "GET", "/metrics", b"")
        .await
        .unwrap();
    assert!(
        metrics.contains("\nhooklake_connections_refused_total 1\n"),
        "{metrics}"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_answers_is_cut_off() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start_with(
        dir.path(),
        &[
            ("HOOKLAKE_MAX_CONNECTIONS", "1"),
            ("HOOKLAKE_WRITE_TIMEOUT_SECS", "1"),
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    // Requests pipelined on the only connection allowed, each answered with a 404 that repeats
    // its 60 KB path, and none of the answers read: the socket buffers fill, and the server's
    // writes stop making progress.
    let greedy = std::net::TcpStream::connect(&addr).unwrap();
    let writer = {
        let mut stream = greedy.try_clone().unwrap();
        std::thread::spawn(move || {
            let request = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(60_000));
            for _ in 0..1000 {
                if stream.write_all(request.as_bytes()).is_err() {
                    return;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Once the writes have waited write_timeout_secs, the connection is closed and its place
    // taken by the next client.
    let started = std::time::Instant::now();
    let served = loop {
        if let Ok((200, _)) = client::send(&server.base, "GET", "/healthz", b"").await {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(served, "the stuck connection still holds the only place");
    let _ = greedy.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    assert!(server.terminate().success());
}
