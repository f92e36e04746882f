//! `POST /v1/prompts/{prompt_id}` and `/v2/prompts/{prompt_id}`: invoke one
//! registered prompt with the caller's inputs against the request's
//! self-hosted model. Rails uses it for the chat slash commands and most
//! single-shot Duo features, and for the admin's "Test connection" button
//! (`model_configuration%2Fcheck`: the wildcard path is percent-decoded).
//!
//! Answers: v1 a JSON string (or raw text when streaming), v2
//! `{"content", "usage"}` (or NDJSON `{"content": delta}` lines). A model
//! failure is 421 so Rails can tell "your model failed" from "the gateway failed".

use std::time::Duration;

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{Path, State, rejection::BytesRejection},
    http::header,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{HttpState, error::ApiError, parse_json};
use crate::{
    auth::Caller,
    models::{
        ModelError, StreamEvent, Usage,
        service::Feature,
        target::{ModelMetadata, ModelTarget},
    },
    prompts::PromptError,
};

/// `model_metadata` as Rails sends it (client spec §0.3), with upstream's limits.
#[derive(Deserialize, Default)]
pub(super) struct WireModelMetadata {
    provider: Option<String>,
    name: Option<String>,
    endpoint: Option<String>,
    api_key: Option<String>,
    identifier: Option<String>,
    friendly_name: Option<String>,
}

impl WireModelMetadata {
    /// Checks the field limits (422) and converts to the domain type.
    pub(super) fn validate(self) -> Result<ModelMetadata, ApiError> {
        for (field, value, max) in [
            ("provider", &self.provider, 255),
            ("name", &self.name, 255),
            ("endpoint", &self.endpoint, 255),
            ("api_key", &self.api_key, 2000),
            ("identifier", &self.identifier, 1000),
            ("friendly_name", &self.friendly_name, 255),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(ApiError::Validation(format!(
                    "model_metadata.{field}: must have at most {max} characters"
                )));
            }
        }
        Ok(ModelMetadata {
            provider: self.provider,
            name: self.name,
            endpoint: self.endpoint,
            api_key: self.api_key,
            identifier: self.identifier,
        })
    }
}

#[derive(Deserialize)]
struct PromptRequest {
    inputs: Map<String, Value>,
    #[serde(default)]
    prompt_version: Option<String>,
    #[serde(default, deserialize_with = "super::lax::opt_bool")]
    stream: Option<bool>,
    #[serde(default)]
    model_metadata: Option<WireModelMetadata>,
}

/// Which answer shape the route gives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    V1,
    V2,
}

/// Waits between the attempts of a non-streamed invocation (4 attempts in
/// all, as upstream).
const RETRY_WAITS: [Duration; 3] = [
    Duration::from_secs(3),
    Duration::from_secs(9),
    Duration::from_secs(27),
];
/// The prompt behind the admin's "Test connection" button.
const CONNECTION_CHECK: &str = "model_configuration/check";

pub async fn invoke_v1(
    state: State<HttpState>,
    caller: Extension<Caller>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    invoke(state, caller, id, body, Api::V1).await
}

pub async fn invoke_v2(
    state: State<HttpState>,
    caller: Extension<Caller>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    invoke(state, caller, id, body, Api::V2).await
}

