//! The engagement report: one self-contained HTML page of charts for a sales team.
//!
//! [`fetch`] runs the queries of `queries/` in one DuckDB session (the views are created once,
//! the costly views that no filter changes are computed once into temporary tables, then each
//! query runs with the filters set as DuckDB variables, for the period and for the one before);
//! [`page`] turns the results into charts ([`charts`]) and tables and fills the template
//! `page.html`. [`Renderer`] serves it over HTTP: one rendering at a time, reused until the next
//! flush. Invariant: every number on the page is a value a query in `queries/` returned (or a sum
//! of such values over rows); this module applies no rule of its own to the lake's data.

pub mod charts;
mod panels;
mod scores;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, NaiveDate};
use serde::Serialize;
use serde_json::{Map, Value};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("bad report parameter: {0}")]
    BadParameter(String),
    #[error("cannot run the report's queries: {0:#}")]
    Query(anyhow::Error),
    #[error("unexpected output from DuckDB: {0}")]
    Output(String),
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
    #[error("cannot fill the page template: {0}")]
    Template(#[from] minijinja::Error),
}

/// Days in the default period (ending today, UTC).
pub const DEFAULT_PERIOD_DAYS: i64 = 30;
/// The longest period a report covers, in days (ten years).
pub const MAX_PERIOD_DAYS: i64 = 3660;
/// The longest `source` filter accepted, in bytes.
const MAX_SOURCE_BYTES: usize = 200;

/// What a report covers: leads first seen from `from` to `to` (inclusive), optionally only
/// those of one first-touch source or one iClosed account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filters {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub source: Option<String>,
    pub account: Option<i64>,
}

impl Filters {
    /// Resolves what was given: without `to`, today; without `from`, the 30 days ending on `to`.
    pub fn resolve(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        source: Option<String>,
        account: Option<i64>,
        today: NaiveDate,
    ) -> Result<Filters, ReportError> {
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to - Duration::days(DEFAULT_PERIOD_DAYS - 1));
        if from > to {
            return Err(ReportError::BadParameter(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        if (to - from).num_days() >= MAX_PERIOD_DAYS {
            return Err(ReportError::BadParameter(format!(
                "the period is longer than {MAX_PERIOD_DAYS} days"
            )));
        }
        let source = source.filter(|s| !s.is_empty());
        if source.as_ref().is_some_and(|s| s.len() > MAX_SOURCE_BYTES) {
            return Err(ReportError::BadParameter(format!(
                "source is longer than {MAX_SOURCE_BYTES} bytes"
            )));
        }
        Ok(Filters {
            from,
            to,
            source,
            account,
        })
    }

    /// From query-string values (`from`, `to`: YYYY-MM-DD; `source`; `account`: an integer).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        source: Option<&str>,
        account: Option<&str>,
        today: NaiveDate,
    ) -> Result<Filters, ReportError> {
        let date = |name: &str, v: Option<&str>| -> Result<Option<NaiveDate>, ReportError> {
            v.filter(|v| !v.is_empty())
                .map(|v| {
                    NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                        ReportError::BadParameter(format!(
                            "{name} must be a date YYYY-MM-DD, not {v:?}"
                        ))
                    })
                })
                .transpose()
        };
        let account = account
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ReportError::BadParameter(format!("account must be an integer id, not {v:?}"))
                })
            })
            .transpose()?;
        Filters::resolve(
            date("from", from)?,
            date("to", to)?,
            source.map(str::to_string),
            account,
            today,
        )
    }

    /// The period of the same length just before this one.
    pub fn previous(&self) -> Filters {
        let days = (self.to - self.from).num_days() + 1;
        Filters {
            from: self.from - Duration::days(days),
            to: self.from - Duration::days(1),
            ..self.clone()
        }
    }

    /// The DuckDB variables of these filters, as `hooklake query --set` takes them.
    pub fn variables(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("from_date".to_string(), self.from.to_string()),
            ("to_date".to_string(), self.to.to_string()),
        ];
        if let Some(source) = &self.source {
            out.push(("source".to_string(), source.clone()));
        }
        if let Some(account) = self.account {
            out.push(("account_id".to_string(), account.to_string()));
        }
        out
    }

    /// `SET VARIABLE` statements for these filters (unset filters reset).
    fn statements(&self) -> String {
        let mut out = String::from("RESET VARIABLE source;\nRESET VARIABLE account_id;\n");
        for (name, value) in self.variables() {
            let value = match name.as_str() {
                "account_id" => value,
                _ => format!("'{}'", value.replace('\'', "''")),
            };
            out.push_str(&format!("SET VARIABLE {name} = {value};\n"));
        }
        out
    }
}

