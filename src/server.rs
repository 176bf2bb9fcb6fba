//! The `serve` lifecycle: bind, accept, flush on triggers, and shut down without losing events.
//!
//! Shutdown is injected as a future (SIGINT/SIGTERM in the binary, anything in tests). Order on
//! shutdown: stop accepting connections and let in-flight requests finish, stop the trigger task,
//! then run a final flush (retried a few times) and return. Invariant: every event acknowledged
//! before shutdown is flushed before [`serve`] returns `Ok`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};
use crate::ingest::{AppState, router};
use crate::pipeline::{FlushReason, FlushReport, Pipeline, Triggers};

/// Attempts of the final flush before giving up.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;

/// Runs the server on `listener` until `shutdown` completes, then flushes. Returns the report of
/// the final flush.
///
/// `pipeline` comes from [`Pipeline::open`], which has already recovered the log: the listener
/// is only served once the buffer holds every event acknowledged before a crash.
pub async fn serve(
    config: &Config,
    pipeline: Arc<Pipeline>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<FlushReport> {
    let state = AppState::new(pipeline.clone(), config);
    let ready = state.ready.clone();
    let stop_triggers = CancellationToken::new();
    let triggers = tokio::spawn(
        pipeline
            .clone()
            .run_triggers(Triggers::from_config(config), stop_triggers.clone()),
    );

    let purge = tokio::spawn(purge_dedup_index(pipeline.clone(), stop_triggers.clone()));
    let receiver = config.role == Role::Ingest;
    // A receiver of a shared lake writes raw_events only: the deriver compacts, decays scores
    // and sends triggers. The receiver reports its watermark before it listens, then every
    // second.
    let derived = match receiver {
        true => {
            crate::derive::report_as_receiver(&pipeline, config, false).await?;
            vec![tokio::spawn(crate::derive::receiver_reports(
                pipeline.clone(),
                config.clone(),
                stop_triggers.clone(),
            ))]
        }
        false => derived_background(config, &pipeline, &stop_triggers),
    };
    ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        "hooklake is accepting webhooks"
    );
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        write_timeout: Duration::from_secs(config.write_timeout_secs),
    };
    accept_loop(listener, router(state), limits, pipeline.clone(), shutdown).await;
    ready.store(false, Ordering::Release);

    stop_triggers.cancel();
    // A background task that failed (a panic) is logged: the final flush happens regardless.
    for (name, task) in [("flush triggers", triggers), ("dedup purge", purge)]
        .into_iter()
        .chain(derived.into_iter().map(|t| ("background", t)))
    {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "background task failed");
        }
    }
    let mut attempt = 1;
    loop {
        match pipeline.flush(FlushReason::Shutdown).await {
            Ok(report) => {
                if receiver
                    && let Err(e) = crate::derive::report_as_receiver(&pipeline, config, true).await
                {
                    tracing::warn!(error = %e, "cannot report this receiver stopped");
                }
                pipeline.close();
                tracing::info!(
                    events = report.events,
                    files = report.files.len(),
                    "final flush done"
                );
                return Ok(report);
            }
            Err(e) if attempt < FINAL_FLUSH_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "final flush failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                let buffered = pipeline.gauges(false).buffer_events;
                return Err(anyhow::anyhow!(
                    "final flush failed, {buffered} buffered events were not written: {e}"
                ));
            }
        }
    }
}

/// The background work of a process that writes the derived tables: compaction, the score
/// decay and the triggers' sender, each until `stop`.
pub(crate) fn derived_background(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if config.compaction_enabled {
        tasks.push(tokio::spawn(compact_closed_partitions(
            pipeline.clone(),
            config.clone(),
            stop.clone(),
        )));
    }
    if config.scoring.enabled && config.scoring.half_life_days > 0.0 {
        tasks.push(tokio::spawn(decay_scores(pipeline.clone(), stop.clone())));
    }
    // Workflow triggers: the outbox's sender stops with the other background tasks; an attempt
    // under way then is not recorded, and is made again at the next start (same webhook-id).
    if let Some(d) = pipeline.deliverer(&config.trigger_delivery) {
        tasks.push(tokio::spawn(d.run(stop.clone())));
    }
    tasks
}

