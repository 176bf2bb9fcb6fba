//! One table's Delta log: creating the table, committing `add`/`remove`/`txn` actions, reading
//! the snapshot (live files, application transaction versions) and checkpointing.
//!
//! Layout, as the Delta protocol (reader version 1, writer version 2) describes it:
//! `<table>/_delta_log/<version:020>.json` holds one action per line;
//! `<table>/_delta_log/<version:020>.checkpoint.parquet` holds the whole snapshot at a version,
//! and `<table>/_delta_log/_last_checkpoint` names the latest one; data files sit at
//! `<table>/date=YYYY-MM-DD/*.parquet` with `date` as the partition column.
//!
//! Committing: data files are uploaded first; the commit then puts the next version only if
//! absent (`PutMode::Create`: a conditional write on S3, GCS and Azure, a no-replace link on
//! local disk). A writer that loses the race reads the versions committed meanwhile and checks
//! that they do not clash with its own: a file it removes must still be live, a file it adds
//! must not be; if the winner already carries its application transaction (same id, same or
//! later version), its commit has happened and it stops there. Otherwise it retries at the
//! next version.
//!
//! Invariants: a version is written once and never overwritten; a commit is wholly in one
//! version or in none; a `remove` names only a file live in the snapshot it was checked
//! against; a reader that lists the log never sees a version missing before the latest one.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::stats::FileStats;
use super::{Lake, LakeError, checkpoint, store_error};

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "date";

/// A checkpoint is written after every this many commits.
pub const DEFAULT_CHECKPOINT_INTERVAL: i64 = 10;

/// Attempts of one commit before it gives up (each lost race is one).
pub const DEFAULT_MAX_COMMIT_ATTEMPTS: u32 = 50;

/// Removed files stay in checkpoints (as tombstones, for vacuum) this long.
pub const TOMBSTONE_RETENTION_MILLIS: i64 = 7 * 24 * 3600 * 1000;

/// Name of the log directory inside a table.
pub const LOG_DIR: &str = "_delta_log";

/// The engine named in `commitInfo`.
const ENGINE_INFO: &str = concat!("hooklake/", env!("CARGO_PKG_VERSION"));

/// An `add` action: a data file that becomes part of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// The file's path relative to the table directory.
    pub path: String,
    /// The partition column's value for the file.
    #[serde(default)]
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Bytes in the file.
    pub size: i64,
    /// When the file was written, in milliseconds since the epoch.
    pub modification_time: i64,
    /// Whether the commit changes the table's rows (false for a compaction).
    pub data_change: bool,
    /// The file's statistics as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

/// A `remove` action: a data file that leaves the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    /// The file's path relative to the table directory.
    pub path: String,
    /// When it was removed, in milliseconds since the epoch (for vacuum's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    /// Whether the commit changes the table's rows (false for a compaction).
    pub data_change: bool,
    /// Whether `partitionValues` and `size` are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    /// The partition column's value for the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<BTreeMap<String, Option<String>>>,
    /// Bytes in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// A `txn` action: the latest version of an application's transactions on this table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    /// The application id (for hooklake, one per writer instance).
    pub app_id: String,
    /// The application's own version (for a flush, its flush sequence number).
    pub version: i64,
    /// When it was committed, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// The `protocol` action: the reader and writer versions a client needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: i32,
    pub min_writer_version: i32,
}

/// The `metaData` action: the table's id, schema and partition columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// A unique id of the table.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The data files' format (always Parquet).
    pub format: Format,
    /// The schema as Delta's JSON schema text.
    pub schema_string: String,
    /// The partition columns, in order.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// Table properties.
    #[serde(default)]
    pub configuration: BTreeMap<String, Option<String>>,
    /// When the table was created, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

/// The data files' format in `metaData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: BTreeMap<String, Option<String>>,
}

/// One line of a commit file (or one row of a checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Add(Add),
    Remove(Remove),
    Txn(Txn),
    Protocol(Protocol),
    Metadata(Metadata),
    /// Provenance of a commit; kept as written, readers ignore it.
    CommitInfo(Value),
}

