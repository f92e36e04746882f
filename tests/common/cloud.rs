//! One loopback server standing in for every cloud model platform, checking
//! what the real one checks, with implementations of its own (not the
//! gateway's crates):
//!
//! - Amazon Bedrock (`/model/{id}/converse[-stream]`): verifies the SigV4
//!   signature from the AWS specification with `ring` (canonical request with
//!   double-encoded path, credential scope, signed headers, session token),
//!   with the secret of the key it issued or was given, and refuses keys past
//!   their validity; or a Bedrock API key. Streams answer in AWS event-stream
//!   frames built here byte by byte (prelude, CRC32s, typed headers).
//! - AWS STS (`POST /`, `AssumeRoleWithWebIdentity`) and EC2 instance
//!   metadata (IMDSv2 token, role, credentials): issue short-lived keys.
//! - Google OAuth (`POST /token`): verifies the service-account JWT (RS256
//!   with the account's public key, audience = this token URI, issuer, scope)
//!   and issues short-lived tokens; Vertex AI (`/v1/projects/...`) checks
//!   project, location, publisher, method, token and body.
//! - Azure OpenAI (`/openai/deployments/{d}/chat/completions`): api-version
//!   query and `api-key` header; Anthropic (`/v1/messages`): `x-api-key`,
//!   `anthropic-version`, body shape.
//!
//! The model's reply and faults are scripted from the prompt, as with the
//! mock model: `REPLY: <text>` (to the end of its line, `\n` for newlines)
//! and `FAULT: 500|429|403|invalid|hang|reset|toolong|exception`.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::stream;
use serde_json::{Value, json};

/// An AWS key the fake knows.
#[derive(Clone)]
pub struct AwsKey {
    pub secret: String,
    pub session_token: Option<String>,
    issued: Instant,
    /// Refused after this long (None: forever).
    valid_for: Option<Duration>,
}

/// What the fake expects and issues.
pub struct CloudSettings {
    pub region: String,
    pub project: String,
    pub location: String,
    pub azure_key: String,
    pub azure_api_version: String,
    pub anthropic_key: String,
    pub bedrock_api_key: String,
    /// The service account whose JWTs the token endpoint accepts: email and (n, e).
    pub service_account: Option<(String, String, String)>,
    /// `expires_in` of issued Google tokens, and how long the fake honours them.
    pub google_lifetime: (u64, Duration),
    /// STS / IMDS: role ARN, web identity token, advertised lifetime, honoured lifetime.
    pub role_arn: String,
    pub web_identity_token: String,
    pub aws_lifetime: (u64, Duration),
}

impl Default for CloudSettings {
    fn default() -> Self {
        Self {
            region: "us-gov-west-1".into(),
            project: "duo-project".into(),
            location: "us-east5".into(),
            azure_key: "azure-key-7f3a9c".into(),
            azure_api_version: "2024-10-21".into(),
            anthropic_key: "sk-ant-test-5d2e1b".into(),
            bedrock_api_key: "bedrock-api-key-ABSK42".into(),
            service_account: None,
            google_lifetime: (3600, Duration::from_secs(3600)),
            role_arn: "arn:aws:iam::123456789012:role/aigw".into(),
            web_identity_token: "eyJ.web-identity.token".into(),
            aws_lifetime: (3600, Duration::from_secs(3600)),
        }
    }
}

