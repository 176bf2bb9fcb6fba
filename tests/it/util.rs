//! Helpers shared by the integration tests: a lake in a temporary directory driven through the
//! router, fixtures, and DuckDB queries through the `duckdb` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

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

/// Directory of the shared iClosed fixtures.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/iclosed")
}

/// A fixture file's text (a JSON array with one object).
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
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        edit(&mut config);
        config.validate().unwrap();
        let (pipeline, _) =
            Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Logged).unwrap();
        let state = AppState {
            pipeline: pipeline.clone(),
            max_body_bytes: config.max_body_bytes,
            max_json_depth: config.max_json_depth,
            ready: Arc::new(AtomicBool::new(true)),
        };
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
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
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
        for table in [
            "contact_events",
            "tracking_params",
            "contact_answers",
            "call_events",
            "call_outcomes",
            "raw_events",
        ] {
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
        "read_parquet('{}/{table}/*/*.parquet', hive_partitioning = true)",
        dir.display()
    )
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

/// The single value of a one-row, one-column query.
pub fn scalar(rows: &[Map<String, Value>]) -> Value {
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].values().next().unwrap().clone()
}
