//! The SQL in `queries/`: each query runs through `hooklake query` (and a few through the stock
//! DuckDB CLI one-liner) against a lake of generated data, and every row is compared with the
//! answer computed from the generator's record (`truth.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hooklake::generate::{Lead, Options, leads};
use serde_json::{Map, Value, json};

use crate::truth::World;
use crate::util::{Lake, fixture, hooklake_query, json_rows};

/// The generated lake every query test reads: built once, kept for the whole test run.
struct Shared {
    dir: tempfile::TempDir,
    world: World,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Built on a runtime of its own: the tests calling this may be on any thread.
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(build(Options {
                    contacts: 400,
                    seed: 11,
                    days: 21,
                }))
        })
        .join()
        .unwrap()
    })
}

/// Ingests the generated deliveries over HTTP: every on-time delivery (redeliveries included),
/// a flush, then the late ones, and a flush, so late events meet a newer state.
async fn build(options: Options) -> Shared {
    let all: Vec<Lead> = leads(options).collect();
    let before = chrono::Utc::now().date_naive();
    let lake = Lake::new();
    let (on_time, late) = crate::util::ingest(&lake, &all).await;
    assert!(on_time > 0 && late > 0, "{on_time} on time, {late} late");
    let today = chrono::Utc::now().date_naive();
    assert_eq!(
        before, today,
        "the day changed while ingesting; events timed at receipt straddle midnight: run again"
    );
    Shared {
        dir: lake.close(),
        world: World { leads: all, today },
    }
}

/// The documented one-liner with the stock DuckDB CLI, run from the repository root.
fn duckdb_cli(dir: &Path, name: &str) -> Vec<Value> {
    let out = Command::new("duckdb")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("-json")
        .arg("-c")
        .arg(format!(
            "SET VARIABLE data_dir = '{}'; SET TimeZone = 'UTC';",
            dir.display()
        ))
        .arg("-c")
        .arg(format!(".read queries/{name}.sql"))
        .output()
        .expect("the duckdb CLI must be on PATH (pip install duckdb-cli; see README)");
    json_rows(name, &out)
}

/// Same rows in the same order; numbers equal within `tolerance` (the queries round).
fn assert_rows(name: &str, actual: &[Value], expected: &[Value], tolerance: f64) {
    let show = |rows: &[Value]| {
        rows.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let context = || {
        format!(
            "{name}\n--- actual ---\n{}\n--- expected ---\n{}",
            show(actual),
            show(expected)
        )
    };
    assert_eq!(actual.len(), expected.len(), "row count: {}", context());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (a, e): (&Map<String, Value>, &Map<String, Value>) =
            (a.as_object().unwrap(), e.as_object().unwrap());
        let mut keys: Vec<&String> = a.keys().collect();
        keys.sort();
        let mut expected_keys: Vec<&String> = e.keys().collect();
        expected_keys.sort();
        assert_eq!(keys, expected_keys, "columns of {name}");
        for k in keys {
            let same = match (&a[k], &e[k]) {
                (Value::Number(x), Value::Number(y)) => {
                    (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= tolerance
                }
                (x, y) => x == y,
            };
            assert!(
                same,
                "{name} row {i} column {k}: {} != {}\n{}",
                a[k],
                e[k],
                context()
            );
        }
    }
}

/// Rounding to 1 or 2 decimals, plus float noise.
const ROUNDED: f64 = 0.0051;
const ROUNDED_PCT: f64 = 0.051;

fn check(name: &str, expected: Vec<Value>, tolerance: f64) {
    let s = shared();
    assert!(!expected.is_empty(), "{name}: nothing expected");
    let actual = hooklake_query(s.dir.path(), name, &[]);
    assert_rows(name, &actual, &expected, tolerance);
}

#[test]
fn every_query_file_is_tested_and_listed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql") && n != "views.sql")
        .collect();
    files.sort();
    let mut listed: Vec<String> = hooklake::query::QUERIES
        .iter()
        .map(|(n, _)| format!("{n}.sql"))
        .collect();
    listed.sort();
    assert_eq!(files, listed, "every file in queries/ is in QUERIES");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for (name, _) in hooklake::query::QUERIES {
        assert!(
            readme.contains(&format!("### `{name}`")),
            "queries/README.md: {name}"
        );
    }
    // One test per query below; keep this list in step with them.
    let tested = [
        "attribute_churn",
        "attribution",
        "daily_engagement",
        "daily_events",
        "data_quality",
        "funnel",
        "latest_status",
        // lead_scores, score_distribution, score_movement, score_movers: tests/it/score.rs.
        "lead_scores",
        "score_distribution",
        "score_movement",
        "score_movers",
        "show_rate",
        "status_durations",
        "status_history",
        "time_to_stage",
        "tracking_params",
    ];
    let tested: Vec<String> = tested.iter().map(|n| format!("{n}.sql")).collect();
    assert_eq!(files, tested, "add a test for each new query");
}

