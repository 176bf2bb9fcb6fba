//! The repository as a new user meets it: the README's first example runs as written against
//! the real binary, and nothing in the repository refers to a path outside it.
//!
//! The example is read from README.md itself (the first fenced shell block that uses curl), and
//! each of its lines is carried out: start the server, wait until it is ready, post the sample
//! payload with the method, headers and file the curl line names, compare the answer with the
//! one the README shows, flush, and read the table back with the DuckDB query as written. A line
//! this test does not know how to run fails it, so the example cannot drift from what runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::util::{Server, hooklake_command, json_rows};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The logical lines (continuations joined) of the first fenced shell block that runs curl.
fn first_example(readme: &str) -> Vec<String> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match current.as_mut() {
            None => {
                if let Some(info) = line.strip_prefix("```")
                    && matches!(info.trim(), "sh" | "bash" | "shell")
                {
                    current = Some(Vec::new());
                }
            }
            Some(block) if line.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => block.push(line),
        }
    }
    let block = blocks
        .into_iter()
        .find(|b| b.iter().any(|l| l.trim_start().starts_with("curl ")))
        .expect("README.md has no shell block that posts with curl");
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in block {
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(pending.is_empty(), "the block ends in a continuation");
    lines
}

/// Splits a command line into words as a POSIX shell does for simple commands: single and
/// double quotes, backslash escapes, a `#` comment, and `;` and `&` as words of their own.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    fn end_word(word: &mut String, in_word: &mut bool, words: &mut Vec<String>) {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => panic!("unterminated single quote in {line}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            word.push(chars.next().unwrap());
                        }
                        Some('$' | '`') => panic!("an expansion in {line}: not supported here"),
                        Some(c) => word.push(c),
                        None => panic!("unterminated double quote in {line}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            ';' | '&' => {
                end_word(&mut word, &mut in_word, &mut words);
                words.push(c.to_string());
            }
            c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut words),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut words);
    words
}

/// A curl invocation, with what curl itself would send.
#[derive(Debug)]
struct Curl {
    method: String,
    /// `host:port` as written.
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The file a `-d @file` read, relative to the repository.
    file: Option<String>,
}

fn curl(words: &[String]) -> Curl {
    assert_eq!(words[0], "curl");
    let mut method = None;
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = None;
    let mut file = None;
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("curl {arg} needs a value"))
                .clone()
        };
        match arg.as_str() {
            "-s" | "-f" | "-sf" | "-fs" | "--silent" | "--fail" => {}
            "-X" | "--request" => method = Some(value()),
            "-H" | "--header" => {
                let header = value();
                let (name, v) = header
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header {header} has no colon"));
                headers.push((name.trim().to_string(), v.trim().to_string()));
            }
            "-d" | "--data" => {
                let data = value();
                body = Some(match data.strip_prefix('@') {
                    Some(name) => {
                        let text = std::fs::read(repo().join(name))
                            .unwrap_or_else(|e| panic!("curl -d @{name}: {e}"));
                        file = Some(name.to_string());
                        // curl -d drops carriage returns and newlines from a file it reads.
                        text.into_iter()
                            .filter(|b| !matches!(b, b'\r' | b'\n'))
                            .collect()
                    }
                    None => data.into_bytes(),
                });
            }
            option if option.starts_with('-') => panic!("curl option {option} is not supported"),
            _ => {
                assert!(url.is_none(), "two URLs in {words:?}");
                url = Some(arg.clone());
            }
        }
    }
    let url = url.expect("curl without a URL");
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if body.is_some()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        // What curl sends with -d unless told otherwise.
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    Curl {
        method: method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into()),
        authority: authority.to_string(),
        path: if path.is_empty() { "/" } else { path }.to_string(),
        headers,
        body: body.unwrap_or_default(),
        file,
    }
}

