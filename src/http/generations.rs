//! `POST /v2/code/generations`: code generation for self-hosted models, as
//! older GitLab Rails sends it (`prompt_id: code_suggestions/generations`) and
//! as the legacy `model_provider: litellm` clients send it (their own prompt).
//! The answer uses the same envelope as v2 completions; streaming is raw text.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::header,
    response::{IntoResponse, Response},
};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{HttpState, completions::FeatureFlags, error::ApiError, parse_json};
use crate::{
    auth::Caller,
    models::{ChatRequest, Message, ModelError, Role, target::ModelMetadata},
    suggestions::{
        generation::{self, GenerationInput},
        language,
    },
};

/// `model_name` values upstream accepts for `model_provider: litellm` generations.
const LITELLM_GENERATION_MODELS: &[&str] = &[
    "codegemma",
    "codellama",
    "codestral",
    "deepseekcoder",
    "llama3",
    "mistral",
    "mixtral",
    "claude_3",
    "gpt",
];
const MAX_CODE_CHARS: usize = 100_000;
pub(super) const MAX_PROMPT_CHARS: usize = 400_000;

#[derive(Deserialize)]
struct CurrentFile {
    file_name: String,
    language_identifier: Option<String>,
    content_above_cursor: String,
    content_below_cursor: String,
}

#[derive(Deserialize)]
struct GenerationsRequest {
    #[serde(deserialize_with = "super::lax::int")]
    prompt_version: i64,
    project_path: Option<String>,
    #[allow(dead_code)]
    #[serde(default, deserialize_with = "super::lax::opt_int")]
    project_id: Option<i64>,
    current_file: CurrentFile,
    model_provider: Option<String>,
    model_endpoint: Option<String>,
    model_api_key: Option<String>,
    model_identifier: Option<String>,
    model_name: Option<String>,
    #[serde(default, deserialize_with = "super::lax::opt_bool")]
    stream: Option<bool>,
    prompt: Option<Value>,
    prompt_id: Option<String>,
    #[serde(default)]
    telemetry: Option<Vec<Value>>,
}

/// `model_provider` of a self-hosted request: one of `accepted`, else a 422.
pub(super) fn self_hosted_provider(
    provider: Option<&str>,
    accepted: &[&str],
) -> Result<(), ApiError> {
    match provider {
        Some(p) if accepted.contains(&p) => Ok(()),
        Some(other) => Err(ApiError::Validation(format!(
            "model_provider '{other}' is not supported: this gateway serves self-hosted models (model_provider: litellm)"
        ))),
        None => Err(ApiError::Validation(
            "model_provider: required for self-hosted models (litellm)".into(),
        )),
    }
}

pub(super) fn too_long(field: &str, max: usize) -> ApiError {
    ApiError::Validation(format!("{field}: must have at most {max} characters"))
}

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

impl GenerationsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if !(1..=3).contains(&self.prompt_version) {
            return Err(ApiError::Validation(
                "prompt_version: must be 1, 2 or 3".into(),
            ));
        }
        if self
            .project_path
            .as_deref()
            .is_some_and(|p| chars(p.trim()) > 255)
        {
            return Err(too_long("project_path", 255));
        }
        let f = &self.current_file;
        if chars(f.file_name.trim()) > 255 {
            return Err(too_long("current_file.file_name", 255));
        }
        if f.language_identifier
            .as_deref()
            .is_some_and(|l| chars(l) > 255)
        {
            return Err(too_long("current_file.language_identifier", 255));
        }
        if chars(&f.content_above_cursor) > MAX_CODE_CHARS {
            return Err(too_long(
                "current_file.content_above_cursor",
                MAX_CODE_CHARS,
            ));
        }
        if chars(&f.content_below_cursor) > MAX_CODE_CHARS {
            return Err(too_long(
                "current_file.content_below_cursor",
                MAX_CODE_CHARS,
            ));
        }
        if self.telemetry.as_ref().is_some_and(|t| t.len() > 10) {
            return Err(ApiError::Validation(
                "telemetry: must have at most 10 items".into(),
            ));
        }
        self_hosted_provider(self.model_provider.as_deref(), &["litellm"])?;
        match self.model_name.as_deref().map(str::trim) {
            Some(n) if chars(n) > 50 => return Err(too_long("model_name", 50)),
            Some(n) if !LITELLM_GENERATION_MODELS.contains(&n) => {
                return Err(ApiError::Validation(format!(
                    "model_name '{n}' is not a code generation model for provider litellm"
                )));
            }
            Some(_) => {}
            None => {
                return Err(ApiError::Validation(
                    "model_name: required for self-hosted models".into(),
                ));
            }
        }
        if let Some(id) = self.prompt_id.as_deref()
            && id != generation::PROMPT_ID
        {
            return Err(ApiError::Validation(format!(
                "prompt_id '{id}' is not served by this gateway (only {})",
                generation::PROMPT_ID
            )));
        }
        self.legacy_messages().map(|_| ())
    }

    /// The client's own prompt as chat messages (the legacy path); checked
    /// for the shape its `prompt_version` requires even when unused.
    fn legacy_messages(&self) -> Result<Vec<Message>, ApiError> {
        let prompt_id_path = self.prompt_id.is_some();
        match (self.prompt_version, &self.prompt) {
            (_, None | Some(Value::Null)) if prompt_id_path => Ok(Vec::new()),
            (1, _) if prompt_id_path => Ok(Vec::new()),
            (1, _) => Err(ApiError::Validation(
                "prompt: prompt_version 1 has no prompt; send prompt_version 2 or a prompt_id"
                    .into(),
            )),
            (2, Some(Value::String(s))) => {
                if chars(s) > MAX_PROMPT_CHARS {
                    return Err(too_long("prompt", MAX_PROMPT_CHARS));
                }
                Ok(vec![Message::new(Role::User, s.clone())])
            }
            (2, _) => Err(ApiError::Validation(
                "prompt: prompt_version 2 requires a string".into(),
            )),
            (_, Some(Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let role = match m.get("role").and_then(Value::as_str) {
                        Some("system") => Role::System,
                        Some("user") => Role::User,
                        Some("assistant") => Role::Assistant,
                        _ => {
                            return Err(ApiError::Validation(format!(
                                "prompt[{i}].role: must be system, user or assistant"
                            )));
                        }
                    };
                    let content = m.get("content").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::Validation(format!("prompt[{i}].content: must be a string"))
                    })?;
                    if chars(content) > MAX_PROMPT_CHARS {
                        return Err(too_long(&format!("prompt[{i}].content"), MAX_PROMPT_CHARS));
                    }
                    Ok(Message::new(role, content))
                })
                .collect(),
            _ => Err(ApiError::Validation(
                "prompt: prompt_version 3 requires a list of messages".into(),
            )),
        }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A raw-text streamed body (v2 and v3 streaming). An error after the first
