//! Configuration: every setting hooklake has, its default, and its validation.
//!
//! A [`Config`] is resolved once, from lowest to highest precedence: the `DEFAULT_*` constants,
//! a TOML file, `HOOKLAKE_<KEY>` environment variables, then command-line flags. It is validated
//! once, in [`Config::validate`]. Invariant: this module opens no sockets and no data files; the
//! only file it reads is the config file it is pointed at.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::FixedOffset;
use serde::{Deserialize, Serialize};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default listen address: loopback only, so a fresh install is not exposed to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default largest accepted request body (1 MiB); larger bodies get a 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default largest JSON nesting depth of a request body; deeper bodies get a 400.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Default most event objects in one request body.
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Default longest JSON string in a request body (64 KiB).
pub const DEFAULT_MAX_STRING_BYTES: usize = 64 * 1024;
/// Default seconds a request body may take to arrive in full; slower ones get 408.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// Default most bytes of a rejected body kept in `rejected_events` (64 KiB).
pub const DEFAULT_REJECTED_BODY_MAX_BYTES: usize = 64 * 1024;
/// Default seconds between scheduled flushes.
pub const DEFAULT_FLUSH_INTERVAL_SECS: u64 = 60;
/// Default number of buffered events that triggers a flush.
pub const DEFAULT_FLUSH_MAX_ROWS: usize = 100_000;
/// Default buffered payload bytes that trigger a flush (64 MiB).
pub const DEFAULT_FLUSH_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default hard bound on buffered payload bytes (256 MiB); past it, requests get a 503.
pub const DEFAULT_BUFFER_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Default rows per Parquet row group, inside the 100k-1M range DuckDB scans well.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 262_144;
/// Default ZSTD compression level of Parquet files.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default time zone of the `date=` partitions (UTC).
pub const DEFAULT_PARTITION_TIME_ZONE: &str = "+00:00";
/// Default URL of a running server, used by `hooklake flush`.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8080";
/// Default durability: a 200 means the request is on disk (fdatasync'd).
pub const DEFAULT_DURABILITY: Durability = Durability::Fsync;
/// Default longest time between log fsyncs with `durability = "batch"`.
pub const DEFAULT_DURABILITY_BATCH_MS: u64 = 10;
/// Default time an event id is remembered for deduplication (iClosed retries for 24 h).
pub const DEFAULT_DEDUP_WINDOW_HOURS: u64 = 72;
/// Default free space below which requests are refused with 503 (256 MiB).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Default seconds between background compaction passes.
pub const DEFAULT_COMPACTION_INTERVAL_SECS: u64 = 600;
/// Default hours after a partition's day ends before it is compacted (late events still land).
pub const DEFAULT_COMPACTION_GRACE_HOURS: u64 = 2;
/// Seconds a data file removed from a table's Delta log (by a compaction) stays in the store
/// before a vacuum pass deletes it: long enough for a query that listed it to finish.
pub const DEFAULT_VACUUM_RETENTION_SECS: u64 = 600;
/// Default target size of a compacted file (256 MiB).
pub const DEFAULT_COMPACTION_TARGET_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Default lead statuses that are not flagged `status_unknown`.
pub const DEFAULT_KNOWN_STATUSES: &[&str] = &[
    "POTENTIAL",
    "QUALIFIED",
    "DISQUALIFIED",
    "STRATEGY_CALL_BOOKED",
    "DISCOVERY_CALL_BOOKED",
];
/// Default refused requests per minute an address may send before it gets 429: ten a second,
/// far more than a misconfigured client needs to see its error, and each may cost a body read.
pub const DEFAULT_REFUSED_REQUESTS_PER_MINUTE: u32 = 600;
/// Keys that were renamed, as (former name, name): the former name is still read from files and
/// `HOOKLAKE_*` variables, as the current one.
pub const FORMER_KEYS: &[(&str, &str)] =
    &[("rate_limit_per_minute", "refused_requests_per_minute")];
/// Default size of a write-ahead log segment (64 MiB).
pub const DEFAULT_WAL_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// When a webhook request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the request is in the write-ahead log and fdatasync'd (group commit).
    Fsync,
    /// After the request is written to the log; fsync at most every `durability_batch_ms`. A
    /// power loss can lose that window; a process crash loses nothing.
    Batch,
}

/// What a `serve` process does with the lake (several processes share one lake with roles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Receives webhooks and writes every table: one process, the default.
    #[default]
    All,
    /// A receiver: acknowledges webhooks and writes only `raw_events` and `rejected_events`.
    Ingest,
    /// The deriver: follows `raw_events` and writes every other table, holding the lake's
    /// deriver lease (a standby waits for it).
    Derive,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Derive => "derive",
        }
    }
}

/// Environment variables that are not config keys but are read elsewhere.
const META_ENV: &[&str] = &["HOOKLAKE_CONFIG", "HOOKLAKE_LOG", "HOOKLAKE_CRASH_AT"];

