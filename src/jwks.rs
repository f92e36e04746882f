//! Public keys of the OIDC issuers: every GitLab instance served, optionally
//! CustomersDot.
//!
//! Every issuer is fetched by its own background task (discovery document, then
//! `jwks_uri`), with short timeouts, a body size cap, and its own backoff.
//! Requests only ever read the cached keys: an issuer that is slow, blackholed
//! or broken can never add latency to a request another issuer's cached keys
//! can answer. An unknown `kid` asks for an early refresh of the one issuer the
//! token claims, rate limited per issuer, and waits (bounded) for that issuer
//! alone. The gateway binds and serves before any key has arrived (air-gapped
//! hosts boot in any order).
//!
//! Issuers are kept apart: each knows the `iss` values its keys may vouch for
//! (its configured URL, and the `issuer` its discovery document announces
//! unless that is another configured issuer's URL), so a key of one GitLab
//! instance never validates a token claiming another.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use url::Url;

use crate::{keys::VerifyKey, metrics::OidcMetrics, trust::TrustStore};

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

/// Longest `issuer` of a discovery document we keep (a URL; real ones are short).
const MAX_ISSUER_LEN: usize = 2048;

/// The identity an `iss` value or issuer URL compares by: a URL without
/// credentials, fragment or trailing `/` (scheme and host lowercased, default
/// port dropped, by `url`), anything else verbatim.
pub fn issuer_id(value: &str) -> String {
    let value = value.trim();
    match Url::parse(value) {
        Ok(mut url) if url.has_host() => {
            url.set_fragment(None);
            crate::config::redact_url(&url)
                .trim_end_matches('/')
                .to_string()
        }
        _ => value.trim_end_matches('/').to_string(),
    }
}

/// The keys of one issuer as of its last successful fetch. Replaced as a whole
/// (never edited), and only when something changed, so the identity of `keys`
/// tells a token cache whether what verified a token is still current.
pub struct IssuerKeys {
    pub keys: Arc<Vec<VerifyKey>>,
    /// The discovery document's `issuer`, as an [`issuer_id`], when usable.
    announced: Option<String>,
    /// `kid`, `n` and `e` of every key, to notice a change.
    fingerprint: Vec<(Option<String>, String, String)>,
}

/// Completed and started fetches of one issuer.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    started: u64,
    completed: u64,
}

/// What the last fetches of an issuer came to, for readiness and check-config.
#[derive(Clone, Debug, Default)]
struct Outcome {
    /// A fetch has succeeded at least once.
    answered: bool,
    /// The last failure since the last success.
    last_error: Option<String>,
}

/// One OIDC issuer and its last known keys.
pub struct Issuer {
    label: &'static str,
    base: Url,
    /// [`issuer_id`] of `base`.
    id: String,
    state: ArcSwap<IssuerKeys>,
    wake: Notify,
    progress: watch::Sender<Progress>,
    outcome: Mutex<Outcome>,
    last_kid_refresh: Mutex<Option<Instant>>,
}

/// A snapshot of one issuer for check-config and readiness.
#[derive(Clone, Debug)]
pub struct IssuerStatus {
    /// "GitLab" or "CustomersDot".
    pub label: &'static str,
    /// The configured URL, credentials removed.
    pub url: String,
    /// Keys cached now.
    pub keys: usize,
    /// The `iss` announced by its discovery document and accepted.
    pub announced_issuer: Option<String>,
    /// At least one fetch has completed (successfully or not).
    pub attempted: bool,
    pub answered: bool,
    pub last_error: Option<String>,
}

impl Issuer {
    /// "GitLab" or "CustomersDot", plus the URL.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.label, crate::config::redact_url(&self.base))
    }

    /// The configured URL without credentials: the issuer's metrics label.
    pub fn url(&self) -> String {
        crate::config::redact_url(&self.base)
    }

    /// The keys and accepted `iss` values now.
    pub fn snapshot(&self) -> Arc<IssuerKeys> {
        self.state.load_full()
    }

    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.state.load().keys.clone()
    }

    /// True when keys of `snapshot` may vouch for a token whose `iss` has this
    /// [`issuer_id`].
    pub fn accepts(&self, snapshot: &IssuerKeys, iss_id: &str) -> bool {
        iss_id == self.id || snapshot.announced.as_deref() == Some(iss_id)
    }

    /// True until a fetch of this issuer has succeeded once.
    pub fn never_answered(&self) -> bool {
        self.outcome.lock().map(|o| !o.answered).unwrap_or(true)
    }

    pub fn status(&self) -> IssuerStatus {
        let outcome = self.outcome.lock().map(|o| o.clone()).unwrap_or_default();
        let state = self.state.load();
        IssuerStatus {
            label: self.label,
            url: self.url(),
            keys: state.keys.len(),
            announced_issuer: state.announced.clone(),
            attempted: self.progress.borrow().completed > 0,
            answered: outcome.answered,
            last_error: outcome.last_error,
        }
    }

    fn discovery_url(&self) -> Url {
        // Keep any path of the base URL: a GitLab under a relative URL root
        // serves its discovery document below that root.
        let mut url = self.base.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            self.base.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url.set_query(None);
        url
    }
}

