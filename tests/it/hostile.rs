//! A hostile-input corpus sent over HTTP: every case gets a 4xx or a 200 with the event stored
//! (wrong types become nulls with `parse_errors`), never a 5xx, and the server stays healthy.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::util::{Lake, fixture, fixture_object, scalar};

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A 4xx (the body cannot be events).
    Refused,
    /// A 200 (the event is stored, perhaps with parse errors).
    Stored,
}

fn cases() -> Vec<(String, Vec<u8>, Expect)> {
    use Expect::*;
    let mut cases: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut add =
        |name: &str, body: Vec<u8>, expect: Expect| cases.push((name.to_string(), body, expect));
    let full = fixture("contact_created.json").into_bytes();
    for cut in [1, 2, 10, 100, 500, 1000, 2000, full.len() - 2] {
        add(
            &format!("truncated at {cut}"),
            full[..cut].to_vec(),
            Refused,
        );
    }
    add("binary", (0u8..=255).cycle().take(600).collect(), Refused);
    add("zero bytes", vec![0; 64], Refused);
    add(
        "raw NUL inside a string",
        b"{\"id\": 1, \"previewId\": \"a\0b\"}".to_vec(),
        Refused,
    );
    add(
        "escaped NUL inside a string",
        br#"{"id": 1, "previewId": "a\u0000b"}"#.to_vec(),
        Stored,
    );
    add(
        "lone surrogate",
        br#"{"id": 1, "previewId": "\ud800"}"#.to_vec(),
        Refused,
    );
    add(
        "invalid UTF-8",
        b"{\"id\": 1, \"previewId\": \"\xc3\x28\"}".to_vec(),
        Refused,
    );
    add("overlong UTF-8", b"{\"a\": \"\xc0\xaf\"}".to_vec(), Refused);
    add("BOM", [b"\xef\xbb\xbf".as_slice(), &full].concat(), Refused);
    add(
        "number out of range",
        br#"{"id": 1e400, "previewId": "p"}"#.to_vec(),
        Refused,
    );
    add(
        "huge integer id",
        br#"{"id": 123456789012345678901234567890, "previewId": "p"}"#.to_vec(),
        Stored,
    );
    add(
        "negative zero and exponents",
        br#"{"id": -0, "userId": 1e3, "previewId": "p"}"#.to_vec(),
        Stored,
    );
    add(
        "duplicate keys",
        br#"{"id": 1, "id": 2, "previewId": "p"}"#.to_vec(),
        Stored,
    );
    add(
        "depth 65",
        format!("{}{}", "[".repeat(65), "]".repeat(65)).into_bytes(),
        Refused,
    );
    add(
        "depth 60 inside a field",
        format!(
            r#"{{"id": 1, "previewId": "p", "deep": {}1{}}}"#,
            "[".repeat(60),
            "]".repeat(60)
        )
        .into_bytes(),
        Stored,
    );
    add(
        "100k-element list in a field",
        format!(
            r#"{{"id": 1, "previewId": "p", "updatedAttributes": [{}]}}"#,
            vec!["1"; 100_000].join(",")
        )
        .into_bytes(),
        Stored,
    );
    add(
        "1001 events",
        format!("[{}]", vec!["{}"; 1001].join(",")).into_bytes(),
        Refused,
    );
    add(
        "string over 64 KiB",
        format!(r#"{{"id": 1, "previewId": "{}"}}"#, "x".repeat(70_000)).into_bytes(),
        Refused,
    );
    add("body over 1 MiB", vec![b' '; 1_100_000], Refused);
    add("empty object", b"{}".to_vec(), Stored);
    add("array with null", b"[null]".to_vec(), Refused);
    add("array of arrays", b"[[{}]]".to_vec(), Refused);
    add("true", b"true".to_vec(), Refused);
    add("whitespace only", b" \n\t ".to_vec(), Refused);
    add("trailing comma", br#"[{"id": 1},]"#.to_vec(), Refused);
    add("single quotes", b"{'id': 1}".to_vec(), Refused);
    add("comments", b"{\"id\": 1 /* hi */}".to_vec(), Refused);
    add("NaN", br#"{"id": NaN}"#.to_vec(), Refused);
    add(
        "hookType is a number",
        br#"{"hookType": 7, "id": 1, "previewId": "p"}"#.to_vec(),
        Stored,
    );
    add(
        "hookType is an object",
        br#"{"hookType": {"a": 1}}"#.to_vec(),
        Stored,
    );
    add(
        "call with everything null",
        br#"{"event_type": null, "event": null, "invitee": null}"#.to_vec(),
        Stored,
    );
    add(
        "outcome with string numbers",
        br#"{"callOutcome": "WON", "contactId": "12", "dealValue": "99.5", "uuid": "x"}"#.to_vec(),
        Stored,
    );
    // Wrong types in every known contact field, one field at a time.
    let contact: Value = serde_json::from_str(&fixture_object("contact_created.json")).unwrap();
    for key in contact.as_object().unwrap().keys() {
        if key == "hookType" {
            continue;
        }
        let mut broken = contact.clone();
        broken[key] = json!({"unexpected": [1, 2]});
        add(
            &format!("object in contact field {key}"),
            broken.to_string().into_bytes(),
            Stored,
        );
    }
    // And in the known call fields.
    let call: Value = serde_json::from_str(&fixture_object("call_scheduled.json")).unwrap();
    for key in [
        "uuid",
        "utc_start_time",
        "canceled",
        "created_at",
        "extended_assigned_to",
        "setter",
    ] {
        let mut broken = call.clone();
        broken["event"][key] = json!([true, "x"]);
        add(
            &format!("array in call field event.{key}"),
            broken.to_string().into_bytes(),
            Stored,
        );
    }
    cases
}

#[tokio::test]
async fn a_hostile_corpus_gets_4xx_or_a_stored_event_and_the_server_stays_healthy() {
    let lake = Lake::new();
    let cases = cases();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut stored = 0;
    for (name, body, expect) in &cases {
        let r = lake.post("/webhooks/iclosed", body.clone()).await;
        assert!(r.status.as_u16() < 500, "{name}: {} {}", r.status, r.body);
        match expect {
            Expect::Refused => {
                assert!(
                    r.status.is_client_error(),
                    "{name}: {} {}",
                    r.status,
                    r.body
                );
                let json: Value =
                    serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{name}: {}", r.body));
                assert!(
                    json["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{name}"
                );
            }
            Expect::Stored => {
                assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.body);
                stored += r.json()["accepted"].as_u64().unwrap();
            }
        }
        assert_eq!(
            lake.request("GET", "/healthz", "").await.status,
            StatusCode::OK,
            "after {name}"
        );
    }
    let report = lake.flush().await;
    assert_eq!(report["events"], stored);
    assert_eq!(
        scalar(&lake.query("select count(*) from {raw_events}")),
        stored
    );
    // Every wrong-typed known field became a null plus a parse error, on a kept row.
    let errors =
        lake.query("select count(*) as n from {contact_events} where len(parse_errors) > 0");
    assert!(errors[0]["n"].as_u64().unwrap() >= 15, "{errors:?}");
    let calls = lake.query("select count(*) as n from {call_events} where len(parse_errors) > 0");
    assert!(calls[0]["n"].as_u64().unwrap() >= 4, "{calls:?}");
}
