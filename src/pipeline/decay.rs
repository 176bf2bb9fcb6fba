//! The daily decay pass of lead scores (`half_life_days`): rescores every scored contact at the
//! current time and writes, like a flush of its own, a `lead_scores` row for each contact whose
//! band the decay moved, committing the scores it changed with it.
//! Invariant: runs under the flush lock, so it is one more flush in the sequence: its files carry
//! the next flush number, are committed to the `lead_scores` Delta log (uploaded first on a
//! remote lake) and then recorded, with the scores, by the state store commit; a pass that fails
//! leaves rule R to revert what it committed, as a failed flush does.

use std::sync::atomic::Ordering;

use crate::flatten::Tables;
use crate::score::Scoring;
use crate::state::{Committed, States};

use super::Pipeline;
use super::flush::FlushError;

impl Pipeline {
    /// Decays every score to `now_us` (microseconds since the epoch) and writes the rows of the
    /// contacts whose band moved; returns their number (0 when scoring or decay is off).
    pub async fn decay_scores(&self, now_us: i64) -> Result<usize, FlushError> {
        let Some(rules) = self.scoring.clone().filter(|r| r.decays()) else {
            return Ok(0);
        };
        let _guard = self.flush_lock.lock().await;
        self.settle_unconfirmed()?;
        self.reopen_store_if_broken()?;
        let committed = self.store.committed()?.flush_seq;
        // What a failed flush or pass may have committed to the logs is reverted first (rule R).
        if self.leftovers.swap(false, Ordering::AcqRel) {
            match self.lake.revert_uncommitted(committed).await {
                Ok(reverted) => {
                    self.txn_floor
                        .fetch_max(reverted.txn_floor, Ordering::AcqRel);
                }
                Err(e) => {
                    self.leftovers.store(true, Ordering::Release);
                    return Err(e.into());
                }
            }
        }
        let flush_seq = committed.max(self.txn_floor.load(Ordering::Acquire)) + 1;
        let store = self.store.clone();
        let sink = self.sink.clone();
        let triggers = self.triggers.clone();
        let task = tokio::task::spawn_blocking(move || {
            let scores = store.all_scores()?;
            let (rows, next) = crate::score::decay::decay_pass(&scores, &rules, now_us);
            if rows.is_empty() {
                return Ok::<_, FlushError>(None);
            }
            let n = rows.len();
            let tables = Tables {
                lead_scores: rows,
                ..Tables::default()
            };
            // A band decay moved can fire a score trigger.
            let facts = match &triggers {
                Some(triggers) => {
                    let ids = tables.lead_scores.iter().filter_map(|r| r.contact_id);
                    let contacts = store.contacts(ids)?;
                    super::outbox::facts(triggers, &tables, &contacts, &Default::default(), &store)?
                }
                None => Vec::new(),
            };
            let files = sink.write(&tables, flush_seq)?;
            let data_files = super::lake::data_files(&sink, &files)?;
            Ok(Some((n, next, facts, files, data_files)))
        });
        let Some((n, next, facts, files, data_files)) =
            task.await.map_err(|e| FlushError::Task(e.to_string()))??
        else {
            return Ok(0);
        };
        // From here on, a failure leaves files (and maybe log entries) of a pass that did not
        // commit: rule R reverts them before the next flush.
        let published = async {
            if self.lake.is_remote() {
                let relative: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                self.lake.upload_staged(self.sink.root(), &relative).await?;
            }
            self.lake.commit_flush(flush_seq, &data_files).await
        };
        match published.await {
            Ok(versions) => self.lake_committed(&versions),
            Err(e) => {
                self.lake_failed(&e);
                self.leftovers.store(true, Ordering::Release);
                return Err(e.into());
            }
        }
        let record = Committed {
            flush_seq,
            replay_from: self.replay_from(),
        };
        let states = States {
            scoring: Scoring {
                scores: next,
                ..Scoring::default()
            },
            outbox: facts,
            ..States::default()
        };
        if let Err(e) = self.store.commit(record, &[], &states) {
            // Its rows would be seen without the scores they record: reverted before the next
            // flush, and the next pass writes them again.
            self.leftovers.store(true, Ordering::Release);
            return Err(e.into());
        }
        if self.lake.is_remote() {
            for f in &files {
                let path = self.sink.root().join(&f.path);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot delete a staged file");
                }
            }
        }
        self.facts_committed(&states.outbox);
        tracing::info!(contacts = n, flush_id = flush_seq, "lead scores decayed");
        Ok(n)
    }
}
