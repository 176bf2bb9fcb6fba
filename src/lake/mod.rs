//! Where the tables live: an object store (local disk, S3 or an S3-compatible store, GCS, Azure)
//! opened from a lake URL, the upload of data files to it, and each table's Delta log
//! ([`delta`]), with the statistics of its `add` actions ([`stats`]) and its checkpoints
//! ([`checkpoint`]).
//!
//! A lake URL is a local path, `file:///path`, `s3://bucket/prefix`, `gs://bucket/prefix` or
//! `az://container/prefix`. Credentials, region and endpoint come from each cloud's standard
//! environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), and [`StoreOptions`] overrides them.
//!
//! Invariants: a secret (key, token, password) never appears in the `Debug` or `Display` of a
//! type of this module, nor in one of its errors; every store error is classified
//! ([`StoreErrorKind`]) so callers can tell an outage or throttling (retry later) from a
//! conflict, a missing object or refused credentials. This module never touches the
//! write-ahead log or the state store, which stay on local disk.

pub mod checkpoint;
pub mod delta;
pub mod stats;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

pub use delta::{Commit, CommitOutcome, DataFile, DeltaTable, Snapshot};

/// Files up to this size are uploaded with one request; larger ones in parts.
pub const DEFAULT_MULTIPART_THRESHOLD_BYTES: u64 = 16 * 1024 * 1024;

/// Size of one part of a multipart upload (S3 needs at least 5 MiB except for the last).
pub const DEFAULT_PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts of one file, and files of one batch, uploaded at once.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;

/// Why the lake could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("invalid lake URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot open the lake at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{op} {path}: {kind} ({source})")]
    Store {
        op: &'static str,
        path: String,
        kind: StoreErrorKind,
        #[source]
        source: object_store::Error,
    },
    #[error("read {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upload task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("delta log of {table}: {reason}")]
    Log { table: String, reason: String },
    #[error("parquet {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("commit to {table} clashes with version {version}, committed meanwhile: {reason}")]
    Clash {
        table: String,
        version: i64,
        reason: String,
    },
    #[error("commit to {table} lost the race {attempts} times in a row")]
    TooManyConflicts { table: String, attempts: u32 },
}

impl LakeError {
    /// The kind of store failure behind this error, if it is one.
    pub fn store_kind(&self) -> Option<StoreErrorKind> {
        match self {
            LakeError::Store { kind, .. } => Some(*kind),
            LakeError::Clash { .. } | LakeError::TooManyConflicts { .. } => {
                Some(StoreErrorKind::Conflict)
            }
            _ => None,
        }
    }

    /// Whether trying again later may succeed (an outage, throttling or a lost race).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.store_kind(),
            Some(StoreErrorKind::Unavailable | StoreErrorKind::Throttled)
        ) || matches!(self, LakeError::TooManyConflicts { .. })
    }
}

/// What kind of store failure an error is, for retries and for the metrics' `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store could not be reached, timed out or answered 5xx.
    Unavailable,
    /// The store asked the client to slow down (429, 503 SlowDown).
    Throttled,
    /// A conditional write lost: the object exists or changed.
    Conflict,
    /// The object does not exist.
    NotFound,
    /// The credentials were missing or refused.
    Auth,
    /// Anything else (a bad path, an unsupported operation, a malformed answer).
    Other,
}

impl StoreErrorKind {
    /// The label of this kind in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Throttled => "throttled",
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::NotFound => "not_found",
            StoreErrorKind::Auth => "auth",
            StoreErrorKind::Other => "other",
        }
    }

    /// Classifies an `object_store` error, looking through its sources for the HTTP status or
    /// transport failure behind it.
    pub fn of(error: &object_store::Error) -> StoreErrorKind {
        use object_store::Error as E;
        match error {
            E::NotFound { .. } => return StoreErrorKind::NotFound,
            E::AlreadyExists { .. } | E::Precondition { .. } => return StoreErrorKind::Conflict,
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
                return StoreErrorKind::Auth;
            }
            _ => {}
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            // `object_store` keeps its request error private; its text carries the status.
            if let Some(status) = http_status(&e.to_string()) {
                return match status {
                    429 => StoreErrorKind::Throttled,
                    503 if e.to_string().contains("SlowDown") => StoreErrorKind::Throttled,
                    500..=599 => StoreErrorKind::Unavailable,
                    401 | 403 => StoreErrorKind::Auth,
                    404 => StoreErrorKind::NotFound,
                    409 | 412 => StoreErrorKind::Conflict,
                    _ => StoreErrorKind::Other,
                };
            }
            if e.downcast_ref::<object_store::client::HttpError>()
                .is_some()
            {
                return StoreErrorKind::Unavailable;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                return match io.kind() {
                    K::NotFound => StoreErrorKind::NotFound,
                    K::PermissionDenied => StoreErrorKind::Auth,
                    K::AlreadyExists => StoreErrorKind::Conflict,
                    K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::NotConnected => StoreErrorKind::Unavailable,
                    _ => StoreErrorKind::Other,
                };
            }
            source = e.source();
        }
        StoreErrorKind::Other
    }
}