/// One request the fake took.
#[derive(Clone, Debug)]
pub struct Seen {
    pub platform: &'static str,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

struct CloudState {
    settings: CloudSettings,
    base: Mutex<String>,
    aws_keys: Mutex<HashMap<String, AwsKey>>,
    google_tokens: Mutex<HashMap<String, Instant>>,
    imds_tokens: Mutex<Vec<String>>,
    counter: Mutex<u64>,
    hits: Mutex<HashMap<&'static str, usize>>,
    seen: Mutex<Vec<Seen>>,
    violations: Mutex<Vec<String>>,
}

pub struct FakeCloud {
    pub url: String,
    state: Arc<CloudState>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeCloud {
    pub async fn start(settings: CloudSettings) -> Self {
        let state = Arc::new(CloudState {
            settings,
            base: Mutex::new(String::new()),
            aws_keys: Mutex::new(HashMap::new()),
            google_tokens: Mutex::new(HashMap::new()),
            imds_tokens: Mutex::new(Vec::new()),
            counter: Mutex::new(0),
            hits: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        *state.base.lock().unwrap() = url.clone();
        // No Nagle: streams go out in many small writes, as real platforms' do.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            state,
            _task: task,
        }
    }

    /// Registers a static AWS key (as if from the environment or a profile).
    pub fn add_aws_key(&self, id: &str, secret: &str, session_token: Option<&str>) {
        self.state.aws_keys.lock().unwrap().insert(
            id.to_string(),
            AwsKey {
                secret: secret.into(),
                session_token: session_token.map(str::to_string),
                issued: Instant::now(),
                valid_for: None,
            },
        );
    }

    pub fn hits(&self, what: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self, platform: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.platform == platform)
            .unwrap_or_else(|| panic!("no {platform} request"))
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Every secret the fake knows or issued (for "never in logs" checks).
    pub fn secrets(&self) -> Vec<String> {
        let s = &self.state.settings;
        let mut out = vec![
            s.azure_key.clone(),
            s.anthropic_key.clone(),
            s.bedrock_api_key.clone(),
            s.web_identity_token.clone(),
        ];
        for k in self.state.aws_keys.lock().unwrap().values() {
            out.push(k.secret.clone());
            out.extend(k.session_token.clone());
        }
        out.extend(self.state.google_tokens.lock().unwrap().keys().cloned());
        out
    }
}

impl CloudState {
    fn hit(&self, what: &'static str) {
        *self.hits.lock().unwrap().entry(what).or_insert(0) += 1;
    }

    fn next_id(&self) -> u64 {
        let mut c = self.counter.lock().unwrap();
        *c += 1;
        *c
    }

    fn violation(&self, what: String) -> Response {
        self.violations.lock().unwrap().push(what.clone());
        (StatusCode::FORBIDDEN, axum::Json(json!({"message": what}))).into_response()
    }
}

// ---------- scripting ----------

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The prompt's `FAULT:` and `REPLY:` directives.
fn script(body: &Value, platform: &str) -> (Option<String>, String) {
    let mut all = Vec::new();
    strings(body, &mut all);
    let fault = all.iter().find_map(|s| {
        let at = s.find("FAULT: ")?;
        Some(
            s[at + 7..]
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string(),
        )
    });
    let reply = all
        .iter()
        .rev()
        .find_map(|s| {
            let at = s.find("REPLY: ")?;
            Some(
                s[at + 7..]
                    .lines()
                    .next()
                    .unwrap_or("")
                    .replace("\\n", "\n"),
            )
        })
        .unwrap_or_else(|| format!("Final Answer: fake {platform} answer"));
    (fault, reply)
}

fn chunks(reply: &str) -> Vec<String> {
    reply.split_inclusive(' ').map(str::to_string).collect()
}

/// Accepts the request and never sends a response head.
async fn hang_before_head() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK.into_response()
}

/// A streamed body: `parts`, then (reset) a broken connection, after a pause
/// so the response head and the first parts are on the wire first.
fn streamed(content_type: &str, parts: Vec<Vec<u8>>, reset: bool) -> Response {
    use futures_util::StreamExt;
    let mut parts = parts;
    if reset {
        parts.truncate(parts.len().div_ceil(2));
    }
    let items = stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
    );
    let body = if reset {
        let cut = stream::once(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("reset by the fake"))
        });
        Body::from_stream(items.chain(cut))
    } else {
        Body::from_stream(items)
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

// ---------- the router ----------

async fn handle(
    State(s): State<Arc<CloudState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let hdr: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    if path.starts_with("/latest/") {
        return imds(&s, &method, &path, &hdr);
    }
    if method == Method::POST && path == "/" {
        return sts(&s, &body);
    }
    if method == Method::POST && path == "/token" {
        return google_token(&s, &body).await;
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let platform = if path.starts_with("/model/") {
        "bedrock"
    } else if path.starts_with("/v1/projects/") {
        "vertex"
    } else if path.contains("/openai/deployments/") {
        "azure"
    } else if path == "/v1/messages" {
        "anthropic"
    } else {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    };
    {
        let mut seen = s.seen.lock().unwrap();
        // Bounded: benchmarks send millions of requests.
        if seen.len() >= 500 {
            seen.drain(..250);
        }
        seen.push(Seen {
            platform,
            path: path.clone(),
            query: query.clone(),
            headers: hdr.clone(),
            body: json.clone(),
        });
    }
    match platform {
        "bedrock" => bedrock(&s, &path, &query, &hdr, &body, &json).await,
        "vertex" => vertex(&s, &path, &query, &hdr, &json).await,
        "azure" => azure(&s, &path, &query, &hdr, &json).await,
        _ => anthropic(&s, &hdr, &json).await,
    }
}

// ---------- AWS: SigV4 from the specification ----------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, data).as_ref().to_vec()
}

/// RFC 3986 encoding of everything but unreserved characters (SigV4's UriEncode).
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Checks a SigV4 `Authorization` header; returns the access key id.
fn verify_sigv4(
    s: &CloudState,
    method: &str,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> Result<String, String> {
    let auth = headers
        .get("authorization")
        .ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(", ") {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(format!("malformed credential scope {credential}"));
    };
    if terminator != "aws4_request" || service != "bedrock" {
        return Err(format!("wrong scope {credential}"));
    }
    if region != s.settings.region {
        return Err(format!("signed for region {region}"));
    }
    let key = s
        .aws_keys
        .lock()
        .unwrap()
        .get(key_id)
        .cloned()
        .ok_or(format!("unknown access key {key_id}"))?;
    if key.valid_for.is_some_and(|v| key.issued.elapsed() > v) {
        return Err(
            "ExpiredTokenException: the security token included in the request is expired".into(),
        );
    }
    let amz_date = headers.get("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date does not match the scope date".into());
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return Err(format!("{required} not signed"));
        }
    }
    if let Some(token) = &key.session_token {
        if headers.get("x-amz-security-token") != Some(token) {
            return Err("missing or wrong x-amz-security-token".into());
        }
        if !signed.contains(&"x-amz-security-token") {
            return Err("x-amz-security-token not signed".into());
        }
    }
    // Canonical URI: each segment of the path as sent, encoded once more.
    let canonical_uri = path
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &signed {
        let value = headers
            .get(*name)
            .ok_or(format!("signed header {name} not sent"))?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        sha256_hex(body)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{}", key.secret).as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let expected = hex(&hmac(&k_signing, to_sign.as_bytes()));
    if expected != signature {
        return Err("SignatureDoesNotMatch".into());
    }
    Ok(key_id.to_string())
}

/// One AWS event-stream frame (string headers), built from the format's spec.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = json_response(status, json!({"message": message}));
    r.headers_mut().insert(
        "x-amzn-errortype",
        format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")
            .parse()
            .unwrap(),
    );
    r
}

