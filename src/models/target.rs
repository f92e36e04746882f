//! From what a request says about its model (`model_metadata`, or the flat
//! `model_name`/`model_endpoint`/`model_api_key`/`model_identifier` fields) to
//! a concrete target: which server, which model name, which key, which API.
//!
//! Identifier rules follow LiteLLM's conventions that GitLab documents:
//! `custom_openai/<model>` (the default when there is no `/`), `openai/`,
//! `hosted_vllm/`, `ollama/` and `ollama_chat/` (through Ollama's
//! OpenAI-compatible `/v1`), and `text-completion-openai/` (the `/completions`
//! API). Cloud providers (Bedrock, Vertex, Azure, Anthropic...) are refused by
//! name: this gateway talks to self-hosted OpenAI-compatible servers.

use url::Url;

use super::catalog::{self, Family};

/// An API key that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(**********)")
    }
}

/// Which OpenAI-style API the target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Chat,
    Text,
}

/// The model fields of a request, whichever wire form they came in.
#[derive(Clone, Debug, Default)]
pub struct ModelMetadata {
    /// Reported back as `model.engine`; not used for routing (as upstream).
    pub provider: Option<String>,
    pub name: Option<String>,
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub identifier: Option<String>,
}

/// A resolved model endpoint.
#[derive(Clone, Debug)]
pub struct ModelTarget {
    pub family: &'static Family,
    /// `model_metadata.provider` as sent (e.g. `litellm`, `openai`, `api`).
    pub engine: String,
    /// Base URL without trailing slash, e.g. `http://vllm:8000/v1`.
    pub api_base: Url,
    /// Model name sent upstream.
    pub model: String,
    pub api_key: ApiKey,
    pub api: Api,
}

impl ModelTarget {
    /// `host[:port]` of the endpoint, for metric labels and logs.
    pub fn endpoint_host(&self) -> String {
        match (self.api_base.host_str(), self.api_base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "unknown".to_string(),
        }
    }
}

/// Why a request's model cannot be used. `Display` is client-facing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("model name is required for self-hosted models")]
    MissingName,
    #[error("unknown model family '{0}'")]
    UnknownFamily(String),
    #[error("model endpoint is required for self-hosted models")]
    MissingEndpoint,
    #[error("invalid model endpoint: {0}")]
    InvalidEndpoint(String),
    #[error("specifying custom models endpoint is disabled (set AIGW_CUSTOM_MODELS__ENABLED=true)")]
    CustomModelsDisabled,
    #[error(
        "model provider '{0}' is not supported by this gateway; use an OpenAI-compatible endpoint (custom_openai/<model>)"
    )]
    UnsupportedProvider(String),
}

/// Resolves `meta` into a target. `custom_models_enabled` is the
/// `AIGW_CUSTOM_MODELS__ENABLED` gate: every self-hosted target names its own
/// endpoint, so without it nothing resolves.
pub fn resolve(
    meta: &ModelMetadata,
    custom_models_enabled: bool,
) -> Result<ModelTarget, TargetError> {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let name = nonempty(&meta.name).ok_or(TargetError::MissingName)?;
    let family = catalog::find(&name).ok_or_else(|| TargetError::UnknownFamily(name.clone()))?;

    let (provider, model) = match nonempty(&meta.identifier) {
        None => (
            "custom_openai".to_string(),
            family.default_model.to_string(),
        ),
        Some(id) => match id.split_once('/') {
            Some((p, m)) => (p.to_string(), m.to_string()),
            None => ("custom_openai".to_string(), id),
        },
    };
    let api = match provider.as_str() {
        "custom_openai" | "openai" | "hosted_vllm" | "ollama" | "ollama_chat" | "litellm_proxy" => {
            Api::Chat
        }
        "text-completion-openai" | "text-completion-codestral" => Api::Text,
        other => return Err(TargetError::UnsupportedProvider(other.to_string())),
    };
    if !custom_models_enabled {
        return Err(TargetError::CustomModelsDisabled);
    }
    let endpoint = nonempty(&meta.endpoint).ok_or(TargetError::MissingEndpoint)?;
    let mut api_base =
        Url::parse(&endpoint).map_err(|e| TargetError::InvalidEndpoint(e.to_string()))?;
    if !matches!(api_base.scheme(), "http" | "https") || api_base.host().is_none() {
        return Err(TargetError::InvalidEndpoint(
            "expected an http:// or https:// URL".into(),
        ));
    }
    let mut path = api_base.path().trim_end_matches('/').to_string();
    // Ollama's OpenAI-compatible API lives under /v1 of its native address.
    if provider.starts_with("ollama") && !path.ends_with("/v1") {
        path.push_str("/v1");
    }
    api_base.set_path(&path);
    api_base.set_query(None);
    api_base.set_fragment(None);
    let api_key = ApiKey(nonempty(&meta.api_key).unwrap_or_else(|| "dummy_key".to_string()));
    Ok(ModelTarget {
        family,
        engine: nonempty(&meta.provider).unwrap_or_else(|| "litellm".to_string()),
        api_base,
        model,
        api_key,
        api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, endpoint: &str, identifier: &str) -> ModelMetadata {
        ModelMetadata {
            provider: Some("openai".into()),
            name: Some(name.into()),
            endpoint: Some(endpoint.into()),
            api_key: None,
            identifier: Some(identifier.into()),
        }
    }

    #[test]
    fn identifiers_follow_litellm_conventions() {
        let t = resolve(
            &meta(
                "codestral",
                "http://vllm:8000/v1/",
                "custom_openai/Codestral-22B",
            ),
            true,
        )
        .unwrap();
        assert_eq!(t.api_base.as_str(), "http://vllm:8000/v1");
        assert_eq!(t.model, "Codestral-22B");
        assert_eq!(t.api, Api::Chat);
        assert_eq!(t.api_key.expose(), "dummy_key");
        let t = resolve(&meta("mistral", "http://x:1/v1", "Mistral-7B"), true).unwrap();
        assert_eq!(t.model, "Mistral-7B");
        let t = resolve(&meta("mistral", "http://x:1/v1", ""), true).unwrap();
        assert_eq!(t.model, "mistral");
        let t = resolve(
            &meta("llama3", "http://ollama:11434", "ollama/llama3:8b"),
            true,
        )
        .unwrap();
        assert_eq!(t.api_base.as_str(), "http://ollama:11434/v1");
        assert_eq!(t.model, "llama3:8b");
        let t = resolve(
            &meta("codestral", "http://x/v1", "text-completion-openai/c"),
            true,
        )
        .unwrap();
        assert_eq!(t.api, Api::Text);
    }

    #[test]
    fn refusals_are_named() {
        assert_eq!(
            resolve(&meta("mistral", "http://x", "bedrock/m"), true).unwrap_err(),
            TargetError::UnsupportedProvider("bedrock".into())
        );
        assert_eq!(
            resolve(&meta("mistral", "http://x", "m"), false).unwrap_err(),
            TargetError::CustomModelsDisabled
        );
        assert_eq!(
            resolve(&meta("nope", "http://x", "m"), true).unwrap_err(),
            TargetError::UnknownFamily("nope".into())
        );
        assert!(matches!(
            resolve(&meta("mistral", "ftp://x", "m"), true).unwrap_err(),
            TargetError::InvalidEndpoint(_)
        ));
        assert_eq!(
            format!("{:?}", ApiKey("sk-secret".into())),
            "ApiKey(**********)"
        );
    }
}
