//! Amazon Bedrock (`bedrock/<model id, inference profile id or ARN>`): the
//! Converse API (`POST {base}/model/{id}/converse`) and ConverseStream
//! (`.../converse-stream`, answered in AWS event-stream frames, decoded by
//! the SDK's `aws-smithy-eventstream`), signed with SigV4 by the SDK's
//! `aws-sigv4` (service `bedrock`) or sent with a Bedrock API key.
//!
//! The base is `https://bedrock-runtime.{region}.amazonaws.com` or
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` / `AWS_ENDPOINT_URL` (VPC endpoints).
//! The model id goes into the path percent-encoded as the SDK does it
//! (ARNs carry `:` and `/`). `AIGW_BEDROCK_GUARDRAIL_CONFIG` becomes the
//! request's `guardrailConfig`.

use std::{collections::BTreeMap, time::Duration};

use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message as Frame};
use bytes::{Buf, BytesMut};
use futures_util::{Stream, stream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, Completion, EventStream, ModelError, ModelProvider, Role, StreamEvent,
    TextRequest, ToolCall, Usage, anthropic,
    aws_auth::{AwsAuth, AwsIdentity},
    client::{self, IdleTimer, SharedClient},
    target::{ModelTarget, Platform},
};

/// Everything but RFC 3986's unreserved characters is encoded (as the SDK does).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Bound on buffered, not yet decoded event-stream bytes.
const MAX_FRAME_BUFFER: usize = 16 * 1024 * 1024;
const SIGNING_NAME: &str = "bedrock";

pub struct Bedrock {
    client: SharedClient,
    auth: AwsAuth,
    guardrail: Option<Value>,
}

impl Bedrock {
    pub fn new(client: SharedClient, auth: AwsAuth, guardrail: Option<Value>) -> Self {
        Self {
            client,
            auth,
            guardrail,
        }
    }

    /// Forgets cached credentials.
    pub async fn forget_credentials(&self) {
        self.auth.forget().await;
    }

    async fn post(
        &self,
        target: &ModelTarget,
        action: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, ModelError> {
        let region = match &target.platform {
            Platform::Bedrock { region } => region.as_str(),
            _ => "us-east-1",
        };
        let request_key = target.key_from_request.then(|| target.api_key.expose());
        let identity = self.auth.identity(request_key).await?;
        let mut url = target.api_base.clone();
        let path = format!(
            "{}/model/{}/{action}",
            url.path().trim_end_matches('/'),
            utf8_percent_encode(&target.model, PATH_SEGMENT)
        );
        url.set_path(&path);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("content-type".into(), "application/json".into()),
        ];
        match &identity {
            AwsIdentity::Bearer(token) => {
                headers.push(("authorization".into(), format!("Bearer {token}")));
            }
            AwsIdentity::SigV4(credentials) => {
                let identity = credentials.clone().into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(region)
                    .name(SIGNING_NAME)
                    .time(std::time::SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| signing_failed(e.to_string()))?
                    .into();
                let signable = SignableRequest::new(
                    "POST",
                    url.as_str(),
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    SignableBody::Bytes(&bytes),
                )
                .map_err(|e| signing_failed(e.to_string()))?;
                let (instructions, _signature) = sign(signable, &params)
                    .map_err(|e| signing_failed(e.to_string()))?
                    .into_parts();
                let signed: Vec<(String, String)> = instructions
                    .headers()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                headers.extend(signed);
            }
        }
        let http = self.client.get();
        client::send(
            || {
                let mut rb = http.post(url.clone());
                for (k, v) in &headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                rb.body(bytes.clone())
            },
            &target.endpoint_host(),
            timeout,
        )
        .await
        .map_err(|e| explain(e, target, region))
    }
}

fn signing_failed(message: String) -> ModelError {
    ModelError::Credentials {
        platform: "Amazon Bedrock",
        message: format!("cannot sign the request: {message}"),
    }
}

/// AWS's refusals in words an administrator acts on; throttling with a `Retry-After`.
fn explain(e: ModelError, target: &ModelTarget, region: &str) -> ModelError {
    let model = &target.model;
    let e = client::reword(client::with_retry_after(e), &[401, 403], |m| {
        format!(
            "Amazon Bedrock denied access to model '{model}' in region {region} (do the credentials allow bedrock:InvokeModel / bedrock:InvokeModelWithResponseStream on it, and is model access granted in this region?): {m}"
        )
    });
    client::reword(e, &[404], |m| {
        format!("Amazon Bedrock has no model '{model}' in region {region}: {m}")
    })
}

/// The Converse / ConverseStream body.
fn converse_body(req: &ChatRequest, model: &str, guardrail: Option<&Value>) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let messages = anthropic::claude_messages(&req.messages, model);
    for m in messages.iter() {
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
                    anthropic::push(&mut turns, "assistant", json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    anthropic::push(
                        &mut turns,
                        "assistant",
                        json!({"toolUse": {"toolUseId": c.id, "name": c.name,
                            "input": anthropic::arguments(c)}}),
                    );
                }
            }
            Role::Tool => anthropic::push(
                &mut turns,
                "user",
                json!({"toolResult": {
                    "toolUseId": m.tool_call_id.as_deref().unwrap_or_default(),
                    "content": [{"text": m.content}]}}),
            ),
        }
    }
    let mut out = Map::new();
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(m) = req.max_tokens {
        inference.insert("maxTokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"toolSpec": {"name": t.name, "description": t.description,
                    "inputSchema": {"json": t.parameters}}})
            })
            .collect();
        out.insert("toolConfig".into(), json!({"tools": tools}));
    }
    if let Some(g) = guardrail {
        out.insert("guardrailConfig".into(), g.clone());
    }
    Value::Object(out)
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        input_tokens: u.get("inputTokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u.get("outputTokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

fn converse_completion(v: &Value, endpoint: &str) -> Result<Completion, ModelError> {
    let content = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| ModelError::InvalidResponse {
            endpoint: endpoint.to_string(),
            message: "no output.message.content".into(),
        })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(u) = block.get("toolUse") {
            tool_calls.push(ToolCall {
                id: u
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: u
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: u.get("input").map_or_else(|| "{}".into(), Value::to_string),
            });
        }
    }
    Ok(Completion {
        text,
        tool_calls,
        finish_reason: v
            .get("stopReason")
            .and_then(Value::as_str)
            .map(anthropic::finish_reason),
        usage: usage_of(v),
    })
}

type Body = std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

/// ConverseStream frames turned into seam events.
struct FrameStream {
    body: Body,
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
    endpoint: String,
    timer: IdleTimer,
    tools: BTreeMap<u64, ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    pending: Vec<StreamEvent>,
    done: bool,
}

fn header<'a>(frame: &'a Frame, name: &str) -> Option<&'a str> {
    frame
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl FrameStream {
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

    fn finish(&mut self) {
        self.done = true;
        let tools = std::mem::take(&mut self.tools);
        self.pending
            .extend(tools.into_values().map(StreamEvent::ToolCall));
        self.pending.push(StreamEvent::Done {
            finish_reason: self.finish.take(),
            usage: self.usage.take(),
        });
    }

    async fn next_event(&mut self) -> Option<Result<StreamEvent, ModelError>> {
        loop {
            if !self.pending.is_empty() {
                return Some(Ok(self.pending.remove(0)));
            }
            if self.done {
                return None;
            }
            match self.decoder.decode_frame(&mut self.buffer) {
                Err(e) => return self.broken(format!("invalid event-stream frame: {e}")),
                Ok(DecodedFrame::Complete(frame)) => {
                    if let Some(e) = self.absorb(&frame) {
                        return self.fail(e);
                    }
                    continue;
                }
                Ok(DecodedFrame::Incomplete) => {}
            }
            if self.buffer.remaining() > MAX_FRAME_BUFFER {
                return self.broken("event-stream frame larger than 16 MiB");
            }
            let next = match self.timer.next(&mut self.body).await {
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
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return self.broken(crate::telemetry::error_chain(&e)),
                None => {
                    if self.finish.is_none() {
                        return self.broken("the stream ended before the model finished");
                    }
                    self.finish();
                }
            }
        }
    }

    /// Takes one frame; an exception frame becomes the stream's error.
    fn absorb(&mut self, frame: &Frame) -> Option<ModelError> {
        let payload: Value = serde_json::from_slice(frame.payload()).unwrap_or(Value::Null);
        match header(frame, ":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = header(frame, ":exception-type").unwrap_or("exception");
                let message = payload
                    .get("message")
                    .or_else(|| payload.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the model stream failed");
                let status = match kind {
                    "throttlingException" => 429,
                    "validationException" => 400,
                    "serviceUnavailableException" => 503,
                    "internalServerException" => 500,
                    "modelTimeoutException" => 408,
                    "modelStreamErrorException" => 424,
                    _ => 502,
                };
                return Some(client::with_retry_after(ModelError::Status {
                    endpoint: self.endpoint.clone(),
                    status,
                    message: format!("{kind}: {}", client::truncate(message, 300)),
                    retry_after: None,
                }));
            }
            other => {
                let message = header(frame, ":error-message").unwrap_or("unknown frame");
                return Some(ModelError::StreamBroken {
                    endpoint: self.endpoint.clone(),
                    message: format!(
                        "{} frame: {}",
                        other.unwrap_or("untyped"),
                        client::truncate(message, 300)
                    ),
                });
            }
        }
        let index = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match header(frame, ":event-type").unwrap_or_default() {
            "contentBlockStart" => {
                if let Some(t) = payload.pointer("/start/toolUse") {
                    self.tools.insert(
                        index,
                        ToolCall {
                            id: t
                                .get("toolUseId")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            name: t
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            arguments: String::new(),
                        },
                    );
                }
            }
            "contentBlockDelta" => {
                if let Some(t) = payload.pointer("/delta/text").and_then(Value::as_str) {
                    self.pending.push(StreamEvent::Text(t.to_string()));
                }
                if let Some(input) = payload
                    .pointer("/delta/toolUse/input")
                    .and_then(Value::as_str)
                    && let Some(call) = self.tools.get_mut(&index)
                {
                    call.arguments.push_str(input);
                }
            }
            "contentBlockStop" => {
                if let Some(mut call) = self.tools.remove(&index) {
                    if call.arguments.trim().is_empty() {
                        call.arguments = "{}".into();
                    }
                    self.pending.push(StreamEvent::ToolCall(call));
                }
            }
            "messageStop" => {
                let reason = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.finish = Some(anthropic::finish_reason(reason));
            }
            "metadata" => {
                if let Some(u) = usage_of(&payload) {
                    self.usage = Some(u);
                }
                if self.finish.is_some() {
                    self.finish();
                }
            }
            _ => {}
        }
        None
    }
}

#[async_trait::async_trait]
impl ModelProvider for Bedrock {
    async fn chat(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<Completion, ModelError> {
        let body = converse_body(req, &target.model, self.guardrail.as_ref());
        let resp = self.post(target, "converse", &body, req.timeout).await?;
        let endpoint = target.endpoint_host();
        let v = client::json_body(&endpoint, resp, req.timeout).await?;
        converse_completion(&v, &endpoint)
    }

    async fn chat_stream(
        &self,
        target: &ModelTarget,
        req: &ChatRequest,
    ) -> Result<EventStream, ModelError> {
        let body = converse_body(req, &target.model, self.guardrail.as_ref());
        let resp = self
            .post(target, "converse-stream", &body, req.timeout)
            .await?;
        let state = FrameStream {
            body: Box::pin(resp.bytes_stream()),
            buffer: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
            endpoint: target.endpoint_host(),
            timer: IdleTimer::new(req.timeout),
            tools: BTreeMap::new(),
            finish: None,
            usage: None,
            pending: Vec::new(),
            done: false,
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
        self.chat(target, &anthropic::text_as_chat(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Message;
    use futures_util::StreamExt;

    fn frame(kind: &str, payload: Value) -> Vec<u8> {
        use aws_smithy_types::event_stream::Header;
        let m = Frame::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(kind.to_string().into()),
            ));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
        out
    }

    /// Streamed tool use: the input arrives in fragments and leaves as one call.
    #[tokio::test]
    async fn converse_stream_assembles_tool_use() {
        let bytes = [
            frame("messageStart", json!({"role": "assistant"})),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Let me look."}}),
            ),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            frame(
                "contentBlockStart",
                json!({"contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_issue"}}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"id\""}}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ": 7}"}}}),
            ),
            frame("contentBlockStop", json!({"contentBlockIndex": 1})),
            frame("messageStop", json!({"stopReason": "tool_use"})),
            frame(
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 9}}),
            ),
        ]
        .concat();
        // Delivered three bytes at a time.
        let chunks: Vec<Result<bytes::Bytes, reqwest::Error>> = bytes
            .chunks(3)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let state = FrameStream {
            body: Box::pin(futures_util::stream::iter(chunks)),
            buffer: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
            endpoint: "b".into(),
            timer: IdleTimer::new(Duration::from_secs(5)),
            tools: BTreeMap::new(),
            finish: None,
            usage: None,
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
                StreamEvent::Text("Let me look.".into()),
                StreamEvent::ToolCall(ToolCall {
                    id: "tooluse_1".into(),
                    name: "get_issue".into(),
                    arguments: r#"{"id": 7}"#.into()
                }),
                StreamEvent::Done {
                    finish_reason: Some("tool_calls".into()),
                    usage: Some(Usage {
                        input_tokens: 5,
                        output_tokens: 9
                    })
                },
            ]
        );
    }

    #[test]
    fn converse_body_merges_turns_and_carries_tools_and_guardrail() {
        let call = ToolCall {
            id: "t1".into(),
            name: "search".into(),
            arguments: r#"{"q":"x"}"#.into(),
        };
        let mut req = ChatRequest::new(
            vec![
                Message::new(Role::System, "sys"),
                Message::new(Role::User, "hi"),
                Message::assistant("Looking.", vec![call]),
                Message::tool_result("t1", "found"),
            ],
            Duration::from_secs(1),
        );
        req.max_tokens = Some(10);
        req.stop = vec!["\n\n".into()];
        req.tools = vec![super::super::ToolSpec {
            name: "search".into(),
            description: "Search".into(),
            parameters: json!({"type": "object"}),
        }];
        let g = json!({"guardrailIdentifier": "g", "guardrailVersion": "1", "trace": "enabled"});
        let b = converse_body(&req, "anthropic.claude-3-haiku-20240307-v1:0", Some(&g));
        assert_eq!(b["system"][0]["text"], "sys");
        assert_eq!(b["messages"][1]["content"][1]["toolUse"]["input"]["q"], "x");
        assert_eq!(
            b["messages"][2]["content"][0]["toolResult"]["toolUseId"],
            "t1"
        );
        assert_eq!(b["inferenceConfig"]["maxTokens"], 10);
        assert_eq!(
            b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        assert_eq!(b["guardrailConfig"], g);
        assert_eq!(
            utf8_percent_encode(
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0",
                PATH_SEGMENT
            )
            .to_string(),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0"
        );
    }
}
