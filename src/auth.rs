//! Who is calling: the Cloud Connector token check shared by HTTP and gRPC.
//!
//! One [`Authenticator`] per service (audience `gitlab-ai-gateway` for HTTP,
//! `gitlab-duo-workflow-service` for gRPC). It reads only request headers
//! (HTTP/2 gRPC metadata are headers too), verifies an RS256 JWT, binds claims
//! to headers, and yields a [`Caller`]. Error texts are the exact strings
//! GitLab clients know. This module never logs a token and never performs
//! network I/O on the request path, except waiting (bounded) for an early key
//! refresh of the issuer a token with an unknown kid claims.
//!
//! Key sources are kept apart by the token's `iss`: a token naming our own
//! service is checked against our keys only; any other against the keys of the
//! issuers (GitLab instances, CustomersDot) that accept that `iss` only. So a
//! token is accepted only under the issuer whose key verified it, and a key of
//! one GitLab instance never validates a token claiming another.

use std::{collections::HashSet, sync::Arc};

use arc_swap::ArcSwap;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    jwks::{Issuer, IssuerKeys, JwksCache, issuer_id},
    keys::VerifyKey,
    token_cache::{self, KeySets, VerifiedBy, VerifiedTokens},
};

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

/// An authentication failure. `Display` is the exact client-facing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("No authorization header presented")]
    NoHeader,
    #[error("Invalid authorization header")]
    InvalidHeader,
    #[error("Invalid authentication token type - only OIDC is supported")]
    InvalidType,
    #[error("Forbidden by auth provider")]
    Forbidden,
    #[error("Header mismatch '{0}'")]
    HeaderMismatch(&'static str),
}

/// `aud` may be a string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims we read from a Cloud Connector token; everything else is `extra`.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub gitlab_realm: Option<String>,
    #[serde(default)]
    pub gitlab_instance_id: Option<String>,
    #[serde(default)]
    pub gitlab_instance_uid: Option<Value>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub duo_seat_count: Option<Value>,
    #[serde(default)]
    pub exp: Option<f64>,
    #[serde(default)]
    pub nbf: Option<f64>,
    /// Everything else (`tool_access_policies`, `gitlab_root_namespace_id`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Registered claims that are re-minted, not carried over, in our tokens.
    pub const REGISTERED: &'static [&'static str] = &["exp", "nbf", "iat", "jti"];
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Set in the troubleshooting bypass modes: every permission, no claims.
    pub debug: bool,
    pub claims: Option<Arc<Claims>>,
    /// `X-Gitlab-Global-User-Id` as sent.
    pub global_user_id: Option<String>,
}

impl Caller {
    /// True when the caller holds `unit_primitive`, and its token was not issued by
    /// `disallowed_issuer` (our own tokens may not mint further tokens).
    pub fn can(&self, unit_primitive: &str, disallowed_issuer: Option<&str>) -> bool {
        if self.debug {
            return true;
        }
        let Some(claims) = &self.claims else {
            return false;
        };
        if disallowed_issuer.is_some() && claims.iss.as_deref() == disallowed_issuer {
            return false;
        }
        claims.scopes.iter().any(|s| s == unit_primitive)
    }

    /// True when the token was minted by `service_name` (that is, by us).
    pub fn issued_by(&self, service_name: &str) -> bool {
        self.claims
            .as_ref()
            .is_some_and(|c| c.iss.as_deref() == Some(service_name))
    }
}

/// Settings of one authenticator.
pub struct AuthSettings {
    pub service_name: String,
    pub bypass: bool,
    pub bypass_with_header: bool,
    pub bypass_signature: bool,
}