async fn bedrock(
    s: &CloudState,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    raw: &[u8],
    body: &Value,
) -> Response {
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        if token != s.settings.bedrock_api_key {
            return s.violation("unknown Bedrock API key".into());
        }
    } else if let Err(e) = verify_sigv4(s, "POST", path, query, headers, raw) {
        return s.violation(format!("SigV4: {e}"));
    }
    if headers.get("content-type").map(String::as_str) != Some("application/json") {
        return s.violation("content-type is not application/json".into());
    }
    let Some(rest) = path.strip_prefix("/model/") else {
        return s.violation(format!("bad path {path}"));
    };
    let (model, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
    if model.contains('/') {
        return s.violation(format!("model id not encoded as one segment: {model}"));
    }
    if body.get("messages").and_then(Value::as_array).is_none() {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "messages: required",
        );
    }
    let (fault, reply) = script(body, "bedrock");
    let stream = action == "converse-stream";
    match fault.as_deref() {
        Some("500") => {
            return aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "internal failure",
            );
        }
        Some("429") => {
            return aws_error(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
        }
        Some("403") => {
            return aws_error(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "You don't have access to the model with the specified model ID.",
            );
        }
        Some("toolong") => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "Input is too long for requested model.",
            );
        }
        Some("hang") => return hang_before_head().await,
        Some("invalid") if !stream => {
            return (StatusCode::OK, "{\"output\": [").into_response();
        }
        _ => {}
    }
    if !stream {
        return json_response(
            StatusCode::OK,
            json!({"output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
                   "metrics": {"latencyMs": 1}}),
        );
    }
    if fault.as_deref() == Some("invalid") {
        return streamed(
            "application/vnd.amazon.eventstream",
            vec![b"\x00\x00\x00\x20garbage, not a frame at all......".to_vec()],
            false,
        );
    }
    if fault.as_deref() == Some("exception") {
        let f = frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            json!({"message": "Too many tokens, please wait before trying again."})
                .to_string()
                .as_bytes(),
        );
        return streamed("application/vnd.amazon.eventstream", vec![f], false);
    }
    let mut parts = vec![event(
        "messageStart",
        json!({"role": "assistant", "p": "abcd"}),
    )];
    for c in chunks(&reply) {
        parts.push(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": c}, "p": "abcdefgh"}),
        ));
    }
    parts.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    parts.push(event("messageStop", json!({"stopReason": "end_turn"})));
    parts.push(event(
        "metadata",
        json!({"usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
               "metrics": {"latencyMs": 1}}),
    ));
    // Frames split across reads at odd places, as TCP delivers them.
    let joined: Vec<u8> = parts.concat();
    let split: Vec<Vec<u8>> = joined.chunks(37).map(<[u8]>::to_vec).collect();
    streamed(
        "application/vnd.amazon.eventstream",
        split,
        fault.as_deref() == Some("reset"),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issues a short-lived key; returns (id, secret, token, expiration).
fn issue_aws_key(s: &CloudState, prefix: &str) -> (String, String, String, String) {
    let n = s.next_id();
    let id = format!("ASIA{prefix}{n:08}");
    let secret = format!("issued-secret-{prefix}-{n}-wJalrXUtnFEMI");
    let token = format!("issued-session-token-{prefix}-{n}");
    let (advertised, honoured) = s.settings.aws_lifetime;
    s.aws_keys.lock().unwrap().insert(
        id.clone(),
        AwsKey {
            secret: secret.clone(),
            session_token: Some(token.clone()),
            issued: Instant::now(),
            valid_for: Some(honoured),
        },
    );
    (id, secret, token, iso8601(unix_now() + advertised))
}

fn sts(s: &CloudState, body: &[u8]) -> Response {
    s.hit("sts");
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity") {
        return (StatusCode::BAD_REQUEST, "unsupported action").into_response();
    }
    if form.get("RoleArn") != Some(&s.settings.role_arn)
        || form.get("WebIdentityToken") != Some(&s.settings.web_identity_token)
    {
        s.violations
            .lock()
            .unwrap()
            .push("STS: wrong role or web identity token".into());
        return (
            StatusCode::FORBIDDEN,
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>",
        )
            .into_response();
    }
    let (id, secret, token, expiration) = issue_aws_key(s, "STS");
    let xml = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:gitlab:aigw</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/aigw/session</Arn>
      <AssumedRoleId>AROATEST:session</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{id}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    );
    let mut r = (StatusCode::OK, xml).into_response();
    r.headers_mut()
        .insert("content-type", "text/xml".parse().unwrap());
    r
}