/// `serve --role derive`: the deriver (or its standby) until `shutdown`, with `/healthz`,
/// `/readyz` (its lease, progress and lag) and `/metrics` on `listener`.
pub async fn serve_deriver(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::routing::get;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let status: crate::derive::SharedStatus = Default::default();
    let stop = CancellationToken::new();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get({
                let status = status.clone();
                move || {
                    let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    async move {
                        let ready = s.problem.is_none() && s.lease != "stopped";
                        let code = match ready {
                            true => axum::http::StatusCode::OK,
                            false => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        };
                        let mut body = serde_json::to_value(&s).unwrap_or_default();
                        body["ready"] = ready.into();
                        body["role"] = "derive".into();
                        (code, axum::Json(body))
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let metrics = metrics.clone();
                move || {
                    let text = metrics.render(crate::metrics::Gauges {
                        ready: true,
                        ..Default::default()
                    });
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                crate::metrics::CONTENT_TYPE,
                            )],
                            text,
                        )
                    }
                }
            }),
        );
    let app = app.fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "this hooklake process is a deriver: it serves /healthz, /readyz and /metrics only; send webhooks to a receiver (serve --role ingest)"
            })),
        )
    });
    tracing::info!(listen = %listener.local_addr()?, "hooklake deriver: health and metrics");
    let http_stop = stop.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
    });
    let stopper = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.cancel();
    });
    let result = crate::derive::run(config, metrics, status, stop.clone(), false).await;
    stop.cancel();
    let _ = http.await;
    result
}

/// Limits on connections, against floods and slow clients.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// Open connections at most; more are closed as soon as they are accepted.
    max_connections: usize,
    /// A connection that has not sent a complete request head within this time is closed
    /// (slowloris).
    header_read_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed ([`WriteDeadline`]).
    write_timeout: Duration,
}

/// How long in-flight connections may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown`, serves each with HTTP/1.1 under `limits`, then lets the
/// requests in flight finish (up to [`DRAIN_TIMEOUT`]).
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    pipeline: Arc<Pipeline>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let closing = CancellationToken::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    pipeline.metrics().add("hooklake_connections_refused_total", "", 1);
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(
                    app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))),
                );
                let closing = closing.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout)
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(WriteDeadline::new(
                                stream,
                                limits.write_timeout,
                            )),
                            service,
                        );
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = closing.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    drop(listener);
    closing.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// A stream whose writes fail once they have made no progress for `limit`. hyper's timers
/// cover reading a request head; a client that pipelines requests and reads none of the answers
/// leaves hyper waiting to write, with no timer, holding the connection (and a slot of
/// `max_connections`) for good. A write that succeeds, even in part, starts the wait again.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// When the pending write gives up: set at the first `Pending`, cleared by progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What to answer for a write that returned `result`: it, after noting progress; or, while
    /// it is pending, an error once the wait is over.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        result: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of its answer within write_timeout_secs",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, result)
    }
}

/// How often ids older than the dedup window are forgotten.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Purges the dedup index now and every [`PURGE_INTERVAL`] until `stop`.
async fn purge_dedup_index(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    loop {
        let p = pipeline.clone();
        match tokio::task::spawn_blocking(move || p.purge_dedup_index()).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(purged = n, "forgot event ids older than the dedup window")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "dedup index purge failed; will retry"),
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
    }
}

/// How often lead scores are decayed (`half_life_days`).
const DECAY_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Decays lead scores now and every [`DECAY_INTERVAL`] until `stop`.
async fn decay_scores(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    loop {
        let now_us = chrono::Utc::now().timestamp_micros();
        if let Err(e) = pipeline.decay_scores(now_us).await {
            tracing::warn!(error = %e, "lead score decay failed; will retry");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(DECAY_INTERVAL) => {}
        }
    }
}

/// Compacts closed partitions, and deletes the files compactions removed once their retention
/// is over, every `compaction_interval_secs` until `stop`.
async fn compact_closed_partitions(
    pipeline: Arc<Pipeline>,
    config: Config,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(config.compaction_interval_secs);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let grace = chrono::Duration::hours(config.compaction_grace_hours as i64);
        let last_closed =
            crate::compact::last_closed_date(chrono::Utc::now(), config.partition_offset(), grace);
        let target = config.compaction_target_file_bytes;
        let selection = crate::compact::Selection::default();
        match pipeline.compact(&selection, last_closed, target).await {
            Ok(pass)
                if !pass.compacted.is_empty() || !pass.failed.is_empty() || pass.vacuumed > 0 =>
            {
                tracing::info!(
                    partitions = pass.compacted.len(),
                    failed = pass.failed.len(),
                    vacuumed = pass.vacuumed,
                    "compaction pass done"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "compaction pass failed; will retry"),
        }
    }
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed when this function
/// is called, not when the future is first polled, so a signal that arrives while the server is
/// still starting is not lost (and does not kill the process with the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, signal = name, "cannot listen for the signal");
            None
        }
    };
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
    let mut terminate = install(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            _ = recv(&mut interrupt) => tracing::info!("SIGINT received"),
            _ = recv(&mut terminate) => tracing::info!("SIGTERM received"),
        }
    }
}

/// Waits for a signal, or forever when its handler could not be installed.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
