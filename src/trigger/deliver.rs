//! Sending the outbox: each due fact is posted to its trigger's URL with the Standard Webhooks
//! headers, at most `concurrency_per_target` at once per target, each attempt bounded by
//! `timeout_secs`; a 2xx answer delivers it, anything else schedules the next attempt or, once
//! the retry schedule is used up, gives it up. Every attempt is recorded in the state store
//! (and written to `trigger_deliveries` by the next flush).
//!
//! Invariant: an attempt is recorded only after its request ended, so a crash between the two
//! sends the fact again with the same `webhook-id` (a receiver deduplicates on it); a target
//! that is slow or failing holds only its own permits, never the loop, another target or the
//! ingestion; redirects are never followed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::matching::{self, Fact};
use super::{DeliveryConfig, Trigger, Triggers};
use crate::metrics::Metrics;
use crate::state::{Attempt, Entry, Next, Store};

/// Most due entries read from the store per pass.
const BATCH: usize = 512;
/// Longest sleep between passes (a pass also runs when a flush puts facts in the outbox).
const IDLE: Duration = Duration::from_secs(1);
/// Shortest sleep between passes while entries are due but wait for a permit or are in flight.
const BUSY: Duration = Duration::from_millis(50);
/// How often given-up deliveries past `keep_given_up_days` are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Most bytes of an answer's body `hooklake triggers test` prints.
const SHOWN_BODY_BYTES: usize = 4096;

/// The answer to one request: its status, or why there was none.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body: String,
    pub latency: Duration,
}

impl Answer {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The HTTP client of every trigger: TLS, no redirects, the attempt timeout.
pub fn client(config: &DeliveryConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(config.timeout_secs))
        .user_agent(concat!("hooklake/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with these settings builds")
}

/// Posts `body` for `fact` to `trigger`'s URL, signed, and returns the answer. Errors never
/// name the URL (it may hold a secret, as Slack's incoming webhooks do).
pub async fn send(
    client: &reqwest::Client,
    trigger: &Trigger,
    webhook_id: &str,
    body: Vec<u8>,
) -> Answer {
    let started = Instant::now();
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = client
        .post(&trigger.config.url)
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "content-type",
            trigger
                .config
                .content_type
                .as_deref()
                .unwrap_or("application/json"),
        );
    if !trigger.secrets.is_empty() {
        request = request.header(
            "webhook-signature",
            super::sign::signature(&trigger.secrets, webhook_id, timestamp, &body),
        );
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let mut text = response.text().await.unwrap_or_default();
            if text.len() > SHOWN_BODY_BYTES {
                let mut cut = SHOWN_BODY_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            let error = (!status.is_success()).then(|| {
                if status.is_redirection() {
                    format!("HTTP {} (redirects are not followed)", status.as_u16())
                } else {
                    format!("HTTP {}", status.as_u16())
                }
            });
            Answer {
                status: Some(status.as_u16()),
                error,
                body: text,
                latency: started.elapsed(),
            }
        }
        Err(e) => {
            let e = e.without_url();
            // The causes say what failed (a refused connection, a name not found); none holds
            // the URL's path, where a secret may be.
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                detail.push_str(": ");
                detail.push_str(&cause.to_string());
                source = cause.source();
            }
            let error = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {detail}")
            } else {
                detail
            };
            Answer {
                status: None,
                error: Some(error),
                body: String::new(),
                latency: started.elapsed(),
            }
        }
    }
}

