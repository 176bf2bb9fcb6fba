//! The engagement report: `hooklake report` on a generated lake, `GET /report` (auth, bad
//! parameters, reuse until the next flush), and the page in a real browser (headless Chromium):
//! no console message, no request beyond the page, a drawn mark in every chart, and headline
//! and funnel numbers equal to what `hooklake query` returns for the same filters.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use hooklake::generate::{Lead, Options, leads};
use serde_json::Value;

use crate::util::{Lake, hooklake_command, hooklake_query};

/// The period every test reports on, and the one before it.
const FROM: &str = "2026-03-08";
const TO: &str = "2026-03-17";

/// A lake built as a user builds one: `hooklake gen` then `hooklake replay`.
struct Shared {
    dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.ndjson");
        let generated = hooklake_command()
            .args([
                "gen",
                "--contacts",
                "500",
                "--days",
                "20",
                "--seed",
                "5",
                "--out",
            ])
            .arg(&events)
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "{}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let replay = hooklake_command()
            .arg("--data-dir")
            .arg(dir.path().join("lake"))
            .arg("replay")
            .arg(&events)
            .env("HOOKLAKE_LOG", "warn")
            // Small flushes: a lead whose deliveries span two of them is scored twice, so lead
            // scores move and the top movers have rows.
            .env("HOOKLAKE_REPLAY_FLUSH_MAX_ROWS", "100")
            .output()
            .unwrap();
        assert!(
            replay.status.success(),
            "{}",
            String::from_utf8_lossy(&replay.stderr)
        );
        Shared { dir }
    })
}

fn lake() -> PathBuf {
    shared().dir.path().join("lake")
}

/// Runs `hooklake report` on the shared lake with `args`; returns the page.
fn report(args: &[&str]) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let run = hooklake_command()
        .args(["report", "--data"])
        .arg(lake())
        .arg("--out")
        .arg(out.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// `hooklake query NAME` with the report's filters as `--set` variables.
fn query(name: &str, from: &str, to: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--set".to_string(), format!("from_date={from}")];
    args.extend(["--set".to_string(), format!("to_date={to}")]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hooklake_query(&lake(), name, &args)
}

/// The text from the end of the tag holding `marker` to the next `</tag>` in `html`.
fn text_after<'a>(html: &'a str, marker: &str, tag: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page"));
    let start = at + html[at..].find('>').unwrap() + 1;
    let end = start + html[start..].find(&format!("</{tag}>")).unwrap();
    html[start..end].trim()
}

/// A count as the page writes it ("1,234") back to a number.
fn number(text: &str) -> f64 {
    text.trim_end_matches('%')
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// The page of one panel (`data-panel="key"`), up to the next panel.
fn panel<'a>(html: &'a str, key: &str) -> &'a str {
    let start = html
        .find(&format!("data-panel=\"{key}\""))
        .unwrap_or_else(|| panic!("panel {key} missing"));
    let end = html[start..]
        .find("</figure>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// The rows of the table of a panel, as cell texts.
fn table_rows(panel: &str) -> Vec<Vec<String>> {
    let body = &panel[panel.find("<tbody>").unwrap()..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|cell| cell[..cell.find("</td>").unwrap()].trim().to_string())
                .collect()
        })
        .collect()
}