fn imds(
    s: &CloudState,
    method: &Method,
    path: &str,
    headers: &HashMap<String, String>,
) -> Response {
    if method == Method::PUT && path == "/latest/api/token" {
        if !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
            return StatusCode::BAD_REQUEST.into_response();
        }
        s.hit("imds_token");
        let token = format!("imds-session-{}", s.next_id());
        s.imds_tokens.lock().unwrap().push(token.clone());
        let mut r = (StatusCode::OK, token).into_response();
        r.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            "21600".parse().unwrap(),
        );
        return r;
    }
    let token = headers
        .get("x-aws-ec2-metadata-token")
        .cloned()
        .unwrap_or_default();
    if !s.imds_tokens.lock().unwrap().contains(&token) {
        // IMDSv2 only: no session token, no answer.
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match path {
        "/latest/meta-data/iam/security-credentials/" => {
            (StatusCode::OK, "aigw-instance-role").into_response()
        }
        "/latest/meta-data/iam/security-credentials/aigw-instance-role" => {
            s.hit("imds_credentials");
            let (id, secret, token, expiration) = issue_aws_key(s, "IMDS");
            json_response(
                StatusCode::OK,
                json!({"Code": "Success", "LastUpdated": iso8601(unix_now()), "Type": "AWS-HMAC",
                       "AccessKeyId": id, "SecretAccessKey": secret, "Token": token,
                       "Expiration": expiration}),
            )
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

// ---------- Google ----------

async fn google_token(s: &CloudState, body: &[u8]) -> Response {
    s.hit("google_token");
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let refuse = |why: String| {
        s.violations.lock().unwrap().push(format!("token: {why}"));
        json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": why}),
        )
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported grant_type".into());
    }
    let Some((email, n, e)) = &s.settings.service_account else {
        return refuse("no service account configured".into());
    };
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let token_uri = format!("{}/token", s.base.lock().unwrap());
    let key = jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&token_uri]);
    validation.set_issuer(&[email]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => return refuse(format!("Invalid JWT Signature or claims: {e}")),
    };
    let scope = claims["scope"].as_str().unwrap_or("");
    if !scope.contains("https://www.googleapis.com/auth/cloud-platform") {
        return refuse(format!("wrong scope {scope}"));
    }
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    if lifetime > 3600 {
        return refuse("JWT lifetime over an hour".into());
    }
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').next().unwrap_or(""))
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    if header["kid"] != "sa-key-1" {
        return refuse("kid is not the key id of the service account".into());
    }
    let token = format!("ya29.fake-google-token-{}", s.next_id());
    s.google_tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now());
    json_response(
        StatusCode::OK,
        json!({"access_token": token, "expires_in": s.settings.google_lifetime.0, "token_type": "Bearer"}),
    )
}

