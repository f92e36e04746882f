//! `POST /v3/code/completions` and `POST /v4/code/suggestions`: the language
//! server's component-based Code Suggestions API. The first prompt component
//! decides between a completion and a generation; the self-hosted model comes
//! from the top-level `model_metadata`. v3 streams raw text; v4 streams
//! Server-Sent Events framed byte for byte as upstream's `sse-starlette` does
//! (CRLF lines, Python `json.dumps` spacing), because IDE clients parse it.
//!
//! A model failure before the first event is an error status; after the
//! stream started it cuts the body (no further event, no `stream_end`), as
//! upstream does, so a client can never mistake a broken answer for a whole one.

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::{Stream, StreamExt, future, stream};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    HttpState,
    completions::feature_flags,
    error::ApiError,
    generations::{MAX_PROMPT_CHARS, chars, raw_text_stream, too_long, unix_now},
    parse_json,
};
use crate::{
    auth::Caller,
    models::{Family, ModelError, target::ModelMetadata},
    pyjson::{self, Py},
    suggestions::{
        self, CompletionInput,
        generation::{self, GenerationInput},
        language,
    },
};

const MAX_CODE_CHARS: usize = 100_000;
/// The language server sends `code_context` that older gateways mishandled;
/// upstream uses it from this version on.
const CODE_CONTEXT_SINCE: (u64, u64, u64) = (7, 17, 1);
/// `prompt_version` values upstream's generation path knows (any other is its 500).
const KNOWN_PROMPT_VERSIONS: &[&str] = &[
    "^1.0.0",
    "1.0.0",
    "1.1.0-dev",
    "1.2.0-dev",
    "1.2.0",
    "2.0.0",
    "2.0.1",
    "2.0.2-dev",
    "3.0.2-dev",
];
const UNAUTHORIZED: &str = "Unauthorized to access code suggestions";

#[derive(Deserialize)]
struct SuggestionsRequest {
    prompt_components: Vec<Component>,
    #[serde(default)]
    model_metadata: Option<WireModelMetadata>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(flatten)]
    body: ComponentBody,
    #[serde(default)]
    metadata: Option<ComponentMetadata>,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum ComponentBody {
    #[serde(rename = "code_editor_completion")]
    Completion(EditorPayload),
    #[serde(rename = "code_editor_generation")]
    Generation(EditorPayload),
    #[serde(rename = "code_context")]
    Context(ContextPayload),
}

#[derive(Deserialize)]
struct ComponentMetadata {
    source: String,
    version: String,
}

/// Both editor payloads; the generation-only fields are `None` for completions.
#[derive(Deserialize)]
struct EditorPayload {
    file_name: String,
    content_above_cursor: String,
    content_below_cursor: String,
    language_identifier: Option<String>,
    model_provider: Option<String>,
    #[serde(default, deserialize_with = "super::lax::opt_bool")]
    stream: Option<bool>,
    /// A string for generations; a string or messages (ignored) for completions.
    prompt: Option<Value>,
    prompt_id: Option<String>,
    prompt_enhancer: Option<Map<String, Value>>,
    prompt_version: Option<String>,
}

#[derive(Deserialize)]
struct ContextPayload {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    content: String,
}

/// `model_metadata` as GitLab sends it (client spec §0.3).
#[derive(Deserialize)]
struct WireModelMetadata {
    provider: Option<String>,
    name: Option<String>,
    endpoint: Option<String>,
    api_key: Option<String>,
    identifier: Option<String>,
    friendly_name: Option<String>,
}

impl WireModelMetadata {
    fn validate(&self) -> Result<ModelMetadata, ApiError> {
        for (field, value, max) in [
            ("model_metadata.provider", &self.provider, 255),
            ("model_metadata.name", &self.name, 255),
            ("model_metadata.endpoint", &self.endpoint, 255),
            ("model_metadata.api_key", &self.api_key, 2000),
            ("model_metadata.identifier", &self.identifier, 1000),
            ("model_metadata.friendly_name", &self.friendly_name, 255),
        ] {
            if value.as_deref().is_some_and(|v| chars(v) > max) {
                return Err(too_long(field, max));
            }
        }
        Ok(ModelMetadata {
            provider: self.provider.clone(),
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            api_key: self.api_key.clone(),
            identifier: self.identifier.clone(),
        })
    }
}

