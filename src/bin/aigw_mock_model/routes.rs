//! HTTP routes: the OpenAI-compatible endpoints, fault injection and the
//! `/_mock/*` observation endpoints.
//!
//! Every request is recorded before anything can fail, so a test can see what
//! the gateway sent even when the mock then hangs or errors. Bad input never
//! panics: it is a 400 in OpenAI's error shape.

use std::{error::Error as _, io, sync::Arc};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    knobs::{Fault, Knobs, Overrides},
    observe::Observe,
    render::{Api, Meta},
    reply::{ChatRequest, CompletionRequest, Content, Reply},
    stream::{Paced, Script},
};

/// Large enough for any prompt a gateway sends; the gateway itself rejects
/// huge bodies earlier.
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// `x-mock-tokens` beyond this is refused for non-streaming replies, which
/// are built whole.
const MAX_FULL_TOKENS: u64 = 1_000_000;

pub struct AppState {
    pub defaults: Knobs,
    /// `--fault-times`: how many more requests get the process-wide fault.
    pub fault_budget: Option<std::sync::atomic::AtomicU64>,
    pub observe: Arc<Observe>,
}

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/_mock/requests", get(requests).delete(clear_requests))
        .route("/_mock/stats", get(stats).delete(reset_stats))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind}});
    (status, Json(body)).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown path",
    )
}

/// A request read, recorded and parsed, plus its header overrides.
struct Received<T> {
    request: T,
    headers: Overrides,
}

/// Reads and records the body, then parses it as `T`.
async fn receive<T: DeserializeOwned>(s: &AppState, req: Request) -> Result<Received<T>, Response> {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            s.observe
                .record(&parts.method, &parts.uri, &parts.headers, Value::Null);
            let too_large = std::iter::successors(e.source(), |e| (*e).source())
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "request body too large",
                )
            } else {
                bad_request(format!("cannot read the request body: {e}"))
            });
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes);
    let typed = match &parsed {
        Ok(v) => Ok(T::deserialize(v)),
        Err(e) => Err(e.to_string()),
    };
    let recorded = match parsed {
        Ok(v) => v,
        Err(_) if bytes.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    s.observe
        .record(&parts.method, &parts.uri, &parts.headers, recorded);
    let headers = Overrides::from_headers(&parts.headers).map_err(bad_request)?;
    match typed {
        Ok(Ok(request)) => Ok(Received { request, headers }),
        Ok(Err(e)) => Err(bad_request(format!("invalid request: {e}"))),
        Err(e) => Err(bad_request(format!("request body is not JSON: {e}"))),
    }
}

/// A planned answer, before latency and faults.
struct Answer {
    meta: Meta,
    reply: Reply,
    stream: bool,
    include_usage: bool,
}

