//! OpenAI-compatible model servers (vLLM, Ollama's `/v1`, LiteLLM proxy, TGI,
//! llama.cpp server...): `POST {api_base}/chat/completions` and
//! `POST {api_base}/completions`, plain or streamed as server-sent events.
//!
//! The shared model HTTP client ([`super::client`]) serves every target. Connection failures are
//! retried a little; nothing else is, because a model call is not idempotent
//! in cost. Every wait is bounded by the request's timeout. Dropping a stream
//! drops the upstream connection, which cancels the generation.

use std::{borrow::Cow, collections::BTreeMap, pin::Pin, time::Duration};

use eventsource_stream::Eventsource;
use futures_util::{StreamExt, stream};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, Completion, EventStream, Message, ModelError, ModelProvider, Role, StreamEvent,
    TextRequest, ToolCall, Usage, azure,
    client::{self, SharedClient},
    target::{Api, ModelTarget, Platform},
};

/// The OpenAI-compatible provider (and Azure OpenAI, which differs only in
/// its URL and key header: [`super::azure`]).
pub struct OpenAiCompatible {
    client: SharedClient,
    extra_headers: HeaderMap,
}

impl OpenAiCompatible {
    /// `extra_headers`: `AIGW_CUSTOM_MODELS__EXTRA_HEADERS`, sent on every call.
    pub fn new(
        client: SharedClient,
        extra_headers: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in extra_headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                format!("AIGW_CUSTOM_MODELS__EXTRA_HEADERS: invalid header name {k:?}")
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                format!("AIGW_CUSTOM_MODELS__EXTRA_HEADERS: invalid value for {k:?}")
            })?;
            headers.insert(name, value);
        }
        Ok(Self {
            client,
            extra_headers: headers,
        })
    }

    /// POSTs `body`, retrying connection failures; non-2xx becomes `ModelError::Status`.
    async fn post(
        &self,
        target: &ModelTarget,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, ModelError> {
        let azure = matches!(target.platform, Platform::Azure { .. });
        // Built from the already parsed base: no second parse (and IDNA pass) per call.
        let url = if azure {
            azure::url(target, path)
        } else {
            let mut url = target.api_base.clone();
            let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
            url.set_path(&joined);
            url
        };
        let endpoint = target.endpoint_host();
        let http = self.client.get();
        let result = client::send(
            || {
                let mut request = http.post(url.clone());
                if !self.extra_headers.is_empty() {
                    request = request.headers(self.extra_headers.clone());
                }
                if azure {
                    request = azure::authorize(request, target);
                } else {
                    request = request.bearer_auth(target.api_key.expose());
                }
                request.json(body)
            },
            &endpoint,
            timeout,
        )
        .await;
        if azure {
            result.map_err(|e| azure::explain(e, target))
        } else {
            result
        }
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// One message in the OpenAI shape: assistant tool calls as `tool_calls`
/// (`content` null when the turn was only calls, as the OpenAI API writes
/// it), tool results with their `tool_call_id`.
fn wire_message(m: &Message) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), json!(role(m.role)));
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        let content = if m.content.is_empty() {
            Value::Null
        } else {
            json!(m.content)
        };
        out.insert("content".into(), content);
        out.insert(
            "tool_calls".into(),
            Value::Array(
                m.tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect(),
            ),
        );
    } else {
        out.insert("content".into(), json!(m.content));
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(out)
}

fn chat_body(target: &ModelTarget, req: &ChatRequest, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model));
    body.insert(
        "messages".into(),
        Value::Array(req.messages.iter().map(wire_message).collect()),
    );
    insert_sampling(
        &mut body,
        req.temperature,
        req.top_p,
        req.max_tokens,
        &req.stop,
    );
    if !req.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {
                            "name": t.name, "description": t.description, "parameters": t.parameters}})
                    })
                    .collect(),
            ),
        );
    }
    body.insert("stream".into(), json!(stream));
    if stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

