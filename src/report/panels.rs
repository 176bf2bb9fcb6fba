//! Sections 2 to 7 of the report: the panels drawn from the funnel, the activity per day,
//! attribution, show rates, time to stage and in each status, tracking parameters and data
//! quality, each a chart with the table of its numbers.
//! Invariant: every number shown is one a query returned (or a sum of such over rows).

use super::charts::{self, Axes, Series};
use super::{Panel, ReportError, Row, Table, count, hours, num, opt, panel, pct, text};

/// Section 2: the funnel of the period's leads.
pub(super) fn funnel(rows: &[Row]) -> Result<Panel, ReportError> {
    let row = rows.first().filter(|r| num(r, "leads") > 0.0);
    let stages = [
        ("Leads", "leads", None),
        ("Qualified", "qualified", Some("qualified_pct")),
        ("Booked a call", "booked", Some("booked_pct")),
        ("Held a call", "held", Some("held_pct")),
        ("Won", "won", Some("won_pct")),
    ];
    let mut table = Table {
        headers: vec![
            "stage".into(),
            "contacts".into(),
            "of the stage before".into(),
        ],
        rows: Vec::new(),
    };
    let mut values = Vec::new();
    let mut labels = Vec::new();
    if let Some(row) = row {
        for (name, key, rate) in stages {
            let v = num(row, key);
            let rate = rate.map(|r| pct(opt(row, r)));
            values.push(v);
            labels.push(match &rate {
                Some(rate) => format!("{} ({rate})", count(v)),
                None => count(v),
            });
            table
                .rows
                .push(vec![name.to_string(), count(v), rate.unwrap_or_default()]);
        }
    }
    let categories: Vec<String> = stages.iter().map(|s| s.0.to_string()).collect();
    panel(
        "funnel",
        "How far did this period's leads get?",
        "Leads first seen in the period; a contact that reached a stage counts in every stage \
         before it. Rates: share of the stage before. Query: funnel (totals=true).",
        table,
        row.is_none(),
        || {
            charts::hbars(
                &Axes {
                    title: "Funnel: contacts reaching each stage",
                    x: "contacts",
                    y: "stage",
                },
                &categories,
                &Series {
                    name: "contacts reaching the stage".into(),
                    values,
                },
                &labels,
            )
        },
    )
}

/// Section 3: leads, bookings and outcomes per day.
pub(super) fn daily(rows: &[Row]) -> Result<Panel, ReportError> {
    let days: Vec<String> = rows.iter().map(|r| text(r, "date")).collect();
    let columns = [
        ("new leads", "new_contacts"),
        ("calls booked", "calls_booked"),
        ("outcomes recorded", "outcomes"),
    ];
    let series: Vec<Series> = columns
        .iter()
        .map(|(name, key)| Series {
            name: name.to_string(),
            values: rows.iter().map(|r| num(r, key)).collect(),
        })
        .collect();
    let table = Table {
        headers: ["day", "new leads", "calls booked", "outcomes", "revenue"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    text(r, "date"),
                    count(num(r, "new_contacts")),
                    count(num(r, "calls_booked")),
                    count(num(r, "outcomes")),
                    count(num(r, "revenue")),
                ]
            })
            .collect(),
    };
    panel(
        "daily",
        "What happened each day?",
        "New leads (first seen that day), calls booked and outcomes recorded per UTC day, all \
         contacts' calls and outcomes. Query: daily_engagement.",
        table,
        rows.is_empty(),
        || {
            charts::lines(
                &Axes {
                    title: "Leads, bookings and outcomes per day",
                    x: "day (UTC, month-day)",
                    y: "count per day",
                },
                &days,
                &series,
            )
        },
    )
}

/// Sums the attribution rows by `key` (utm_source or utm_campaign), keeping first-seen order.
fn by(rows: &[Row], key: &str, fields: &[&str]) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for r in rows {
        let name = text(r, key);
        let at = match out.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                out.push((name, vec![0.0; fields.len()]));
                out.len() - 1
            }
        };
        for (i, f) in fields.iter().enumerate() {
            out[at].1[i] += num(r, f);
        }
    }
    out
}

