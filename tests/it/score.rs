//! Lead scoring end to end: generated deliveries (redeliveries included) in two flushes, the
//! late ones last, with a rule set that uses every kind of condition; every `lead_scores` row,
//! read with the DuckDB CLI, is compared with scores computed here from the generator's record.
//! Also `hooklake score --explain`, and the two queries.

use std::collections::BTreeMap;

use hooklake::generate::{Lead, Options, Snapshot, leads};
use hooklake::score::rules::{RuleConfig, ScoringConfig};
use serde_json::{Value, json};

use crate::util::{Lake, hooklake_command, hooklake_query, ingest};

/// The rule set of these tests, one rule per kind of condition (and per count).
const RULES: &str = r#"
[[rules]]
id = "qualified"
points = 30
attribute = "status"
equals = "qualified"

[[rules]]
id = "disqualified"
points = -100
attribute = "status"
in = ["DISQUALIFIED"]

[[rules]]
id = "paid"
points = 10
attribute = "utm_source"
in = ["google", "LinkedIn"]

[[rules]]
id = "work_email"
points = 7
attribute = "email"
matches = '@work\.example\.com$'

[[rules]]
id = "gclid"
points = 4
attribute = "param:gclid"
exists = true

[[rules]]
id = "no_fbclid"
points = -3
attribute = "param:fbclid"
exists = false

[[rules]]
id = "phone_band"
points = 2
attribute = "answer:Phone Number"
greater_than = 15550050050
less_than = 15550050200

[[rules]]
id = "booked"
points = 20
count = "booked"
greater_than = 0

[[rules]]
id = "cancelled"
points = -10
count = "cancelled"
greater_than = 0

[[rules]]
id = "rescheduled"
points = 1
count = "rescheduled"
greater_than = 0

[[rules]]
id = "held"
points = 25
count = "held"
greater_than = 0

[[rules]]
id = "no_show"
points = -15
count = "no_show"
greater_than = 0

[[rules]]
id = "won"
points = 50
count = "won"
greater_than = 0
less_than = 2
"#;

fn scoring() -> ScoringConfig {
    #[derive(serde::Deserialize)]
    struct Rules {
        rules: Vec<RuleConfig>,
    }
    let rules: Rules = toml::from_str(RULES).unwrap();
    ScoringConfig {
        rules: rules.rules,
        ..ScoringConfig::default()
    }
}

/// The score, band and reasons of a lead computed from the record: its attributes after
/// `snapshot` and the calls and outcomes of its record.
fn expected(lead: &Lead, snapshot: &Snapshot) -> (i64, &'static str, Vec<(&'static str, i64)>) {
    let a = &snapshot.attributes;
    let get = |k: &str| a.get(k).map(String::as_str);
    let mut matched = Vec::new();
    let mut rule = |id: &'static str, points: i64, holds: bool| {
        if holds {
            matched.push((id, points));
        }
    };
    rule("qualified", 30, get("status") == Some("QUALIFIED"));
    rule("disqualified", -100, get("status") == Some("DISQUALIFIED"));
    rule(
        "paid",
        10,
        matches!(get("utm_source"), Some("google" | "linkedin")),
    );
    rule(
        "work_email",
        7,
        get("email").is_some_and(|e| e.ends_with("@work.example.com")),
    );
    rule("gclid", 4, get("param:gclid").is_some());
    rule("no_fbclid", -3, get("param:fbclid").is_none());
    let phone: Option<i64> = get("answer:Phone Number").and_then(|p| p[1..].parse().ok());
    rule(
        "phone_band",
        2,
        phone.is_some_and(|p| p > 15550050050 && p < 15550050200),
    );
    let call = lead.call.as_ref();
    let outcome = call.and_then(|c| c.outcome.as_ref());
    let no_show = outcome.is_some_and(|o| o.no_sale_reason == Some("NO_SHOW"));
    rule("booked", 20, call.is_some());
    rule(
        "cancelled",
        -10,
        call.is_some_and(|c| c.cancelled_at.is_some()),
    );
    rule(
        "rescheduled",
        1,
        call.is_some_and(|c| c.rescheduled_to.is_some()),
    );
    rule("held", 25, outcome.is_some() && !no_show);
    rule("no_show", -15, no_show);
    rule("won", 50, outcome.is_some_and(|o| o.sale_value.is_some()));
    let score = matched.iter().map(|(_, p)| p).sum::<i64>().clamp(0, 100);
    let band = match score {
        s if s >= 60 => "hot",
        s if s >= 30 => "warm",
        _ => "cold",
    };
    (score, band, matched)
}