/// The HTTP status in an `object_store` request error's text ("... status code: 503 ...").
fn http_status(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wraps a store error with the operation and path it failed on.
pub(crate) fn store_error(
    op: &'static str,
    path: &ObjectPath,
    source: object_store::Error,
) -> LakeError {
    LakeError::Store {
        op,
        path: path.to_string(),
        kind: StoreErrorKind::of(&source),
        source,
    }
}

/// Runs `future` to completion on a thread of its own with a runtime of its own, so synchronous
/// code (opening the pipeline, the query command) can use the lake whether or not it runs inside
/// a runtime. A lake used there should be opened there too: an HTTP client's connections belong
/// to the runtime that made them.
pub fn block_on<F>(future: F) -> std::io::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(runtime.block_on(future))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where the lake is: parsed from a local path or a URL. Holds no credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum LakeUrl {
    /// A directory on this machine (a plain path or `file://`).
    Local(PathBuf),
    /// An object store bucket and the prefix of the lake inside it.
    Remote {
        /// `s3`, `gs` or `az`.
        scheme: RemoteScheme,
        /// The bucket (S3, GCS) or container (Azure).
        bucket: String,
        /// The prefix under which the tables live, without leading or trailing slash.
        prefix: String,
    },
}

/// The object stores a lake URL may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteScheme {
    S3,
    Gcs,
    Azure,
}

impl RemoteScheme {
    fn as_str(self) -> &'static str {
        match self {
            RemoteScheme::S3 => "s3",
            RemoteScheme::Gcs => "gs",
            RemoteScheme::Azure => "az",
        }
    }
}

impl LakeUrl {
    /// Parses a lake location. A string without `scheme://` is a local path. A URL carrying a
    /// user name or password is refused (credentials belong in the environment), and the error
    /// does not repeat it.
    pub fn parse(text: &str) -> Result<LakeUrl, LakeError> {
        let Some((scheme, _)) = text.split_once("://") else {
            if text.is_empty() {
                return Err(LakeError::InvalidUrl {
                    url: String::new(),
                    reason: "empty".into(),
                });
            }
            return Ok(LakeUrl::Local(PathBuf::from(text)));
        };
        let url = url::Url::parse(text).map_err(|e| LakeError::InvalidUrl {
            url: redact_url(text),
            reason: e.to_string(),
        })?;
        let invalid = |reason: &str| LakeError::InvalidUrl {
            url: redact_url(text),
            reason: reason.to_string(),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are refused; set them in the environment",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not part of a lake URL"));
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not an absolute local path"))?;
                return Ok(LakeUrl::Local(path));
            }
            "s3" | "s3a" => RemoteScheme::S3,
            "gs" => RemoteScheme::Gcs,
            "az" | "abfs" | "abfss" => RemoteScheme::Azure,
            other => {
                return Err(invalid(&format!(
                    "unknown scheme {other:?} (expected a path, file://, s3://, gs:// or az://)"
                )));
            }
        };
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(invalid("no bucket"));
        }
        let prefix = url.path().trim_matches('/').to_string();
        Ok(LakeUrl::Remote {
            scheme,
            bucket,
            prefix,
        })
    }

    /// The directory of a lake on this machine's disk.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            LakeUrl::Local(path) => Some(path),
            LakeUrl::Remote { .. } => None,
        }
    }

    /// Whether the lake is on this machine's disk.
    pub fn is_local(&self) -> bool {
        matches!(self, LakeUrl::Local(_))
    }
}