/// Verifies Cloud Connector tokens for one service.
pub struct Authenticator {
    settings: AuthSettings,
    local: ArcSwap<Vec<VerifyKey>>,
    issuers: Vec<Arc<Issuer>>,
    jwks: Arc<JwksCache>,
    validation: Validation,
    verified: VerifiedTokens,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Authenticator {
    pub fn new(
        settings: AuthSettings,
        local: Vec<VerifyKey>,
        issuers: Vec<Arc<Issuer>>,
        jwks: Arc<JwksCache>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[settings.service_name.as_str()]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Stricter than upstream: a token without an audience is refused.
        validation.required_spec_claims = HashSet::from(["exp".to_string(), "aud".to_string()]);
        Self {
            settings,
            local: ArcSwap::from_pointee(local),
            issuers,
            jwks,
            validation,
            verified: VerifiedTokens::default(),
        }
    }

    pub fn service_name(&self) -> &str {
        &self.settings.service_name
    }

    /// True when authentication is switched off entirely (troubleshooting).
    pub fn bypassed(&self) -> bool {
        self.settings.bypass
    }

    /// Replaces our own public keys (SIGHUP reload).
    pub fn set_local_keys(&self, keys: Vec<VerifyKey>) {
        self.local.store(Arc::new(keys));
    }

    /// Number of keys currently able to verify a token (ours + issuers').
    pub fn key_count(&self) -> usize {
        self.local.load().len() + self.issuers.iter().map(|i| i.keys().len()).sum::<usize>()
    }

    /// Authenticates a request from its headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let global_user_id = header(headers, "x-gitlab-global-user-id").map(str::to_string);
        let debug = Caller {
            debug: true,
            claims: None,
            global_user_id: global_user_id.clone(),
        };
        if self.settings.bypass {
            return Ok(debug);
        }
        if self.settings.bypass_with_header && header(headers, "bypass-auth") == Some("true") {
            return Ok(debug);
        }
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::NoHeader)?;
        let value = value.to_str().map_err(|_| AuthError::InvalidHeader)?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::InvalidHeader);
        }
        if header(headers, "x-gitlab-authentication-type") != Some("oidc") {
            return Err(AuthError::InvalidType);
        }
        let claims = self.verify(token.trim()).await?;
        bind_headers(&claims, headers, &self.settings.service_name)?;
        Ok(Caller {
            debug: false,
            claims: Some(claims),
            global_user_id,
        })
    }

    /// The key set of every source now: ours (index 0), then each issuer's.
    fn key_sets(&self) -> KeySets {
        let mut sets = Vec::with_capacity(1 + self.issuers.len());
        sets.push(self.local.load_full());
        sets.extend(self.issuers.iter().map(|i| i.keys()));
        sets
    }

    async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Forbidden);
        }
        if self.settings.bypass_signature {
            return self.verify_unsigned(token).map(Arc::new);
        }
        let key = token_cache::digest(token);
        let now = jsonwebtoken::get_current_timestamp() as f64;
        let leeway = LEEWAY_SECS as f64;
        if let Some(claims) = self.verified.get(&key, &self.key_sets(), now, leeway) {
            return Ok(claims);
        }
        let (claims, by) = self.verify_uncached(token).await?;
        let claims = Arc::new(claims);
        // Remembered against the set that verified it: if a refresh of that
        // source landed meanwhile, the entry simply misses next time.
        self.verified
            .insert(key, claims.clone(), by, &self.key_sets(), now, leeway);
        Ok(claims)
    }

    /// `AIGW_AUTH__BYPASS_JWT_SIGNATURE`: no key involved, nothing remembered.
    fn verify_unsigned(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Forbidden)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Forbidden);
        }
        let claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
            .map_err(|_| AuthError::Forbidden)?
            .claims;
        check_unsigned_claims(claims, &self.settings.service_name)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Claims, VerifiedBy), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Forbidden)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Forbidden);
        }
        let kid = header.kid.as_deref();
        let iss = claimed_issuer(token)?;
        if iss == self.settings.service_name {
            // Ours: our keys only, never an issuer's.
            let keys = self.local.load_full();
            return match self.try_keys(token, kid, &keys) {
                Tried::Valid(claims) => Ok((*claims, VerifiedBy { source: 0, keys })),
                Tried::Invalid | Tried::NoKey => Err(AuthError::Forbidden),
            };
        }
        let iss = issuer_id(&iss);
        let mut accepting = self.accepting(&iss);
        if !accepting.iter().any(|(_, s)| has_candidate(&s.keys, kid)) {
            // Maybe the issuer rotated, or has not answered yet: ask it (only
            // it) for an early refresh. An `iss` URL no issuer accepts may be
            // one whose announced identity changed: ask them all, and stop
            // waiting as soon as one has a key for this token. (Issuers are
            // URLs: another service's name, say, is nobody's.)
            let ask: Vec<Arc<Issuer>> = if accepting.is_empty() {
                let url =
                    url::Url::parse(&iss).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if url {
                    self.issuers.clone()
                } else {
                    Vec::new()
                }
            } else {
                accepting
                    .iter()
                    .map(|(i, _)| self.issuers[*i].clone())
                    .collect()
            };
            let found = || {
                self.accepting(&iss)
                    .iter()
                    .any(|(_, s)| has_candidate(&s.keys, kid))
            };
            self.jwks.refresh_for_unknown_kid(&ask, found).await;
            accepting = self.accepting(&iss);
        }
        for (i, snapshot) in &accepting {
            match self.try_keys(token, kid, &snapshot.keys) {
                Tried::Valid(claims) => {
                    let by = VerifiedBy {
                        source: i + 1,
                        keys: snapshot.keys.clone(),
                    };
                    return Ok((*claims, by));
                }
                Tried::NoKey => continue,
                Tried::Invalid => return Err(AuthError::Forbidden),
            }
        }
        Err(AuthError::Forbidden)
    }

    /// The issuers whose keys may vouch for a token claiming `iss` (an
    /// [`issuer_id`]), with their keys as they are now.
    fn accepting(&self, iss: &str) -> Vec<(usize, Arc<IssuerKeys>)> {
        self.issuers
            .iter()
            .enumerate()
            .map(|(i, issuer)| (i, issuer, issuer.snapshot()))
            .filter(|(_, issuer, snapshot)| issuer.accepts(snapshot, iss))
            .map(|(i, _, snapshot)| (i, snapshot))
            .collect()
    }

    /// Checks `token` against one source's keys: those with its kid, else
    /// all of them (keys published without a kid, or under another name).
    fn try_keys(&self, token: &str, kid: Option<&str>, keys: &[VerifyKey]) -> Tried {
        let named: Vec<&VerifyKey> = match kid {
            Some(kid) => keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates = if named.is_empty() {
            keys.iter().collect()
        } else {
            named
        };
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation) {
                Ok(data) => return Tried::Valid(Box::new(data.claims)),
                Err(e) if is_signature_mismatch(e.kind()) => continue,
                // The signature matched but a claim is wrong (expired, audience...).
                Err(_) => return Tried::Invalid,
            }
        }
        Tried::NoKey
    }
}

