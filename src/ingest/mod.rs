//! The HTTP interface: webhook endpoints, admin endpoints, health and metrics.
//!
//! `POST [/t/{token}]/webhooks/iclosed[/{kind}]`, in order: the refusal budget of the client
//! address ([`limit`]; an address refused too often gets 429 unless it carries a token), the raw
//! body within its size and time limits ([`body`]), authentication ([`auth`]), the URL kind, then
//! [`crate::event::parse_body`] and [`Pipeline::accept`]; the 200 is sent only after `accept`
//! returned. Authenticated deliveries are bounded by the buffer (503), never per address. An authenticated body that cannot be turned into events is kept as a dead
//! letter ([`deadletter`]) before its 4xx is sent. `GET /report` answers the engagement page
//! ([`crate::report::Renderer`]) behind the same guard as `/admin/*`. Invariant: this module knows no Arrow, no
//! file paths and no WAL file; every error response is built by [`ApiError`].

pub mod auth;
pub mod body;
pub mod deadletter;
pub mod error;
pub mod limit;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};

use crate::event::{self, EventType};
use crate::pipeline::{AcceptError, FlushReason, FlushReport, Pipeline};
use crate::wal::Entry;
pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Longest time a request body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Most bytes of a rejected body kept in `rejected_events`.
    pub rejected_body_max_bytes: usize,
    /// Depth, event count and string length limits of a body.
    pub body_limits: event::BodyLimits,
    /// True once the server accepts events (after start-up; later, after log recovery).
    pub ready: Arc<AtomicBool>,
    /// How long after its day a partition is closed, for `POST /admin/compact`.
    pub compaction_grace: chrono::Duration,
    /// Target size of compacted files.
    pub compaction_target_file_bytes: u64,
    /// Who may post webhooks.
    pub auth: Arc<auth::Auth>,
    /// Refused requests each client address may send per minute before it gets 429.
    pub refusals: Arc<limit::RefusalBudget>,
    /// Whether the client address comes from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Token for `/admin/*`; without one, admin endpoints answer loopback clients only.
    pub admin_token: Option<String>,
    /// Renders `GET /report` (one at a time, reused until the next flush).
    pub report: Arc<crate::report::Renderer>,
}

impl AppState {
    /// The state of a server for `pipeline`, not yet ready.
    pub fn new(pipeline: Arc<Pipeline>, config: &crate::config::Config) -> AppState {
        AppState {
            pipeline,
            max_body_bytes: config.max_body_bytes,
            body_read_timeout: std::time::Duration::from_secs(config.body_read_timeout_secs),
            rejected_body_max_bytes: config.rejected_body_max_bytes,
            body_limits: event::BodyLimits::from_config(config),
            ready: Arc::new(AtomicBool::new(false)),
            compaction_grace: chrono::Duration::hours(config.compaction_grace_hours as i64),
            compaction_target_file_bytes: config.compaction_target_file_bytes,
            auth: Arc::new(auth::Auth::from_config(config)),
            refusals: Arc::new(limit::RefusalBudget::new(
                config.refused_requests_per_minute,
            )),
            trust_forwarded_for: config.trust_forwarded_for,
            admin_token: config.admin_token.clone(),
            report: Arc::new(crate::report::Renderer::new(
                config.lake().to_string(),
                "duckdb".to_string(),
                crate::query::Access {
                    store: config.store_options(),
                    extensions: config.duckdb_extensions.clone(),
                },
            )),
        }
    }
}

/// The body of a 200 answer to a webhook.
#[derive(Debug, Serialize)]
pub struct Ack {
    /// New events taken from the body (durable when the answer is sent).
    pub accepted: usize,
    /// Events of the body already written or already pending: answered, not taken again.
    pub duplicates: usize,
    /// The `event_id` of each, in body order.
    pub event_ids: Vec<String>,
}

