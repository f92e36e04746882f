//! `POST /v2/chat/agent`: one step of Duo Chat's ReAct loop. Rails sends the
//! conversation (and, after a tool round, the scratchpad); we render the
//! `chat/react` prompt, stream the model's answer through the ReAct parser and
//! answer NDJSON events (`final_answer_delta`, `action`, `unknown`, `error`,
//! `usage`) in Python's `json.dumps` format. Rails runs the tool and calls
//! again; the gateway keeps no state between steps.

use std::{collections::VecDeque, convert::Infallible};

use axum::{
    Extension,
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    HttpState,
    error::ApiError,
    parse_json,
    prompts::{WireModelMetadata, prompt_error, target_of},
};
use crate::{
    auth::Caller,
    chat::{
        context,
        ndjson::{Py, event},
        react::{Outcome, ReactParser},
        tools,
    },
    models::{EventStream, Message, ModelError, Role, StreamEvent, Usage, service::Feature},
    prompts::calendar::Day,
};

/// What the model is told it cannot see when Rails does not say.
const DEFAULT_UNAVAILABLE: &str = "Merge Requests, Pipelines, Vulnerabilities";
/// Appended to the answer when the model's guardrail cut it (our wording).
const GUARDRAIL_WARNING: &str =
    "\n\nThis response was stopped by the model's content safety filter.";

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ChatRole {
    User,
    Assistant,
    System,
}

#[derive(Deserialize, Serialize)]
struct CurrentFile {
    /// Rails sends `null` for a file without a path (an unsaved buffer).
    #[serde(default)]
    file_path: Option<String>,
    data: String,
    #[serde(default, deserialize_with = "super::lax::bool")]
    selected_code: bool,
}

#[derive(Deserialize, Serialize)]
struct AdditionalContext {
    category: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize, Serialize, Default)]
struct WireAction {
    #[serde(default)]
    tool: String,
    #[serde(default)]
    tool_input: String,
    #[serde(default)]
    thought: String,
}

#[derive(Deserialize, Serialize)]
struct WireScratchStep {
    #[serde(default)]
    action: Option<WireAction>,
    #[serde(default)]
    observation: String,
}

#[derive(Deserialize, Serialize)]
struct AgentMessage {
    role: ChatRole,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    current_file: Option<CurrentFile>,
    #[serde(default)]
    additional_context: Option<Vec<AdditionalContext>>,
    #[serde(default)]
    agent_scratchpad: Option<Vec<WireScratchStep>>,
}

/// One Thought/Action/Observation round, as the prompt renders it.
#[derive(Deserialize, Serialize, Clone, Default)]
struct Step {
    #[serde(default)]
    thought: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    tool_input: String,
    #[serde(default)]
    observation: String,
}

