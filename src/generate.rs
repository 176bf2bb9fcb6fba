//! `hooklake gen`: deterministic, realistic iClosed payloads for tests and benchmarks, with the
//! generator's own record of what it generated ([`Lead`]) so tests can compute the answers to
//! the queries in `queries/` without running SQL.
//!
//! Each lead goes through a form journey (two "Contact created" steps), is qualified or
//! disqualified (sometimes with a new last-touch campaign, reported or not), may change email
//! and phone (only the email reported), may be "updated" with nothing changed, may book a
//! strategy call with one of three hosts, which may be cancelled, rescheduled (half the time
//! without `old_start_time`), and given an outcome (a sale with a deal, a no-sale, a no-show)
//! or none. A few leads carry an undocumented key (`leadScore`), an unparsable `joinedTime`,
//! a malformed email, or an event type hooklake does not know. Some deliveries are repeated
//! (redeliveries) and some qualification updates arrive late, after later leads. Invariant: the
//! same options always give the same bytes.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Number of leads (about 6.5 deliveries each).
    pub contacts: i64,
    /// The same seed gives the same data.
    pub seed: u64,
    /// Days over which leads first appear (from 2026-03-01).
    pub days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            contacts: 1000,
            seed: 1,
            days: 90,
        }
    }
}

/// The calls' hosts: name and email.
pub const HOSTS: [(&str, &str); 3] = [
    ("Alex Rivera", "alex@closers.example.com"),
    ("Blair Chen", "blair@closers.example.com"),
    ("Casey Diaz", "casey@closers.example.com"),
];

/// Traffic sources: name, medium, and the click-id parameter they add, if any.
const SOURCES: [(&str, &str, Option<&str>); 4] = [
    ("google", "cpc", Some("gclid")),
    ("facebook", "paid_social", Some("fbclid")),
    ("linkedin", "paid_social", Some("li_fat_id")),
    ("newsletter", "email", None),
];

const CAMPAIGNS: [&str; 3] = ["spring_sale", "webinar", "retargeting"];

/// How many later leads a late delivery waits for in the NDJSON stream.
const LATE_LAG: i64 = 25;

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

    /// True `percent` times in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// 2026-03-01 00:00 UTC plus `minutes`.
pub fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(minutes)
}

fn text(minutes: i64) -> String {
    at(minutes).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One contact snapshot as sent, and what the generator knows about it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `updatedAt`: the event time.
    pub at: DateTime<Utc>,
    /// `hookType`: `Contact created`, `Contact updated` or `Contact by status`.
    pub hook: &'static str,
    pub status: String,
    /// The contact's attributes after this event, named as hooklake names them
    /// (`email`, `utm_campaign`, `param:gclid`, `answer:Phone Number`, ...), constant ones left out.
    pub attributes: BTreeMap<String, String>,
    /// `updatedAttributes` as sent (None: the key is absent).
    pub reported: Option<Vec<String>>,
    /// Delivered after later leads' events (after everything else of its lead).
    pub late: bool,
    /// Carries an undocumented key and/or an unparsable value.
    pub extras_key: Option<&'static str>,
    pub parse_error: bool,
}

/// The outcome of a call.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Deal value of a sale.
    pub sale_value: Option<f64>,
    /// `noSaleReason` of a no-sale (`NO_SHOW`, `FOLLOW_UP_SCHEDULE`).
    pub no_sale_reason: Option<&'static str>,
    /// `deal.createdAt` of a sale (the outcome's event time); None: timed at receipt.
    pub deal_at: Option<DateTime<Utc>>,
}

/// A strategy call and what became of it.
#[derive(Debug, Clone)]
pub struct Call {
    pub call_id: String,
    /// Index into [`HOSTS`].
    pub host: usize,
    pub booked_at: DateTime<Utc>,
    /// The slot booked first.
    pub slot: DateTime<Utc>,
    /// The new slot of a reschedule (sent timed at receipt).
    pub rescheduled_to: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
}

impl Call {
    /// The slot the call ends up in.
    pub fn final_slot(&self) -> DateTime<Utc> {
        self.rescheduled_to.unwrap_or(self.slot)
    }
}

/// One payload in delivery order.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub payload: Value,
    /// A repeat of the previous delivery (same bytes).
    pub redelivery: bool,
    /// Delivered after later leads' events.
    pub late: bool,
}