/// Sends what `curl` describes to the server at `addr` instead of the address written.
async fn send(addr: &str, curl: &Curl) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = axum::http::Request::builder()
        .method(curl.method.as_str())
        .uri(curl.path.as_str())
        .header("host", addr);
    for (name, value) in &curl.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(curl.body.clone())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Whether `actual` has the form of `expected`, where the string "…" stands for any string.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(_)) if e == "…" => true,
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, e)| a.get(k).is_some_and(|a| matches(e, a)))
        }
        (e, a) => e == a,
    }
}

/// The port of the default listen address, which the README's URLs must use.
fn default_port() -> &'static str {
    hooklake::config::DEFAULT_LISTEN.rsplit_once(':').unwrap().1
}

#[tokio::test]
async fn the_readme_example_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut server: Option<Server> = None;
    let mut last_answer: Option<(u16, String)> = None;
    // Contacts posted, by status, to compare with what DuckDB reads back.
    let mut posted: BTreeMap<String, i64> = BTreeMap::new();
    let (mut flushed, mut queried, mut answers_checked) = (false, false, 0);
    for line in first_example(&readme) {
        let trimmed = line.trim();
        if let Some(shown) = trimmed.strip_prefix("# ").filter(|s| s.starts_with('{')) {
            let expected: Value = serde_json::from_str(shown).unwrap_or_else(|e| {
                panic!("the answer the README shows is not JSON ({e}): {shown}")
            });
            let (status, body) = last_answer.take().expect("an answer shown with no request");
            assert_eq!(status, 200, "{body}");
            let actual: Value = serde_json::from_str(&body).unwrap();
            assert!(
                matches(&expected, &actual),
                "the README shows {expected}, the server answered {actual}"
            );
            answers_checked += 1;
            continue;
        }
        let words = shell_words(&line);
        let Some(first) = words.first() else {
            continue;
        };
        match first.as_str() {
            "cargo" => {
                assert_eq!(words[..4], ["cargo", "run", "--release", "--"], "{line}");
                let mut args: Vec<&str> = words[4..].iter().map(String::as_str).collect();
                if args.last() == Some(&"&") {
                    args.pop();
                    assert_eq!(
                        args.first(),
                        Some(&"serve"),
                        "only the server runs in the background"
                    );
                    assert!(server.is_none(), "a second server");
                    server = Some(Server::start_in(cwd.path(), &args));
                    continue;
                }
                assert_ne!(
                    args.first(),
                    Some(&"serve"),
                    "a server in the foreground: {line}"
                );
                let base = &server.as_ref().expect("a command before the server").base;
                if args.first() == Some(&"flush") {
                    // The server listens on a free port rather than the default one.
                    args.extend(["--url", base]);
                    flushed = true;
                }
                let out = hooklake_command()
                    .current_dir(cwd.path())
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{line}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "until" => {
                let end = words
                    .iter()
                    .position(|w| w == ";")
                    .expect("until without do");
                assert_eq!(
                    words[end..],
                    [";", "do", "sleep", "1", ";", "done"],
                    "{line}"
                );
                let probe = curl(&words[1..end]);
                assert_eq!(probe.authority, format!("localhost:{}", default_port()));
                let addr = server.as_ref().expect("waiting for no server").base[7..].to_string();
                let deadline = Instant::now() + Duration::from_secs(30);
                while send(&addr, &probe).await.0 != 200 {
                    assert!(
                        Instant::now() < deadline,
                        "{} never answered 200",
                        probe.path
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            "curl" => {
                let request = curl(&words);
                assert_eq!(
                    request.authority,
                    format!("localhost:{}", default_port()),
                    "the example must post to the default listen address"
                );
                let file = request.file.as_deref().expect("the example posts a file");
                assert!(file.starts_with("examples/payloads/"), "{file}");
                let sent: Value = serde_json::from_slice(&request.body).unwrap();
                for object in sent
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![sent.clone()])
                {
                    if let Some(status) = object["status"].as_str() {
                        *posted.entry(status.to_string()).or_default() += 1;
                    }
                }
                let addr = &server.as_ref().expect("a post before the server").base[7..];
                last_answer = Some(send(addr, &request).await);
            }
            "pip" => assert_eq!(words, ["pip", "install", "duckdb-cli"], "{line}"),
            "duckdb" => {
                let out = Command::new("duckdb")
                    .current_dir(cwd.path())
                    .arg("-json")
                    .args(&words[1..])
                    .output()
                    .unwrap();
                let rows = json_rows(&line, &out);
                let read: BTreeMap<String, i64> = rows
                    .iter()
                    .map(|row| {
                        // A status and its count, whatever the columns are named.
                        let values: Vec<&Value> = row.as_object().unwrap().values().collect();
                        let status = values.iter().find_map(|v| v.as_str());
                        let count = values.iter().find_map(|v| v.as_i64());
                        match (values.len(), status, count) {
                            (2, Some(status), Some(count)) => (status.to_string(), count),
                            _ => panic!("not a status and a count: {row}"),
                        }
                    })
                    .collect();
                assert_eq!(read, posted, "DuckDB read back what was posted");
                queried = true;
            }
            "kill" => {
                assert_eq!(words, ["kill", "%1"], "{line}");
                let exit = server.take().expect("no server to stop").terminate();
                assert!(exit.success(), "the server exits 0 when stopped: {exit}");
            }
            _ => panic!("the README example has a line this test cannot run: {line}"),
        }
    }
    assert!(
        !posted.is_empty() && answers_checked == 1 && flushed && queried,
        "the example posts a contact, shows the answer, flushes and reads it back"
    );
    assert!(server.is_none(), "the example stops its server");
}

/// Runs the self-containment check on `dir`; returns its exit code and what it printed.
fn check(dir: &Path) -> (i32, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/check-self-contained.sh"))
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn nothing_in_the_repository_refers_to_a_path_outside_it() {
    let (code, found) = check(&repo());
    assert_eq!((code, found.as_str()), (0, ""));
}

#[test]
fn the_self_containment_check_names_every_reference_outside() {
    // Paths are assembled, so that this file does not refer outside the repository itself.
    let up = "..";
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("queries/views.sql", "select 1;\n");
    write(
        "docs/guide.md",
        &format!("See [the README]({up}/README.md).\n"),
    );
    write(
        "src/query.rs",
        &format!("const V: &str = include_str!(\"{up}/queries/views.sql\");\n"),
    );
    write(
        "scripts/run.sh",
        &format!("cd \"$(dirname \"$0\")/{up}/queries\"\n"),
    );
    write("README.md", "# A repository that stands alone\n");
    assert_eq!(check(dir.path()), (0, String::new()));

    write(
        "README.md",
        &format!("# Example\n\ncurl -d @{up}/elsewhere/contact.json localhost:8080\n"),
    );
    write(
        "src/flatten/mod.rs",
        &format!("// fine\nlet dir = root.join(\"{up}/{up}/{up}/payloads\");\n"),
    );
    write(
        "tests/util.rs",
        &format!("let d = root.join(\"{up}/payloads\");\n"),
    );
    write(
        "notes.txt",
        &format!("copied from {}/{}\n", "shared", "fixtures"),
    );
    write("blob.bin", &format!("\0\u{1}{up}/{up}/{up}/binary"));
    let (code, found) = check(dir.path());
    assert_eq!(code, 1, "{found}");
    let mut lines: Vec<&str> = found.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("README.md:3: {up}/elsewhere/contact.json climbs above the repository root"),
            "notes.txt:1: names the shared fixtures directory, which is not in the repository"
                .to_string(),
            format!(
                "src/flatten/mod.rs:2: {up}/{up}/{up}/payloads climbs above the repository root"
            ),
            format!("tests/util.rs:1: {up}/payloads climbs above the repository root"),
        ]
    );
}
