//! Change tracking through the HTTP endpoint: a lead's journey, in order, then shuffled with
//! duplicates across a restart; every row of `status_transitions` and `attribute_changes`
//! checked with DuckDB.

use serde_json::{Value, json};

use crate::util::{Lake, fixture_object, hooklake_query};

/// The five events of one lead's journey, oldest first:
/// 1. first form step (POTENTIAL, phone only), 2. second form step (still POTENTIAL: name,
///    email, a second answer), 3. qualified (status reported; campaign changed, not reported),
/// 4. email changed (reported) and phone changed (not reported), 5. strategy call booked.
fn journey() -> Vec<String> {
    let base: Value =
        serde_json::from_str(&fixture_object("contact_created_potential.json")).unwrap();
    let step = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut object = base.as_object().unwrap().clone();
        edit(&mut object);
        Value::Object(object)
    };
    let e1 = base.clone();
    let e2 = step(&|o| {
        o.insert("firstName".into(), json!("Ada"));
        o.insert("lastName".into(), json!("Kowalczyk"));
        o.insert("email".into(), json!("ada@example.com"));
        o.insert("updatedAt".into(), json!("2026-04-23T07:15:00.000Z"));
        let qa = o["questionsAndAnswers"].as_object_mut().unwrap();
        qa.insert("2_question".into(), json!("Email Address"));
        qa.insert("2_response".into(), json!("ada@example.com"));
        qa.insert("Email Address".into(), json!("ada@example.com"));
    });
    let qualified = |o: &mut serde_json::Map<String, Value>| {
        for (k, v) in e2.as_object().unwrap() {
            o.insert(k.clone(), v.clone());
        }
        o.insert("hookType".into(), json!("Contact updated"));
        o.insert("status".into(), json!("QUALIFIED"));
        o["tracking"]
            .as_object_mut()
            .unwrap()
            .insert("utm_campaign".into(), json!("spring_promo"));
    };
    let e3 = step(&|o| {
        qualified(o);
        o.insert("updatedAt".into(), json!("2026-04-23T07:19:30.000Z"));
        o.insert("updatedAttributes".into(), json!(["status"]));
    });
    let e4 = step(&|o| {
        qualified(o);
        o.insert("email".into(), json!("ada.k@example.com"));
        o.insert("phoneNumber".into(), json!("+447700900999"));
        o.insert("updatedAt".into(), json!("2026-04-23T07:37:00.000Z"));
        o.insert("updatedAttributes".into(), json!(["email"]));
    });
    let e5 = step(&|o| {
        qualified(o);
        o.insert("email".into(), json!("ada.k@example.com"));
        o.insert("phoneNumber".into(), json!("+447700900999"));
        o.insert("hookType".into(), json!("Contact by status"));
        o.insert("status".into(), json!("STRATEGY_CALL_BOOKED"));
        o.insert("updatedAt".into(), json!("2026-04-23T08:32:00.000Z"));
        o.insert("updatedAttributes".into(), json!(["status"]));
    });
    [e1, e2, e3, e4, e5].iter().map(Value::to_string).collect()
}

