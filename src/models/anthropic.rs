//! Anthropic's Messages API (`anthropic/<model>`): `POST {endpoint}/v1/messages`
//! with `x-api-key` and `anthropic-version`, plain or streamed as server-sent
//! events, with tools. The same body and stream reader serve Claude on
//! Vertex AI (`rawPredict` / `streamRawPredict`, [`super::vertex`]).
//!
//! The seam's messages map onto Anthropic's turns: system messages become
//! the `system` text, an assistant's tool calls `tool_use` blocks, tool
//! results `tool_result` blocks of a user turn; consecutive turns of one role
//! are merged (the API requires alternation) and empty text is left out (the
//! API refuses it).

use std::{collections::BTreeMap, time::Duration};

use futures_util::stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, Completion, EventStream, Message, ModelError, ModelProvider, Role, StreamEvent,
    TextRequest, ToolCall, Usage,
    client::{self, IdleTimer, SharedClient, SseStream},
    target::ModelTarget,
};

/// The API version header every Messages API call carries.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; used when the prompt sets none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Anthropic provider.
pub struct Anthropic {
    client: SharedClient,
    extra_headers: HeaderMap,
}

impl Anthropic {
    pub fn new(client: SharedClient, extra_headers: &BTreeMap<String, String>) -> Self {
        let mut headers = HeaderMap::new();
        for (k, v) in extra_headers {
            // Validated by the OpenAI provider at startup; skip what would not parse.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(name, value);
            }
        }
        Self {
            client,
            extra_headers: headers,
        }
    }

    async fn post(
        &self,
        target: &ModelTarget,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, ModelError> {
        let mut url = target.api_base.clone();
        let base = url.path().trim_end_matches('/').to_string();
        let path = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        url.set_path(&path);
        let http = self.client.get();
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        client::send(
            || {
                let mut request = http.post(url.clone());
                if !self.extra_headers.is_empty() {
                    request = request.headers(self.extra_headers.clone());
                }
                request
                    .header("x-api-key", target.api_key.expose())
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone())
            },
            &target.endpoint_host(),
            timeout,
        )
        .await
        .map_err(|e| explain(e, &target.model))
    }
}

/// 401/403 in words an administrator acts on.
fn explain(e: ModelError, model: &str) -> ModelError {
    client::reword(e, &[401, 403], |m| {
        format!(
            "the Anthropic endpoint refused the key for model '{model}' (request api_key, else ANTHROPIC_API_KEY): {m}"
        )
    })
}

/// OpenAI's names for Anthropic's (and Bedrock's) stop reasons, as LiteLLM
/// reports them upstream.
pub(super) fn finish_reason(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        "guardrail_intervened" | "content_filtered" | "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

/// A tool call's arguments as a JSON value (an object when they do not parse).
pub(super) fn arguments(call: &ToolCall) -> Value {
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Claude models that accept a trailing assistant message as the start of
/// their answer (upstream's list, in `-` spelling).
const PREFILL_CAPABLE: &[&str] = &[
    "opus-4-1",
    "opus-4-5",
    "sonnet-4-5",
    "haiku-4-5",
    "sonnet-4-20250514",
    "3-haiku-20240307",
    "3-sonnet-20240229",
];

/// The conversation as a Claude model takes it: for a Claude model that
/// cannot continue a trailing assistant message (a ReAct scratchpad), that
/// message becomes user context, as upstream (LiteLLM) sends it.
pub(super) fn claude_messages<'a>(
    messages: &'a [Message],
    model: &str,
) -> std::borrow::Cow<'a, [Message]> {
    let name = model.to_ascii_lowercase().replace(['_', '.'], "-");
    let trailing_assistant = messages
        .last()
        .is_some_and(|m| m.role == Role::Assistant && m.tool_calls.is_empty());
    if !name.contains("claude")
        || !trailing_assistant
        || PREFILL_CAPABLE.iter().any(|p| name.contains(p))
    {
        return std::borrow::Cow::Borrowed(messages);
    }
    let mut out = messages.to_vec();
    if let Some(last) = out.last_mut() {
        *last = Message::new(
            Role::User,
            format!("[Previous assistant context]: {}", last.content),
        );
    }
    std::borrow::Cow::Owned(out)
}

/// Appends `block` to the last turn when it has `role`, else starts a turn
/// (Anthropic, Bedrock and Gemini all want alternating turns).
pub(super) fn push(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, block: Value) {
    match turns.last_mut() {
        Some((r, blocks)) if *r == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    }
}