fn sse(events: &[(Option<&str>, Value)]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|(name, data)| {
            let mut out = String::new();
            if let Some(n) = name {
                out.push_str(&format!("event: {n}\n"));
            }
            out.push_str(&format!("data: {data}\n\n"));
            out.into_bytes()
        })
        .collect()
}

async fn vertex(
    s: &CloudState,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &Value,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let issued = s.google_tokens.lock().unwrap().get(bearer).copied();
    match issued {
        None => return s.violation(format!("Vertex: unknown token {bearer:?}")),
        Some(t) if t.elapsed() > s.settings.google_lifetime.1 => {
            let why = "Vertex: expired token used".to_string();
            s.violations.lock().unwrap().push(why.clone());
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
            );
        }
        _ => {}
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [
        "v1",
        "projects",
        project,
        "locations",
        location,
        "publishers",
        publisher,
        "models",
        model_method,
    ] = parts[..]
    else {
        return s.violation(format!("Vertex: bad path {path}"));
    };
    if project != s.settings.project || location != s.settings.location {
        return s.violation(format!("Vertex: project/location {project}/{location}"));
    }
    let (_model, method) = model_method.split_once(':').unwrap_or((model_method, ""));
    let (fault, reply) = script(body, "vertex");
    let google_error = |status: StatusCode, code: u16, text: &str, st: &str| {
        json_response(
            status,
            json!({"error": {"code": code, "message": text, "status": st}}),
        )
    };
    match fault.as_deref() {
        Some("500") => {
            return google_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                500,
                "Internal error encountered.",
                "INTERNAL",
            );
        }
        Some("429") => {
            return google_error(
                StatusCode::TOO_MANY_REQUESTS,
                429,
                "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model.",
                "RESOURCE_EXHAUSTED",
            );
        }
        Some("403") => {
            return google_error(
                StatusCode::FORBIDDEN,
                403,
                "Permission 'aiplatform.endpoints.predict' denied on resource.",
                "PERMISSION_DENIED",
            );
        }
        Some("toolong") => {
            return google_error(
                StatusCode::BAD_REQUEST,
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                "INVALID_ARGUMENT",
            );
        }
        Some("hang") => return hang_before_head().await,
        _ => {}
    }
    let reset = fault.as_deref() == Some("reset");
    let invalid = fault.as_deref() == Some("invalid");
    match (publisher, method) {
        ("google", "generateContent" | "streamGenerateContent") => {
            if body.get("contents").and_then(Value::as_array).is_none() {
                return s.violation("Vertex: Gemini body without contents".into());
            }
            let stream = method == "streamGenerateContent";
            if stream && query != "alt=sse" {
                return s.violation(format!("Vertex: stream without alt=sse ({query})"));
            }
            if invalid && !stream {
                return (StatusCode::OK, "{\"candidates\": [").into_response();
            }
            let usage =
                json!({"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18});
            if !stream {
                return json_response(
                    StatusCode::OK,
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": reply}]},
                            "finishReason": "STOP"}], "usageMetadata": usage}),
                );
            }
            if invalid {
                return streamed(
                    "text/event-stream",
                    vec![b"data: {not json\n\n".to_vec()],
                    false,
                );
            }
            let words = chunks(&reply);
            let last = words.len().saturating_sub(1);
            let events: Vec<(Option<&str>, Value)> = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut c = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}}]});
                    if i == last {
                        c["candidates"][0]["finishReason"] = json!("STOP");
                        c["usageMetadata"] = usage.clone();
                    }
                    (None, c)
                })
                .collect();
            streamed("text/event-stream", sse(&events), reset)
        }
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            if body.get("model").is_some() || body["anthropic_version"] != "vertex-2023-10-16" {
                return s.violation(
                    "Vertex: Claude body must carry anthropic_version and no model".into(),
                );
            }
            let stream = method == "streamRawPredict";
            if body["stream"].as_bool().unwrap_or(false) != stream {
                return s.violation("Vertex: stream flag does not match the method".into());
            }
            messages_answer(body, &reply, stream, reset, invalid)
        }
        _ => s.violation(format!("Vertex: publisher {publisher} method {method}")),
    }
}