async fn deliver(lake: &Lake, body: &str) -> (String, u64) {
    let r = lake.post("/webhooks/iclosed", body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ack = r.json();
    (
        ack["event_ids"][0].as_str().unwrap().to_string(),
        ack["duplicates"].as_u64().unwrap(),
    )
}

fn rows(lake: &Lake, sql: &str) -> Value {
    Value::Array(lake.query(sql).into_iter().map(Value::Object).collect())
}

const TRANSITIONS: &str = "select event_id, event_type, from_status, to_status, transitioned_at, \
    seconds_in_from_status, first_utm_source, first_utm_campaign, utm_source, utm_campaign, late \
    from {status_transitions} order by transitioned_at, late";
const CHANGES: &str = "select event_id, attribute, old_value, new_value, reported, detected, late \
    from {attribute_changes} order by event_time, attribute";
const HISTORY: &str = "status_history";

fn history(lake: &Lake) -> Value {
    Value::Array(hooklake_query(lake.dir.path(), HISTORY, &[]))
}

#[tokio::test]
async fn a_journey_in_order_gives_every_transition_and_change() {
    let lake = Lake::new();
    let mut ids = Vec::new();
    for body in journey() {
        ids.push(deliver(&lake, &body).await.0);
    }
    lake.flush().await;
    let [e1, e2, e3, e4, e5] = [&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]];
    assert_eq!(
        rows(&lake, TRANSITIONS),
        json!([
            {"event_id": e1, "event_type": "contact_created", "from_status": null, "to_status": "POTENTIAL",
             "transitioned_at": "2026-04-23 07:12:45.38+00", "seconds_in_from_status": null,
             "first_utm_source": "tiktok", "first_utm_campaign": null, "utm_source": "tiktok",
             "utm_campaign": null, "late": false},
            {"event_id": e3, "event_type": "contact_updated", "from_status": "POTENTIAL", "to_status": "QUALIFIED",
             "transitioned_at": "2026-04-23 07:19:30+00", "seconds_in_from_status": 404.62,
             "first_utm_source": "tiktok", "first_utm_campaign": null, "utm_source": "tiktok",
             "utm_campaign": "spring_promo", "late": false},
            {"event_id": e5, "event_type": "contact_status", "from_status": "QUALIFIED",
             "to_status": "STRATEGY_CALL_BOOKED", "transitioned_at": "2026-04-23 08:32:00+00",
             "seconds_in_from_status": 4350.0, "first_utm_source": "tiktok", "first_utm_campaign": null,
             "utm_source": "tiktok", "utm_campaign": "spring_promo", "late": false}
        ])
    );
    assert_eq!(
        rows(&lake, CHANGES),
        json!([
            {"event_id": e2, "attribute": "answer:Email Address", "old_value": null, "new_value": "ada@example.com",
             "reported": false, "detected": true, "late": false},
            {"event_id": e2, "attribute": "email", "old_value": null, "new_value": "ada@example.com",
             "reported": false, "detected": true, "late": false},
            {"event_id": e2, "attribute": "first_name", "old_value": null, "new_value": "Ada",
             "reported": false, "detected": true, "late": false},
            {"event_id": e2, "attribute": "last_name", "old_value": null, "new_value": "Kowalczyk",
             "reported": false, "detected": true, "late": false},
            {"event_id": e3, "attribute": "status", "old_value": "POTENTIAL", "new_value": "QUALIFIED",
             "reported": true, "detected": true, "late": false},
            {"event_id": e3, "attribute": "utm_campaign", "old_value": null, "new_value": "spring_promo",
             "reported": false, "detected": true, "late": false},
            {"event_id": e4, "attribute": "email", "old_value": "ada@example.com", "new_value": "ada.k@example.com",
             "reported": true, "detected": true, "late": false},
            {"event_id": e4, "attribute": "phone_number", "old_value": "+447700900526",
             "new_value": "+447700900999", "reported": false, "detected": true, "late": false},
            {"event_id": e5, "attribute": "status", "old_value": "QUALIFIED", "new_value": "STRATEGY_CALL_BOOKED",
             "reported": true, "detected": true, "late": false}
        ])
    );
    assert_eq!(
        history(&lake),
        json!([
            {"contact_id": 73190, "status": "POTENTIAL", "started_at": "2026-04-23 07:12:45.38+00",
             "ended_at": "2026-04-23 07:19:30+00", "seconds": 404.62},
            {"contact_id": 73190, "status": "QUALIFIED", "started_at": "2026-04-23 07:19:30+00",
             "ended_at": "2026-04-23 08:32:00+00", "seconds": 4350.0},
            {"contact_id": 73190, "status": "STRATEGY_CALL_BOOKED", "started_at": "2026-04-23 08:32:00+00",
             "ended_at": null, "seconds": null}
        ])
    );
}

#[tokio::test]
async fn the_same_journey_shuffled_with_duplicates_across_a_restart_gives_the_same_history() {
    let bodies = journey();
    let in_order = Lake::new();
    for body in &bodies {
        deliver(&in_order, body).await;
    }
    in_order.flush().await;

    let lake = Lake::new();
    // e2 before e1, in one flush: a batch is applied in event-time order, so this is exact.
    deliver(&lake, &bodies[1]).await;
    let (e1, _) = deliver(&lake, &bodies[0]).await;
    deliver(&lake, &bodies[2]).await;
    lake.flush().await;
    // e5 survives a restart through the log, and is flushed before e4 arrives.
    deliver(&lake, &bodies[4]).await;
    let lake = lake.restart();
    assert_eq!(
        deliver(&lake, &bodies[4]).await.1,
        1,
        "a redelivery after the restart is a duplicate"
    );
    lake.flush().await;
    let (e4, _) = deliver(&lake, &bodies[3]).await;
    assert_eq!(
        deliver(&lake, &bodies[2]).await.1,
        1,
        "a redelivery after a flush is a duplicate"
    );
    lake.flush().await;

    // The exact history does not depend on the order of arrival.
    assert_eq!(history(&lake), history(&in_order));
    // e4 met a newer state (e5's): its rows are flagged, and the state kept e5's values.
    let flagged = rows(
        &lake,
        "select distinct event_id from {attribute_changes} where late",
    );
    assert_eq!(flagged, json!([{"event_id": e4}]));
    let late_moves = rows(
        &lake,
        "select event_id, from_status, to_status from {status_transitions} where late",
    );
    assert_eq!(
        late_moves,
        json!([{"event_id": e4, "from_status": "STRATEGY_CALL_BOOKED", "to_status": "QUALIFIED"}])
    );
    // Everything not flagged is what the in-order run computed.
    let on_time = "select event_id, from_status, to_status, transitioned_at, seconds_in_from_status \
                   from {status_transitions} where not late order by transitioned_at";
    assert_eq!(rows(&lake, on_time), rows(&in_order, on_time));
    let first = rows(
        &lake,
        "select event_id from {status_transitions} where from_status is null",
    );
    assert_eq!(first, json!([{"event_id": e1}]));
    let counts = rows(
        &lake,
        "select count(*) as n, count(distinct event_id) as ids from {contact_events}",
    );
    assert_eq!(counts, json!([{"n": 5, "ids": 5}]));
}

