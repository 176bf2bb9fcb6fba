//! The webhook endpoint, driven through the router, read back with DuckDB.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::util::{Lake, fixture, fixture_names, fixture_object, scalar};

/// The URL kind a user who registers one URL per trigger would use for each fixture (a mix of
/// iClosed's identifiers and ours).
fn url_kind(name: &str) -> &'static str {
    match name {
        "contact_created.json" | "contact_created_potential.json" => "newContactCreated",
        "contact_updated.json" => "contactDetailChanged",
        "contact_updated_multi.json" => "contactUpdated",
        "contact_updated_status_change.json" => "contact.updated",
        "call_scheduled.json" => "newCallScheduled",
        "call_rescheduled.json" => "callRescheduled",
        "call_cancelled.json" => "callCancelled",
        "call_outcome.json" => "outcomeAdded",
        "call_outcome_no_sale.json" => "call_outcome",
        other => panic!("no URL kind for {other}"),
    }
}

/// The table and event type each fixture must land in.
fn expected_table(name: &str) -> (&'static str, &'static str) {
    match name {
        "contact_created.json" | "contact_created_potential.json" => {
            ("contact_events", "contact_created")
        }
        n if n.starts_with("contact_updated") => ("contact_events", "contact_updated"),
        "call_scheduled.json" => ("call_events", "call_booked"),
        "call_rescheduled.json" => ("call_events", "call_rescheduled"),
        "call_cancelled.json" => ("call_events", "call_cancelled"),
        n if n.starts_with("call_outcome") => ("call_outcomes", "call_outcome"),
        other => panic!("unexpected fixture {other}"),
    }
}

async fn post_ok(lake: &Lake, path: &str, body: String) -> String {
    let r = lake.post(path, body).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    let ack = r.json();
    assert_eq!(ack["accepted"], 1, "{ack}");
    ack["event_ids"][0].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_fixture_lands_in_its_table_in_every_form() {
    let names = fixture_names();
    assert_eq!(names.len(), 10);
    // One lake per form, since a second form of the same object is a duplicate.
    for form in 0..4 {
        let lake = Lake::new();
        let mut expected = Vec::new();
        for name in &names {
            let kind = url_kind(name);
            let (path, body) = match form {
                0 => ("/webhooks/iclosed".to_string(), fixture(name)),
                1 => ("/webhooks/iclosed".to_string(), fixture_object(name)),
                2 => (format!("/webhooks/iclosed/{kind}"), fixture(name)),
                _ => (format!("/webhooks/iclosed/{kind}"), fixture_object(name)),
            };
            let id = post_ok(&lake, &path, body).await;
            let (table, event_type) = expected_table(name);
            expected.push(json!({"event_id": id, "event_type": event_type, "source_path": path, "table": table}));
        }
        assert_eq!(lake.flush().await["events"], 10);
        let raw = lake.query(
            "select r.event_id, r.event_type, r.source_path, coalesce(c.t, k.t, o.t) as \"table\" from {raw_events} r \
             left join (select event_id, 'contact_events' as t from {contact_events}) c using (event_id) \
             left join (select event_id, 'call_events' as t from {call_events}) k using (event_id) \
             left join (select event_id, 'call_outcomes' as t from {call_outcomes}) o using (event_id) \
             order by r.event_id",
        );
        expected.sort_by(|a, b| a["event_id"].as_str().cmp(&b["event_id"].as_str()));
        assert_eq!(
            Value::Array(raw.into_iter().map(Value::Object).collect()),
            Value::Array(expected),
            "form {form}"
        );
    }
    // Every form of one object has the same id.
    let lake = Lake::new();
    let name = "call_outcome.json";
    let first = post_ok(&lake, "/webhooks/iclosed", fixture(name)).await;
    let again = lake
        .post("/webhooks/iclosed/outcomeAdded", fixture_object(name))
        .await
        .json();
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": 1, "event_ids": [first]})
    );
}