impl Action {
    /// Parses one line of a commit; actions this module does not use (`cdc`,
    /// `domainMetadata`, ...) give `None`.
    pub fn parse(line: &str) -> Result<Option<Action>, serde_json::Error> {
        let object: Map<String, Value> = serde_json::from_str(line)?;
        let Some((key, value)) = object.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(match key.as_str() {
            "add" => Action::Add(serde_json::from_value(value)?),
            "remove" => Action::Remove(serde_json::from_value(value)?),
            "txn" => Action::Txn(serde_json::from_value(value)?),
            "protocol" => Action::Protocol(serde_json::from_value(value)?),
            "metaData" => Action::Metadata(serde_json::from_value(value)?),
            "commitInfo" => Action::CommitInfo(value),
            _ => return Ok(None),
        }))
    }

    /// The action as one JSON line (without the newline).
    pub fn to_line(&self) -> String {
        let (key, value) = match self {
            Action::Add(a) => ("add", serde_json::to_value(a)),
            Action::Remove(r) => ("remove", serde_json::to_value(r)),
            Action::Txn(t) => ("txn", serde_json::to_value(t)),
            Action::Protocol(p) => ("protocol", serde_json::to_value(p)),
            Action::Metadata(m) => ("metaData", serde_json::to_value(m)),
            Action::CommitInfo(v) => ("commitInfo", Ok(v.clone())),
        };
        // These types serialize to JSON objects without fallible parts.
        let value = value.unwrap_or(Value::Null);
        json!({ key: value }).to_string()
    }
}

/// The state of a table at one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The version read, or `None` when the table has no log yet.
    pub version: Option<i64>,
    /// The protocol in force.
    pub protocol: Option<Protocol>,
    /// The table's metadata.
    pub metadata: Option<Metadata>,
    /// Live data files by path.
    pub files: BTreeMap<String, Add>,
    /// Removed data files by path (kept for vacuum).
    pub tombstones: BTreeMap<String, Remove>,
    /// The latest transaction of each application id.
    pub txns: BTreeMap<String, Txn>,
}

impl Snapshot {
    /// Applies the actions of one version (or of a checkpoint) in order.
    pub fn apply(&mut self, version: i64, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            match action {
                Action::Add(add) => {
                    self.tombstones.remove(&add.path);
                    self.files.insert(add.path.clone(), add);
                }
                Action::Remove(remove) => {
                    self.files.remove(&remove.path);
                    self.tombstones.insert(remove.path.clone(), remove);
                }
                Action::Txn(txn) => {
                    self.txns.insert(txn.app_id.clone(), txn);
                }
                Action::Protocol(p) => self.protocol = Some(p),
                Action::Metadata(m) => self.metadata = Some(m),
                Action::CommitInfo(_) => {}
            }
        }
        self.version = Some(version);
    }

    /// The actions that make up this snapshot, for a checkpoint: protocol, metadata,
    /// transactions, live files, and tombstones removed after `tombstones_since` (ms).
    pub fn actions(&self, tombstones_since: i64) -> Vec<Action> {
        let mut actions = Vec::with_capacity(self.files.len() + self.txns.len() + 2);
        actions.extend(self.protocol.clone().map(Action::Protocol));
        actions.extend(self.metadata.clone().map(Action::Metadata));
        actions.extend(self.txns.values().cloned().map(Action::Txn));
        actions.extend(self.files.values().cloned().map(Action::Add));
        actions.extend(
            self.tombstones
                .values()
                .filter(|r| r.deletion_timestamp.unwrap_or(i64::MAX) >= tombstones_since)
                .cloned()
                .map(Action::Remove),
        );
        actions
    }
}

/// A data file to add: where it sits in the table and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Path relative to the table directory: `date=YYYY-MM-DD/<name>.parquet`.
    pub path: String,
    /// The partition's date, `YYYY-MM-DD`.
    pub date: String,
    /// Bytes in the file.
    pub size: i64,
    /// Statistics from the file's footer.
    pub stats: Option<FileStats>,
}

