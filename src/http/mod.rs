//! The AI Gateway HTTP API (axum): routes, and the middleware every request
//! passes through (request id, access log, metrics, CORS, authentication).
//!
//! Authentication runs before routing, as upstream: any path that is not
//! explicitly public answers 401 without a token, so `curl /` shows the
//! documented `{"error":"No authorization header presented"}`. Handlers are
//! thin and call into `tokens`, `auth`, `suggestions`, `prompts`, `chat` and `models`.

mod chat;
mod completions;
mod definitions;
mod docs;
mod error;
mod generations;
mod lax;
mod monitoring;
mod prompts;
mod search;
mod suggestions;
mod token;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::cors::{AllowHeaders, Any, CorsLayer};

pub use error::ApiError;

use crate::{
    auth::Authenticator, docs_search::DocsIndex, health::Health, metrics::GatewayMetrics,
    models::service::ModelService, tokens::TokenAuthority,
};

/// Request bodies above this are refused before they are read in full.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Paths answered without authentication (upstream's skip list).
const PUBLIC_PATHS: &[&str] = &[
    "/monitoring/healthz",
    "/monitoring/ready",
    "/metrics",
    "/v1/models/definitions",
];

/// Everything a handler may need; one `Arc` to clone per extraction.
#[derive(Clone)]
pub struct HttpState(Arc<HttpContext>);

impl std::ops::Deref for HttpState {
    type Target = HttpContext;
    fn deref(&self) -> &HttpContext {
        &self.0
    }
}

/// The services behind [`HttpState`].
pub struct HttpContext {
    pub auth: Arc<Authenticator>,
    pub tokens: Arc<TokenAuthority>,
    pub metrics: GatewayMetrics,
    pub health: Arc<Health>,
    pub models: Arc<ModelService>,
    /// The documentation search index (`/v1/search/gitlab-docs`).
    pub docs: Arc<DocsIndex>,
    /// Prompt definitions (`/v1/prompts`, `/v2/chat/agent`).
    pub prompts: Arc<crate::prompts::PromptRegistry>,
    /// Extra public paths (the API docs, when enabled).
    pub public_paths: Arc<Vec<String>>,
}

/// Where the API docs are served, when enabled.
#[derive(Clone, Debug, Default)]
pub struct DocsSettings {
    pub docs_url: Option<String>,
    pub openapi_url: Option<String>,
}

/// Builds the whole HTTP application.
pub fn router(mut context: HttpContext, docs: &DocsSettings) -> Result<Router, String> {
    let mut public = Vec::new();
    let docs_router = docs::router(docs, &mut public)?;
    context.public_paths = Arc::new(public);
    let state = HttpState(Arc::new(context));

    let api = Router::new()
        .route("/monitoring/healthz", get(monitoring::healthz))
        .route("/monitoring/ready", get(monitoring::ready))
        .route("/v1/code/user_access_token", post(token::user_access_token))
        .route("/v2/code/completions", post(completions::code_completions))
        .route("/v2/completions", post(completions::code_completions))
        .route("/v2/code/generations", post(generations::code_generations))
        .route(
            "/v3/code/completions",
            post(suggestions::v3_code_completions),
        )
        .route(
            "/v4/code/suggestions",
            post(suggestions::v4_code_suggestions),
        )
        .route(
            "/v1/models/definitions",
            get(definitions::model_definitions),
        )
        .route("/v1/search/gitlab-docs", post(search::gitlab_docs))
        .route("/v1/prompts/{*prompt_id}", post(prompts::invoke_v1))
        .route("/v2/prompts/{*prompt_id}", post(prompts::invoke_v2))
        .route("/v2/chat/agent", post(chat::agent))
        .merge(docs_router)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());

    // Requested headers are mirrored, as Starlette does for `allow_headers=["*"]`:
    // browsers never let a literal `*` cover `Authorization`, which every
    // direct-connection call from a web IDE carries.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(600));

    Ok(api
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(limit_body))
        .layer(cors)
        .layer(middleware::from_fn_with_state(state, observe)))
}