#[derive(Deserialize)]
struct OptionsScratchpad {
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct AgentOptions {
    #[serde(default)]
    agent_scratchpad: Option<OptionsScratchpad>,
}

#[derive(Deserialize)]
struct AgentRequest {
    messages: Vec<AgentMessage>,
    #[serde(default)]
    options: Option<AgentOptions>,
    #[serde(default)]
    unavailable_resources: Option<Vec<String>>,
    #[serde(default)]
    model_metadata: Option<WireModelMetadata>,
}

/// Classic chat needs `duo_classic_chat`; a Duo Core caller (`duo_chat`
/// only) keeps it only when addressing `@GitLabDuo` explicitly.
fn authorize(caller: &Caller, messages: &[AgentMessage]) -> Result<(), ApiError> {
    if caller.can("duo_classic_chat", None) {
        return Ok(());
    }
    if !caller.can("duo_chat", None) {
        return Err(ApiError::Denied("Unauthorized to access duo chat".into()));
    }
    let mentions_duo = messages
        .iter()
        .rev()
        .filter(|m| m.role == ChatRole::User)
        .find_map(|m| m.content.as_deref().filter(|c| !c.trim().is_empty()))
        .is_some_and(|c| c.contains("@GitLabDuo"));
    if !mentions_duo {
        return Err(ApiError::Denied(
            "Duo Core no longer authorized to access Duo Classic Chat".into(),
        ));
    }
    Ok(())
}

fn check_additional_context(caller: &Caller, messages: &[AgentMessage]) -> Result<(), ApiError> {
    for item in messages
        .iter()
        .flat_map(|m| m.additional_context.iter().flatten())
    {
        if !context::is_known(&item.category) {
            return Err(ApiError::Validation(format!(
                "additional_context.category: '{}' is not one of {}",
                item.category.chars().take(100).collect::<String>(),
                context::CATEGORIES.join(", ")
            )));
        }
        let up = context::unit_primitive(&item.category);
        if !caller.can(&up, None) {
            return Err(ApiError::Denied(format!("Unauthorized to access {up}")));
        }
    }
    Ok(())
}

fn steps_of(pad: &[WireScratchStep]) -> Vec<Step> {
    pad.iter()
        .map(|s| {
            let a = s.action.as_ref();
            Step {
                thought: a.map(|a| a.thought.replace("\\_", "_")).unwrap_or_default(),
                tool: a.map(|a| a.tool.replace("\\_", "_")).unwrap_or_default(),
                tool_input: a.map(|a| a.tool_input.clone()).unwrap_or_default(),
                observation: s.observation.clone(),
            }
        })
        .collect()
}

pub async fn agent(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: AgentRequest = parse_json(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::Validation(
            "messages: must have at least 1 item".into(),
        ));
    }
    if req
        .messages
        .iter()
        .any(|m| m.agent_scratchpad.is_some() && m.role != ChatRole::Assistant)
    {
        return Err(ApiError::BadRequest(
            "agent_scratchpad can only be present when role is ASSISTANT".into(),
        ));
    }
    authorize(&caller, &req.messages)?;
    check_additional_context(&caller, &req.messages)?;
    let target = target_of(&state, req.model_metadata)?;
    let def = state
        .prompts
        .get("chat/react", target.family, None)
        .map_err(prompt_error)?;
    let gitlab_version = headers
        .get("x-gitlab-version")
        .and_then(|v| v.to_str().ok());
    let offered = tools::available(&caller, gitlab_version);

    // The scratchpad: `options` first, else a trailing assistant message
    // without content (Rails' shape after a tool round).
    let mut history: Vec<&AgentMessage> = req.messages.iter().collect();
    let trailing_pad = history
        .last()
        .is_some_and(|m| m.role == ChatRole::Assistant && m.content.is_none());
    let pad_message = if trailing_pad { history.pop() } else { None };
    let steps = match req.options.and_then(|o| o.agent_scratchpad) {
        Some(p) => p
            .steps
            .into_iter()
            .map(|s| Step {
                thought: s.thought.replace("\\_", "_"),
                tool: s.tool.replace("\\_", "_"),
                ..s
            })
            .collect(),
        None => pad_message
            .and_then(|m| m.agent_scratchpad.as_deref())
            .map(steps_of)
            .unwrap_or_default(),
    };

