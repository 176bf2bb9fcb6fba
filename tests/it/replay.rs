//! `hooklake replay`: NDJSON, JSON arrays and stdin, with rejected lines reported.

use std::io::Write;
use std::process::Stdio;

use crate::util::{duckdb, fixture, fixture_object, fixtures_dir, scalar, scan};

fn replay(data_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let out = replay_output(crate::util::hooklake_command(), data_dir, args, stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `command` (hooklake, with its environment set) as `replay ARGS` into `data_dir`.
fn replay_output(
    mut command: std::process::Command,
    data_dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("replay")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn a_malformed_line_is_reported_and_the_rest_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.ndjson");
    let lines = [
        fixture_object("contact_created.json"),
        r#"{"id": 1, "previewId": "#.to_string(),
        String::new(),
        serde_json::to_string(
            &serde_json::from_str::<serde_json::Value>(&fixture("call_scheduled.json")).unwrap(),
        )
        .unwrap(),
        "42".to_string(),
        fixture_object("call_outcome.json"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let lake = dir.path().join("lake");
    let (code, summary) = replay(&lake, &[input.to_str().unwrap()], None);
    assert_eq!(code, 3, "some input rejected: {summary}");
    assert!(summary.contains("events accepted: 3"), "{summary}");
    assert!(summary.contains("rejected: 2"), "{summary}");
    assert!(
        summary.contains("export.ndjson:line 2: body is not valid JSON"),
        "{summary}"
    );
    assert!(
        summary.contains("export.ndjson:line 5: body is a JSON number"),
        "{summary}"
    );
    let rows = duckdb(&format!(
        "select event_type from {} order by event_type",
        scan(&lake, "raw_events")
    ));
    let types: Vec<&str> = rows
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["call_booked", "call_outcome", "contact_created"]
    );
    let source = duckdb(&format!(
        "select distinct source_path from {}",
        scan(&lake, "raw_events")
    ));
    assert_eq!(scalar(&source), format!("replay:{}", input.display()));
}

#[test]
fn pretty_printed_arrays_and_stdin_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let files: Vec<String> = ["contact_updated.json", "call_rescheduled.json"]
        .iter()
        .map(|n| fixtures_dir().join(n).display().to_string())
        .collect();
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.push("-");
    let (code, summary) = replay(&lake, &args, Some(&fixture("call_cancelled.json")));
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("events accepted: 3"), "{summary}");
    assert!(
        summary.contains("call_cancelled: 1") && summary.contains("contact_updated: 1"),
        "{summary}"
    );
    let n = duckdb(&format!(
        "select count(*) from {}",
        scan(&lake, "call_events")
    ));
    assert_eq!(scalar(&n), 2);
}

#[test]
fn a_broken_array_keeps_the_elements_before_the_break() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.json");
    let text = format!(
        "[\n{},\n7,\n{},\n{{\"id\": ",
        fixture_object("contact_created.json"),
        fixture_object("call_outcome.json")
    );
    std::fs::write(&input, text).unwrap();
    let lake = dir.path().join("lake");
    let (code, summary) = replay(&lake, &[input.to_str().unwrap()], None);
    assert_eq!(code, 3, "{summary}");
    assert!(summary.contains("events accepted: 2"), "{summary}");
    assert!(
        summary.contains("broken.json:element 1: not a JSON object"),
        "{summary}"
    );
    assert!(
        summary.contains("invalid JSON array, rest of file skipped"),
        "{summary}"
    );
    assert_eq!(
        scalar(&duckdb(&format!(
            "select count(*) from {}",
            scan(&lake, "raw_events")
        ))),
        2
    );
}

