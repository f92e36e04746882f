//! Google Vertex AI (`vertex_ai/<model>[@<version>]`): Gemini through
//! `generateContent` / `streamGenerateContent?alt=sse`, Claude through the
//! Anthropic Messages API at `rawPredict` / `streamRawPredict`
//! ([`super::anthropic`] builds and reads those bodies), at
//! `{base}/v1/projects/{project}/locations/{location}/publishers/{google|anthropic}/models/{model}:{method}`.
//!
//! The base is `https://{location}-aiplatform.googleapis.com`
//! (`aiplatform.googleapis.com` for `global`) or `AIGW_VERTEXAI_ENDPOINT`;
//! the token comes from [`super::google_auth`]; the project from
//! `VERTEXAI_PROJECT`, else the credentials.

use std::time::Duration;

use futures_util::stream;
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, Completion, EventStream, ModelError, ModelProvider, Role, StreamEvent,
    TextRequest, ToolCall, Usage, anthropic,
    client::{self, IdleTimer, SharedClient, SseStream},
    google_auth::GoogleAuth,
    target::{ModelTarget, Platform, VertexPublisher},
};

/// The `anthropic_version` Claude on Vertex AI requires in the body.
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

pub struct Vertex {
    client: SharedClient,
    auth: GoogleAuth,
}

impl Vertex {
    pub fn new(client: SharedClient, auth: GoogleAuth) -> Self {
        Self { client, auth }
    }

    /// Forgets the cached token.
    pub async fn forget_credentials(&self) {
        self.auth.forget().await;
    }

    async fn post(
        &self,
        target: &ModelTarget,
        method: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, ModelError> {
        let (location, publisher) = match &target.platform {
            Platform::Vertex {
                location,
                publisher,
            } => (location.as_str(), *publisher),
            _ => ("global", VertexPublisher::Google),
        };
        let token = self.auth.token().await?;
        let project = token.project.clone().ok_or_else(|| ModelError::Credentials {
            platform: "Vertex AI",
            message: "no Google Cloud project: set VERTEXAI_PROJECT (or use credentials that name one)"
                .into(),
        })?;
        let publisher_name = match publisher {
            VertexPublisher::Google => "google",
            VertexPublisher::Anthropic => "anthropic",
        };
        let mut url = target.api_base.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&base);
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty().extend([
                "v1",
                "projects",
                &project,
                "locations",
                location,
                "publishers",
                publisher_name,
                "models",
                &format!("{}:{method}", target.model),
            ]);
        }
        if method == "streamGenerateContent" {
            url.set_query(Some("alt=sse"));
        }
        let http = self.client.get();
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        client::send(
            || {
                http.post(url.clone())
                    .bearer_auth(&token.bearer)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone())
            },
            &target.endpoint_host(),
            timeout,
        )
        .await
        .map_err(|e| explain(e, target, &project, location))
    }
}

/// Google's refusals in words an administrator acts on; throttling with a `Retry-After`.
fn explain(e: ModelError, target: &ModelTarget, project: &str, location: &str) -> ModelError {
    let model = &target.model;
    let e = client::reword(client::with_retry_after(e), &[401, 403], |m| {
        format!(
            "Vertex AI denied access to model '{model}' in project '{project}', location '{location}' (does the service account have roles/aiplatform.user, is the model enabled?): {m}"
        )
    });
    client::reword(e, &[404], |m| {
        format!(
            "Vertex AI has no model '{model}' in project '{project}', location '{location}': {m}"
        )
    })
}

/// JSON Schema keywords Gemini's function declarations refuse.
fn gemini_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "$schema" | "additionalProperties"))
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// The Gemini `generateContent` body.
fn gemini_body(req: &ChatRequest) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                if !m.content.is_empty() {
                    system.push(json!({"text": m.content}));
                }
            }
            Role::User => {
                if !m.content.is_empty() {
                    anthropic::push(&mut turns, "user", json!({"text": m.content}));
                }
            }
            Role::Assistant => {
                if !m.content.is_empty() {
                    anthropic::push(&mut turns, "model", json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    anthropic::push(
                        &mut turns,
                        "model",
                        json!({"functionCall": {"name": c.name, "args": anthropic::arguments(c)}}),
                    );
                }
            }
            Role::Tool => {
                // Gemini names the function a result answers, not the call:
                // find the call by id in the turns before this one.
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = req.messages[..i]
                    .iter()
                    .rev()
                    .flat_map(|p| p.tool_calls.iter())
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| id.to_string());
                let response = match serde_json::from_str::<Value>(&m.content) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": m.content}),
                };
                anthropic::push(
                    &mut turns,
                    "user",
                    json!({"functionResponse": {"name": name, "response": response}}),
                );
            }
        }
    }
    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut generation = Map::new();
    if let Some(t) = req.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        generation.insert("topP".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(m));
    }
    if !req.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(req.stop));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description,
                    "parameters": gemini_schema(&t.parameters)})
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    Value::Object(out)
}

