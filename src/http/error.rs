//! The HTTP API's error type and its mapping to status codes and bodies, in one
//! place. Bodies are the exact shapes GitLab Rails parses: `{"error": ...}` for
//! authentication failures; for every 422 FastAPI's list
//! `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, because Rails reads
//! `detail[0].msg` (the admin's "Test connection" shows it); `{"detail": ...}`
//! (a string) for everything else.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    auth::AuthError,
    docs_search::SearchError,
    models::{ModelError, TargetError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("Not Found")]
    NotFound,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Internal(&'static str),
    /// The request body does not match the schema (FastAPI answers 422).
    #[error("{0}")]
    Validation(String),
    /// The request's model cannot be used (unknown family, disabled, unsupported).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The model server failed; the message names its host, never its key.
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("Request body too large")]
    PayloadTooLarge,
    /// 400 with a message built from the request (unknown prompt, bad model metadata).
    #[error("{0}")]
    BadRequest(String),
    /// 403 with a message naming what is missing (`Unauthorized to access '<id>'`).
    #[error("{0}")]
    Denied(String),
    /// The prompts API's model failure: 421 "the model failed, not the gateway",
    /// detail `"<code>: <reason phrase>"` as the admin's "Test connection" reads it.
    #[error("{}", model_failure_detail(.0))]
    ModelFailed(ModelError),
    /// The documentation index failed or timed out (a missing index is no error).
    #[error(transparent)]
    DocsSearch(#[from] SearchError),
    /// Any error of the admin's "Test connection" call: same status, but the
    /// body in the list shape Rails' connection tester reads (`detail[0].msg`)
    /// for every status except 421, whose `detail` string it reads as is.
    #[error(transparent)]
    ConnectionCheck(Box<ApiError>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Validation(_) | ApiError::Target(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Model(ModelError::Status { status: 429, .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Model(ModelError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Model(_) => StatusCode::BAD_GATEWAY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::ModelFailed(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::DocsSearch(SearchError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::DocsSearch(SearchError::Index(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ConnectionCheck(inner) => inner.status(),
        }
    }

    /// The inner error of a connection-check wrapper, else this one.
    fn cause(&self) -> &ApiError {
        match self {
            ApiError::ConnectionCheck(inner) => inner.cause(),
            other => other,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let listed = status == StatusCode::UNPROCESSABLE_ENTITY
            || matches!(self, ApiError::ConnectionCheck(_));
        let body = match self.cause() {
            ApiError::Unauthorized(e) if listed => {
                // The connection tester reads only `detail`; keep `error` for everyone else.
                let mut body = validation_body(&e.to_string(), "authentication");
                body["detail"][0]["loc"] = json!(["header", "authorization"]);
                body["error"] = e.to_string().into();
                body
            }
            ApiError::Unauthorized(e) => json!({ "error": e.to_string() }),
            ApiError::ModelFailed(e) => json!({ "detail": model_failure_detail(e) }),
            ApiError::Model(ModelError::Status { status: 429, .. }) => {
                json!({ "detail": "Too many requests. Please try again later." })
            }
            other if listed => validation_body(&other.to_string(), error_type(other)),
            other => json!({ "detail": other.to_string() }),
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::Model(ModelError::Status {
            retry_after: Some(v),
            ..
        }) = self.cause()
            && let Ok(v) = axum::http::HeaderValue::from_str(v)
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        if matches!(self.cause(), ApiError::Model(_) | ApiError::ModelFailed(_)) {
            tracing::warn!(error = %self, "model call failed");
        }
        if matches!(self.cause(), ApiError::DocsSearch(_)) {
            tracing::warn!(error = %self, "documentation search failed");
        }
        resp
    }
}

/// FastAPI's validation error list with one entry. `msg` is the whole
/// message (it names the field, since Rails shows only `msg`); `loc` is
/// `["body", ...]` plus the field path the message starts with, if any
/// (`model_metadata.name: ...` → `["body", "model_metadata", "name"]`,
/// `context[2].content: ...` → `["body", "context", 2, "content"]`).
fn validation_body(msg: &str, kind: &str) -> serde_json::Value {
    let mut loc = vec![json!("body")];
    if let Some((path, _)) = msg.split_once(": ")
        && !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    {
        for part in path.split('.') {
            let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                loc.push(json!(name));
            }
            for index in indexes.split('[').map(|i| i.trim_end_matches(']')) {
                if let Ok(n) = index.parse::<u64>() {
                    loc.push(json!(n));
                }
            }
        }
    }
    json!({ "detail": [{ "loc": loc, "msg": msg, "type": kind }] })
}

/// Pydantic's error `type` closest to a 422's message.
fn error_type(e: &ApiError) -> &'static str {
    let msg = e.to_string();
    if msg.contains("missing field") || msg.contains("required") {
        "missing"
    } else if msg.contains("Invalid JSON") {
        "json_invalid"
    } else if msg.contains("must have at most") {
        "too_long"
    } else {
        "value_error"
    }
}

/// `"<code>: <reason phrase>"` for a model server's HTTP error (upstream's
/// text). Failures without a status get the code LiteLLM would report, with
/// the reason in parentheses so the admin sees what happened: 408 for a
/// timeout, 503 for a refused or failed connection, 502 for a broken answer.
fn model_failure_detail(e: &ModelError) -> String {
    let reason = |code: u16| {
        StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown Status")
    };
    match e {
        ModelError::Status { status, .. } => format!("{status}: {}", reason(*status)),
        ModelError::Timeout { .. } => format!("408: {} ({e})", reason(408)),
        ModelError::Connect { .. } => format!("503: {} ({e})", reason(503)),
        ModelError::InvalidResponse { .. } | ModelError::StreamBroken { .. } => {
            format!("502: {} ({e})", reason(502))
        }
        ModelError::Credentials { .. } => format!("401: {} ({e})", reason(401)),
    }
}