// ---------- Anthropic Messages (also Claude on Vertex) ----------

fn messages_answer(
    body: &Value,
    reply: &str,
    stream: bool,
    reset: bool,
    invalid: bool,
) -> Response {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let alternates = msgs.windows(2).all(|w| w[0]["role"] != w[1]["role"]);
    if msgs.is_empty()
        || msgs[0]["role"] != "user"
        || !alternates
        || body["max_tokens"].as_u64().is_none()
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error",
                   "message": "messages: roles must alternate between user and assistant, starting with user; max_tokens: required"}}),
        );
    }
    if invalid && !stream {
        return (StatusCode::OK, "{\"content\": [").into_response();
    }
    if !stream {
        return json_response(
            StatusCode::OK,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 11, "output_tokens": 7}}),
        );
    }
    if invalid {
        return streamed(
            "text/event-stream",
            vec![b"event: message_start\ndata: {oops\n\n".to_vec()],
            false,
        );
    }
    let mut events = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
    ];
    for w in chunks(reply) {
        events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
    }
    events.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}})));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    streamed("text/event-stream", sse(&events), reset)
}

async fn anthropic(s: &CloudState, headers: &HashMap<String, String>, body: &Value) -> Response {
    if headers.get("x-api-key") != Some(&s.settings.anthropic_key) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        );
    }
    if headers.get("anthropic-version").map(String::as_str) != Some("2023-06-01") {
        return s.violation("Anthropic: no anthropic-version".into());
    }
    if body["model"].as_str().is_none() {
        return s.violation("Anthropic: no model".into());
    }
    let (fault, reply) = script(body, "anthropic");
    let err = |status: StatusCode, kind: &str, text: &str| {
        let mut r = json_response(
            status,
            json!({"type": "error", "error": {"type": kind, "message": text}}),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
        }
        r
    };
    match fault.as_deref() {
        Some("500") => {
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "Internal server error",
            );
        }
        Some("429") => {
            return err(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
        }
        Some("403") => {
            return err(
                StatusCode::FORBIDDEN,
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            );
        }
        Some("toolong") => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            );
        }
        Some("hang") => return hang_before_head().await,
        _ => {}
    }
    let stream = body["stream"].as_bool().unwrap_or(false);
    messages_answer(
        body,
        &reply,
        stream,
        fault.as_deref() == Some("reset"),
        fault.as_deref() == Some("invalid"),
    )
}