/// Builds the router; tests drive it with `tower::ServiceExt::oneshot`, no socket needed.
///
/// Every route but health, readiness and metrics is behind [`limit::guard`], so that an
/// operator can still watch a flood from the address it comes from.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/admin/flush", post(admin_flush))
        .route("/admin/compact", post(admin_compact))
        .route("/admin/triggers/retry", post(admin_triggers_retry))
        .route("/report", get(report))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_guard,
        ));
    let guarded = Router::new()
        .route("/webhooks/iclosed", post(webhook))
        .route("/webhooks/iclosed/{kind}", post(webhook))
        .route("/t/{token}/webhooks/iclosed", post(webhook))
        .route("/t/{token}/webhooks/iclosed/{kind}", post(webhook))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit::guard,
        ));
    let observed = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed);
    guarded
        .merge(observed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// Every webhook route: `[/t/{token}]/webhooks/iclosed[/{kind}]`.
async fn webhook(
    State(state): State<AppState>,
    params: Option<Path<HashMap<String, String>>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let mut params = params.map(|Path(p)| p).unwrap_or_default();
    let (token, kind) = (params.remove("token"), params.remove("kind"));
    handle(&state, token, kind, &uri, &headers, body).await
}

/// Every webhook route: read, authenticate, resolve the URL kind, ingest (or keep the dead
/// letter), answer.
async fn handle(
    state: &AppState,
    token: Option<String>,
    kind: Option<String>,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = std::time::Instant::now();
    // A receiver of a shared lake reports a watermark of receive times to the deriver: this
    // request holds it back until its events are buffered or refused.
    let _arrival =
        (state.pipeline.role() == crate::config::Role::Ingest).then(|| state.pipeline.arriving());
    // Whether the request proved a credential: its refusal is then not counted against its
    // address (see `limit`).
    let mut authenticated = false;
    let result = async {
        let presented = auth::Presented {
            path_token: token.as_deref(),
            query: uri.query(),
        };
        // The path is stored with the events and dead letters: never with a secret in it.
        let path = auth::redact_path(uri.path());
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let limit = state.max_body_bytes;
        let body = match body::read(body, limit, state.body_read_timeout, declared).await {
            Ok(body) => body,
            Err(body::BodyFault::TooLarge { prefix, declared }) => {
                let error = ApiError::TooLarge(limit);
                // The signature of a body that is not read whole cannot be checked: only a
                // token makes it a dead letter.
                if state.auth.token_valid(presented, headers) {
                    authenticated = true;
                    let refused = deadletter::Refused {
                        received_at_us: Utc::now().timestamp_micros(),
                        path: &path,
                        url_kind: kind.as_deref().and_then(url_kind),
                        headers,
                        body: &prefix,
                        whole_len: declared,
                    };
                    deadletter::keep(state, &error, refused).await;
                }
                return Err(error);
            }
            Err(body::BodyFault::TimedOut) => {
                return Err(ApiError::BodyTimeout(state.body_read_timeout.as_secs()));
            }
            Err(body::BodyFault::Unreadable(message)) => {
                return Err(ApiError::Unreadable(message));
            }
        };
        state
            .auth
            .check(presented, headers, &body, Utc::now().timestamp())
            .map_err(ApiError::Unauthorized)?;
        authenticated = true;
        let kind = match kind {
            None => None,
            Some(name) => match url_kind(&name) {
                Some(t) => Some(t),
                None => {
                    return Err(ApiError::UnknownKind {
                        kind: name,
                        accepted: EventType::url_kinds().join(", "),
                    });
                }
            },
        };
        let received_at_us = Utc::now().timestamp_micros();
        match ingest(state, &path, kind, body.clone(), received_at_us).await {
            Err(error) if error.is_dead_letter() => {
                let refused = deadletter::Refused {
                    received_at_us,
                    path: &path,
                    url_kind: kind,
                    headers,
                    body: &body,
                    whole_len: Some(body.len() as u64),
                };
                deadletter::keep(state, &error, refused).await;
                Err(error)
            }
            other => other,
        }
    }
    .await;
    let mut response = answer(state, result, started);
    if authenticated {
        response.extensions_mut().insert(limit::Authenticated);
    }
    response
}

/// The event type a URL kind names; `None` for a name we do not know.
fn url_kind(name: &str) -> Option<EventType> {
    EventType::from_name(name).filter(|t| *t != EventType::Unknown)
}

/// Lets `/admin/*` requests through with the admin token, or without one from loopback.
async fn admin_guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = match &state.admin_token {
        Some(_) => admin_token_valid(&state, request.headers()),
        // Without connection info the request came from inside the process (tests).
        None => request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_none_or(|info| info.0.ip().is_loopback()),
    };
    if allowed {
        next.run(request).await
    } else {
        state
            .pipeline
            .metrics()
            .add("hooklake_requests_total", "unauthorized_admin", 1);
        ApiError::AdminForbidden.into_response()
    }
}