impl DataFile {
    /// Describes a Parquet file of partition `date` named `name`, reading its footer for the
    /// size and statistics. It reads a local file: call it off the async threads.
    pub fn from_local(local: &Path, date: &str, name: &str) -> Result<DataFile, LakeError> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let parquet_error = |source| LakeError::Parquet {
            path: local.display().to_string(),
            source,
        };
        let file = std::fs::File::open(local).map_err(|source| LakeError::Local {
            path: local.to_path_buf(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| LakeError::Local {
                path: local.to_path_buf(),
                source,
            })?
            .len();
        let reader = SerializedFileReader::new(file).map_err(parquet_error)?;
        let metadata = reader.metadata();
        let schema = parquet::arrow::parquet_to_arrow_schema(
            metadata.file_metadata().schema_descr(),
            metadata.file_metadata().key_value_metadata(),
        )
        .map_err(parquet_error)?;
        Ok(DataFile {
            path: format!("{PARTITION_COLUMN}={date}/{name}"),
            date: date.to_string(),
            size: size as i64,
            stats: Some(FileStats::from_metadata(metadata, &schema, None)),
        })
    }
}

/// What one commit does.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Files to add (already uploaded).
    pub adds: Vec<DataFile>,
    /// Paths of live files to remove.
    pub removes: Vec<String>,
    /// Whether the commit changes the table's rows: true for a flush, false for a compaction
    /// (which rewrites rows without changing them).
    pub data_change: bool,
    /// The application transaction carried, `(app_id, version)`: a commit whose application
    /// already reached this version is not written again.
    pub txn: Option<(String, i64)>,
    /// The operation named in `commitInfo` (`WRITE`, `OPTIMIZE`, ...).
    pub operation: &'static str,
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written as this version, after this many lost races.
    Committed { version: i64, retries: u32 },
    /// Its application transaction was already in the log at this version (or later): it
    /// had been committed before, so nothing was written.
    AlreadyCommitted { txn_version: i64 },
}

/// A table's Delta log in a lake. Each value keeps its own copy of the snapshot, refreshed
/// before use; several values (or processes) may commit to one table.
#[derive(Debug)]
pub struct DeltaTable {
    /// The lake the table lives in.
    lake: Lake,
    /// The table's name (its directory).
    name: String,
    /// The table's directory in the store.
    root: ObjectPath,
    /// A checkpoint follows every commit whose version is a multiple of this.
    checkpoint_interval: i64,
    /// Attempts of one commit before it gives up.
    max_attempts: u32,
    /// The latest snapshot read; commits on one value run one at a time behind this lock.
    snapshot: tokio::sync::Mutex<Snapshot>,
}

impl DeltaTable {
    /// The table `name` of `lake`. Nothing is read yet.
    pub fn new(lake: Lake, name: &str) -> DeltaTable {
        DeltaTable {
            root: lake.table_path(name),
            lake,
            name: name.to_string(),
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_attempts: DEFAULT_MAX_COMMIT_ATTEMPTS,
            snapshot: tokio::sync::Mutex::new(Snapshot::default()),
        }
    }