fn insert_sampling(
    body: &mut Map<String, Value>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    stop: &[String],
) {
    if let Some(t) = temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(m) = max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if !stop.is_empty() {
        body.insert("stop".into(), json!(stop));
    }
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        input_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

fn tool_calls(message: &Value) -> Vec<ToolCall> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    name: c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments: c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Flattens chat messages for a text-completion target.
fn flatten(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// State of one streamed response being turned into [`StreamEvent`]s.
struct StreamState<S> {
    events: S,
    endpoint: String,
    idle: Duration,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// Streamed tool-call fragments by index: (id, name, arguments).
    tools: BTreeMap<u64, ToolCall>,
    pending: Vec<StreamEvent>,
    done: bool,
    /// The idle timer: armed once and moved on only when it fires early,
    /// instead of a new timer per event (`deadline` = last event + `idle`).
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
}

/// The usual streamed chunk, read without building a JSON tree (one chunk
/// per token). Anything it does not describe exactly (tool calls, a
/// `message` instead of a `delta`, an unexpected type) makes it fail, and the
/// chunk is read again as a [`Value`] by [`StreamState::absorb`].
#[derive(Deserialize)]
struct FastChunk<'a> {
    #[serde(borrow)]
    choices: Vec<FastChoice<'a>>,
    #[serde(default)]
    usage: Option<FastUsage>,
}

#[derive(Deserialize)]
struct FastChoice<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<FastDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FastDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct FastUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl<S, E> StreamState<S>
where
    S: futures_util::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Display,
{
    fn broken(&self, message: impl Into<String>) -> ModelError {
        ModelError::StreamBroken {
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }
    }

    /// Reads upstream events until at least one of ours is ready.
    async fn next_event(&mut self) -> Option<Result<StreamEvent, ModelError>> {
        loop {
            if !self.pending.is_empty() {
                return Some(Ok(self.pending.remove(0)));
            }
            if self.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                n = self.events.next() => {
                    self.deadline = tokio::time::Instant::now() + self.idle;
                    n
                }
                () = &mut self.sleep => {
                    if tokio::time::Instant::now() < self.deadline {
                        let deadline = self.deadline;
                        self.sleep.as_mut().reset(deadline);
                        continue;
                    }
                    self.done = true;
                    return Some(Err(ModelError::Timeout {
                        endpoint: self.endpoint.clone(),
                        seconds: self.idle.as_secs_f64(),
                    }));
                }
            };
            match next {
                None => {
                    self.done = true;
                    if self.finish_reason.is_none() {
                        return Some(Err(
                            self.broken("the stream ended before the model finished")
                        ));
                    }
                    self.finish();
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(self.broken(e.to_string())));
                }
                Some(Ok(event)) => {
                    let data = event.data.trim();
                    if data.is_empty() {
                        continue;
                    }
                    if data == "[DONE]" {
                        self.done = true;
                        self.finish();
                        continue;
                    }
                    if let Ok(chunk) = serde_json::from_str::<FastChunk>(data)
                        && self.absorb_fast(&chunk)
                    {
                        continue;
                    }
                    let chunk: Value = match serde_json::from_str(data) {
                        Ok(v) => v,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(self.broken(format!("invalid JSON chunk: {e}"))));
                        }
                    };
                    self.absorb(&chunk);
                }
            }
        }
    }

    /// [`absorb`](Self::absorb) for a [`FastChunk`], with the same outcome;
    /// false (nothing taken) when the chunk needs the general reader.
    fn absorb_fast(&mut self, chunk: &FastChunk) -> bool {
        let choice = chunk.choices.first();
        if choice.is_some_and(|c| {
            (c.delta.is_none() && c.message.is_some())
                || c.delta.as_ref().is_some_and(|d| d.tool_calls.is_some())
        }) {
            return false;
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage {
                input_tokens: u.prompt_tokens.unwrap_or(0),
                output_tokens: u.completion_tokens.unwrap_or(0),
            });
        }
        let Some(choice) = choice else {
            return true;
        };
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.to_string());
        }
        let text = choice
            .delta
            .as_ref()
            .and_then(|d| d.content.as_deref())
            .or(choice.text.as_deref());
        if let Some(t) = text {
            self.pending.push(StreamEvent::Text(t.to_string()));
        }
        true
    }

    fn absorb(&mut self, chunk: &Value) {
        if let Some(u) = usage(chunk) {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let delta = choice.get("delta").or_else(|| choice.get("message"));
        let text = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .or_else(|| choice.get("text").and_then(Value::as_str));
        if let Some(t) = text {
            self.pending.push(StreamEvent::Text(t.to_string()));
        }
        if let Some(calls) = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for c in calls {
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = self.tools.entry(index).or_default();
                if let Some(id) = c.get("id").and_then(Value::as_str) {
                    entry.id = id.to_string();
                }
                if let Some(name) = c.pointer("/function/name").and_then(Value::as_str) {
                    entry.name.push_str(name);
                }
                if let Some(args) = c.pointer("/function/arguments").and_then(Value::as_str) {
                    entry.arguments.push_str(args);
                }
            }
        }
    }

    fn finish(&mut self) {
        let tools = std::mem::take(&mut self.tools);
        self.pending
            .extend(tools.into_values().map(StreamEvent::ToolCall));
        self.pending.push(StreamEvent::Done {
            finish_reason: self.finish_reason.take(),
            usage: self.usage.take(),
        });
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiCompatible {
    async fn chat(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<Completion, ModelError> {
        if target.api() == Api::Text {
            return self
                .text(
                    target,
                    &TextRequest {
                        prompt: flatten(&req.messages),
                        suffix: None,
                        temperature: req.temperature,
                        max_tokens: req.max_tokens,
                        stop: req.stop.clone(),
                        timeout: req.timeout,
                    },
                )
                .await;
        }
        let resp = self
            .post(
                target,
                "chat/completions",
                &chat_body(target, req, false),
                req.timeout,
            )
            .await?;
        let v = parse_body(target, resp, req.timeout).await?;
        let choice = v
            .pointer("/choices/0")
            .ok_or_else(|| invalid(target, "no choices"))?;
        let message = choice
            .get("message")
            .ok_or_else(|| invalid(target, "no message"))?;
        Ok(Completion {
            text: message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tool_calls: tool_calls(message),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            usage: usage(&v),
        })
    }

    async fn chat_stream(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<EventStream, ModelError> {
        let (path, body) = match target.api() {
            Api::Chat => ("chat/completions", chat_body(target, req, true)),
            Api::Text => {
                let mut body = Map::new();
                body.insert("model".into(), json!(target.model));
                body.insert("prompt".into(), json!(flatten(&req.messages)));
                insert_sampling(
                    &mut body,
                    req.temperature,
                    req.top_p,
                    req.max_tokens,
                    &req.stop,
                );
                body.insert("stream".into(), json!(true));
                body.insert("stream_options".into(), json!({"include_usage": true}));
                ("completions", Value::Object(body))
            }
        };
        let resp = self.post(target, path, &body, req.timeout).await?;
        let state = StreamState {
            events: Box::pin(resp.bytes_stream().eventsource()),
            endpoint: target.endpoint_host(),
            idle: req.timeout,
            finish_reason: None,
            usage: None,
            tools: BTreeMap::new(),
            pending: Vec::new(),
            done: false,
            sleep: Box::pin(tokio::time::sleep(req.timeout)),
            deadline: tokio::time::Instant::now() + req.timeout,
        };
        Ok(Box::pin(stream::unfold(state, |mut s| async move {
            s.next_event().await.map(|item| (item, s))
        })))
    }

    async fn text(
        &self,
        target: &ModelTarget,
        req: &TextRequest,
    ) -> Result<Completion, ModelError> {
        let mut body = Map::new();
        body.insert("model".into(), json!(target.model));
        body.insert("prompt".into(), json!(req.prompt));
        if let Some(s) = &req.suffix {
            body.insert("suffix".into(), json!(s));
        }
        insert_sampling(&mut body, req.temperature, None, req.max_tokens, &req.stop);
        body.insert("stream".into(), json!(false));
        let resp = self
            .post(target, "completions", &Value::Object(body), req.timeout)
            .await?;
        let v = parse_body(target, resp, req.timeout).await?;
        let choice = v
            .pointer("/choices/0")
            .ok_or_else(|| invalid(target, "no choices"))?;
        Ok(Completion {
            text: choice
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tool_calls: Vec::new(),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            usage: usage(&v),
        })
    }
}

fn invalid(target: &ModelTarget, message: &str) -> ModelError {
    ModelError::InvalidResponse {
        endpoint: target.endpoint_host(),
        message: message.to_string(),
    }
}

async fn parse_body(
    target: &ModelTarget,
    resp: reqwest::Response,
    timeout: Duration,
) -> Result<Value, ModelError> {
    client::json_body(&target.endpoint_host(), resp, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_conversation_in_the_openai_shape() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_issue".into(),
            arguments: r#"{"id":1}"#.into(),
        };
        assert_eq!(
            wire_message(&Message::assistant("", vec![call.clone()])),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_issue", "arguments": "{\"id\":1}"}}]})
        );
        assert_eq!(
            wire_message(&Message::assistant("Looking.", vec![call]))["content"],
            json!("Looking.")
        );
        assert_eq!(
            wire_message(&Message::tool_result("call_1", "{}")),
            json!({"role": "tool", "content": "{}", "tool_call_id": "call_1"})
        );
        assert_eq!(
            wire_message(&Message::new(Role::User, "hi")),
            json!({"role": "user", "content": "hi"})
        );
    }

    #[test]
    fn error_messages_are_short_and_never_html() {
        use super::client::error_message;
        assert_eq!(
            error_message(br#"{"error":{"message":"model not found"}}"#),
            "model not found"
        );
        assert_eq!(
            error_message(b"<html><body>502 Bad Gateway</body></html>"),
            "non-JSON (HTML) error page"
        );
        assert_eq!(error_message(b"plain"), "plain");
    }

    type Events = futures_util::stream::Empty<Result<eventsource_stream::Event, String>>;

    fn state() -> StreamState<Events> {
        StreamState {
            events: futures_util::stream::empty(),
            endpoint: "m:1".into(),
            idle: Duration::from_secs(1),
            finish_reason: None,
            usage: None,
            tools: BTreeMap::new(),
            pending: Vec::new(),
            done: false,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            deadline: tokio::time::Instant::now(),
        }
    }

    /// The fast reader takes a chunk only when it reaches exactly what the
    /// general one does; everything else goes to the general one.
    #[tokio::test]
    async fn fast_chunk_reader_agrees_with_the_general_one() {
        let samples = [
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo \"q\" \u00e9"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"choices":[{"index":0,"text":" x","finish_reason":"length"}],"usage":{"prompt_tokens":null}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null},"text":"t"}]}"#,
            r#"{"choices":[{"index":0,"delta":null,"text":"t2"}]}"#,
            // General reader only:
            r#"{"choices":[{"index":0,"message":{"content":"whole"}}]}"#,
            r#"{"choices":[{"index":0,"delta":null,"message":{"content":"m"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":["part"]},"text":"t3"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":7}]}"#,
            r#"{"choices":{"0":{}},"usage":{"prompt_tokens":1.5}}"#,
            r#"{"usage":{"prompt_tokens":4,"completion_tokens":2}}"#,
            r#"{"choices":[1],"usage":{"prompt_tokens":4}}"#,
        ];
        let mut fast_taken = 0;
        for sample in samples {
            let (mut a, mut b) = (state(), state());
            let taken = serde_json::from_str::<FastChunk>(sample)
                .map(|c| a.absorb_fast(&c))
                .unwrap_or(false);
            if !taken {
                a.absorb(&serde_json::from_str(sample).unwrap());
            } else {
                fast_taken += 1;
            }
            b.absorb(&serde_json::from_str(sample).unwrap());
            a.finish();
            b.finish();
            assert_eq!(a.pending, b.pending, "{sample}");
        }
        assert_eq!(fast_taken, 7);
    }
}