/// Section 4: first touch against last touch, per source (leads) and per campaign (revenue).
pub(super) fn attribution(rows: &[Row]) -> Result<Vec<Panel>, ReportError> {
    let fields = ["first_leads", "last_leads", "first_revenue", "last_revenue"];
    let mut out = Vec::new();
    for (key, title, note_what, index, unit, axis_y) in [
        (
            "utm_source",
            "Which sources bring the leads, first touch against last touch?",
            "Leads credited to each utm_source",
            0,
            "leads",
            "leads",
        ),
        (
            "utm_campaign",
            "Which campaigns bring the revenue, first touch against last touch?",
            "Revenue of the wins credited to each utm_campaign",
            2,
            "revenue",
            "revenue (deal value)",
        ),
    ] {
        let groups = by(rows, key, &fields);
        let categories: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
        let series = vec![
            Series {
                name: format!("first touch {unit}"),
                values: groups.iter().map(|(_, v)| v[index]).collect(),
            },
            Series {
                name: format!("last touch {unit}"),
                values: groups.iter().map(|(_, v)| v[index + 1]).collect(),
            },
        ];
        let table = Table {
            headers: vec![
                key.to_string(),
                "first-touch leads".into(),
                "last-touch leads".into(),
                "first-touch revenue".into(),
                "last-touch revenue".into(),
            ],
            rows: groups
                .iter()
                .map(|(n, v)| {
                    let mut row = vec![n.clone()];
                    row.extend(v.iter().map(|x| count(*x)));
                    row
                })
                .collect(),
        };
        let x = if key == "utm_source" {
            "first-touch or last-touch utm_source"
        } else {
            "first-touch or last-touch utm_campaign"
        };
        out.push(panel(
            &format!("attribution_{key}"),
            title,
            &format!(
                "{note_what}: by the contact's first touch and by its last. Query: attribution."
            ),
            table,
            rows.is_empty(),
            || {
                charts::grouped_bars(
                    &Axes {
                        title,
                        x,
                        y: axis_y,
                    },
                    &categories,
                    &series,
                    &|v| charts::short(v),
                )
            },
        )?);
    }
    Ok(out)
}

/// Section 5: held calls and no-shows per host, with the show rate.
pub(super) fn show_rate(rows: &[Row]) -> Result<Panel, ReportError> {
    let hosts: Vec<&Row> = rows
        .iter()
        .filter(|r| text(r, "campaign") == "(all)")
        .filter(|r| num(r, "booked") > 0.0)
        .collect();
    let categories: Vec<String> = hosts.iter().map(|r| text(r, "host")).collect();
    let series = vec![
        Series {
            name: "held".into(),
            values: hosts.iter().map(|r| num(r, "held")).collect(),
        },
        Series {
            name: "no-shows".into(),
            values: hosts.iter().map(|r| num(r, "no_shows")).collect(),
        },
    ];
    let table = Table {
        headers: [
            "host",
            "booked",
            "held",
            "no-shows",
            "cancelled",
            "pending",
            "show rate",
        ]
        .map(String::from)
        .to_vec(),
        rows: hosts
            .iter()
            .map(|r| {
                vec![
                    text(r, "host"),
                    count(num(r, "booked")),
                    count(num(r, "held")),
                    count(num(r, "no_shows")),
                    count(num(r, "cancelled")),
                    count(num(r, "pending")),
                    pct(opt(r, "show_rate_pct")),
                ]
            })
            .collect(),
    };
    panel(
        "show_rate",
        "Who holds their calls, and who gets no-shows?",
        "Calls of the period's leads per host ((all): every host); show rate = held / (held + \
         no-shows). Query: show_rate.",
        table,
        hosts.is_empty(),
        || {
            charts::grouped_bars(
                &Axes {
                    title: "Held calls and no-shows per host",
                    x: "host",
                    y: "calls",
                },
                &categories,
                &series,
                &|v| count(v),
            )
        },
    )
}