    /// Sets the number of commits between checkpoints (at least 1).
    pub fn with_checkpoint_interval(mut self, commits: i64) -> DeltaTable {
        self.checkpoint_interval = commits.max(1);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store path of a file of this table, from its path relative to the table.
    pub fn file_path(&self, relative: &str) -> ObjectPath {
        let mut path = self.root.clone();
        for part in relative.split('/') {
            path = path.join(part);
        }
        path
    }

    fn log_path(&self, name: &str) -> ObjectPath {
        self.root.clone().join(LOG_DIR).join(name)
    }

    fn commit_path(&self, version: i64) -> ObjectPath {
        self.log_path(&format!("{version:020}.json"))
    }

    fn log_error(&self, reason: impl Into<String>) -> LakeError {
        LakeError::Log {
            table: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The snapshot at the latest version.
    pub async fn snapshot(&self) -> Result<Snapshot, LakeError> {
        let mut snapshot = self.snapshot.lock().await;
        self.refresh(&mut snapshot).await?;
        Ok(snapshot.clone())
    }

    /// The latest version committed by application `app_id`, or `None` if it never
    /// committed to this table. Recovery compares it with the flush it is about to redo.
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>, LakeError> {
        let mut snapshot = self.snapshot.lock().await;
        self.refresh(&mut snapshot).await?;
        Ok(snapshot.txns.get(app_id).map(|t| t.version))
    }

    /// Brings `snapshot` to the latest version: the first time from the latest checkpoint
    /// and the commits after it, then commit by commit.
    async fn refresh(&self, snapshot: &mut Snapshot) -> Result<(), LakeError> {
        if snapshot.version.is_none() {
            *snapshot = self.load().await?;
            if snapshot.version.is_none() {
                return Ok(());
            }
        }
        loop {
            let next = snapshot.version.map_or(0, |v| v + 1);
            match self.read_commit(next).await? {
                Some(actions) => snapshot.apply(next, actions),
                None => return Ok(()),
            }
        }
    }

    /// Reads the table from scratch: the latest checkpoint, then the commits after it.
    async fn load(&self) -> Result<Snapshot, LakeError> {
        let store = self.lake.store();
        let mut snapshot = Snapshot::default();
        let hint = self.log_path("_last_checkpoint");
        let checkpoint_version = match store.get(&hint).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| store_error("get", &hint, e))?;
                let hint: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| self.log_error(format!("_last_checkpoint: {e}")))?;
                hint.get("version").and_then(Value::as_i64)
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(store_error("get", &hint, e)),
        };
        if let Some(version) = checkpoint_version {
            let path = self.log_path(&format!("{version:020}.checkpoint.parquet"));
            let bytes = store
                .get(&path)
                .await
                .map_err(|e| store_error("get", &path, e))?
                .bytes()
                .await
                .map_err(|e| store_error("get", &path, e))?;
            snapshot.apply(version, checkpoint::read(bytes, path.as_ref())?);
        }
        // The commits after the checkpoint, in order; listing from an offset skips the rest.
        let prefix = self.root.clone().join(LOG_DIR);
        let offset = checkpoint_version.map(|v| self.commit_path(v));
        let listed: Vec<_> = match &offset {
            Some(offset) => {
                store
                    .list_with_offset(Some(&prefix), offset)
                    .try_collect()
                    .await
            }
            None => store.list(Some(&prefix)).try_collect().await,
        }
        .map_err(|e| store_error("list", &prefix, e))?;
        let mut versions: Vec<i64> = listed
            .iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?;
                let digits = name.strip_suffix(".json")?;
                (digits.len() == 20).then(|| digits.parse().ok())?
            })
            .filter(|v| checkpoint_version.is_none_or(|c| *v > c))
            .collect();
        versions.sort_unstable();
        for version in versions {
            let expected = snapshot.version.map_or(0, |v| v + 1);
            if version != expected {
                return Err(
                    self.log_error(format!("version {expected} is missing (found {version})"))
                );
            }
            let actions = self
                .read_commit(version)
                .await?
                .ok_or_else(|| self.log_error(format!("version {version} vanished")))?;
            snapshot.apply(version, actions);
        }
        Ok(snapshot)
    }

    /// The actions of version `version` of the log, or `None` if it does not exist yet (a
    /// reader following the table, version by version).
    pub async fn commit_actions(&self, version: i64) -> Result<Option<Vec<Action>>, LakeError> {
        self.read_commit(version).await
    }

    /// The actions of one commit, or `None` if that version does not exist yet.
    async fn read_commit(&self, version: i64) -> Result<Option<Vec<Action>>, LakeError> {
        let path = self.commit_path(version);
        let bytes = match self.lake.store().get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| store_error("get", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("get", &path, e)),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.log_error(format!("version {version} is not UTF-8")))?;
        let mut actions = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action = Action::parse(line)
                .map_err(|e| self.log_error(format!("version {version}: {e}")))?;
            actions.extend(action);
        }
        Ok(Some(actions))
    }

    /// Writes `lines` as `version` if no version of that number exists. Returns whether it
    /// was written (false: another writer took the version).
    async fn put_if_absent(&self, version: i64, actions: &[Action]) -> Result<bool, LakeError> {
        let path = self.commit_path(version);
        let mut body = String::new();
        for action in actions {
            body.push_str(&action.to_line());
            body.push('\n');
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .lake
            .store()
            .put_opts(&path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(store_error("put if absent", &path, e)),
        }
    }

    /// Creates the table (version 0: protocol and metadata, partitioned by `date`) unless it
    /// exists. `schema` is the data files' Arrow schema; `date` is added as a column if the
    /// files do not hold it. Returns the table's latest version.
    pub async fn create_if_absent(&self, schema: &Schema) -> Result<i64, LakeError> {
        let mut snapshot = self.snapshot.lock().await;
        self.refresh(&mut snapshot).await?;
        if let Some(version) = snapshot.version {
            return Ok(version);
        }
        let now = now_millis();
        let metadata = Metadata {
            id: uuid::Uuid::new_v4().to_string(),
            name: Some(self.name.clone()),
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: delta_schema(schema)
                .map_err(|reason| self.log_error(reason))?
                .to_string(),
            partition_columns: vec![PARTITION_COLUMN.into()],
            configuration: BTreeMap::new(),
            created_time: Some(now),
        };
        let actions = [
            Action::CommitInfo(json!({
                "timestamp": now,
                "operation": "CREATE TABLE",
                "operationParameters": {"partitionBy": json!([PARTITION_COLUMN]).to_string()},
                "engineInfo": ENGINE_INFO,
            })),
            Action::Protocol(Protocol {
                min_reader_version: 1,
                min_writer_version: 2,
            }),
            Action::Metadata(metadata),
        ];
        // Losing this race means another writer created the table: use theirs.
        self.put_if_absent(0, &actions).await?;
        self.refresh(&mut snapshot).await?;
        snapshot
            .version
            .ok_or_else(|| self.log_error("version 0 is missing after creating it"))
    }

    /// Commits `commit` as the next version: checks it against the snapshot this value holds, puts the
    /// version if absent, and on a lost race reads what won, checks again and retries at the
    /// next version. A checkpoint follows every `checkpoint_interval` versions (a failed
    /// checkpoint is logged, not returned: the commit stands and the next one tries again).
    pub async fn commit(&self, commit: &Commit) -> Result<CommitOutcome, LakeError> {
        let mut snapshot = self.snapshot.lock().await;
        if snapshot.version.is_none() {
            self.refresh(&mut snapshot).await?;
        }
        // The snapshot kept from the last use may be behind; a stale one only costs a lost
        // race (the put finds the version taken), or a clash that a refresh may clear.
        if self.check(&snapshot, commit).is_err() {
            self.refresh(&mut snapshot).await?;
        }
        let mut retries = 0;
        loop {
            let Some(latest) = snapshot.version else {
                return Err(self.log_error("the table does not exist (create it first)"));
            };
            if let Some((app_id, version)) = &commit.txn
                && let Some(txn) = snapshot.txns.get(app_id)
                && txn.version >= *version
            {
                return Ok(CommitOutcome::AlreadyCommitted {
                    txn_version: txn.version,
                });
            }
            self.check(&snapshot, commit)?;
            let version = latest + 1;
            let actions = self.actions(&snapshot, commit);
            if self.put_if_absent(version, &actions).await? {
                snapshot.apply(version, actions);
                if version % self.checkpoint_interval == 0
                    && let Err(error) = self.write_checkpoint(&snapshot).await
                {
                    tracing::warn!(table = %self.name, version, %error, "checkpoint failed");
                }
                return Ok(CommitOutcome::Committed { version, retries });
            }
            retries += 1;
            tracing::info!(table = %self.name, version, retries, "lost the race for a log version; retrying");
            if retries >= self.max_attempts {
                return Err(LakeError::TooManyConflicts {
                    table: self.name.clone(),
                    attempts: retries,
                });
            }
            self.refresh(&mut snapshot).await?;
        }
    }

    /// Refuses a commit that the snapshot makes impossible: removing a file that is not live
    /// (another commit removed it), or adding one that already is.
    fn check(&self, snapshot: &Snapshot, commit: &Commit) -> Result<(), LakeError> {
        let clash = |reason: String| LakeError::Clash {
            table: self.name.clone(),
            version: snapshot.version.unwrap_or(-1),
            reason,
        };
        for path in &commit.removes {
            if !snapshot.files.contains_key(path) {
                return Err(clash(format!("{path} is not a live file")));
            }
        }
        for file in &commit.adds {
            if snapshot.files.contains_key(&file.path) {
                return Err(clash(format!("{} is already a live file", file.path)));
            }
        }
        Ok(())
    }

    /// The actions of `commit` against `snapshot`.
    fn actions(&self, snapshot: &Snapshot, commit: &Commit) -> Vec<Action> {
        let now = now_millis();
        let mut actions = vec![Action::CommitInfo(json!({
            "timestamp": now,
            "operation": commit.operation,
            "operationParameters": {},
            "engineInfo": ENGINE_INFO,
            "isBlindAppend": commit.removes.is_empty(),
            "readVersion": snapshot.version,
        }))];
        if let Some((app_id, version)) = &commit.txn {
            actions.push(Action::Txn(Txn {
                app_id: app_id.clone(),
                version: *version,
                last_updated: Some(now),
            }));
        }
        for path in &commit.removes {
            let live = snapshot.files.get(path);
            actions.push(Action::Remove(Remove {
                path: path.clone(),
                deletion_timestamp: Some(now),
                data_change: commit.data_change,
                extended_file_metadata: Some(live.is_some()),
                partition_values: live.map(|a| a.partition_values.clone()),
                size: live.map(|a| a.size),
            }));
        }
        for file in &commit.adds {
            actions.push(Action::Add(Add {
                path: file.path.clone(),
                partition_values: BTreeMap::from([(
                    PARTITION_COLUMN.to_string(),
                    Some(file.date.clone()),
                )]),
                size: file.size,
                modification_time: now,
                data_change: commit.data_change,
                stats: file.stats.as_ref().map(FileStats::to_json),
            }));
        }
        actions
    }

    /// Writes a checkpoint of the latest version now.
    pub async fn checkpoint(&self) -> Result<i64, LakeError> {
        let mut snapshot = self.snapshot.lock().await;
        self.refresh(&mut snapshot).await?;
        self.write_checkpoint(&snapshot).await?;
        snapshot
            .version
            .ok_or_else(|| self.log_error("no version to checkpoint"))
    }

    /// Writes `<version>.checkpoint.parquet` for `snapshot`, then points `_last_checkpoint` at
    /// it unless that already names a later one.
    async fn write_checkpoint(&self, snapshot: &Snapshot) -> Result<(), LakeError> {
        let Some(version) = snapshot.version else {
            return Ok(());
        };
        let actions = snapshot.actions(now_millis() - TOMBSTONE_RETENTION_MILLIS);
        let count = actions.len();
        let bytes = checkpoint::write(&actions)?;
        let size_in_bytes = bytes.len();
        let path = self.log_path(&format!("{version:020}.checkpoint.parquet"));
        let store = self.lake.store();
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| store_error("put", &path, e))?;
        let hint = self.log_path("_last_checkpoint");
        let newer = match store.get(&hint).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| store_error("get", &hint, e))?;
                serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("version").and_then(Value::as_i64))
                    .is_some_and(|v| v >= version)
            }
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(store_error("get", &hint, e)),
        };
        if !newer {
            let body = json!({
                "version": version,
                "size": count,
                "sizeInBytes": size_in_bytes,
                "numOfAddFiles": snapshot.files.len(),
            })
            .to_string();
            store
                .put(&hint, PutPayload::from(body))
                .await
                .map_err(|e| store_error("put", &hint, e))?;
        }
        Ok(())
    }

    /// Data files under the table's partitions that the log does not know (neither live nor
    /// removed): uploads of a flush that never committed. Recovery deletes them.
    pub async fn untracked_files(&self) -> Result<Vec<ObjectPath>, LakeError> {
        let snapshot = self.snapshot().await?;
        let listed: Vec<_> = self
            .lake
            .store()
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(|e| store_error("list", &self.root, e))?;
        let root = format!("{}/", self.root);
        Ok(listed
            .into_iter()
            .map(|meta| meta.location)
            .filter(|location| {
                let full = location.to_string();
                let relative = full.strip_prefix(&root).unwrap_or(&full);
                relative.starts_with(&format!("{PARTITION_COLUMN}="))
                    && relative.ends_with(".parquet")
                    && !snapshot.files.contains_key(relative)
                    && !snapshot.tombstones.contains_key(relative)
            })
            .collect())
    }
}