/// Refuses a request whose declared body is larger than [`MAX_BODY_BYTES`]
/// from its headers alone, before any of the body is read; a body without a
/// declared length is cut at the same size by the extractors' limit.
async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Authenticates every non-public request and hands the [`Caller`](crate::auth::Caller) on.
async fn authenticate(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if PUBLIC_PATHS.contains(&path) || state.public_paths.iter().any(|p| p == path) {
        return next.run(req).await;
    }
    match state.auth.authenticate(req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            tracing::info!(path = %path, reason = %e, "request not authenticated");
            if prompts::is_connection_check_path(path) {
                // The admin's "Test connection" shows only `detail[0].msg`.
                return ApiError::ConnectionCheck(Box::new(ApiError::Unauthorized(e)))
                    .into_response();
            }
            ApiError::Unauthorized(e).into_response()
        }
    }
}

/// Parses a JSON body; every failure is a 422 (or 413) whose message starts
/// with the field's path (`current_file.file_name: Validation error: ...`),
/// which `error` turns into FastAPI's `loc`. Quoted values are cut from
/// parser messages: they could carry an API key.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::Validation("could not read the request body".into())
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let mut msg = String::new();
        let mut quoted = false;
        for ch in inner.to_string().chars() {
            if ch == '"' {
                if !quoted {
                    msg.push_str("\"...\"");
                }
                quoted = !quoted;
            } else if !quoted {
                msg.push(ch);
            }
        }
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Validation(format!("Invalid JSON: {msg}"));
        }
        let mut path = e.path().to_string();
        // `missing field `x`` is reported at the parent: name the field itself.
        if let Some(field) = msg
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            path = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        if path == "." {
            ApiError::Validation(format!("Validation error: {msg}"))
        } else {
            ApiError::Validation(format!("{path}: Validation error: {msg}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::Validation(format!("Invalid JSON: {e}")))?;
    Ok(value)
}

/// A usable incoming request id, or a fresh one.
fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            // A random id from the thread-local generator (reseeded from the
            // OS): no getrandom system call per request.
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            let mut buf = uuid::Uuid::encode_buffer();
            HeaderValue::from_str(id.simple().encode_lower(&mut buf))
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// Request id, `X-Process-Time`, metrics and the access log line.
async fn observe(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{elapsed:.6}")) {
        headers.insert("x-process-time", v);
    }
    headers.insert("x-request-id", id.clone());
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    if let Some(route) = route.as_deref()
        && !PUBLIC_PATHS.contains(&route)
    {
        state
            .metrics
            .observe(route, method.as_str(), status, elapsed);
    }
    tracing::info!(
        target: "aigw::access",
        method = %method,
        path = %path,
        status_code = status,
        duration_s = elapsed,
        correlation_id = id.to_str().unwrap_or(""),
        client = %peer,
        "{method} {path} {status}"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        content: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        context: Option<Vec<Item>>,
    }

    fn err(body: &str) -> String {
        parse_json::<Body>(Ok(axum::body::Bytes::from(body.to_string())))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn json_errors_start_with_the_field_path_and_hide_values() {
        assert_eq!(
            err(r#"{"context": []}"#),
            "name: Validation error: missing field `name` at line 1 column 15"
        );
        let e = err(r#"{"name": "n", "context": [{"content": 1}]}"#);
        assert!(
            e.starts_with("context[0].content: Validation error: invalid type"),
            "{e}"
        );
        let e = err(r#"{"name": 7}"#);
        assert!(e.starts_with("name: "), "{e}");
        let e = err(r#"{"name": "sk-secret", "context": [{"content": "a", "x": 1}], }"#);
        assert!(e.starts_with("Invalid JSON"), "{e}");
        assert!(!e.contains("sk-secret"), "{e}");
        assert!(err(r#"{"name": "n"} trailing"#).starts_with("Invalid JSON"));
    }
}