#[tokio::test]
async fn contact_created_columns() {
    let lake = Lake::new();
    let id = post_ok(&lake, "/webhooks/iclosed", fixture("contact_created.json")).await;
    lake.flush().await;
    let rows = lake.query("select * exclude (received_at) from {contact_events}");
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "event_id": id, "event_type": "contact_created",
            "event_time": "2026-02-17 16:24:31.275+00",
            "contact_id": 73051, "account_id": 418, "user_id": 3306,
            "preview_id": "contact_Vb3nK8wQe2Rt", "first_name": "Beatriz", "last_name": "Castellanos-Whyte",
            "email": "beatriz.cw@example.com", "phone_number": "+13035550182",
            "secondary_email": null, "secondary_phone_number": null, "status": "QUALIFIED",
            "created_at": "2026-02-17 16:21:48.903+00", "updated_at": "2026-02-17 16:24:31.275+00",
            "joined_time": "2026-02-17 16:21:48.903+00", "time_zone": "America/Denver",
            "country": "US", "ip_address": "192.0.2.118",
            "booking_event_id": 5204, "booking_event_name": "Scale Your Practice Call",
            "booking_event_type": "STRATEGY_EVENT",
            "booking_event_link_prefix": "harbourline-coaching/scale-your-practice",
            "booking_event_color": "#8B5CF6",
            "utm_source": "instagram", "utm_medium": "paid_social", "utm_campaign": "winter_masterclass_2026",
            "utm_term": null, "utm_content": "reel_b2",
            "first_utm_source": "bing", "first_utm_medium": "cpc",
            "first_utm_campaign": "coaching_search_jan_2026", "first_utm_term": "business coach denver",
            "first_utm_content": null,
            "latest_call_at": "2026-02-20 17:00:00+00", "latest_call_duration_min": 60,
            "latest_call_host_id": 3306, "latest_call_host_name": "Oluwaseun Brandt",
            "latest_call_host_email": "oluwaseun.brandt@example.com",
            "updated_attributes": null, "disqualifying_group": "[]", "hook_type": "Contact created",
            "extras": null, "parse_errors": [], "missing_fields": [], "quality_flags": [], "date": "2026-02-17"
        })
    );
    let params = lake.query("select position, key, value, contact_id, event_time from {tracking_params} order by position");
    assert_eq!(
        Value::Array(params.into_iter().map(Value::Object).collect()),
        json!([
            {"position": 1, "key": "fbclid", "value": "PAZXh0bgDemoClickId41q", "contact_id": 73051,
             "event_time": "2026-02-17 16:24:31.275+00"},
            {"position": 2, "key": "landing_page", "value": "/book-a-call", "contact_id": 73051,
             "event_time": "2026-02-17 16:24:31.275+00"}
        ])
    );
    let answers =
        lake.query("select position, question, response from {contact_answers} order by position");
    assert_eq!(
        Value::Array(answers.into_iter().map(Value::Object).collect()),
        json!([
            {"position": 1, "question": "Phone Number", "response": "+13035550182"},
            {"position": 2, "question": "Email Address", "response": "beatriz.cw@example.com"},
            {"position": 3, "question": "Full Name", "response": "Beatriz Castellanos-Whyte"},
            {"position": 4, "question": "How many clients do you coach today?", "response": "10 - 25"},
            {"position": 5, "question": "When would you like to begin?", "response": "Next month"}
        ])
    );
}

#[tokio::test]
async fn contact_updated_columns() {
    let lake = Lake::new();
    post_ok(
        &lake,
        "/webhooks/iclosed",
        fixture("contact_updated_multi.json"),
    )
    .await;
    post_ok(
        &lake,
        "/webhooks/iclosed",
        fixture("contact_updated_status_change.json"),
    )
    .await;
    lake.flush().await;
    let rows = lake.query(
        "select contact_id, status, updated_attributes, disqualifying_group, secondary_email, \
         secondary_phone_number, utm_campaign, latest_call_at, date from {contact_events} order by contact_id",
    );
    assert_eq!(
        Value::Array(rows.into_iter().map(Value::Object).collect()),
        json!([
            {"contact_id": 73051, "status": "QUALIFIED",
             "updated_attributes": ["firstName", "email", "phoneNumber", "secondary_email", "secondary_phoneNumber", "tracking"],
             "disqualifying_group": "[]", "secondary_email": "beatriz.cw@example.com",
             "secondary_phone_number": "+13035550182", "utm_campaign": "february_digest_2026",
             "latest_call_at": "2026-03-10 16:30:00+00", "date": "2026-03-03"},
            {"contact_id": 73342, "status": "DISQUALIFIED", "updated_attributes": ["status"],
             "disqualifying_group": r#"[{"logic":"OR","statements":[{"operator":"IS","question":"How many clients do you coach today?","value":"None yet"}]}]"#,
             "secondary_email": null, "secondary_phone_number": null, "utm_campaign": "founders_hour",
             "latest_call_at": null, "date": "2026-05-27"}
        ])
    );
    let params = lake.query("select list(key order by position) as keys from {tracking_params} where contact_id = 73051");
    assert_eq!(scalar(&params), json!(["fbclid", "gclid", "affiliate"]));
}