/// Milliseconds since the epoch, now.
fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The Delta schema (as JSON) of a table whose files have the Arrow schema `schema`, with the
/// partition column `date` added when the files do not hold it.
pub fn delta_schema(schema: &Schema) -> Result<Value, String> {
    let mut fields: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| delta_field(f))
        .collect::<Result<_, _>>()?;
    if schema.field_with_name(PARTITION_COLUMN).is_err() {
        fields.push(delta_field(&Field::new(
            PARTITION_COLUMN,
            DataType::Date32,
            true,
        ))?);
    }
    Ok(json!({ "type": "struct", "fields": fields }))
}

fn delta_field(field: &Field) -> Result<Value, String> {
    Ok(json!({
        "name": field.name(),
        "type": delta_type(field.data_type())?,
        "nullable": field.is_nullable(),
        "metadata": {},
    }))
}

fn delta_type(data_type: &DataType) -> Result<Value, String> {
    Ok(match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Int64 => json!("long"),
        DataType::Int32 => json!("integer"),
        DataType::Int16 => json!("short"),
        DataType::Int8 => json!("byte"),
        DataType::Float64 => json!("double"),
        DataType::Float32 => json!("float"),
        DataType::Boolean => json!("boolean"),
        DataType::Binary | DataType::LargeBinary => json!("binary"),
        DataType::Date32 => json!("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => json!("timestamp"),
        DataType::Decimal128(precision, scale) => json!(format!("decimal({precision},{scale})")),
        DataType::List(item) | DataType::LargeList(item) => json!({
            "type": "array",
            "elementType": delta_type(item.data_type())?,
            "containsNull": item.is_nullable(),
        }),
        DataType::Struct(fields) => json!({
            "type": "struct",
            "fields": fields.iter().map(|f| delta_field(f)).collect::<Result<Vec<_>, _>>()?,
        }),
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(format!("map without key and value: {data_type}"));
            };
            json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type())?,
                "valueType": delta_type(kv[1].data_type())?,
                "valueContainsNull": kv[1].is_nullable(),
            })
        }
        other => return Err(format!("column type {other} has no Delta equivalent")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_json_lines() {
        let actions = [
            Action::Add(Add {
                path: "date=2024-05-01/part-000000000001.parquet".into(),
                partition_values: BTreeMap::from([("date".into(), Some("2024-05-01".into()))]),
                size: 10,
                modification_time: 5,
                data_change: true,
                stats: Some("{\"numRecords\":1}".into()),
            }),
            Action::Remove(Remove {
                path: "date=2024-05-01/part-000000000001.parquet".into(),
                deletion_timestamp: Some(6),
                data_change: false,
                extended_file_metadata: Some(true),
                partition_values: Some(BTreeMap::new()),
                size: Some(10),
            }),
            Action::Txn(Txn {
                app_id: "hooklake-a".into(),
                version: 7,
                last_updated: None,
            }),
        ];
        for action in actions {
            let line = action.to_line();
            assert_eq!(Action::parse(&line).unwrap(), Some(action), "{line}");
        }
        assert_eq!(Action::parse(r#"{"cdc":{"path":"x"}}"#).unwrap(), None);
        assert!(Action::parse("{not json").is_err());
    }

    #[test]
    fn a_snapshot_follows_adds_removes_and_txns() {
        let add = |path: &str| {
            Action::Add(Add {
                path: path.into(),
                partition_values: BTreeMap::new(),
                size: 1,
                modification_time: 0,
                data_change: true,
                stats: None,
            })
        };
        let mut snapshot = Snapshot::default();
        snapshot.apply(0, [add("a"), add("b")]);
        snapshot.apply(
            1,
            [
                Action::Remove(Remove {
                    path: "a".into(),
                    deletion_timestamp: Some(100),
                    data_change: false,
                    extended_file_metadata: None,
                    partition_values: None,
                    size: None,
                }),
                Action::Txn(Txn {
                    app_id: "x".into(),
                    version: 3,
                    last_updated: None,
                }),
            ],
        );
        assert_eq!(snapshot.version, Some(1));
        assert_eq!(snapshot.files.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(snapshot.tombstones.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(snapshot.txns["x"].version, 3);
        // A tombstone older than the retention is left out of a checkpoint.
        assert_eq!(snapshot.actions(0).len(), 3);
        assert_eq!(snapshot.actions(101).len(), 2);
    }

    #[test]
    fn delta_schema_maps_types_and_adds_the_partition_column() {
        let schema = Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Field::new("item", DataType::Utf8, true).into()),
                true,
            ),
        ]);
        let value = delta_schema(&schema).unwrap();
        let types: Vec<&Value> = value["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["type"])
            .collect();
        assert_eq!(types[0], "string");
        assert_eq!(types[1], "timestamp");
        assert_eq!(types[2]["elementType"], "string");
        assert_eq!(value["fields"][3]["name"], "date");
        assert_eq!(types[3], "date");
        let naive = Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]);
        assert!(delta_schema(&naive).is_err());
    }
}