/// What checking a token against one key set came to.
enum Tried {
    Valid(Box<Claims>),
    /// Signed by one of the keys, but a claim is wrong.
    Invalid,
    /// None of the keys signed it.
    NoKey,
}

/// True when `keys` has a key for a token with this kid (any key, if none).
fn has_candidate(keys: &[VerifyKey], kid: Option<&str>) -> bool {
    match kid {
        None => !keys.is_empty(),
        Some(kid) => keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
    }
}

/// The `iss` a token claims, read before its signature is checked, to choose
/// the only keys that may vouch for it. A token without one, with a non-string
/// one, or with two (`{"iss":..,"iss":..}`: this struct refuses duplicates) is
/// refused: its signature could not decide which issuer it belongs to.
fn claimed_issuer(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Issued {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode::<Issued>(token)
        .map(|data| data.claims.iss)
        .map_err(|_| AuthError::Forbidden)
}

/// `AIGW_AUTH__BYPASS_JWT_SIGNATURE`: the time and audience checks still apply.
fn check_unsigned_claims(claims: Claims, service_name: &str) -> Result<Claims, AuthError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let leeway = LEEWAY_SECS as f64;
    let fresh = claims.exp.is_some_and(|exp| exp + leeway > now)
        && claims.nbf.is_none_or(|nbf| nbf - leeway <= now);
    let audience_ok = match &claims.aud {
        Some(Audience::One(a)) => a == service_name,
        Some(Audience::Many(list)) => list.iter().any(|a| a == service_name),
        None => false,
    };
    if fresh && audience_ok {
        Ok(claims)
    } else {
        Err(AuthError::Forbidden)
    }
}