/// The request's model: self-hosted GitLab always sends `model_metadata`
/// for a feature assigned to a self-hosted model; without it there is no
/// model this gateway could call (upstream would fall back to a Cloud model).
pub(super) fn target_of(
    state: &HttpState,
    meta: Option<WireModelMetadata>,
) -> Result<ModelTarget, ApiError> {
    let meta = meta.ok_or_else(|| {
        ApiError::BadRequest(
            "model_metadata is required: this gateway serves self-hosted models only".into(),
        )
    })?;
    let meta = meta.validate()?;
    state
        .models
        .resolve(&meta)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The status of each registry error in the prompts API's error table.
pub(super) fn prompt_error(e: PromptError) -> ApiError {
    match e {
        PromptError::Unknown(_) | PromptError::NoVersion { .. } => {
            ApiError::BadRequest(e.to_string())
        }
        PromptError::InvalidConstraint(_)
        | PromptError::MissingVariables(_)
        | PromptError::Render { .. } => ApiError::Validation(e.to_string()),
    }
}

/// `{"<model>": {"input_tokens", "output_tokens"}}`.
pub(super) fn usage_json(target: &ModelTarget, usage: &Usage) -> Value {
    json!({ target.model.clone(): {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }})
}

/// True for the raw request path of the admin's "Test connection" call
/// (before routing, so percent-encoded as Rails sends it, or not).
pub(super) fn is_connection_check_path(path: &str) -> bool {
    ["/v1/prompts/", "/v2/prompts/"].iter().any(|prefix| {
        path.strip_prefix(prefix).is_some_and(|id| {
            id == CONNECTION_CHECK || id.eq_ignore_ascii_case("model_configuration%2Fcheck")
        })
    })
}

async fn invoke(
    state: State<HttpState>,
    caller: Extension<Caller>,
    Path(prompt_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    api: Api,
) -> Result<Response, ApiError> {
    let check = prompt_id == CONNECTION_CHECK;
    invoke_prompt(state, caller, prompt_id, body, api)
        .await
        .map_err(|e| {
            if check {
                ApiError::ConnectionCheck(Box::new(e))
            } else {
                e
            }
        })
}

async fn invoke_prompt(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    prompt_id: String,
    body: Result<Bytes, BytesRejection>,
    api: Api,
) -> Result<Response, ApiError> {
    let req: PromptRequest = parse_json(body)?;
    let target = target_of(&state, req.model_metadata)?;
    let def = state
        .prompts
        .get(&prompt_id, target.family, req.prompt_version.as_deref())
        .map_err(prompt_error)?;
    if !caller.can(def.unit_primitive, None) {
        return Err(ApiError::Denied(format!(
            "Unauthorized to access '{prompt_id}'"
        )));
    }
    // The ReAct agent has its own route and request shape (upstream refuses
    // its specialised prompt classes here the same way).
    if prompt_id == "chat/react" {
        return Err(ApiError::Validation(format!(
            "Prompt '{prompt_id}' is not supported"
        )));
    }
    let messages = state
        .prompts
        .render(&def, &req.inputs)
        .map_err(prompt_error)?;
    let request = state.prompts.chat_request(&def, target.family, messages);
    let feature = Feature {
        category: "prompts",
        unit_primitive: def.unit_primitive,
    };

    if req.stream.unwrap_or(false) {
        let events = state
            .models
            .chat_stream(&target, &request, feature)
            .await
            .map_err(ApiError::ModelFailed)?;
        let body = match api {
            Api::V1 => Body::from_stream(events.filter_map(|e| async move {
                match e {
                    Ok(StreamEvent::Text(t)) if !t.is_empty() => Some(Ok(Bytes::from(t))),
                    Ok(_) => None,
                    Err(e) => Some(Err(broken(e))),
                }
            })),
            Api::V2 => {
                let target = target.clone();
                Body::from_stream(events.filter_map(move |e| {
                    let line = match e {
                        Ok(StreamEvent::Text(t)) if !t.is_empty() => {
                            Some(Ok(ndjson(&json!({ "content": t }))))
                        }
                        Ok(StreamEvent::Done { usage: Some(u), .. }) => Some(Ok(ndjson(
                            &json!({"content": "", "usage": usage_json(&target, &u)}),
                        ))),
                        Ok(_) => None,
                        Err(e) => Some(Err(broken(e))),
                    };
                    async move { line }
                }))
            }
        };
        return Ok((
            [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
            body,
        )
            .into_response());
    }

    // Upstream retries non-streamed invocations on transient model failures;
    // the administrator's "Test connection" check is answered at once instead.
    let waits: &[Duration] = if prompt_id == CONNECTION_CHECK {
        &[]
    } else {
        &RETRY_WAITS
    };
    let completion = state
        .models
        .chat_retrying(&target, &request, feature, waits)
        .await
        .map_err(ApiError::ModelFailed)?;
    let text = crate::prompts::finish_answer(&def, completion.text);
    Ok(match api {
        Api::V1 => Json(Value::String(text)).into_response(),
        Api::V2 => {
            let mut body = json!({ "content": text });
            if let Some(u) = completion.usage {
                body["usage"] = usage_json(&target, &u);
            }
            Json(body).into_response()
        }
    })
}

fn ndjson(v: &Value) -> Bytes {
    let mut line = v.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A stream that broke after the answer started: the body is cut (there is
/// no in-band error channel in these shapes) and the cause logged.
fn broken(e: ModelError) -> std::io::Error {
    tracing::warn!(error = %e, "model stream failed during a prompt answer");
    std::io::Error::other(e.to_string())
}