/// The Messages API body for `model`. `in_body: false` for Vertex AI (the
/// model is in the URL, and `anthropic_version` in the body).
pub(super) fn body(
    req: &ChatRequest,
    model: &str,
    in_body: bool,
    anthropic_version: Option<&str>,
    stream: bool,
) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let messages = claude_messages(&req.messages, model);
    for m in messages.iter() {
        match m.role {
            Role::System => {
                if !m.content.is_empty() {
                    system.push(m.content.as_str());
                }
            }
            Role::User => {
                if !m.content.is_empty() {
                    push(
                        &mut turns,
                        "user",
                        json!({"type": "text", "text": m.content}),
                    );
                }
            }
            Role::Assistant => {
                if !m.content.is_empty() {
                    push(
                        &mut turns,
                        "assistant",
                        json!({"type": "text", "text": m.content}),
                    );
                }
                for c in &m.tool_calls {
                    push(
                        &mut turns,
                        "assistant",
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": arguments(c)}),
                    );
                }
            }
            Role::Tool => push(
                &mut turns,
                "user",
                json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                    "content": m.content}),
            ),
        }
    }
    let mut out = Map::new();
    if in_body {
        out.insert("model".into(), json!(model));
    }
    if let Some(v) = anthropic_version {
        out.insert("anthropic_version".into(), json!(v));
    }
    out.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(req.stop));
    }
    if !req.tools.is_empty() {
        out.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        json!({"name": t.name, "description": t.description,
                            "input_schema": t.parameters})
                    })
                    .collect(),
            ),
        );
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Value::Object(out)
}

/// A non-streamed Messages API answer.
pub(super) fn completion(v: &Value, endpoint: &str) -> Result<Completion, ModelError> {
    let content =
        v.get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelError::InvalidResponse {
                endpoint: endpoint.to_string(),
                message: "no content".into(),
            })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: str_at(block, "id"),
                name: str_at(block, "name"),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string),
            }),
            _ => {}
        }
    }
    Ok(Completion {
        text,
        tool_calls,
        finish_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_reason),
        usage: v.get("usage").map(|u| Usage {
            input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
            output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        }),
    })
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A streamed Messages API answer as seam events.
pub(super) fn events(resp: reqwest::Response, endpoint: String, idle: Duration) -> EventStream {
    let state = StreamState {
        events: client::sse(resp),
        endpoint,
        timer: IdleTimer::new(idle),
        blocks: BTreeMap::new(),
        usage: Usage::default(),
        finish_reason: None,
        pending: Vec::new(),
        done: false,
    };
    Box::pin(stream::unfold(state, |mut s| async move {
        s.next_event().await.map(|item| (item, s))
    }))
}

struct StreamState {
    events: SseStream,
    endpoint: String,
    timer: IdleTimer,
    /// Tool-use blocks being streamed, by content-block index.
    blocks: BTreeMap<u64, ToolCall>,
    usage: Usage,
    finish_reason: Option<String>,
    pending: Vec<StreamEvent>,
    done: bool,
}

impl StreamState {
    fn broken(&mut self, message: impl Into<String>) -> Option<Result<StreamEvent, ModelError>> {
        self.done = true;
        Some(Err(ModelError::StreamBroken {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }))
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
                    self.done = true;
                    return Some(Err(ModelError::Timeout {
                        endpoint: self.endpoint.clone(),
                        seconds: self.timer.seconds(),
                    }));
                }
            };
            let event = match next {
                None => return self.broken("the stream ended before the model finished"),
                Some(Err(e)) => return self.broken(e.to_string()),
                Some(Ok(event)) => event,
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(e) => return self.broken(format!("invalid JSON event: {e}")),
            };
            if let Some(err) = self.absorb(&v) {
                self.done = true;
                return Some(Err(err));
            }
        }
    }

    /// Takes one event; an `error` event becomes the stream's error.
    fn absorb(&mut self, v: &Value) -> Option<ModelError> {
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                if let Some(n) = v
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage.input_tokens = n;
                }
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        self.blocks.insert(
                            index,
                            ToolCall {
                                id: str_at(block, "id"),
                                name: str_at(block, "name"),
                                arguments: String::new(),
                            },
                        );
                    }
                    Some("text") => {
                        let t = str_at(block, "text");
                        if !t.is_empty() {
                            self.pending.push(StreamEvent::Text(t));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.pending.push(StreamEvent::Text(str_at(delta, "text")))
                    }
                    Some("input_json_delta") => {
                        if let Some(call) = self.blocks.get_mut(&index) {
                            call.arguments.push_str(
                                delta
                                    .get("partial_json")
                                    .and_then(Value::as_str)
                                    .unwrap_or(""),
                            );
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(mut call) = self.blocks.remove(&index) {
                    if call.arguments.trim().is_empty() {
                        call.arguments = "{}".into();
                    }
                    self.pending.push(StreamEvent::ToolCall(call));
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(finish_reason(r));
                }
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                    self.usage.input_tokens = n;
                }
            }
            "message_stop" => {
                self.done = true;
                self.pending.push(StreamEvent::Done {
                    finish_reason: self.finish_reason.take(),
                    usage: Some(self.usage),
                });
            }
            "error" => {
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the model reported an error");
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "invalid_request_error" => 400,
                    "api_error" => 500,
                    _ => {
                        return Some(ModelError::StreamBroken {
                            endpoint: self.endpoint.clone(),
                            message: format!("{kind}: {message}"),
                        });
                    }
                };
                return Some(ModelError::Status {
                    endpoint: self.endpoint.clone(),
                    status,
                    message: format!("{kind}: {message}"),
                    retry_after: None,
                });
            }
            _ => {}
        }
        None
    }
}