/// Everything a hooklake process needs to know; see `config/example.toml` for each key. Its
/// `Debug` form is `config show`'s, secrets masked.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the state store and the write-ahead log (`_hooklake/`), and of the lake
    /// itself unless `lake_url` says otherwise.
    pub data_dir: PathBuf,
    /// Where the tables live: a local path, `file:///path`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix` (unset: the data directory).
    pub lake_url: Option<String>,
    /// Endpoint of an S3-compatible store (SeaweedFS, MinIO, R2); overrides `AWS_ENDPOINT_URL`.
    pub lake_endpoint: Option<String>,
    /// Allows plain HTTP to `lake_endpoint`; overrides `AWS_ALLOW_HTTP`.
    pub lake_allow_http: Option<bool>,
    /// Region of the bucket (S3); overrides `AWS_REGION`.
    pub lake_region: Option<String>,
    /// Access key id (S3) or storage account name (Azure); overrides `AWS_ACCESS_KEY_ID`.
    pub lake_access_key_id: Option<String>,
    /// Secret access key (S3) or account key (Azure); overrides `AWS_SECRET_ACCESS_KEY`. A
    /// secret: masked by `config show`.
    pub lake_secret_access_key: Option<String>,
    /// Session token (S3); overrides `AWS_SESSION_TOKEN`. A secret.
    pub lake_session_token: Option<String>,
    /// Service account file (GCS); overrides `GOOGLE_APPLICATION_CREDENTIALS`.
    pub lake_google_service_account_path: Option<String>,
    /// Times a failed store request is retried before the flush fails (unset: the
    /// `object_store` default, 10).
    pub lake_max_retries: Option<usize>,
    /// Seconds a store request may spend retrying before the flush fails (unset: the
    /// `object_store` default, 180).
    pub lake_retry_timeout_secs: Option<u64>,
    /// Seconds a file that a compaction removed from a table's Delta log is kept before a
    /// vacuum pass deletes it (a plain Parquet glob sees its rows twice meanwhile).
    pub vacuum_retention_secs: u64,
    /// What `serve` does: `all` (one process), `ingest` (a receiver of a shared lake) or
    /// `derive` (its deriver); `serve --role` overrides it.
    pub role: Role,
    /// Seconds at most between the deriver's passes over `raw_events`; a pass comes earlier
    /// once the receivers' lowest watermark moves and there is something new to derive.
    pub derive_poll_secs: u64,
    /// Seconds the deriver's lease lasts without a renewal; a standby takes over after that.
    pub derive_lease_secs: u64,
    /// Seconds after which the deriver stops waiting for a receiver that has not reported:
    /// its later events are then derived as late ones.
    pub receiver_timeout_secs: u64,
    /// Seconds between uploads of the deriver's state to the lake (and after its last flush);
    /// a standby that takes over starts from the last upload.
    pub derive_snapshot_secs: u64,
    /// Rows of `raw_events` (by the files' statistics) the deriver reads in one pass at most
    /// (at least one file): what bounds its memory on a backlog.
    pub derive_batch_events: u64,
    /// Socket address `serve` listens on.
    pub listen: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted JSON nesting depth of a request body.
    pub max_json_depth: usize,
    /// Most event objects in one request body; more gets a 413.
    pub max_events_per_request: usize,
    /// Longest JSON string in a request body, in bytes; longer gets a 413.
    pub max_string_bytes: usize,
    /// Seconds between interval flushes; 0 turns the interval trigger off.
    pub flush_interval_secs: u64,
    /// Buffered events that trigger a flush.
    pub flush_max_rows: usize,
    /// Buffered payload bytes that trigger a flush.
    pub flush_max_bytes: usize,
    /// Threads a server's flush flattens and encodes on (`replay` and `rebuild` use every core).
    pub flush_threads: usize,
    /// `replay` and `rebuild` flush at most this many events at a time (peak memory follows the
    /// flush size; a batch job has no latency reason to flush more at once).
    pub replay_flush_max_rows: usize,
    /// Optional cron expression (5 fields, or 6 with seconds first) for scheduled flushes, in UTC.
    pub flush_schedule: Option<String>,
    /// Hard bound on buffered payload bytes; requests beyond it get a 503 with `Retry-After`.
    pub buffer_max_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// ZSTD level (1-22) of compacted Parquet files (a flush's files use level 1).
    pub zstd_level: i32,
    /// Fixed UTC offset (`+00:00`, `-05:00`, or `UTC`) whose calendar date names partitions.
    pub partition_time_zone: String,
    /// URL of the running server that `hooklake flush` talks to.
    pub server_url: String,
    /// `fsync` (a 200 means on disk) or `batch` (fsync at most every `durability_batch_ms`).
    pub durability: Durability,
    /// Longest time between log fsyncs with `durability = "batch"`, in milliseconds.
    pub durability_batch_ms: u64,
    /// Hours an event id is remembered: a redelivery within the window is not written again.
    pub dedup_window_hours: u64,
    /// Size at which a write-ahead log segment is closed and a new one started.
    pub wal_segment_max_bytes: u64,
    /// Whether `serve` compacts closed partitions in the background.
    pub compaction_enabled: bool,
    /// Seconds between background compaction passes.
    pub compaction_interval_secs: u64,
    /// Hours after a partition's day ends (in `partition_time_zone`) before it is compacted.
    pub compaction_grace_hours: u64,
    /// Target size of a compacted file in bytes; a partition larger than that gets several.
    pub compaction_target_file_bytes: u64,
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Seconds a connection may take to send a complete request head (against slowloris).
    pub header_read_timeout_secs: u64,
    /// Seconds a webhook request's body may take to arrive in full, from the end of its head;
    /// slower ones get 408 (slowloris on the body).
    pub body_read_timeout_secs: u64,
    /// Seconds an answer may wait for the client to read it; a connection whose writes make no
    /// progress for that long is closed (a client pipelining requests and reading nothing).
    pub write_timeout_secs: u64,
    /// Most bytes of an authenticated but rejected body kept in `rejected_events`; a longer
    /// body is kept truncated (`body_truncated`, with its original length). 0 keeps no body.
    pub rejected_body_max_bytes: usize,
    /// Refused requests (a 4xx without a valid credential) one client address may send per
    /// minute, in bursts of up to the same number; past it, the address gets 429 with
    /// `Retry-After` for every request that carries no valid token. Authenticated deliveries are
    /// never counted nor refused. 0 turns the budget off. Formerly `rate_limit_per_minute`.
    pub refused_requests_per_minute: u32,
    /// Take the client address from the last `X-Forwarded-For` entry, the one the trusted proxy
    /// in front added (behind one such proxy only).
    pub trust_forwarded_for: bool,
    /// Shared secrets a webhook request may carry (path `/t/<token>/...`, `?token=`, or
    /// `Authorization: Bearer`); several at once allow rotation. Empty: no token check.
    pub auth_tokens: Vec<String>,
    /// Secrets for HMAC-SHA256 signatures of the request body. Empty: no signature check.
    pub hmac_secrets: Vec<String>,
    /// Header that carries the signature (hex, base64, or `sha256=<hex>`).
    pub hmac_header: String,
    /// Header with a Unix timestamp that is signed with the body (`<timestamp>.<body>`), against
    /// replays; unset: the body alone is signed.
    pub hmac_timestamp_header: Option<String>,
    /// Largest difference between the signed timestamp and now, in seconds.
    pub hmac_tolerance_secs: u64,
    /// Token for `/admin/*` (`Authorization: Bearer`); unset: admin endpoints answer loopback
    /// clients only.
    pub admin_token: Option<String>,
    /// Lead statuses that are not flagged `status_unknown` in `contact_events.quality_flags`.
    pub known_statuses: Vec<String>,
    /// Free bytes the data directory's file system must keep; below it, requests get 503 with
    /// `Retry-After` (checked at most once a second) instead of filling the disk, and a flush is
    /// held back while this plus an estimate of what it writes is not free. 0 turns both off.
    pub min_free_bytes: u64,
    /// Lead scoring: rules, clamp range, bands and decay (`[scoring]`; on by default with the
    /// shipped rule set).
    pub scoring: crate::score::rules::ScoringConfig,
    /// Workflow triggers (`[[triggers]]`): requests sent when a contact reaches a status, a
    /// field changes, a call happens or a score crosses a line. None by default.
    pub triggers: Vec<crate::trigger::TriggerConfig>,
    /// DuckDB extension files (`.duckdb_extension`) `hooklake query` installs before reading a
    /// remote lake, for a machine that cannot download `httpfs` from extensions.duckdb.org;
    /// each must match the DuckDB CLI's version.
    pub duckdb_extensions: Vec<String>,
    /// How trigger requests are sent and retried (`[trigger_delivery]`).
    pub trigger_delivery: crate::trigger::DeliveryConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_toml_masked())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            lake_url: None,
            lake_endpoint: None,
            lake_allow_http: None,
            lake_region: None,
            lake_access_key_id: None,
            lake_secret_access_key: None,
            lake_session_token: None,
            lake_google_service_account_path: None,
            lake_max_retries: None,
            lake_retry_timeout_secs: None,
            vacuum_retention_secs: DEFAULT_VACUUM_RETENTION_SECS,
            role: Role::All,
            derive_poll_secs: 10,
            derive_lease_secs: 30,
            receiver_timeout_secs: 60,
            derive_snapshot_secs: 60,
            derive_batch_events: 100_000,
            listen: DEFAULT_LISTEN.to_string(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
            flush_interval_secs: DEFAULT_FLUSH_INTERVAL_SECS,
            flush_max_rows: DEFAULT_FLUSH_MAX_ROWS,
            replay_flush_max_rows: 10_000,
            flush_threads: 1,
            flush_max_bytes: DEFAULT_FLUSH_MAX_BYTES,
            flush_schedule: None,
            buffer_max_bytes: DEFAULT_BUFFER_MAX_BYTES,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            partition_time_zone: DEFAULT_PARTITION_TIME_ZONE.to_string(),
            server_url: DEFAULT_SERVER_URL.to_string(),
            durability: DEFAULT_DURABILITY,
            durability_batch_ms: DEFAULT_DURABILITY_BATCH_MS,
            dedup_window_hours: DEFAULT_DEDUP_WINDOW_HOURS,
            wal_segment_max_bytes: DEFAULT_WAL_SEGMENT_MAX_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            known_statuses: DEFAULT_KNOWN_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            compaction_enabled: true,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            write_timeout_secs: 30,
            rejected_body_max_bytes: DEFAULT_REJECTED_BODY_MAX_BYTES,
            refused_requests_per_minute: DEFAULT_REFUSED_REQUESTS_PER_MINUTE,
            trust_forwarded_for: false,
            auth_tokens: Vec::new(),
            hmac_secrets: Vec::new(),
            hmac_header: "x-signature".to_string(),
            hmac_timestamp_header: None,
            hmac_tolerance_secs: 300,
            admin_token: None,
            compaction_interval_secs: DEFAULT_COMPACTION_INTERVAL_SECS,
            compaction_grace_hours: DEFAULT_COMPACTION_GRACE_HOURS,
            compaction_target_file_bytes: DEFAULT_COMPACTION_TARGET_FILE_BYTES,
            scoring: crate::score::rules::ScoringConfig::default(),
            duckdb_extensions: Vec::new(),
            triggers: Vec::new(),
            trigger_delivery: crate::trigger::DeliveryConfig::default(),
        }
    }
}