fn is_signature_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat
    )
}

/// The claim/header consistency rules, first failure wins.
fn bind_headers(claims: &Claims, headers: &HeaderMap, service_name: &str) -> Result<(), AuthError> {
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(realm) = nonempty(&claims.gitlab_realm)
        && header(headers, "x-gitlab-realm") != Some(realm.as_str())
    {
        return Err(AuthError::HeaderMismatch("X-Gitlab-Realm"));
    }
    if let Some(id) = nonempty(&claims.gitlab_instance_id)
        && header(headers, "x-gitlab-instance-id") != Some(id.as_str())
    {
        return Err(AuthError::HeaderMismatch("X-Gitlab-Instance-Id"));
    }
    if let Some(sub) = nonempty(&claims.sub) {
        let (name, canonical) = if claims.iss.as_deref() == Some(service_name) {
            ("x-gitlab-global-user-id", "X-Gitlab-Global-User-Id")
        } else {
            ("x-gitlab-instance-id", "X-Gitlab-Instance-Id")
        };
        if header(headers, name) != Some(sub.as_str()) {
            return Err(AuthError::HeaderMismatch(canonical));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn binding_checks_realm_then_instance_then_subject() {
        let c = claims(serde_json::json!({
            "iss": "https://gitlab.example.com", "sub": "inst-1",
            "gitlab_realm": "self-managed", "gitlab_instance_id": "inst-1"
        }));
        assert_eq!(
            bind_headers(&c, &headers(&[]), "gitlab-ai-gateway"),
            Err(AuthError::HeaderMismatch("X-Gitlab-Realm"))
        );
        assert_eq!(
            bind_headers(
                &c,
                &headers(&[("x-gitlab-realm", "self-managed")]),
                "gitlab-ai-gateway"
            ),
            Err(AuthError::HeaderMismatch("X-Gitlab-Instance-Id"))
        );
        let ok = headers(&[
            ("x-gitlab-realm", "self-managed"),
            ("x-gitlab-instance-id", "inst-1"),
        ]);
        assert_eq!(bind_headers(&c, &ok, "gitlab-ai-gateway"), Ok(()));
    }

    #[test]
    fn own_tokens_bind_subject_to_the_global_user_id() {
        let c = claims(serde_json::json!({"iss": "gitlab-ai-gateway", "sub": "user-1"}));
        assert_eq!(
            bind_headers(
                &c,
                &headers(&[("x-gitlab-instance-id", "user-1")]),
                "gitlab-ai-gateway"
            ),
            Err(AuthError::HeaderMismatch("X-Gitlab-Global-User-Id"))
        );
        assert_eq!(
            bind_headers(
                &c,
                &headers(&[("x-gitlab-global-user-id", "user-1")]),
                "gitlab-ai-gateway"
            ),
            Ok(())
        );
    }

    fn unsigned(payload: &str) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn the_claimed_issuer_must_be_one_string() {
        assert_eq!(
            claimed_issuer(&unsigned(r#"{"iss":"https://a.example.com","sub":"x"}"#)),
            Ok("https://a.example.com".to_string())
        );
        for payload in [
            r#"{"sub":"x"}"#,
            r#"{"iss":null}"#,
            r#"{"iss":["https://a.example.com"]}"#,
            r#"{"iss":"https://a.example.com","iss":"https://b.example.com"}"#,
        ] {
            assert_eq!(
                claimed_issuer(&unsigned(payload)),
                Err(AuthError::Forbidden),
                "{payload}"
            );
        }
    }

    #[test]
    fn scopes_and_disallowed_issuers() {
        let caller = Caller {
            debug: false,
            claims: Some(Arc::new(claims(
                serde_json::json!({"iss": "gitlab-ai-gateway", "scopes": ["complete_code"]}),
            ))),
            global_user_id: None,
        };
        assert!(caller.can("complete_code", None));
        assert!(!caller.can("complete_code", Some("gitlab-ai-gateway")));
        assert!(!caller.can("duo_chat", None));
    }
}
