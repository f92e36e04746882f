//! Liveness and readiness. Neither depends on a model or on GitLab: readiness
//! means "every listener is bound and the configuration loaded", so an
//! air-gapped install reports ready without any cloud model.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::HttpState;

/// `GET /monitoring/healthz`: 200 `{}` whenever the process serves HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({}))
}

/// `GET /monitoring/ready`: 200 `{}` when serving, 503 `{}` before that and while draining.
/// Troubleshooting bypasses are reported here too, loudly, and so is an OIDC
/// issuer that has never answered (its fetch task logs its own failures).
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    for w in state.health.unsafe_settings() {
        tracing::warn!(warning = %w, "readiness probe: unsafe troubleshooting setting is active");
    }
    let warnings = state.health.warnings();
    let status = if state.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if warnings.is_empty() {
        (status, Json(json!({})))
    } else {
        (status, Json(json!({ "warnings": warnings })))
    }
}
