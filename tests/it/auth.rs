//! Authentication: tokens (path, query, bearer) with rotation, HMAC signatures with a replay
//! window, admin protection, and the refusal to serve a public address without a secret.

use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::util::{Lake, Server, fixture};

async fn post(
    lake: &Lake,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut request = Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = lake
        .router
        .clone()
        .oneshot(
            request
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn tokens_in_the_path_query_or_header_and_rotated_secrets() {
    let lake = Lake::with(|c| c.auth_tokens = vec!["old-s3cret".into(), "new-s3cret".into()]);
    let body = fixture("call_scheduled.json");
    let refused = [
        ("/webhooks/iclosed", vec![], "missing credentials"),
        ("/t/wrong/webhooks/iclosed", vec![], "invalid token"),
        ("/webhooks/iclosed?token=wrong", vec![], "invalid token"),
        (
            "/webhooks/iclosed",
            vec![("authorization", "Bearer nope")],
            "invalid token",
        ),
    ];
    for (path, headers, message) in refused {
        let (status, text) = post(&lake, path, &headers, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let error = serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            error.contains(message) && !error.contains("s3cret"),
            "{path}: {error}"
        );
    }
    assert_eq!(
        lake.flush().await["events"],
        0,
        "refused requests store nothing"
    );

    let bodies = [
        fixture("call_scheduled.json"),
        fixture("call_cancelled.json"),
        fixture("call_outcome.json"),
    ];
    let (s1, _) = post(
        &lake,
        "/t/new-s3cret/webhooks/iclosed/callBooked",
        &[],
        &bodies[0],
    )
    .await;
    let (s2, _) = post(&lake, "/webhooks/iclosed?token=old-s3cret", &[], &bodies[1]).await;
    let (s3, _) = post(
        &lake,
        "/webhooks/iclosed",
        &[("authorization", "Bearer new-s3cret")],
        &bodies[2],
    )
    .await;
    assert_eq!(
        (s1, s2, s3),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
    lake.flush().await;
    let paths = lake.query("select source_path from {raw_events} order by source_path");
    let paths: Vec<&str> = paths
        .iter()
        .map(|r| r["source_path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/t/***/webhooks/iclosed/callBooked",
            "/webhooks/iclosed",
            "/webhooks/iclosed"
        ]
    );
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_requests_total{outcome=\"unauthorized_token\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hooklake_requests_total{outcome=\"unauthorized_missing\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("s3cret"));
}

fn sign(secret: &str, text: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn signed_bodies_with_a_replay_window() {
    let lake = Lake::with(|c| {
        c.hmac_secrets = vec!["k-old".into(), "k-new".into()];
        c.hmac_timestamp_header = Some("X-Timestamp".into());
    });
    let body = fixture("call_outcome.json");
    let now = chrono::Utc::now().timestamp().to_string();
    let good = sign("k-new", &format!("{now}.{body}"));
    let (status, text) = post(
        &lake,
        "/webhooks/iclosed",
        &[("x-signature", &good), ("x-timestamp", &now)],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    let replayed = sign("k-old", &format!("{old}.{body}"));
    let (status, text) = post(
        &lake,
        "/webhooks/iclosed",
        &[("x-signature", &replayed), ("x-timestamp", &old)],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("timestamp"), "{text}");
    let forged = sign("guess", &format!("{now}.{body}"));
    let (status, text) = post(
        &lake,
        "/webhooks/iclosed",
        &[("x-signature", &forged), ("x-timestamp", &now)],
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("invalid signature"), "{text}");
    assert_eq!(lake.flush().await["events"], 1);
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token_when_one_is_set() {
    let lake = Lake::with(|c| c.admin_token = Some("adm1n".into()));
    let (status, text) = post(&lake, "/admin/flush", &[], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, _) = post(
        &lake,
        "/admin/flush",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = post(
        &lake,
        "/admin/flush",
        &[("authorization", "Bearer adm1n")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["events"],
        json!(0)
    );
}

#[tokio::test]
async fn a_public_address_needs_a_secret_and_secrets_stay_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::util::hooklake_command()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no webhook secret") && stderr.contains("auth_tokens"),
        "{stderr}"
    );

    let server = Server::start_with(
        dir.path(),
        &[
            ("HOOKLAKE_AUTH_TOKENS", "[\"t0ps3cret\"]"),
            ("HOOKLAKE_LOG", "debug"),
        ],
    );
    let path = "/t/t0ps3cret/webhooks/iclosed";
    let (status, _) = hooklake::client::send(
        &server.base,
        "POST",
        path,
        fixture("contact_created.json").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) =
        hooklake::client::send(&server.base, "POST", "/t/wr0ng/webhooks/iclosed", b"[{}]")
            .await
            .unwrap();
    assert_eq!(status, 401);
    let log = server.log_after("webhook request rejected");
    assert!(server.terminate().success());
    assert!(
        log.contains("unauthorized") && !log.contains("t0ps3cret"),
        "{log}"
    );
}