/// Checks the headline figures and the funnel of `html` against `hooklake query` for the
/// period `from`..`to` (and the same-length period before it).
fn check_numbers(html: &str, from: &str, to: &str, previous: (&str, &str), extra: &[&str]) {
    let totals: Vec<&str> = [extra, &["--set", "totals=true"]].concat();
    let funnel = query("funnel", from, to, &totals);
    assert_eq!(funnel.len(), 1, "{funnel:?}");
    let f = &funnel[0];
    let calls = query("show_rate", from, to, extra);
    let all = calls
        .iter()
        .find(|r| r["host"] == "(all)" && r["campaign"] == "(all)")
        .unwrap();
    let value = |key: &str| {
        let block = &html[html.find(&format!("data-figure=\"{key}\"")).unwrap()..];
        number(text_after(block, "class=\"value\"", "div"))
    };
    for (key, expected) in [
        ("leads", &f["leads"]),
        ("qualified", &f["qualified"]),
        ("won", &f["won"]),
        ("revenue", &f["revenue"]),
        ("calls_booked", &all["booked"]),
        ("show_rate", &all["show_rate_pct"]),
    ] {
        assert_eq!(value(key), expected.as_f64().unwrap(), "headline {key}");
    }
    assert!(f["leads"].as_f64().unwrap() > 0.0, "the period has leads");
    // The previous period's figure is shown beside each change.
    let before = query("funnel", previous.0, previous.1, &totals);
    let block = &html[html.find("data-figure=\"leads\"").unwrap()..];
    let shown = text_after(block, "class=\"change", "div");
    let expected = hooklake::report::count(before[0]["leads"].as_f64().unwrap());
    assert!(shown.contains(&format!("(before: {expected})")), "{shown}");
    // The funnel: each stage's count and its rate from the stage before.
    let rows = table_rows(panel(html, "funnel"));
    let stages = [
        ("leads", None),
        ("qualified", Some("qualified_pct")),
        ("booked", Some("booked_pct")),
        ("held", Some("held_pct")),
        ("won", Some("won_pct")),
    ];
    assert_eq!(rows.len(), stages.len());
    for (row, (count, rate)) in rows.iter().zip(stages) {
        assert_eq!(
            number(&row[1]),
            f[count].as_f64().unwrap(),
            "funnel {count}"
        );
        if let Some(rate) = rate {
            assert_eq!(number(&row[2]), f[rate].as_f64().unwrap(), "funnel {rate}");
        }
    }
}

#[test]
fn the_report_command_writes_one_page_whose_numbers_are_the_queries() {
    let html = report(&["--from", FROM, "--to", TO]);
    check_numbers(&html, FROM, TO, ("2026-02-26", "2026-03-07"), &[]);
    // Self-contained: no script, no link or source pointing anywhere.
    for needle in ["<script", "src=", "href=\"http", "url("] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
    assert_eq!(html.matches("<svg").count(), 11, "every chart is drawn");
    assert!(!html.contains("No data for this period"));
    // Section 8: the lead scores' distribution and top movers, as the queries give them.
    let distribution = query("score_distribution", FROM, TO, &[]);
    let rows = table_rows(panel(&html, "score_distribution"));
    assert!(!distribution.is_empty());
    assert_eq!(rows.len(), distribution.len());
    for (row, d) in rows.iter().zip(&distribution) {
        let from = d["score_from"].as_i64().unwrap();
        assert_eq!(row[0], format!("{from}-{}", from + 9));
        assert_eq!(row[1], d["band"].as_str().unwrap());
        assert_eq!(number(&row[2]), d["contacts"].as_f64().unwrap());
    }
    let movers = query("score_movers", FROM, TO, &[]);
    let rows = table_rows(panel(&html, "score_movers"));
    assert!(!movers.is_empty());
    assert_eq!(rows.len(), movers.len());
    for (row, m) in rows.iter().zip(&movers) {
        assert_eq!(row[0], m["contact_id"].to_string());
        assert_eq!(number(&row[4]), m["change"].as_f64().unwrap());
    }
    assert!(
        html.contains("first seen from <strong>2026-03-08</strong> to <strong>2026-03-17</strong>")
    );
}

#[test]
fn a_source_filter_narrows_every_number_to_that_source() {
    let html = report(&["--from", FROM, "--to", TO, "--source", "google"]);
    check_numbers(
        &html,
        FROM,
        TO,
        ("2026-02-26", "2026-03-07"),
        &["--set", "source=google"],
    );
    let all = report(&["--from", FROM, "--to", TO]);
    let leads = |html: &str| {
        let block = &html[html.find("data-figure=\"leads\"").unwrap()..];
        number(text_after(block, "class=\"value\"", "div"))
    };
    assert!(
        leads(&html) < leads(&all),
        "google is one source of several"
    );
    let sources = table_rows(panel(&html, "attribution_utm_source"));
    assert!(
        sources
            .iter()
            .any(|r| r[0] == "google" && number(&r[1]) == leads(&html))
    );
}

