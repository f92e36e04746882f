//! Google OAuth access tokens for Vertex AI, found the way Google's client
//! libraries find them: the JSON file named by `GOOGLE_APPLICATION_CREDENTIALS`
//! (a service account: an RS256 JWT signed with its key, exchanged at its
//! `token_uri`; or a gcloud user: its refresh token), else gcloud's
//! application-default file under `$HOME`, else the metadata server of the
//! VM or GKE node. The token is cached and fetched again five minutes before
//! it expires; one refresh runs at a time. The credential file is read on
//! each refresh, so a rotated key (a Kubernetes secret) is picked up.
//!
//! Tokens, keys and signed assertions never reach a log or an error message.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{ModelError, client::SharedClient};
use crate::config::VertexConfig;

/// Fetch a new token this long before the old one expires.
pub const REFRESH_LEAD: Duration = Duration::from_secs(300);
/// Bound on one token or metadata request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A token ready for `Authorization: Bearer`, and the project it belongs to.
#[derive(Clone)]
pub struct GoogleToken {
    pub bearer: String,
    pub project: Option<String>,
}

struct Cached {
    token: GoogleToken,
    refresh_at: Instant,
}

pub struct GoogleAuth {
    config: VertexConfig,
    client: SharedClient,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    quota_project_id: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    refresh_token: String,
}