fn reasons(matched: &[(&str, i64)]) -> Value {
    matched
        .iter()
        .map(|(id, p)| json!({"rule": id, "points": p}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_scores_match_the_generators_record_row_for_row() {
    let all: Vec<Lead> = leads(Options {
        contacts: 300,
        seed: 23,
        days: 14,
    })
    .collect();
    assert!(all.iter().flat_map(|l| &l.deliveries).any(|d| d.redelivery));
    assert!(all.iter().flat_map(|l| &l.deliveries).any(|d| d.late));
    let lake = Lake::with(|c| c.scoring = scoring());
    ingest(&lake, &all).await;
    // Every row, in contact and revision order.
    let rows = lake.query(
        "select contact_id, revision, score, previous_score, band, previous_band, reasons,
                event_time <= last_activity_at as activity_after_cause
         from {lead_scores} order by contact_id, revision",
    );
    let mut expected_rows = Vec::new();
    for lead in &all {
        // After the first flush: the newest snapshot that was not late; after the second,
        // the newest of all (a late snapshot older than the state changes nothing).
        let on_time = lead.snapshots.iter().rfind(|s| !s.late).unwrap();
        let last = lead.snapshots.last().unwrap();
        let (s1, b1, r1) = expected(lead, on_time);
        expected_rows.push(json!({
            "contact_id": lead.contact_id, "revision": 1, "score": s1, "previous_score": null,
            "band": b1, "previous_band": null, "reasons": reasons(&r1).to_string(),
            "activity_after_cause": true,
        }));
        let (s2, b2, r2) = expected(lead, last);
        if (s2, b2) != (s1, b1) {
            expected_rows.push(json!({
                "contact_id": lead.contact_id, "revision": 2, "score": s2, "previous_score": s1,
                "band": b2, "previous_band": b1, "reasons": reasons(&r2).to_string(),
                "activity_after_cause": true,
            }));
        }
    }
    // Some late snapshots would score otherwise than their contact's newest state: had they
    // moved the score back in time, the rows would differ.
    assert!(all.iter().any(|l| {
        let last = l.snapshots.last().unwrap();
        l.snapshots
            .iter()
            .any(|s| s.late && expected(l, s).0 != expected(l, last).0)
    }));
    let actual: Vec<Value> = rows.into_iter().map(Value::Object).collect();
    assert_eq!(actual.len(), expected_rows.len(), "row count");
    for (a, e) in actual.iter().zip(&expected_rows) {
        assert_eq!(a, e);
    }
    // The data exercises every rule (else a broken rule could go unnoticed).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for row in &expected_rows {
        let reasons: Value = serde_json::from_str(row["reasons"].as_str().unwrap()).unwrap();
        for r in reasons.as_array().unwrap() {
            *seen
                .entry(r["rule"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), scoring().rules.len(), "{seen:?}");

    // The queries: the current score of every contact, and the movement per week and source.
    let dir = lake.close();
    let current = hooklake_query(dir.path(), "lead_scores", &[]);
    let mut last: BTreeMap<i64, &Value> = BTreeMap::new();
    for row in &expected_rows {
        last.insert(row["contact_id"].as_i64().unwrap(), row);
    }
    assert_eq!(current.len(), last.len());
    for row in &current {
        let e = last[&row["contact_id"].as_i64().unwrap()];
        assert_eq!(row["score"], e["score"]);
        assert_eq!(row["band"], e["band"]);
        assert_eq!(row["reasons"], e["reasons"]);
        assert_eq!(row["changes"], e["revision"]);
    }
    let movement = hooklake_query(dir.path(), "score_movement", &[]);
    let changes: i64 = movement
        .iter()
        .map(|r| r["changes"].as_i64().unwrap())
        .sum();
    let first: i64 = movement
        .iter()
        .map(|r| r["first_scored"].as_i64().unwrap())
        .sum();
    assert_eq!(changes as usize, expected_rows.len());
    assert_eq!(first as usize, all.len());
    // The distribution of current scores, per band and 10-point range.
    let mut buckets: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for e in last.values() {
        let key = (
            e["band"].as_str().unwrap().to_string(),
            e["score"].as_i64().unwrap().div_euclid(10) * 10,
        );
        *buckets.entry(key).or_default() += 1;
    }
    let distribution: BTreeMap<(String, i64), i64> =
        hooklake_query(dir.path(), "score_distribution", &[])
            .iter()
            .map(|r| {
                (
                    (
                        r["band"].as_str().unwrap().to_string(),
                        r["score_from"].as_i64().unwrap(),
                    ),
                    r["contacts"].as_i64().unwrap(),
                )
            })
            .collect();
    assert_eq!(distribution, buckets);
    assert!(buckets.len() > 3, "{buckets:?}");

    // `score --explain` prints a contact's score and every matched rule with its points.
    let lead = &all[0];
    let e = last[&lead.contact_id];
    let out = hooklake_command()
        .args(["score", "--explain", &lead.contact_id.to_string()])
        .env("HOOKLAKE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!(
            "contact {}: score {} ({})",
            lead.contact_id,
            e["score"],
            e["band"].as_str().unwrap()
        )),
        "{text}"
    );
    let reasons: Value = serde_json::from_str(e["reasons"].as_str().unwrap()).unwrap();
    for r in reasons.as_array().unwrap() {
        let line = format!(
            "{:+5}  {}",
            r["points"].as_i64().unwrap(),
            r["rule"].as_str().unwrap()
        );
        assert!(text.contains(&line), "{line:?} in {text}");
    }
    // An unknown contact is a CLI error naming it.
    let out = hooklake_command()
        .args(["score", "--explain", "999999999"])
        .env("HOOKLAKE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("contact 999999999 has no score"), "{err}");
}

#[tokio::test]
async fn scoring_off_writes_no_scores() {
    let all: Vec<Lead> = leads(Options {
        contacts: 10,
        seed: 2,
        days: 2,
    })
    .collect();
    let lake = Lake::with(|c| c.scoring.enabled = false);
    ingest(&lake, &all).await;
    assert!(!lake.dir.path().join("lead_scores").exists());
    let on = Lake::new();
    ingest(&on, &all).await;
    assert!(on.dir.path().join("lead_scores").exists(), "on by default");
}

#[tokio::test]
async fn the_decay_pass_writes_a_row_when_decay_moves_a_band() {
    let all: Vec<Lead> = leads(Options {
        contacts: 20,
        seed: 3,
        days: 2,
    })
    .collect();
    let lake = Lake::with(|c| c.scoring.half_life_days = 7.0);
    ingest(&lake, &all).await;
    let not_cold = lake.query(
        "select count(*) as n from (select contact_id, arg_max(band, revision) as band
         from {lead_scores} group by all) where band <> 'cold'",
    );
    let not_cold = not_cold[0]["n"].as_i64().unwrap();
    assert!(not_cold > 0);
    // A year without activity makes every score cold: one row each for those that were not.
    let later = chrono::Utc::now().timestamp_micros() + 365 * 86_400_000_000;
    let moved = lake.pipeline.decay_scores(later).await.unwrap();
    assert_eq!(moved as i64, not_cold);
    let rows = lake.query(
        "select count(*) as n, count(*) filter (where band = 'cold' and previous_band <> 'cold'
                and event_type = 'score_decay' and score < previous_score) as moved
         from {lead_scores} where event_type = 'score_decay'",
    );
    assert_eq!(rows[0]["n"], json!(not_cold));
    assert_eq!(rows[0]["moved"], json!(not_cold));
    // Nothing more moves the same day; decay off moves nothing.
    assert_eq!(lake.pipeline.decay_scores(later).await.unwrap(), 0);
    let off = Lake::new();
    ingest(&off, &all).await;
    assert_eq!(off.pipeline.decay_scores(later).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_scores_do_not_depend_on_flush_sizes() {
    let all: Vec<Lead> = leads(Options {
        contacts: 150,
        seed: 5,
        days: 7,
    })
    .collect();
    // Small flushes of the events in time order: outcomes timed at receipt come last, each in a
    // flush without its contact's snapshot, and must still count the calls under the keys the
    // contact owns.
    let lake = Lake::with(|c| c.scoring = scoring());
    let events = hooklake::generate::in_time_order(Options {
        contacts: 150,
        seed: 5,
        days: 7,
    });
    for chunk in events.chunks(25) {
        lake.post_events(chunk).await;
        lake.flush().await;
    }
    let rows = lake.query(
        "select contact_id, arg_max(score, revision) as score, arg_max(band, revision) as band
         from {lead_scores} group by all order by contact_id",
    );
    assert_eq!(rows.len(), all.len());
    for (row, lead) in rows.iter().zip(&all) {
        // The reasons of the last row may be older: a change of rules matched that left the
        // score and band as they were writes no row.
        let (score, band, _) = expected(lead, lead.snapshots.last().unwrap());
        assert_eq!(row["contact_id"], json!(lead.contact_id));
        assert_eq!(
            (&row["score"], &row["band"]),
            (&json!(score), &json!(band)),
            "contact {}",
            lead.contact_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_movers_and_distribution_follow_the_lead_score_rows() {
    let options = || Options {
        contacts: 200,
        seed: 31,
        days: 7,
    };
    // In event-time order, a flush every 50 events: a contact's events span flushes, so its
    // score moves after its first.
    let events = hooklake::generate::in_time_order(options());
    let lake = Lake::new();
    for (i, chunk) in events.chunks(25).enumerate() {
        lake.post_events(chunk).await;
        if i % 2 == 1 {
            lake.flush().await;
        }
    }
    lake.flush().await;
    let rows = lake.query(
        "select contact_id, revision, score, previous_score, band from {lead_scores} order by contact_id, revision",
    );
    // The oracle, from the rows: per contact, its rows after its first, from the first of
    // those's previous score to the last one's score.
    let mut by_contact: BTreeMap<i64, Vec<&serde_json::Map<String, Value>>> = BTreeMap::new();
    for r in &rows {
        by_contact
            .entry(r["contact_id"].as_i64().unwrap())
            .or_default()
            .push(r);
    }
    let mut moves: Vec<(i64, i64, i64, i64)> = Vec::new();
    let mut buckets: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (id, rs) in &by_contact {
        let last = rs.last().unwrap();
        let key = (
            last["band"].as_str().unwrap().to_string(),
            last["score"].as_i64().unwrap().div_euclid(10) * 10,
        );
        *buckets.entry(key).or_default() += 1;
        let moved: Vec<_> = rs
            .iter()
            .filter(|r| !r["previous_score"].is_null())
            .collect();
        if let (Some(first), Some(end)) = (moved.first(), moved.last()) {
            let before = first["previous_score"].as_i64().unwrap();
            let after = end["score"].as_i64().unwrap();
            if before != after {
                moves.push(((after - before).abs(), *id, before, after));
            }
        }
    }
    moves.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    moves.truncate(20);
    assert!(moves.len() >= 10, "{moves:?}");
    let dir = lake.close();
    let doubled = tempfile::tempdir().unwrap();
    crate::queries::copy_twice(dir.path(), doubled.path());
    for lake in [dir.path(), doubled.path()] {
        let movers: Vec<(i64, i64, i64, i64)> = hooklake_query(lake, "score_movers", &[])
            .iter()
            .map(|r| {
                let change = r["change"].as_i64().unwrap();
                let (before, after) = (
                    r["score_before"].as_i64().unwrap(),
                    r["score_after"].as_i64().unwrap(),
                );
                assert_eq!(change, after - before);
                (
                    change.abs(),
                    r["contact_id"].as_i64().unwrap(),
                    before,
                    after,
                )
            })
            .collect();
        assert_eq!(movers, moves);
        let distribution: BTreeMap<(String, i64), i64> =
            hooklake_query(lake, "score_distribution", &[])
                .iter()
                .map(|r| {
                    (
                        (
                            r["band"].as_str().unwrap().to_string(),
                            r["score_from"].as_i64().unwrap(),
                        ),
                        r["contacts"].as_i64().unwrap(),
                    )
                })
                .collect();
        assert_eq!(distribution, buckets);
    }
}