/// The outbox's sender: one per server.
pub struct Deliverer {
    store: Arc<Store>,
    triggers: Arc<Triggers>,
    config: DeliveryConfig,
    client: reqwest::Client,
    /// Permits per target (scheme, host and port).
    targets: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Entries whose attempt is under way.
    in_flight: Mutex<HashSet<String>>,
    /// Notified by a flush that put facts in the outbox, and by `triggers retry`.
    wake: Arc<Notify>,
    /// Set after an attempt is recorded: the next flush has `trigger_deliveries` rows to write.
    attempts_waiting: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    pub fn new(
        store: Arc<Store>,
        triggers: Arc<Triggers>,
        config: DeliveryConfig,
        wake: Arc<Notify>,
        attempts_waiting: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Deliverer {
        Deliverer {
            client: client(&config),
            store,
            triggers,
            config,
            targets: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            wake,
            attempts_waiting,
            metrics,
        }
    }

    /// Sends due entries until `stop` is cancelled; attempts under way are left to finish on
    /// their own (one not recorded is sent again at the next start).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut purged_at: Option<Instant> = None;
        loop {
            let now = now_ms();
            // Given-up deliveries past their keeping time, once an hour.
            if self.config.keep_given_up_days > 0
                && purged_at.is_none_or(|t| t.elapsed() >= PURGE_EVERY)
            {
                purged_at = Some(Instant::now());
                let before =
                    now.saturating_sub(self.config.keep_given_up_days.saturating_mul(86_400_000));
                match self.store.purge_given_up(before) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deliveries = n, "forgot given-up trigger deliveries"),
                    Err(e) => tracing::warn!(error = %e, "cannot purge the trigger outbox"),
                }
            }
            // Permits are taken while the due entries are scanned, so an entry whose target is
            // busy (or whose attempt is under way) is skipped without being read, and the
            // entries after it still get their turn.
            let mut permits: HashMap<String, Option<OwnedSemaphorePermit>> = HashMap::new();
            let scanned = self.store.due_deliveries(now, BATCH, |trigger, id| {
                if self.in_flight().contains(id) {
                    return false;
                }
                match self.permit(trigger) {
                    Some(permit) => {
                        permits.insert(id.to_string(), permit);
                        true
                    }
                    None => false,
                }
            });
            let started = match scanned {
                Ok(entries) => {
                    let n = entries.len();
                    for entry in entries {
                        let permit = permits.remove(&entry.fact.webhook_id).flatten();
                        self.dispatch(entry, permit);
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the trigger outbox");
                    0
                }
            };
            let mut wait = IDLE;
            match self.store.next_delivery() {
                Ok((next, waiting)) => {
                    self.metrics.set_trigger_outbox(waiting);
                    // Entries due now that could not start wait for an attempt to end (which
                    // wakes this loop) or for the next pass; later ones for their time.
                    if let Some(at) = next
                        && (started > 0 || at > now_ms())
                    {
                        wait = Duration::from_millis(at.saturating_sub(now_ms())).clamp(BUSY, IDLE);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the trigger outbox"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for a request of `trigger` to its target: `Some(None)` for a trigger no longer
    /// configured (its attempt gives the fact up without a request), `None` when the target has
    /// no permit free.
    fn permit(&self, trigger: &str) -> Option<Option<OwnedSemaphorePermit>> {
        let Some(t) = self.triggers.get(trigger) else {
            return Some(None);
        };
        let semaphore = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target_of(&t.config.url))
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency_per_target)))
            .clone();
        semaphore.try_acquire_owned().ok().map(Some)
    }

    /// Starts the attempt at `entry`, holding `permit` until it ends; then wakes the loop, as a
    /// permit is free again. The entry is read again first: the scan may have read it before an
    /// attempt that has ended since recorded it (an attempt leaves the in-flight set only once
    /// it is recorded), and it is not attempted twice.
    fn dispatch(self: &Arc<Self>, scanned: Entry, permit: Option<OwnedSemaphorePermit>) {
        let id = scanned.fact.webhook_id.clone();
        if !self.in_flight().insert(id.clone()) {
            return;
        }
        let entry = match self.store.outbox_entry(&id) {
            Ok(Some(e))
                if !e.given_up && e.attempts == scanned.attempts && e.next_at_ms <= now_ms() =>
            {
                e
            }
            Ok(_) => {
                self.in_flight().remove(&id);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the trigger outbox");
                self.in_flight().remove(&id);
                return;
            }
        };
        let trigger = self.triggers.get(&entry.fact.trigger).cloned();
        let this = self.clone();
        tokio::spawn(async move {
            this.attempt(entry, trigger.as_ref()).await;
            drop(permit);
            this.in_flight().remove(&id);
            this.wake.notify_one();
        });
    }