fn failure(message: impl Into<String>) -> ModelError {
    ModelError::Credentials {
        platform: "Vertex AI",
        message: message.into(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl GoogleAuth {
    pub fn new(config: VertexConfig, client: SharedClient) -> Self {
        Self {
            config,
            client,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Forgets the cached token (SIGHUP: a rotated key file is read again).
    pub async fn forget(&self) {
        *self.cache.lock().await = None;
    }

    /// A valid token: the cached one, or a fresh one.
    pub async fn token(&self) -> Result<GoogleToken, ModelError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_LEAD);
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    /// Which file to read, if any.
    fn credentials_path(&self) -> Option<(PathBuf, &'static str)> {
        if let Some(p) = &self.config.credentials_file {
            return Some((p.clone(), "GOOGLE_APPLICATION_CREDENTIALS"));
        }
        self.config
            .adc_file
            .as_ref()
            .filter(|p| p.is_file())
            .map(|p| (p.clone(), "gcloud application-default credentials"))
    }

    async fn fetch(&self) -> Result<(GoogleToken, Duration), ModelError> {
        let Some((path, origin)) = self.credentials_path() else {
            return self.metadata_server_token().await;
        };
        let text = tokio::fs::read(&path)
            .await
            .map_err(|e| failure(format!("cannot read {} ({origin}): {e}", path.display())))?;
        let file: CredentialsFile = serde_json::from_slice(&text).map_err(|e| {
            failure(format!(
                "{} ({origin}) is not a Google credentials JSON file: {e}",
                path.display()
            ))
        })?;
        let project_of_file = file
            .project_id
            .clone()
            .or_else(|| file.quota_project_id.clone());
        let (token, lifetime) = match file.kind.as_str() {
            "service_account" => self.service_account(&file, &path).await?,
            "authorized_user" => self.authorized_user(&file, &path).await?,
            other => {
                return Err(failure(format!(
                    "{} ({origin}): credentials of type {other:?} are not supported (use a service account key or gcloud user credentials)",
                    path.display()
                )));
            }
        };
        let project = match (self.config.project.clone(), project_of_file) {
            (Some(p), _) | (None, Some(p)) => Some(p),
            (None, None) => None,
        };
        Ok((
            GoogleToken {
                bearer: token,
                project,
            },
            lifetime,
        ))
    }

    /// POSTs a form to a token endpoint and reads `access_token` / `expires_in`.
    async fn exchange(
        &self,
        token_uri: &str,
        form: &[(&str, &str)],
        who: &str,
    ) -> Result<(String, Duration), ModelError> {
        let url = Url::parse(token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| failure(format!("{who}: token_uri is not a URL")))?;
        let host = url.host_str().unwrap_or("token endpoint").to_string();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let http = self.client.get();
        let resp = tokio::time::timeout(
            TOKEN_TIMEOUT,
            http.post(url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
                .send(),
        )
        .await
        .map_err(|_| failure(format!("the Google token endpoint {host} did not answer")))?
        .map_err(|e| {
            failure(format!(
                "cannot reach the Google token endpoint {host}: {}",
                crate::telemetry::error_chain(&e)
            ))
        })?;
        let status = resp.status();
        let v: Value = tokio::time::timeout(TOKEN_TIMEOUT, resp.json())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Value::Null);
        if !status.is_success() {
            // `error_description` is Google's text ("Invalid JWT Signature."); never the assertion.
            let why = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(|s| super::client::truncate(s, 200))
                .unwrap_or_default();
            return Err(failure(format!(
                "the Google token endpoint {host} refused {who} (HTTP {}): {why}",
                status.as_u16()
            )));
        }
        token_of(&v).ok_or_else(|| {
            failure(format!(
                "the Google token endpoint {host} answered without an access_token"
            ))
        })
    }

    async fn service_account(
        &self,
        file: &CredentialsFile,
        path: &Path,
    ) -> Result<(String, Duration), ModelError> {
        let who = format!("service account {}", file.client_email);
        let token_uri = file
            .token_uri
            .as_deref()
            .unwrap_or("https://oauth2.googleapis.com/token");
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes()).map_err(|_| {
                failure(format!(
                    "{}: private_key of {who} is not an RSA key in PEM form",
                    path.display()
                ))
            })?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = file.private_key_id.clone();
        let iat = now_secs();
        let claims = json!({
            "iss": file.client_email,
            "sub": file.client_email,
            "scope": SCOPE,
            "aud": token_uri,
            "iat": iat,
            "exp": iat + 3600,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|_| failure(format!("cannot sign the token request of {who}")))?;
        self.exchange(
            token_uri,
            &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
            &who,
        )
        .await
    }

    async fn authorized_user(
        &self,
        file: &CredentialsFile,
        path: &Path,
    ) -> Result<(String, Duration), ModelError> {
        if file.refresh_token.is_empty() {
            return Err(failure(format!(
                "{}: authorized_user credentials without a refresh_token",
                path.display()
            )));
        }
        self.exchange(
            file.token_uri
                .as_deref()
                .unwrap_or("https://oauth2.googleapis.com/token"),
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &file.client_id),
                ("client_secret", &file.client_secret),
                ("refresh_token", &file.refresh_token),
            ],
            "the gcloud user credentials",
        )
        .await
    }

    async fn metadata_get(&self, path: &str) -> Result<reqwest::Response, String> {
        let mut url = self.config.metadata_url.clone();
        url.set_path(path);
        let http = self.client.get();
        let resp = tokio::time::timeout(
            Duration::from_secs(3),
            http.get(url).header("Metadata-Flavor", "Google").send(),
        )
        .await
        .map_err(|_| "did not answer within 3 s".to_string())?
        .map_err(|e| crate::telemetry::error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("answered HTTP {}", resp.status().as_u16()));
        }
        Ok(resp)
    }

    async fn metadata_server_token(&self) -> Result<(GoogleToken, Duration), ModelError> {
        let host = self
            .config
            .metadata_url
            .host_str()
            .unwrap_or("")
            .to_string();
        let missing = |why: String| {
            failure(format!(
                "no Google credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, there is no gcloud application-default file ($HOME/.config/gcloud/application_default_credentials.json), and the metadata server {host} (GCE_METADATA_HOST) {why}"
            ))
        };
        let resp = self
            .metadata_get("/computeMetadata/v1/instance/service-accounts/default/token")
            .await
            .map_err(missing)?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| missing(format!("sent an invalid token: {e}")))?;
        let (bearer, lifetime) =
            token_of(&v).ok_or_else(|| missing("sent no access_token".to_string()))?;
        let project = match self.config.project.clone() {
            Some(p) => Some(p),
            None => match self
                .metadata_get("/computeMetadata/v1/project/project-id")
                .await
            {
                Ok(r) => r.text().await.ok().map(|t| t.trim().to_string()),
                Err(_) => None,
            },
        };
        Ok((GoogleToken { bearer, project }, lifetime))
    }
}

fn token_of(v: &Value) -> Option<(String, Duration)> {
    let token = v.get("access_token").and_then(Value::as_str)?.to_string();
    let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
    Some((token, Duration::from_secs(expires_in)))
}