#[test]
fn the_generated_lake_has_every_kind_of_event() {
    let w = &shared().world;
    let deliveries = || w.leads.iter().flat_map(|l| &l.deliveries);
    assert!(deliveries().filter(|d| d.redelivery).count() > 20);
    assert!(deliveries().filter(|d| d.late).count() > 10);
    let calls = || w.leads.iter().filter_map(|l| l.call.as_ref());
    assert!(calls().filter(|c| c.cancelled_at.is_some()).count() > 5);
    assert!(calls().filter(|c| c.rescheduled_to.is_some()).count() > 5);
    assert!(calls().filter(|c| c.outcome.is_none()).count() > 5);
    assert!(w.leads.iter().filter(|l| l.unknown_event).count() > 2);
    let malformed = w
        .leads
        .iter()
        .flat_map(|l| &l.snapshots)
        .filter(|s| s.attributes.get("email").is_some_and(|e| !e.contains('@')))
        .count();
    assert!(
        malformed > 5,
        "{malformed} snapshots with a malformed email"
    );
}

#[test]
fn funnel() {
    check("funnel", shared().world.funnel(), ROUNDED_PCT);
}

#[test]
fn funnel_via_the_duckdb_cli_one_liner_gives_the_same_rows() {
    let s = shared();
    for name in ["funnel", "show_rate", "status_durations"] {
        let cli = duckdb_cli(s.dir.path(), name);
        let ours = hooklake_query(s.dir.path(), name, &[]);
        assert_rows(name, &cli, &ours, 0.0);
    }
}

#[test]
fn attribution() {
    check("attribution", shared().world.attribution(), 1e-9);
}

#[test]
fn time_to_stage() {
    check("time_to_stage", shared().world.time_to_stage(), ROUNDED);
}

#[test]
fn status_durations() {
    check(
        "status_durations",
        shared().world.status_durations(),
        ROUNDED,
    );
}

#[test]
fn attribute_churn() {
    check("attribute_churn", shared().world.attribute_churn(), 0.0);
}

#[test]
fn daily_engagement() {
    check("daily_engagement", shared().world.daily_engagement(), 1e-9);
}

#[test]
fn show_rate() {
    check("show_rate", shared().world.show_rate(), ROUNDED_PCT);
}

#[test]
fn show_rate_window_is_a_parameter() {
    // With a window longer than the time since any generated slot, calls without an outcome
    // are pending, not no-shows.
    let s = shared();
    let rows = hooklake_query(
        s.dir.path(),
        "show_rate",
        &["--set", "no_show_hours=100000"],
    );
    let overall = rows
        .iter()
        .find(|r| r["host"] == "(all)" && r["campaign"] == "(all)")
        .unwrap();
    let without_outcome = s
        .world
        .leads
        .iter()
        .filter_map(|l| l.call.as_ref())
        .filter(|c| c.cancelled_at.is_none() && c.outcome.is_none())
        .count();
    assert!(without_outcome > 0);
    assert_eq!(overall["pending"], json!(without_outcome));
}

#[test]
fn tracking_params() {
    check(
        "tracking_params",
        shared().world.tracking_params(),
        ROUNDED_PCT,
    );
}

#[test]
fn data_quality() {
    check("data_quality", shared().world.data_quality(), 0.0);
}

#[test]
fn latest_status() {
    check("latest_status", shared().world.latest_status(), 0.0);
}

#[test]
fn status_history() {
    check("status_history", shared().world.status_history(), 0.0);
}

#[test]
fn daily_events() {
    check("daily_events", shared().world.daily_events(), 0.0);
}

