//! Time and size flush triggers: an interval, a cron schedule (UTC), and the signal a size
//! trigger sends ([`Pipeline::run_triggers`]), firing flushes until shutdown.
//! Invariant: an occurrence of the schedule fires at most once; a failed flush backs off
//! instead of spinning, its events left buffered: 1 s after the first failure in a row, twice
//! as long after each next one, at most [`MAX_RETRY_WAIT`] (a store that is down is not
//! hammered, and is tried again within a minute of coming back); the final flush at shutdown is
//! the caller's, after it has stopped accepting events.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

use super::{FlushReason, Pipeline};

/// The longest wait after a failed flush before the triggers may start another.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// The wait after the `failures`-th failed flush in a row (1 for the first): 1 s, doubling,
/// at most [`MAX_RETRY_WAIT`].
pub fn retry_wait(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << doublings).min(MAX_RETRY_WAIT)
}

/// Time-based flush triggers.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// Flush this often; `None` turns the interval off.
    pub interval: Option<Duration>,
    /// Flush at each occurrence of this cron schedule (UTC).
    pub schedule: Option<croner::Cron>,
}

impl Triggers {
    pub fn from_config(config: &Config) -> Triggers {
        Triggers {
            interval: (config.flush_interval_secs > 0)
                .then(|| Duration::from_secs(config.flush_interval_secs)),
            schedule: config.schedule(),
        }
    }
}

impl Pipeline {
    /// Fires flushes on the time triggers and size triggers until `shutdown` is cancelled.
    ///
    /// The final flush at shutdown is the caller's, after it has stopped accepting events.
    pub async fn run_triggers(self: Arc<Self>, triggers: Triggers, shutdown: CancellationToken) {
        let mut interval = triggers.interval.map(|period| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        // The last occurrence of the schedule that fired: the next one is strictly after it, so
        // a timer that wakes a little early cannot fire the same occurrence twice.
        let mut last_occurrence: Option<DateTime<Utc>> = None;
        let mut failures = 0u32;
        loop {
            let next = triggers
                .schedule
                .as_ref()
                .and_then(|s| next_occurrence(s, last_occurrence));
            let until_schedule = next.map(|(_, wait)| wait);
            let reason = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { interval.as_mut().expect("guarded").tick().await }, if interval.is_some() => {
                    FlushReason::Interval
                }
                _ = tokio::time::sleep(until_schedule.unwrap_or_default()), if until_schedule.is_some() => {
                    last_occurrence = next.map(|(at, _)| at);
                    FlushReason::Schedule
                }
                _ = self.flush_due.notified() => FlushReason::Size,
            };
            if self.flush(reason).await.is_err() {
                // Back off so a persistent failure (a full disk, a store that is down) does not
                // spin; events stay buffered.
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_wait(failures)) => {}
                }
            } else {
                failures = 0;
            }
        }
    }
}

/// The schedule's next occurrence strictly after both now and `after`, and the wait until it.
fn next_occurrence(
    schedule: &croner::Cron,
    after: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, Duration)> {
    let now = Utc::now();
    let from = after.map_or(now, |a| a.max(now));
    let next = schedule.find_next_occurrence(&from, false).ok()?;
    Some((next, (next - now).to_std().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_flushes_back_off_doubling_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_wait(u32::MAX), MAX_RETRY_WAIT);
        assert_eq!(retry_wait(0).as_secs(), 1);
    }
    use crate::pipeline::testutil::*;

    #[tokio::test(start_paused = true)]
    async fn interval_trigger_fires_and_skips_empty_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |c| c.flush_interval_secs = 60);
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            p.clone()
                .run_triggers(Triggers::from_config(&Config::default()), stop.clone()),
        );
        p.accept_unlogged(event(1)).unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(flushes(&p, "ok"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle(&p, "ok", 1).await;
        assert_eq!(
            p.metrics().get("hooklake_flush_triggers_total", "interval"),
            1
        );
        assert_eq!(p.gauges(true).buffer_events, 0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle(&p, "empty", 1).await;
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_trigger_fires() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |_| {});
        let stop = CancellationToken::new();
        let triggers = Triggers {
            interval: None,
            schedule: crate::config::parse_schedule("* * * * *").ok(),
        };
        let task = tokio::spawn(p.clone().run_triggers(triggers, stop.clone()));
        p.accept_unlogged(event(1)).unwrap();
        // The next minute boundary is at most 60 s of (paused) time away.
        tokio::time::sleep(Duration::from_secs(61)).await;
        settle(&p, "ok", 1).await;
        // The schedule follows the wall clock while the test clock is paused: within 61 s of
        // test time the next occurrence and at most one more (on an empty buffer) can fire.
        let fired = p.metrics().get("hooklake_flush_triggers_total", "schedule");
        assert!((1..=2).contains(&fired), "{fired}");
        assert_eq!(
            p.metrics().get("hooklake_flush_triggers_total", "interval"),
            0
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn size_trigger_fires_without_waiting_for_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), |c| c.flush_max_rows = 2);
        let stop = CancellationToken::new();
        let triggers = Triggers {
            interval: None,
            schedule: None,
        };
        let task = tokio::spawn(p.clone().run_triggers(triggers, stop.clone()));
        assert!(!p.accept_unlogged(event(1)).unwrap().flush_due);
        assert!(p.accept_unlogged(event(2)).unwrap().flush_due);
        settle(&p, "ok", 1).await;
        assert_eq!(p.metrics().get("hooklake_flush_triggers_total", "size"), 1);
        assert_eq!(
            p.metrics()
                .get("hooklake_rows_written_total", "contact_events"),
            2
        );
        stop.cancel();
        task.await.unwrap();
    }
}
