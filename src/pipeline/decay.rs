//! The daily decay pass of lead scores (`half_life_days`): rescores every scored contact at the
//! current time and writes, like a flush of its own, a `lead_scores` row for each contact whose
//! band the decay moved, committing the scores it changed with it.
//! Invariant: runs under the flush lock, so it is one more flush in the sequence: its files carry
//! the next flush number and are published before the commit that records them and the scores.

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
        let store = self.store.clone();
        let sink = self.sink.clone();
        let task = tokio::task::spawn_blocking(move || {
            let scores = store.all_scores()?;
            let (rows, next) = crate::score::decay::decay_pass(&scores, &rules, now_us);
            if rows.is_empty() {
                return Ok::<_, FlushError>(None);
            }
            let flush_seq = store.committed()?.flush_seq + 1;
            let n = rows.len();
            let tables = Tables {
                lead_scores: rows,
                ..Tables::default()
            };
            sink.write(tables, flush_seq)?;
            Ok(Some((flush_seq, n, next)))
        });
        let Some((flush_seq, n, next)) =
            task.await.map_err(|e| FlushError::Task(e.to_string()))??
        else {
            return Ok(0);
        };
        let record = Committed {
            flush_seq,
            replay_from: self.replay_from(),
        };
        let states = States {
            scoring: Scoring {
                scores: next,
                ..Scoring::default()
            },
            ..States::default()
        };
        if let Err(e) = self.store.commit(record, &[], &states) {
            // Its rows would be seen without the scores they record: removed, and the next
            // pass writes them again.
            if let Err(removal) = self.sink.remove_uncommitted(flush_seq - 1) {
                tracing::error!(error = %removal, "cannot delete the files of a decay pass that did not commit");
                self.leftovers
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            return Err(e.into());
        }
        tracing::info!(contacts = n, flush_id = flush_seq, "lead scores decayed");
        Ok(n)
    }
}