#[tokio::test]
async fn call_columns() {
    let lake = Lake::new();
    let booked = post_ok(&lake, "/webhooks/iclosed", fixture("call_scheduled.json")).await;
    let moved = post_ok(&lake, "/webhooks/iclosed", fixture("call_rescheduled.json")).await;
    let cancelled = post_ok(&lake, "/webhooks/iclosed", fixture("call_cancelled.json")).await;
    lake.flush().await;
    let rows = lake.query(&format!(
        "select * exclude (received_at, event_time, date), event_time = received_at as at_receipt \
         from {{call_events}} where event_id = '{moved}'"
    ));
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "event_id": moved, "event_type": "call_rescheduled",
            "call_id": "704219", "call_type": "STRATEGY_CALL", "event_type_id": "6120",
            "event_type_name": "Scale Your Practice Call", "event_type_slug": "scale-your-practice",
            "event_type_kind": "Round Robin", "event_type_category": "STRATEGY_EVENT",
            "event_type_owner_type": "closer",
            "start_at": "2026-03-10 16:30:00+00", "end_at": "2026-03-10 17:30:00+00",
            "old_start_at": "2026-02-20 17:00:00+00", "previous_start_at": "2026-02-20 17:00:00+00",
            "slot_start_at": "2026-03-10 16:30:00+00", "booked_at": "2026-02-17 16:24:31+00",
            "duration_min": 60, "canceled": false, "canceled_at": null, "cancel_reason": null,
            "canceler_name": null, "reschedule_reason": "A client workshop moved onto that morning",
            "is_reschedule": true, "invitee_id": "631877", "invitee_email": "beatriz.cw@example.com",
            "invitee_name": "Beatriz Castellanos-Whyte", "invitee_phone": "+13035550182",
            "invitee_preview_id": "contact_Vb3nK8wQe2Rt",
            "host_name": "Ines Faulkner", "host_email": "ines.faulkner@example.com",
            "setter_name": "Kwame Osei", "setter_email": "kwame.osei@example.com",
            "location": "https://meet.example.com/hlc-5731-dre",
            "answers": r#"{"1_question":"Phone Number","1_response":"+13035550182","2_question":"Email Address","2_response":"beatriz.cw@example.com","3_question":"How many clients do you coach today?","3_response":"10 - 25"}"#,
            "utm_source": "instagram", "utm_medium": "paid_social", "utm_campaign": "winter_masterclass_2026",
            "utm_term": null, "utm_content": "reel_b2", "hook_type": "Call rescheduled",
            "extras": null, "parse_errors": [], "at_receipt": true
        })
    );
    let rows = lake.query(&format!(
        "select event_id, event_type, event_time, date, call_id, start_at, canceled, canceled_at, cancel_reason, \
         canceler_name, duration_min, host_email from {{call_events}} where event_id in ('{booked}', '{cancelled}') \
         order by event_time"
    ));
    assert_eq!(
        Value::Array(rows.into_iter().map(Value::Object).collect()),
        json!([
            {"event_id": booked, "event_type": "call_booked", "event_time": "2026-02-17 16:24:31+00",
             "date": "2026-02-17", "call_id": "704219", "start_at": "2026-02-20 17:00:00+00", "canceled": false,
             "canceled_at": null, "cancel_reason": null, "canceler_name": null, "duration_min": 60,
             "host_email": "oluwaseun.brandt@example.com"},
            {"event_id": cancelled, "event_type": "call_cancelled", "event_time": "2026-07-12 21:06:53.845+00",
             "date": "2026-07-12", "call_id": "705562", "start_at": "2026-07-14 18:30:00+00", "canceled": true,
             "canceled_at": "2026-07-12 21:06:53.845+00", "cancel_reason": null,
             "canceler_name": "Noor Haddad", "duration_min": 30,
             "host_email": "kwame.osei@example.com"}
        ])
    );
}