fn gemini_finish(reason: &str, tool_calls: bool) -> String {
    match reason {
        "STOP" if tool_calls => "tool_calls".into(),
        "STOP" => "stop".into(),
        "MAX_TOKENS" => "length".into(),
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter".into()
        }
        other => other.to_ascii_lowercase(),
    }
}

fn gemini_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    Some(Usage {
        input_tokens: u
            .get("promptTokenCount")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: u
            .get("candidatesTokenCount")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Text and function calls of one response (or streamed chunk); thoughts skipped.
fn gemini_parts(v: &Value, calls_so_far: usize) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = part.get("functionCall") {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let id = f
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{}_{name}", calls_so_far + calls.len()));
            calls.push(ToolCall {
                id,
                name,
                arguments: f.get("args").map_or_else(|| "{}".into(), Value::to_string),
            });
        }
    }
    (text, calls)
}

struct GeminiStream {
    events: SseStream,
    endpoint: String,
    timer: IdleTimer,
    finish: Option<String>,
    usage: Option<Usage>,
    calls: usize,
    pending: Vec<StreamEvent>,
    done: bool,
}

impl GeminiStream {
    fn fail(&mut self, e: ModelError) -> Option<Result<StreamEvent, ModelError>> {
        self.done = true;
        Some(Err(e))
    }

    fn broken(&mut self, message: impl Into<String>) -> Option<Result<StreamEvent, ModelError>> {
        let e = ModelError::StreamBroken {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        };
        self.fail(e)
    }

    async fn next_event(&mut self) -> Option<Result<StreamEvent, ModelError>> {
        loop {
            if !self.pending.is_empty() {
                return Some(Ok(self.pending.remove(0)));
            }
            if self.done {
                return None;
            }
            let next = match self.timer.next(&mut self.events).await {
                Ok(n) => n,
                Err(()) => {
                    let e = ModelError::Timeout {
                        endpoint: self.endpoint.clone(),
                        seconds: self.timer.seconds(),
                    };
                    return self.fail(e);
                }
            };
            match next {
                None => {
                    self.done = true;
                    let Some(reason) = self.finish.take() else {
                        return self.broken("the stream ended before the model finished");
                    };
                    self.pending.push(StreamEvent::Done {
                        finish_reason: Some(gemini_finish(&reason, self.calls > 0)),
                        usage: self.usage.take(),
                    });
                }
                Some(Err(e)) => return self.broken(e.to_string()),
                Some(Ok(event)) => {
                    let data = event.data.trim();
                    if data.is_empty() {
                        continue;
                    }
                    let v: Value = match serde_json::from_str(data) {
                        Ok(v) => v,
                        Err(e) => return self.broken(format!("invalid JSON chunk: {e}")),
                    };
                    if let Some(err) = v.get("error") {
                        let status = err.get("code").and_then(Value::as_u64).unwrap_or(500);
                        let e = client::with_retry_after(ModelError::Status {
                            endpoint: self.endpoint.clone(),
                            status: u16::try_from(status).unwrap_or(500),
                            message: client::error_message(data.as_bytes()),
                            retry_after: None,
                        });
                        return self.fail(e);
                    }
                    let (text, calls) = gemini_parts(&v, self.calls);
                    if !text.is_empty() {
                        self.pending.push(StreamEvent::Text(text));
                    }
                    self.calls += calls.len();
                    self.pending
                        .extend(calls.into_iter().map(StreamEvent::ToolCall));
                    if let Some(r) = v
                        .pointer("/candidates/0/finishReason")
                        .and_then(Value::as_str)
                    {
                        self.finish = Some(r.to_string());
                    }
                    if let Some(u) = gemini_usage(&v) {
                        self.usage = Some(u);
                    }
                }
            }
        }
    }
}

fn publisher(target: &ModelTarget) -> VertexPublisher {
    match target.platform {
        Platform::Vertex { publisher, .. } => publisher,
        _ => VertexPublisher::Google,
    }
}