/// Section 6a: median and p90 hours to qualify, to book and to an outcome.
pub(super) fn time_to_stage(rows: &[Row]) -> Result<Panel, ReportError> {
    let row = rows.first().filter(|r| num(r, "leads") > 0.0);
    let stages = [
        ("to qualify", "qualified", "qualify"),
        ("to book", "booked", "book"),
        ("to an outcome", "with_outcome", "outcome"),
    ];
    let mut table = Table {
        headers: ["step", "contacts", "median", "p90"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    let (mut median, mut p90) = (Vec::new(), Vec::new());
    if let Some(r) = row {
        for (name, n, prefix) in stages {
            let m = opt(r, &format!("{prefix}_median_h"));
            let p = opt(r, &format!("{prefix}_p90_h"));
            median.push(m.unwrap_or(0.0));
            p90.push(p.unwrap_or(0.0));
            table
                .rows
                .push(vec![name.to_string(), count(num(r, n)), hours(m), hours(p)]);
        }
    }
    let categories: Vec<String> = stages.iter().map(|s| s.0.to_string()).collect();
    panel(
        "time_to_stage",
        "How long do leads take to move on?",
        "Hours from first seen to qualified, from qualified to the first booking, and from that \
         booking to its call's first outcome. Query: time_to_stage (totals=true).",
        table,
        row.is_none(),
        || {
            charts::grouped_bars(
                &Axes {
                    title: "Hours to each stage, median and 90th percentile",
                    x: "step",
                    y: "hours",
                },
                &categories,
                &[
                    Series {
                        name: "median".into(),
                        values: median,
                    },
                    Series {
                        name: "90th percentile".into(),
                        values: p90,
                    },
                ],
                &|v| format!("{v:.1}"),
            )
        },
    )
}

/// Section 6b: hours spent in each status.
pub(super) fn durations(rows: &[Row]) -> Result<Panel, ReportError> {
    let all: Vec<&Row> = rows
        .iter()
        .filter(|r| text(r, "campaign") == "(all)")
        .collect();
    let ended: Vec<&&Row> = all.iter().filter(|r| num(r, "intervals") > 0.0).collect();
    let categories: Vec<String> = ended.iter().map(|r| text(r, "status")).collect();
    let table = Table {
        headers: ["status", "ended intervals", "in it now", "median", "p90"]
            .map(String::from)
            .to_vec(),
        rows: all
            .iter()
            .map(|r| {
                vec![
                    text(r, "status"),
                    count(num(r, "intervals")),
                    count(num(r, "open")),
                    hours(opt(r, "median_h")),
                    hours(opt(r, "p90_h")),
                ]
            })
            .collect(),
    };
    let series = vec![
        Series {
            name: "median".into(),
            values: ended.iter().map(|r| num(r, "median_h")).collect(),
        },
        Series {
            name: "90th percentile".into(),
            values: ended.iter().map(|r| num(r, "p90_h")).collect(),
        },
    ];
    panel(
        "status_durations",
        "How long do leads stay in each status?",
        "Over the status intervals that have ended, of the period's leads. Query: \
         status_durations.",
        table,
        ended.is_empty(),
        || {
            charts::grouped_bars(
                &Axes {
                    title: "Hours spent in each status",
                    x: "lead status",
                    y: "hours",
                },
                &categories,
                &series,
                &|v| format!("{v:.1}"),
            )
        },
    )
}

/// Section 7a: the most common custom tracking parameters.
pub(super) fn tracking(rows: &[Row]) -> Result<Panel, ReportError> {
    let top: Vec<&Row> = rows.iter().take(10).collect();
    let categories: Vec<String> = top.iter().map(|r| text(r, "key")).collect();
    let labels: Vec<String> = top
        .iter()
        .map(|r| format!("{} ({})", count(num(r, "leads")), pct(opt(r, "share_pct"))))
        .collect();
    let table = Table {
        headers: [
            "parameter",
            "leads",
            "share of leads",
            "events",
            "distinct values",
        ]
        .map(String::from)
        .to_vec(),
        rows: top
            .iter()
            .map(|r| {
                vec![
                    text(r, "key"),
                    count(num(r, "leads")),
                    pct(opt(r, "share_pct")),
                    count(num(r, "events")),
                    count(num(r, "distinct_values")),
                ]
            })
            .collect(),
    };
    let values = top.iter().map(|r| num(r, "leads")).collect();
    panel(
        "tracking_params",
        "Which custom tracking parameters do leads carry?",
        "The ten most common utmKey parameters among the period's leads. Query: tracking_params.",
        table,
        top.is_empty(),
        || {
            charts::hbars(
                &Axes {
                    title: "Leads carrying each tracking parameter",
                    x: "leads",
                    y: "parameter",
                },
                &categories,
                &Series {
                    name: "leads with the parameter".into(),
                    values,
                },
                &labels,
            )
        },
    )
}

/// Section 7b: data quality over the period's days.
pub(super) fn quality(rows: &[Row]) -> Result<Panel, ReportError> {
    let kinds = [
        ("late events", "late_events"),
        ("rows with parse errors", "parse_error_rows"),
        ("unknown statuses", "unknown_statuses"),
        ("malformed emails", "malformed_emails"),
        ("malformed phones", "malformed_phones"),
        ("unknown event types", "unknown_events"),
    ];
    let totals: Vec<f64> = kinds
        .iter()
        .map(|(_, key)| rows.iter().map(|r| num(r, key)).sum())
        .collect();
    let categories: Vec<String> = kinds.iter().map(|k| k.0.to_string()).collect();
    let labels: Vec<String> = totals.iter().map(|v| count(*v)).collect();
    let table = Table {
        headers: vec!["problem".into(), "in the period".into()],
        rows: categories
            .iter()
            .zip(&labels)
            .map(|(c, l)| vec![c.clone(), l.clone()])
            .collect(),
    };
    panel(
        "data_quality",
        "Can the data be trusted?",
        "Totals over the period's days of the whole lake (the source and account filters do not \
         apply). Query: data_quality.",
        table,
        rows.is_empty(),
        || {
            charts::hbars(
                &Axes {
                    title: "Data quality problems in the period",
                    x: "rows or events",
                    y: "problem",
                },
                &categories,
                &Series {
                    name: "count in the period".into(),
                    values: totals.clone(),
                },
                &labels,
            )
        },
    )
}