// ---------- Azure OpenAI ----------

async fn azure(
    s: &CloudState,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &Value,
) -> Response {
    if headers.get("api-key") != Some(&s.settings.azure_key)
        || headers.contains_key("authorization")
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}),
        );
    }
    let expected_query = format!("api-version={}", s.settings.azure_api_version);
    if query != expected_query {
        return s.violation(format!("Azure: query {query}"));
    }
    if !path.ends_with("/chat/completions") || !path.starts_with("/openai/deployments/") {
        return s.violation(format!("Azure: path {path}"));
    }
    let (fault, reply) = script(body, "azure");
    let err = |status: StatusCode, text: &str| {
        let mut r = json_response(
            status,
            json!({"error": {"code": status.as_str(), "message": text}}),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
        }
        r
    };
    match fault.as_deref() {
        Some("500") => {
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error processing your request.",
            );
        }
        Some("429") => {
            return err(
                StatusCode::TOO_MANY_REQUESTS,
                "Requests to the ChatCompletions_Create Operation have exceeded the token rate limit.",
            );
        }
        Some("403") => {
            return err(
                StatusCode::FORBIDDEN,
                "Principal does not have access to the deployment.",
            );
        }
        Some("toolong") => {
            return err(
                StatusCode::BAD_REQUEST,
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 210000 tokens.",
            );
        }
        Some("hang") => return hang_before_head().await,
        _ => {}
    }
    let stream = body["stream"].as_bool().unwrap_or(false);
    if fault.as_deref() == Some("invalid") {
        if stream {
            return streamed(
                "text/event-stream",
                vec![b"data: {not json\n\n".to_vec()],
                false,
            );
        }
        return (StatusCode::OK, "{\"choices\": [").into_response();
    }
    if !stream {
        return json_response(
            StatusCode::OK,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}),
        );
    }
    let mut events: Vec<(Option<&str>, Value)> = chunks(&reply)
        .into_iter()
        .map(|w| {
            (
                None,
                json!({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]}),
            )
        })
        .collect();
    events.push((
        None,
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ));
    events.push((None, json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})));
    let mut parts = sse(&events);
    parts.push(b"data: [DONE]\n\n".to_vec());
    streamed(
        "text/event-stream",
        parts,
        fault.as_deref() == Some("reset"),
    )
}