/// The views no filter changes and several queries read: computed once per report.
const CACHED_VIEWS: [&str; 4] = [
    "every_contact",
    "call_summaries",
    "outcomes",
    "status_history",
];

/// The queries of a report, in the order the session prints their result sets: the period's,
/// then (from [`PREVIOUS`]) the previous period's.
const RESULTS: [&str; 12] = [
    "funnel",
    "show_rate",
    "time_to_stage",
    "daily_engagement",
    "attribution",
    "status_durations",
    "tracking_params",
    "data_quality",
    "score_distribution",
    "score_movers",
    "funnel",
    "show_rate",
];

/// The index in [`RESULTS`] of the first query of the previous period.
const PREVIOUS: usize = 10;

/// The session's last statement, after the queries: whether the lake has lead scores at all
/// (section 8 is shown only then).
const SCORED: &str = "SELECT EXISTS (FROM stored_lead_scores) AS scored;";

/// The SQL of a query of `queries/`.
fn query_sql(name: &str) -> &'static str {
    crate::query::QUERIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sql)| *sql)
        .expect("the report reads only queries that exist")
}

/// The statements of one report session after the views: the cache, then each query of
/// [`RESULTS`] with its variables.
pub fn session(filters: &Filters) -> String {
    let mut out = String::new();
    for view in CACHED_VIEWS {
        out.push_str(&format!(
            "CREATE TEMP TABLE report_{view} AS FROM {view};\nCREATE OR REPLACE TEMP VIEW {view} AS FROM report_{view};\n"
        ));
    }
    let previous = filters.previous();
    for (i, name) in RESULTS.iter().enumerate() {
        match i {
            0 => out.push_str(&filters.statements()),
            PREVIOUS => out.push_str(&previous.statements()),
            _ => {}
        }
        let totals = matches!(*name, "funnel" | "time_to_stage");
        out.push_str(if totals {
            "SET VARIABLE totals = true;\n"
        } else {
            "RESET VARIABLE totals;\n"
        });
        out.push_str(query_sql(name));
        out.push('\n');
    }
    out.push_str(SCORED);
    out.push('\n');
    out
}

/// One row of a query's result.
pub type Row = Map<String, Value>;

/// What the queries returned for a report.
#[derive(Debug, Default)]
pub struct Results {
    /// The result sets of [`RESULTS`], in order, and the answer of [`SCORED`].
    pub sets: Vec<Vec<Row>>,
}