/// `GET /report[?from=&to=&source=&account=]`: the engagement page (see [`crate::report`]),
/// reused while no flush has happened since it was rendered (`X-Report-Cache: hit`).
async fn report(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let params: Vec<(String, String)> = match query.as_deref().map(url_pairs) {
        Some(Ok(pairs)) => pairs,
        Some(Err(message)) => return ApiError::BadReportParameter(message).into_response(),
        None => Vec::new(),
    };
    let known = ["from", "to", "source", "account"];
    if let Some((name, _)) = params.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        return ApiError::BadReportParameter(format!(
            "unknown parameter {name:?}; known: from, to, source, account"
        ))
        .into_response();
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let today = Utc::now().date_naive();
    let filters = match crate::report::Filters::parse(
        get("from"),
        get("to"),
        get("source"),
        get("account"),
        today,
    ) {
        Ok(filters) => filters,
        Err(e) => return ApiError::BadReportParameter(e.to_string()).into_response(),
    };
    let flushes = state.pipeline.metrics().get("hooklake_flushes_total", "ok");
    match state.report.get(filters, flushes).await {
        Ok((page, reused)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::HeaderName::from_static("x-report-cache"),
                    if reused { "hit" } else { "miss" },
                ),
            ],
            page.as_str().to_owned(),
        )
            .into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// The `name=value` pairs of a query string, percent-decoded.
fn url_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let decode = |s: &str| -> Result<String, String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                    out.push(hex);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Whether `headers` carry the admin token (`Authorization: Bearer`); false when none is set.
fn admin_token_valid(state: &AppState, headers: &HeaderMap) -> bool {
    state.admin_token.as_ref().is_some_and(|token| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| auth::constant_time_eq(given.as_bytes(), token.as_bytes()))
    })
}

/// Counts the outcome of a webhook request and renders it.
fn answer(
    state: &AppState,
    result: Result<Ack, ApiError>,
    started: std::time::Instant,
) -> Response {
    let metrics = state.pipeline.metrics();
    match result {
        Ok(ack) => {
            metrics.ack_latency.observe(started.elapsed());
            metrics.add("hooklake_requests_total", "accepted", 1);
            Json(ack).into_response()
        }
        Err(e) => {
            metrics.add("hooklake_requests_total", e.reason(), 1);
            tracing::info!(reason = e.reason(), error = %e, "webhook request rejected");
            e.into_response()
        }
    }
}

async fn ingest(
    state: &AppState,
    path: &str,
    kind: Option<EventType>,
    body: Bytes,
    received_at_us: i64,
) -> Result<Ack, ApiError> {
    let events = event::parse_body(&body, kind, received_at_us, path, state.body_limits)?;
    // What the debug line of each event says, taken before the events move into the buffer
    // and written once the request is accepted.
    let described: Vec<[String; 3]> = if tracing::enabled!(tracing::Level::DEBUG) {
        events.iter().map(describe).collect()
    } else {
        Vec::new()
    };
    let event_ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let entry = Entry {
        received_at_us,
        url_kind: kind,
        source_path: path.to_string(),
        body: body.to_vec(),
    };
    let outcome = state
        .pipeline
        .accept(entry, events)
        .await
        .map_err(|e| match e {
            AcceptError::Task(message) => ApiError::Internal(message),
            other => ApiError::Overloaded(other.to_string()),
        })?;
    for (position, [event_type, contact_id, updated_attributes]) in described.iter().enumerate() {
        let event_id = event_ids[position].as_str();
        if outcome.duplicates.contains(&position) {
            tracing::debug!(event_id, event_type, contact_id, "duplicate event skipped");
        } else {
            tracing::debug!(
                event_id,
                event_type,
                contact_id,
                updated_attributes,
                "event accepted"
            );
        }
    }
    Ok(Ack {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates.len(),
        event_ids,
    })
}