/// Everything generated for one lead.
#[derive(Debug, Clone)]
pub struct Lead {
    pub contact_id: i64,
    pub preview_id: String,
    pub first_source: &'static str,
    pub first_campaign: &'static str,
    /// Custom tracking parameters (`utmKey_N` / `utmValue_N`), the same in every snapshot.
    pub params: Vec<(String, String)>,
    /// Contact snapshots in event-time order.
    pub snapshots: Vec<Snapshot>,
    pub call: Option<Call>,
    /// An event of a type hooklake does not know, timed at receipt.
    pub unknown_event: bool,
    /// Every payload, in the order this lead's deliveries are made (late ones last).
    pub deliveries: Vec<Delivery>,
}

/// The mutable part of a contact, rendered into payloads and attribute maps.
struct Person {
    id: i64,
    t0: i64,
    status: String,
    names: bool,
    email: String,
    phone: String,
    utm: (&'static str, &'static str, &'static str),
    first: (&'static str, &'static str, &'static str),
    params: Vec<(String, String)>,
    lead_score: Option<i64>,
}

impl Person {
    fn attributes(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            a.insert(k.to_string(), v.to_string());
        };
        put("status", &self.status);
        put("phone_number", &self.phone);
        put("answer:Phone Number", &format!("+1555{:07}", self.id));
        put("utm_source", self.utm.0);
        put("utm_medium", self.utm.1);
        put("utm_campaign", self.utm.2);
        put("first_utm_source", self.first.0);
        put("first_utm_medium", self.first.1);
        put("first_utm_campaign", self.first.2);
        if self.names {
            put("first_name", "Lead");
            put("last_name", &format!("N{}", self.id));
            put("email", &self.email);
        }
        for (k, v) in &self.params {
            put(&format!("param:{k}"), v);
        }
        a
    }

    fn payload(&self, minutes: i64, hook: &str, reported: Option<&[&str]>, bad: bool) -> Value {
        let id = self.id;
        let mut tracking = json!({
            "utm_source": self.utm.0, "utm_medium": self.utm.1, "utm_campaign": self.utm.2,
            "first_utm_source": self.first.0, "first_utm_medium": self.first.1,
            "first_utm_campaign": self.first.2,
        });
        for (i, (k, v)) in self.params.iter().enumerate() {
            tracking[format!("utmKey_{}", i + 1)] = json!(k);
            tracking[format!("utmValue_{}", i + 1)] = json!(v);
        }
        let mut o = json!({
            "id": id, "userId": 1907, "accountId": 622, "previewId": format!("contact_{id}"),
            "status": self.status, "createdAt": text(self.t0), "updatedAt": text(minutes),
            "hookType": hook, "phoneNumber": self.phone, "tracking": tracking,
            "questionsAndAnswers": {"1_question": "Phone Number", "1_response": format!("+1555{id:07}")},
        });
        if self.names {
            o["firstName"] = json!("Lead");
            o["lastName"] = json!(format!("N{id}"));
            o["email"] = json!(self.email);
        }
        if let Some(r) = reported {
            o["updatedAttributes"] = json!(r);
        }
        if let Some(score) = self.lead_score {
            o["leadScore"] = json!(score);
        }
        if bad {
            o["joinedTime"] = json!("yesterday");
        }
        o
    }
}

/// Builds lead number `c`, drawing from `rng`.
fn lead(c: i64, options: &Options, rng: &mut Lcg) -> Lead {
    let id = 50_000 + c;
    let t0 = c * options.days.max(1) * 24 * 60 / options.contacts.max(1);
    let (source, medium, click) = SOURCES[rng.below(4) as usize];
    let campaign = CAMPAIGNS[rng.below(3) as usize];
    let mut params = Vec::new();
    if let Some(key) = click {
        params.push((key.to_string(), format!("{key}-{id}")));
    }
    if rng.chance(20) {
        params.push(("ref".to_string(), format!("partner{}", id % 5)));
    }
    let mut person = Person {
        id,
        t0,
        status: "POTENTIAL".into(),
        names: false,
        // One lead in 37 types an email without `@` (flagged `email_malformed`) until it
        // changes it; decided by id, so the random draws of every lead stay as they were.
        email: if id % 37 == 0 {
            format!("lead{id}.example.com")
        } else {
            format!("lead{id}@example.com")
        },
        phone: format!("+1555{id:07}"),
        utm: (source, medium, campaign),
        first: (source, medium, campaign),
        params: params.clone(),
        lead_score: rng.chance(5).then(|| (id % 90) + 10),
    };
    let bad_joined = rng.chance(3);
    // (minutes, payload, snapshot) of timed contact events.
    let mut timed: Vec<(i64, Value, Option<Snapshot>)> = Vec::new();
    let snap =
        |person: &Person, minutes: i64, hook: &'static str, reported: Option<&[&str]>, bad| {
            let payload = person.payload(minutes, hook, reported, bad);
            let s = Snapshot {
                at: at(minutes),
                hook,
                status: person.status.clone(),
                attributes: person.attributes(),
                reported: reported.map(|r| r.iter().map(|s| s.to_string()).collect()),
                late: false,
                extras_key: person.lead_score.map(|_| "leadScore"),
                parse_error: bad,
            };
            (minutes, payload, Some(s))
        };
    timed.push(snap(&person, t0, "Contact created", None, false));
    person.names = true;
    timed.push(snap(&person, t0 + 2, "Contact created", None, bad_joined));
    let qualified = rng.chance(70);
    person.status = if qualified {
        "QUALIFIED"
    } else {
        "DISQUALIFIED"
    }
    .into();
    let mut reported: &[&str] = &["status"];
    if rng.chance(30) {
        person.utm = (source, "email", CAMPAIGNS[(rng.below(2) as usize + 1) % 3]);
        if person.utm.2 == campaign {
            person.utm.2 = "nurture";
        }
        if rng.chance(50) {
            reported = &["status", "tracking"];
        }
    }
    let tq = t0 + 5 + rng.below(240) as i64;
    timed.push(snap(&person, tq, "Contact updated", Some(reported), false));
    let qualify_index = timed.len() - 1;
    let mut call = None;
    if qualified {
        if rng.chance(10) {
            timed.push(snap(
                &person,
                tq + 10,
                "Contact updated",
                Some(&["firstName"]),
                false,
            ));
        }
        if rng.chance(50) {
            person.email = format!("lead{id}@work.example.com");
            person.phone = format!("+1666{id:07}");
            let te = tq + 20 + rng.below(600) as i64;
            timed.push(snap(
                &person,
                te,
                "Contact updated",
                Some(&["email"]),
                false,
            ));
        }
        if rng.chance(60) {
            person.status = "STRATEGY_CALL_BOOKED".into();
            let tb = tq + 700 + rng.below(2880) as i64;
            timed.push(snap(
                &person,
                tb,
                "Contact by status",
                Some(&["status"]),
                false,
            ));
            call = Some(book(id, tb, rng));
        }
    }
    // A qualification update that has later events may be delivered late.
    let late = qualify_index + 1 < timed.len() && rng.chance(10);
    if late && let Some(s) = timed[qualify_index].2.as_mut() {
        s.late = true;
    }
    let mut at_receipt = Vec::new();
    if let Some(call) = &call {
        call_payloads(id, call, &mut timed, &mut at_receipt);
    }
    let unknown_event = rng.chance(2);
    if unknown_event {
        at_receipt.push(json!({"hookType": "Lead scored", "contactId": id, "score": id % 100}));
    }
    timed.sort_by_key(|(minutes, _, _)| *minutes);
    let mut deliveries = Vec::new();
    let mut late_ones = Vec::new();
    let mut snapshots = Vec::new();
    for (_, payload, s) in timed {
        let is_late = s.as_ref().is_some_and(|s| s.late);
        if let Some(s) = s {
            snapshots.push(s);
        }
        let d = Delivery {
            payload,
            redelivery: false,
            late: is_late,
        };
        if is_late {
            late_ones.push(d);
        } else {
            deliveries.push(d);
        }
    }
    deliveries.extend(at_receipt.into_iter().map(|payload| Delivery {
        payload,
        redelivery: false,
        late: false,
    }));
    deliveries.extend(late_ones);
    // Redeliveries: iClosed repeats a delivery it thinks failed.
    let mut with_repeats = Vec::with_capacity(deliveries.len() + 2);
    for d in deliveries {
        let repeat = rng.chance(4).then(|| Delivery {
            redelivery: true,
            ..d.clone()
        });
        with_repeats.push(d);
        with_repeats.extend(repeat);
    }
    Lead {
        contact_id: id,
        preview_id: format!("contact_{id}"),
        first_source: source,
        first_campaign: campaign,
        params,
        snapshots,
        call,
        unknown_event,
        deliveries: with_repeats,
    }
}