#[async_trait::async_trait]
impl ModelProvider for Vertex {
    async fn chat(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<Completion, ModelError> {
        let endpoint = target.endpoint_host();
        match publisher(target) {
            VertexPublisher::Anthropic => {
                let body = anthropic::body(
                    req,
                    &target.model,
                    false,
                    Some(VERTEX_ANTHROPIC_VERSION),
                    false,
                );
                let resp = self.post(target, "rawPredict", &body, req.timeout).await?;
                let v = client::json_body(&endpoint, resp, req.timeout).await?;
                anthropic::completion(&v, &endpoint)
            }
            VertexPublisher::Google => {
                let resp = self
                    .post(target, "generateContent", &gemini_body(req), req.timeout)
                    .await?;
                let v = client::json_body(&endpoint, resp, req.timeout).await?;
                if v.pointer("/candidates/0").is_none() {
                    let why = v
                        .pointer("/promptFeedback/blockReason")
                        .and_then(Value::as_str)
                        .map_or("no candidates".to_string(), |r| {
                            format!("the prompt was blocked ({r})")
                        });
                    return Err(ModelError::InvalidResponse {
                        endpoint,
                        message: why,
                    });
                }
                let (text, tool_calls) = gemini_parts(&v, 0);
                let finish_reason = v
                    .pointer("/candidates/0/finishReason")
                    .and_then(Value::as_str)
                    .map(|r| gemini_finish(r, !tool_calls.is_empty()));
                Ok(Completion {
                    text,
                    tool_calls,
                    finish_reason,
                    usage: gemini_usage(&v),
                })
            }
        }
    }

    async fn chat_stream(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<EventStream, ModelError> {
        let endpoint = target.endpoint_host();
        match publisher(target) {
            VertexPublisher::Anthropic => {
                let body = anthropic::body(
                    req,
                    &target.model,
                    false,
                    Some(VERTEX_ANTHROPIC_VERSION),
                    true,
                );
                let resp = self
                    .post(target, "streamRawPredict", &body, req.timeout)
                    .await?;
                Ok(anthropic::events(resp, endpoint, req.timeout))
            }
            VertexPublisher::Google => {
                let resp = self
                    .post(
                        target,
                        "streamGenerateContent",
                        &gemini_body(req),
                        req.timeout,
                    )
                    .await?;
                let state = GeminiStream {
                    events: client::sse(resp),
                    endpoint,
                    timer: IdleTimer::new(req.timeout),
                    finish: None,
                    usage: None,
                    calls: 0,
                    pending: Vec::new(),
                    done: false,
                };
                Ok(Box::pin(stream::unfold(state, |mut s| async move {
                    s.next_event().await.map(|item| (item, s))
                })))
            }
        }
    }

    async fn text(
        &self,
        target: &ModelTarget,
        req: &TextRequest,
    ) -> Result<Completion, ModelError> {
        self.chat(target, &anthropic::text_as_chat(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Message;
    use futures_util::StreamExt;

    /// Gemini sends function calls whole; thoughts are not answer text.
    #[tokio::test]
    async fn gemini_stream_carries_function_calls() {
        let sse = [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Looking it up."}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_issue","args":{"id":7}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":8}}"#,
        ]
        .iter()
        .map(|d| format!("data: {d}\r\n\r\n"))
        .collect::<String>();
        let resp = reqwest::Response::from(http::Response::new(reqwest::Body::from(sse)));
        let state = GeminiStream {
            events: client::sse(resp),
            endpoint: "v".into(),
            timer: IdleTimer::new(Duration::from_secs(5)),
            finish: None,
            usage: None,
            calls: 0,
            pending: Vec::new(),
            done: false,
        };
        let events: Vec<StreamEvent> = stream::unfold(state, |mut s| async move {
            s.next_event().await.map(|item| (item, s))
        })
        .map(|e| e.unwrap())
        .collect()
        .await;
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("Looking it up.".into()),
                StreamEvent::ToolCall(ToolCall {
                    id: "call_0_get_issue".into(),
                    name: "get_issue".into(),
                    arguments: r#"{"id":7}"#.into()
                }),
                StreamEvent::Done {
                    finish_reason: Some("tool_calls".into()),
                    usage: Some(Usage {
                        input_tokens: 3,
                        output_tokens: 8
                    })
                },
            ]
        );
    }

    #[test]
    fn tool_results_name_their_function() {
        let call = ToolCall {
            id: "call_0_get_issue".into(),
            name: "get_issue".into(),
            arguments: r#"{"id":1}"#.into(),
        };
        let req = ChatRequest::new(
            vec![
                Message::new(Role::System, "sys"),
                Message::new(Role::User, "q"),
                Message::assistant("", vec![call]),
                Message::tool_result("call_0_get_issue", "not json"),
            ],
            Duration::from_secs(1),
        );
        let b = gemini_body(&req);
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(
            b["contents"][1]["parts"][0]["functionCall"]["args"]["id"],
            1
        );
        let r = &b["contents"][2]["parts"][0]["functionResponse"];
        assert_eq!(r["name"], "get_issue");
        assert_eq!(r["response"]["content"], "not json");
    }
}