#[tokio::test]
async fn a_query_answers_on_a_lake_missing_tables() {
    // Only contact events: no call, outcome or change file exists yet.
    let lake = Lake::new();
    let r = lake
        .post("/webhooks/iclosed", fixture("contact_created.json"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    lake.flush().await;
    let rows = hooklake_query(lake.dir.path(), "funnel", &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["leads"], json!(1));
    assert_eq!(rows[0]["booked"], json!(0));
    let rows = hooklake_query(lake.dir.path(), "show_rate", &[]);
    assert_eq!(rows[0]["booked"], json!(0));
    // The same lake by URL (as s3://...), where DuckDB finds the files: the same answers.
    let url = format!("file://{}", lake.dir.path().display());
    let out = crate::util::hooklake_command()
        .args(["query", "show_rate", "--format", "json", "--data", &url])
        .output()
        .unwrap();
    let rows = crate::util::json_rows("show_rate", &out);
    assert_eq!(rows[0]["booked"], json!(0));
    let out = crate::util::hooklake_command()
        .args(["query", "funnel", "--format", "json", "--data", &url])
        .output()
        .unwrap();
    assert_eq!(crate::util::json_rows("funnel", &out)[0]["leads"], json!(1));
}

#[test]
fn unknown_query_and_missing_directory_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = crate::util::hooklake_command().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["query", "nope", "--data", "/"]);
    assert!(!ok && err.contains("unknown query \"nope\""), "{err}");
    let (ok, err) = run(&["query", "funnel", "--data", "/no/such/lake"]);
    assert!(
        !ok && err.contains("no data directory at /no/such/lake"),
        "{err}"
    );
    let (ok, err) = run(&["query", "funnel", "--set", "bad name=1"]);
    assert!(!ok && err.contains("is not a variable name"), "{err}");
}

/// Copies `from` into `to`, writing every Parquet file twice: once under its name and once as
/// a compaction output (`compact-<id>-<k>.parquet`), as a reader sees a partition between
/// compaction's renames and its deletes, or when two writers wrote the same events.
pub fn copy_twice(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (k, entry) in std::fs::read_dir(from).unwrap().enumerate() {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_twice(&source, &target);
        } else if source.extension().is_some_and(|e| e == "parquet") {
            std::fs::copy(&source, &target).unwrap();
            std::fs::copy(&source, to.join(format!("compact-999999-{k}.parquet"))).unwrap();
        }
    }
}

#[test]
fn every_query_gives_the_same_answer_when_every_file_is_seen_twice() {
    let s = shared();
    let doubled = tempfile::tempdir().unwrap();
    copy_twice(s.dir.path(), doubled.path());
    let files = |dir: &Path| {
        hooklake::sink::published_files(dir, "contact_events")
            .unwrap()
            .len()
    };
    assert_eq!(files(doubled.path()), 2 * files(s.dir.path()));
    for (name, _) in hooklake::query::QUERIES {
        let once = hooklake_query(s.dir.path(), name, &[]);
        let twice = hooklake_query(doubled.path(), name, &[]);
        // This lake has two flushes, so no lead score moves after its first: score_movers is
        // checked on a lake of many flushes in tests/it/score.rs.
        assert!(!once.is_empty() || name == "score_movers", "{name}");
        assert_rows(name, &twice, &once, 0.0);
    }
}

/// A lake of hand-made rows, for rules the generated data never exercises. For each table, a
/// `SELECT` whose columns are named as the table's: its rows are written in the table's real
/// schema (a column left out is null; `received_at` defaults to `event_time`) to a published
/// file of the partition of each row's event day, as the sink would.
fn hand_made_lake(tables: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let schemas = hooklake::flatten::table_schemas();
    for (table, rows) in tables {
        let (_, schema) = schemas
            .iter()
            .find(|(name, _)| name == table)
            .unwrap_or_else(|| panic!("no table {table}"));
        let empty = dir.path().join(format!("{table}.schema.parquet"));
        let file = std::fs::File::create(&empty).unwrap();
        parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
            .unwrap()
            .close()
            .unwrap();
        crate::util::duckdb(&format!(
            "CREATE TABLE t AS SELECT * FROM read_parquet('{empty}');
             INSERT INTO t BY NAME {rows};
             UPDATE t SET received_at = event_time WHERE received_at IS NULL;
             COPY (SELECT *, event_time::DATE AS date FROM t)
                 TO '{target}' (FORMAT parquet, PARTITION_BY (date), FILENAME_PATTERN 'part-{{i}}00000000000');",
            empty = empty.display(),
            target = dir.path().join(table).display(),
        ));
        std::fs::remove_file(&empty).unwrap();
        assert!(
            !hooklake::sink::published_files(dir.path(), table)
                .unwrap()
                .is_empty(),
            "{table}: no file written"
        );
    }
    dir
}

