//! `hooklake rebuild` recomputes the same rows the live pipeline wrote, on a generated data set.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{Lake, duckdb, scan};

/// A small deterministic generator, so a failing run can be repeated.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn at(minutes: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap();
    (base + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Journeys of `contacts` leads: form steps, qualification, changes, bookings, cancellations,
/// reschedules and outcomes. Returns the events with a time, in time order, then the events
/// whose event time is their receive time (reschedules, outcomes without a deal), which come last.
fn generate(contacts: i64, seed: u64) -> Vec<Value> {
    let mut rng = Lcg(seed);
    let sources = ["google", "facebook", "linkedin", "newsletter"];
    let mut timed: Vec<(i64, Value)> = Vec::new();
    let mut at_receipt = Vec::new();
    for c in 0..contacts {
        let id = 50_000 + c;
        let t0 = c * 7;
        let source = sources[rng.below(4) as usize];
        let contact = |minutes: i64, status: &str, hook: &str, extra: Value| {
            let mut o = json!({
                "id": id, "userId": 1907, "accountId": 622, "previewId": format!("contact_{id}"),
                "status": status, "createdAt": at(t0), "updatedAt": at(minutes), "hookType": hook,
                "phoneNumber": format!("+1555{id:07}"),
                "tracking": {"utm_source": source, "utm_medium": "cpc", "utm_campaign": "spring",
                             "first_utm_source": source, "first_utm_campaign": "spring",
                             "utmKey_1": "fbclid", "utmValue_1": format!("click{id}")},
                "questionsAndAnswers": {"1_question": "Phone Number", "1_response": format!("+1555{id:07}")}
            });
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            (minutes, o)
        };
        timed.push(contact(t0, "POTENTIAL", "Contact created", json!({})));
        let named = json!({"firstName": "Lead", "lastName": format!("N{id}"), "email": format!("lead{id}@example.com")});
        timed.push(contact(
            t0 + 2,
            "POTENTIAL",
            "Contact created",
            named.clone(),
        ));
        let qualified = rng.below(10) < 7;
        let status = if qualified {
            "QUALIFIED"
        } else {
            "DISQUALIFIED"
        };
        let mut step3 = named.clone();
        step3["updatedAttributes"] = json!(["status"]);
        if rng.below(10) < 3 {
            step3["tracking"] = json!({"utm_source": source, "utm_medium": "email", "utm_campaign": "summer",
                                       "first_utm_source": source, "first_utm_campaign": "spring"});
        }
        timed.push(contact(t0 + 5, status, "Contact updated", step3.clone()));
        if !qualified {
            continue;
        }
        if rng.below(2) == 0 {
            let mut changed = step3.clone();
            changed["email"] = json!(format!("lead{id}@work.example.com"));
            changed["phoneNumber"] = json!(format!("+1666{id:07}"));
            changed["updatedAttributes"] = json!(["email"]);
            timed.push(contact(t0 + 60, "QUALIFIED", "Contact updated", changed));
        }
        if rng.below(2) == 0 {
            continue;
        }
        let mut booked = step3.clone();
        booked["updatedAttributes"] = json!(["status"]);
        timed.push(contact(
            t0 + 120,
            "STRATEGY_CALL_BOOKED",
            "Contact by status",
            booked,
        ));
        let call = |hook: &str, start: i64, extra: Value| {
            let mut event = json!({"uuid": format!("call{id}"), "utc_start_time": at(start), "utc_end_time": at(start + 45),
                                   "created_at": at(t0 + 120), "type": "STRATEGY_CALL", "canceled": false});
            for (k, v) in extra.as_object().unwrap() {
                event[k] = v.clone();
            }
            json!({"event_type": {"uuid": "7741", "name": "Growth Strategy Session", "duration": "45", "durationUnit": "MINUTES"},
                   "event": event,
                   "invitee": {"email": format!("lead{id}@example.com"), "previewUrl": format!("https://app.example.com/p?preview=contact_{id}")},
                   "hookType": hook})
        };
        let slot = t0 + 2 * 24 * 60;
        timed.push((t0 + 120, call("Call booked", slot, json!({}))));
        match rng.below(5) {
            0 => timed.push((
                t0 + 24 * 60,
                call(
                    "Call canceled",
                    slot,
                    json!({"canceled": true, "canceled_at": at(t0 + 24 * 60), "cancel_reason": ""}),
                ),
            )),
            1 => {
                let old = if rng.below(2) == 0 {
                    json!({"old_start_time": at(slot)})
                } else {
                    json!({})
                };
                at_receipt.push(call("Call rescheduled", slot + 24 * 60, old));
            }
            _ => {
                let outcome = |sale: bool| {
                    let mut o = json!({"uuid": id * 10, "contactId": id, "userId": 2051, "eventId": 3318,
                                       "closerEmail": "closer@example.com", "startTime": at(slot),
                                       "callOutcome": if sale { "SALE" } else { "NO_SALE" }, "transaction": [],
                                       "hookType": "Outcome added"});
                    if sale {
                        o["dealValue"] = json!(1000 + (id % 7) * 500);
                        o["deal"] = json!({"transactionType": "SALE", "createdAt": at(slot + 60), "value": 1000 + (id % 7) * 500});
                    } else {
                        o["noSaleReason"] = json!("NO_SHOW");
                    }
                    o
                };
                if rng.below(2) == 0 {
                    timed.push((slot + 60, outcome(true)));
                } else {
                    at_receipt.push(outcome(false));
                }
            }
        }
    }
    timed.sort_by_key(|(minutes, _)| *minutes);
    timed
        .into_iter()
        .map(|(_, v)| v)
        .chain(at_receipt)
        .collect()
}

/// Rows in `a` but not in `b` and the other way round, and the row count of `a`, per table.
fn differences(a: &std::path::Path, b: &std::path::Path, table: &str) -> (i64, i64, i64) {
    let (sa, sb) = (scan(a, table), scan(b, table));
    let rows = duckdb(&format!(
        "select (select count(*) from (select * from {sa} except all select * from {sb})) as a_only, \
                (select count(*) from (select * from {sb} except all select * from {sa})) as b_only, \
                (select count(*) from {sa}) as n"
    ));
    let get = |k: &str| rows[0][k].as_i64().unwrap();
    (get("a_only"), get("b_only"), get("n"))
}

const TABLES: [&str; 8] = [
    "contact_events",
    "tracking_params",
    "contact_answers",
    "call_events",
    "call_outcomes",
    "raw_events",
    "attribute_changes",
    "status_transitions",
];

fn hooklake(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hooklake"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn rebuild_equals_the_live_output_on_a_generated_data_set() {
    let events = generate(700, 7);
    assert!(events.len() > 3000, "{} events", events.len());
    let lake = Lake::new();
    for (i, chunk) in events.chunks(20).enumerate() {
        let r = lake
            .post(
                "/webhooks/iclosed",
                Value::Array(chunk.to_vec()).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if i % 40 == 39 {
            lake.flush().await;
        }
    }
    lake.flush().await;
    let live = lake.close();
    let live_dir = live.path().join(".");
    let scratch = tempfile::tempdir().unwrap();
    let rebuilt = scratch.path().join("rebuilt");

    let summary = hooklake(&[
        "--data-dir".as_ref(),
        live_dir.as_os_str(),
        "rebuild".as_ref(),
        "--into".as_ref(),
        rebuilt.as_os_str(),
    ]);
    assert!(
        summary.contains(&format!("events accepted: {}", events.len())),
        "{summary}"
    );
    for table in TABLES {
        let (live_only, rebuilt_only, n) = differences(live.path(), &rebuilt, table);
        assert_eq!((live_only, rebuilt_only), (0, 0), "{table}: rows differ");
        assert!(
            n > 0,
            "{table} is empty: the generator should fill every table"
        );
    }
    let late = duckdb(&format!(
        "select count(*) as n from {} where late",
        scan(&rebuilt, "status_transitions")
    ));
    assert_eq!(late[0]["n"], 0, "in-order input has no late rows");

    // In place: the data directory is exchanged with the rebuilt one, the old one is kept.
    let moved = scratch.path().join("lake");
    std::fs::rename(live.path(), &moved).unwrap();
    let summary = hooklake(&["--data-dir".as_ref(), moved.as_os_str(), "rebuild".as_ref()]);
    let kept = summary
        .lines()
        .find_map(|l| l.strip_prefix("previous contents kept at: "))
        .expect(&summary);
    for table in TABLES {
        let (a, b, _) = differences(&moved, &rebuilt, table);
        assert_eq!(
            (a, b),
            (0, 0),
            "{table}: the data directory now holds the rebuilt rows"
        );
        let (a, b, _) = differences(std::path::Path::new(kept), &rebuilt, table);
        assert_eq!((a, b), (0, 0), "{table}: the previous contents are kept");
    }
}