/// byte cuts the body, as upstream: the client never sees a clean end.
pub(super) fn raw_text_stream(
    deltas: impl Stream<Item = Result<String, ModelError>> + Send + 'static,
) -> Response {
    let body = Body::from_stream(deltas.map(|d| {
        d.map(Bytes::from).inspect_err(|e| {
            tracing::warn!(error = %e, "model stream failed after the response started");
        })
    }));
    (
        [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn code_generations(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    FeatureFlags(flags): FeatureFlags,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.can("generate_code", Some(state.tokens.service_name())) {
        return Err(ApiError::Forbidden(
            "Unauthorized to access code generations",
        ));
    }
    let req: GenerationsRequest = parse_json(body)?;
    req.validate()?;
    let file = &req.current_file;
    let file_name = file.file_name.trim();
    let lang = language::detect(file_name, file.language_identifier.as_deref());
    let timeout = state.models.suggestions_timeout();

    let (target, request, engine, name): (_, ChatRequest, String, String) =
        if req.prompt_id.is_some() {
            let meta = ModelMetadata {
                provider: Some("custom_openai".into()),
                name: req.model_name.clone(),
                endpoint: req.model_endpoint.clone(),
                api_key: req.model_api_key.clone(),
                identifier: req.model_identifier.clone(),
            };
            let target = state.models.resolve(&meta)?;
            let input = GenerationInput {
                file_name: file_name.to_string(),
                language: file
                    .language_identifier
                    .clone()
                    .filter(|l| !l.trim().is_empty())
                    .or_else(|| lang.clone()),
                prefix: file.content_above_cursor.clone(),
                enhancer: Default::default(),
            };
            let request = generation::build(target.family, &input, timeout);
            let name = generation::prompt_name(target.family);
            (target, request, "agent".to_string(), name)
        } else {
            // Legacy: `custom_openai/<model_name>`; the identifier is ignored.
            let meta = ModelMetadata {
                provider: req.model_provider.clone(),
                name: req.model_name.clone(),
                endpoint: req.model_endpoint.clone(),
                api_key: req.model_api_key.clone(),
                identifier: req.model_name.clone(),
            };
            let target = state.models.resolve(&meta)?;
            let request = generation::build_legacy(target.family, req.legacy_messages()?, timeout);
            let engine = target.engine.clone();
            let name = target.family.id.to_string();
            (target, request, engine, name)
        };

    if req.stream.unwrap_or(false) {
        let lines = generation::generate_stream(&state.models, &target, &request).await?;
        return Ok(raw_text_stream(lines));
    }
    let c = generation::generate(
        &state.models,
        &target,
        &request,
        &req.current_file.content_above_cursor,
    )
    .await?;
    let choices = if c.text.is_empty() {
        vec![]
    } else {
        vec![json!({"text": c.text, "index": 0, "finish_reason": "length"})]
    };
    Ok(Json(json!({
        "id": "id",
        "model": {
            "engine": engine,
            "name": name,
            "lang": lang.unwrap_or_default(),
            "tokens_consumption_metadata": null,
            "region": "us-central1",
        },
        "experiments": [],
        "object": "text_completion",
        "created": unix_now(),
        "choices": choices,
        "metadata": {"enabled_feature_flags": flags},
    }))
    .into_response())
}