#[tokio::test]
async fn outcome_columns() {
    let lake = Lake::new();
    let sale = post_ok(&lake, "/webhooks/iclosed", fixture("call_outcome.json")).await;
    let no_sale = post_ok(
        &lake,
        "/webhooks/iclosed",
        fixture("call_outcome_no_sale.json"),
    )
    .await;
    lake.flush().await;
    let rows = lake.query(&format!(
        "select * exclude (received_at) from {{call_outcomes}} where event_id = '{sale}'"
    ));
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "event_id": sale, "event_type": "call_outcome", "event_time": "2026-03-10 17:41:06+00",
            "outcome_id": 88214, "contact_id": 73051, "contact_email": "beatriz.cw@example.com",
            "contact_first_name": "Beatriz", "contact_last_name": "Castellanos-Whyte",
            "contact_phone_number": "+13035550182", "user_id": 3391, "booking_event_id": 5204,
            "booking_event_name": "Scale Your Practice Call", "call_start_at": "2026-03-10 16:30:00+00",
            "call_duration_min": 60, "closer_email": "ines.faulkner@example.com", "outcome": "SALE",
            "no_sale_reason": null, "objection": null, "deal_value": 4200.0, "deal_transaction_type": "SALE",
            "deal_created_at": "2026-03-10 17:41:06+00", "product_name": "Quarterly Coaching Plan",
            "notes": "Chose the quarterly coaching plan; onboarding call set for Monday.", "transactions": "[]",
            "hook_type": "Outcome added", "extras": null, "parse_errors": [], "date": "2026-03-10"
        })
    );
    let rows = lake.query(&format!(
        "select outcome, no_sale_reason, objection, deal_value, deal_created_at, event_time = received_at as at_receipt \
         from {{call_outcomes}} where event_id = '{no_sale}'"
    ));
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({"outcome": "NO_SALE", "no_sale_reason": "FOLLOW_UP_SCHEDULE", "objection": "MONEY",
               "deal_value": null, "deal_created_at": null, "at_receipt": true})
    );
}

#[tokio::test]
async fn raw_events_keep_the_exact_object_text() {
    let lake = Lake::new();
    let body =
        r#"[ {"hookType":"Contact created", "id": 7,  "previewId":"contact_a", "weird": 1.50} ]"#;
    let id = post_ok(&lake, "/webhooks/iclosed", body.to_string()).await;
    lake.flush().await;
    let rows = lake.query("select * exclude (received_at, event_time, date) from {raw_events}");
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "event_id": id, "event_type": "contact_created", "hook_type": "Contact created",
            "source_path": "/webhooks/iclosed",
            "payload": r#"{"hookType":"Contact created", "id": 7,  "previewId":"contact_a", "weird": 1.50}"#,
        })
    );
    // No time in the payload: the event time is the receipt, and the partition its UTC day.
    let partition = lake.query(
        "select event_time = received_at as same, \
                datediff('day', DATE '1970-01-01', date::DATE) = floor(epoch(received_at) / 86400) as day \
         from {raw_events}",
    );
    assert_eq!(
        (&partition[0]["same"], &partition[0]["day"]),
        (&json!(true), &json!(true))
    );
    // The unknown key is kept on the typed row too.
    let extras = lake.query("select extras from {contact_events}");
    assert_eq!(scalar(&extras), r#"{"weird":1.5}"#);
}