    /// One attempt at `entry`, recorded with what comes next.
    async fn attempt(&self, entry: Entry, trigger: Option<&Trigger>) {
        let started_us = chrono::Utc::now().timestamp_micros();
        let answer = match trigger {
            None => Answer {
                status: None,
                error: Some("the trigger is no longer configured".to_string()),
                body: String::new(),
                latency: Duration::ZERO,
            },
            Some(t) => match matching::body(t, &entry.fact) {
                Ok(body) => send(&self.client, t, &entry.fact.webhook_id, body).await,
                Err(e) => Answer {
                    status: None,
                    error: Some(format!("body template: {e}")),
                    body: String::new(),
                    latency: Duration::ZERO,
                },
            },
        };
        crate::failpoint::hit("delivery-after-send");
        let number = entry.attempts + 1;
        let next = if answer.delivered() {
            Next::Delivered
        } else if trigger.is_none() {
            Next::GivenUp
        } else {
            match self.config.retry_after(number - entry.round_start) {
                Some(wait) => Next::RetryAt(now_ms() + wait.as_millis() as u64),
                None => Next::GivenUp,
            }
        };
        let (outcome, next_us) = match next {
            Next::Delivered => ("delivered", None),
            Next::RetryAt(ms) => ("retrying", Some(ms as i64 * 1000)),
            Next::GivenUp => ("given_up", None),
        };
        let record = Attempt {
            trigger: entry.fact.trigger.clone(),
            webhook_id: entry.fact.webhook_id.clone(),
            fact_table: entry.fact.table.clone(),
            event_id: entry.fact.event_id.clone(),
            attempt: number,
            attempted_at_us: started_us,
            status_code: answer.status,
            error: answer.error.clone(),
            latency_ms: answer.latency.as_secs_f64() * 1000.0,
            outcome: outcome.to_string(),
            next_attempt_at_us: next_us,
        };
        match self
            .store
            .record_attempt(&entry.fact.webhook_id, &record, next)
        {
            Ok(_) => {
                self.attempts_waiting.store(true, Ordering::Release);
                self.metrics
                    .add("hooklake_trigger_attempts_total", outcome, 1);
                if let Some(t) = trigger {
                    self.metrics.trigger_latency.observe(answer.latency);
                    match next {
                        Next::Delivered => {
                            self.metrics
                                .add("hooklake_trigger_delivered_total", &t.config.name, 1);
                            let delay_us = chrono::Utc::now().timestamp_micros()
                                - entry.created_ms as i64 * 1000;
                            if entry.attempts == 0 {
                                self.metrics
                                    .trigger_first_delivery
                                    .observe(Duration::from_micros(delay_us.max(0) as u64));
                            }
                        }
                        Next::GivenUp => {
                            self.metrics
                                .add("hooklake_trigger_given_up_total", &t.config.name, 1)
                        }
                        Next::RetryAt(_) => {}
                    }
                }
            }
            // Not recorded: the entry stays due and is tried again (with the same id).
            Err(e) => tracing::warn!(error = %e, "cannot record a trigger delivery attempt"),
        }
    }
}

/// Scheme, host and port of a URL: what the concurrency limit is counted by.
pub(crate) fn target_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// `hooklake triggers test NAME`: a sample fact of the trigger's kind, sent once; the answer.
pub async fn test(
    triggers: &Triggers,
    config: &DeliveryConfig,
    name: &str,
) -> Result<(Fact, Answer), String> {
    let trigger = triggers
        .get(name)
        .ok_or_else(|| format!("no trigger named {name:?} in the configuration"))?;
    let fact = matching::sample(trigger);
    let body = matching::body(trigger, &fact).map_err(|e| format!("body template: {e}"))?;
    let answer = send(&client(config), trigger, &fact.webhook_id, body).await;
    Ok((fact, answer))
}