#[test]
fn a_broken_first_line_does_not_take_the_rest_of_the_file_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.ndjson");
    let lines = [
        r#"{"id": 1, "previewId": "cut off"#.to_string(),
        fixture_object("contact_created.json"),
        fixture_object("call_outcome.json"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let lake = dir.path().join("lake");
    let (code, summary) = replay(&lake, &[input.to_str().unwrap()], None);
    assert_eq!(code, 3, "{summary}");
    assert!(summary.contains("events accepted: 2"), "{summary}");
    assert!(
        summary.contains("export.ndjson:line 1: body is not valid JSON"),
        "{summary}"
    );
    // The second line broken too: still each line on its own, numbered as in the file.
    let input = dir.path().join("twice.ndjson");
    let lines = [
        r#"{"id": 2, "previewId": "cut"#.to_string(),
        r#"{"id": 3"#.to_string(),
        fixture_object("call_scheduled.json"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let (code, summary) = replay(&lake, &[input.to_str().unwrap()], None);
    assert_eq!(code, 3, "{summary}");
    assert!(summary.contains("events accepted: 1"), "{summary}");
    for line in [1, 2] {
        assert!(
            summary.contains(&format!("twice.ndjson:line {line}: body is not valid JSON")),
            "{summary}"
        );
    }
}

#[test]
fn arrays_one_after_the_other_are_all_read_and_anything_else_after_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let two = dir.path().join("two.json");
    std::fs::write(
        &two,
        format!(
            "[\n{}\n]\n[\n{}\n]\n",
            fixture_object("contact_created.json"),
            fixture_object("call_outcome.json")
        ),
    )
    .unwrap();
    let (code, summary) = replay(&lake, &[two.to_str().unwrap()], None);
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("events accepted: 2"), "{summary}");
    let junk = dir.path().join("junk.json");
    std::fs::write(
        &junk,
        format!(
            "[\n{}\n]\n{{\"id\": 3}}\n",
            fixture_object("call_scheduled.json")
        ),
    )
    .unwrap();
    let (code, summary) = replay(&lake, &[junk.to_str().unwrap()], None);
    assert_eq!(code, 3, "{summary}");
    assert!(summary.contains("events accepted: 1"), "{summary}");
    assert!(
        summary.contains("junk.json:line 4: invalid JSON array, rest of file skipped"),
        "{summary}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::util::hooklake_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["replay", "/nonexistent/export.ndjson"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/export.ndjson"));
}

#[test]
fn replaying_the_same_export_twice_writes_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let file = fixtures_dir()
        .join("contact_created.json")
        .display()
        .to_string();
    let (code, first) = replay(&lake, &[&file], None);
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("events accepted: 1"), "{first}");
    let (code, second) = replay(&lake, &[&file, &file], None);
    assert_eq!(code, 0, "{second}");
    assert!(
        second.contains("duplicates skipped: 2") && second.contains("events accepted: 0"),
        "{second}"
    );
    assert_eq!(
        scalar(&duckdb(&format!(
            "select count(*) from {}",
            scan(&lake, "contact_events")
        ))),
        1
    );
}

#[test]
fn replay_flushes_in_bounded_batches_and_keeps_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let input = dir.path().join("in.ndjson");
    let mut file = std::fs::File::create(&input).unwrap();
    let options = hooklake::generate::Options {
        contacts: 400,
        seed: 5,
        days: 3,
    };
    let lines = hooklake::generate::write_ndjson(options, &mut file).unwrap();
    drop(file);
    let out = crate::util::hooklake_command()
        .env("HOOKLAKE_REPLAY_FLUSH_MAX_ROWS", "500")
        .arg("--data-dir")
        .arg(&lake)
        .arg("replay")
        .arg(&input)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}");
    let distinct: i64 = hooklake::generate::in_time_order(options).len() as i64;
    assert!(lines as i64 > distinct, "the input has redeliveries");
    assert!(
        summary.contains(&format!("events accepted: {distinct}")),
        "{summary}"
    );
    let rows = duckdb(&format!(
        "select count(*) as n, count(distinct event_id) as ids, \
                count(distinct regexp_extract(filename, 'part-(\\d+)', 1)) as flushes \
         from read_parquet('{}/raw_events/date=*/*.parquet', filename = true)",
        lake.display()
    ));
    assert_eq!(rows[0]["n"], serde_json::json!(distinct));
    assert_eq!(rows[0]["ids"], serde_json::json!(distinct));
    let flushes = rows[0]["flushes"].as_i64().unwrap();
    assert!(
        flushes >= distinct / 500,
        "{flushes} flushes for {distinct} events"
    );
    // A redelivery leaves no row in any table: one row per event, or per event and position.
    for (table, key) in [
        ("contact_events", "event_id"),
        ("call_events", "event_id"),
        ("call_outcomes", "event_id"),
        ("tracking_params", "event_id, position"),
        ("contact_answers", "event_id, position"),
    ] {
        let counts = duckdb(&format!(
            "select count(*) as n, count(distinct ({key})) as distinct_rows \
             from read_parquet('{}/{table}/date=*/*.parquet')",
            lake.display()
        ));
        assert!(counts[0]["n"].as_i64().unwrap() > 0, "{table}: {counts:?}");
        assert_eq!(counts[0]["n"], counts[0]["distinct_rows"], "{table}");
    }
    // Each flush starts from the states the one before it committed (the reader runs ahead,
    // the flushes do not): a contact's history opens once, however many flushes it spans.
    let opened = duckdb(&format!(
        "select count(*) filter (where from_status is null) as opened, \
                count(distinct contact_id) as contacts, \
                count(distinct regexp_extract(filename, 'part-(\\d+)', 1)) as flushes \
         from read_parquet('{}/status_transitions/date=*/*.parquet', filename = true)",
        lake.display()
    ));
    assert_eq!(opened[0]["opened"], opened[0]["contacts"], "{opened:?}");
    assert!(opened[0]["flushes"].as_i64().unwrap() > 1, "{opened:?}");
}