/// What one successful fetch brought.
struct Fetched {
    keys: Vec<VerifyKey>,
    fingerprint: Vec<(Option<String>, String, String)>,
    announced: Option<String>,
}

/// All issuers of the process, deduplicated by URL, with their refresh tasks.
pub struct JwksCache {
    issuers: Vec<Arc<Issuer>>,
    client: ArcSwap<reqwest::Client>,
    timing: JwksTiming,
    metrics: Option<OidcMetrics>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: Option<String>,
    issuer: Option<String>,
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
    /// `metrics` gets one series per issuer (the configured set, nothing else).
    pub fn new(
        urls: &[(&'static str, Url)],
        client: reqwest::Client,
        timing: JwksTiming,
        metrics: Option<OidcMetrics>,
    ) -> Arc<Self> {
        let mut issuers: Vec<Arc<Issuer>> = Vec::new();
        for (label, url) in urls {
            if issuers.iter().any(|i| same_url(&i.base, url)) {
                continue;
            }
            let (progress, _) = watch::channel(Progress::default());
            issuers.push(Arc::new(Issuer {
                label,
                base: url.clone(),
                id: issuer_id(url.as_str()),
                state: ArcSwap::from_pointee(IssuerKeys {
                    keys: Arc::new(Vec::new()),
                    announced: None,
                    fingerprint: Vec::new(),
                }),
                wake: Notify::new(),
                progress,
                outcome: Mutex::new(Outcome::default()),
                last_kid_refresh: Mutex::new(None),
            }));
        }
        if let Some(m) = &metrics {
            for issuer in &issuers {
                m.touch(&issuer.url());
            }
        }
        Arc::new(Self {
            issuers,
            client: ArcSwap::from_pointee(client),
            timing,
            metrics,
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

    /// Fetches every issuer once, concurrently, giving up on those that have
    /// not answered `within` (`check-config`).
    pub async fn fetch_all_once(&self, within: Duration) {
        let all = self.issuers.iter().map(|issuer| async move {
            if tokio::time::timeout(within, self.refresh_once(issuer))
                .await
                .is_err()
                && let Ok(mut o) = issuer.outcome.lock()
            {
                o.last_error = Some(format!("no answer within {} s", within.as_secs_f64()));
            }
        });
        futures_util::future::join_all(all).await;
    }

    /// Every issuer as it stands now.
    pub fn statuses(&self) -> Vec<IssuerStatus> {
        self.issuers.iter().map(|i| i.status()).collect()
    }

    /// Issuers that have been tried and have never answered, as readiness
    /// warnings naming them.
    pub fn never_answered_warnings(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| (i, i.status()))
            .filter(|(_, s)| s.attempted && !s.answered)
            .map(|(i, s)| {
                format!(
                    "OIDC issuer {} has never answered: tokens it signs are refused until its keys can be fetched (last error: {})",
                    i.describe(),
                    s.last_error.as_deref().unwrap_or("unknown")
                )
            })
            .collect()
    }

    async fn refresh_loop(self: Arc<Self>, issuer: Arc<Issuer>) {
        let mut backoff = self.timing.min_backoff;
        loop {
            let delay = if self.refresh_once(&issuer).await {
                backoff = self.timing.min_backoff;
                self.timing.refresh_every
            } else {
                let d = backoff;
                backoff = (backoff * 2).min(self.timing.max_backoff);
                d
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = issuer.wake.notified() => {}
            }
        }
    }

    /// One fetch of `issuer`, its result stored and logged; true on success.
    async fn refresh_once(&self, issuer: &Issuer) -> bool {
        issuer.progress.send_modify(|p| p.started += 1);
        let result = self.fetch(issuer).await;
        let ok = result.is_ok();
        let label = issuer.url();
        match result {
            Ok(fetched) => {
                let announced = self.vet_announced(issuer, fetched.announced);
                let old = issuer.state.load();
                let changed = old.fingerprint != fetched.fingerprint;
                if changed || old.announced != announced {
                    if changed {
                        tracing::info!(issuer = %issuer.describe(), keys = fetched.keys.len(), announced_issuer = announced.as_deref().unwrap_or(""), "OIDC signing keys loaded");
                    }
                    issuer.state.store(Arc::new(IssuerKeys {
                        keys: Arc::new(fetched.keys),
                        announced,
                        fingerprint: fetched.fingerprint,
                    }));
                }
                if let Ok(mut o) = issuer.outcome.lock() {
                    o.answered = true;
                    o.last_error = None;
                }
                if let Some(m) = &self.metrics {
                    m.record(&label, true, issuer.state.load().keys.len());
                }
            }
            Err(e) => {
                let have = issuer.state.load().keys.len();
                tracing::warn!(issuer = %issuer.describe(), error = %e, cached_keys = have, "cannot refresh OIDC signing keys");
                if let Ok(mut o) = issuer.outcome.lock() {
                    o.last_error = Some(e.to_string());
                }
                if let Some(m) = &self.metrics {
                    m.record(&label, false, have);
                }
            }
        }
        issuer.progress.send_modify(|p| p.completed += 1);
        ok
    }

    /// The announced `iss` of `issuer`, unless it names another configured
    /// issuer (then only the configured URL counts, and we say why).
    fn vet_announced(&self, issuer: &Issuer, announced: Option<String>) -> Option<String> {
        let announced = announced?;
        if let Some(other) = self
            .issuers
            .iter()
            .find(|o| !std::ptr::eq(o.as_ref(), issuer) && o.id == announced)
        {
            tracing::warn!(issuer = %issuer.describe(), announced_issuer = %announced, other = %other.describe(), "OIDC discovery document announces another configured issuer: ignored, only tokens naming the configured URL are accepted under these keys");
            return None;
        }
        Some(announced)
    }

    async fn fetch(&self, issuer: &Issuer) -> Result<Fetched, FetchError> {
        let client = self.client.load_full();
        let discovery_url = issuer.discovery_url();
        let doc: Discovery = get_json(&client, &discovery_url).await?;
        let announced = doc
            .issuer
            .filter(|i| !i.trim().is_empty() && i.len() <= MAX_ISSUER_LEN)
            .map(|i| issuer_id(&i));
        let jwks_uri = doc
            .jwks_uri
            .and_then(|u| discovery_url.join(&u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| FetchError::NoJwksUri {
                url: crate::config::redact_url(&discovery_url),
            })?;
        let set: JwkSet = get_json(&client, &jwks_uri).await?;
        let origin: Arc<str> = Arc::from(issuer.describe().as_str());
        let mut fingerprint = Vec::new();
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
                fingerprint.push((k.kid.clone(), k.n, k.e));
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
        Ok(Fetched {
            keys,
            fingerprint,
            announced,
        })
    }

    /// Asks `issuers` (those a token with an unknown `kid` may come from) for
    /// an early refresh and waits, bounded, for those refreshes only: another
    /// issuer's slow fetch never delays this. The wait also ends as soon as
    /// `found()` says the key has turned up. Returns at once when every one of
    /// them refreshed recently.
    pub async fn refresh_for_unknown_kid(&self, issuers: &[Arc<Issuer>], found: impl Fn() -> bool) {
        let now = Instant::now();
        let mut waits = Vec::new();
        for issuer in issuers {
            let Ok(mut last) = issuer.last_kid_refresh.lock() else {
                continue;
            };
            let allowed =
                last.is_none_or(|t| now.duration_since(t) >= self.timing.kid_refresh_min_interval);
            if allowed {
                *last = Some(now);
                // Rate limited per issuer, so bounded: tells an administrator
                // that tokens name a key this issuer did not publish (yet).
                tracing::info!(issuer = %issuer.describe(), "token names an unknown signing key: refreshing this issuer's keys early");
                // The next fetch to start (after a possibly running one) sees
                // whatever the issuer publishes now.
                let target = issuer.progress.borrow().started + 1;
                issuer.wake.notify_one();
                let mut rx = issuer.progress.subscribe();
                waits.push(async move {
                    let _ = rx.wait_for(|p| p.completed >= target).await;
                });
            }
        }
        if waits.is_empty() {
            return;
        }
        let mut waits: futures_util::stream::FuturesUnordered<_> = waits.into_iter().collect();
        let _ = tokio::time::timeout(self.timing.kid_refresh_wait, async {
            while waits.next().await.is_some() {
                if found() {
                    break;
                }
            }
        })
        .await;
    }
}

impl crate::health::WarningSource for JwksCache {
    fn warnings(&self) -> Vec<String> {
        self.never_answered_warnings()
    }
}

fn same_url(a: &Url, b: &Url) -> bool {
    crate::config::same_issuer(a, b)
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
    fn issuer_ids_compare_urls_as_urls() {
        assert_eq!(
            issuer_id("https://GitLab.Example.com/"),
            "https://gitlab.example.com"
        );
        assert_eq!(
            issuer_id("https://u:p@gitlab.example.com:443/gitlab/#x"),
            "https://gitlab.example.com/gitlab"
        );
        assert_eq!(issuer_id(" gitlab-ai-gateway "), "gitlab-ai-gateway");
        assert_ne!(
            issuer_id("https://gitlab.example.com/a"),
            issuer_id("https://gitlab.example.com/b")
        );
        assert_ne!(
            issuer_id("https://gitlab.example.com"),
            issuer_id("http://gitlab.example.com")
        );
    }

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
