//! `ApiError`: the one place that decides every HTTP error status.
//!
//! Client faults are 4xx with a JSON `{"error": "..."}` body that names the problem; overload is
//! a 503 with `Retry-After`; internal faults are a generic 500 whose detail is only logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::event::BodyError;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("cannot read body: {0}")]
    Unreadable(String),
    #[error("request body did not arrive within {0} s (body_read_timeout_secs)")]
    BodyTimeout(u64),
    #[error("unauthorized: {0}")]
    Unauthorized(super::auth::AuthFailure),
    #[error("admin endpoints need the admin token, or a loopback client when none is set")]
    AdminForbidden,
    #[error("unknown event kind {kind:?}; accepted kinds: {accepted}")]
    UnknownKind { kind: String, accepted: String },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("hooklake is at capacity ({0}); retry later")]
    Overloaded(String),
    #[error("too many refused requests from this address; retry in {0} s, or send a valid token")]
    RateLimited(u64),
    #[error("flush failed, events are kept for the next flush: {0}")]
    FlushFailed(String),
    #[error("{0}")]
    BadReportParameter(String),
    #[error("{0}")]
    BadAdminParameter(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Whether an authenticated request refused with this error goes to `rejected_events`:
    /// its body was received and cannot be turned into events (see [`super::deadletter`]).
    pub fn is_dead_letter(&self) -> bool {
        matches!(self, ApiError::Body(_) | ApiError::TooLarge(_))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body(
                BodyError::WrongShape(_) | BodyError::EmptyArray | BodyError::NotAnObject { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_)
            | ApiError::Body(BodyError::TooManyEvents { .. } | BodyError::StringTooLong(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Body(_)
            | ApiError::Unreadable(_)
            | ApiError::BadReportParameter(_)
            | ApiError::BadAdminParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::AdminForbidden => StatusCode::FORBIDDEN,
            ApiError::UnknownKind { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::FlushFailed(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, stable reason used as the metric label of a rejected request.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Body(BodyError::Empty) => "empty_body",
            ApiError::Body(BodyError::InvalidUtf8(_)) => "invalid_utf8",
            ApiError::Body(BodyError::TooDeep(_)) => "too_deep",
            ApiError::Body(BodyError::Syntax(_)) => "invalid_json",
            ApiError::Body(BodyError::WrongShape(_) | BodyError::NotAnObject { .. }) => {
                "wrong_shape"
            }
            ApiError::Body(BodyError::EmptyArray) => "empty_array",
            ApiError::Body(BodyError::TooManyEvents { .. }) => "too_many_events",
            ApiError::Body(BodyError::StringTooLong(_)) => "string_too_long",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unreadable(_) => "unreadable",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Unauthorized(failure) => failure.reason(),
            ApiError::AdminForbidden => "unauthorized_admin",
            ApiError::UnknownKind { .. } => "unknown_kind",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::FlushFailed(_) => "flush_failed",
            ApiError::BadReportParameter(_) => "bad_report_parameter",
            ApiError::BadAdminParameter(_) => "bad_admin_parameter",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal error answering a request");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        let retry_after = match &self {
            ApiError::RateLimited(secs) => Some(*secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come; the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