impl Results {
    fn set(&self, i: usize) -> &[Row] {
        self.sets.get(i).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Splits DuckDB's `-json` output (one array per statement that returns rows) into result sets.
pub fn parse_output(text: &str) -> Result<Results, ReportError> {
    let mut sets = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Vec<Row>>() {
        sets.push(value.map_err(|e| ReportError::Output(e.to_string()))?);
    }
    if sets.len() != RESULTS.len() + 1 {
        return Err(ReportError::Output(format!(
            "{} result sets instead of {}",
            sets.len(),
            RESULTS.len() + 1
        )));
    }
    Ok(Results { sets })
}

/// Runs the report's queries against the lake `data` with the DuckDB CLI `duckdb`.
pub fn fetch(
    data: &str,
    duckdb: &str,
    filters: &Filters,
    access: &crate::query::Access,
) -> Result<Results, ReportError> {
    let output = crate::query::capture_json(data, duckdb, &session(filters), access)
        .map_err(ReportError::Query)?;
    parse_output(&output)
}

/// A number field of a row (0 when null or missing).
fn num(row: &Row, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A number field that may be null (a median over nothing).
fn opt(row: &Row, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

/// A text field of a row.
fn text(row: &Row, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// An integer with thousands separators: 563500 -> "563,500".
pub fn count(v: f64) -> String {
    let negative = v < 0.0;
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if negative { format!("-{out}") } else { out }
}

/// A percentage as the queries round it (one decimal).
fn pct(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.1}%"))
}

/// Hours with up to two decimals, as the queries round them.
fn hours(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v} h"))
}

/// A headline figure with its change against the previous period.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub label: &'static str,
    /// A stable name for the figure (the `data-figure` attribute).
    pub key: &'static str,
    pub value: String,
    pub previous: String,
    /// "+12.5%", "-3.0 pts", or "new" when the previous period had none.
    pub change: String,
    /// "up", "down" or "flat", for the colour.
    pub direction: &'static str,
}

/// Change from `before` to `now`: relative for counts, in percentage points for rates.
fn change(now: Option<f64>, before: Option<f64>, points: bool) -> (String, &'static str) {
    let (Some(now), Some(before)) = (now, before) else {
        return ("–".to_string(), "flat");
    };
    let diff = if points {
        now - before
    } else if before == 0.0 {
        return (if now == 0.0 { "±0%" } else { "new" }.to_string(), "flat");
    } else {
        100.0 * (now - before) / before
    };
    let direction = if diff > 0.0 {
        "up"
    } else if diff < 0.0 {
        "down"
    } else {
        "flat"
    };
    let unit = if points { " pts" } else { "%" };
    (format!("{diff:+.1}{unit}"), direction)
}

/// A table beside a chart: the chart's numbers for a reader to check.
#[derive(Debug, Default, Serialize)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One chart (or table) on the page.
#[derive(Debug, Serialize)]
pub struct Panel {
    /// The question the chart answers.
    pub title: String,
    /// How to read it, and which query gives its numbers.
    pub note: String,
    /// A stable name (the `data-panel` attribute).
    pub key: String,
    /// The chart; none when the period has no data, or for a table-only panel.
    pub svg: Option<String>,
    /// True when the period has no data for this panel.
    pub empty: bool,
    pub table: Table,
}

/// A section of the page: a heading and its panels.
#[derive(Debug, Serialize)]
pub struct Section {
    pub title: &'static str,
    pub panels: Vec<Panel>,
}

/// Everything the template shows.
#[derive(Debug, Serialize)]
pub struct Page {
    pub from: String,
    pub to: String,
    pub previous_from: String,
    pub previous_to: String,
    pub source: Option<String>,
    pub account: Option<i64>,
    pub generated_at: String,
    pub figures: Vec<Figure>,
    pub sections: Vec<Section>,
}

/// A panel with a chart drawn by `draw`, or "no data" when `rows` is empty.
fn panel(
    key: &str,
    title: &str,
    note: &str,
    table: Table,
    empty: bool,
    draw: impl FnOnce() -> Result<String, charts::ChartError>,
) -> Result<Panel, ReportError> {
    Ok(Panel {
        title: title.to_string(),
        note: note.to_string(),
        key: key.to_string(),
        svg: if empty { None } else { Some(draw()?) },
        empty,
        table,
    })
}

/// The page model of a report.
pub fn page(filters: &Filters, results: &Results, generated_at: &str) -> Result<Page, ReportError> {
    let previous = filters.previous();
    let page = Page {
        from: filters.from.to_string(),
        to: filters.to.to_string(),
        previous_from: previous.from.to_string(),
        previous_to: previous.to.to_string(),
        source: filters.source.clone(),
        account: filters.account,
        generated_at: generated_at.to_string(),
        figures: figures(results),
        sections: Vec::new(),
    };
    let mut sections = vec![
        Section {
            title: "Funnel",
            panels: vec![panels::funnel(results.set(0))?],
        },
        Section {
            title: "Activity per day",
            panels: vec![panels::daily(results.set(3))?],
        },
        Section {
            title: "Attribution",
            panels: panels::attribution(results.set(4))?,
        },
        Section {
            title: "Calls",
            panels: vec![panels::show_rate(results.set(1))?],
        },
        Section {
            title: "Speed",
            panels: vec![
                panels::time_to_stage(results.set(2))?,
                panels::durations(results.set(5))?,
            ],
        },
        Section {
            title: "Tracking and data quality",
            panels: vec![
                panels::tracking(results.set(6))?,
                panels::quality(results.set(7))?,
            ],
        },
    ];
    // Lead scores: only when the lake has some (scoring may be off).
    let scored = results
        .set(RESULTS.len())
        .first()
        .is_some_and(|r| r.get("scored") == Some(&Value::Bool(true)));
    if scored {
        sections.push(Section {
            title: "Lead scores",
            panels: vec![
                scores::distribution(results.set(8))?,
                scores::movers(results.set(9))?,
            ],
        });
    }
    Ok(Page { sections, ..page })
}

/// The row of `show_rate` for every host and campaign together.
fn overall(show_rate: &[Row]) -> Option<&Row> {
    show_rate
        .iter()
        .find(|r| text(r, "host") == "(all)" && text(r, "campaign") == "(all)")
}

/// The headline figures: the period's funnel totals and overall show rate, against the
/// previous period's.
fn figures(results: &Results) -> Vec<Figure> {
    let (now, before) = (results.set(0).first(), results.set(PREVIOUS).first());
    let (calls_now, calls_before) = (overall(results.set(1)), overall(results.set(PREVIOUS + 1)));
    let field = |row: Option<&Row>, key: &str| row.map(|r| num(r, key)).or(Some(0.0));
    let mut out = Vec::new();
    let mut add = |label, key, now: Option<f64>, before: Option<f64>, rate: bool| {
        let shown = |v: Option<f64>| {
            if rate {
                pct(v)
            } else {
                count(v.unwrap_or(0.0))
            }
        };
        let (text, direction) = change(now, before, rate);
        out.push(Figure {
            label,
            key,
            value: shown(now),
            previous: shown(before),
            change: text,
            direction,
        });
    };
    add(
        "New leads",
        "leads",
        field(now, "leads"),
        field(before, "leads"),
        false,
    );
    add(
        "Qualified",
        "qualified",
        field(now, "qualified"),
        field(before, "qualified"),
        false,
    );
    add(
        "Calls booked",
        "calls_booked",
        field(calls_now, "booked"),
        field(calls_before, "booked"),
        false,
    );
    add(
        "Show rate",
        "show_rate",
        calls_now.and_then(|r| opt(r, "show_rate_pct")),
        calls_before.and_then(|r| opt(r, "show_rate_pct")),
        true,
    );
    add(
        "Deals won",
        "won",
        field(now, "won"),
        field(before, "won"),
        false,
    );
    add(
        "Revenue",
        "revenue",
        field(now, "revenue"),
        field(before, "revenue"),
        false,
    );
    out
}

/// The page template.
const TEMPLATE: &str = include_str!("page.html");

/// Fills the template with `page`. Text is escaped; only the charts' SVG is inserted as is.
pub fn html(page: &Page) -> Result<String, ReportError> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("page.html", TEMPLATE)?;
    Ok(env
        .get_template("page.html")?
        .render(minijinja::value::Serde(page))?)
}

/// The whole report: queries, charts, page.
pub fn render(
    data: &str,
    duckdb: &str,
    filters: &Filters,
    access: &crate::query::Access,
) -> Result<String, ReportError> {
    let results = fetch(data, duckdb, filters, access)?;
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    html(&page(filters, &results, &now)?)
}

/// Serves the report over HTTP: at most one rendering at a time, and a rendering is reused
/// for the same filters until the lake changes (the flush count moves).
pub struct Renderer {
    data: String,
    duckdb: String,
    access: crate::query::Access,
    /// The last page, with the filters and flush count it was made for. The lock is held for
    /// the whole of a rendering, which makes renderings one at a time.
    last: tokio::sync::Mutex<Option<(Filters, u64, Arc<String>)>>,
    /// Renderings made (not reused), for tests and logs.
    renderings: AtomicU64,
}

impl Renderer {
    /// A renderer of the lake at `data` (a directory or a URL; `access` says how DuckDB reaches
    /// a remote one).
    pub fn new(data: String, duckdb: String, access: crate::query::Access) -> Renderer {
        Renderer {
            data,
            duckdb,
            access,
            last: tokio::sync::Mutex::new(None),
            renderings: AtomicU64::new(0),
        }
    }

