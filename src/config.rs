//! Turns the process environment (plus CLI overrides) into typed settings, once.
//!
//! Every `AIGW_*`, `DUO_WORKFLOW_*`, `PROMETHEUS_METRICS__*` and CA-bundle
//! variable the gateway understands is read here and nowhere else. Variable
//! names are the upstream gateway's, so an install document's `docker run -e`
//! lines translate 1:1 into `/etc/aigw/aigw.env`. An empty value counts as
//! unset, except for the customer-portal URLs, where "set but empty" is the
//! documented way to say "offline license: no second issuer".
//!
//! This module does no I/O besides reading the environment snapshot it is
//! given: files named here are opened by their owners (`keys`, `trust`, `tls`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde_json::{Value, json};
use url::Url;

/// Audience and issuer of tokens on the HTTP side.
pub const GATEWAY_SERVICE_NAME: &str = "gitlab-ai-gateway";
/// Audience and issuer of tokens on the gRPC side.
pub const WORKFLOW_SERVICE_NAME: &str = "gitlab-duo-workflow-service";
const DEFAULT_GITLAB_URL: &str = "https://gitlab.com";
const DEFAULT_CUSTOMER_PORTAL_URL: &str = "https://customers.gitlab.com";

/// A snapshot of the environment: read once, passed down explicitly.
#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// Snapshot of the real process environment (non-UTF-8 entries are skipped).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// Builds an environment from pairs (tests, `check-config`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Raw value, empty strings included.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Value with "empty means unset" semantics; surrounding whitespace trimmed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).map(str::trim).filter(|v| !v.is_empty())
    }

    fn first(&self, keys: &[&'static str]) -> Option<(&'static str, &str)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }
}

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason} (got {value:?})")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
    #[error("{var} is required when {because}")]
    Missing { var: String, because: String },
}

