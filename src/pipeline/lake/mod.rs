//! The pipeline's side of the lake: every table's Delta log as a flush, a compaction and a start
//! see it. A flush commits each table it wrote with the transaction `(app_id, flush_seq)`; a
//! flush that never reached the state store is reverted (rule R: its files are removed from the
//! log, then deleted); a compaction is one `remove` + `add` commit per partition; a vacuum pass
//! deletes what compactions removed once the retention has passed; an existing lake without
//! logs is converted by one commit per table that adds its committed files.
//! Invariant: a file is deleted from the store only once no live version of its table's log
//! names it; a flush number above the state store's is never live after
//! [`LakeTables::revert_uncommitted`] returns, and every table's transaction version is at most
//! the floor it reports, so the next flush takes a number no log has seen.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_schema::SchemaRef;
use object_store::ObjectStoreExt;

use crate::lake::{Commit, CommitOutcome, DataFile, DeltaTable, Lake, LakeError, store_error};

mod shared;

use crate::sink::{flush_seq_of, is_published};
pub(crate) use shared::{DERIVER_APP_ID, Owned, RECEIVED_TABLES, derived_tables};

/// The application id of this data directory's flushes in the Delta logs' `txn` actions.
pub(crate) fn app_id(instance_id: &str) -> String {
    format!("hooklake-{instance_id}")
}

/// The random id of a data directory, created at its first open and kept in
/// `<state_dir>/instance-id` (written to a temporary name, synced, renamed, directory synced).
pub(crate) fn instance_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = state_dir.join(".instance-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()?;
    Ok(id)
}

/// What reverting found: files removed from the logs, and the highest flush number any
/// table's log has seen from this data directory.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reverted {
    pub removed: usize,
    pub txn_floor: u64,
}

impl super::Pipeline {
    /// Counts a flush's uploads to a remote lake.
    pub(super) fn lake_uploaded(&self, bytes: u64, files: usize, took: Duration) {
        self.metrics
            .add("hooklake_lake_uploaded_bytes_total", "", bytes);
        self.metrics
            .add("hooklake_lake_uploaded_files_total", "", files as u64);
        self.metrics.lake_upload.observe(took);
    }

