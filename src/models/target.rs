//! From what a request says about its model (`model_metadata`, or the flat
//! `model_name`/`model_endpoint`/`model_api_key`/`model_identifier` fields) to
//! a concrete target: which platform, which server, which model name, which key.
//!
//! Identifier rules follow LiteLLM's conventions that GitLab documents:
//! `custom_openai/<model>` (the default when there is no `/`), `openai/`,
//! `hosted_vllm/`, `ollama/` and `ollama_chat/` (through Ollama's
//! OpenAI-compatible `/v1`), `text-completion-openai/` (the `/completions`
//! API); `bedrock/<model id, inference profile or ARN>`,
//! `vertex_ai/<model>[@<version>]`, `azure/<deployment>` and
//! `anthropic/<model>`. `model_metadata.provider` `bedrock` / `vertex_ai`
//! (Rails' platform field) selects the platform when the identifier has no
//! prefix. Bedrock and Vertex AI endpoints come from the gateway's
//! configuration, never from the request (upstream drops `api_base` for
//! them too): signed requests only go where the administrator said.

use url::Url;

use super::catalog::{self, Family};
use crate::config::CloudConfig;

/// An API key that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

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

/// Which publisher's API a Vertex AI model speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VertexPublisher {
    /// Gemini: `generateContent` / `streamGenerateContent`.
    Google,
    /// Claude on Vertex: the Messages API via `rawPredict` / `streamRawPredict`.
    Anthropic,
}

/// The model platform, with what its provider needs beyond the base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platform {
    /// vLLM, Ollama's `/v1`, a LiteLLM proxy...: `{api_base}/chat/completions`.
    OpenAi(Api),
    /// Azure OpenAI: `{api_base}/openai/deployments/{model}/chat/completions?api-version=`.
    Azure { api_version: String },
    /// The Messages API: `{api_base}/v1/messages`.
    Anthropic,
    /// Bedrock Converse: `{api_base}/model/{model}/converse`, SigV4 for `region`.
    Bedrock { region: String },
    /// Vertex AI: `{api_base}/v1/projects/{project}/locations/{location}/publishers/...`.
    Vertex {
        location: String,
        publisher: VertexPublisher,
    },
}

impl Platform {
    /// A short name for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Platform::OpenAi(_) => "openai-compatible",
            Platform::Azure { .. } => "azure",
            Platform::Anthropic => "anthropic",
            Platform::Bedrock { .. } => "bedrock",
            Platform::Vertex { .. } => "vertex_ai",
        }
    }
}

/// The model fields of a request, whichever wire form they came in.
#[derive(Clone, Debug, Default)]
pub struct ModelMetadata {
    /// Reported back as `model.engine`; selects Bedrock or Vertex AI when the
    /// identifier has no platform prefix.
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
    /// Model name sent upstream (Bedrock: model id, inference profile or ARN).
    pub model: String,
    /// The request's key (OpenAI-compatible: `dummy_key` when none).
    pub api_key: ApiKey,
    /// Whether the key came from the request (not a default or the environment).
    pub key_from_request: bool,
    pub platform: Platform,
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

    /// The OpenAI-style API of an OpenAI-compatible target (chat otherwise).
    pub fn api(&self) -> Api {
        match self.platform {
            Platform::OpenAi(api) => api,
            _ => Api::Chat,
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
        "model provider '{0}' is not supported by this gateway; use an OpenAI-compatible endpoint (custom_openai/<model>), bedrock/, vertex_ai/, azure/ or anthropic/"
    )]
    UnsupportedProvider(String),
    #[error("model identifier is required for {0} models ({0}/<model>)")]
    MissingModel(&'static str),
    #[error(
        "no AWS region for Bedrock model '{0}': set AWS_REGION (or AWS_REGION_NAME, AWS_DEFAULT_REGION), or use a model ARN"
    )]
    MissingRegion(String),
}

/// Identifier prefixes this gateway serves.
const KNOWN_PREFIXES: &[&str] = &[
    "custom_openai",
    "openai",
    "hosted_vllm",
    "ollama",
    "ollama_chat",
    "litellm_proxy",
    "text-completion-openai",
    "text-completion-codestral",
    "azure",
    "anthropic",
    "bedrock",
    "vertex_ai",
];