#[test]
fn a_replay_killed_at_any_point_of_a_flush_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let options = hooklake::generate::Options {
        contacts: 150,
        seed: 9,
        days: 2,
    };
    let mut file = std::fs::File::create(&input).unwrap();
    hooklake::generate::write_ndjson(options, &mut file).unwrap();
    drop(file);
    let distinct = hooklake::generate::in_time_order(options).len() as i64;
    let run = |lake: &std::path::Path, crash_at: Option<&str>| {
        let mut command = crate::util::hooklake_command();
        command.env("HOOKLAKE_REPLAY_FLUSH_MAX_ROWS", "200");
        if let Some(point) = crash_at {
            command.env("HOOKLAKE_CRASH_AT", point);
        }
        command
            .arg("--data-dir")
            .arg(lake)
            .arg("replay")
            .arg(&input)
            .output()
            .unwrap()
    };
    // Each crash point is reached by the first flush, while the second batch is read or
    // flattened beside it.
    for point in [
        "flush-before-rename",
        "flush-between-renames",
        "flush-after-renames",
        "flush-after-commit",
    ] {
        let lake = dir.path().join(point);
        let crashed = run(&lake, Some(point));
        let stderr = String::from_utf8_lossy(&crashed.stderr);
        assert!(
            !crashed.status.success() && stderr.contains(&format!("HOOKLAKE_CRASH_AT={point}")),
            "{point}: the replay was not killed there: {stderr}"
        );
        let again = run(&lake, None);
        let summary = String::from_utf8_lossy(&again.stdout);
        assert!(again.status.success(), "{point}: {summary}");
        for table in ["raw_events", "contact_events"] {
            let rows = duckdb(&format!(
                "select count(*) - count(distinct event_id) as repeated from {}",
                scan(&lake, table)
            ));
            assert_eq!(
                rows[0]["repeated"],
                serde_json::json!(0),
                "{point}: {table}"
            );
        }
        assert_eq!(
            scalar(&duckdb(&format!(
                "select count(*) from {}",
                scan(&lake, "raw_events")
            ))),
            distinct,
            "{point}"
        );
        // The second run started from the states the first committed, or from none.
        let opened = duckdb(&format!(
            "select count(*) filter (where from_status is null) as opened, \
                    count(distinct contact_id) as contacts from {}",
            scan(&lake, "status_transitions")
        ));
        assert_eq!(
            opened[0]["opened"], opened[0]["contacts"],
            "{point}: {opened:?}"
        );
    }
}

/// Replay starts again with its allocator options (huge pages), reading its input once all
/// the same (stdin included), unless the user set the allocator's options.
#[test]
fn replay_runs_with_huge_pages_unless_the_allocator_options_are_set() {
    let body = fixture_object("contact_created.json");
    for (options, huge_pages) in [(None, true), (Some("narenas:1"), false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = crate::util::hooklake_command();
        command.env_remove(hooklake::memory::ALLOCATOR_OPTIONS);
        if let Some(options) = options {
            command.env(hooklake::memory::ALLOCATOR_OPTIONS, options);
        }
        command.env("HOOKLAKE_LOG", "debug");
        let out = replay_output(command, dir.path(), &["-"], Some(&body));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("events accepted: 1"), "{stdout}");
        assert!(
            stderr.contains(&format!("allocator huge_pages={huge_pages}")),
            "{options:?}: {stderr}"
        );
    }
}