/// `columns` of each row of `rows`, as one JSON object per row.
fn project(rows: &[Value], columns: &[&str]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let picked: Map<String, Value> = columns
                .iter()
                .map(|c| (c.to_string(), r[*c].clone()))
                .collect();
            Value::Object(picked)
        })
        .collect()
}

/// The overall row (every host, every campaign) of `show_rate` on the lake at `dir`.
fn show_rate_overall(dir: &Path) -> Vec<Value> {
    hooklake_query(dir, "show_rate", &[])
        .into_iter()
        .filter(|r| r["host"] == "(all)" && r["campaign"] == "(all)")
        .collect()
}

#[test]
fn a_touch_takes_its_source_and_campaign_from_one_snapshot() {
    // Contact 1 sent a first touch without a campaign, then a last touch with one, then one
    // without: its touches are (linkedin, none) and (facebook, none), not pairs pieced together
    // from several snapshots (linkedin / facebook with spring). Contact 2 sent no first_utm_*:
    // its first touch is its earliest utm_* pair, (none, webinar), not (google, webinar).
    let lake = hand_made_lake(&[(
        "contact_events",
        "SELECT * FROM (VALUES
            ('e1', 1, '2026-03-02 00:00:00+00', 'linkedin', NULL, 'linkedin', NULL),
            ('e2', 1, '2026-03-02 01:00:00+00', NULL, NULL, 'google', 'spring'),
            ('e3', 1, '2026-03-02 02:00:00+00', NULL, NULL, 'facebook', NULL),
            ('e4', 2, '2026-03-02 00:00:00+00', NULL, NULL, NULL, 'webinar'),
            ('e5', 2, '2026-03-02 01:00:00+00', NULL, NULL, 'google', 'spring')
         ) AS v(event_id, contact_id, event_time, first_utm_source, first_utm_campaign,
                utm_source, utm_campaign)",
    )]);
    let rows = hooklake_query(lake.path(), "attribution", &[]);
    let expected = [
        ("(none)", "webinar", 1, 0),
        ("facebook", "(none)", 0, 1),
        ("google", "spring", 0, 1),
        ("linkedin", "(none)", 1, 0),
    ]
    .map(|(s, c, first, last)| {
        json!({"utm_source": s, "utm_campaign": c, "first_leads": first, "last_leads": last})
    });
    let columns = ["utm_source", "utm_campaign", "first_leads", "last_leads"];
    assert_rows("attribution", &project(&rows, &columns), &expected, 0.0);
}

#[test]
fn the_first_touch_is_the_earliest_and_statuses_and_outcomes_are_read_in_any_case() {
    // Contact 5 sent first_utm (google, alpha), then (bing, beta): its first touch is the
    // earliest. Its status was sent as `Qualified` and its outcome as `won`: qualified and won.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT *, utm_source AS first_utm_source, utm_campaign AS first_utm_campaign FROM (VALUES
                ('e1', 5, 'contact_z', 'Qualified', '2026-03-02 00:00:00+00', 'google', 'alpha'),
                ('e2', 5, 'contact_z', 'Qualified', '2026-03-03 00:00:00+00', 'bing', 'beta')
             ) AS v(event_id, contact_id, preview_id, status, event_time, utm_source, utm_campaign)",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type, event_time AS deal_created_at FROM (VALUES
                ('o5', 50, 5, 'won', 900.0, '2026-03-04 10:00:00+00', '2026-03-04 11:00:00+00')
             ) AS v(event_id, outcome_id, contact_id, outcome, deal_value, call_start_at, event_time)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "attribution", &[]);
    let columns = [
        "utm_source",
        "utm_campaign",
        "first_leads",
        "first_qualified",
        "first_won",
        "first_revenue",
        "last_leads",
        "last_won",
        "last_revenue",
    ];
    assert_rows(
        "attribution",
        &project(&rows, &columns),
        &[
            json!({"utm_source": "bing", "utm_campaign": "beta", "first_leads": 0,
                   "first_qualified": 0, "first_won": 0, "first_revenue": 0.0,
                   "last_leads": 1, "last_won": 1, "last_revenue": 900.0}),
            json!({"utm_source": "google", "utm_campaign": "alpha", "first_leads": 1,
                   "first_qualified": 1, "first_won": 1, "first_revenue": 900.0,
                   "last_leads": 0, "last_won": 0, "last_revenue": 0.0}),
        ],
        0.0,
    );
}