/// Why a configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown environment variable {0}: it names no config key (see config/example.toml)")]
    UnknownEnv(String),
    #[error("invalid value in environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Resolves defaults, then `file` (if any), then `HOOKLAKE_*` variables from `env`.
    ///
    /// Command-line flags are applied afterwards by the caller, then [`Config::validate`].
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        if let Some(path) = file {
            rename_former_keys(&mut table).map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            })?;
        }
        // The file alone first, so that a bad value is blamed on where it was written.
        if let Some(path) = file {
            table
                .clone()
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        let from_file = table.clone();
        let known = Config::keys();
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut variables = Vec::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("HOOKLAKE_") else {
                continue;
            };
            if META_ENV.contains(&name.as_str()) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let key = FORMER_KEYS
                .iter()
                .find(|(former, _)| *former == key)
                .map_or(key, |(_, current)| current.to_string());
            if !known.contains(&key) {
                return Err(ConfigError::UnknownEnv(name));
            }
            let value = env_value(&value);
            table.insert(key.clone(), value.clone());
            variables.push((name, key, value));
        }
        table.try_into::<Config>().map_err(|e| {
            // The first variable that is wrong on its own over the file's settings.
            let name = variables
                .iter()
                .find(|(_, key, value)| {
                    let mut one = from_file.clone();
                    one.insert(key.clone(), value.clone());
                    one.try_into::<Config>().is_err()
                })
                .map_or_else(|| "HOOKLAKE_*".to_string(), |(name, _, _)| name.clone());
            ConfigError::Env {
                name,
                message: e.to_string(),
            }
        })
    }

    /// The config keys, as written in TOML files.
    pub fn keys() -> Vec<String> {
        let value =
            toml::Table::try_from(Config::default()).expect("the default config serializes");
        let mut keys: Vec<String> = value.keys().cloned().collect();
        // Keys that are None by default are omitted by TOML; they are still keys.
        keys.extend(
            [
                "flush_schedule",
                "hmac_timestamp_header",
                "admin_token",
                "lake_url",
                "lake_endpoint",
                "lake_allow_http",
                "lake_region",
                "lake_access_key_id",
                "lake_secret_access_key",
                "lake_session_token",
                "lake_google_service_account_path",
                "lake_max_retries",
                "lake_retry_timeout_secs",
            ]
            .map(String::from),
        );
        keys
    }

    /// Refuses to serve a non-loopback address without any webhook secret.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let addr = SocketAddr::from_str(&self.listen).map_err(|e| ConfigError::Invalid {
            key: "listen",
            message: e.to_string(),
        })?;
        if !addr.ip().is_loopback() && self.auth_tokens.is_empty() && self.hmac_secrets.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listen",
                message: format!(
                    "{} is not a loopback address and no webhook secret is set: anyone could post events. \
                     Set auth_tokens (e.g. HOOKLAKE_AUTH_TOKENS='[\"<long random string>\"]') or hmac_secrets, \
                     then register https://<host>/t/<token>/webhooks/iclosed in iClosed",
                    self.listen
                ),
            });
        }
        Ok(())
    }

    /// Checks every value once, so later code can rely on it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        // An empty secret (an unset shell variable, say) would let anyone in: `?token=` matches
        // an empty token, and anyone can sign with an empty key.
        let admin: Vec<String> = self.admin_token.iter().cloned().collect();
        for (key, secrets) in [
            ("auth_tokens", &self.auth_tokens),
            ("hmac_secrets", &self.hmac_secrets),
            ("admin_token", &admin),
        ] {
            if secrets.iter().any(|s| s.trim().is_empty()) {
                return invalid(key, "an empty secret would let anyone in".into());
            }
        }
        if let Err(e) = crate::score::rules::Rules::new(&self.scoring) {
            return invalid("scoring", e.to_string());
        }
        if let Err(e) = crate::trigger::Triggers::new(&self.triggers) {
            return invalid("triggers", e.to_string());
        }
        if !self.scoring.enabled
            && let Some(t) = self
                .triggers
                .iter()
                .find(|t| t.on == crate::trigger::On::Score)
        {
            return invalid(
                "triggers",
                format!(
                    "trigger {:?} fires on lead scores, but [scoring] is off (enabled = false)",
                    t.name
                ),
            );
        }
        let delivery = &self.trigger_delivery;
        if delivery.timeout_secs == 0 || delivery.timeout_secs > 3600 {
            return invalid(
                "trigger_delivery.timeout_secs",
                "must be from 1 to 3600".into(),
            );
        }
        if delivery.concurrency_per_target == 0 {
            return invalid(
                "trigger_delivery.concurrency_per_target",
                "must be at least 1".into(),
            );
        }
        if delivery.retry_schedule_secs.iter().any(|s| *s > 7 * 86_400) {
            return invalid(
                "trigger_delivery.retry_schedule_secs",
                "each wait must be at most 7 days (604800 s)".into(),
            );
        }
        // Counts, sizes and durations that must not be zero, each named on its own.
        let positive: [(&'static str, u64); 13] = [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_events_per_request", self.max_events_per_request as u64),
            ("max_string_bytes", self.max_string_bytes as u64),
            ("flush_threads", self.flush_threads as u64),
            ("replay_flush_max_rows", self.replay_flush_max_rows as u64),
            ("flush_max_rows", self.flush_max_rows as u64),
            ("flush_max_bytes", self.flush_max_bytes as u64),
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
            ("compaction_interval_secs", self.compaction_interval_secs),
            ("dedup_window_hours", self.dedup_window_hours),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(key, "must be at least 1".into());
        }
        // Durations with an upper bound: beyond it they mean nothing useful, and adding them to
        // the clock would overflow (a panic in a background task, say).
        const DAY: u64 = 86_400;
        let at_most: [(&'static str, u64, u64); 8] = [
            ("flush_interval_secs", self.flush_interval_secs, 366 * DAY),
            (
                "compaction_interval_secs",
                self.compaction_interval_secs,
                366 * DAY,
            ),
            (
                "compaction_grace_hours",
                self.compaction_grace_hours,
                366 * 24,
            ),
            ("dedup_window_hours", self.dedup_window_hours, 10 * 366 * 24),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                DAY,
            ),
            ("body_read_timeout_secs", self.body_read_timeout_secs, DAY),
            ("write_timeout_secs", self.write_timeout_secs, DAY),
            ("hmac_tolerance_secs", self.hmac_tolerance_secs, DAY),
        ];
        if let Some((key, _, max)) = at_most.iter().find(|(_, value, max)| value > max) {
            return invalid(key, format!("must be at most {max}"));
        }
        if let Err(e) = SocketAddr::from_str(&self.listen) {
            return invalid(
                "listen",
                format!("{:?} is not a socket address: {e}", self.listen),
            );
        }
        if self.max_json_depth == 0 || self.max_json_depth > 128 {
            return invalid("max_json_depth", "must be between 1 and 128".into());
        }
        // A request is logged as one record with its receive time, kind and path.
        let largest_body = crate::wal::record::MAX_ENTRY_BODY;
        if self.max_body_bytes > largest_body {
            return invalid(
                "max_body_bytes",
                format!("must be at most {largest_body} (the write-ahead log's largest record)"),
            );
        }
        if self.buffer_max_bytes < self.max_body_bytes {
            return invalid(
                "buffer_max_bytes",
                format!("must be at least max_body_bytes ({})", self.max_body_bytes),
            );
        }
        if !(1_000..=10_000_000).contains(&self.row_group_rows) {
            return invalid("row_group_rows", "must be between 1000 and 10000000".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return invalid("zstd_level", "must be between 1 and 22".into());
        }
        if !(1..=10_000).contains(&self.durability_batch_ms) {
            return invalid("durability_batch_ms", "must be between 1 and 10000".into());
        }
        if self.rejected_body_max_bytes > crate::rejected::MAX_BODY_BYTES {
            return invalid(
                "rejected_body_max_bytes",
                format!("must be at most {}", crate::rejected::MAX_BODY_BYTES),
            );
        }
        if self.compaction_target_file_bytes < 1024 * 1024 {
            return invalid(
                "compaction_target_file_bytes",
                "must be at least 1 MiB".into(),
            );
        }
        if self.wal_segment_max_bytes < 1024 * 1024 {
            return invalid("wal_segment_max_bytes", "must be at least 1 MiB".into());
        }
        if let Err(message) = parse_offset(&self.partition_time_zone) {
            return invalid("partition_time_zone", message);
        }
        if let Some(url) = &self.lake_url
            && let Err(e) = crate::lake::LakeUrl::parse(url)
        {
            return invalid("lake_url", e.to_string());
        }
        let shared = self
            .lake_url
            .as_deref()
            .and_then(|url| crate::lake::LakeUrl::parse(url).ok())
            .is_some_and(|url| !url.is_local());
        if self.role != Role::All && !shared {
            return invalid(
                "role",
                format!(
                    "role {} shares a lake between processes: set lake_url to an object store \
                     (s3://, gs://, az://) with conditional writes",
                    self.role.as_str()
                ),
            );
        }
        for (key, value) in [
            ("derive_poll_secs", self.derive_poll_secs),
            ("derive_lease_secs", self.derive_lease_secs),
            ("receiver_timeout_secs", self.receiver_timeout_secs),
            ("derive_snapshot_secs", self.derive_snapshot_secs),
            ("derive_batch_events", self.derive_batch_events),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if self.derive_lease_secs < 3 {
            return invalid(
                "derive_lease_secs",
                "must be at least 3 (the lease is renewed every third of it)".into(),
            );
        }
        if let Some(expr) = &self.flush_schedule
            && let Err(message) = parse_schedule(expr)
        {
            return invalid("flush_schedule", message);
        }
        Ok(())
    }

    /// The effective configuration as TOML, with the value of every key that names a secret
    /// (`token`, `secret`, `password`, `key`) masked.
    pub fn to_toml_masked(&self) -> String {
        let mut table = toml::Table::try_from(self).expect("the config serializes");
        mask_secrets(&mut table);
        if self.flush_schedule.is_none() {
            // TOML has no null: say that the key exists and is unset.
            return format!(
                "{}# flush_schedule is unset\n",
                toml::to_string(&table).expect("TOML")
            );
        }
        toml::to_string(&table).expect("TOML")
    }

    /// Where the lake is: `lake_url`, or the data directory when it is unset; only call after
    /// [`Config::validate`].
    pub fn lake(&self) -> crate::lake::LakeUrl {
        self.lake_url
            .as_deref()
            .and_then(|url| crate::lake::LakeUrl::parse(url).ok())
            .unwrap_or_else(|| crate::lake::LakeUrl::Local(self.data_dir.clone()))
    }

    /// What the config says about the lake's store, over the environment's settings.
    pub fn store_options(&self) -> crate::lake::StoreOptions {
        crate::lake::StoreOptions {
            endpoint: self.lake_endpoint.clone(),
            allow_http: self.lake_allow_http,
            region: self.lake_region.clone(),
            access_key_id: self.lake_access_key_id.clone(),
            secret_access_key: self.lake_secret_access_key.clone(),
            session_token: self.lake_session_token.clone(),
            google_service_account_path: self.lake_google_service_account_path.clone(),
            max_retries: self.lake_max_retries,
            retry_timeout_secs: self.lake_retry_timeout_secs,
            ..Default::default()
        }
    }

    /// The partition time zone as an offset; only call after [`Config::validate`].
    pub fn partition_offset(&self) -> FixedOffset {
        parse_offset(&self.partition_time_zone)
            .unwrap_or_else(|_| FixedOffset::east_opt(0).unwrap())
    }

    /// The parsed flush schedule; only call after [`Config::validate`].
    pub fn schedule(&self) -> Option<croner::Cron> {
        self.flush_schedule
            .as_deref()
            .and_then(|s| parse_schedule(s).ok())
    }
}

/// Moves the value of each former key name in `table` to its current name; both at once is an
/// error, as the two would disagree.
fn rename_former_keys(table: &mut toml::Table) -> Result<(), String> {
    for (former, current) in FORMER_KEYS {
        if let Some(value) = table.remove(*former) {
            if table.contains_key(*current) {
                return Err(format!(
                    "{former} and {current} are both set; {former} is the former name of {current}: keep only {current}"
                ));
            }
            table.insert(current.to_string(), value);
        }
    }
    Ok(())
}

/// Replaces the value of every key that names a secret with `********`, and the path and query
/// of every trigger's URL (an incoming-webhook URL is itself a secret).
fn mask_secrets(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if ["token", "secret", "password", "key"]
            .iter()
            .any(|s| key.contains(s))
        {
            *value = toml::Value::String("********".into());
        } else if let toml::Value::Table(inner) = value {
            mask_secrets(inner);
        } else if let toml::Value::Array(items) = value {
            for item in items {
                if let toml::Value::Table(inner) = item {
                    if key == "triggers"
                        && let Some(toml::Value::String(url)) = inner.get_mut("url")
                    {
                        *url = match url::Url::parse(url) {
                            Ok(u) => {
                                format!("{}://{}/********", u.scheme(), u.host_str().unwrap_or(""))
                            }
                            Err(_) => "********".to_string(),
                        };
                    }
                    mask_secrets(inner);
                }
            }
        }
    }
}

