//! The per-address refusal budget: authenticated deliveries are never limited per address,
//! however many come from one address; refusals are, with 429, `Retry-After` and a JSON error
//! given before the body is read.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::util::Lake;

const TOKEN: &str = "t0ps3cret-for-iclosed";
const ICLOSED: &str = "203.0.113.5";

/// Posts `body` to `path` as if from `from` (through a trusted proxy); returns the status, the
/// `Retry-After` header and the body text.
async fn post_from(
    router: &axum::Router,
    from: &str,
    path: &str,
    body: impl Into<Body>,
) -> (StatusCode, Option<String>, String) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("x-forwarded-for", from)
        .body(body.into())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// A lake behind a trusted proxy, with a token and a budget of `per_minute` refusals.
fn lake(per_minute: u32) -> Lake {
    Lake::with(|c| {
        c.auth_tokens = vec![TOKEN.into()];
        c.trust_forwarded_for = true;
        c.refused_requests_per_minute = per_minute;
    })
}

/// A tiny valid contact event, distinct for each `n`.
fn contact(n: u64) -> String {
    json!([{"id": n, "previewId": format!("contact_{n}"), "status": "POTENTIAL"}]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_authenticated_deliveries_from_one_address_within_a_minute_are_all_accepted()
{
    const DELIVERIES: u64 = 50_000;
    // Enough requests in flight for the log's group commit to share each fsync among many, as
    // a burst of iClosed deliveries does.
    const CLIENTS: u64 = 64;
    // The default budget: the limit of all requests it replaces was 6000 a minute.
    let lake = lake(hooklake::config::DEFAULT_REFUSED_REQUESTS_PER_MINUTE);
    // An attacker behind the same address spends the address's whole budget first, and keeps
    // sending without the token while the deliveries go on: each sender interleaves one of
    // its requests every `ATTACK_EVERY` deliveries.
    const ATTACK_EVERY: u64 = 20;
    let attack = "/t/guess/webhooks/iclosed";
    let mut spent = 0;
    while post_from(&lake.router, ICLOSED, attack, contact(0)).await.0 == StatusCode::UNAUTHORIZED {
        spent += 1;
    }
    // At least the budget: it refills (ten a second) while the loop runs.
    assert!(
        spent >= hooklake::config::DEFAULT_REFUSED_REQUESTS_PER_MINUTE,
        "{spent}"
    );
    let path = format!("/t/{TOKEN}/webhooks/iclosed");
    let started = Instant::now();
    let senders: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (router, path) = (lake.router.clone(), path.clone());
            tokio::spawn(async move {
                let (mut refused, mut attacks) = (Vec::new(), Vec::new());
                for n in (client..DELIVERIES).step_by(CLIENTS as usize) {
                    let (status, _, text) = post_from(&router, ICLOSED, &path, contact(n)).await;
                    let accepted = status == StatusCode::OK
                        && serde_json::from_str::<Value>(&text).unwrap()["accepted"] == 1;
                    if !accepted {
                        refused.push((n, status, text));
                    }
                    if n % ATTACK_EVERY == 0 {
                        attacks.push(post_from(&router, ICLOSED, attack, contact(n)).await.0);
                    }
                }
                (refused, attacks)
            })
        })
        .collect();
    let (mut refused, mut attacks) = (Vec::new(), Vec::new());
    for sender in senders {
        let (r, a) = sender.await.unwrap();
        refused.extend(r);
        attacks.extend(a);
    }
    let took = started.elapsed();
    assert!(
        refused.is_empty(),
        "{} of {DELIVERIES} refused, the first: {:?}",
        refused.len(),
        refused.first()
    );
    assert!(
        took < Duration::from_secs(60),
        "the deliveries took {took:?}, not within a minute"
    );
    let count = |status| attacks.iter().filter(|s| **s == status).count() as u64;
    let (attacker_refused, attacker_limited) = (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(
        attacker_refused + attacker_limited,
        DELIVERIES / ATTACK_EVERY
    );
    // The attacker was refused only as often as the budget refilled meanwhile (ten a second),
    // and answered 429 otherwise.
    let refilled = took.as_secs() * 10 + 10;
    assert!(
        attacker_refused <= refilled && attacker_limited > 0,
        "the attacker was refused {attacker_refused} times and limited {attacker_limited} in {took:?}"
    );
    let buffered = lake.request("GET", "/metrics", "").await.body;
    assert!(
        buffered.contains(&format!("\nhooklake_buffer_events {DELIVERIES}\n")),
        "{buffered}"
    );
    eprintln!("{DELIVERIES} deliveries from one address accepted in {took:?}");
}

#[tokio::test]
async fn an_unauthenticated_flood_from_one_address_gets_429_before_its_body_is_read() {
    let lake = lake(5);
    let attacker = "198.51.100.7";
    for _ in 0..5 {
        let (status, retry, _) =
            post_from(&lake.router, attacker, "/webhooks/iclosed", contact(1)).await;
        assert_eq!((status, retry), (StatusCode::UNAUTHORIZED, None));
    }
    // A body over `max_body_bytes` would get 413 if it were read; a signature would be
    // computed over it; neither happens once the budget is spent. The proxy appended the
    // address it saw, which counts, after one the client chose.
    let huge = vec![b'['; 2 * 1024 * 1024];
    let flood = [
        ("198.51.100.7", "/webhooks/iclosed", huge.clone()),
        ("10.9.8.7, 198.51.100.7", "/t/guess/webhooks/iclosed", huge),
        (attacker, "/no/such/path", Vec::new()),
        (attacker, "/admin/flush", Vec::new()),
    ];
    for _ in 0..50 {
        for (from, path, body) in &flood {
            let (status, retry, text) = post_from(&lake.router, from, path, body.clone()).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}: {text}");
            // 5 a minute: one refusal back every 12 s, less the time the requests took.
            let retry: u64 = retry.expect("Retry-After").parse().unwrap();
            assert!((1..=12).contains(&retry), "{retry}");
            let error = serde_json::from_str::<Value>(&text).unwrap()["error"].clone();
            assert!(
                error.as_str().unwrap().contains("too many"),
                "{path}: {text}"
            );
        }
    }
    let signed = Request::builder()
        .method("POST")
        .uri("/webhooks/iclosed")
        .header("x-forwarded-for", attacker)
        .header("x-signature", "00".repeat(32))
        .body(Body::from(contact(1)))
        .unwrap();
    let response = lake.router.clone().oneshot(signed).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a signature cannot be checked before the body is read"
    );

    // The token is checked before the body: a delivery from the same address is accepted.
    let path = format!("/t/{TOKEN}/webhooks/iclosed");
    let (status, _, text) = post_from(&lake.router, attacker, &path, contact(2)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Another address has its own budget; the operator can still watch from this one.
    let (status, _, _) =
        post_from(&lake.router, "192.0.2.1", "/webhooks/iclosed", contact(1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metrics = Request::builder()
        .uri("/metrics")
        .header("x-forwarded-for", attacker)
        .body(Body::empty())
        .unwrap();
    let response = lake.router.clone().oneshot(metrics).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains("hooklake_requests_total{outcome=\"rate_limited\"} 201"),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_of_authenticated_requests_do_not_spend_the_budget() {
    let lake = lake(2);
    let from = "198.51.100.8";
    let path = format!("/t/{TOKEN}/webhooks/iclosed");
    // Bodies iClosed might send after a change of its own: each a 4xx and a dead letter, from
    // a sender that proved its token.
    for body in ["not json", "[]", "[1]", "{"] {
        let (status, _, text) = post_from(&lake.router, from, &path, body).await;
        assert!(status.is_client_error(), "{body}: {status} {text}");
    }
    let unknown_kind = format!("/t/{TOKEN}/webhooks/iclosed/noSuchKind");
    let (status, _, _) = post_from(&lake.router, from, &unknown_kind, contact(1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Two refusals without a credential are the whole budget; the third request gets 429.
    for expected in [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let (status, _, _) = post_from(&lake.router, from, "/webhooks/iclosed", contact(1)).await;
        assert_eq!(status, expected);
    }
}
