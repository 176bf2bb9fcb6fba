//! Dead letters at the door: an authenticated request whose body cannot be turned into events
//! is answered with its 4xx as always, and kept for `rejected_events` first.
//!
//! Kept: the reason and message of the answer, its status, the redacted path, the URL kind, the
//! headers without credentials ([`super::auth::Auth::is_credential_header`]), the receive time,
//! and at most `rejected_body_max_bytes` of the body. Not kept: requests without valid
//! credentials (401) or over the rate limit (429), bodies that never arrived (408, connection
//! errors), and unknown URL kinds (404): anyone could send those, and keeping them would let
//! anyone fill the disk. The 4xx is sent once the dead letter is as durable as an accepted event;
//! if it cannot be kept (disk nearly full, buffer full, log write failed), the answer is still
//! the same 4xx, and the loss is logged and counted (`hooklake_dead_letters_total{result="failed"}`).
//! Invariant: a failure to keep a dead letter never changes the answer, and no credential is
//! ever part of one.

use axum::http::HeaderMap;

use super::{ApiError, AppState};
use crate::event::EventType;
use crate::rejected::{Meta, Rejection};

/// A refused request, as the handler saw it.
pub struct Refused<'a> {
    pub received_at_us: i64,
    /// Path with any secret segment already redacted.
    pub path: &'a str,
    pub url_kind: Option<EventType>,
    pub headers: &'a HeaderMap,
    /// The body, or the part of it that was read.
    pub body: &'a [u8],
    /// Length of the whole body, when known.
    pub whole_len: Option<u64>,
}

/// Keeps the refused request in `rejected_events` (see the module docs); never fails.
pub async fn keep(state: &AppState, error: &ApiError, refused: Refused<'_>) {
    let headers = refused
        .headers
        .iter()
        .filter(|(name, value)| {
            !state
                .auth
                .is_credential_header(name.as_str(), value.as_bytes())
        })
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let meta = Meta {
        status: error.status().as_u16(),
        reason: error.reason().to_string(),
        error: error.to_string(),
        source_path: refused.path.to_string(),
        url_kind: refused.url_kind,
        headers,
        body_bytes: refused.whole_len,
        body_truncated: false,
    };
    let rejection = Rejection::new(
        refused.received_at_us,
        meta,
        refused.body,
        state.rejected_body_max_bytes,
    );
    let metrics = state.pipeline.metrics();
    match state.pipeline.accept_rejected(rejection).await {
        Ok(()) => metrics.add("hooklake_dead_letters_total", "stored", 1),
        Err(e) => {
            metrics.add("hooklake_dead_letters_total", "failed", 1);
            tracing::warn!(error = %e, reason = error.reason(), "rejected request not kept in rejected_events");
        }
    }
}
