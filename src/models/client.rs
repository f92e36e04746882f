//! The one outbound HTTP client every model provider shares (process trust
//! store, optional client certificate, replaced on SIGHUP), and the request
//! plumbing they have in common: connect retries, the response-header
//! timeout, error bodies read within a bound, a re-armed idle timer for
//! streams.

use std::{pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::ModelError;
use crate::trust::TrustStore;

/// Connect attempts for one call (first try + retries), connection errors only.
const CONNECT_ATTEMPTS: u32 = 3;
/// Largest non-streamed response body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest error body read for a message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Optional client certificate for model endpoints (`AIGW_MTLS__*`).
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Builds the pooled client used for every model call (and the credential
/// endpoints of the cloud platforms: STS, instance metadata, Google OAuth).
pub fn http_client(
    trust: &TrustStore,
    cert: Option<&ClientCert>,
) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let certs = trust
        .certificates()
        .iter()
        .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok());
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(certs)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aigw/", env!("CARGO_PKG_VERSION")));
    if let Some(c) = cert {
        let mut pem = c.cert_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&c.key_pem);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("AIGW_MTLS__CERT_FILE/AIGW_MTLS__KEY_FILE: {e}"))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the model HTTP client: {e}"))
}

/// The shared client; [`SharedClient::set`] swaps it for all providers at once.
#[derive(Clone)]
pub struct SharedClient(Arc<ArcSwap<reqwest::Client>>);

impl SharedClient {
    pub fn new(client: reqwest::Client) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(client)))
    }

    pub fn get(&self) -> Arc<reqwest::Client> {
        self.0.load_full()
    }

    /// Replaces the client (new trust store after SIGHUP).
    pub fn set(&self, client: reqwest::Client) {
        self.0.store(Arc::new(client));
    }
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClient")
    }
}

/// Sends the request `build` makes (again for each connect retry) and waits
/// at most `timeout` for the response head; non-2xx becomes
/// [`ModelError::Status`] with the body's most useful short text.
pub async fn send(
    build: impl Fn() -> reqwest::RequestBuilder,
    endpoint: &str,
    timeout: Duration,
) -> Result<reqwest::Response, ModelError> {
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        match tokio::time::timeout(timeout, build().send()).await {
            Err(_) => {
                return Err(ModelError::Timeout {
                    endpoint: endpoint.to_string(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            Ok(Ok(resp)) => break resp,
            Ok(Err(e)) if e.is_connect() && attempt < CONNECT_ATTEMPTS => {
                tracing::debug!(endpoint = %endpoint, attempt, "model endpoint connect failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * 3u64.pow(attempt - 1))).await;
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(ModelError::Timeout {
                    endpoint: endpoint.to_string(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            Ok(Err(e)) => {
                return Err(ModelError::Connect {
                    endpoint: endpoint.to_string(),
                    message: crate::telemetry::error_chain(&e),
                });
            }
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited(resp, MAX_ERROR_BODY, timeout)
        .await
        .unwrap_or_default();
    Err(ModelError::Status {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        message: error_message(&body),
        retry_after,
    })
}

/// Reads a body of at most `limit` bytes, each chunk within `timeout`.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Err(_) => return Err("timed out reading the body".into()),
            Ok(Err(e)) => return Err(crate::telemetry::error_chain(&e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("body larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// A 2xx JSON body, bounded.
pub async fn json_body(
    endpoint: &str,
    resp: reqwest::Response,
    timeout: Duration,
) -> Result<Value, ModelError> {
    let invalid = |message: String| ModelError::InvalidResponse {
        endpoint: endpoint.to_string(),
        message,
    };
    let body = read_limited(resp, MAX_BODY, timeout)
        .await
        .map_err(invalid)?;
    serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid JSON: {e}")))
}

/// The most useful short text of an error body (OpenAI, Anthropic, AWS and
/// Google JSON shapes, else plain text; never an HTML page).
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for ptr in [
            "/error/message",
            "/0/error/message",
            "/message",
            "/Message",
            "/detail",
            "/error",
        ] {
            if let Some(s) = v.pointer(ptr).and_then(Value::as_str) {
                return truncate(s, 300);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim_start().starts_with('<') {
        return "non-JSON (HTML) error page".to_string();
    }
    truncate(text.trim(), 300)
}

pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The bound between two items of a stream: one timer, moved on only when it
/// fires early (instead of a new timer per item).
pub struct IdleTimer {
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
}

impl IdleTimer {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            deadline: tokio::time::Instant::now() + idle,
        }
    }

    pub fn seconds(&self) -> f64 {
        self.idle.as_secs_f64()
    }

    /// The next item of `s`, or `Err(())` when none came within the bound.
    pub async fn next<S: Stream + Unpin>(&mut self, s: &mut S) -> Result<Option<S::Item>, ()> {
        loop {
            tokio::select! {
                biased;
                n = s.next() => {
                    self.deadline = tokio::time::Instant::now() + self.idle;
                    return Ok(n);
                }
                () = &mut self.sleep => {
                    if tokio::time::Instant::now() < self.deadline {
                        let deadline = self.deadline;
                        self.sleep.as_mut().reset(deadline);
                        continue;
                    }
                    return Err(());
                }
            }
        }
    }
}

/// A response body read as server-sent events.
pub type SseStream = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

pub fn sse(resp: reqwest::Response) -> SseStream {
    use eventsource_stream::Eventsource;
    Box::pin(resp.bytes_stream().eventsource())
}

/// A platform's refusal in words an administrator acts on: the message of a
/// [`ModelError::Status`] with one of `statuses` is rewritten by `say` (given
/// the platform's own message), everything else is passed on.
pub fn reword(e: ModelError, statuses: &[u16], say: impl FnOnce(&str) -> String) -> ModelError {
    match e {
        ModelError::Status {
            endpoint,
            status,
            message,
            retry_after,
        } if statuses.contains(&status) => ModelError::Status {
            message: say(&message),
            endpoint,
            status,
            retry_after,
        },
        other => other,
    }
}

/// How long an unbounded throttling answer asks clients to wait, when the
/// platform (Bedrock, Vertex AI) sends no `Retry-After` of its own.
pub const DEFAULT_RETRY_AFTER: &str = "5";

/// Cloud platforms' throttling: a 429 that always carries a `Retry-After`.
pub fn with_retry_after(e: ModelError) -> ModelError {
    match e {
        ModelError::Status {
            endpoint,
            status: 429,
            message,
            retry_after: None,
        } => ModelError::Status {
            endpoint,
            status: 429,
            message,
            retry_after: Some(DEFAULT_RETRY_AFTER.to_string()),
        },
        other => other,
    }
}