#[test]
fn a_period_without_data_says_so_in_every_panel() {
    let html = report(&["--from", "2030-01-01", "--to", "2030-01-31"]);
    // Every panel, the lead scores' too (the lake has scores, not in that period).
    assert_eq!(html.matches("No data for this period").count(), 11);
    assert!(!html.contains("<svg"));
    let block = &html[html.find("data-figure=\"leads\"").unwrap()..];
    assert_eq!(text_after(block, "class=\"value\"", "div"), "0");
}

#[test]
fn bad_report_arguments_are_clear_errors() {
    let run = hooklake_command()
        .args(["report", "--data"])
        .arg(lake())
        .args([
            "--from",
            "2026-03-10",
            "--to",
            "2026-03-01",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("from (2026-03-10) is after to (2026-03-01)"),
        "{err}"
    );
}

/// A lake fed over HTTP with the first `n` leads of a generated set, flushed.
async fn served_lake(lake: &Lake, all: &[Lead], token: Option<&str>) {
    let events: Vec<Value> = all
        .iter()
        .flat_map(|l| &l.deliveries)
        .map(|d| d.payload.clone())
        .collect();
    for chunk in events.chunks(200) {
        lake.post_events(chunk).await;
    }
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri("/admin/flush");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let r = crate::util::send(
        &lake.router,
        request.body(axum::body::Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn get(lake: &Lake, path: &str, token: Option<&str>) -> crate::util::Response {
    let mut request = axum::http::Request::builder().method("GET").uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    crate::util::send(
        &lake.router,
        request.body(axum::body::Body::empty()).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_report_is_reused_until_the_next_flush_and_refuses_bad_parameters() {
    let all: Vec<Lead> = leads(Options {
        contacts: 60,
        seed: 2,
        days: 5,
    })
    .collect();
    let lake = Lake::new();
    served_lake(&lake, &all[..40], None).await;
    let path = "/report?from=2026-03-01&to=2026-03-07";
    let first = get(&lake, path, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(first.headers["x-report-cache"], "miss");
    let again = get(&lake, path, None).await;
    assert_eq!(again.headers["x-report-cache"], "hit");
    assert_eq!(again.body, first.body, "the same page");
    // Two requests at once for a new page: one renders it, the other waits and reuses it.
    let path2 = "/report?from=2026-03-02&to=2026-03-07";
    let (a, b) = tokio::join!(get(&lake, path2, None), get(&lake, path2, None));
    let mut caches = [&a.headers["x-report-cache"], &b.headers["x-report-cache"]];
    caches.sort();
    assert_eq!(caches, ["hit", "miss"], "one rendering at a time");
    assert_eq!(a.body, b.body);
    // Other filters are another page.
    let other = get(
        &lake,
        "/report?from=2026-03-01&to=2026-03-07&source=google",
        None,
    )
    .await;
    assert_eq!(other.headers["x-report-cache"], "miss");
    assert!(
        other
            .body
            .contains("first-touch source <strong>google</strong>")
    );
    // A flush that wrote something makes the next request render again, with the new leads.
    served_lake(&lake, &all[40..], None).await;
    let after = get(&lake, path, None).await;
    assert_eq!(after.headers["x-report-cache"], "miss");
    let leads = |html: &str| {
        let block = &html[html.find("data-figure=\"leads\"").unwrap()..];
        number(text_after(block, "class=\"value\"", "div"))
    };
    assert_eq!(leads(&first.body), 40.0);
    assert_eq!(leads(&after.body), 60.0);

    for (query, message) in [
        ("from=2026-02-30", "from must be a date YYYY-MM-DD"),
        ("to=soon", "to must be a date"),
        ("account=acme", "account must be an integer"),
        ("from=2026-03-09&to=2026-03-01", "is after"),
        ("colour=red", "unknown parameter \\\"colour\\\""),
        ("source=%zz", "bad percent-encoding"),
    ] {
        let r = get(&lake, &format!("/report?{query}"), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert_eq!(r.headers["content-type"], "application/json", "{query}");
        assert!(r.body.contains(message), "{query}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_report_needs_the_admin_token_when_one_is_set() {
    let lake = Lake::with(|c| c.admin_token = Some("s3cret".to_string()));
    let r = get(&lake, "/report", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("admin token"), "{}", r.body);
    let r = get(&lake, "/report", Some("wrong")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = get(&lake, "/report", Some("s3cret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body.matches("No data for this period").count(),
        9,
        "an empty lake"
    );
}

/// What a page did in the browser: its DOM after loading, the console messages logged and
/// the requests it made.
struct Visit {
    dom: String,
    console: Vec<String>,
    requests: Vec<String>,
}

/// Loads `page` in headless Chromium, served at `http://127.0.0.1:PORT/page.html` by a server
/// of this test that is also the browser's proxy for every URL, loopback included.
///
/// Every request the browser makes, to any host, reaches this server (https ones as CONNECT).
/// The page's own requests carry a `Referer` naming it; Chromium's background requests (its
/// updater, clock and account services, which the flags below reduce but do not stop) carry
/// none, and are left out. The page is served only to the request without a referrer; any
/// request with one is recorded and answered 404. Console messages are read from Chromium's
/// log on stderr (`--enable-logging=stderr --v=0`), where each is an `INFO:CONSOLE` line.
fn visit(page: &str) -> Visit {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = requests.clone();
    let page = page.to_string();
    let server = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let head = read_head(&stream);
            if head.starts_with("STOP") {
                break;
            }
            let from_page = head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("referer:"));
            let first = head.lines().next().unwrap_or_default().to_string();
            let response = if !from_page && first.contains("/page.html ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
            } else {
                if from_page {
                    recorded.lock().unwrap().push(first);
                }
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let out = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://127.0.0.1:{port}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .arg("--dump-dom")
        .arg(format!("http://127.0.0.1:{port}/page.html"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {chromium} ({e}); scripts/test.sh installs Debian's chromium")
        });
    let _ = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| s.write_all(b"STOP\r\n\r\n"));
    server.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let requests = requests.lock().unwrap().clone();
    Visit {
        dom: String::from_utf8(out.stdout).unwrap(),
        console,
        requests,
    }
}

/// Reads a request's head (up to the blank line).
fn read_head(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push_str(&line),
        }
    }
    head
}

#[test]
fn in_a_browser_the_page_loads_nothing_logs_nothing_and_shows_the_queries_numbers() {
    // The detector first: a page with a console error and a request of its own is caught.
    let control = visit(
        "<!doctype html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>\
         <img src=\"pic.png\"><script>console.error('control')</script></body></html>",
    );
    assert!(
        control.console.iter().any(|l| l.contains("control")),
        "{:?}",
        control.console
    );
    assert!(
        control.requests.iter().any(|r| r.contains("/pic.png")),
        "{:?}",
        control.requests
    );

    let html = report(&["--from", FROM, "--to", TO]);
    let seen = visit(&html);
    assert!(seen.console.is_empty(), "console: {:?}", seen.console);
    assert!(seen.requests.is_empty(), "requests: {:?}", seen.requests);
    let dom = &seen.dom;
    // Every chart has drawn marks: bars (beyond the background) or points of a line.
    let charts: Vec<&str> = dom.split("<figure class=\"panel\"").skip(1).collect();
    assert_eq!(charts.len(), 11);
    for chart in &charts {
        let end = chart.find("</svg>").expect("a chart");
        let svg = &chart[..end];
        let marks = svg.matches("<rect").count().saturating_sub(1) + svg.matches("<circle").count();
        assert!(marks >= 2, "a chart without marks: {}", &chart[..200]);
    }
    check_numbers(dom, FROM, TO, ("2026-02-26", "2026-03-07"), &[]);
}
