//! Public keys of the OIDC issuers (the GitLab instance, optionally CustomersDot).
//!
//! Every issuer is fetched by its own background task (discovery document, then
//! `jwks_uri`), with short timeouts and a body size cap. Requests only ever read
//! the cached keys: an issuer that is slow, blackholed or broken can never add
//! latency to a request that GitLab's cached keys can answer. An unknown `kid`
//! asks for an early refresh, rate limited per issuer. The gateway binds and
//! serves before any key has arrived (air-gapped hosts boot in any order).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use url::Url;

use crate::{keys::VerifyKey, trust::TrustStore};

/// Timing knobs; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct JwksTiming {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Refresh period after a successful fetch.
    pub refresh_every: Duration,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// At most one unknown-kid triggered fetch per issuer per this interval.
    pub kid_refresh_min_interval: Duration,
    /// How long a request with an unknown kid waits for such a refresh.
    pub kid_refresh_wait: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            refresh_every: Duration::from_secs(3600),
            min_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            kid_refresh_min_interval: Duration::from_secs(10),
            kid_refresh_wait: Duration::from_millis(1500),
        }
    }
}

/// JWKS documents larger than this are refused (a real one is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Why one fetch failed; logged by the refresh task, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: response larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: invalid JSON: {message}")]
    Json { url: String, message: String },
    #[error("discovery document at {url} has no usable jwks_uri")]
    NoJwksUri { url: String },
    #[error("JWKS at {url} contains no usable RS256 key")]
    NoKeys { url: String },
}

/// One OIDC issuer and its last known keys.
pub struct Issuer {
    label: &'static str,
    base: Url,
    keys: ArcSwap<Vec<VerifyKey>>,
    wake: Notify,
    in_flight: AtomicBool,
    last_kid_refresh: Mutex<Option<Instant>>,
}

impl Issuer {
    /// "GitLab" or "CustomersDot", plus the URL.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.label, crate::config::redact_url(&self.base))
    }

    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.load_full()
    }

    fn discovery_url(&self) -> Result<Url, FetchError> {
        // Keep any path of the base URL: a GitLab under a relative URL root
        // serves its discovery document below that root.
        let mut url = self.base.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            self.base.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url.set_query(None);
        Ok(url)
    }
}

