//! `hooklake gen`: deterministic, realistic iClosed payloads for tests and benchmarks.
//!
//! Each lead goes through a form journey (two "Contact created" steps), is qualified or
//! disqualified (sometimes with a campaign change), may change email and phone, may book a
//! strategy call, which may be cancelled, rescheduled (half the time without `old_start_time`)
//! or given an outcome (a sale with a deal, or a no-show). Invariant: the same arguments always
//! give the same bytes.

use serde_json::{Value, json};

/// A small deterministic generator (a linear congruential one): the same seed gives the same data.
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

/// The events of lead `c`: those with an event time (minutes from 2026-03-01), and those whose
/// event time is their receive time (reschedules, outcomes without a deal).
fn journey(c: i64, rng: &mut Lcg) -> (Vec<(i64, Value)>, Vec<Value>) {
    let sources = ["google", "facebook", "linkedin", "newsletter"];
    let mut timed: Vec<(i64, Value)> = Vec::new();
    let mut at_receipt = Vec::new();
    {
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
            return (timed, at_receipt);
        }
        if rng.below(2) == 0 {
            let mut changed = step3.clone();
            changed["email"] = json!(format!("lead{id}@work.example.com"));
            changed["phoneNumber"] = json!(format!("+1666{id:07}"));
            changed["updatedAttributes"] = json!(["email"]);
            timed.push(contact(t0 + 60, "QUALIFIED", "Contact updated", changed));
        }
        if rng.below(2) == 0 {
            return (timed, at_receipt);
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
    (timed, at_receipt)
}

/// Every event of `contacts` leads, in event-time order, then the events timed at receipt:
/// what a live pipeline receives when nothing arrives late. Holds everything in memory.
pub fn in_time_order(contacts: i64, seed: u64) -> Vec<Value> {
    let mut rng = Lcg(seed);
    let mut timed = Vec::new();
    let mut at_receipt = Vec::new();
    for c in 0..contacts {
        let (t, r) = journey(c, &mut rng);
        timed.extend(t);
        at_receipt.extend(r);
    }
    timed.sort_by_key(|(minutes, _)| *minutes);
    timed
        .into_iter()
        .map(|(_, v)| v)
        .chain(at_receipt)
        .collect()
}

/// Writes the events of `contacts` leads as NDJSON, lead after lead (each lead's events in
/// time order), without holding them in memory. Returns the number of events written.
pub fn write_ndjson(
    contacts: i64,
    seed: u64,
    out: &mut impl std::io::Write,
) -> std::io::Result<u64> {
    let mut rng = Lcg(seed);
    let mut written = 0;
    for c in 0..contacts {
        let (mut timed, at_receipt) = journey(c, &mut rng);
        timed.sort_by_key(|(minutes, _)| *minutes);
        for event in timed.into_iter().map(|(_, v)| v).chain(at_receipt) {
            serde_json::to_writer(&mut *out, &event)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Envelope, EventType};

    fn ndjson(contacts: i64, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_ndjson(contacts, seed, &mut out).unwrap();
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        assert_eq!(ndjson(50, 3), ndjson(50, 3));
        assert_ne!(ndjson(50, 3), ndjson(50, 4));
    }

    #[test]
    fn every_event_routes_to_a_known_type_and_every_type_appears() {
        let text = String::from_utf8(ndjson(200, 1)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            let e = Envelope::parse_one(line, None, 0, "/gen").unwrap();
            assert_ne!(e.event_type, EventType::Unknown, "{line}");
            seen.insert(e.event_type);
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(in_time_order(200, 1).len(), text.lines().count());
    }
}
