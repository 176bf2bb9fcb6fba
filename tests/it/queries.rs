//! The SQL in `queries/`, run with the DuckDB CLI against a lake with known contents.

use serde_json::{Value, json};

use crate::util::{Lake, duckdb, fixture};

/// Runs `queries/<name>.sql` against the lake, the way the file's header says to.
fn run(lake: &Lake, name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("queries")
        .join(format!("{name}.sql"));
    let sql = std::fs::read_to_string(&path).unwrap();
    let rows = duckdb(&format!(
        "SET VARIABLE data_dir = '{}'; {sql}",
        lake.dir.path().display()
    ));
    Value::Array(rows.into_iter().map(Value::Object).collect())
}

async fn post(lake: &Lake, body: String) {
    let r = lake.post("/webhooks/iclosed", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Three contacts; 48213 moves on to STRATEGY_CALL_BOOKED; one delivery is repeated.
async fn lake() -> Lake {
    let lake = Lake::new();
    post(&lake, fixture("contact_created.json")).await;
    post(&lake, fixture("contact_created_potential.json")).await;
    post(&lake, fixture("contact_updated_status_change.json")).await;
    post(&lake, fixture("contact_updated_status_change.json")).await;
    let booked = fixture("contact_updated.json")
        .replace("\"QUALIFIED\"", "\"STRATEGY_CALL_BOOKED\"")
        .replace(
            "\"updatedAttributes\": []",
            "\"updatedAttributes\": [\"status\"]",
        );
    post(&lake, booked).await;
    post(&lake, fixture("call_scheduled.json")).await;
    lake.flush().await;
    lake
}

#[tokio::test]
async fn every_query_file_is_tested() {
    let mut names: Vec<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
    names.sort();
    // status_history is tested with the change-tracking journeys in changes.rs.
    assert_eq!(
        names,
        vec![
            "daily_events.sql",
            "latest_status.sql",
            "status_history.sql"
        ],
        "add a test for each new query"
    );
}

#[tokio::test]
async fn latest_status_counts_each_contact_once_by_its_newest_snapshot() {
    let lake = lake().await;
    assert_eq!(
        run(&lake, "latest_status"),
        json!([
            {"status": "DISQUALIFIED", "contacts": 1},
            {"status": "POTENTIAL", "contacts": 1},
            {"status": "STRATEGY_CALL_BOOKED", "contacts": 1}
        ])
    );
}

#[tokio::test]
async fn daily_events_counts_redeliveries_once() {
    let lake = lake().await;
    assert_eq!(
        run(&lake, "daily_events"),
        json!([
            {"date": "2026-03-04", "event_type": "call_booked", "events": 1},
            {"date": "2026-03-04", "event_type": "contact_created", "events": 1},
            {"date": "2026-03-05", "event_type": "contact_updated", "events": 1},
            {"date": "2026-04-11", "event_type": "contact_created", "events": 1},
            {"date": "2026-05-19", "event_type": "contact_updated", "events": 1}
        ])
    );
}