/// All issuers of the process, deduplicated by URL, with their refresh tasks.
pub struct JwksCache {
    issuers: Vec<Arc<Issuer>>,
    client: ArcSwap<reqwest::Client>,
    timing: JwksTiming,
    /// Bumped after every completed fetch attempt of any issuer.
    generation: watch::Sender<u64>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RsaJwk {
    kty: String,
    n: String,
    e: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
}

/// Builds the HTTP client used for discovery and JWKS fetches.
pub fn http_client(trust: &TrustStore, timing: &JwksTiming) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let certs = trust
        .certificates()
        .iter()
        .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok());
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .connect_timeout(timing.connect_timeout)
        .timeout(timing.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("aigw/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

impl JwksCache {
    /// Creates the cache; call [`JwksCache::spawn_refreshers`] to start fetching.
    pub fn new(
        urls: &[(&'static str, Url)],
        client: reqwest::Client,
        timing: JwksTiming,
    ) -> Arc<Self> {
        let mut issuers: Vec<Arc<Issuer>> = Vec::new();
        for (label, url) in urls {
            if issuers.iter().any(|i| same_url(&i.base, url)) {
                continue;
            }
            issuers.push(Arc::new(Issuer {
                label,
                base: url.clone(),
                keys: ArcSwap::from_pointee(Vec::new()),
                wake: Notify::new(),
                in_flight: AtomicBool::new(false),
                last_kid_refresh: Mutex::new(None),
            }));
        }
        let (generation, _) = watch::channel(0);
        Arc::new(Self {
            issuers,
            client: ArcSwap::from_pointee(client),
            timing,
            generation,
        })
    }

    /// The issuer registered for this URL, if any.
    pub fn issuer(&self, url: &Url) -> Option<Arc<Issuer>> {
        self.issuers
            .iter()
            .find(|i| same_url(&i.base, url))
            .cloned()
    }

    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// Replaces the HTTP client (new trust store after SIGHUP).
    pub fn set_client(&self, client: reqwest::Client) {
        self.client.store(Arc::new(client));
    }

    /// Starts one refresh task per issuer; they stop with the runtime.
    pub fn spawn_refreshers(self: &Arc<Self>) {
        for issuer in &self.issuers {
            let cache = self.clone();
            let issuer = issuer.clone();
            tokio::spawn(async move { cache.refresh_loop(issuer).await });
        }
    }

    async fn refresh_loop(self: Arc<Self>, issuer: Arc<Issuer>) {
        let mut backoff = self.timing.min_backoff;
        loop {
            issuer.in_flight.store(true, Ordering::SeqCst);
            let result = self.fetch(&issuer).await;
            issuer.in_flight.store(false, Ordering::SeqCst);
            let delay = match result {
                Ok(keys) => {
                    let changed = kid_list(&issuer.keys.load()) != kid_list(&keys);
                    if changed {
                        tracing::info!(issuer = %issuer.describe(), keys = keys.len(), "OIDC signing keys loaded");
                    }
                    issuer.keys.store(Arc::new(keys));
                    backoff = self.timing.min_backoff;
                    self.timing.refresh_every
                }
                Err(e) => {
                    let have = issuer.keys.load().len();
                    tracing::warn!(issuer = %issuer.describe(), error = %e, cached_keys = have, retry_in_s = backoff.as_secs_f64(), "cannot refresh OIDC signing keys");
                    let d = backoff;
                    backoff = (backoff * 2).min(self.timing.max_backoff);
                    d
                }
            };
            self.generation.send_modify(|g| *g += 1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = issuer.wake.notified() => {}
            }
        }
    }

    async fn fetch(&self, issuer: &Issuer) -> Result<Vec<VerifyKey>, FetchError> {
        let client = self.client.load_full();
        let discovery_url = issuer.discovery_url()?;
        let doc: Discovery = get_json(&client, &discovery_url).await?;
        let jwks_uri = doc
            .jwks_uri
            .and_then(|u| discovery_url.join(&u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| FetchError::NoJwksUri {
                url: crate::config::redact_url(&discovery_url),
            })?;
        let set: JwkSet = get_json(&client, &jwks_uri).await?;
        let origin: Arc<str> = Arc::from(issuer.describe().as_str());
        let keys: Vec<VerifyKey> = set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RsaJwk>(v).ok())
            .filter(|k| {
                k.kty == "RSA"
                    && k.alg.as_deref().is_none_or(|a| a == "RS256")
                    && k.use_.as_deref().is_none_or(|u| u == "sig")
            })
            .filter_map(|k| {
                let key = DecodingKey::from_rsa_components(&k.n, &k.e).ok()?;
                Some(VerifyKey {
                    kid: k.kid,
                    key: Arc::new(key),
                    origin: origin.clone(),
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(FetchError::NoKeys {
                url: crate::config::redact_url(&jwks_uri),
            });
        }
        Ok(keys)
    }

    /// Asks for an early refresh because a token named a `kid` nobody has, and
    /// waits (bounded) for the refreshes to finish. Returns at once when every
    /// issuer refreshed recently.
    pub async fn refresh_for_unknown_kid(&self, issuers: &[Arc<Issuer>]) {
        let now = Instant::now();
        let mut woke = false;
        for issuer in issuers {
            let Ok(mut last) = issuer.last_kid_refresh.lock() else {
                continue;
            };
            let allowed =
                last.is_none_or(|t| now.duration_since(t) >= self.timing.kid_refresh_min_interval);
            if allowed {
                *last = Some(now);
                issuer.wake.notify_one();
                woke = true;
            }
        }
        if !woke {
            return;
        }
        let mut rx = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + self.timing.kid_refresh_wait;
        // Give the woken tasks a moment to mark themselves in flight.
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        while issuers.iter().any(|i| i.in_flight.load(Ordering::SeqCst)) {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

fn kid_list(keys: &[VerifyKey]) -> Vec<Option<String>> {
    keys.iter().map(|k| k.kid.clone()).collect()
}

fn same_url(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &Url,
) -> Result<T, FetchError> {
    let http = |e: reqwest::Error| FetchError::Http {
        url: crate::config::redact_url(url),
        message: crate::telemetry::error_chain(&e),
    };
    let mut resp = client
        .get(url.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(http)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: crate::config::redact_url(url),
            status: resp.status().as_u16(),
        });
    }
    if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
        return Err(FetchError::TooLarge {
            url: crate::config::redact_url(url),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooLarge {
                url: crate::config::redact_url(url),
            });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Json {
        url: crate::config::redact_url(url),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_credentials() {
        let url = Url::parse("https://user:s3cret@gitlab.example.com/gitlab/").unwrap();
        assert_eq!(
            crate::config::redact_url(&url),
            "https://gitlab.example.com/gitlab/"
        );
        let url = Url::parse("https://gitlab.example.com:8443/").unwrap();
        assert_eq!(
            crate::config::redact_url(&url),
            "https://gitlab.example.com:8443/"
        );
    }
}