/// What resolution needs beyond the request.
#[derive(Clone, Copy, Debug)]
pub struct ResolveSettings<'a> {
    /// The `AIGW_CUSTOM_MODELS__ENABLED` gate: without it nothing resolves.
    pub custom_models_enabled: bool,
    pub cloud: &'a CloudConfig,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse_endpoint(endpoint: &str) -> Result<Url, TargetError> {
    let mut url = Url::parse(endpoint).map_err(|e| TargetError::InvalidEndpoint(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TargetError::InvalidEndpoint(
            "expected an http:// or https:// URL".into(),
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The region named by a Bedrock ARN (`arn:aws:bedrock:<region>:...`).
fn arn_region(model: &str) -> Option<&str> {
    let mut parts = model.strip_prefix("arn:")?.split(':');
    let _partition = parts.next()?;
    let _service = parts.next()?;
    parts.next().filter(|r| !r.is_empty())
}

/// `https://bedrock-runtime.{region}.amazonaws.com` (`.com.cn` in China).
fn bedrock_base(region: &str) -> Result<Url, TargetError> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    if !region
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(TargetError::InvalidEndpoint(format!(
            "invalid AWS region {region:?}"
        )));
    }
    Url::parse(&format!("https://bedrock-runtime.{region}.{suffix}"))
        .map_err(|e| TargetError::InvalidEndpoint(e.to_string()))
}

/// Resolves `meta` into a target.
pub fn resolve(
    meta: &ModelMetadata,
    settings: ResolveSettings<'_>,
) -> Result<ModelTarget, TargetError> {
    let name = nonempty(&meta.name).ok_or(TargetError::MissingName)?;
    let family = catalog::find(&name).ok_or_else(|| TargetError::UnknownFamily(name.clone()))?;
    let engine = nonempty(&meta.provider).unwrap_or_else(|| "litellm".to_string());

    // Rails' platform field names Bedrock or Vertex AI; an identifier with
    // its own prefix wins, as in LiteLLM.
    let platform_default = match engine.as_str() {
        "bedrock" => "bedrock",
        "vertex_ai" => "vertex_ai",
        _ => "custom_openai",
    };
    let (provider, model) = match nonempty(&meta.identifier) {
        None => (platform_default.to_string(), String::new()),
        Some(id) => match id.split_once('/') {
            // A Bedrock ARN (`...:inference-profile/<id>`) or a bare model id
            // under Rails' bedrock / vertex_ai platform is the model itself.
            Some((p, _)) if platform_default != "custom_openai" && !KNOWN_PREFIXES.contains(&p) => {
                (platform_default.to_string(), id)
            }
            Some((p, m)) => (p.to_string(), m.trim().to_string()),
            None => (platform_default.to_string(), id),
        },
    };
    let request_key = nonempty(&meta.api_key);
    let cloud = settings.cloud;
    let platform = match provider.as_str() {
        "custom_openai" | "openai" | "hosted_vllm" | "ollama" | "ollama_chat" | "litellm_proxy" => {
            Platform::OpenAi(Api::Chat)
        }
        "text-completion-openai" | "text-completion-codestral" => Platform::OpenAi(Api::Text),
        "azure" => Platform::Azure {
            api_version: cloud.azure.api_version.clone(),
        },
        "anthropic" => Platform::Anthropic,
        "bedrock" => Platform::Bedrock {
            region: String::new(),
        },
        "vertex_ai" => Platform::Vertex {
            location: cloud.vertex.location.clone(),
            publisher: VertexPublisher::Google,
        },
        other => return Err(TargetError::UnsupportedProvider(other.to_string())),
    };
    if !settings.custom_models_enabled {
        return Err(TargetError::CustomModelsDisabled);
    }
    let model = match (&platform, model.is_empty()) {
        (Platform::OpenAi(_), true) => family.default_model.to_string(),
        (Platform::OpenAi(_), false) => model,
        (p, true) => return Err(TargetError::MissingModel(p.name())),
        (_, false) => model,
    };
    let (platform, api_base, api_key) = match platform {
        Platform::OpenAi(api) => {
            let endpoint = nonempty(&meta.endpoint).ok_or(TargetError::MissingEndpoint)?;
            let mut api_base = parse_endpoint(&endpoint)?;
            // Ollama's OpenAI-compatible API lives under /v1 of its native address.
            if provider.starts_with("ollama") && !api_base.path().ends_with("/v1") {
                let path = format!("{}/v1", api_base.path().trim_end_matches('/'));
                api_base.set_path(&path);
            }
            let key = request_key
                .clone()
                .unwrap_or_else(|| "dummy_key".to_string());
            (Platform::OpenAi(api), api_base, key)
        }
        Platform::Azure { api_version } => {
            let api_base = match nonempty(&meta.endpoint) {
                Some(e) => parse_endpoint(&e)?,
                None => cloud
                    .azure
                    .api_base
                    .clone()
                    .ok_or(TargetError::MissingEndpoint)?,
            };
            let key = request_key
                .clone()
                .or_else(|| cloud.azure.api_key.as_ref().map(|k| k.expose().to_string()))
                .unwrap_or_default();
            (Platform::Azure { api_version }, api_base, key)
        }
        Platform::Anthropic => {
            let api_base = match nonempty(&meta.endpoint) {
                Some(e) => parse_endpoint(&e)?,
                None => parse_endpoint("https://api.anthropic.com")?,
            };
            let key = request_key
                .clone()
                .or_else(|| {
                    cloud
                        .anthropic
                        .api_key
                        .as_ref()
                        .map(|k| k.expose().to_string())
                })
                .unwrap_or_default();
            (Platform::Anthropic, api_base, key)
        }
        Platform::Bedrock { .. } => {
            let region = cloud
                .bedrock
                .region
                .as_ref()
                .map(|r| r.value.clone())
                .or_else(|| arn_region(&model).map(str::to_string))
                .ok_or_else(|| TargetError::MissingRegion(model.clone()))?;
            let api_base = match &cloud.bedrock.endpoint {
                Some(e) => parse_endpoint(e.value.as_str())?,
                None => bedrock_base(&region)?,
            };
            (
                Platform::Bedrock { region },
                api_base,
                request_key.clone().unwrap_or_default(),
            )
        }
        Platform::Vertex { location, .. } => {
            let publisher = if model.starts_with("claude") {
                VertexPublisher::Anthropic
            } else {
                VertexPublisher::Google
            };
            let api_base = match &cloud.vertex.endpoint {
                Some(e) => parse_endpoint(e.as_str())?,
                None if location == "global" => {
                    parse_endpoint("https://aiplatform.googleapis.com")?
                }
                None => parse_endpoint(&format!("https://{location}-aiplatform.googleapis.com"))?,
            };
            (
                Platform::Vertex {
                    location,
                    publisher,
                },
                api_base,
                String::new(),
            )
        }
    };
    Ok(ModelTarget {
        family,
        engine,
        api_base,
        model,
        api_key: ApiKey(api_key),
        key_from_request: request_key.is_some(),
        platform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CliOverrides, Config, Env};

    fn cloud(pairs: &[(&str, &str)]) -> CloudConfig {
        Config::load(
            &Env::from_pairs(pairs.iter().copied()),
            &CliOverrides::default(),
        )
        .unwrap()
        .models
        .cloud
    }

    fn resolve_with(
        m: &ModelMetadata,
        enabled: bool,
        cloud: &CloudConfig,
    ) -> Result<ModelTarget, TargetError> {
        resolve(
            m,
            ResolveSettings {
                custom_models_enabled: enabled,
                cloud,
            },
        )
    }

    fn res(m: &ModelMetadata, enabled: bool) -> Result<ModelTarget, TargetError> {
        resolve_with(m, enabled, &cloud(&[]))
    }

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
        let t = res(
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
        assert_eq!(t.api(), Api::Chat);
        assert_eq!(t.api_key.expose(), "dummy_key");
        let t = res(&meta("mistral", "http://x:1/v1", "Mistral-7B"), true).unwrap();
        assert_eq!(t.model, "Mistral-7B");
        let t = res(&meta("mistral", "http://x:1/v1", ""), true).unwrap();
        assert_eq!(t.model, "mistral");
        let t = res(
            &meta("llama3", "http://ollama:11434", "ollama/llama3:8b"),
            true,
        )
        .unwrap();
        assert_eq!(t.api_base.as_str(), "http://ollama:11434/v1");
        assert_eq!(t.model, "llama3:8b");
        let t = res(
            &meta("codestral", "http://x/v1", "text-completion-openai/c"),
            true,
        )
        .unwrap();
        assert_eq!(t.api(), Api::Text);
    }

    #[test]
    fn cloud_platforms_resolve_without_a_request_endpoint() {
        let c = cloud(&[
            ("AWS_REGION", "eu-west-1"),
            ("VERTEXAI_LOCATION", "us-east5"),
        ]);
        let mut m = meta(
            "claude_3",
            "http://ignored",
            "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        );
        m.provider = Some("bedrock".into());
        let t = resolve_with(&m, true, &c).unwrap();
        assert_eq!(
            t.api_base.as_str(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            t.platform,
            Platform::Bedrock {
                region: "eu-west-1".into()
            }
        );
        assert_eq!(t.model, "anthropic.claude-3-5-sonnet-20240620-v1:0");
        // An ARN under Rails' bedrock platform, no prefix: the region is the ARN's.
        m.identifier = Some("arn:aws:bedrock:us-gov-west-1:1:inference-profile/us-gov.x".into());
        let t = resolve_with(&m, true, &cloud(&[])).unwrap();
        assert_eq!(
            t.model,
            "arn:aws:bedrock:us-gov-west-1:1:inference-profile/us-gov.x"
        );
        assert_eq!(
            t.platform,
            Platform::Bedrock {
                region: "us-gov-west-1".into()
            }
        );
        m.identifier = Some("bedrock/anthropic.x".into());
        assert_eq!(
            resolve_with(&m, true, &cloud(&[])).unwrap_err(),
            TargetError::MissingRegion("anthropic.x".into())
        );
        let mut m = meta("claude_3", "", "vertex_ai/claude-sonnet-4@20250514");
        m.provider = Some("vertex_ai".into());
        let t = resolve_with(&m, true, &c).unwrap();
        assert_eq!(
            t.api_base.as_str(),
            "https://us-east5-aiplatform.googleapis.com/"
        );
        assert!(matches!(
            t.platform,
            Platform::Vertex {
                publisher: VertexPublisher::Anthropic,
                ..
            }
        ));
        m.identifier = Some("gemini-2.5-flash".into());
        let t = resolve_with(&m, true, &cloud(&[])).unwrap();
        assert_eq!(t.api_base.as_str(), "https://aiplatform.googleapis.com/");
        assert!(matches!(
            t.platform,
            Platform::Vertex {
                publisher: VertexPublisher::Google,
                ..
            }
        ));
        let t = res(
            &meta("gpt", "https://r.openai.azure.com/", "azure/gpt4o"),
            true,
        )
        .unwrap();
        assert_eq!(
            t.platform,
            Platform::Azure {
                api_version: "2024-10-21".into()
            }
        );
        assert_eq!(t.model, "gpt4o");
        let t = res(
            &meta("claude_3", "http://claude:1", "anthropic/claude-x"),
            true,
        )
        .unwrap();
        assert_eq!(t.platform, Platform::Anthropic);
        assert_eq!(
            res(&meta("claude_3", "http://x", "bedrock/"), true).unwrap_err(),
            TargetError::MissingModel("bedrock")
        );
    }

    #[test]
    fn refusals_are_named() {
        assert_eq!(
            res(&meta("mistral", "http://x", "sagemaker/m"), true).unwrap_err(),
            TargetError::UnsupportedProvider("sagemaker".into())
        );
        assert_eq!(
            res(&meta("mistral", "http://x", "m"), false).unwrap_err(),
            TargetError::CustomModelsDisabled
        );
        assert_eq!(
            res(&meta("nope", "http://x", "m"), true).unwrap_err(),
            TargetError::UnknownFamily("nope".into())
        );
        assert!(matches!(
            res(&meta("mistral", "ftp://x", "m"), true).unwrap_err(),
            TargetError::InvalidEndpoint(_)
        ));
        assert_eq!(
            format!("{:?}", ApiKey("sk-secret".into())),
            "ApiKey(**********)"
        );
    }
}
