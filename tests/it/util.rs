//! Helpers shared by the integration tests: a lake in a temporary directory driven through the
//! router, fixtures, and DuckDB queries through the `duckdb` CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hooklake::config::Config;
use hooklake::ingest::{AppState, router};
use hooklake::metrics::Metrics;
use hooklake::pipeline::{Mode, Pipeline};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tower::ServiceExt;

/// Directory of the repository's sample iClosed payloads (`examples/payloads/`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/payloads")
}

/// A sample payload's text (a JSON array with one object).
pub fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The object inside a fixture, as compact JSON text.
pub fn fixture_object(name: &str) -> String {
    let value: Value = serde_json::from_str(&fixture(name)).unwrap();
    value[0].to_string()
}

/// Every fixture file name, sorted.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// A data directory with a pipeline and a router, driven without a socket.
pub struct Lake {
    pub dir: tempfile::TempDir,
    pub pipeline: Arc<Pipeline>,
    pub router: Router,
}

impl Lake {
    pub fn new() -> Lake {
        Lake::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut Config)) -> Lake {
        Lake::open(tempfile::tempdir().unwrap(), edit)
    }

    /// Stops this lake's pipeline (as a crash would: no flush) and opens a new one on the same
    /// directory, which recovers from the log.
    pub fn restart(self) -> Lake {
        Lake::open(self.close(), |_| {})
    }

    /// Opens a lake on a directory a closed lake handed back.
    pub fn open_dir(dir: tempfile::TempDir) -> Lake {
        Lake::open(dir, |_| {})
    }

    /// Opens a lake on a directory a closed lake handed back, with its config edited.
    pub fn open_with(dir: tempfile::TempDir, edit: impl FnOnce(&mut Config)) -> Lake {
        Lake::open(dir, edit)
    }

    /// Stops the pipeline without a flush and hands back the directory (unlocked).
    pub fn close(self) -> tempfile::TempDir {
        self.pipeline.close();
        let Lake {
            dir,
            pipeline,
            router,
        } = self;
        drop(router);
        drop(pipeline);
        dir
    }

    fn open(dir: tempfile::TempDir, edit: impl FnOnce(&mut Config)) -> Lake {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            // Small log segments: tests roll them, and do not zero-fill 64 MiB each.
            wal_segment_max_bytes: 1024 * 1024,
            // The free-space guard has its own test; the others must not depend on the host.
            min_free_bytes: 0,
            // Files a compaction removed are deleted by the vacuum after the pass, so a glob
            // reads each row once; the retention has tests of its own.
            vacuum_retention_secs: 0,
            ..Config::default()
        };
        edit(&mut config);
        config.validate().unwrap();
        let (pipeline, _) =
            Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Logged).unwrap();
        let state = AppState::new(pipeline.clone(), &config);
        state
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        Lake {
            dir,
            pipeline,
            router: router(state),
        }
    }

    /// Sends a request; returns the status, the headers and the body text.
    pub async fn request(&self, method: &str, path: &str, body: impl Into<Body>) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        send(&self.router, request).await
    }

    /// Posts `events` as one JSON array to the webhook route and expects a 200.
    pub async fn post_events(&self, events: &[serde_json::Value]) {
        let r = self
            .post(
                "/webhooks/iclosed",
                serde_json::Value::Array(events.to_vec()).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    pub async fn post(&self, path: &str, body: impl Into<Body>) -> Response {
        self.request("POST", path, body).await
    }

    /// Flushes through the admin endpoint and returns its report.
    pub async fn flush(&self) -> Value {
        let r = self.post("/admin/flush", "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()
    }

    /// `read_parquet` over every file of a table, Hive partitions on.
    pub fn scan(&self, table: &str) -> String {
        scan(self.dir.path(), table)
    }

    /// Runs SQL in DuckDB; `{table}` placeholders become scans of this lake's tables.
    pub fn query(&self, sql: &str) -> Vec<Map<String, Value>> {
        let mut sql = sql.to_string();
        for table in hooklake::flatten::TABLE_NAMES {
            sql = sql.replace(&format!("{{{table}}}"), &self.scan(table));
        }
        duckdb(&sql)
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `read_parquet` over every file of a table under `dir`.
pub fn scan(dir: &Path, table: &str) -> String {
    format!(
        "read_parquet('{}/{table}/date=*/*.parquet', hive_partitioning = true)",
        dir.display()
    )
}

/// The `event_id`s of a table's Delta snapshot in the local lake at `dir`, sorted, as the
/// Python `deltalake` package (delta-rs) reads them; empty when the table has no log.
pub fn delta_event_ids(dir: &Path, table: &str) -> Vec<String> {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
uri = sys.argv[1]
if not os.path.isdir(os.path.join(uri, "_delta_log")):
    print("[]")
else:
    ids = DeltaTable(uri).to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
    print(json.dumps(sorted(ids)))
sys.stdout.flush()
# Skips the interpreter's teardown, in which the reader's native threads have been seen to
# abort the process once its answer was printed.
os._exit(0)
"#;
    let uri = dir.join(table);
    let output = Command::new("python3")
        .args(["-c", script, &uri.display().to_string()])
        .output()
        .expect("python3 must be on PATH with the deltalake package (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "delta-rs failed on {}: {}",
        uri.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs SQL with the DuckDB CLI (session time zone UTC) and returns the rows of the last
/// statement as JSON objects.
pub fn duckdb(sql: &str) -> Vec<Map<String, Value>> {
    let output = Command::new("duckdb")
        .arg("-json")
        .arg("-c")
        .arg(format!("SET TimeZone = 'UTC'; {sql}"))
        .output()
        .expect("the duckdb CLI must be on PATH (pip install duckdb-cli; see README)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "duckdb failed on {sql}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `-json` prints one array per statement that returns rows; keep the last.
    let last = stdout
        .trim()
        .rsplit_once("\n[")
        .map(|(_, tail)| format!("[{tail}"))
        .unwrap_or(stdout.trim().to_string());
    if last.is_empty() {
        return Vec::new();
    }
    let rows: Vec<Value> =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("duckdb output ({e}): {last}"));
    rows.into_iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// `hooklake query NAME --data DIR --format json`, parsed.
pub fn hooklake_query(dir: &Path, name: &str, extra: &[&str]) -> Vec<Value> {
    let out = hooklake_command()
        .args(["query", name, "--format", "json", "--data"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    json_rows(name, &out)
}

/// The rows a successful `-json` / `--format json` run of query `name` printed.
pub fn json_rows(name: &str, out: &std::process::Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{name} ({e}): {stdout}"))
}

/// The single value of a one-row, one-column query.
pub fn scalar(rows: &[Map<String, Value>]) -> Value {
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].values().next().unwrap().clone()
}

/// A running `hooklake serve` child process and its address.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line the server logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The thread reading the log; it ends when the server has exited and its log is read.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(data_dir: &std::path::Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// Starts `hooklake serve` with extra environment variables (`HOOKLAKE_*` settings).
    pub fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_args(data_dir, env, &[])
    }

    /// Starts `hooklake serve` with extra environment variables and extra arguments.
    pub fn start_with_args(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let mut command = hooklake_command();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("HOOKLAKE_LOG", "info")
            .env("HOOKLAKE_WAL_SEGMENT_MAX_BYTES", "1048576")
            .envs(env.iter().copied());
        Server::spawn(command)
    }

    /// Starts `hooklake ARGS --listen 127.0.0.1:0` in the directory `cwd`, with the default data
    /// directory (`./data` there) and no other setting, as a user would start it.
    pub fn start_in(cwd: &Path, args: &[&str]) -> Server {
        let mut command = hooklake_command();
        command
            .current_dir(cwd)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("HOOKLAKE_LOG", "info");
        Server::spawn(command)
    }

    /// Spawns `command` (a `serve` that logs at info level at least) and waits until it logs its
    /// listen address.
    fn spawn(mut command: Command) -> Server {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log until the listen address shows, then keeps draining it so the child
        // never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `listen=ADDR` in text, `"listen":"ADDR"` in JSON.
                if let Some(rest) = line.split("listen=").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                } else if let Some(rest) = line.split("\"listen\":\"").nth(1) {
                    let _ = tx.send(rest.split('"').next().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the server did not log its listen address within 30 s");
        };
        Server {
            child,
            base: format!("http://{addr}"),
            log,
            reader: Some(reader),
        }
    }

    pub fn hooklake(&self, args: &[&str]) -> std::process::Output {
        hooklake_command().args(args).output().unwrap()
    }

    /// POSTs a body to the webhook endpoint; returns the status and the JSON answer.
    pub async fn post(&self, body: &str) -> (u16, serde_json::Value) {
        let (status, text) =
            hooklake::client::send(&self.base, "POST", "/webhooks/iclosed", body.as_bytes())
                .await
                .unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// The log so far, once a line containing `needle` has arrived (or after 10 s).
    pub fn log_after(&self, needle: &str) -> String {
        for _ in 0..1000 {
            let log = self.log.lock().unwrap().join("\n");
            if log.contains(needle) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit by itself.
    /// Waits for the server to exit; every line it logged is in `log` once this returns.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Sends SIGKILL and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Every line it logged is in `log` once this returns.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        panic!("server did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    /// A test that fails half-way must not leave its server running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `request` through `router` and reads the whole answer.
pub async fn send(router: &Router, request: Request<Body>) -> Response {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Response {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// The `hooklake` binary, run so that the tests do not depend on the host: no `HOOKLAKE_*`
/// variable of the environment reaches it (a test sets its own), and the free-space guard
/// (`min_free_bytes`, 256 MiB by default) is off unless a test sets it.
pub fn hooklake_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hooklake"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HOOKLAKE_") {
            command.env_remove(name);
        }
    }
    command.env("HOOKLAKE_MIN_FREE_BYTES", "0");
    command
}

/// Posts the generated leads' on-time deliveries (redeliveries included), flushes, then the
/// late ones, and flushes: late events meet a newer state. Returns how many of each it posted.
pub async fn ingest(lake: &Lake, all: &[hooklake::generate::Lead]) -> (usize, usize) {
    let mut posted = [0; 2];
    for late in [false, true] {
        let batch: Vec<Value> = all
            .iter()
            .flat_map(|l| &l.deliveries)
            .filter(|d| d.late == late)
            .map(|d| d.payload.clone())
            .collect();
        posted[usize::from(late)] = batch.len();
        for chunk in batch.chunks(100) {
            lake.post_events(chunk).await;
        }
        lake.flush().await;
    }
    (posted[0], posted[1])
}