impl EditorPayload {
    fn validate(&self, at: usize, generation: bool) -> Result<(), ApiError> {
        let field = |name: &str| format!("prompt_components[{at}].payload.{name}");
        if chars(self.file_name.trim()) > 255 {
            return Err(too_long(&field("file_name"), 255));
        }
        if self
            .language_identifier
            .as_deref()
            .is_some_and(|l| chars(l) > 255)
        {
            return Err(too_long(&field("language_identifier"), 255));
        }
        for (name, text) in [
            ("content_above_cursor", &self.content_above_cursor),
            ("content_below_cursor", &self.content_below_cursor),
        ] {
            if chars(text) > MAX_CODE_CHARS {
                return Err(too_long(&field(name), MAX_CODE_CHARS));
            }
        }
        if let Some(p) = self.model_provider.as_deref()
            && !matches!(p, "vertex-ai" | "anthropic" | "amazon_q")
        {
            return Err(ApiError::Validation(format!(
                "{}: must be one of vertex-ai, anthropic, amazon_q (self-hosted models are named by model_metadata)",
                field("model_provider")
            )));
        }
        if generation {
            match &self.prompt {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if chars(s) > MAX_PROMPT_CHARS => {
                    return Err(too_long(&field("prompt"), MAX_PROMPT_CHARS));
                }
                Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(ApiError::Validation(format!(
                        "{}: must be a string",
                        field("prompt")
                    )));
                }
            }
            if let Some(id) = self.prompt_id.as_deref()
                && id != generation::PROMPT_ID
            {
                return Err(ApiError::Validation(format!(
                    "{}: '{id}' is not served by this gateway (only {})",
                    field("prompt_id"),
                    generation::PROMPT_ID
                )));
            }
            if let Some(v) = self.prompt_version.as_deref()
                && !KNOWN_PROMPT_VERSIONS.contains(&v)
            {
                return Err(ApiError::Validation(format!(
                    "{}: unknown version '{v}'",
                    field("prompt_version")
                )));
            }
        }
        Ok(())
    }
}

impl SuggestionsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        let n = self.prompt_components.len();
        if !(1..=100).contains(&n) {
            return Err(ApiError::Validation(
                "prompt_components: must have 1 to 100 items".into(),
            ));
        }
        for (i, c) in self.prompt_components.iter().enumerate() {
            if let Some(m) = &c.metadata {
                for (name, v) in [("source", &m.source), ("version", &m.version)] {
                    if chars(v) > 255 {
                        return Err(too_long(
                            &format!("prompt_components[{i}].metadata.{name}"),
                            255,
                        ));
                    }
                }
            }
            match &c.body {
                ComponentBody::Completion(p) => p.validate(i, false)?,
                ComponentBody::Generation(p) => p.validate(i, true)?,
                ComponentBody::Context(p) => {
                    for (name, v, max) in [
                        ("type", &p.kind, 1024),
                        ("name", &p.name, 1024),
                        ("content", &p.content, MAX_CODE_CHARS),
                    ] {
                        if chars(v) > max {
                            return Err(too_long(
                                &format!("prompt_components[{i}].payload.{name}"),
                                max,
                            ));
                        }
                    }
                }
            }
        }
        if let Some(m) = &self.model_metadata {
            m.validate()?;
        }
        Ok(())
    }

    /// The self-hosted model: GitLab's default cloud models are not reachable here.
    fn model(&self) -> Result<ModelMetadata, ApiError> {
        match &self.model_metadata {
            Some(m) => m.validate(),
            None => Err(ApiError::Validation(
                "model_metadata: required; this gateway serves self-hosted models only".into(),
            )),
        }
    }

    /// `code_context` contents, for language servers recent enough to send them right.
    fn code_context(&self, headers: &HeaderMap) -> Vec<String> {
        let recent = headers
            .get("x-gitlab-language-server-version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version)
            .is_some_and(|v| v >= CODE_CONTEXT_SINCE);
        if !recent {
            return Vec::new();
        }
        self.prompt_components
            .iter()
            .filter_map(|c| match &c.body {
                ComponentBody::Context(p) => Some(p.content.clone()),
                _ => None,
            })
            .collect()
    }
}

/// `major.minor.patch` (a pre-release suffix is ignored); `None` when unparsable.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').splitn(3, '.');
    let mut next = || -> Option<u64> {
        let p = parts.next()?;
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((next()?, next()?, next().unwrap_or(0)))
}

