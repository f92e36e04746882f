//! Credentials for Amazon Bedrock, resolved the way the AWS SDKs resolve them.
//!
//! A Bedrock API key (the request's `api_key`, else `AWS_BEARER_TOKEN_BEDROCK`)
//! is sent as a bearer token. Otherwise SigV4 credentials come from the AWS
//! SDK's own default chain (`aws-config`): environment variables, the shared
//! `credentials`/`config` files and profiles (including `role_arn` /
//! `source_profile` and `credential_process`), web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, through STS
//! `AssumeRoleWithWebIdentity`), container credentials (ECS, EKS Pod
//! Identity) and the EC2 instance metadata service (IMDSv2). The chain reads
//! its `AWS_*` variables and `~/.aws` files itself, like every AWS SDK (the
//! one exception to "only `config` reads the environment"; `config` names
//! them for `check-config`).
//!
//! Every request the chain makes (STS, IMDS, container endpoint) goes through
//! the gateway's one model HTTP client ([`ReqwestHttpClient`]): the process
//! trust store, the client certificate, SIGHUP reloads. Credentials are
//! cached and fetched again five minutes before they expire, one refresh at
//! a time; a failed lookup is remembered for a few seconds so a missing
//! setup does not cost an instance-metadata timeout per request.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use aws_config::{
    default_provider::credentials::DefaultCredentialsChain, provider_config::ProviderConfig,
};
use aws_credential_types::{Credentials, provider::ProvideCredentials};
use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;

use super::{ModelError, client::SharedClient};
use crate::config::Secret;

/// Fetch new credentials this long before the old ones expire.
pub const REFRESH_LEAD: Duration = Duration::from_secs(300);
/// How long a failed lookup is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Largest STS / metadata answer read.
const MAX_CREDENTIAL_BODY: usize = 1024 * 1024;

/// What signs a Bedrock request.
#[derive(Clone)]
pub enum AwsIdentity {
    /// A Bedrock API key: `Authorization: Bearer`.
    Bearer(String),
    /// SigV4 credentials.
    SigV4(Credentials),
}

enum Cache {
    Empty,
    Ready {
        credentials: Credentials,
        refresh_at: Option<Instant>,
    },
    Failed {
        message: String,
        retry_at: Instant,
    },
}

pub struct AwsAuth {
    client: SharedClient,
    bearer: Option<Secret>,
    region: Option<String>,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
    cache: tokio::sync::Mutex<Cache>,
}

fn failure(message: impl Into<String>) -> ModelError {
    ModelError::Credentials {
        platform: "Amazon Bedrock",
        message: message.into(),
    }
}

/// The places the chain looks, for "nothing found".
const LOOKED_AT: &str = "AWS_BEARER_TOKEN_BEDROCK; AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN); the shared files and profile (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, ~/.aws/credentials, ~/.aws/config); web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN); container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI); the EC2 instance metadata service (IMDSv2, unless AWS_EC2_METADATA_DISABLED)";

impl AwsAuth {
    pub fn new(client: SharedClient, bearer: Option<Secret>, region: Option<String>) -> Self {
        Self {
            client,
            bearer,
            region,
            chain: tokio::sync::OnceCell::new(),
            cache: tokio::sync::Mutex::new(Cache::Empty),
        }
    }

    /// Forgets cached credentials (SIGHUP: rotated files are read again).
    pub async fn forget(&self) {
        *self.cache.lock().await = Cache::Empty;
    }

    /// The identity for one request; `request_key` is the request's own Bedrock API key.
    pub async fn identity(&self, request_key: Option<&str>) -> Result<AwsIdentity, ModelError> {
        if let Some(k) = request_key.filter(|k| !k.is_empty()) {
            return Ok(AwsIdentity::Bearer(k.to_string()));
        }
        if let Some(b) = &self.bearer {
            return Ok(AwsIdentity::Bearer(b.expose().to_string()));
        }
        self.credentials().await.map(AwsIdentity::SigV4)
    }

