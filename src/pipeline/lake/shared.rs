//! What a process of a shared lake owns of it: a receiver its own files of `raw_events` and
//! `rejected_events`, the deriver every other table; and the fence a deriver taking over
//! commits to every table it writes, so that a stalled predecessor's commit is refused or seen.
//! Invariant: a process reverts or deletes only files it owns; after [`LakeTables::fence_derivers`]
//! no deriver commit with a flush number at most the fence's can enter a derived table's log.

use std::sync::Arc;

use crate::lake::{Commit, CommitOutcome, LakeError};

use super::LakeTables;

/// The tables a receiver of a shared lake writes.
pub(crate) const RECEIVED_TABLES: [&str; 2] = ["raw_events", "rejected_events"];

/// The tables the deriver of a shared lake writes: every other one.
pub(crate) fn derived_tables() -> Vec<&'static str> {
    crate::flatten::table_schemas()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !RECEIVED_TABLES.contains(name))
        .collect()
}

/// The application id of every deriver's flushes in the Delta logs' `txn` actions: one for
/// all of them, so that a deriver that lost its lease cannot commit a flush number its
/// successor committed.
pub(crate) const DERIVER_APP_ID: &str = "hooklake-deriver";

/// Which files of a lake a process writes, and so may revert or delete as its own: one
/// process owns every file; a receiver of a shared lake only the files of `raw_events` and
/// `rejected_events` with its tag; the deriver every file of the other tables (any deriver
/// wrote them, under the one flush numbering that its state carries).
#[derive(Debug, Clone, Default)]
pub(crate) struct Owned {
    /// The tables written (`None`: all).
    pub tables: Option<Vec<&'static str>>,
    /// Only files with this writer tag (`None`: any).
    pub tag: Option<String>,
}

impl Owned {
    /// Whether `file` (a name) of `table` is this process's to revert or delete.
    pub(crate) fn owns(&self, table: &str, file: &str) -> bool {
        let table_ok = self.tables.as_ref().is_none_or(|t| t.contains(&table));
        let tag_ok = match &self.tag {
            None => true,
            Some(tag) => crate::sink::writer_tag_of(file) == Some(tag.as_str()),
        };
        table_ok && tag_ok
    }

    /// Whether this process writes `table`.
    pub(crate) fn writes(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(&table))
    }
}

impl LakeTables {
    /// Limits what this process reverts and deletes to what it writes (a shared lake).
    pub(crate) fn with_owned(mut self, owned: Owned) -> LakeTables {
        self.owned = owned;
        self
    }

    /// Makes every commit of a flush wait on `fence` (the deriver's lease).
    pub(crate) fn set_fence(&self, fence: Arc<crate::derive::Fence>) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some(fence);
    }

    /// Refuses to go on once the deriver's lease may have expired (always fine without one).
    pub(crate) fn check_fence(&self) -> Result<(), LakeError> {
        let fence = self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match fence {
            Some(fence) if !fence.holds() => Err(LakeError::Log {
                table: "(all)".into(),
                reason: "the deriver's lease may have expired: not committing".into(),
            }),
            _ => Ok(()),
        }
    }

    /// A deriver taking over fences off its predecessor: every table it writes is created if
    /// absent and gets a commit of the transaction `(DERIVER_APP_ID, F)` alone, `F` above
    /// every flush number any deriver used and above `committed`. A commit of the predecessor
    /// still on its way (a stalled process) then either lost the race for its log version to
    /// the fence, and finds its flush number already passed ([`CommitOutcome::AlreadyCommitted`]),
    /// or landed before it, where rule R, which runs next, finds it. Returns `F`.
    pub(crate) async fn fence_derivers(&self, committed: u64) -> Result<u64, LakeError> {
        let mut highest = committed as i64;
        for (name, schema, table) in &self.tables {
            if !self.owned.writes(name) {
                continue;
            }
            table.create_if_absent(schema).await?;
            if let Some(version) = table.txn_version(&self.app_id).await? {
                highest = highest.max(version);
            }
        }
        let fence = highest + 1;
        for (name, _, table) in &self.tables {
            if !self.owned.writes(name) {
                continue;
            }
            let outcome = table
                .commit(&Commit {
                    txn: Some((self.app_id.clone(), fence)),
                    operation: "FENCE",
                    ..Default::default()
                })
                .await?;
            if let CommitOutcome::AlreadyCommitted { txn_version } = outcome {
                return Err(LakeError::Log {
                    table: name.to_string(),
                    reason: format!(
                        "another deriver committed flush {txn_version} while this one took over"
                    ),
                });
            }
        }
        Ok(fence as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{DataFile, Lake};
    use crate::lake::{LakeUrl, StoreOptions};

    fn file(flush: u64) -> DataFile {
        DataFile {
            path: format!(
                "date=2026-03-01/{}",
                crate::sink::tagged_file_name(flush, Some("old"))
            ),
            date: "2026-03-01".into(),
            size: 1,
            stats: None,
        }
    }

    #[tokio::test]
    async fn a_takeover_fences_off_the_commits_of_the_deriver_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(
            &LakeUrl::Local(dir.path().to_path_buf()),
            &StoreOptions::default(),
        )
        .unwrap();
        let owned = Owned {
            tables: Some(derived_tables()),
            tag: None,
        };
        let before = LakeTables::new(lake.clone(), DERIVER_APP_ID.into()).with_owned(owned.clone());
        // The deriver before committed flush 3 to one table, which its state (at 2) never
        // recorded.
        let committed = before
            .commit_flush(3, &[("contact_events", file(3))])
            .await
            .unwrap();
        assert_eq!(committed.len(), 1);
        let after = LakeTables::new(lake, DERIVER_APP_ID.into()).with_owned(owned);
        let fence = after.fence_derivers(2).await.unwrap();
        assert_eq!(fence, 4);
        // Its flush 4, still on its way, arrives after the fence: refused in every table.
        for table in ["contact_events", "call_events"] {
            let outcome = before
                .table(table)
                .unwrap()
                .2
                .commit(&Commit {
                    adds: vec![file(4)],
                    data_change: true,
                    txn: Some((DERIVER_APP_ID.into(), 4)),
                    operation: "WRITE",
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(outcome, CommitOutcome::AlreadyCommitted { txn_version: 4 });
        }
        // What landed before the fence, rule R removes.
        let reverted = after.revert_uncommitted(2).await.unwrap();
        assert_eq!(reverted.removed, 1);
        assert_eq!(reverted.txn_floor, 4);
        assert!(
            after
                .live_files()
                .await
                .unwrap()
                .values()
                .all(|f| f.is_empty())
        );
        // A receiver's files are not the deriver's: rule R leaves them.
        let receiver = Owned {
            tables: Some(RECEIVED_TABLES.to_vec()),
            tag: Some("mine".into()),
        };
        assert!(receiver.owns("raw_events", "part-000000000009-mine.parquet"));
        assert!(!receiver.owns("raw_events", "part-000000000009-other.parquet"));
        assert!(!receiver.owns("contact_events", "part-000000000009-mine.parquet"));
    }
}