    /// How many pages were rendered rather than reused.
    pub fn renderings(&self) -> u64 {
        self.renderings.load(Ordering::Relaxed)
    }

    /// The page for `filters` after `flushes` flushes: the last one when it matches, else a new
    /// rendering (run on a blocking thread). Returns the page and whether it was reused.
    pub async fn get(
        &self,
        filters: Filters,
        flushes: u64,
    ) -> Result<(Arc<String>, bool), ReportError> {
        let mut last = self.last.lock().await;
        if let Some((f, n, page)) = last.as_ref()
            && *f == filters
            && *n == flushes
        {
            return Ok((page.clone(), true));
        }
        let (data, duckdb, f) = (self.data.clone(), self.duckdb.clone(), filters.clone());
        let access = self.access.clone();
        let page = tokio::task::spawn_blocking(move || render(&data, &duckdb, &f, &access))
            .await
            .map_err(|e| ReportError::Output(format!("the rendering task failed: {e}")))??;
        self.renderings.fetch_add(1, Ordering::Relaxed);
        let page = Arc::new(page);
        *last = Some((filters, flushes, page.clone()));
        Ok((page, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_default_period_is_the_30_days_to_today_and_the_previous_one_abuts_it() {
        let f = Filters::resolve(None, None, None, None, day("2026-12-07")).unwrap();
        assert_eq!((f.from, f.to), (day("2026-11-08"), day("2026-12-07")));
        let p = f.previous();
        assert_eq!((p.from, p.to), (day("2026-10-09"), day("2026-11-07")));
        let one = Filters::resolve(
            Some(day("2026-03-05")),
            Some(day("2026-03-05")),
            None,
            None,
            day("2026-12-07"),
        )
        .unwrap()
        .previous();
        assert_eq!((one.from, one.to), (day("2026-03-04"), day("2026-03-04")));
    }

    #[test]
    fn bad_parameters_are_named() {
        let today = day("2026-12-07");
        let err = |r: Result<Filters, ReportError>| r.unwrap_err().to_string();
        assert!(
            err(Filters::parse(Some("2026-13-01"), None, None, None, today))
                .contains("from must be a date")
        );
        assert!(
            err(Filters::parse(None, Some("yesterday"), None, None, today))
                .contains("to must be a date")
        );
        assert!(
            err(Filters::parse(None, None, None, Some("acme"), today))
                .contains("account must be an integer")
        );
        assert!(
            err(Filters::parse(
                Some("2026-03-02"),
                Some("2026-03-01"),
                None,
                None,
                today
            ))
            .contains("is after")
        );
        assert!(
            err(Filters::parse(Some("1990-01-01"), None, None, None, today))
                .contains("longer than")
        );
        let long = "x".repeat(201);
        assert!(
            err(Filters::parse(None, None, Some(&long), None, today)).contains("source is longer")
        );
        let ok = Filters::parse(Some(""), None, Some("google"), Some("42"), today).unwrap();
        assert_eq!(
            (ok.source.as_deref(), ok.account),
            (Some("google"), Some(42))
        );
    }

    #[test]
    fn the_session_sets_both_periods_and_caches_views_before_the_queries() {
        let f = Filters::resolve(
            Some(day("2026-03-11")),
            Some(day("2026-03-20")),
            Some("o'x".into()),
            Some(7),
            day("2026-12-07"),
        )
        .unwrap();
        let s = session(&f);
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
        assert!(
            at("CREATE TEMP TABLE report_every_contact AS FROM every_contact;")
                < at("SET VARIABLE from_date")
        );
        assert!(
            at("SET VARIABLE from_date = '2026-03-11';")
                < at("SET VARIABLE from_date = '2026-03-01';")
        );
        assert!(s.contains("SET VARIABLE to_date = '2026-03-10';"));
        assert!(s.contains("SET VARIABLE source = 'o''x';"));
        assert!(s.contains("SET VARIABLE account_id = 7;"));
        assert_eq!(s.matches("-- funnel: ").count(), 2);
        assert_eq!(s.matches("SET VARIABLE totals = true;").count(), 3);
    }

    #[test]
    fn duckdb_output_splits_into_result_sets_and_a_short_one_is_an_error() {
        let all = "[{\"leads\":3}]\n[]\n".repeat(6) + "[{\"scored\":true}]\n";
        let results = parse_output(&all).unwrap();
        assert_eq!(results.sets.len(), 13);
        assert_eq!(num(&results.sets[0][0], "leads"), 3.0);
        assert!(results.sets[1].is_empty());
        assert!(
            parse_output("[]\n")
                .unwrap_err()
                .to_string()
                .contains("1 result sets instead of 13")
        );
        assert!(parse_output("[{").is_err());
    }

    #[test]
    fn counts_and_changes_read_as_people_write_them() {
        assert_eq!(count(563500.0), "563,500");
        assert_eq!(count(12.0), "12");
        assert_eq!(count(-1234.0), "-1,234");
        assert_eq!(
            change(Some(110.0), Some(100.0), false),
            ("+10.0%".to_string(), "up")
        );
        assert_eq!(
            change(Some(55.0), Some(57.5), true),
            ("-2.5 pts".to_string(), "down")
        );
        assert_eq!(change(Some(5.0), Some(0.0), false).0, "new");
        assert_eq!(change(None, Some(1.0), true).0, "–");
    }

    #[test]
    fn an_empty_period_says_so_instead_of_drawing_an_empty_frame() {
        let mut sets = vec![Vec::new(); 13];
        // A lake with lead scores, none in the period: the section says so too.
        sets[12] = vec![row(json!({"scored": true}))];
        let results = Results { sets };
        let f = Filters::resolve(None, None, None, None, day("2026-12-07")).unwrap();
        let page = page(&f, &results, "now").unwrap();
        for section in &page.sections {
            for panel in &section.panels {
                assert!(panel.empty && panel.svg.is_none(), "{}", panel.key);
            }
        }
        let html = html(&page).unwrap();
        assert_eq!(
            html.matches("No data for this period").count(),
            11,
            "{html}"
        );
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn the_page_escapes_text_and_shows_every_chart_with_its_numbers() {
        let mut sets = vec![Vec::new(); 13];
        sets[8] = vec![row(json!({"band": "hot", "score_from": 60, "contacts": 2}))];
        sets[9] = vec![row(
            json!({"contact_id": 7, "source": "<i>x</i>", "score_before": 20, "score_after": 65,
            "change": 45, "band": "hot", "changes": 2}),
        )];
        sets[12] = vec![row(json!({"scored": true}))];
        sets[0] = vec![row(
            json!({"leads": 10, "qualified": 6, "booked": 4, "held": 3, "won": 2,
            "revenue": 5000.0, "qualified_pct": 60.0, "booked_pct": 66.7, "held_pct": 75.0, "won_pct": 66.7}),
        )];
        sets[1] = vec![row(
            json!({"host": "<b>Ann</b>", "campaign": "(all)", "booked": 4, "held": 3,
            "no_shows": 1, "cancelled": 0, "pending": 0, "show_rate_pct": 75.0}),
        )];
        sets[3] = vec![row(
            json!({"date": "2026-03-01", "new_contacts": 10, "calls_booked": 4, "outcomes": 3, "revenue": 5000.0}),
        )];
        let results = Results { sets };
        let f = Filters::resolve(
            Some(day("2026-03-01")),
            Some(day("2026-03-01")),
            Some("<script>".into()),
            None,
            day("2026-12-07"),
        )
        .unwrap();
        let html = html(&page(&f, &results, "now").unwrap()).unwrap();
        assert!(!html.contains("<script"), "text is escaped");
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            html.contains("&lt;b&gt;Ann&lt;/b&gt;"),
            "table cells are escaped"
        );
        assert_eq!(
            html.matches("<svg").count(),
            5,
            "funnel, daily, show rate and the two lead score panels have data"
        );
        assert!(
            html.contains("&lt;i&gt;x") && !html.contains("<i>x"),
            "a mover's source is escaped"
        );
        assert!(html.contains("+45 (20 → 65)"), "a mover's label");
        assert!(html.contains("<td>60-69</td>"), "a score range");
        assert!(html.contains(">5,000<"), "revenue headline");
        assert!(html.contains("6 (60.0%)"), "funnel label with its rate");
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "no link to any other host"
        );
    }
}