/// The journey, then an update that carries only `id`, `updatedAt`, `status` and
/// `updatedAttributes` (what iClosed's guidance warns partial updates may look like).
#[tokio::test]
async fn a_partial_update_is_completed_from_the_contact_state() {
    let lake = Lake::new();
    for body in journey() {
        deliver(&lake, &body).await;
    }
    lake.flush().await;
    let partial = json!({"id": 73190, "updatedAt": "2026-04-23T09:32:00.000Z", "status": "QUALIFIED",
                         "updatedAttributes": ["status"], "hookType": "Contact updated"});
    let (id, _) = deliver(&lake, &partial.to_string()).await;
    lake.flush().await;
    let row = rows(
        &lake,
        &format!(
            "select first_name, last_name, email, phone_number, preview_id, time_zone, utm_campaign, first_utm_source, \
             booking_event_name, status, list_sort(missing_fields) as missing from {{contact_events}} where event_id = '{id}'"
        ),
    );
    let missing: Vec<&str> = {
        let mut m: Vec<&str> = [
            "account_id",
            "user_id",
            "preview_id",
            "first_name",
            "last_name",
            "email",
            "phone_number",
            "secondary_email",
            "secondary_phone_number",
            "created_at",
            "joined_time",
            "time_zone",
            "country",
            "ip_address",
            "booking_event_id",
            "booking_event_name",
            "booking_event_type",
            "booking_event_link_prefix",
            "booking_event_color",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_term",
            "utm_content",
            "first_utm_source",
            "first_utm_medium",
            "first_utm_campaign",
            "first_utm_term",
            "first_utm_content",
            "latest_call_at",
            "latest_call_duration_min",
            "latest_call_host_id",
            "latest_call_host_name",
            "latest_call_host_email",
            "disqualifying_group",
            "contact_answers",
            "tracking_params",
        ]
        .to_vec();
        m.sort();
        m
    };
    assert_eq!(
        row,
        json!([{"first_name": "Ada", "last_name": "Kowalczyk", "email": "ada.k@example.com",
                "phone_number": "+447700900999", "preview_id": "contact_Hd9-pL2sXc0N", "time_zone": "Europe/London",
                "utm_campaign": "spring_promo", "first_utm_source": "tiktok",
                "booking_event_name": "Discovery Chat", "status": "QUALIFIED", "missing": missing}])
    );
    // Only the status changed; nothing absent is reported as changed.
    let changes = rows(
        &lake,
        &format!(
            "select attribute, old_value, new_value, reported, detected from {{attribute_changes}} where event_id = '{id}'"
        ),
    );
    assert_eq!(
        changes,
        json!([{"attribute": "status", "old_value": "STRATEGY_CALL_BOOKED", "new_value": "QUALIFIED", "reported": true, "detected": true}])
    );
    let moves = rows(
        &lake,
        &format!(
            "select from_status, to_status, seconds_in_from_status from {{status_transitions}} where event_id = '{id}'"
        ),
    );
    assert_eq!(
        moves,
        json!([{"from_status": "STRATEGY_CALL_BOOKED", "to_status": "QUALIFIED", "seconds_in_from_status": 3600.0}])
    );
    // The newest snapshot of the contact is complete.
    let latest = rows(
        &lake,
        "select arg_max(email, event_time) as email, arg_max(status, event_time) as status from {contact_events}",
    );
    assert_eq!(
        latest,
        json!([{"email": "ada.k@example.com", "status": "QUALIFIED"}])
    );
}

/// The same partial update delivered before the full update it follows in time (both in one
/// flush): its carried values come from that full update.
#[tokio::test]
async fn a_partial_update_delivered_before_its_predecessor_carries_the_right_snapshot() {
    let lake = Lake::new();
    let bodies = journey();
    for body in &bodies[..3] {
        deliver(&lake, body).await;
    }
    lake.flush().await;
    let partial = json!({"id": 73190, "updatedAt": "2026-04-23T08:02:00.000Z", "status": "QUALIFIED",
                         "updatedAttributes": [], "hookType": "Contact updated"});
    let (id, _) = deliver(&lake, &partial.to_string()).await;
    deliver(&lake, &bodies[3]).await; // e4 (07:37) changed the email and the phone
    lake.flush().await;
    let row = rows(
        &lake,
        &format!("select email, phone_number from {{contact_events}} where event_id = '{id}'"),
    );
    assert_eq!(
        row,
        json!([{"email": "ada.k@example.com", "phone_number": "+447700900999"}])
    );
    let late = rows(
        &lake,
        "select count(*) as n from {attribute_changes} where late",
    );
    assert_eq!(late, json!([{"n": 0}]));
}