#[test]
fn a_cancellation_stands_unless_a_booking_was_made_after_it() {
    // c1: booked, cancelled on 2 March, and a reschedule made before the cancellation but
    // delivered on 5 March (a replay or a late delivery), so timed after it: cancelled.
    // c2: cancelled, then booked again under the same call id: not cancelled.
    // c3: booked and rescheduled: not cancelled.
    // Every slot is long past and no call has an outcome: c2 and c3 are no-shows.
    let lake = hand_made_lake(&[(
        "call_events",
        "SELECT *, start_at AS slot_start_at FROM (VALUES
            ('b1', 'call_booked', 'c1', '2026-03-01 10:00:00+00', '2026-03-01 10:00:00+00', NULL, '2026-03-03 15:00:00+00'),
            ('x1', 'call_cancelled', 'c1', '2026-03-02 09:00:00+00', '2026-03-01 10:00:00+00', '2026-03-02 09:00:00+00', '2026-03-04 15:00:00+00'),
            ('r1', 'call_rescheduled', 'c1', '2026-03-05 08:00:00+00', '2026-03-01 10:00:00+00', NULL, '2026-03-04 15:00:00+00'),
            ('b2', 'call_booked', 'c2', '2026-03-01 10:00:00+00', '2026-03-01 10:00:00+00', NULL, '2026-03-03 15:00:00+00'),
            ('x2', 'call_cancelled', 'c2', '2026-03-02 09:00:00+00', '2026-03-01 10:00:00+00', '2026-03-02 09:00:00+00', '2026-03-03 15:00:00+00'),
            ('b2again', 'call_booked', 'c2', '2026-03-02 12:00:00+00', '2026-03-02 12:00:00+00', NULL, '2026-03-04 15:00:00+00'),
            ('b3', 'call_booked', 'c3', '2026-03-01 10:00:00+00', '2026-03-01 10:00:00+00', NULL, '2026-03-03 15:00:00+00'),
            ('r3', 'call_rescheduled', 'c3', '2026-03-02 08:00:00+00', '2026-03-01 10:00:00+00', NULL, '2026-03-04 15:00:00+00')
         ) AS v(event_id, event_type, call_id, event_time, booked_at, canceled_at, start_at)",
    )]);
    let overall = show_rate_overall(lake.path());
    let columns = [
        "booked",
        "cancelled",
        "rescheduled",
        "held",
        "no_shows",
        "pending",
    ];
    assert_rows(
        "show_rate",
        &project(&overall, &columns),
        &[
            json!({"booked": 3, "cancelled": 1, "rescheduled": 2, "held": 0, "no_shows": 2, "pending": 0}),
        ],
        0.0,
    );
}

#[test]
fn the_no_show_window_runs_from_the_end_of_the_latest_slot() {
    // No call has an outcome. k3 began 26 h ago and ended 23 h ago: pending. k4 ended 25 h ago:
    // a no-show. k5 was moved: its first slot ended 30 h ago, the new one 2 h ago: pending.
    let lake = hand_made_lake(&[(
        "call_events",
        "SELECT *, start_at AS slot_start_at, event_time AS booked_at FROM (VALUES
            ('b3', 'call_booked', 'k3', now() - INTERVAL 10 DAY, now() - INTERVAL 26 HOUR, now() - INTERVAL 23 HOUR),
            ('b4', 'call_booked', 'k4', now() - INTERVAL 10 DAY, now() - INTERVAL 27 HOUR, now() - INTERVAL 25 HOUR),
            ('b5', 'call_booked', 'k5', now() - INTERVAL 10 DAY, now() - INTERVAL 32 HOUR, now() - INTERVAL 30 HOUR),
            ('r5', 'call_rescheduled', 'k5', now() - INTERVAL 9 DAY, now() - INTERVAL 4 HOUR, now() - INTERVAL 2 HOUR)
         ) AS v(event_id, event_type, call_id, event_time, start_at, end_at)",
    )]);
    let overall = show_rate_overall(lake.path());
    assert_rows(
        "show_rate",
        &project(&overall, &["booked", "rescheduled", "no_shows", "pending"]),
        &[json!({"booked": 3, "rescheduled": 1, "no_shows": 1, "pending": 2})],
        0.0,
    );
}