/// Draws a call booked at `tb` for a slot one to three days later.
fn book(id: i64, tb: i64, rng: &mut Lcg) -> Call {
    let host = rng.below(3) as usize;
    let slot = at(tb + (1 + rng.below(3) as i64) * 24 * 60);
    let mut call = Call {
        call_id: format!("call{id}"),
        host,
        booked_at: at(tb),
        slot,
        rescheduled_to: None,
        cancelled_at: None,
        outcome: None,
    };
    let fate = rng.below(100);
    if fate < 15 {
        call.cancelled_at = Some(at(tb + 1 + rng.below(1000) as i64));
        return call;
    }
    if fate < 35 {
        call.rescheduled_to = Some(slot + Duration::days(1));
    }
    let final_slot = call.final_slot();
    call.outcome = match rng.below(100) {
        0..40 => Some(Outcome {
            sale_value: Some((1000 + (id % 7) * 500) as f64),
            no_sale_reason: None,
            deal_at: Some(final_slot + Duration::minutes(45 + rng.below(120) as i64)),
        }),
        40..55 => Some(Outcome {
            sale_value: None,
            no_sale_reason: Some("FOLLOW_UP_SCHEDULE"),
            deal_at: None,
        }),
        55..75 => Some(Outcome {
            sale_value: None,
            no_sale_reason: Some("NO_SHOW"),
            deal_at: None,
        }),
        _ => None,
    };
    call
}