#[tokio::test]
async fn redelivery_and_reformatting_keep_the_event_id() {
    let lake = Lake::new();
    let original = fixture("contact_updated.json");
    let first = post_ok(&lake, "/webhooks/iclosed", original.clone()).await;
    let again = lake
        .post("/webhooks/iclosed", original.clone())
        .await
        .json();
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": 1, "event_ids": [first.clone()]})
    );
    // The same object with its keys in reverse order and no whitespace.
    let value: Value = serde_json::from_str(&fixture_object("contact_updated.json")).unwrap();
    let reversed: String = {
        let map = value.as_object().unwrap();
        let parts: Vec<String> = map
            .iter()
            .rev()
            .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
            .collect();
        format!("{{{}}}", parts.join(","))
    };
    let reordered = lake.post("/webhooks/iclosed", reversed).await.json();
    assert_eq!(reordered["duplicates"], 1);
    assert_eq!(reordered["event_ids"][0], first.as_str());
    // A real change is a different event.
    let changed = fixture("contact_updated.json").replace("America/Denver", "America/Boise");
    assert_ne!(post_ok(&lake, "/webhooks/iclosed", changed).await, first);
    lake.flush().await;
    // After a flush, a redelivery is still recognised (the id is in the committed index).
    let late = lake.post("/webhooks/iclosed", original).await.json();
    assert_eq!(late["duplicates"], 1);
    lake.flush().await;
    let rows =
        lake.query("select count(*) as n, count(distinct event_id) as ids from {contact_events}");
    assert_eq!(rows[0]["n"], 2);
    assert_eq!(rows[0]["ids"], 2);
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("\nhooklake_events_duplicate_total{event_type=\"contact_updated\"} 3\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_event_types_are_kept_raw_and_counted() {
    let lake = Lake::new();
    let id = post_ok(
        &lake,
        "/webhooks/iclosed",
        r#"{"hookType": "Note added", "note": "call back"}"#.into(),
    )
    .await;
    let shapeless = post_ok(
        &lake,
        "/webhooks/iclosed",
        r#"{"something": "else"}"#.into(),
    )
    .await;
    lake.flush().await;
    let rows = lake.query(
        "select event_id, event_type, hook_type from {raw_events} order by hook_type nulls last",
    );
    assert_eq!(
        Value::Array(rows.into_iter().map(Value::Object).collect()),
        json!([
            {"event_id": id, "event_type": "unknown", "hook_type": "Note added"},
            {"event_id": shapeless, "event_type": "unknown", "hook_type": null}
        ])
    );
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_events_accepted_total{event_type=\"unknown\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_bodies_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    let lake = Lake::with(|c| c.max_body_bytes = 4096);
    let deep = "[".repeat(200) + &"]".repeat(200);
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "truncated",
            br#"[{"id": 1, "previewId": "#.to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "number",
            b"42".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body is a JSON number",
        ),
        (
            "string",
            br#""hello""#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body is a JSON string",
        ),
        (
            "null",
            b"null".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body is a JSON null",
        ),
        (
            "numbers",
            b"[1, 2, 3]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "array element 0 is a JSON number",
        ),
        (
            "mixed",
            br#"[{"a": 1}, [2]]"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "array element 1 is a JSON array",
        ),
        (
            "empty array",
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty array",
        ),
        (
            "empty body",
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "body is empty",
        ),
        (
            "deep nesting",
            deep.into_bytes(),
            StatusCode::BAD_REQUEST,
            "nested deeper than 64",
        ),
        (
            "invalid UTF-8",
            b"{\"a\": \"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        ),
        (
            "oversize",
            vec![b' '; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit of 4096 bytes",
        ),
        (
            "two documents",
            br#"{"a":1}{"b":2}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
    ];
    for (what, body, status, message) in cases {
        let r = lake.post("/webhooks/iclosed", body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(message), "{what}: {error}");
        // The server still answers, and still takes a good event.
        assert_eq!(
            lake.request("GET", "/healthz", "").await.status,
            StatusCode::OK
        );
    }
    post_ok(&lake, "/webhooks/iclosed", fixture("call_outcome.json")).await;
    let report = lake.flush().await;
    assert_eq!(
        report["events"], 1,
        "rejected bodies must leave nothing behind: {report}"
    );
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_requests_total{outcome=\"invalid_json\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hooklake_requests_total{outcome=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_url_kind_is_a_404_listing_the_kinds() {
    let lake = Lake::new();
    let r = lake
        .post(
            "/webhooks/iclosed/contactDeleted",
            fixture("contact_created.json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("contactDeleted")
            && error.contains("newContactCreated")
            && error.contains("call_outcome"),
        "{error}"
    );
    let r = lake.post("/nowhere", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].as_str().unwrap().contains("/nowhere"));
    let r = lake.request("GET", "/webhooks/iclosed", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json()["error"].as_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn a_full_buffer_answers_503_with_retry_after_and_recovers_after_a_flush() {
    let body = fixture("contact_created.json");
    // Room for one contact event (about its text) but not two.
    let lake = Lake::with(|c| {
        c.max_body_bytes = 4096;
        c.buffer_max_bytes = 4096;
    });
    post_ok(&lake, "/webhooks/iclosed", body).await;
    let r = lake
        .post("/webhooks/iclosed", fixture("contact_updated.json"))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "5");
    assert!(r.json()["error"].as_str().unwrap().contains("buffer full"));
    assert_eq!(
        lake.flush().await["events"],
        1,
        "the refused request must not be half-accepted"
    );
    post_ok(
        &lake,
        "/webhooks/iclosed",
        fixture("contact_created_potential.json"),
    )
    .await;
}

#[tokio::test]
async fn a_failing_log_answers_503_and_the_server_recovers_by_itself() {
    let lake = Lake::new();
    lake.pipeline.simulate_log_failure(true);
    assert_retry_later(&lake, "no space left on device").await;
    assert_eq!(
        lake.request("GET", "/healthz", "").await.status,
        StatusCode::OK
    );
    lake.pipeline.simulate_log_failure(false);
    post_ok(&lake, "/webhooks/iclosed", fixture("call_scheduled.json")).await;
    assert_eq!(lake.flush().await["events"], 1);
}

#[tokio::test]
async fn readiness_is_503_with_the_reason_while_flushes_fail_and_ready_again_after_one_commits() {
    let lake = Lake::new();
    post_ok(&lake, "/webhooks/iclosed", fixture("call_scheduled.json")).await;
    // The state store's commit meets a full disk.
    lake.pipeline
        .store()
        .simulate_fault(hooklake::state::Fault::OneWrite);
    let failed = lake.post("/admin/flush", "").await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );
    let ready = lake.request("GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = ready.json()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("flush failed") && reason.contains("No space left on device"),
        "{reason}"
    );
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_flushes_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert_eq!(lake.flush().await["events"], 1, "the next flush writes it");
    assert_eq!(
        lake.request("GET", "/readyz", "").await.json(),
        json!({"ready": true})
    );
}

#[tokio::test]
async fn a_flush_held_back_for_disk_space_answers_503_and_keeps_its_events() {
    let lake = Lake::with(|c| c.min_free_bytes = 1_000_000);
    // Room for requests, not for a flush on top of the minimum.
    lake.pipeline.simulate_free_bytes(Some(1_100_000));
    post_ok(&lake, "/webhooks/iclosed", fixture("call_scheduled.json")).await;
    let held = lake.post("/admin/flush", "").await;
    assert_eq!(
        held.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        held.body
    );
    assert!(
        held.body.contains("not enough disk space for a flush"),
        "{}",
        held.body
    );
    let ready = lake.request("GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body.contains("flush held back"), "{}", ready.body);
    let metrics = lake.request("GET", "/metrics", "").await.body;
    assert!(
        metrics.contains("hooklake_flushes_total{result=\"held_back\"} 1"),
        "{metrics}"
    );
    lake.pipeline.simulate_free_bytes(Some(1 << 40));
    assert_eq!(lake.flush().await["events"], 1);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let lake = Lake::new();
    assert_eq!(
        lake.request("GET", "/healthz", "").await.json(),
        json!({"status": "ok"})
    );
    assert_eq!(
        lake.request("GET", "/readyz", "").await.json(),
        json!({"ready": true})
    );
    post_ok(&lake, "/webhooks/iclosed", fixture("call_scheduled.json")).await;
    let before = lake.request("GET", "/metrics", "").await.body;
    // An unlabelled gauge's value.
    let gauge = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(before.contains("\nhooklake_buffer_events 1\n"), "{before}");
    assert!(gauge(&before, "hooklake_buffer_bytes") > 0.0, "{before}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let waiting = lake.request("GET", "/metrics", "").await.body;
    assert!(
        gauge(&waiting, "hooklake_oldest_unflushed_event_age_seconds") >= 0.02,
        "{waiting}"
    );
    lake.flush().await;
    let after = lake.request("GET", "/metrics", "").await.body;
    assert!(after.contains("\nhooklake_buffer_events 0\n"), "{after}");
    assert_eq!(gauge(&after, "hooklake_buffer_bytes"), 0.0, "{after}");
    assert_eq!(
        gauge(&after, "hooklake_oldest_unflushed_event_age_seconds"),
        0.0,
        "{after}"
    );
    assert!(
        after.contains("hooklake_rows_written_total{table=\"call_events\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("hooklake_flushes_total{result=\"ok\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("\nhooklake_ack_latency_seconds_count 1\n"),
        "{after}"
    );
    assert!(
        after.contains("\nhooklake_flush_duration_seconds_count 1\n"),
        "{after}"
    );
    assert!(
        after.contains("hooklake_parquet_files{table=\"call_events\"} 1\n"),
        "{after}"
    );
    assert!(
        after.contains("hooklake_partition_files_max{table=\"raw_events\"} 1\n"),
        "{after}"
    );
    assert!(
        !after.contains("\nhooklake_wal_bytes 0\n")
            && !after.contains("\nhooklake_state_store_bytes 0\n")
            && after.contains("\nhooklake_dedup_filter_bytes 65536\n"),
        "{after}"
    );
    // Lead scoring's recent key records of the flushed contacts (a few slots of 64 bytes), and
    // no run's filter yet.
    let key_bytes: u64 = after
        .lines()
        .find_map(|l| l.strip_prefix("hooklake_score_keys_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no key memory gauge in {after}"));
    assert!(key_bytes > 0 && key_bytes < 64 * 1024, "{key_bytes}");
    // The flushed ids are recent (in memory and `seen_recent`), in no run yet.
    assert!(
        !after.contains("\nhooklake_dedup_ids 0\n")
            && after.contains("\nhooklake_dedup_ids ")
            && after.contains("\nhooklake_dedup_runs 0\n"),
        "{after}"
    );
    // Readiness needs a writable data directory: a directory where the probe file goes
    // makes the write fail (permissions cannot, as tests may run as root).
    std::fs::create_dir(lake.dir.path().join("_hooklake/.ready-probe")).unwrap();
    let r = lake.request("GET", "/readyz", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("not writable"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn admin_flush_reports_what_it_wrote() {
    let lake = Lake::new();
    assert_eq!(
        lake.flush().await["events"],
        0,
        "an empty flush writes nothing"
    );
    post_ok(&lake, "/webhooks/iclosed", fixture("contact_created.json")).await;
    let report = lake.flush().await;
    assert_eq!(report["reason"], "manual");
    assert_eq!(
        report["rows"],
        json!({"attribute_changes": 0, "call_events": 0, "call_outcomes": 0, "contact_answers": 5,
        "contact_events": 1, "lead_scores": 1, "raw_events": 1, "rejected_events": 0,
        "status_transitions": 1, "tracking_params": 2, "trigger_deliveries": 0})
    );
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 6);
    let flush_id = report["flush_id"].as_str().unwrap();
    for f in files {
        assert!(
            f.ends_with(&format!("/date=2026-02-17/part-{flush_id}.parquet")),
            "{f}"
        );
        assert!(lake.dir.path().join(f).is_file());
    }
}

#[tokio::test]
async fn a_nearly_full_disk_answers_503_before_anything_is_written() {
    let lake = Lake::with(|c| c.min_free_bytes = u64::MAX);
    assert_retry_later(&lake, "disk nearly full").await;
    assert_eq!(lake.flush().await["events"], 0);
    // The server stays up and healthy.
    assert_eq!(
        lake.request("GET", "/healthz", "").await.status,
        StatusCode::OK
    );
}

/// Posts an event and checks it is refused with 503, `Retry-After` and `message`.
async fn assert_retry_later(lake: &Lake, message: &str) {
    let r = lake
        .post("/webhooks/iclosed", fixture("call_scheduled.json"))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "5");
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(message), "{error}");
}