#[test]
fn an_outcome_belongs_to_the_call_whose_slot_is_nearest() {
    // One contact, two calls with different hosts: k1 on 1 March with Hana, k2 on 5 March with
    // Ivo. One outcome (held, no deal) for a call starting 5 March: Ivo's. Hana's call, long
    // past with no outcome, is a no-show.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT * FROM (VALUES
                ('e9', 9, 'contact_n', 'QUALIFIED', '2026-02-28 00:00:00+00')
             ) AS v(event_id, contact_id, preview_id, status, event_time)",
        ),
        (
            "call_events",
            "SELECT *, 'call_booked' AS event_type, event_time AS booked_at,
                    start_at AS slot_start_at, 'contact_n' AS invitee_preview_id FROM (VALUES
                ('b1', 'k1', 'Hana', '2026-02-28 10:00:00+00', '2026-03-01 10:00:00+00'),
                ('b2', 'k2', 'Ivo', '2026-02-28 11:00:00+00', '2026-03-05 10:00:00+00')
             ) AS v(event_id, call_id, host_name, event_time, start_at)",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type FROM (VALUES
                ('o1', 31, 9, 'NO_SALE', '2026-03-05 10:00:00+00', '2026-03-05 11:00:00+00')
             ) AS v(event_id, outcome_id, contact_id, outcome, call_start_at, event_time)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "show_rate", &[]);
    let per_host: Vec<Value> = rows.into_iter().filter(|r| r["host"] != "(all)").collect();
    assert_rows(
        "show_rate",
        &project(&per_host, &["host", "held", "no_shows"]),
        &[
            json!({"host": "Hana", "held": 0, "no_shows": 1}),
            json!({"host": "Ivo", "held": 1, "no_shows": 0}),
        ],
        0.0,
    );
}

#[test]
fn a_no_show_then_a_held_call_is_held_and_calls_find_their_contact_by_email() {
    // Contact 7 missed a first call (outcome NO_SHOW) and held a second (NO_SALE): held, and not
    // among the no-shows, whose outcomes were all no-shows. Its calls carry no preview URL, only
    // its email (in another case): they are matched by email, so its campaign is `autumn`.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT * FROM (VALUES
                ('e7', 7, 'contact_m', 'QUALIFIED', 'Mia@x.io', 'g', 'autumn', '2026-03-01 00:00:00+00')
             ) AS v(event_id, contact_id, preview_id, status, email, first_utm_source,
                    first_utm_campaign, event_time)",
        ),
        (
            "call_events",
            "SELECT *, 'call_booked' AS event_type, event_time AS booked_at,
                    start_at AS slot_start_at, 'mia@X.io' AS invitee_email FROM (VALUES
                ('b71', 'k71', '2026-03-01 10:00:00+00', '2026-03-02 10:00:00+00'),
                ('b72', 'k72', '2026-03-02 11:00:00+00', '2026-03-06 10:00:00+00')
             ) AS v(event_id, call_id, event_time, start_at)",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type, 7 AS contact_id, 'NO_SALE' AS outcome FROM (VALUES
                ('o71', 71, 'NO_SHOW', '2026-03-02 10:00:00+00', '2026-03-02 12:00:00+00'),
                ('o72', 72, NULL, '2026-03-06 10:00:00+00', '2026-03-06 12:00:00+00')
             ) AS v(event_id, outcome_id, no_sale_reason, call_start_at, event_time)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "funnel", &[]);
    assert_rows(
        "funnel",
        &project(&rows, &["campaign", "booked", "held", "no_shows"]),
        &[json!({"campaign": "autumn", "booked": 1, "held": 1, "no_shows": 0})],
        0.0,
    );
    let rows = hooklake_query(lake.path(), "show_rate", &[]);
    let by_campaign: Vec<Value> = rows
        .into_iter()
        .filter(|r| r["host"] == "(all)" && r["campaign"] != "(all)")
        .collect();
    assert_rows(
        "show_rate",
        &project(&by_campaign, &["campaign", "booked", "held", "no_shows"]),
        &[json!({"campaign": "autumn", "booked": 2, "held": 1, "no_shows": 1})],
        0.0,
    );
}

