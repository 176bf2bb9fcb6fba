//! `hooklake rebuild` recomputes the same rows the live pipeline wrote, on a generated data set.

use crate::util::{Lake, duckdb, scan};

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

/// [`differences`] of each contact's current lead score (its row of highest revision).
fn current_score_differences(a: &std::path::Path, b: &std::path::Path) -> (i64, i64, i64) {
    let current = |dir| {
        format!(
            "(select contact_id, score, band, points, reasons from {} \
              qualify row_number() over (partition by contact_id order by revision desc) = 1)",
            scan(dir, "lead_scores")
        )
    };
    let (sa, sb) = (current(a), current(b));
    let rows = duckdb(&format!(
        "select (select count(*) from (select * from {sa} except all select * from {sb})) as a_only, \
                (select count(*) from (select * from {sb} except all select * from {sa})) as b_only, \
                (select count(*) from {sa}) as n"
    ));
    let get = |k: &str| rows[0][k].as_i64().unwrap();
    (get("a_only"), get("b_only"), get("n"))
}

use hooklake::flatten::TABLE_NAMES as TABLES;

fn hooklake(args: &[&std::ffi::OsStr]) -> String {
    let out = crate::util::hooklake_command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn rebuild_equals_the_live_output_on_a_generated_data_set() {
    let events = hooklake::generate::in_time_order(hooklake::generate::Options {
        contacts: 700,
        seed: 7,
        days: 4,
    });
    assert!(events.len() > 3000, "{} events", events.len());
    // A trigger on every status: its facts wait in the outbox (nothing sends them here), and a
    // rebuild carries them over rather than making them again.
    let lake = Lake::with(|c| {
        c.triggers = toml::from_str::<hooklake::config::Config>(
            "[[triggers]]\nname = \"any-status\"\non = \"status\"\nurl = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap()
        .triggers;
    });
    for (i, chunk) in events.chunks(20).enumerate() {
        lake.post_events(chunk).await;
        if i % 40 == 39 {
            lake.flush().await;
        }
        if i % 50 == 0 {
            // A dead letter now and then: rebuild carries rejected_events over as they are.
            let r = lake
                .post("/webhooks/iclosed", format!("[{{\"broken\": {i}"))
                .await;
            assert_eq!(r.status, 400, "{}", r.body);
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
    // No trigger delivery was attempted: trigger_deliveries has no rows to compare.
    let tables = || TABLES.into_iter().filter(|t| *t != "trigger_deliveries");
    for table in tables() {
        // A lead_scores row is written per flush in which a score changed, so its history
        // follows the flush sizes; the current scores do not.
        let (live_only, rebuilt_only, n) = if table == "lead_scores" {
            current_score_differences(live.path(), &rebuilt)
        } else {
            differences(live.path(), &rebuilt, table)
        };
        assert_eq!((live_only, rebuilt_only), (0, 0), "{table}: rows differ");
        assert!(
            n > 0,
            "{table} is empty: the generator should fill every table"
        );
    }
    let outbox = |dir: &std::path::Path| {
        let mut entries = hooklake::state::Store::open(&dir.join("_hooklake/state.redb"))
            .unwrap()
            .outbox_entries()
            .unwrap();
        entries.sort_by(|a, b| a.fact.webhook_id.cmp(&b.fact.webhook_id));
        entries
    };
    let waiting = outbox(live.path());
    assert!(!waiting.is_empty());
    assert_eq!(
        outbox(&rebuilt),
        waiting,
        "the outbox is carried over as it was"
    );
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
    for table in tables() {
        let (a, b, _) = differences(&moved, &rebuilt, table);
        assert_eq!(
            (a, b),
            (0, 0),
            "{table}: the data directory now holds the rebuilt rows"
        );
        let kept = std::path::Path::new(kept);
        let (a, b, _) = if table == "lead_scores" {
            current_score_differences(kept, &rebuilt)
        } else {
            differences(kept, &rebuilt, table)
        };
        assert_eq!((a, b), (0, 0), "{table}: the previous contents are kept");
    }
}

#[tokio::test]
async fn events_a_killed_server_left_in_its_log_are_in_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::util::Server::start(dir.path());
    let (status, _) = server
        .post(&crate::util::fixture("contact_created.json"))
        .await;
    assert_eq!(status, 200);
    let flush = server.hooklake(&["flush", "--url", &server.base]);
    assert!(flush.status.success());
    // Acknowledged, in the log, not in any table yet.
    let (status, _) = server
        .post(&crate::util::fixture("call_scheduled.json"))
        .await;
    assert_eq!(status, 200);
    server.kill();
    let out = hooklake(&[
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
        "rebuild".as_ref(),
    ]);
    assert!(
        out.contains("events left in the log, written to the source first: 1"),
        "{out}"
    );
    let types = duckdb(&format!(
        "select string_agg(event_type, ',' order by event_type) as t from {}",
        scan(dir.path(), "raw_events")
    ));
    assert_eq!(types[0]["t"], "call_booked,contact_created");
    // And the set-aside contents have it too: nothing was left only in a log.
    let previous = out
        .lines()
        .find_map(|l| l.strip_prefix("previous contents kept at: "))
        .expect("an in-place rebuild keeps the previous contents");
    let n = duckdb(&format!(
        "select count(*) as n from {}",
        scan(std::path::Path::new(previous), "raw_events")
    ));
    assert_eq!(n[0]["n"], 2);
}