    let unavailable = req
        .unavailable_resources
        .map(|r| r.join(", "))
        .unwrap_or_else(|| DEFAULT_UNAVAILABLE.to_string());
    let render = |role: Role, vars: Value| {
        state
            .prompts
            .render_one(&def, role, &vars)
            .map_err(prompt_error)
    };
    let mut messages = Vec::new();
    if let Some(system) = render(
        Role::System,
        json!({
            "tools": offered,
            "unavailable_resources": unavailable,
            "current_date": Day::today().with_weekday(),
        }),
    )? {
        messages.push(Message::new(Role::System, system));
    }
    for m in history {
        match m.role {
            ChatRole::User => {
                if let Some(text) = render(Role::User, json!({ "message": m }))? {
                    messages.push(Message::new(Role::User, text));
                }
            }
            ChatRole::Assistant => {
                if let Some(c) = m.content.as_deref().filter(|c| !c.is_empty()) {
                    messages.push(Message::new(Role::Assistant, c));
                }
            }
            // Only the prompt's own system message is sent: several system
            // messages break many open models' chat templates.
            ChatRole::System => {}
        }
    }
    if let Some(prefill) = render(Role::Assistant, json!({ "agent_scratchpad": steps }))? {
        messages.push(Message::new(Role::Assistant, prefill));
    }
    let request = state.prompts.chat_request(&def, target.family, messages);
    let feature = Feature {
        category: "duo_chat",
        unit_primitive: "duo_chat",
    };
    let (events, first_error) = match state.models.chat_stream(&target, &request, feature).await {
        Ok(events) => (Some(events), None),
        Err(e) => (None, Some(e)),
    };
    let mut turn = Turn {
        events,
        parser: Some(ReactParser::new(target.family.strip_reasoning)),
        offered: offered.iter().map(|t| t.name).collect(),
        model: target.model.clone(),
        pending: VecDeque::new(),
        done: false,
    };
    if let Some(e) = first_error {
        turn.fail(&e);
    }
    let body = stream::unfold(turn, |mut t| async move {
        t.next_line()
            .await
            .map(|line| (Ok::<_, Infallible>(Bytes::from(line)), t))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// One streamed answer being turned into event lines.
struct Turn {
    events: Option<EventStream>,
    parser: Option<ReactParser>,
    offered: Vec<&'static str>,
    model: String,
    pending: VecDeque<String>,
    done: bool,
}

impl Turn {
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let next = match self.events.as_mut() {
                Some(events) => events.next().await,
                None => None,
            };
            match next {
                Some(Ok(StreamEvent::Text(text))) => {
                    if let Some(delta) = self.parser.as_mut().and_then(|p| p.push(&text)) {
                        self.pending.push_back(answer_delta(&delta, None));
                    }
                }
                // The ReAct prompt offers tools in text, never as functions.
                Some(Ok(StreamEvent::ToolCall(_))) => {}
                Some(Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                })) => self.finish(finish_reason.as_deref(), usage),
                Some(Err(e)) => self.fail(&e),
                None => self.finish(None, None),
            }
        }
    }

    fn finish(&mut self, finish_reason: Option<&str>, usage: Option<Usage>) {
        self.done = true;
        self.events = None;
        let Some(parser) = self.parser.take() else {
            return;
        };
        let line = match parser.finish() {
            Outcome::FinalAnswer { mut rest } => {
                if finish_reason == Some("guardrail_intervened") {
                    rest.push_str(GUARDRAIL_WARNING);
                }
                answer_delta(&rest, finish_reason)
            }
            Outcome::Action {
                tool,
                tool_input,
                thought,
            } if self.offered.contains(&tool.as_str()) => event(
                "action",
                Py::obj([
                    ("tool", Py::str(tool)),
                    ("tool_input", Py::str(tool_input)),
                    ("thought", Py::str(thought)),
                ]),
            ),
            Outcome::Action { tool, .. } => {
                tracing::info!(tool = %tool, "the model asked for a tool it was not offered");
                error_line("tool not available", false)
            }
            Outcome::Unknown(text) => event("unknown", Py::obj([("text", Py::str(text))])),
        };
        self.pending.push_back(line);
        if let Some(u) = usage {
            self.pending.push_back(event(
                "usage",
                Py::obj([(
                    "usage",
                    Py::Obj(vec![(
                        self.model.clone(),
                        Py::obj([
                            ("input_tokens", Py::Int(u.input_tokens)),
                            ("output_tokens", Py::Int(u.output_tokens)),
                        ]),
                    )]),
                )]),
            ));
        }
    }

    /// A model error ends the stream after one `error` line. A prompt longer
    /// than the model's context says "prompt is too long", the words Rails
    /// turns into its "start a new conversation with /clear" hint.
    fn fail(&mut self, e: &ModelError) {
        tracing::warn!(error = %e, "Duo Chat model call failed");
        let message = if e.is_context_length_exceeded() {
            format!("prompt is too long for the model's context window: {e}")
        } else {
            e.to_string()
        };
        let retryable =
            message.contains("overloaded_error") || message.contains("AnthropicError - Overloaded");
        self.pending.push_back(error_line(&message, retryable));
        self.done = true;
        self.events = None;
        self.parser = None;
    }
}

fn answer_delta(text: &str, finish_reason: Option<&str>) -> String {
    event(
        "final_answer_delta",
        Py::obj([
            ("text", Py::str(text)),
            ("finish_reason", Py::opt_str(finish_reason)),
        ]),
    )
}

fn error_line(message: &str, retryable: bool) -> String {
    event(
        "error",
        Py::obj([
            ("message", Py::str(message)),
            ("retryable", Py::Bool(retryable)),
        ]),
    )
}
