//! Section 8 of the report, lead scores: how the selected contacts' current scores are spread
//! (`score_distribution`) and whose score moved most in the period (`score_movers`).
//! Invariant: every number shown is one of those queries' (as everywhere on the page).

use super::charts::{self, Axes, Series};
use super::{Panel, ReportError, Row, Table, count, num, panel, text};

/// The distribution: contacts per 10-point range of current score, one bar per band.
pub fn distribution(rows: &[Row]) -> Result<Panel, ReportError> {
    let mut ranges: Vec<i64> = rows.iter().map(|r| num(r, "score_from") as i64).collect();
    ranges.sort_unstable();
    ranges.dedup();
    let mut bands: Vec<String> = Vec::new();
    for r in rows {
        let band = text(r, "band");
        if !bands.contains(&band) {
            bands.push(band);
        }
    }
    let label = |from: i64| format!("{from}-{}", from + 9);
    let categories: Vec<String> = ranges.iter().map(|f| label(*f)).collect();
    let series: Vec<Series> = bands
        .iter()
        .map(|band| Series {
            name: band.clone(),
            values: ranges
                .iter()
                .map(|from| {
                    rows.iter()
                        .filter(|r| {
                            text(r, "band") == *band && num(r, "score_from") as i64 == *from
                        })
                        .map(|r| num(r, "contacts"))
                        .sum()
                })
                .collect(),
        })
        .collect();
    let table = Table {
        headers: ["score", "band", "contacts"].map(String::from).to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    label(num(r, "score_from") as i64),
                    text(r, "band"),
                    count(num(r, "contacts")),
                ]
            })
            .collect(),
    };
    panel(
        "score_distribution",
        "How hot are the period's leads now?",
        "The current lead score of each contact first seen in the period, in 10-point ranges, \
         coloured by band. Query: score_distribution.",
        table,
        rows.is_empty(),
        || {
            charts::grouped_bars(
                &Axes {
                    title: "Contacts per range of current lead score",
                    x: "lead score",
                    y: "contacts",
                },
                &categories,
                &series,
                &|v| if v > 0.0 { count(v) } else { String::new() },
            )
        },
    )
}

/// The top movers: the contacts whose score moved most in the period, either way.
pub fn movers(rows: &[Row]) -> Result<Panel, ReportError> {
    let top: Vec<&Row> = rows.iter().take(10).collect();
    let categories: Vec<String> = top
        .iter()
        .map(|r| format!("contact {}", text(r, "contact_id")))
        .collect();
    let labels: Vec<String> = top
        .iter()
        .map(|r| {
            format!(
                "{:+} ({} → {})",
                num(r, "change") as i64,
                num(r, "score_before") as i64,
                num(r, "score_after") as i64
            )
        })
        .collect();
    let table = Table {
        headers: [
            "contact", "source", "before", "after", "change", "band now", "changes",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    text(r, "contact_id"),
                    text(r, "source"),
                    count(num(r, "score_before")),
                    count(num(r, "score_after")),
                    format!("{:+}", num(r, "change") as i64),
                    text(r, "band"),
                    count(num(r, "changes")),
                ]
            })
            .collect(),
    };
    let values = top.iter().map(|r| num(r, "change").abs()).collect();
    panel(
        "score_movers",
        "Whose lead score moved most in the period?",
        "The contacts first seen in the period whose score changed most between the first and \
         the last change of the period (up or down; a first score is not a move); the chart \
         shows the ten largest, the table twenty. Query: score_movers.",
        table,
        top.is_empty(),
        || {
            charts::hbars(
                &Axes {
                    title: "Points a lead score moved in the period",
                    x: "points moved (either way)",
                    y: "contact",
                },
                &categories,
                &Series {
                    name: "points moved".into(),
                    values,
                },
                &labels,
            )
        },
    )
}
