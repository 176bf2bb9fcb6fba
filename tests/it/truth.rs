//! The answers to the queries in `queries/`, computed from the generator's own record of what
//! it generated ([`hooklake::generate::Lead`]), without SQL and without reading the lake.
//!
//! Each function returns the rows a query should print, as JSON objects with the query's
//! column names, in the query's order. Events timed at receipt (reschedules, outcomes without
//! a deal, unknown events) fall on `today`, the day the test ingested them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use hooklake::generate::{HOSTS, Lead, Snapshot};
use serde_json::{Value, json};

pub struct World {
    pub leads: Vec<Lead>,
    pub today: NaiveDate,
}

fn day(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

fn week(t: DateTime<Utc>) -> String {
    let d = t.date_naive();
    (d - Duration::days(d.weekday().num_days_from_monday() as i64)).to_string()
}

fn hours(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_seconds() as f64 / 3600.0
}

fn pct(a: usize, b: usize) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!(100.0 * a as f64 / b as f64)
    }
}

/// DuckDB's `quantile_cont`: linear interpolation between the closest ranks.
fn quantile(values: &[f64], q: f64) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    json!(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn ever(lead: &Lead, status: &str) -> bool {
    lead.snapshots.iter().any(|s| s.status == status)
}

/// The newest snapshot by event time.
fn latest(lead: &Lead) -> &Snapshot {
    lead.snapshots.iter().max_by_key(|s| s.at).unwrap()
}

fn with_outcome(lead: &Lead) -> bool {
    lead.call.as_ref().is_some_and(|c| c.outcome.is_some())
}

fn no_show_only(lead: &Lead) -> bool {
    lead.call
        .as_ref()
        .and_then(|c| c.outcome.as_ref())
        .is_some_and(|o| o.no_sale_reason == Some("NO_SHOW"))
}

fn revenue(lead: &Lead) -> Option<f64> {
    lead.call
        .as_ref()
        .and_then(|c| c.outcome.as_ref())
        .and_then(|o| o.sale_value)
}

/// When a status began: the first snapshot of each run of equal statuses, in time order.
fn intervals(lead: &Lead) -> Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    let mut snaps: Vec<&Snapshot> = lead.snapshots.iter().collect();
    snaps.sort_by_key(|s| s.at);
    let mut starts: Vec<(String, DateTime<Utc>)> = Vec::new();
    for s in snaps {
        if starts.last().is_none_or(|(status, _)| *status != s.status) {
            starts.push((s.status.clone(), s.at));
        }
    }
    (0..starts.len())
        .map(|i| {
            (
                starts[i].0.clone(),
                starts[i].1,
                starts.get(i + 1).map(|n| n.1),
            )
        })
        .collect()
}

impl World {
    fn first_seen(lead: &Lead) -> DateTime<Utc> {
        lead.snapshots.iter().map(|s| s.at).min().unwrap()
    }

    /// When an outcome happened: the deal time, else the call's start.
    fn outcome_at(lead: &Lead) -> Option<DateTime<Utc>> {
        let call = lead.call.as_ref()?;
        let o = call.outcome.as_ref()?;
        Some(o.deal_at.unwrap_or(call.final_slot()))
    }

    /// The day an outcome's row is partitioned under: the deal's, else the receipt's.
    fn outcome_day(&self, lead: &Lead) -> Option<NaiveDate> {
        let o = lead.call.as_ref()?.outcome.as_ref()?;
        Some(o.deal_at.map(day).unwrap_or(self.today))
    }