/// The part of a URL-like text before any `user:password@`, for error messages.
fn redact_url(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

impl fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LakeUrl::Local(path) => write!(f, "{}", path.display()),
            LakeUrl::Remote {
                scheme,
                bucket,
                prefix,
            } if prefix.is_empty() => write!(f, "{}://{bucket}", scheme.as_str()),
            LakeUrl::Remote {
                scheme,
                bucket,
                prefix,
            } => write!(f, "{}://{bucket}/{prefix}", scheme.as_str()),
        }
    }
}

impl fmt::Debug for LakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeUrl({self})")
    }
}

/// Settings that override what the environment says about the store. Secrets are kept out of
/// `Debug`.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// The endpoint of an S3-compatible store (SeaweedFS, MinIO, R2), or of an emulator.
    pub endpoint: Option<String>,
    /// Allows plain HTTP to the endpoint (a store on loopback or a private network).
    pub allow_http: Option<bool>,
    /// The region of the bucket (S3).
    pub region: Option<String>,
    /// The access key id (S3) or account name (Azure).
    pub access_key_id: Option<String>,
    /// The secret access key (S3) or account key (Azure). A secret.
    pub secret_access_key: Option<String>,
    /// A session token (S3). A secret.
    pub session_token: Option<String>,
    /// Path of a service account file (GCS).
    pub google_service_account_path: Option<String>,
    /// Parts of a large file, and files of a batch, uploaded at once.
    pub upload_concurrency: Option<usize>,
    /// Files above this size are uploaded in parts.
    pub multipart_threshold_bytes: Option<u64>,
    /// Retries of one failed request (5xx, throttling, connection errors) before it fails.
    pub max_retries: Option<usize>,
    /// Time a request may spend retrying before it fails.
    pub retry_timeout_secs: Option<u64>,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret(&self.secret_access_key))
            .field("session_token", &secret(&self.session_token))
            .field(
                "google_service_account_path",
                &self.google_service_account_path,
            )
            .field("upload_concurrency", &self.upload_concurrency)
            .field("multipart_threshold_bytes", &self.multipart_threshold_bytes)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .finish()
    }
}

/// An open lake: the store and the prefix under which its tables live.
#[derive(Clone)]
pub struct Lake {
    /// Where the lake is, for messages.
    url: LakeUrl,
    /// The store; for a local lake it is rooted at the lake's directory.
    store: Arc<dyn ObjectStore>,
    /// The prefix of every table inside the store (empty for a local lake).
    root: ObjectPath,
    /// Parts of a file, and files of a batch, uploaded at once.
    upload_concurrency: usize,
    /// Files above this size are uploaded in parts.
    multipart_threshold_bytes: u64,
}

impl fmt::Debug for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