/// The payloads of `call`: timed ones into `timed`, those timed at receipt into `at_receipt`.
fn call_payloads(
    id: i64,
    call: &Call,
    timed: &mut Vec<(i64, Value, Option<Snapshot>)>,
    at_receipt: &mut Vec<Value>,
) {
    let (host, host_email) = HOSTS[call.host];
    let minutes = |t: DateTime<Utc>| (t - at(0)).num_minutes();
    let payload = |hook: &str, start: DateTime<Utc>, extra: Value| {
        let start_text = start.to_rfc3339_opts(SecondsFormat::Millis, true);
        let end_text = (start + Duration::minutes(45)).to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut event = json!({"uuid": call.call_id, "utc_start_time": start_text, "utc_end_time": end_text,
                               "created_at": call.booked_at.to_rfc3339_opts(SecondsFormat::Millis, true), "type": "STRATEGY_CALL", "canceled": false,
                               "extended_assigned_to": {"1": {"name": host, "email": host_email, "primary": "true"}}});
        for (k, v) in extra.as_object().unwrap() {
            event[k] = v.clone();
        }
        json!({"event_type": {"uuid": "7741", "name": "Growth Strategy Session", "duration": "45", "durationUnit": "MINUTES"},
               "event": event,
               "invitee": {"email": format!("lead{id}@example.com"), "previewUrl": format!("https://app.example.com/p?preview=contact_{id}")},
               "hookType": hook})
    };
    timed.push((
        minutes(call.booked_at),
        payload("Call booked", call.slot, json!({})),
        None,
    ));
    if let Some(cancelled) = call.cancelled_at {
        let extra = json!({"canceled": true, "canceled_at": cancelled.to_rfc3339_opts(SecondsFormat::Millis, true), "cancel_reason": ""});
        timed.push((
            minutes(cancelled),
            payload("Call canceled", call.slot, extra),
            None,
        ));
    }
    if let Some(new_slot) = call.rescheduled_to {
        // Half of the reschedules say which slot they replace.
        let extra = if id % 2 == 0 {
            json!({"old_start_time": call.slot.to_rfc3339_opts(SecondsFormat::Millis, true)})
        } else {
            json!({})
        };
        at_receipt.push(payload("Call rescheduled", new_slot, extra));
    }
    if let Some(outcome) = &call.outcome {
        let start = call
            .final_slot()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut o = json!({"uuid": id * 10, "contactId": id, "userId": 2051, "eventId": 3318,
                           "closerEmail": HOSTS[call.host].1, "startTime": start,
                           "callOutcome": if outcome.sale_value.is_some() { "SALE" } else { "NO_SALE" },
                           "transaction": [], "hookType": "Outcome added"});
        if let Some(value) = outcome.sale_value {
            let deal_at = outcome.deal_at.unwrap();
            o["dealValue"] = json!(value);
            o["deal"] = json!({"transactionType": "SALE", "value": value,
                               "createdAt": deal_at.to_rfc3339_opts(SecondsFormat::Millis, true)});
            timed.push((minutes(deal_at), o, None));
        } else {
            o["noSaleReason"] = json!(outcome.no_sale_reason);
            at_receipt.push(o);
        }
    }
}

/// Every lead, in order, each with its record and deliveries.
pub fn leads(options: Options) -> impl Iterator<Item = Lead> {
    let mut rng = Lcg(options.seed);
    (0..options.contacts).map(move |c| lead(c, &options, &mut rng))
}