/// Reads an environment value as a TOML value when it is one (numbers, booleans), else a string.
fn env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Parses `UTC`, `Z` or `±HH:MM` into a fixed offset.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(FixedOffset::east_opt(0).unwrap());
    }
    let err =
        || format!("{s:?} is not UTC or an offset like +02:00 (IANA names are not supported)");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(err()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(err)?;
    let h: i32 = h.parse().map_err(|_| err())?;
    let m: i32 = m.parse().map_err(|_| err())?;
    if h > 23 || m > 59 {
        return Err(err());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(err)
}

/// Parses a cron expression: 5 fields, or 6 with seconds first.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_score_trigger_needs_scoring_on() {
        let mut config: Config = toml::from_str(
            "[scoring]\nenabled = false\n[[triggers]]\nname = \"hot\"\non = \"score\"\nurl = \"https://x.example/\"\n",
        )
        .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("\"hot\"") && err.contains("[scoring] is off"),
            "{err}"
        );
        config.scoring.enabled = true;
        config.validate().unwrap();
    }

    #[test]
    fn debug_output_masks_secrets_and_trigger_urls() {
        let config = Config {
            admin_token: Some("admin-secret-1".into()),
            lake_secret_access_key: Some("lake-secret-2".into()),
            triggers: toml::from_str::<Config>(
                "[[triggers]]\nname = \"t\"\non = \"status\"\nurl = \"https://hooks.example.com/services/T0/B0/secret-path-3\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
            )
            .unwrap()
            .triggers,
            ..Config::default()
        };
        config.validate().unwrap();
        for shown in [format!("{config:?}"), config.to_toml_masked()] {
            for secret in [
                "admin-secret-1",
                "lake-secret-2",
                "secret-path-3",
                "MfKQ9r8",
            ] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(
                shown.contains("https://hooks.example.com/********"),
                "{shown}"
            );
        }
    }

    #[test]
    fn example_config_parses_and_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        config.validate().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for key in Config::keys() {
            let documented = text.contains(&format!("\n{key} ="))
                || text.contains(&format!("\n# {key} ="))
                || text.contains(&format!("\n[{key}]"))
                || text.contains(&format!("\n# [[{key}]]"));
            assert!(documented, "example.toml does not document {key}");
        }
    }

    #[test]
    fn the_example_scoring_section_is_the_default_and_bad_rules_are_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            config.scoring,
            crate::score::rules::ScoringConfig::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[scoring.rules]]\nid = \"r\"\npoints = 1\nattribute = \"email\"\nmatches = \"(\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("scoring") && err.contains("\"r\""), "{err}");
    }

    #[test]
    fn env_overrides_file_and_unknown_env_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "flush_interval_secs = 5\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[("HOOKLAKE_FLUSH_INTERVAL_SECS", "7"), ("PATH", "x")]),
        )
        .unwrap();
        assert_eq!(c.flush_interval_secs, 7);
        assert_eq!(c.listen, "127.0.0.1:9000");
        let c = Config::load(None, env(&[("HOOKLAKE_DATA_DIR", "/tmp/lake")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/lake"));
        let err = Config::load(None, env(&[("HOOKLAKE_FLUSH_EVERY", "1")])).unwrap_err();
        assert!(err.to_string().contains("HOOKLAKE_FLUSH_EVERY"), "{err}");
    }

    #[test]
    fn a_former_key_name_is_read_as_its_current_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.toml");
        std::fs::write(&path, "rate_limit_per_minute = 120\n").unwrap();
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(c.refused_requests_per_minute, 120);
        let c = Config::load(Some(&path), env(&[("HOOKLAKE_RATE_LIMIT_PER_MINUTE", "7")])).unwrap();
        assert_eq!(
            c.refused_requests_per_minute, 7,
            "the variable wins over the file"
        );
        let c = Config::load(None, env(&[("HOOKLAKE_REFUSED_REQUESTS_PER_MINUTE", "9")])).unwrap();
        assert_eq!(c.refused_requests_per_minute, 9);
        std::fs::write(
            &path,
            "rate_limit_per_minute = 120\nrefused_requests_per_minute = 60\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old.toml") && err.contains("keep only refused_requests_per_minute"),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "flush_every = 3\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("flush_every") && err.contains("bad.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_environment_value_is_blamed_on_its_variable_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("good.toml");
        std::fs::write(&path, "flush_interval_secs = 30\n").unwrap();
        let env = vec![
            ("HOOKLAKE_FLUSH_MAX_ROWS".to_string(), "500".to_string()),
            ("HOOKLAKE_ZSTD_LEVEL".to_string(), "high".to_string()),
        ];
        let err = Config::load(Some(&path), env).unwrap_err().to_string();
        assert!(
            err.contains("HOOKLAKE_ZSTD_LEVEL") && !err.contains("good.toml"),
            "{err}"
        );
        // And a bad value in the file is the file's.
        std::fs::write(&path, "flush_interval_secs = \"soon\"\n").unwrap();
        let env = vec![("HOOKLAKE_FLUSH_MAX_ROWS".to_string(), "500".to_string())];
        let err = Config::load(Some(&path), env).unwrap_err().to_string();
        assert!(
            err.contains("good.toml") && err.contains("flush_interval_secs"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_secret_is_refused() {
        for config in [
            Config {
                auth_tokens: vec!["long-enough-token".into(), " ".into()],
                ..Config::default()
            },
            Config {
                hmac_secrets: vec![String::new()],
                ..Config::default()
            },
            Config {
                admin_token: Some(String::new()),
                ..Config::default()
            },
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("empty secret"), "{err}");
        }
    }

    #[test]
    fn validation_rejects_bad_values() {
        let check = |f: fn(&mut Config), key: &str| {
            let mut c = Config::default();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        };
        check(|c| c.listen = "nowhere".into(), "listen");
        check(
            |c| c.compaction_grace_hours = 10_000_000_000,
            "compaction_grace_hours",
        );
        check(|c| c.flush_interval_secs = u64::MAX, "flush_interval_secs");
        check(
            |c| {
                c.max_body_bytes = 100 << 20;
                c.buffer_max_bytes = 200 << 20;
            },
            "max_body_bytes",
        );
        check(
            |c| c.flush_schedule = Some("every day".into()),
            "flush_schedule",
        );
        check(
            |c| c.partition_time_zone = "Europe/Paris".into(),
            "partition_time_zone",
        );
        check(|c| c.zstd_level = 0, "zstd_level");
        check(|c| c.buffer_max_bytes = 1, "buffer_max_bytes");
        // A zero names its own key, not a neighbour checked with it.
        check(|c| c.max_string_bytes = 0, "for max_string_bytes:");
        check(
            |c| c.header_read_timeout_secs = 0,
            "for header_read_timeout_secs:",
        );
        check(|c| c.dedup_window_hours = 0, "for dedup_window_hours:");
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_public_listener_needs_a_secret() {
        let public = Config {
            listen: "0.0.0.0:8080".into(),
            ..Config::default()
        };
        let err = public.check_exposure().unwrap_err().to_string();
        assert!(
            err.contains("auth_tokens") && err.contains("0.0.0.0:8080"),
            "{err}"
        );
        Config {
            auth_tokens: vec!["t".into()],
            ..public.clone()
        }
        .check_exposure()
        .unwrap();
        Config {
            hmac_secrets: vec!["k".into()],
            ..public
        }
        .check_exposure()
        .unwrap();
        Config::default().check_exposure().unwrap();
    }

    #[test]
    fn secrets_are_masked_and_the_rest_shown() {
        let mut table: toml::Table =
            toml::from_str("admin_token = 'x'\nlisten = 'y'\n[auth]\nhmac_key = 'z'\n").unwrap();
        mask_secrets(&mut table);
        let text = toml::to_string(&table).unwrap();
        assert!(
            !text.contains("'x'") && !text.contains("\"x\"") && !text.contains("\"z\""),
            "{text}"
        );
        assert!(text.contains("listen = \"y\""), "{text}");
        let shown = Config {
            flush_interval_secs: 7,
            ..Config::default()
        }
        .to_toml_masked();
        assert!(
            shown.contains("flush_interval_secs = 7")
                && shown.contains("# flush_schedule is unset"),
            "{shown}"
        );
    }

    #[test]
    fn remote_lakes_are_accepted_and_their_secrets_masked() {
        let c = Config::load(
            None,
            env(&[
                ("HOOKLAKE_LAKE_URL", "s3://bucket/lake"),
                ("HOOKLAKE_LAKE_ENDPOINT", "http://127.0.0.1:8333"),
                ("HOOKLAKE_LAKE_SECRET_ACCESS_KEY", "sekrit-value"),
                ("HOOKLAKE_LAKE_SESSION_TOKEN", "token-value"),
            ]),
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.lake().to_string(), "s3://bucket/lake");
        let options = c.store_options();
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(options.secret_access_key.as_deref(), Some("sekrit-value"));
        let shown = c.to_toml_masked();
        assert!(
            !shown.contains("sekrit-value") && !shown.contains("token-value"),
            "{shown}"
        );
        assert!(shown.contains("lake_url = \"s3://bucket/lake\""), "{shown}");
        let debug = format!("{options:?}");
        assert!(!debug.contains("sekrit-value"), "{debug}");
        let bad = Config {
            lake_url: Some("ftp://host/lake".into()),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_offset("-05:00").unwrap().local_minus_utc(), -5 * 3600);
        assert_eq!(
            parse_offset("+05:30").unwrap().local_minus_utc(),
            5 * 3600 + 1800
        );
        assert!(parse_offset("+25:00").is_err());
    }
}