    /// Counts a flush's Delta commits and the races they lost.
    pub(super) fn lake_committed(&self, versions: &[(&'static str, i64, u32)]) {
        for (table, _, retries) in versions {
            self.metrics.add("hooklake_delta_commits_total", table, 1);
            self.metrics.add(
                "hooklake_delta_commit_retries_total",
                table,
                u64::from(*retries),
            );
        }
    }

    /// Counts a failed upload or commit by the kind of failure.
    pub(super) fn lake_failed(&self, error: &LakeError) {
        let kind = match error {
            LakeError::Clash { .. } => "clash",
            LakeError::TooManyConflicts { .. } => "conflicts",
            e => e.store_kind().map_or("other", |k| k.as_str()),
        };
        self.metrics.add("hooklake_lake_errors_total", kind, 1);
    }
}

/// The Delta tables of the lake, one handle per table (each keeps its snapshot between uses).
pub(crate) struct LakeTables {
    /// What this process owns of the lake.
    owned: Owned,
    /// The deriver's lease: no flush commits once it may have expired.
    fence: Mutex<Option<Arc<crate::derive::Fence>>>,
    lake: Lake,
    /// `hooklake-<instance id>`.
    app_id: String,
    /// Every table in pipeline order: the order in which a flush commits them.
    tables: Vec<(&'static str, SchemaRef, DeltaTable)>,
    /// Removed files a vacuum pass deleted (or found gone), so the next pass skips them.
    vacuumed: Mutex<HashSet<String>>,
    /// The last version this process committed to each table's log (for `/metrics`).
    versions: Mutex<BTreeMap<&'static str, i64>>,
}

impl LakeTables {
    pub(crate) fn new(lake: Lake, app_id: String) -> LakeTables {
        let tables = crate::flatten::table_schemas()
            .into_iter()
            .map(|(name, schema)| (name, schema, lake.table(name)))
            .collect();
        LakeTables {
            owned: Owned::default(),
            fence: Mutex::new(None),
            lake,
            app_id,
            tables,
            vacuumed: Mutex::new(HashSet::new()),
            versions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the tables live in an object store rather than on this machine's disk: then a
    /// flush's files are written to the staging directory and uploaded before their commit.
    pub(crate) fn is_remote(&self) -> bool {
        !self.lake.url().is_local()
    }

    /// Uploads the files a flush or a compaction wrote under `staging` (paths relative to it,
    /// `<table>/date=<date>/<file>`) to the same keys in the lake, several at once. Nothing is
    /// committed: until a log names them no Delta reader sees them, and start deletes them if
    /// none ever does. Returns the bytes uploaded.
    pub(crate) async fn upload_staged(
        &self,
        staging: &Path,
        relative: &[&str],
    ) -> Result<u64, LakeError> {
        let mut uploads = Vec::with_capacity(relative.len());
        for path in relative {
            let (table, in_table) = path.split_once('/').ok_or_else(|| LakeError::Log {
                table: path.to_string(),
                reason: "a staged file outside any table".into(),
            })?;
            let (_, _, delta) = self.table(table)?;
            uploads.push((staging.join(path), delta.file_path(in_table)));
        }
        self.lake.upload_all(uploads).await
    }

    fn table(&self, name: &str) -> Result<&(&'static str, SchemaRef, DeltaTable), LakeError> {
        self.tables
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| LakeError::Log {
                table: name.to_string(),
                reason: "not a hooklake table".into(),
            })
    }

    /// Rule R: in every table, the live files of flushes numbered above `committed` (the state
    /// store's last flush) belong to a flush that never committed. One commit per such table
    /// removes them, then they are deleted from the store. Returns how many, and the highest
    /// transaction version of this application in any table.
    pub(crate) async fn revert_uncommitted(&self, committed: u64) -> Result<Reverted, LakeError> {
        let mut reverted = Reverted {
            removed: 0,
            txn_floor: committed,
        };
        for (name, _, table) in &self.tables {
            let snapshot = table.snapshot().await?;
            if snapshot.version.is_none() {
                continue;
            }
            if let Some(txn) = snapshot.txns.get(&self.app_id) {
                reverted.txn_floor = reverted.txn_floor.max(txn.version.max(0) as u64);
            }
            let stale: Vec<String> = snapshot
                .files
                .keys()
                .filter(|path| self.owned.owns(name, file_name(path)))
                .filter(|path| flush_seq_of(file_name(path)).is_some_and(|seq| seq > committed))
                .cloned()
                .collect();
            if stale.is_empty() {
                continue;
            }
            tracing::warn!(
                table = name,
                files = stale.len(),
                "removing from the Delta log the files of a flush that never committed"
            );
            table
                .commit(&Commit {
                    removes: stale.clone(),
                    data_change: true,
                    operation: "DELETE",
                    ..Default::default()
                })
                .await?;
            for path in &stale {
                self.delete(table.file_path(path)).await?;
            }
            reverted.removed += stale.len();
        }
        Ok(reverted)
    }

    /// Deletes an object; one already gone is fine.
    async fn delete(&self, path: object_store::path::Path) -> Result<(), LakeError> {
        match self.lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("delete", &path, e)),
        }
    }

    /// Commits flush `flush_seq`'s files: for each table written, in pipeline order, the table is
    /// created if absent and one commit adds its files with the transaction
    /// `(app_id, flush_seq)`. Any error fails the flush; [`Self::revert_uncommitted`] undoes
    /// the tables committed before it.
    /// Commits a flush's files, one commit per table they belong to; returns, per table, the
    /// version written and the races lost on the way.
    pub(crate) async fn commit_flush(
        &self,
        flush_seq: u64,
        files: &[(&'static str, DataFile)],
    ) -> Result<Vec<(&'static str, i64, u32)>, LakeError> {
        let mut committed = 0;
        let mut versions = Vec::new();
        for (name, schema, table) in &self.tables {
            let adds: Vec<DataFile> = files
                .iter()
                .filter(|(t, _)| t == name)
                .map(|(_, f)| f.clone())
                .collect();
            if adds.is_empty() {
                continue;
            }
            if committed == 1 {
                crate::failpoint::hit("flush-between-delta-commits");
            }
            self.check_fence()?;
            table.create_if_absent(schema).await?;
            let outcome = table
                .commit(&Commit {
                    adds,
                    data_change: true,
                    txn: Some((self.app_id.clone(), flush_seq as i64)),
                    operation: "WRITE",
                    ..Default::default()
                })
                .await?;
            match outcome {
                CommitOutcome::AlreadyCommitted { txn_version } => {
                    // Flush numbers are above every transaction version read at the last
                    // revert, so this means another process writes with this data directory's id.
                    return Err(LakeError::Log {
                        table: name.to_string(),
                        reason: format!(
                            "flush {flush_seq} is already committed (transaction version {txn_version}): is another process using this data directory's instance id?"
                        ),
                    });
                }
                CommitOutcome::Committed { version, retries } => {
                    versions.push((*name, version, retries));
                    self.committed_version(name, version);
                }
            }
            committed += 1;
        }
        Ok(versions)
    }

    /// Converts a local lake written before tables had Delta logs: every table that has
    /// published files and no log is created, and one commit adds its committed files (those
    /// of flushes up to `committed`, and compacted files) as they are. Returns the files added.
    pub(crate) async fn convert(&self, root: &Path, committed: u64) -> Result<usize, LakeError> {
        let mut added = 0;
        for (name, schema, table) in &self.tables {
            let on_disk = crate::sink::published_files(root, name).map_err(|e| LakeError::Log {
                table: name.to_string(),
                reason: e.to_string(),
            })?;
            let files: Vec<&Path> = on_disk
                .iter()
                .map(|p| p.as_path())
                .filter(|p| {
                    let file = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    is_published(file) && flush_seq_of(file).is_none_or(|seq| seq <= committed)
                })
                .collect();
            if files.is_empty() || table.snapshot().await?.version.is_some() {
                continue;
            }
            let mut adds = Vec::with_capacity(files.len());
            for path in files {
                let date = path
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|d| d.to_str())
                    .and_then(|d| d.strip_prefix("date="))
                    .unwrap_or_default()
                    .to_string();
                let file = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                adds.push(DataFile::from_local(path, &date, file)?);
            }
            table.create_if_absent(schema).await?;
            table
                .commit(&Commit {
                    adds,
                    data_change: true,
                    operation: "CONVERT TO DELTA",
                    ..Default::default()
                })
                .await?;
            tracing::info!(
                table = name,
                files = on_disk.len(),
                "converted the table's files into a Delta table"
            );
            added += on_disk.len();
        }
        Ok(added)
    }

    /// Deletes data files that no version of their table's log names: uploads or writes of a
    /// flush or compaction that never committed. Only at start, while nothing else writes.
    pub(crate) async fn delete_untracked(&self) -> Result<usize, LakeError> {
        let mut deleted = 0;
        for (name, _, table) in &self.tables {
            if table.snapshot().await?.version.is_none() {
                // Without a log every file would look untracked; `convert` runs before this.
                continue;
            }
            if !self.owned.writes(name) {
                continue;
            }
            for path in table.untracked_files().await? {
                if !self.owned.owns(name, path.filename().unwrap_or_default()) {
                    continue;
                }
                tracing::warn!(table = name, path = %path, "deleting a data file its Delta log never committed");
                self.delete(path).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The live files of every partition, by `<table>/date=<date>`, as file names.
    pub(crate) async fn live_files(&self) -> Result<BTreeMap<String, BTreeSet<String>>, LakeError> {
        let mut live: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, _, table) in &self.tables {
            for path in table.snapshot().await?.files.keys() {
                if let Some((partition, file)) = path.rsplit_once('/') {
                    live.entry(format!("{name}/{partition}"))
                        .or_default()
                        .insert(file.to_string());
                }
            }
        }
        Ok(live)
    }

    /// Downloads files of a remote lake to `staging`, each at its path relative to the lake
    /// (`<table>/date=<date>/<name>`), several at once.
    pub(crate) async fn download(
        &self,
        staging: &Path,
        relative: &[String],
    ) -> Result<(), LakeError> {
        let mut running = tokio::task::JoinSet::new();
        let mut pending = relative.iter();
        let mut first_error = None;
        loop {
            while running.len() < 4 {
                let Some(path) = pending.next() else { break };
                let (table, in_table) = path.split_once('/').ok_or_else(|| LakeError::Log {
                    table: path.clone(),
                    reason: "a file outside any table".into(),
                })?;
                let key = self.table(table)?.2.file_path(in_table);
                let local = staging.join(path);
                let store = self.lake.store().clone();
                running.spawn(async move {
                    let bytes = store
                        .get(&key)
                        .await
                        .map_err(|e| store_error("get", &key, e))?
                        .bytes()
                        .await
                        .map_err(|e| store_error("get", &key, e))?;
                    let write = |local: &Path| -> std::io::Result<()> {
                        if let Some(dir) = local.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        std::fs::write(local, &bytes)
                    };
                    write(&local).map_err(|source| LakeError::Local {
                        path: local.clone(),
                        source,
                    })
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            if let Err(e) = done.map_err(LakeError::from).and_then(|r| r) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Commits a compaction of partition `date` of `table`: its inputs removed and its outputs
    /// added, with `dataChange: false`.
    pub(crate) async fn commit_compaction(
        &self,
        table: &str,
        date: &str,
        inputs: &[String],
        outputs: Vec<DataFile>,
    ) -> Result<CommitOutcome, LakeError> {
        let (name, _, delta) = self.table(table)?;
        let outcome = delta
            .commit(&Commit {
                adds: outputs,
                removes: inputs
                    .iter()
                    .map(|name| format!("date={date}/{name}"))
                    .collect(),
                data_change: false,
                operation: "OPTIMIZE",
                ..Default::default()
            })
            .await?;
        if let CommitOutcome::Committed { version, .. } = outcome {
            self.committed_version(name, version);
        }
        Ok(outcome)
    }

    fn committed_version(&self, table: &'static str, version: i64) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let at = versions.entry(table).or_insert(version);
        *at = (*at).max(version);
    }

    /// The last version this process committed to each table's log.
    pub(crate) fn versions(&self) -> Vec<(&'static str, i64)> {
        let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.iter().map(|(t, v)| (*t, *v)).collect()
    }

    /// Deletes files removed from a log (by compactions) more than `retention` ago. Returns how
    /// many were deleted.
    pub(crate) async fn vacuum(&self, retention: Duration) -> Result<usize, LakeError> {
        let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
        let mut deleted = 0;
        for (_, _, table) in &self.tables {
            let snapshot = table.snapshot().await?;
            for (path, remove) in &snapshot.tombstones {
                if remove.deletion_timestamp.unwrap_or(i64::MAX) > cutoff {
                    continue;
                }
                let key = table.file_path(path);
                if !self.vacuumed_insert(key.to_string()) {
                    continue;
                }
                match self.lake.store().delete(&key).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        self.vacuumed_forget(key.as_ref());
                        return Err(store_error("delete", &key, e));
                    }
                }
            }
        }
        Ok(deleted)
    }

    fn vacuumed_insert(&self, key: String) -> bool {
        self.vacuumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }

    fn vacuumed_forget(&self, key: &str) {
        self.vacuumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The last component of a path inside a table.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What each table's Delta commit adds for the files a flush wrote: sizes and statistics read
/// from their footers.
pub(super) fn data_files(
    sink: &crate::sink::Sink,
    files: &[crate::sink::FileWritten],
) -> Result<Vec<(&'static str, DataFile)>, LakeError> {
    files
        .iter()
        .map(|f| {
            let path = sink.root().join(&f.path);
            Ok((
                f.table,
                DataFile::from_local(&path, &f.date, file_name(&f.path))?,
            ))
        })
        .collect()
}

/// Downloads the live files of `table` of the lake at `url` into `into`, at their paths in the
/// lake (`<table>/date=<date>/<name>`); returns how many.
pub async fn download_table_at(
    url: &crate::lake::LakeUrl,
    options: &crate::lake::StoreOptions,
    table: &str,
    into: &Path,
) -> Result<usize, LakeError> {
    LakeTables::new(Lake::open(url, options)?, String::new())
        .download_table(table, into)
        .await
}

impl LakeTables {
    /// Downloads the live files of `table` into `into` (see [`download_table_at`]).
    pub(crate) async fn download_table(
        &self,
        table: &str,
        into: &Path,
    ) -> Result<usize, LakeError> {
        let prefix = format!("{table}/");
        let relative: Vec<String> = self
            .live_files()
            .await?
            .into_iter()
            .filter(|(partition, _)| partition.starts_with(&prefix))
            .flat_map(|(partition, names)| {
                names.into_iter().map(move |n| format!("{partition}/{n}"))
            })
            .collect();
        self.download(into, &relative).await?;
        Ok(relative.len())
    }
}

/// The live files of every table of the local lake at `root` (absolute paths), per table; `None`
/// for a table without a log.
pub fn live_local_files(
    root: &Path,
) -> Result<BTreeMap<&'static str, Option<Vec<std::path::PathBuf>>>, LakeError> {
    let url = crate::lake::LakeUrl::Local(root.to_path_buf());
    let files = live_files_at(&url, &Default::default())?;
    Ok(files
        .into_iter()
        .map(|(t, f)| {
            (
                t,
                f.map(|f| f.into_iter().map(std::path::PathBuf::from).collect()),
            )
        })
        .collect())
}

/// The live files of every table of the lake at `url` (absolute paths for a local lake, URLs
/// under `url` for a remote one), per table; `None` for a table without a log.
pub fn live_files_at(
    url: &crate::lake::LakeUrl,
    options: &crate::lake::StoreOptions,
) -> Result<BTreeMap<&'static str, Option<Vec<String>>>, LakeError> {
    let base = url.to_string();
    let base = base.trim_end_matches('/');
    let out = crate::lake::block_on(async {
        let lake = Lake::open(url, options)?;
        let mut out = BTreeMap::new();
        for name in crate::flatten::TABLE_NAMES {
            let table: DeltaTable = lake.table(name);
            let snapshot = table.snapshot().await?;
            let files = snapshot.version.map(|_| {
                snapshot
                    .files
                    .keys()
                    .map(|p| match url {
                        crate::lake::LakeUrl::Local(root) => {
                            root.join(name).join(p).display().to_string()
                        }
                        _ => format!("{base}/{name}/{p}"),
                    })
                    .collect()
            });
            out.insert(name, files);
        }
        Ok::<_, LakeError>(out)
    })
    .map_err(|source| LakeError::Local {
        path: std::path::PathBuf::from(base),
        source,
    })??;
    Ok(out)
}
