//! `POST /v2/code/completions` and `POST /v2/completions`: code completions
//! for self-hosted models, in the request and response shapes GitLab Rails and
//! the language server use (`prompt_version` 1-3 envelope; JSON answer, or
//! raw text deltas when `stream` is true).

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    HttpState,
    error::ApiError,
    generations::{self_hosted_provider, too_long, unix_now},
    parse_json,
};
use crate::{
    auth::Caller,
    models::target::ModelMetadata,
    suggestions::{self, CompletionInput, language},
};

/// `model_name` values upstream accepts for `model_provider: litellm` completions.
const LITELLM_COMPLETION_MODELS: &[&str] = &[
    "codegemma",
    "codellama",
    "codestral",
    "codestral-2501",
    "codestral-2508",
    "deepseekcoder",
    "llama3",
    "mistral",
    "mixtral",
    "claude_3",
    "gpt",
    "qwen2p5-coder-7b",
];
const MAX_CODE_CHARS: usize = 100_000;
const MAX_CONTEXT_CHARS: usize = 500_000;

#[derive(Deserialize)]
struct CurrentFile {
    file_name: String,
    language_identifier: Option<String>,
    content_above_cursor: String,
    content_below_cursor: String,
}

#[derive(Deserialize)]
struct ContextItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    content: String,
}

#[derive(Deserialize)]
pub struct CompletionsRequest {
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
    #[serde(default)]
    context: Option<Vec<ContextItem>>,
    #[serde(default)]
    telemetry: Option<Vec<Value>>,
}

impl CompletionsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if !(1..=3).contains(&self.prompt_version) {
            return Err(ApiError::Validation(
                "prompt_version: must be 1, 2 or 3".into(),
            ));
        }
        if self
            .project_path
            .as_deref()
            .is_some_and(|p| p.trim().chars().count() > 255)
        {
            return Err(too_long("project_path", 255));
        }
        let f = &self.current_file;
        if f.file_name.trim().chars().count() > 255 {
            return Err(too_long("current_file.file_name", 255));
        }
        if f.content_above_cursor.chars().count() > MAX_CODE_CHARS {
            return Err(too_long(
                "current_file.content_above_cursor",
                MAX_CODE_CHARS,
            ));
        }
        if f.content_below_cursor.chars().count() > MAX_CODE_CHARS {
            return Err(too_long(
                "current_file.content_below_cursor",
                MAX_CODE_CHARS,
            ));
        }
        if let Some(ctx) = &self.context {
            if ctx.len() > 100 {
                return Err(ApiError::Validation(
                    "context: must have at most 100 items".into(),
                ));
            }
            for (i, c) in ctx.iter().enumerate() {
                if c.content.chars().count() > MAX_CONTEXT_CHARS {
                    return Err(too_long(
                        &format!("context[{i}].content"),
                        MAX_CONTEXT_CHARS,
                    ));
                }
                let _ = (&c.kind, &c.name);
            }
        }
        if self.telemetry.as_ref().is_some_and(|t| t.len() > 10) {
            return Err(ApiError::Validation(
                "telemetry: must have at most 10 items".into(),
            ));
        }
        self_hosted_provider(self.model_provider.as_deref(), &["litellm", "codestral"])?;
        match self.model_name.as_deref().map(str::trim) {
            Some(n) if n.chars().count() > 50 => Err(too_long("model_name", 50)),
            Some(n) if !LITELLM_COMPLETION_MODELS.contains(&n) => Err(ApiError::Validation(
                format!("model_name '{n}' is not a code completion model for provider litellm"),
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::Validation(
                "model_name: required for self-hosted models".into(),
            )),
        }
    }
}

/// `x-gitlab-enabled-feature-flags`, as a list.
pub fn feature_flags(headers: &HeaderMap) -> Vec<String> {
    headers
        .get("x-gitlab-enabled-feature-flags")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The feature flags header, read without cloning the whole header map (as
/// a `HeaderMap` argument would).
pub struct FeatureFlags(pub Vec<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FeatureFlags {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(FeatureFlags(feature_flags(&parts.headers)))
    }
}

pub async fn code_completions(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    FeatureFlags(flags): FeatureFlags,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Gateway-issued tokens may call this route: it is the IDE direct-access path.
    if !caller.can("complete_code", None) {
        return Err(ApiError::Forbidden(
            "Unauthorized to access code completions",
        ));
    }
    let req: CompletionsRequest = parse_json(body)?;
    req.validate()?;
    let meta = ModelMetadata {
        provider: req.model_provider.clone(),
        name: req.model_name.clone(),
        endpoint: req.model_endpoint.clone(),
        api_key: req.model_api_key.clone(),
        identifier: req.model_identifier.clone(),
    };
    let target = state.models.resolve(&meta)?;
    let file = &req.current_file;
    let lang = language::detect(file.file_name.trim(), file.language_identifier.as_deref());
    let input = CompletionInput {
        file_name: file.file_name.trim().to_string(),
        language: lang.clone(),
        prefix: file.content_above_cursor.clone(),
        suffix: file.content_below_cursor.clone(),
        context: req
            .context
            .iter()
            .flatten()
            .map(|c| c.content.clone())
            .collect(),
    };

    if req.stream.unwrap_or(false) {
        let deltas = suggestions::complete_stream(&state.models, &target, &input).await?;
        let body = Body::from_stream(deltas.map(|d| d.map(Bytes::from)));
        return Ok((
            [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
            body,
        )
            .into_response());
    }

    let completion = suggestions::complete(&state.models, &target, &input).await?;
    let input_estimate = suggestions::completion::estimate_tokens(&input.prefix)
        + suggestions::completion::estimate_tokens(&input.suffix);
    let (choices, tokens) = match &completion {
        None => (vec![], Value::Null),
        Some(c) => {
            let choices = if c.text.is_empty() {
                vec![]
            } else {
                vec![json!({"text": c.text, "index": 0, "finish_reason": "length"})]
            };
            let usage = c.usage.unwrap_or_default();
            let input_tokens = if usage.input_tokens > 0 {
                usage.input_tokens
            } else {
                input_estimate
            };
            let tokens = json!({
                "input_tokens": input_tokens,
                "output_tokens": usage.output_tokens,
                "max_output_tokens_used": c.finish_reason.as_deref() == Some("length"),
                "context_tokens_sent": 0,
                "context_tokens_used": 0,
            });
            (choices, tokens)
        }
    };
    Ok(Json(json!({
        "id": "id",
        "model": {
            "engine": target.engine,
            "name": target.family.id,
            "lang": lang.unwrap_or_default(),
            "tokens_consumption_metadata": tokens,
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