/// An event's type, contact id and `updatedAttributes` as its debug log line shows them (the
/// seed documentation asks receivers to log these); the JSON text of the values, empty when
/// absent.
fn describe(event: &event::Envelope) -> [String; 3] {
    let object = event.object();
    let text = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_default();
    [
        event.event_type.as_str().to_string(),
        text(object.get("id").or_else(|| object.get("contactId"))),
        text(object.get("updatedAttributes")),
    ]
}

async fn admin_flush(State(state): State<AppState>) -> Result<Json<FlushReport>, ApiError> {
    state
        .pipeline
        .flush(FlushReason::Manual)
        .await
        .map(Json)
        .map_err(|e| match e {
            // Held back for disk space: a condition to wait out, not a fault.
            crate::pipeline::FlushError::NoRoom(no) => ApiError::Overloaded(no.to_string()),
            e => ApiError::FlushFailed(e.to_string()),
        })
}

/// Compacts the closed partitions now and returns what was merged.
async fn admin_compact(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pipeline = &state.pipeline;
    let (grace, target) = (state.compaction_grace, state.compaction_target_file_bytes);
    let last_closed =
        crate::compact::last_closed_date(Utc::now(), pipeline.partition_offset(), grace);
    let done = pipeline
        .compact(&crate::compact::Selection::default(), last_closed, target)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!(done)))
}

/// Which given-up trigger deliveries `POST /admin/triggers/retry` sends again.
#[derive(Debug, serde::Deserialize)]
struct RetryQuery {
    /// Only this trigger's (all when absent).
    trigger: Option<String>,
    /// Only facts that entered the outbox at or after this time (RFC 3339).
    since: Option<String>,
}

/// Puts given-up trigger deliveries back in line: `{"requeued": n}`.
async fn admin_triggers_retry(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<RetryQuery>,
) -> Result<Json<Value>, ApiError> {
    let since_ms = match &q.since {
        None => 0,
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| ApiError::BadAdminParameter(format!("since: not an RFC 3339 time: {e}")))?
            .timestamp_millis()
            .max(0) as u64,
    };
    let pipeline = state.pipeline.clone();
    let requeued = tokio::task::spawn_blocking(move || {
        pipeline.retry_given_up(q.trigger.as_deref(), since_ms)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "requeued": requeued })))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the server accepts events, the data directory is writable, and flushes get
/// through (a failed or held-back flush makes it unready until one commits).
async fn readyz(State(state): State<AppState>) -> Response {
    let started = state.ready.load(Ordering::Acquire);
    let pipeline = state.pipeline.clone();
    let writable = tokio::task::spawn_blocking(move || pipeline.probe_writable()).await;
    let problem = match (started, writable) {
        (false, _) => Some("not accepting events (starting or shutting down)".to_string()),
        (true, Ok(Err(e))) => Some(format!("data directory is not writable: {e}")),
        (true, Err(e)) => Some(e.to_string()),
        (true, Ok(Ok(()))) => state.pipeline.flush_problem(),
    };
    let mut body = match &problem {
        None => json!({ "ready": true }),
        Some(reason) => json!({ "ready": false, "reason": reason }),
    };
    // A receiver of a shared lake also says so, and how old the watermark it reports is.
    if state.pipeline.role() == crate::config::Role::Ingest {
        body["role"] = "ingest".into();
        body["watermark_age_secs"] = state
            .pipeline
            .watermark_us()
            .map(|w| ((Utc::now().timestamp_micros() - w).max(0) as f64) / 1e6)
            .into();
    }
    match problem {
        None => Json(body).into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let gauges = state.pipeline.gauges(state.ready.load(Ordering::Acquire));
    let text = state.pipeline.metrics().render(gauges);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