/// The completion prompt's display name (`model.name` in v4's `stream_start`).
fn completion_prompt_name(family: &Family) -> String {
    match family.id {
        "codestral" | "mistral" | "mixtral" | "codegemma" | "codellama" | "deepseekcoder"
        | "llama3" | "gpt" => format!("{} Code Completions", family.name),
        _ => "Code Completions".to_string(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Version {
    V3,
    V4,
}

pub async fn v3_code_completions(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, caller, headers, body, Version::V3).await
}

pub async fn v4_code_suggestions(
    State(state): State<HttpState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, caller, headers, body, Version::V4).await
}

/// What the envelope reports about the model.
struct Reported {
    /// Non-streamed answers: `engine`/`name` as the response's `model`.
    engine: String,
    name: String,
    /// v4 `stream_start`: the engine object (`agent` and the prompt's name).
    stream_name: String,
    lang: Option<String>,
}

async fn handle(
    state: HttpState,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    version: Version,
) -> Result<Response, ApiError> {
    let req: SuggestionsRequest = parse_json(body)?;
    req.validate()?;
    let flags = feature_flags(&headers);
    let timeout = state.models.suggestions_timeout();
    match &req.prompt_components[0].body {
        ComponentBody::Completion(p) => {
            if !caller.can("complete_code", Some(state.tokens.service_name())) {
                return Err(ApiError::Forbidden(UNAUTHORIZED));
            }
            let meta = req.model()?;
            let target = state.models.resolve(&meta)?;
            let file_name = p.file_name.trim();
            let lang = language::detect(file_name, p.language_identifier.as_deref());
            let input = CompletionInput {
                file_name: file_name.to_string(),
                language: lang.clone(),
                prefix: p.content_above_cursor.clone(),
                suffix: p.content_below_cursor.clone(),
                context: req.code_context(&headers),
            };
            let reported = Reported {
                engine: target.engine.clone(),
                name: meta.name.clone().unwrap_or_default(),
                stream_name: completion_prompt_name(target.family),
                lang,
            };
            if p.stream.unwrap_or(false) {
                let deltas = suggestions::complete_stream(&state.models, &target, &input).await?;
                return Ok(streamed(version, deltas, &reported, &flags));
            }
            let text = suggestions::complete(&state.models, &target, &input)
                .await?
                .map(|c| c.text)
                .unwrap_or_default();
            Ok(answer(&text, &reported, &flags))
        }
        ComponentBody::Generation(p) => {
            // Upstream has no pre-check here (a missing scope is its 500); a
            // clear 403 is kinder. Gateway-issued tokens are not refused: the
            // IDE's direct connection uses this route.
            if !caller.can("generate_code", None) {
                return Err(ApiError::Forbidden(UNAUTHORIZED));
            }
            let meta = req.model()?;
            let target = state.models.resolve(&meta)?;
            let file_name = p.file_name.trim();
            let lang = language::detect(file_name, p.language_identifier.as_deref());
            let input = GenerationInput {
                file_name: file_name.to_string(),
                language: p
                    .language_identifier
                    .clone()
                    .filter(|l| !l.trim().is_empty())
                    .or_else(|| lang.clone()),
                prefix: p.content_above_cursor.clone(),
                enhancer: p.prompt_enhancer.clone().unwrap_or_default(),
            };
            let request = generation::build(target.family, &input, timeout);
            let name = generation::prompt_name(target.family);
            let reported = Reported {
                engine: "agent".into(),
                name: name.clone(),
                stream_name: name,
                lang,
            };
            if p.stream.unwrap_or(false) {
                let lines = generation::generate_stream(&state.models, &target, &request).await?;
                return Ok(streamed(version, lines, &reported, &flags));
            }
            let c = generation::generate(&state.models, &target, &request, &p.content_above_cursor)
                .await?;
            Ok(answer(&c.text, &reported, &flags))
        }
        ComponentBody::Context(_) => Err(ApiError::Validation(
            "prompt_components[0].type: must be code_editor_completion or code_editor_generation"
                .into(),
        )),
    }
}

/// The non-streamed answer (v3 and v4 alike).
fn answer(text: &str, r: &Reported, flags: &[String]) -> Response {
    let choices = if text.is_empty() {
        vec![]
    } else {
        vec![json!({"text": text, "index": 0, "finish_reason": "length"})]
    };
    let model = json!({"engine": r.engine, "name": r.name, "lang": r.lang});
    Json(json!({
        "choices": choices,
        "metadata": {
            "model": model,
            "timestamp": unix_now(),
            "enabled_feature_flags": flags,
            "region": null,
        },
        "model": model,
    }))
    .into_response()
}

fn streamed(
    version: Version,
    deltas: impl Stream<Item = Result<String, ModelError>> + Send + 'static,
    r: &Reported,
    flags: &[String],
) -> Response {
    match version {
        Version::V3 => raw_text_stream(deltas),
        Version::V4 => sse(deltas, &r.stream_name, flags),
    }
}

/// v4's event stream: `stream_start`, one `content_chunk` per chunk, `stream_end`.
fn sse(
    deltas: impl Stream<Item = Result<String, ModelError>> + Send + 'static,
    prompt_name: &str,
    flags: &[String],
) -> Response {
    let start = event("stream_start", &stream_start_data(prompt_name, flags));
    let chunks = deltas.map(|d| d.map(|text| event("content_chunk", &content_chunk_data(&text))));
    let events = stream::once(future::ready(Ok(start)))
        .chain(chunks)
        .chain(stream::once(future::ready(Ok(event("stream_end", "null")))))
        // Nothing follows a failure: the body is cut there.
        .scan(false, |failed, item: Result<String, ModelError>| {
            if *failed {
                return future::ready(None);
            }
            if let Err(e) = &item {
                tracing::warn!(error = %e, "model stream failed after the response started");
                *failed = true;
            }
            future::ready(Some(item.map(Bytes::from)))
        });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
            (header::HeaderName::from_static("x-streaming-format"), "sse"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// One SSE message as sse-starlette frames it.
fn event(name: &str, data: &str) -> String {
    format!("event: {name}\r\ndata: {data}\r\n\r\n")
}

fn stream_start_data(prompt_name: &str, flags: &[String]) -> String {
    pyjson::to_string(&Py::obj([(
        "metadata",
        Py::obj([
            (
                "model",
                Py::obj([("engine", Py::str("agent")), ("name", Py::str(prompt_name))]),
            ),
            ("timestamp", Py::Int(unix_now())),
            (
                "enabled_feature_flags",
                Py::List(flags.iter().map(|f| Py::str(f.as_str())).collect()),
            ),
            ("region", Py::str("us-central1")),
        ]),
    )]))
}

fn content_chunk_data(text: &str) -> String {
    pyjson::to_string(&Py::obj([(
        "choices",
        Py::List(vec![Py::obj([
            ("delta", Py::obj([("content", Py::str(text))])),
            ("index", Py::Int(0)),
        ])]),
    )]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_strings() {
        assert_eq!(
            content_chunk_data("x = 1\n"),
            r#"{"choices": [{"delta": {"content": "x = 1\n"}, "index": 0}]}"#
        );
        assert_eq!(
            event("stream_end", "null"),
            "event: stream_end\r\ndata: null\r\n\r\n"
        );
    }

    #[test]
    fn language_server_versions() {
        assert_eq!(parse_version("7.17.1"), Some((7, 17, 1)));
        assert_eq!(parse_version("v8.0.0-beta.1"), Some((8, 0, 0)));
        assert_eq!(parse_version("7.17"), Some((7, 17, 0)));
        assert_eq!(parse_version("junk"), None);
        assert!(parse_version("7.9.99").unwrap() < CODE_CONTEXT_SINCE);
    }

    #[test]
    fn components_parse_by_type() {
        let req: SuggestionsRequest = serde_json::from_value(json!({
            "prompt_components": [
                {"type": "code_editor_completion", "payload": {
                    "file_name": "a.py", "content_above_cursor": "x", "content_below_cursor": ""},
                 "metadata": {"source": "ls", "version": "1"}},
                {"type": "code_context", "payload": {"type": "file", "name": "b.py", "content": "y"}}
            ]
        }))
        .unwrap();
        assert!(matches!(
            req.prompt_components[0].body,
            ComponentBody::Completion(_)
        ));
        assert!(matches!(
            req.prompt_components[1].body,
            ComponentBody::Context(_)
        ));
        assert!(
            serde_json::from_value::<SuggestionsRequest>(json!({
                "prompt_components": [{"type": "nope", "payload": {}}]
            }))
            .is_err()
        );
    }
}