async fn chat(State(s): Shared, req: Request) -> Response {
    let got = match receive::<ChatRequest>(&s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = &got.request;
    let (script, _) = r.last_user();
    let knobs = match Overrides::from_directives(&script) {
        Ok(d) => budgeted(
            &s,
            s.defaults.with(&d).with(&got.headers),
            d.fault.or(got.headers.fault).is_some(),
        ),
        Err(e) => return bad_request(e),
    };
    let answer = Answer {
        meta: Meta::new(Api::Chat, r.model.as_deref(), r.prompt_tokens()),
        reply: r.plan(knobs.tokens),
        stream: r.stream.unwrap_or(false),
        include_usage: r.stream_usage(),
    };
    respond(&s, &knobs, answer).await
}

async fn completions(State(s): Shared, req: Request) -> Response {
    let got = match receive::<CompletionRequest>(&s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = &got.request;
    let knobs = match Overrides::from_directives(&r.script_text()) {
        Ok(d) => budgeted(
            &s,
            s.defaults.with(&d).with(&got.headers),
            d.fault.or(got.headers.fault).is_some(),
        ),
        Err(e) => return bad_request(e),
    };
    let answer = Answer {
        meta: Meta::new(Api::Completion, r.model.as_deref(), r.prompt_tokens()),
        reply: r.plan(knobs.tokens),
        stream: r.stream.unwrap_or(false),
        include_usage: r.stream_usage(),
    };
    respond(&s, &knobs, answer).await
}

async fn models(State(s): Shared, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    s.observe
        .record(&parts.method, &parts.uri, &parts.headers, Value::Null);
    let knobs = match Overrides::from_headers(&parts.headers) {
        Ok(h) => s.defaults.with(&h),
        Err(e) => return bad_request(e),
    };
    let body = json!({
        "object": "list",
        "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "aigw-mock-model"}],
    });
    wait_latency(&knobs).await;
    if let Some(f) = knobs.fault
        && let Some(resp) = fault_response(f).await
    {
        return resp;
    }
    json_response(body, knobs.fault == Some(Fault::Reset))
}

async fn wait_latency(knobs: &Knobs) {
    if knobs.latency_ms > 0 {
        tokio::time::sleep(knobs.latency()).await;
    }
}

/// The process-wide fault, while `--fault-times` allows it. Faults scripted
/// per request are always applied.
fn budgeted(s: &AppState, mut k: Knobs, scripted: bool) -> Knobs {
    if !scripted
        && k.fault.is_some()
        && let Some(budget) = &s.fault_budget
    {
        use std::sync::atomic::Ordering;
        let left = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_err() {
            k.fault = None;
        }
    }
    k
}

async fn respond(s: &AppState, knobs: &Knobs, a: Answer) -> Response {
    if !a.stream
        && let Content::Counted(n) = a.reply.content
        && n > MAX_FULL_TOKENS
    {
        return bad_request(format!(
            "x-mock-tokens above {MAX_FULL_TOKENS} needs \"stream\": true"
        ));
    }
    wait_latency(knobs).await;
    if let Some(f) = knobs.fault
        && let Some(resp) = fault_response(f).await
    {
        return resp;
    }
    let reset = knobs.fault == Some(Fault::Reset);
    if !a.stream {
        return json_response(a.meta.full(&a.reply), reset);
    }
    let script = Script::new(
        a.meta.chunks(),
        a.reply,
        a.include_usage,
        reset.then_some(2),
    );
    let body = Paced::new(
        script,
        knobs.ttft(),
        knobs.inter_token(),
        s.observe.stream_started(),
    );
    event_stream(Body::from_stream(body))
}

/// A 200 `text/event-stream` response.
fn event_stream(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A JSON 200; with `reset`, only its first half is sent before the
/// connection is aborted.
fn json_response(body: Value, reset: bool) -> Response {
    if !reset {
        return Json(body).into_response();
    }
    let full = Bytes::from(body.to_string());
    let half = full.slice(..full.len() / 2);
    // Yield once before failing so hyper flushes the half that was sent.
    let abort = futures_util::stream::once(async {
        tokio::task::yield_now().await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock fault: reset mid-body",
        ))
    });
    let parts = futures_util::stream::iter([Ok(half)]).chain(abort);
    let mut resp = Response::new(Body::from_stream(parts));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

const BROKEN_JSON: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"trunc"#;

/// Lines a strict SSE/JSON parser must reject; no `[DONE]` either.
const GARBAGE_SSE: &[&str] = &[
    "data: {\"choices\": [{\"delta\": {\"content\": \"unterminated\n\n",
    "this line is not a field\n\n",
    "data: <html>not json</html>\n\n",
    "event: ???\ndata: {]\n\n",
];

/// The response replacing the reply; `None` for `reset`, which plays the
/// reply and cuts it short instead.
async fn fault_response(fault: Fault) -> Option<Response> {
    tracing::debug!(%fault, "injecting fault");
    Some(match fault {
        Fault::Status500 => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "mock failure",
        ),
        Fault::Status429 => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "mock rate limit",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
            resp
        }
        Fault::InvalidJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            BROKEN_JSON,
        )
            .into_response(),
        Fault::Html => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            HTML_502,
        )
            .into_response(),
        Fault::Hang => std::future::pending().await,
        Fault::GarbageSse => {
            let chunks = GARBAGE_SSE
                .iter()
                .map(|s| Ok::<_, io::Error>(Bytes::from_static(s.as_bytes())));
            event_stream(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        Fault::ContextLength => {
            let body = json!({"error": {
                "message": "This model's maximum context length is 4096 tokens. However, you requested 9120 tokens (8096 in the messages, 1024 in the completion). Please reduce the length of the messages or completion.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Fault::Reset => return None,
    })
}

async fn requests(State(s): Shared) -> Response {
    Json(s.observe.requests()).into_response()
}

async fn clear_requests(State(s): Shared) -> StatusCode {
    s.observe.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(s): Shared) -> Response {
    Json(s.observe.stats()).into_response()
}

async fn reset_stats(State(s): Shared) -> StatusCode {
    s.observe.reset_stats();
    StatusCode::NO_CONTENT
}