    async fn credentials(&self) -> Result<Credentials, ModelError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        match &*cache {
            Cache::Ready {
                credentials,
                refresh_at,
            } if refresh_at.is_none_or(|t| now < t) => return Ok(credentials.clone()),
            Cache::Failed { message, retry_at } if now < *retry_at => {
                return Err(failure(message.clone()));
            }
            _ => {}
        }
        let chain = self
            .chain
            .get_or_init(|| async {
                let config = ProviderConfig::empty()
                    .with_http_client(ReqwestHttpClient(self.client.clone()))
                    .with_sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
                    .with_region(self.region.clone().map(aws_types::region::Region::new));
                DefaultCredentialsChain::builder()
                    .configure(config)
                    .build()
                    .await
            })
            .await;
        match chain.provide_credentials().await {
            Ok(credentials) => {
                let refresh_at = credentials.expiry().map(|expiry| {
                    let left = expiry
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    Instant::now() + left.saturating_sub(REFRESH_LEAD)
                });
                tracing::debug!(
                    expires_in_s = credentials
                        .expiry()
                        .and_then(|e| e.duration_since(SystemTime::now()).ok())
                        .map(|d| d.as_secs()),
                    "AWS credentials loaded"
                );
                *cache = Cache::Ready {
                    credentials: credentials.clone(),
                    refresh_at,
                };
                Ok(credentials)
            }
            Err(e) => {
                // Display texts only: the SDK's Debug forms carry raw
                // responses, which for a credentials answer means secrets.
                let detail = crate::telemetry::error_chain(&e);
                let message = match e {
                    aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_) => {
                        format!("no AWS credentials found; looked at {LOOKED_AT}")
                    }
                    _ => format!("cannot load AWS credentials: {}", super::client::truncate(&detail, 400)),
                };
                *cache = Cache::Failed {
                    message: message.clone(),
                    retry_at: Instant::now() + FAILURE_TTL,
                };
                Err(failure(message))
            }
        }
    }
}

/// The AWS SDK's HTTP client trait over the gateway's model client.
#[derive(Debug)]
pub struct ReqwestHttpClient(pub SharedClient);

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeout = match (settings.connect_timeout(), settings.read_timeout()) {
            (Some(c), Some(r)) => Some(c + r),
            (Some(t), None) | (None, Some(t)) => Some(t),
            (None, None) => None,
        };
        SharedHttpConnector::new(Connector {
            client: self.0.clone(),
            timeout: timeout.unwrap_or(Duration::from_secs(10)),
        })
    }
}

#[derive(Debug)]
struct Connector {
    client: SharedClient,
    timeout: Duration,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client: Arc<reqwest::Client> = self.client.get();
        let timeout = self.timeout;
        HttpConnectorFuture::new(async move {
            let other = |e: String| ConnectorError::other(e.into(), None);
            let method = reqwest::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| other(e.to_string()))?;
            let mut rb = client.request(method, request.uri()).timeout(timeout);
            for (k, v) in request.headers() {
                rb = rb.header(k, v);
            }
            let body = request
                .body()
                .bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let resp = rb.body(body).send().await.map_err(|e| {
                if e.is_timeout() {
                    ConnectorError::timeout(e.into())
                } else {
                    ConnectorError::io(e.into())
                }
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = super::client::read_limited(resp, MAX_CREDENTIAL_BODY, timeout)
                .await
                .map_err(other)?;
            let status = status
                .try_into()
                .map_err(|_| other(format!("HTTP status {status}")))?;
            let mut out = HttpResponse::new(status, SdkBody::from(bytes));
            for (k, v) in &headers {
                if let Ok(v) = v.to_str() {
                    out.headers_mut()
                        .append(k.as_str().to_string(), v.to_string());
                }
            }
            Ok(out)
        })
    }
}