#[test]
fn funnel_stages_are_nested() {
    // a: qualified, booked, won 1000. b: booked and won 500 without ever being QUALIFIED.
    // c: qualified, an outcome (a sale of 700) recorded but no call booked seen (booked before
    // the lake began, say). d: qualified only. A contact that reached a stage counts in every
    // stage before it: b is qualified, c booked; no sale is left out of the revenue.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT *, 'facebook' AS first_utm_source, 'spring' AS first_utm_campaign FROM (VALUES
                ('ea', 1, 'contact_a', 'QUALIFIED', '2026-03-02 00:00:00+00'),
                ('eb', 2, 'contact_b', 'POTENTIAL', '2026-03-02 00:00:00+00'),
                ('ec', 3, 'contact_c', 'QUALIFIED', '2026-03-02 00:00:00+00'),
                ('ed', 4, 'contact_d', 'QUALIFIED', '2026-03-02 00:00:00+00')
             ) AS v(event_id, contact_id, preview_id, status, event_time)",
        ),
        (
            "call_events",
            "SELECT *, 'call_booked' AS event_type, event_time AS booked_at,
                    start_at AS slot_start_at FROM (VALUES
                ('ba', 'ca', 'contact_a', '2026-03-02 10:00:00+00', '2026-03-04 10:00:00+00'),
                ('bb', 'cb', 'contact_b', '2026-03-02 10:00:00+00', '2026-03-04 10:00:00+00')
             ) AS v(event_id, call_id, invitee_preview_id, event_time, start_at)",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type, event_time AS deal_created_at FROM (VALUES
                ('oa', 10, 1, 'SALE', 1000.0, '2026-03-04 10:00:00+00', '2026-03-04 11:00:00+00'),
                ('ob', 20, 2, 'SALE', 500.0, '2026-03-04 10:00:00+00', '2026-03-04 11:00:00+00'),
                ('oc', 30, 3, 'SALE', 700.0, '2026-03-04 10:00:00+00', '2026-03-04 11:00:00+00')
             ) AS v(event_id, outcome_id, contact_id, outcome, deal_value, call_start_at, event_time)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "funnel", &[]);
    assert_rows(
        "funnel",
        &rows,
        &[
            json!({"source": "facebook", "campaign": "spring", "leads": 4, "qualified": 4,
                 "disqualified": 0, "booked": 3, "held": 3, "no_shows": 0, "won": 3,
                 "revenue": 2200.0, "qualified_pct": 100.0, "booked_pct": 75.0,
                 "held_pct": 100.0, "won_pct": 100.0}),
        ],
        0.0,
    );
}

#[test]
fn time_to_stage_counts_every_booking_and_times_the_first_calls_outcome() {
    // e: booked a call without ever being QUALIFIED: booked counts it.
    // f: qualified at 01:00, booked call f1 at 10:00 on 2 March (slot 8 March), then call f2
    // (slot 5 March); each call has an outcome at its slot (no deal). From the first booking to
    // its own call's outcome is 144 h, not the 72 h to f2's earlier one.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT * FROM (VALUES
                ('e0', 1, 'contact_e', 'POTENTIAL', '2026-03-02 00:00:00+00'),
                ('f0', 2, 'contact_f', 'POTENTIAL', '2026-03-02 00:00:00+00'),
                ('f1', 2, 'contact_f', 'QUALIFIED', '2026-03-02 01:00:00+00')
             ) AS v(event_id, contact_id, preview_id, status, event_time)",
        ),
        (
            "call_events",
            "SELECT *, 'call_booked' AS event_type, event_time AS booked_at,
                    start_at AS slot_start_at FROM (VALUES
                ('be', 'ce', 'contact_e', '2026-03-02 10:00:00+00', '2026-03-04 10:00:00+00'),
                ('bf1', 'f1', 'contact_f', '2026-03-02 10:00:00+00', '2026-03-08 10:00:00+00'),
                ('bf2', 'f2', 'contact_f', '2026-03-03 10:00:00+00', '2026-03-05 10:00:00+00')
             ) AS v(event_id, call_id, invitee_preview_id, event_time, start_at)",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type, 2 AS contact_id, 'NO_SALE' AS outcome FROM (VALUES
                ('of1', 21, '2026-03-08 10:00:00+00', '2026-03-08 12:00:00+00'),
                ('of2', 22, '2026-03-05 10:00:00+00', '2026-03-05 12:00:00+00')
             ) AS v(event_id, outcome_id, call_start_at, event_time)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "time_to_stage", &[]);
    assert_rows(
        "time_to_stage",
        &rows,
        &[
            json!({"week": "2026-03-02", "leads": 2, "qualified": 1, "qualify_median_h": 1.0,
                 "qualify_p90_h": 1.0, "booked": 2, "book_median_h": 9.0, "book_p90_h": 9.0,
                 "with_outcome": 1, "outcome_median_h": 144.0, "outcome_p90_h": 144.0}),
        ],
        0.0,
    );
}