    pub fn funnel(&self) -> Vec<Value> {
        let mut groups: BTreeMap<(&str, &str), [f64; 8]> = BTreeMap::new();
        for l in &self.leads {
            let g = groups
                .entry((l.first_source, l.first_campaign))
                .or_default();
            // The stages are nested: a contact that reached a stage passed every one before it.
            let won = revenue(l).is_some();
            let held = with_outcome(l) || won;
            let booked = l.call.is_some() || held;
            let qualified = ever(l, "QUALIFIED") || booked;
            let flags = [
                true,
                qualified,
                ever(l, "DISQUALIFIED"),
                booked,
                held,
                held && no_show_only(l),
                won,
            ];
            for (i, f) in flags.into_iter().enumerate() {
                g[i] += f as u8 as f64;
            }
            if won {
                g[7] += revenue(l).unwrap_or(0.0);
            }
        }
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]).then(a.0.cmp(&b.0)));
        rows.into_iter()
            .map(|((source, campaign), g)| {
                let n = g.map(|x| x as usize);
                json!({"source": source, "campaign": campaign, "leads": n[0], "qualified": n[1],
                       "disqualified": n[2], "booked": n[3], "held": n[4], "no_shows": n[5], "won": n[6],
                       "revenue": g[7], "qualified_pct": pct(n[1], n[0]), "booked_pct": pct(n[3], n[1]),
                       "held_pct": pct(n[4], n[3]), "won_pct": pct(n[6], n[4])})
            })
            .collect()
    }

    pub fn attribution(&self) -> Vec<Value> {
        // (source, campaign) -> [first model; last model] x [leads, qualified, booked, won, revenue]
        let mut groups: BTreeMap<(String, String), [[f64; 5]; 2]> = BTreeMap::new();
        for l in &self.leads {
            let last = latest(l);
            let keys = [
                (l.first_source.to_string(), l.first_campaign.to_string()),
                (
                    last.attributes["utm_source"].clone(),
                    last.attributes["utm_campaign"].clone(),
                ),
            ];
            for (model, key) in keys.into_iter().enumerate() {
                let g = &mut groups.entry(key).or_default()[model];
                g[0] += 1.0;
                g[1] += ever(l, "QUALIFIED") as u8 as f64;
                g[2] += l.call.is_some() as u8 as f64;
                g[3] += revenue(l).is_some() as u8 as f64;
                g[4] += revenue(l).unwrap_or(0.0);
            }
        }
        groups
            .into_iter()
            .map(|((source, campaign), [f, l])| {
                json!({"utm_source": source, "utm_campaign": campaign,
                       "first_leads": f[0], "last_leads": l[0], "first_qualified": f[1], "last_qualified": l[1],
                       "first_booked": f[2], "last_booked": l[2], "first_won": f[3], "last_won": l[3],
                       "first_revenue": f[4], "last_revenue": l[4]})
            })
            .collect()
    }

    pub fn time_to_stage(&self) -> Vec<Value> {
        let mut weeks: BTreeMap<String, [Vec<f64>; 3]> = BTreeMap::new();
        // Per week: leads, and contacts that booked a call (qualified or not).
        let mut leads: BTreeMap<String, [usize; 2]> = BTreeMap::new();
        for l in &self.leads {
            let first = Self::first_seen(l);
            let w = week(first);
            let counts = leads.entry(w.clone()).or_default();
            counts[0] += 1;
            counts[1] += l.call.is_some() as usize;
            let spans = weeks.entry(w).or_default();
            let qualified_at = intervals(l)
                .into_iter()
                .find(|(s, _, _)| s == "QUALIFIED")
                .map(|(_, at, _)| at);
            if let Some(q) = qualified_at {
                spans[0].push(hours(first, q));
            }
            let booked = l.call.as_ref().map(|c| c.booked_at);
            if let (Some(q), Some(b)) = (qualified_at, booked) {
                spans[1].push(hours(q, b));
            }
            // A lead books one call at most, so its first call's outcome is its outcome.
            if let (Some(b), Some(o)) = (booked, Self::outcome_at(l)) {
                spans[2].push(hours(b, o));
            }
        }
        weeks
            .into_iter()
            .map(|(w, [q, b, o])| {
                json!({"week": w, "leads": leads[&w][0],
                       "qualified": q.len(), "qualify_median_h": quantile(&q, 0.5), "qualify_p90_h": quantile(&q, 0.9),
                       "booked": leads[&w][1], "book_median_h": quantile(&b, 0.5), "book_p90_h": quantile(&b, 0.9),
                       "with_outcome": o.len(), "outcome_median_h": quantile(&o, 0.5), "outcome_p90_h": quantile(&o, 0.9)})
            })
            .collect()
    }

    pub fn status_durations(&self) -> Vec<Value> {
        // (campaign, status) -> (closed durations in hours, open count)
        let mut groups: BTreeMap<(String, String), (Vec<f64>, usize)> = BTreeMap::new();
        for l in &self.leads {
            for (status, start, end) in intervals(l) {
                for campaign in ["(all)", l.first_campaign] {
                    let g = groups
                        .entry((campaign.to_string(), status.clone()))
                        .or_default();
                    match end {
                        Some(end) => g.0.push(hours(start, end)),
                        None => g.1 += 1,
                    }
                }
            }
        }
        groups
            .into_iter()
            .map(|((campaign, status), (closed, open))| {
                json!({"campaign": campaign, "status": status, "intervals": closed.len(), "open": open,
                       "median_h": quantile(&closed, 0.5), "p90_h": quantile(&closed, 0.9)})
            })
            .collect()
    }

    pub fn attribute_churn(&self) -> Vec<Value> {
        let group_of = |attribute: &str| -> String {
            if attribute.starts_with("utm_")
                || attribute.starts_with("first_utm_")
                || attribute.starts_with("param:")
            {
                "tracking".into()
            } else {
                attribute.into()
            }
        };
        let reported_group = |name: &str| -> String {
            match name {
                "firstName" => "first_name".into(),
                other => other.into(),
            }
        };
        // (week, attribute) -> [changes, unreported, reported_unchanged] and contacts
        let mut rows: BTreeMap<(String, String), ([usize; 3], BTreeSet<i64>)> = BTreeMap::new();
        for l in &self.leads {
            let mut on_time: Vec<&Snapshot> = l.snapshots.iter().filter(|s| !s.late).collect();
            on_time.sort_by_key(|s| s.at);
            for pair in on_time.windows(2) {
                let (old, new) = (&pair[0].attributes, &pair[1].attributes);
                let w = week(pair[1].at);
                let reported: Vec<String> = pair[1]
                    .reported
                    .iter()
                    .flatten()
                    .map(|n| reported_group(n))
                    .collect();
                let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
                let mut changed_groups = BTreeSet::new();
                for key in keys {
                    if old.get(key) == new.get(key) {
                        continue;
                    }
                    let group = group_of(key);
                    let e = rows.entry((w.clone(), key.clone())).or_default();
                    e.0[0] += 1;
                    e.1.insert(l.contact_id);
                    if pair[1].reported.is_some() && !reported.contains(&group) {
                        e.0[1] += 1;
                    }
                    changed_groups.insert(group);
                }
                for name in reported.iter().filter(|n| !changed_groups.contains(*n)) {
                    rows.entry((w.clone(), name.clone())).or_default().0[2] += 1;
                }
            }
        }
        let mut out: Vec<_> = rows.into_iter().collect();
        out.sort_by(|a, b| {
            (a.0.0.as_str(), std::cmp::Reverse(a.1.0[0]), a.0.1.as_str()).cmp(&(
                b.0.0.as_str(),
                std::cmp::Reverse(b.1.0[0]),
                b.0.1.as_str(),
            ))
        });
        out.into_iter()
            .map(|((w, attribute), (n, contacts))| {
                json!({"week": w, "attribute": attribute, "changes": n[0], "contacts": contacts.len(),
                       "unreported": n[1], "reported_unchanged": n[2]})
            })
            .collect()
    }

    pub fn daily_engagement(&self) -> Vec<Value> {
        #[derive(Default)]
        struct Day {
            new: usize,
            updates: usize,
            active: BTreeSet<i64>,
            booked: usize,
            rescheduled: usize,
            cancelled: usize,
            outcomes: usize,
            revenue: f64,
        }
        let mut days: BTreeMap<NaiveDate, Day> = BTreeMap::new();
        for l in &self.leads {
            days.entry(day(Self::first_seen(l))).or_default().new += 1;
            for s in &l.snapshots {
                let d = days.entry(day(s.at)).or_default();
                d.active.insert(l.contact_id);
                if s.hook != "Contact created" {
                    d.updates += 1;
                }
            }
            let Some(call) = &l.call else { continue };
            days.entry(day(call.booked_at)).or_default().booked += 1;
            if call.rescheduled_to.is_some() {
                days.entry(self.today).or_default().rescheduled += 1;
            }
            if let Some(c) = call.cancelled_at {
                days.entry(day(c)).or_default().cancelled += 1;
            }
            if let Some(d) = self.outcome_day(l) {
                let d = days.entry(d).or_default();
                d.outcomes += 1;
                d.active.insert(l.contact_id);
                d.revenue += revenue(l).unwrap_or(0.0);
            }
        }
        days.into_iter()
            .map(|(date, d)| {
                json!({"date": date.to_string(), "new_contacts": d.new, "contact_updates": d.updates,
                       "active_contacts": d.active.len(), "calls_booked": d.booked,
                       "calls_rescheduled": d.rescheduled, "calls_cancelled": d.cancelled,
                       "outcomes": d.outcomes, "revenue": d.revenue})
            })
            .collect()
    }

    pub fn show_rate(&self) -> Vec<Value> {
        // (host, campaign) -> [booked, cancelled, rescheduled, held, no_shows]
        let mut groups: BTreeMap<(String, String), [usize; 5]> = BTreeMap::new();
        for l in &self.leads {
            let Some(call) = &l.call else { continue };
            let cancelled = call.cancelled_at.is_some();
            let outcome = call.outcome.as_ref();
            let held = !cancelled && outcome.is_some_and(|o| o.no_sale_reason != Some("NO_SHOW"));
            // Every generated slot ended long before the test ran: no outcome means a no-show.
            let no_show = !cancelled && !held;
            let host = HOSTS[call.host].0;
            for key in [
                (host, "(all)"),
                ("(all)", l.first_campaign),
                ("(all)", "(all)"),
            ] {
                let g = groups
                    .entry((key.0.to_string(), key.1.to_string()))
                    .or_default();
                let flags = [
                    true,
                    cancelled,
                    call.rescheduled_to.is_some(),
                    held,
                    no_show,
                ];
                for (i, f) in flags.into_iter().enumerate() {
                    g[i] += f as usize;
                }
            }
        }
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by_key(|((host, campaign), _)| (host == "(all)", host.clone(), campaign.clone()));
        rows.into_iter()
            .map(|((host, campaign), g)| {
                json!({"host": host, "campaign": campaign, "booked": g[0], "cancelled": g[1],
                       "rescheduled": g[2], "held": g[3], "no_shows": g[4], "pending": 0,
                       "show_rate_pct": pct(g[3], g[3] + g[4])})
            })
            .collect()
    }

    pub fn tracking_params(&self) -> Vec<Value> {
        // key -> (leads, snapshots carrying it, values)
        let mut keys: BTreeMap<&str, (usize, usize, BTreeSet<&str>)> = BTreeMap::new();
        for l in &self.leads {
            for (k, v) in &l.params {
                let e = keys.entry(k).or_default();
                e.0 += 1;
                e.1 += l.snapshots.len();
                e.2.insert(v);
            }
        }
        let mut rows: Vec<_> = keys.into_iter().collect();
        rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        rows.into_iter()
            .map(|(key, (leads, events, values))| {
                json!({"key": key, "leads": leads, "share_pct": pct(leads, self.leads.len()),
                       "events": events, "distinct_values": values.len()})
            })
            .collect()
    }

    pub fn data_quality(&self) -> Vec<Value> {
        // date -> [unknown, parse errors, late, rows with extras, flagged rows]
        let mut days: BTreeMap<NaiveDate, [usize; 5]> = BTreeMap::new();
        for l in &self.leads {
            if l.unknown_event {
                days.entry(self.today).or_default()[0] += 1;
            }
            for s in &l.snapshots {
                // The only rule generated data breaks: an email without `@`.
                let malformed = s.attributes.get("email").is_some_and(|e| !e.contains('@'));
                let flags = [
                    false,
                    s.parse_error,
                    s.late,
                    s.extras_key.is_some(),
                    malformed,
                ];
                if flags.iter().any(|f| *f) {
                    let d = days.entry(day(s.at)).or_default();
                    for (i, f) in flags.into_iter().enumerate() {
                        d[i] += f as usize;
                    }
                }
            }
        }
        days.into_iter()
            .map(|(date, d)| {
                let keys = if d[3] > 0 { "leadScore" } else { "" };
                json!({"date": date.to_string(), "unknown_events": d[0], "parse_error_rows": d[1],
                       "late_events": d[2], "flagged_rows": d[4], "unknown_statuses": 0, "malformed_emails": d[4],
                       "malformed_phones": 0, "extras_keys": keys, "rows_with_extras": d[3]})
            })
            .collect()
    }

    pub fn latest_status(&self) -> Vec<Value> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &self.leads {
            *counts.entry(latest(l).status.as_str()).or_default() += 1;
        }
        let mut rows: Vec<_> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows.into_iter()
            .map(|(status, contacts)| json!({"status": status, "contacts": contacts}))
            .collect()
    }

    pub fn status_history(&self) -> Vec<Value> {
        let ts = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
        let mut leads: Vec<&Lead> = self.leads.iter().collect();
        leads.sort_by_key(|l| l.contact_id);
        leads
            .into_iter()
            .flat_map(|l| {
                intervals(l).into_iter().map(move |(status, start, end)| {
                    json!({"contact_id": l.contact_id, "status": status, "started_at": ts(start),
                           "ended_at": end.map(ts), "seconds": end.map(|e| (e - start).num_seconds() as f64)})
                })
            })
            .collect()
    }

    pub fn daily_events(&self) -> Vec<Value> {
        let mut counts: BTreeMap<(NaiveDate, &str), usize> = BTreeMap::new();
        let mut add = |d: NaiveDate, t: &'static str| *counts.entry((d, t)).or_default() += 1;
        for l in &self.leads {
            for s in &l.snapshots {
                let t = match s.hook {
                    "Contact created" => "contact_created",
                    "Contact updated" => "contact_updated",
                    _ => "contact_status",
                };
                add(day(s.at), t);
            }
            if l.unknown_event {
                add(self.today, "unknown");
            }
            let Some(call) = &l.call else { continue };
            add(day(call.booked_at), "call_booked");
            if let Some(c) = call.cancelled_at {
                add(day(c), "call_cancelled");
            }
            if call.rescheduled_to.is_some() {
                add(self.today, "call_rescheduled");
            }
            if let Some(d) = self.outcome_day(l) {
                add(d, "call_outcome");
            }
        }
        counts
            .into_iter()
            .map(|((date, t), n)| json!({"date": date.to_string(), "event_type": t, "events": n}))
            .collect()
    }
}