fn invalid(var: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Overrides from the command line; `None` leaves the environment in charge.
#[derive(Clone, Debug, Default)]
pub struct CliOverrides {
    pub api_host: Option<IpAddr>,
    pub api_port: Option<u16>,
    pub grpc_host: Option<IpAddr>,
    pub grpc_port: Option<u16>,
    pub metrics_host: Option<IpAddr>,
    pub metrics_port: Option<u16>,
    pub workflow_metrics_addr: Option<IpAddr>,
    pub workflow_metrics_port: Option<u16>,
    pub log_level: Option<String>,
    pub shutdown_grace_period: Option<f64>,
    /// `make run`: generate a throwaway signing key when none is configured.
    pub dev_ephemeral_keys: bool,
}

/// Where a secret comes from. The secret itself is never stored here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// PEM text in an environment variable.
    Inline { var: &'static str, text: String },
    /// A file named by a `*_FILE` variable.
    File { var: &'static str, path: PathBuf },
    /// A systemd credential (`LoadCredential=`) in `$CREDENTIALS_DIRECTORY`.
    Credential { name: &'static str, path: PathBuf },
    /// Generated in memory at startup (`aigw serve --dev` only).
    Ephemeral,
}

impl SecretSource {
    /// A description safe for logs: names the origin, never the content.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline { var, .. } => format!("env {var}"),
            SecretSource::File { var, path } => format!("file {} (from {var})", path.display()),
            SecretSource::Credential { name, path } => {
                format!("systemd credential {name} ({})", path.display())
            }
            SecretSource::Ephemeral => "ephemeral (generated at startup, dev only)".to_string(),
        }
    }
}

/// PEM cert chain + key for a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Authentication settings for one of the two services.
#[derive(Clone, Debug)]
pub struct ServiceAuth {
    /// Audience required in incoming tokens; issuer and audience of minted ones.
    pub service_name: String,
    /// The GitLab instance (OIDC issuer #1); `None` when configured empty.
    pub gitlab_url: Option<Url>,
    /// Further GitLab instances served by this gateway, each an OIDC issuer of
    /// its own (`AIGW_ADDITIONAL_GITLAB_URLS`, ours); never a duplicate of
    /// `gitlab_url` or of each other.
    pub additional_gitlab_urls: Vec<Url>,
    /// CustomersDot (OIDC issuer #2); `None` means offline license.
    pub customer_portal_url: Option<Url>,
    /// Troubleshooting: accept every request as a debug user.
    pub bypass: bool,
    /// Troubleshooting: bypass only for requests carrying `Bypass-Auth: true`.
    pub bypass_with_header: bool,
    /// Development: check claims but not signatures.
    pub bypass_signature: bool,
    pub signing_key: Option<SecretSource>,
    pub validation_key: Option<SecretSource>,
}

impl ServiceAuth {
    /// Every GitLab instance this service trusts, the primary first.
    pub fn gitlab_urls(&self) -> impl Iterator<Item = &Url> {
        self.gitlab_url.iter().chain(&self.additional_gitlab_urls)
    }
}

/// Which CA bundle was selected for outbound TLS, before reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSelection {
    /// A file or directory named by one variable (explicit, requests-style).
    Bundle { var: &'static str, path: PathBuf },
    /// OpenSSL-style `SSL_CERT_FILE` and/or `:`-separated `SSL_CERT_DIR`.
    OpenSsl {
        file: Option<PathBuf>,
        dirs: Vec<PathBuf>,
    },
    /// The operating system's bundle, else the compiled-in roots.
    System,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub docs_url: Option<String>,
    pub openapi_url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub reflection: bool,
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// AI Gateway metrics (`AIGW_FASTAPI__METRICS_*`), always on.
    pub gateway: SocketAddr,
    /// Duo Workflow metrics (`PROMETHEUS_METRICS__*`), on when either is set.
    pub workflow: Option<SocketAddr>,
}

/// Self-hosted model settings (`AIGW_CUSTOM_MODELS__*`, `AIGW_DUO_CHAT__*`, `AIGW_MTLS__*`).
#[derive(Clone, Debug)]
pub struct ModelsConfig {
    /// Requests may name their own model endpoint and key (required for self-hosted).
    pub custom_models_enabled: bool,
    /// Call models without streaming even when the client streams.
    pub disable_streaming: bool,
    /// Extra HTTP headers sent to every model endpoint.
    pub extra_headers: BTreeMap<String, String>,
    /// Default bound on a model call's wait (headers, and between streamed chunks).
    pub request_timeout: Duration,
    /// Bound on a code suggestion's model call (`AIGW_CODE_SUGGESTIONS__MODEL_REQUEST_TIMEOUT`, ours; 60 s as upstream's prompts).
    pub suggestions_timeout: Duration,
    /// Overrides `max_tokens` of Duo Chat prompts.
    pub chat_max_tokens: Option<u32>,
    /// Client certificate and key files for model endpoints.
    pub mtls: Option<TlsFiles>,
    /// `AIGW_PROMPTS_DIR` (ours): prompt definitions that replace or add to
    /// the embedded ones, same layout as `src/prompts/definitions`.
    pub prompts_dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct LoggingConfig {
    /// A tracing filter directive, e.g. `info` or `aigw=debug,info`.
    pub level: String,
    pub json: bool,
}

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub metrics: MetricsConfig,
    pub gateway_auth: ServiceAuth,
    pub workflow_auth: ServiceAuth,
    pub ca: CaSelection,
    pub models: ModelsConfig,
    /// The documentation search index file (`AIGW_DOCS_SEARCH__DB_PATH`, ours;
    /// default `./tmp/docs.db` relative to the working directory, as upstream).
    pub docs_search_db: PathBuf,
    pub logging: LoggingConfig,
    pub shutdown_grace: Duration,
    pub dev_ephemeral_keys: bool,
    /// `$CREDENTIALS_DIRECTORY`, for error messages and `check-config`.
    pub credentials_directory: Option<PathBuf>,
}

fn parse_bool(env: &Env, var: &str, default: bool) -> Result<bool, ConfigError> {
    match env.get(var) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "t" | "y" => Ok(true),
            "0" | "false" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(invalid(var, v, "expected true or false")),
        },
    }
}