#[test]
fn the_outcome_version_received_last_wins() {
    // Outcome 77 first came without a deal (timed at its receipt, 10 March), then a newer
    // version with a deal created on 9 March (timed at the deal, so earlier): the newer one
    // counts, a win of 2000.
    let lake = hand_made_lake(&[
        (
            "contact_events",
            "SELECT 'e1' AS event_id, 1 AS contact_id, 'linkedin' AS utm_source, 'spring' AS utm_campaign,
                    TIMESTAMPTZ '2026-03-02 00:00:00+00' AS event_time",
        ),
        (
            "call_outcomes",
            "SELECT *, 'call_outcome' AS event_type, 77 AS outcome_id, 1 AS contact_id FROM (VALUES
                ('v1', 'NO_SALE', NULL, NULL, '2026-03-10 12:00:00+00', '2026-03-10 12:00:00+00'),
                ('v2', 'SALE', 2000.0, '2026-03-09 16:00:00+00', '2026-03-09 16:00:00+00', '2026-03-11 09:00:00+00')
             ) AS v(event_id, outcome, deal_value, deal_created_at, event_time, received_at)",
        ),
    ]);
    let rows = hooklake_query(lake.path(), "attribution", &[]);
    let columns = ["utm_source", "utm_campaign", "first_won", "first_revenue"];
    assert_rows(
        "attribution",
        &project(&rows, &columns),
        &[
            json!({"utm_source": "linkedin", "utm_campaign": "spring", "first_won": 1, "first_revenue": 2000.0}),
        ],
        0.0,
    );
}

#[test]
fn filters_select_contacts_by_first_day_source_and_account() {
    let world = &shared().world;
    let dir = shared().dir.path();
    let first_day = |l: &Lead| l.snapshots.iter().map(|s| s.at).min().unwrap().date_naive();
    let (from, to) = (
        chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 3, 11).unwrap(),
    );
    let in_period = |l: &&Lead| (from..=to).contains(&first_day(l));
    let period = [
        "--set",
        "from_date=2026-03-05",
        "--set",
        "to_date=2026-03-11",
    ];
    let totals = |extra: &[&str]| {
        let args: Vec<&str> = [extra, &["--set", "totals=true"]].concat();
        let rows = hooklake_query(dir, "funnel", &args);
        // One row, or none when no contact is selected.
        assert!(rows.len() <= 1, "{rows:?}");
        rows.first()
            .map_or(0, |r| r["leads"].as_u64().unwrap() as usize)
    };
    let booked = |extra: &[&str]| {
        let rows = hooklake_query(dir, "show_rate", extra);
        let all = rows
            .iter()
            .find(|r| r["host"] == "(all)" && r["campaign"] == "(all)")
            .cloned();
        all.map_or(0, |r| r["booked"].as_u64().unwrap() as usize)
    };
    assert_eq!(totals(&[]), world.leads.len(), "no filter: every contact");
    let expected: Vec<&Lead> = world.leads.iter().filter(in_period).collect();
    assert!(!expected.is_empty() && expected.len() < world.leads.len());
    assert_eq!(totals(&period), expected.len(), "first seen in the period");
    assert_eq!(
        booked(&period),
        expected.iter().filter(|l| l.call.is_some()).count(),
        "only the period's contacts' calls"
    );
    let google: Vec<&&Lead> = expected
        .iter()
        .filter(|l| l.first_source == "google")
        .collect();
    assert!(!google.is_empty());
    assert_eq!(
        totals(&[&period[..], &["--set", "source=google"]].concat()),
        google.len()
    );
    // Every generated contact belongs to account 622.
    assert_eq!(totals(&["--set", "account_id=622"]), world.leads.len());
    assert_eq!(totals(&["--set", "account_id=623"]), 0);
    assert_eq!(booked(&["--set", "account_id=623"]), 0);
    // The per-day queries keep the period's days.
    let days = hooklake_query(dir, "daily_engagement", &period);
    assert_eq!(days.len(), 7, "{days:?}");
    assert!(days.iter().all(|d| {
        let date = d["date"].as_str().unwrap();
        ("2026-03-05"..="2026-03-11").contains(&date)
    }));
}