/// A text completion as a one-message chat (the Messages API has no other).
pub(super) fn text_as_chat(req: &TextRequest) -> ChatRequest {
    let mut prompt = req.prompt.clone();
    if let Some(s) = req.suffix.as_deref().filter(|s| !s.is_empty()) {
        prompt.push_str("\n\n");
        prompt.push_str(s);
    }
    ChatRequest {
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        stop: req.stop.clone(),
        ..ChatRequest::new(vec![Message::new(Role::User, prompt)], req.timeout)
    }
}

#[async_trait::async_trait]
impl ModelProvider for Anthropic {
    async fn chat(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<Completion, ModelError> {
        let body = body(req, &target.model, true, None, false);
        let resp = self.post(target, &body, req.timeout).await?;
        let endpoint = target.endpoint_host();
        let v = client::json_body(&endpoint, resp, req.timeout).await?;
        completion(&v, &endpoint)
    }

    async fn chat_stream(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<EventStream, ModelError> {
        let body = body(req, &target.model, true, None, true);
        let resp = self.post(target, &body, req.timeout).await?;
        Ok(events(resp, target.endpoint_host(), req.timeout))
    }

    async fn text(
        &self,
        target: &ModelTarget,
        req: &TextRequest,
    ) -> Result<Completion, ModelError> {
        self.chat(target, &text_as_chat(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// Streamed tool use: `input_json_delta` fragments become one call.
    #[tokio::test]
    async fn message_stream_assembles_tool_use() {
        let sse = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":4,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"search","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\": "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"ci\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .map(|d| format!("event: x\ndata: {d}\n\n"))
        .collect::<String>();
        let resp = reqwest::Response::from(http::Response::new(reqwest::Body::from(sse)));
        let events: Vec<StreamEvent> = events(resp, "a".into(), Duration::from_secs(5))
            .map(|e| e.unwrap())
            .collect()
            .await;
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("Checking.".into()),
                StreamEvent::ToolCall(ToolCall {
                    id: "toolu_9".into(),
                    name: "search".into(),
                    arguments: r#"{"q": "ci"}"#.into()
                }),
                StreamEvent::Done {
                    finish_reason: Some("tool_calls".into()),
                    usage: Some(Usage {
                        input_tokens: 4,
                        output_tokens: 12
                    })
                },
            ]
        );
    }

    #[test]
    fn tool_conversation_in_the_messages_shape() {
        let call = ToolCall {
            id: "toolu_1".into(),
            name: "get_issue".into(),
            arguments: r#"{"id":1}"#.into(),
        };
        let req = ChatRequest::new(
            vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Issue 1?"),
                Message::assistant("", vec![call]),
                Message::tool_result("toolu_1", "{\"title\":\"x\"}"),
                Message::new(Role::User, "Thanks."),
            ],
            Duration::from_secs(1),
        );
        let b = body(&req, "claude", true, None, true);
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["max_tokens"], 4096);
        assert_eq!(b["stream"], true);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{b}");
        assert_eq!(m[1]["content"][0]["type"], "tool_use");
        assert_eq!(m[1]["content"][0]["input"]["id"], 1);
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["type"], "tool_result");
        assert_eq!(m[2]["content"][1]["text"], "Thanks.");
    }

    #[test]
    fn a_trailing_prefill_becomes_context_for_claude_models_that_refuse_it() {
        let msgs = vec![
            Message::new(Role::User, "q"),
            Message::new(Role::Assistant, "Thought: "),
        ];
        let turned = claude_messages(&msgs, "claude-3-5-sonnet-v2@20241022");
        assert_eq!(turned[1].role, Role::User);
        assert_eq!(turned[1].content, "[Previous assistant context]: Thought: ");
        for kept in [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "claude-sonnet-4-5@20250929",
            "mistral.large",
        ] {
            assert_eq!(
                claude_messages(&msgs, kept)[1].role,
                Role::Assistant,
                "{kept}"
            );
        }
    }
}