fn parse_port(env: &Env, vars: &[&'static str], default: u16) -> Result<u16, ConfigError> {
    match env.first(vars) {
        None => Ok(default),
        Some((var, v)) => v
            .parse::<u16>()
            .map_err(|_| invalid(var, v, "expected a TCP port number (0-65535)")),
    }
}

fn parse_ip(env: &Env, vars: &[&'static str], default: IpAddr) -> Result<IpAddr, ConfigError> {
    match env.first(vars) {
        None => Ok(default),
        Some((var, v)) => {
            // Accept "[::]" as well as "::", and the name "localhost".
            let trimmed = v.trim_start_matches('[').trim_end_matches(']');
            if trimmed.eq_ignore_ascii_case("localhost") {
                return Ok(IpAddr::from([127, 0, 0, 1]));
            }
            trimmed
                .parse::<IpAddr>()
                .map_err(|_| invalid(var, v, "expected an IP address such as 0.0.0.0 or ::"))
        }
    }
}

fn parse_url(var: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| invalid(var, value, format!("not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(invalid(var, value, "expected an http:// or https:// URL")),
    }
}

/// Two URLs naming the same issuer (credentials and a trailing `/` ignored).
pub fn same_issuer(a: &Url, b: &Url) -> bool {
    redact_url(a).trim_end_matches('/') == redact_url(b).trim_end_matches('/')
}

/// Reads a list of further GitLab URLs (comma- and/or whitespace-separated)
/// from the first of `vars` that is present (empty = none). Each must be an
/// http(s) URL, none may repeat `primary` or another entry.
fn additional_urls(
    env: &Env,
    vars: &[&'static str],
    primary: Option<(&'static str, &Url)>,
) -> Result<Vec<Url>, ConfigError> {
    let Some((var, raw)) = vars.iter().find_map(|v| env.raw(v).map(|raw| (*v, raw))) else {
        return Ok(Vec::new());
    };
    let mut urls: Vec<Url> = Vec::new();
    for item in raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let url = parse_url(var, item)?;
        if let Some((primary_var, p)) = primary
            && same_issuer(p, &url)
        {
            return Err(invalid(
                var,
                item,
                format!("already the GitLab instance of {primary_var}; list each instance once"),
            ));
        }
        if urls.iter().any(|u| same_issuer(u, &url)) {
            return Err(invalid(var, item, "listed twice; list each instance once"));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// The first of `vars` present in `env` (empty values included).
fn present(env: &Env, vars: &[&'static str]) -> Option<&'static str> {
    vars.iter().copied().find(|v| env.raw(v).is_some())
}

/// Resolves an OIDC issuer URL from a list of variables: the first one that is
/// *present* wins, even if it is empty (empty = "no such issuer").
fn issuer_url(env: &Env, vars: &[&'static str], default: &str) -> Result<Option<Url>, ConfigError> {
    for var in vars {
        if let Some(raw) = env.raw(var) {
            let v = raw.trim();
            return if v.is_empty() {
                Ok(None)
            } else {
                parse_url(var, v).map(Some)
            };
        }
    }
    parse_url("(default)", default).map(Some)
}

fn tls_files(
    env: &Env,
    enabled: &'static str,
    cert: &'static str,
    key: &'static str,
) -> Result<Option<TlsFiles>, ConfigError> {
    if !parse_bool(env, enabled, false)? {
        return Ok(None);
    }
    let because = format!("{enabled}=true");
    let cert_file = env.get(cert).ok_or_else(|| ConfigError::Missing {
        var: cert.to_string(),
        because: because.clone(),
    })?;
    let key_file = env.get(key).ok_or_else(|| ConfigError::Missing {
        var: key.to_string(),
        because,
    })?;
    Ok(Some(TlsFiles {
        cert_file: cert_file.into(),
        key_file: key_file.into(),
    }))
}

/// Finds a PEM secret: inline variable, then `<VAR>_FILE`, then a systemd credential.
fn secret(
    env: &Env,
    var: &'static str,
    file_var: &'static str,
    credential: &'static str,
) -> Option<SecretSource> {
    if let Some(text) = env.get(var) {
        return Some(SecretSource::Inline {
            var,
            text: text.to_string(),
        });
    }
    if let Some(path) = env.get(file_var) {
        return Some(SecretSource::File {
            var: file_var,
            path: path.into(),
        });
    }
    let dir = env.get("CREDENTIALS_DIRECTORY")?;
    let path = PathBuf::from(dir).join(credential);
    path.is_file().then_some(SecretSource::Credential {
        name: credential,
        path,
    })
}

fn ca_selection(env: &Env) -> CaSelection {
    for var in ["AIGW_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        if let Some(path) = env.get(var) {
            return CaSelection::Bundle {
                var,
                path: path.into(),
            };
        }
    }
    let file = env.get("SSL_CERT_FILE").map(PathBuf::from);
    let dirs: Vec<PathBuf> = env
        .get("SSL_CERT_DIR")
        .map(|d| {
            d.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if file.is_some() || !dirs.is_empty() {
        return CaSelection::OpenSsl { file, dirs };
    }
    CaSelection::System
}

impl Config {
    /// Reads and validates everything. The only error path is a named variable.
    pub fn load(env: &Env, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let any = IpAddr::from([0, 0, 0, 0]);

        let api_host = match cli.api_host {
            Some(h) => h,
            None => parse_ip(env, &["AIGW_FASTAPI__API_HOST"], any)?,
        };
        let api_port = match cli.api_port {
            Some(p) => p,
            None => parse_port(env, &["AIGW_FASTAPI__API_PORT"], 5052)?,
        };
        let http = HttpConfig {
            listen: SocketAddr::new(api_host, api_port),
            tls: tls_files(
                env,
                "AIGW_FASTAPI__TLS__ENABLED",
                "AIGW_FASTAPI__TLS__CERT_FILE",
                "AIGW_FASTAPI__TLS__KEY_FILE",
            )?,
            docs_url: path_setting(env, "AIGW_FASTAPI__DOCS_URL")?,
            openapi_url: path_setting(env, "AIGW_FASTAPI__OPENAPI_URL")?,
        };

        let grpc_host = match cli.grpc_host {
            Some(h) => h,
            None => parse_ip(env, &["DUO_WORKFLOW_SERVICE_HOST"], any)?,
        };
        let grpc_port = match cli.grpc_port {
            Some(p) => p,
            None => parse_port(env, &["DUO_WORKFLOW_SERVICE_PORT", "PORT"], 50052)?,
        };
        let grpc = GrpcConfig {
            listen: SocketAddr::new(grpc_host, grpc_port),
            tls: tls_files(
                env,
                "DUO_WORKFLOW_TLS__ENABLED",
                "DUO_WORKFLOW_TLS__CERT_FILE",
                "DUO_WORKFLOW_TLS__KEY_FILE",
            )?,
            reflection: parse_bool(env, "DUO_WORKFLOW_GRPC_REFLECTION_ENABLED", false)?,
        };

        let metrics_host = match cli.metrics_host {
            Some(h) => h,
            None => parse_ip(env, &["AIGW_FASTAPI__METRICS_HOST"], any)?,
        };
        let metrics_port = match cli.metrics_port {
            Some(p) => p,
            None => parse_port(env, &["AIGW_FASTAPI__METRICS_PORT"], 8082)?,
        };
        let wf_enabled = cli.workflow_metrics_addr.is_some()
            || cli.workflow_metrics_port.is_some()
            || env.get("PROMETHEUS_METRICS__ADDR").is_some()
            || env.get("PROMETHEUS_METRICS__PORT").is_some();
        let workflow_metrics = if wf_enabled {
            let addr = match cli.workflow_metrics_addr {
                Some(a) => a,
                None => parse_ip(env, &["PROMETHEUS_METRICS__ADDR"], any)?,
            };
            let port = match cli.workflow_metrics_port {
                Some(p) => p,
                None => parse_port(env, &["PROMETHEUS_METRICS__PORT"], 8083)?,
            };
            Some(SocketAddr::new(addr, port))
        } else {
            None
        };

        const GITLAB: &[&str] = &["AIGW_GITLAB_URL"];
        const WORKFLOW_GITLAB: &[&str] = &["DUO_WORKFLOW_AUTH__OIDC_GITLAB_URL", "AIGW_GITLAB_URL"];
        let gitlab_url = issuer_url(env, GITLAB, DEFAULT_GITLAB_URL)?;
        let workflow_gitlab_url = issuer_url(env, WORKFLOW_GITLAB, DEFAULT_GITLAB_URL)?;
        // Further instances: each URL an issuer of its own. The gRPC side
        // falls back to the AI Gateway's list, as it does for the GitLab URL.
        let additional_gitlab_urls = additional_urls(
            env,
            &["AIGW_ADDITIONAL_GITLAB_URLS"],
            gitlab_url
                .as_ref()
                .map(|u| (present(env, GITLAB).unwrap_or("the default GitLab URL"), u)),
        )?;
        let workflow_additional_gitlab_urls = additional_urls(
            env,
            &[
                "DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS",
                "AIGW_ADDITIONAL_GITLAB_URLS",
            ],
            workflow_gitlab_url.as_ref().map(|u| {
                (
                    present(env, WORKFLOW_GITLAB).unwrap_or("the default GitLab URL"),
                    u,
                )
            }),
        )?;
        // One process serves both sides of one GitLab instance: an offline
        // license declared on either side (an empty portal URL) applies to
        // both unless the other side names its own portal.
        let portal = issuer_url(
            env,
            &[
                "AIGW_CUSTOMER_PORTAL_URL",
                "DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL",
            ],
            DEFAULT_CUSTOMER_PORTAL_URL,
        )?;
        let workflow_portal = issuer_url(
            env,
            &[
                "DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL",
                "AIGW_CUSTOMER_PORTAL_URL",
            ],
            DEFAULT_CUSTOMER_PORTAL_URL,
        )?;

        let gateway_auth = ServiceAuth {
            service_name: env
                .get("AIGW_CLOUD_CONNECTOR_SERVICE_NAME")
                .unwrap_or(GATEWAY_SERVICE_NAME)
                .to_string(),
            gitlab_url,
            additional_gitlab_urls,
            customer_portal_url: portal,
            bypass: parse_bool(env, "AIGW_AUTH__BYPASS_EXTERNAL", false)?,
            bypass_with_header: parse_bool(env, "AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER", false)?,
            bypass_signature: parse_bool(env, "AIGW_AUTH__BYPASS_JWT_SIGNATURE", false)?,
            signing_key: secret(
                env,
                "AIGW_SELF_SIGNED_JWT__SIGNING_KEY",
                "AIGW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
                "aigw_signing_key",
            ),
            validation_key: secret(
                env,
                "AIGW_SELF_SIGNED_JWT__VALIDATION_KEY",
                "AIGW_SELF_SIGNED_JWT__VALIDATION_KEY_FILE",
                "aigw_validation_key",
            ),
        };
        let workflow_auth = ServiceAuth {
            service_name: env
                .get("DUO_WORKFLOW_CLOUD_CONNECTOR_SERVICE_NAME")
                .unwrap_or(WORKFLOW_SERVICE_NAME)
                .to_string(),
            gitlab_url: workflow_gitlab_url,
            additional_gitlab_urls: workflow_additional_gitlab_urls,
            customer_portal_url: workflow_portal,
            bypass: !parse_bool(env, "DUO_WORKFLOW_AUTH__ENABLED", true)?,
            bypass_with_header: false,
            bypass_signature: false,
            signing_key: secret(
                env,
                "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY",
                "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
                "duo_workflow_signing_key",
            ),
            validation_key: secret(
                env,
                "DUO_WORKFLOW_SELF_SIGNED_JWT__VALIDATION_KEY",
                "DUO_WORKFLOW_SELF_SIGNED_JWT__VALIDATION_KEY_FILE",
                "duo_workflow_validation_key",
            ),
        };

        let level = cli
            .log_level
            .clone()
            .or_else(|| env.get("AIGW_LOGGING__LEVEL").map(str::to_string))
            .unwrap_or_else(|| "info".to_string())
            .to_ascii_lowercase();
        let logging = LoggingConfig {
            level,
            json: parse_bool(env, "AIGW_LOGGING__FORMAT_JSON", true)?,
        };

        let grace_secs = match cli.shutdown_grace_period {
            Some(s) => s,
            None => match env.first(&[
                "AIGW_SHUTDOWN_GRACE_PERIOD_S",
                "DUO_WORKFLOW_SHUTDOWN_GRACE_PERIOD_S",
            ]) {
                None => 10.0,
                Some((var, v)) => v
                    .parse::<f64>()
                    .map_err(|_| invalid(var, v, "expected seconds, e.g. 10 or 2.5"))?,
            },
        };
        if !(0.0..=3600.0).contains(&grace_secs) {
            return Err(invalid(
                "AIGW_SHUTDOWN_GRACE_PERIOD_S",
                &grace_secs.to_string(),
                "expected 0 to 3600 seconds",
            ));
        }

        let models = models_config(env)?;

        Ok(Config {
            models,
            docs_search_db: docs_search_db(env),
            http,
            grpc,
            metrics: MetricsConfig {
                gateway: SocketAddr::new(metrics_host, metrics_port),
                workflow: workflow_metrics,
            },
            gateway_auth,
            workflow_auth,
            ca: ca_selection(env),
            logging,
            shutdown_grace: Duration::from_secs_f64(grace_secs),
            dev_ephemeral_keys: cli.dev_ephemeral_keys,
            credentials_directory: env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        })
    }

    /// The effective configuration as JSON, with every secret replaced by its origin.
    pub fn redacted(&self) -> Value {
        fn auth(a: &ServiceAuth) -> Value {
            json!({
                "service_name": a.service_name,
                "gitlab_url": a.gitlab_url.as_ref().map(redact_url),
                "additional_gitlab_urls": a.additional_gitlab_urls.iter().map(redact_url).collect::<Vec<_>>(),
                "customer_portal_url": a.customer_portal_url.as_ref().map(redact_url),
                "offline_license": a.customer_portal_url.is_none(),
                "bypass": a.bypass,
                "bypass_with_header": a.bypass_with_header,
                "bypass_signature": a.bypass_signature,
                "signing_key": a.signing_key.as_ref().map(|s| format!("<redacted: {}>", s.describe())),
                "validation_key": a.validation_key.as_ref().map(|s| format!("<redacted: {}>", s.describe())),
            })
        }
        fn tls(t: &Option<TlsFiles>) -> Value {
            match t {
                None => json!({"enabled": false}),
                Some(t) => json!({
                    "enabled": true,
                    "cert_file": t.cert_file.display().to_string(),
                    "key_file": t.key_file.display().to_string(),
                }),
            }
        }
        let ca = match &self.ca {
            CaSelection::Bundle { var, path } => {
                json!({"source": var, "path": path.display().to_string()})
            }
            CaSelection::OpenSsl { file, dirs } => json!({
                "source": "SSL_CERT_FILE/SSL_CERT_DIR",
                "file": file.as_ref().map(|f| f.display().to_string()),
                "dirs": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
            }),
            CaSelection::System => json!({"source": "system bundle, else compiled-in roots"}),
        };
        json!({
            "http": {
                "listen": self.http.listen.to_string(),
                "tls": tls(&self.http.tls),
                "docs_url": self.http.docs_url,
                "openapi_url": self.http.openapi_url,
            },
            "grpc": {
                "listen": self.grpc.listen.to_string(),
                "tls": tls(&self.grpc.tls),
                "reflection": self.grpc.reflection,
            },
            "metrics": {
                "gateway": self.metrics.gateway.to_string(),
                "workflow": self.metrics.workflow.map(|a| a.to_string()),
            },
            "gateway_auth": auth(&self.gateway_auth),
            "workflow_auth": auth(&self.workflow_auth),
            "ca_bundle": ca,
            "models": {
                "custom_models_enabled": self.models.custom_models_enabled,
                "disable_streaming": self.models.disable_streaming,
                "extra_headers": self.models.extra_headers.keys().collect::<Vec<_>>(),
                "request_timeout_s": self.models.request_timeout.as_secs_f64(),
                "suggestions_timeout_s": self.models.suggestions_timeout.as_secs_f64(),
                "chat_max_tokens": self.models.chat_max_tokens,
                "mtls": tls(&self.models.mtls),
                "prompts_dir": self.models.prompts_dir.as_ref().map(|p| p.display().to_string()),
            },
            "docs_search": {"db_path": self.docs_search_db.display().to_string()},
            "logging": {"level": self.logging.level, "json": self.logging.json},
            "shutdown_grace_period_s": self.shutdown_grace.as_secs_f64(),
        })
    }
}

/// The documentation index file: `AIGW_DOCS_SEARCH__DB_PATH` (ours), else
/// upstream's `./tmp/docs.db`, relative to the working directory. Also the
/// default output of `aigw docs-index build`, which needs no other setting.
pub fn docs_search_db(env: &Env) -> PathBuf {
    env.get("AIGW_DOCS_SEARCH__DB_PATH")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("./tmp/docs.db"), PathBuf::from)
}

fn models_config(env: &Env) -> Result<ModelsConfig, ConfigError> {
    const HEADERS: &str = "AIGW_CUSTOM_MODELS__EXTRA_HEADERS";
    let extra_headers = match env.get(HEADERS) {
        None => BTreeMap::new(),
        Some(v) => {
            let parsed: BTreeMap<String, Value> = serde_json::from_str(v).map_err(|_| {
                invalid(
                    HEADERS,
                    "<redacted>",
                    "expected a JSON object of header names to values",
                )
            })?;
            parsed
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Ok((k, other.to_string())),
                })
                .collect::<Result<_, ConfigError>>()?
        }
    };
    let seconds = |var: &'static str, default: f64| match env.get(var) {
        None => Ok(default),
        Some(v) => match v.parse::<f64>() {
            Ok(t) if t > 0.0 && t <= 3600.0 => Ok(t),
            _ => Err(invalid(var, v, "expected seconds greater than 0, e.g. 30")),
        },
    };
    let request_timeout = seconds("AIGW_DUO_CHAT__MODEL_REQUEST_TIMEOUT", 30.0)?;
    let suggestions_timeout = seconds("AIGW_CODE_SUGGESTIONS__MODEL_REQUEST_TIMEOUT", 60.0)?;
    const MAX_TOKENS: &str = "AIGW_DUO_CHAT__MAX_TOKENS";
    let chat_max_tokens = match env.get(MAX_TOKENS) {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(MAX_TOKENS, v, "expected a positive number of tokens"))?,
        ),
    };
    Ok(ModelsConfig {
        custom_models_enabled: parse_bool(env, "AIGW_CUSTOM_MODELS__ENABLED", false)?,
        disable_streaming: parse_bool(env, "AIGW_CUSTOM_MODELS__DISABLE_STREAMING", false)?,
        extra_headers,
        request_timeout: Duration::from_secs_f64(request_timeout),
        suggestions_timeout: Duration::from_secs_f64(suggestions_timeout),
        chat_max_tokens,
        mtls: tls_files(
            env,
            "AIGW_MTLS__ENABLED",
            "AIGW_MTLS__CERT_FILE",
            "AIGW_MTLS__KEY_FILE",
        )?,
        prompts_dir: env
            .get("AIGW_PROMPTS_DIR")
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from),
    })
}

/// A URL safe to print: any user name and password removed.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Both setters only fail for URLs that cannot carry credentials at all.
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

fn path_setting(env: &Env, var: &'static str) -> Result<Option<String>, ConfigError> {
    match env.get(var) {
        None => Ok(None),
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => {
            Ok(Some(p.to_string()))
        }
        Some(p) => Err(invalid(var, p, "expected a path starting with '/'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            &Env::from_pairs(pairs.iter().copied()),
            &CliOverrides::default(),
        )
    }

    #[test]
    fn defaults_match_the_upstream_container() {
        let c = load(&[]).unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:5052");
        assert_eq!(c.grpc.listen.to_string(), "0.0.0.0:50052");
        assert_eq!(c.metrics.gateway.to_string(), "0.0.0.0:8082");
        assert!(c.metrics.workflow.is_none());
        assert_eq!(c.gateway_auth.service_name, GATEWAY_SERVICE_NAME);
        assert_eq!(c.workflow_auth.service_name, WORKFLOW_SERVICE_NAME);
        assert!(c.gateway_auth.customer_portal_url.is_some());
        assert_eq!(c.ca, CaSelection::System);
    }

    #[test]
    fn empty_portal_url_means_offline_for_both_sides() {
        let c = load(&[("DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL", "")]).unwrap();
        assert!(c.workflow_auth.customer_portal_url.is_none());
        assert!(c.gateway_auth.customer_portal_url.is_none());
        let c = load(&[
            ("DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL", ""),
            ("AIGW_CUSTOMER_PORTAL_URL", "https://gitlab.example.com"),
        ])
        .unwrap();
        assert!(c.workflow_auth.customer_portal_url.is_none());
        assert!(c.gateway_auth.customer_portal_url.is_some());
    }

    #[test]
    fn workflow_gitlab_url_falls_back_to_the_gateway_one() {
        let c = load(&[("AIGW_GITLAB_URL", "https://gitlab.example.com")]).unwrap();
        assert_eq!(
            c.workflow_auth.gitlab_url.unwrap().as_str(),
            "https://gitlab.example.com/"
        );
    }

    #[test]
    fn additional_gitlab_urls_are_a_list_the_grpc_side_inherits() {
        let c = load(&[
            ("AIGW_GITLAB_URL", "https://a.example.com"),
            (
                "AIGW_ADDITIONAL_GITLAB_URLS",
                " https://b.example.com,https://c.example.com/gitlab \n\thttp://d.internal:8080,",
            ),
        ])
        .unwrap();
        let urls = |a: &ServiceAuth| a.gitlab_urls().map(Url::to_string).collect::<Vec<_>>();
        let all = vec![
            "https://a.example.com/",
            "https://b.example.com/",
            "https://c.example.com/gitlab",
            "http://d.internal:8080/",
        ];
        assert_eq!(urls(&c.gateway_auth), all);
        assert_eq!(urls(&c.workflow_auth), all);

        // The gRPC side's own list wins, even when empty.
        let c = load(&[
            ("AIGW_ADDITIONAL_GITLAB_URLS", "https://b.example.com"),
            ("DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS", ""),
        ])
        .unwrap();
        assert_eq!(c.gateway_auth.additional_gitlab_urls.len(), 1);
        assert!(c.workflow_auth.additional_gitlab_urls.is_empty());
        let c = load(&[
            ("AIGW_ADDITIONAL_GITLAB_URLS", ""),
            (
                "DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS",
                "https://e.example.com",
            ),
        ])
        .unwrap();
        assert!(c.gateway_auth.additional_gitlab_urls.is_empty());
        assert_eq!(c.workflow_auth.additional_gitlab_urls.len(), 1);
    }

    #[test]
    fn bad_or_repeated_additional_urls_name_the_variable() {
        for (pairs, var, needle) in [
            (
                vec![(
                    "AIGW_ADDITIONAL_GITLAB_URLS",
                    "https://b.example.com,gitlab-c",
                )],
                "AIGW_ADDITIONAL_GITLAB_URLS",
                "gitlab-c",
            ),
            (
                vec![("AIGW_ADDITIONAL_GITLAB_URLS", "ftp://b.example.com")],
                "AIGW_ADDITIONAL_GITLAB_URLS",
                "http:// or https://",
            ),
            (
                vec![(
                    "AIGW_ADDITIONAL_GITLAB_URLS",
                    "https://b.example.com https://B.example.com/",
                )],
                "AIGW_ADDITIONAL_GITLAB_URLS",
                "listed twice",
            ),
            (
                vec![
                    ("AIGW_GITLAB_URL", "https://a.example.com"),
                    ("AIGW_ADDITIONAL_GITLAB_URLS", "https://a.example.com/"),
                ],
                "AIGW_ADDITIONAL_GITLAB_URLS",
                "AIGW_GITLAB_URL",
            ),
            (
                vec![
                    (
                        "DUO_WORKFLOW_AUTH__OIDC_GITLAB_URL",
                        "https://w.example.com",
                    ),
                    ("AIGW_ADDITIONAL_GITLAB_URLS", "https://w.example.com"),
                ],
                "AIGW_ADDITIONAL_GITLAB_URLS",
                "DUO_WORKFLOW_AUTH__OIDC_GITLAB_URL",
            ),
            (
                vec![(
                    "DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS",
                    "https://gitlab.com",
                )],
                "DUO_WORKFLOW_AUTH__OIDC_ADDITIONAL_GITLAB_URLS",
                "default GitLab URL",
            ),
        ] {
            let e = load(&pairs).unwrap_err().to_string();
            assert!(e.starts_with(var), "{e}");
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn ca_precedence_and_empty_values() {
        let c = load(&[
            ("REQUESTS_CA_BUNDLE", ""),
            ("CURL_CA_BUNDLE", "/a.pem"),
            ("SSL_CERT_FILE", "/b.pem"),
        ])
        .unwrap();
        assert_eq!(
            c.ca,
            CaSelection::Bundle {
                var: "CURL_CA_BUNDLE",
                path: "/a.pem".into()
            }
        );
        let c = load(&[("SSL_CERT_DIR", "/x:/y")]).unwrap();
        assert_eq!(
            c.ca,
            CaSelection::OpenSsl {
                file: None,
                dirs: vec!["/x".into(), "/y".into()]
            }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = load(&[("AIGW_FASTAPI__API_PORT", "http")]).unwrap_err();
        assert!(e.to_string().contains("AIGW_FASTAPI__API_PORT"), "{e}");
        let e = load(&[("AIGW_AUTH__BYPASS_EXTERNAL", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("AIGW_AUTH__BYPASS_EXTERNAL"), "{e}");
        let e = load(&[("AIGW_GITLAB_URL", "gitlab.example.com")]).unwrap_err();
        assert!(e.to_string().contains("AIGW_GITLAB_URL"), "{e}");
        let e = load(&[("DUO_WORKFLOW_TLS__ENABLED", "true")]).unwrap_err();
        assert!(e.to_string().contains("DUO_WORKFLOW_TLS__CERT_FILE"), "{e}");
    }

    #[test]
    fn port_alias_wins_over_port() {
        let c = load(&[("PORT", "6000"), ("DUO_WORKFLOW_SERVICE_PORT", "7000")]).unwrap();
        assert_eq!(c.grpc.listen.port(), 7000);
        let c = load(&[("PORT", "6000")]).unwrap();
        assert_eq!(c.grpc.listen.port(), 6000);
    }

    #[test]
    fn secrets_prefer_inline_then_file() {
        let c = load(&[("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE", "/k.pem")]).unwrap();
        assert_eq!(
            c.workflow_auth.signing_key,
            Some(SecretSource::File {
                var: "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY_FILE",
                path: "/k.pem".into()
            })
        );
        let redacted = c.redacted().to_string();
        assert!(redacted.contains("redacted"));
    }
}