/// Each distinct event once (no redeliveries), timed ones in event-time order, then those
/// timed at receipt: what a live pipeline receives when nothing arrives late or twice.
pub fn in_time_order(options: Options) -> Vec<Value> {
    let mut timed: Vec<(String, Value)> = Vec::new();
    let mut at_receipt = Vec::new();
    for lead in leads(options) {
        for d in lead.deliveries.into_iter().filter(|d| !d.redelivery) {
            match event_time(&d.payload) {
                Some(t) => timed.push((t, d.payload)),
                None => at_receipt.push(d.payload),
            }
        }
    }
    timed.sort_by(|a, b| a.0.cmp(&b.0));
    timed
        .into_iter()
        .map(|(_, v)| v)
        .chain(at_receipt)
        .collect()
}

/// The time a generated payload carries, as sortable text (None: timed at receipt).
fn event_time(payload: &Value) -> Option<String> {
    let hook = payload["hookType"].as_str().unwrap_or_default();
    let t = match hook {
        "Call booked" => &payload["event"]["created_at"],
        "Call canceled" => &payload["event"]["canceled_at"],
        "Outcome added" => &payload["deal"]["createdAt"],
        h if h.starts_with("Contact") => &payload["updatedAt"],
        _ => &Value::Null,
    };
    t.as_str().map(str::to_string)
}

/// Writes every delivery as NDJSON, lead after lead, holding back late deliveries until
/// [`LATE_LAG`] more leads are out; memory stays bounded whatever the number of leads.
/// Returns the number of lines written.
pub fn write_ndjson(options: Options, out: &mut impl std::io::Write) -> std::io::Result<u64> {
    let mut written = 0;
    let mut held: VecDeque<(i64, Value)> = VecDeque::new();
    let mut line = |out: &mut dyn std::io::Write, v: &Value| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, v)?;
        out.write_all(b"\n")?;
        written += 1;
        Ok(())
    };
    for (c, lead) in leads(options).enumerate() {
        let c = c as i64;
        while held.front().is_some_and(|(due, _)| *due <= c) {
            let (_, v) = held.pop_front().unwrap();
            line(out, &v)?;
        }
        for d in lead.deliveries {
            if d.late {
                held.push_back((c + LATE_LAG, d.payload));
            } else {
                line(out, &d.payload)?;
            }
        }
    }
    for (_, v) in held {
        line(out, &v)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Envelope, EventType};

    fn ndjson(options: Options) -> Vec<u8> {
        let mut out = Vec::new();
        write_ndjson(options, &mut out).unwrap();
        out
    }

    fn opts(contacts: i64, seed: u64) -> Options {
        Options {
            contacts,
            seed,
            days: 30,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        assert_eq!(ndjson(opts(50, 3)), ndjson(opts(50, 3)));
        assert_ne!(ndjson(opts(50, 3)), ndjson(opts(50, 4)));
    }

    #[test]
    fn every_event_routes_and_every_kind_of_delivery_appears() {
        let text = String::from_utf8(ndjson(opts(400, 1))).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            let e = Envelope::parse_one(line, None, 0, "/gen").unwrap();
            seen.insert(e.event_type);
        }
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert!(seen.contains(&EventType::Unknown));
        let all: Vec<Lead> = leads(opts(400, 1)).collect();
        let count = |f: &dyn Fn(&Delivery) -> bool| {
            all.iter()
                .flat_map(|l| &l.deliveries)
                .filter(|d| f(d))
                .count()
        };
        assert_eq!(count(&|_| true), text.lines().count());
        assert!(count(&|d| d.redelivery) > 10);
        assert!(count(&|d| d.late) > 5);
        let distinct = count(&|d| !d.redelivery);
        assert_eq!(in_time_order(opts(400, 1)).len(), distinct);
    }

    #[test]
    fn late_deliveries_come_after_later_leads() {
        let text = String::from_utf8(ndjson(opts(200, 1))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let late: Vec<Lead> = leads(opts(200, 1))
            .filter(|l| l.deliveries.iter().any(|d| d.late))
            .collect();
        assert!(!late.is_empty());
        for lead in late {
            let d = lead.deliveries.iter().find(|d| d.late).unwrap();
            let position = lines
                .iter()
                .position(|l| serde_json::from_str::<Value>(l).unwrap() == d.payload)
                .unwrap();
            let next_lead = format!("\"id\":{}", lead.contact_id + 1);
            let first_of_next = lines.iter().position(|l| l.contains(&next_lead));
            assert!(
                first_of_next.is_none_or(|p| p < position),
                "{}",
                lead.contact_id
            );
        }
    }
}
