//! The model seam: one trait for chat and text completions (plain and
//! streaming, with tool calls), and the domain types every feature uses.
//!
//! Features (code suggestions, chat, prompts) build a [`ChatRequest`] and hand
//! it, with a resolved [`ModelTarget`], to a [`ModelProvider`]. Wire formats of
//! model servers stay inside the provider implementations, one file per
//! platform (`openai`, `azure`, `anthropic`, `bedrock`, `vertex`), behind
//! `platforms`, which picks one per target. Credentials for the cloud
//! platforms are found and cached by `aws_auth` and `google_auth`. Nothing
//! here knows about HTTP routes or GitLab's request shapes.

pub mod anthropic;
pub mod aws_auth;
pub mod azure;
pub mod bedrock;
pub mod catalog;
pub mod client;
pub mod google_auth;
pub mod openai;
pub mod platforms;
pub mod service;
pub mod target;
pub mod vertex;

use std::{pin::Pin, time::Duration};

use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use catalog::Family;
pub use target::{ModelTarget, TargetError};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One chat message. A multi-turn tool conversation is carried by two
/// optional parts: an assistant message lists the tool calls it made
/// (`tool_calls`), and each tool result names the call it answers
/// (`tool_call_id`, with [`Role::Tool`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant turn: its text (may be empty) and the tool calls it made.
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool the model may call (OpenAI function-tool shape, JSON Schema parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

/// What to ask the model. Sampling fields left `None` use the server's defaults.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub tools: Vec<ToolSpec>,
    /// Bound on the wait for the response headers and between streamed chunks.
    pub timeout: Duration,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>, timeout: Duration) -> Self {
        Self {
            messages,
            temperature: None,
            top_p: None,
            max_tokens: None,
            stop: Vec::new(),
            tools: Vec::new(),
            timeout,
        }
    }
}

/// A text-completion request (`/completions`): prompt, optional suffix.
#[derive(Clone, Debug)]
pub struct TextRequest {
    pub prompt: String,
    pub suffix: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub timeout: Duration,
}

/// Tokens the model server reports having used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A finished, non-streamed answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

/// One event of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// New text (may be empty).
    Text(String),
    /// A tool call, complete (the provider assembles streamed fragments).
    ToolCall(ToolCall),
    /// The end: why it stopped and what it cost, when the server says.
    Done {
        finish_reason: Option<String>,
        usage: Option<Usage>,
    },
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ModelError>> + Send>>;

/// A failure talking to a model server. Never carries the API key.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot connect to the model endpoint {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("the model endpoint {endpoint} did not answer within {seconds} s")]
    Timeout { endpoint: String, seconds: f64 },
    #[error("the model endpoint {endpoint} answered HTTP {status}: {message}")]
    Status {
        endpoint: String,
        status: u16,
        message: String,
        retry_after: Option<String>,
    },
    #[error("the model endpoint {endpoint} sent an invalid response: {message}")]
    InvalidResponse { endpoint: String, message: String },
    #[error("the model stream from {endpoint} broke off: {message}")]
    StreamBroken { endpoint: String, message: String },
    /// The gateway has no usable credentials for a cloud platform. The
    /// message names the variables and files looked at, never a value.
    #[error("{platform} credentials: {message}")]
    Credentials {
        platform: &'static str,
        message: String,
    },
}

impl ModelError {
    /// Worth another attempt: the server could not be reached, or said it
    /// failed or is overloaded for now (500, 502, 503, 504, 529). Timeouts are
    /// not: the caller has already waited the whole budget once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::Connect { .. }
                | ModelError::Status {
                    status: 500 | 502 | 503 | 504 | 529,
                    ..
                }
        )
    }

    /// The model refused the prompt as longer than its context window. Model
    /// servers say so in their own words (OpenAI and vLLM: "maximum context
    /// length", code `context_length_exceeded`; llama.cpp: "exceeds the
    /// available context size"; TGI: "must be <= ..." tokens; LiteLLM:
    /// `ContextWindowExceededError`; Anthropic: "prompt is too long"), always
    /// as a client error.
    pub fn is_context_length_exceeded(&self) -> bool {
        const PHRASES: &[&str] = &[
            "context length",
            "context_length",
            "context window",
            "contextwindowexceeded",
            "context size",
            "prompt is too long",
            "prompt too long",
            "input is too long",
            "too many tokens",
            "max_new_tokens` must be <=",
        ];
        let ModelError::Status {
            status: 400 | 413 | 422,
            message,
            ..
        } = self
        else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        PHRASES.iter().any(|p| m.contains(p))
    }

    /// A short label for metrics (`error_type`).
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Connect { .. } => "connection_error",
            ModelError::Timeout { .. } => "timeout",
            ModelError::Status { status: 429, .. } => "overloaded",
            ModelError::Status { status: 400, .. } => "http_400",
            ModelError::Status {
                status: 401 | 403, ..
            } => "permission_error",
            ModelError::Status { status: 503, .. } => "service_unavailable",
            ModelError::Status { .. } => "other",
            ModelError::InvalidResponse { .. } | ModelError::StreamBroken { .. } => "other",
            ModelError::Credentials { .. } => "permission_error",
        }
    }
}

/// The one seam between features and model servers.
#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync {
    /// A chat completion, answered in one piece.
    async fn chat(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
    ) -> Result<Completion, ModelError>;

    /// A chat completion, streamed. Dropping the stream cancels the upstream request.
    async fn chat_stream(
        &self,
        target: &ModelTarget,
        request: &ChatRequest,
    ) -> Result<EventStream, ModelError>;

    /// A text completion (prompt + optional suffix), answered in one piece.
    async fn text(
        &self,
        target: &ModelTarget,
        request: &TextRequest,
    ) -> Result<Completion, ModelError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> ModelError {
        ModelError::Status {
            endpoint: "m:1".into(),
            status: code,
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn context_length_errors_in_each_servers_words() {
        for (code, text) in [
            (
                400,
                "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens",
            ),
            (
                400,
                "the request exceeds the available context size, try increasing it",
            ),
            (
                422,
                "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000",
            ),
            (
                400,
                "litellm.ContextWindowExceededError: litellm.BadRequestError: ...",
            ),
            (400, "prompt is too long: 210000 tokens > 200000 maximum"),
        ] {
            assert!(status(code, text).is_context_length_exceeded(), "{text}");
        }
        assert!(!status(400, "model not found").is_context_length_exceeded());
        assert!(!status(500, "maximum context length").is_context_length_exceeded());
    }
}