impl Lake {
    /// Opens the store a lake URL names. Opening contacts no server; a local lake's directory
    /// is created if absent.
    pub fn open(url: &LakeUrl, options: &StoreOptions) -> Result<Lake, LakeError> {
        let open_error = |source| LakeError::Open {
            url: url.to_string(),
            source,
        };
        let (store, root): (Arc<dyn ObjectStore>, ObjectPath) = match url {
            LakeUrl::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| LakeError::Local {
                    path: dir.clone(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(dir).map_err(open_error)?;
                (Arc::new(store), ObjectPath::default())
            }
            LakeUrl::Remote {
                scheme,
                bucket,
                prefix,
            } => {
                let root = ObjectPath::parse(prefix).map_err(|e| LakeError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
                let store: Arc<dyn ObjectStore> = match scheme {
                    RemoteScheme::S3 => Arc::new(
                        s3_builder(bucket, options)
                            .with_retry(retry_config(options))
                            .build()
                            .map_err(open_error)?,
                    ),
                    RemoteScheme::Gcs => Arc::new(
                        gcs_builder(bucket, options)
                            .with_retry(retry_config(options))
                            .build()
                            .map_err(open_error)?,
                    ),
                    RemoteScheme::Azure => Arc::new(
                        azure_builder(bucket, options)
                            .with_retry(retry_config(options))
                            .build()
                            .map_err(open_error)?,
                    ),
                };
                (store, root)
            }
        };
        Ok(Lake {
            url: url.clone(),
            store,
            root,
            upload_concurrency: options
                .upload_concurrency
                .unwrap_or(DEFAULT_UPLOAD_CONCURRENCY)
                .max(1),
            multipart_threshold_bytes: options
                .multipart_threshold_bytes
                .unwrap_or(DEFAULT_MULTIPART_THRESHOLD_BYTES),
        })
    }

    /// Where the lake is.
    pub fn url(&self) -> &LakeUrl {
        &self.url
    }

    /// The store, for readers that need more than this module offers.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store path of `relative` (`/`-separated) inside the lake.
    pub fn path(&self, relative: &str) -> ObjectPath {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// The store path of a table's directory.
    pub fn table_path(&self, table: &str) -> ObjectPath {
        self.root.clone().join(table)
    }

    /// The Delta table `table` of this lake (nothing is read until it is used).
    pub fn table(&self, table: &str) -> DeltaTable {
        DeltaTable::new(self.clone(), table)
    }

    /// Uploads one local file to `key` (a path inside the store): in one request up to the
    /// multipart threshold, above it in parts of [`DEFAULT_PART_BYTES`], several at once. An
    /// upload that fails is aborted, so no partial object is left visible. Returns its size.
    pub async fn upload(&self, local: &Path, key: &ObjectPath) -> Result<u64, LakeError> {
        let local_error = |source| LakeError::Local {
            path: local.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(local_error)?;
        let size = file.metadata().await.map_err(local_error)?.len();
        if size <= self.multipart_threshold_bytes {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(local_error)?;
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| store_error("put", key, e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| store_error("start multipart upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, DEFAULT_PART_BYTES);
        let mut chunk = vec![0u8; DEFAULT_PART_BYTES];
        let result: Result<(), LakeError> = async {
            loop {
                let n = file.read(&mut chunk).await.map_err(local_error)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(self.upload_concurrency)
                    .await
                    .map_err(|e| store_error("upload part", key, e))?;
                writer.write(&chunk[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| store_error("complete multipart upload", key, e))?;
                Ok(size)
            }
            Err(e) => {
                // Aborting is best effort: the error that stopped the upload is the one to report.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Uploads several files at once (at most the upload concurrency in flight), each to its
    /// key. All are attempted; the first error is returned after every upload has ended.
    pub async fn upload_all(&self, files: Vec<(PathBuf, ObjectPath)>) -> Result<u64, LakeError> {
        let mut pending = files.into_iter();
        let mut running = tokio::task::JoinSet::new();
        let mut total = 0u64;
        let mut first_error = None;
        loop {
            while running.len() < self.upload_concurrency {
                let Some((local, key)) = pending.next() else {
                    break;
                };
                let lake = self.clone();
                running.spawn(async move { lake.upload(&local, &key).await });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done.map_err(LakeError::from).and_then(|r| r) {
                Ok(size) => {
                    total += size;
                    if running.len() + pending.len() > 0 {
                        crate::failpoint::hit("upload-mid-batch");
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// How requests are retried: `object_store`'s defaults unless the options say otherwise.
fn retry_config(options: &StoreOptions) -> object_store::RetryConfig {
    let mut config = object_store::RetryConfig::default();
    if let Some(retries) = options.max_retries {
        config.max_retries = retries;
    }
    if let Some(secs) = options.retry_timeout_secs {
        config.retry_timeout = std::time::Duration::from_secs(secs);
    }
    config
}

/// The S3 builder: the environment first, then the options.
fn s3_builder(bucket: &str, options: &StoreOptions) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // The AWS SDKs' variable for a custom endpoint; object_store reads `AWS_ENDPOINT`.
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        builder = builder.with_endpoint(endpoint);
    }
    let settings = [
        (AmazonS3ConfigKey::Endpoint, options.endpoint.clone()),
        (
            AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
            options.allow_http.map(|b| b.to_string()),
        ),
        (AmazonS3ConfigKey::Region, options.region.clone()),
        (
            AmazonS3ConfigKey::AccessKeyId,
            options.access_key_id.clone(),
        ),
        (
            AmazonS3ConfigKey::SecretAccessKey,
            options.secret_access_key.clone(),
        ),
        (AmazonS3ConfigKey::Token, options.session_token.clone()),
    ];
    for (key, value) in settings {
        if let Some(value) = value {
            builder = builder.with_config(key, value);
        }
    }
    builder
}

/// The GCS builder: the environment first, then the options.
fn gcs_builder(bucket: &str, options: &StoreOptions) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(path) = &options.google_service_account_path {
        builder = builder.with_config(GoogleConfigKey::ServiceAccount, path.clone());
    }
    if let Some(allow) = options.allow_http {
        builder =
            builder.with_client_options(object_store::ClientOptions::new().with_allow_http(allow));
    }
    builder
}

/// The Azure builder: the environment first, then the options.
fn azure_builder(container: &str, options: &StoreOptions) -> MicrosoftAzureBuilder {
    let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
    let settings = [
        (AzureConfigKey::AccountName, options.access_key_id.clone()),
        (AzureConfigKey::AccessKey, options.secret_access_key.clone()),
        (AzureConfigKey::Endpoint, options.endpoint.clone()),
    ];
    for (key, value) in settings {
        if let Some(value) = value {
            builder = builder.with_config(key, value);
        }
    }
    if let Some(allow) = options.allow_http {
        builder =
            builder.with_client_options(object_store::ClientOptions::new().with_allow_http(allow));
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &str) {
        let url = LakeUrl::parse(text).unwrap();
        assert_eq!(url.to_string(), expected, "{text}");
    }

    #[test]
    fn lake_urls_parse() {
        check("/var/lib/hooklake", "/var/lib/hooklake");
        check("relative/lake", "relative/lake");
        check("file:///srv/lake", "/srv/lake");
        check("s3://bucket", "s3://bucket");
        check("s3://bucket/a/b/", "s3://bucket/a/b");
        check("gs://bucket/lake", "gs://bucket/lake");
        check("az://container/lake", "az://container/lake");
        assert!(LakeUrl::parse("/x").unwrap().is_local());
        assert!(!LakeUrl::parse("s3://b/x").unwrap().is_local());
    }

    #[test]
    fn bad_lake_urls_are_refused_without_their_secrets() {
        for text in [
            "ftp://host/x",
            "s3://",
            "s3:///prefix",
            "",
            "s3://b/x?versionId=1",
        ] {
            assert!(LakeUrl::parse(text).is_err(), "{text}");
        }
        let error = LakeUrl::parse("s3://AKIAKEY:supersecret@bucket/x")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("supersecret"), "{error}");
        assert!(!error.contains("AKIAKEY"), "{error}");
        assert!(error.contains("credentials in the URL"), "{error}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let options = StoreOptions {
            access_key_id: Some("AKIAPUBLIC".into()),
            secret_access_key: Some("the-secret-key".into()),
            session_token: Some("the-session-token".into()),
            ..StoreOptions::default()
        };
        let text = format!("{options:?}");
        assert!(!text.contains("the-secret-key"), "{text}");
        assert!(!text.contains("the-session-token"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let url = LakeUrl::parse("s3://bucket/p").unwrap();
        let lake = Lake::open(&url, &options).unwrap();
        let text = format!("{lake:?}");
        assert!(!text.contains("the-secret-key"), "{text}");
    }

    #[test]
    fn store_errors_are_classified() {
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert_eq!(StoreErrorKind::of(&not_found), StoreErrorKind::NotFound);
        let exists = object_store::Error::AlreadyExists {
            path: "x".into(),
            source: "there".into(),
        };
        assert_eq!(StoreErrorKind::of(&exists), StoreErrorKind::Conflict);
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(StoreErrorKind::of(&refused), StoreErrorKind::Unavailable);
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "no".into(),
        };
        assert_eq!(StoreErrorKind::of(&denied), StoreErrorKind::Auth);
        let status = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let slow = status(
            "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>",
        );
        assert_eq!(StoreErrorKind::of(&slow), StoreErrorKind::Throttled);
        let down = status("Server returned non-2xx status code: 502 Bad Gateway: ");
        assert_eq!(StoreErrorKind::of(&down), StoreErrorKind::Unavailable);
        let many = status("Server returned non-2xx status code: 429 Too Many Requests: ");
        assert_eq!(StoreErrorKind::of(&many), StoreErrorKind::Throttled);
    }
}
