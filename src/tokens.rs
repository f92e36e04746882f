//! Tokens we mint: what goes into them, and the key that signs them.
//!
//! The AI Gateway mints user access tokens (`POST /v1/code/user_access_token`)
//! so IDEs can call the gateway directly; the Duo Workflow service mints tokens
//! with `GenerateToken`. Both are RS256 JWTs valid for one hour, issued by and
//! for the minting service. Which scopes a caller may pass on is decided here.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::{
    auth::Caller,
    keys::{KeyError, SigningKey},
};

/// Lifetime of every token we mint.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// Unit primitives a user access token may carry.
pub const USER_ACCESS_SCOPES: &[&str] = &["complete_code", "ai_gateway_model_provider_proxy"];

/// Unit primitives served by the Duo Workflow service; GenerateToken passes on
/// the caller's scopes that are among these.
pub const WORKFLOW_SCOPES: &[&str] = &[
    "duo_agent_platform",
    "duo_workflow_execute_workflow",
    "duo_chat",
];

/// Caller claims carried over into GenerateToken output when present.
const WORKFLOW_CARRIED_CLAIMS: &[&str] = &[
    "skip_usage_cutoff",
    "tool_access_policies",
    "gitlab_root_namespace_id",
];

/// A minted token and its expiry (Unix seconds).
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub expires_at: u64,
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no signing key is configured")]
    NoKey,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The signing side of one service; the key is swappable on SIGHUP.
pub struct TokenAuthority {
    service_name: String,
    key: ArcSwapOption<SigningKey>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl TokenAuthority {
    pub fn new(service_name: impl Into<String>, key: Option<SigningKey>) -> Self {
        Self {
            service_name: service_name.into(),
            key: ArcSwapOption::new(key.map(Arc::new)),
        }
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    pub fn has_key(&self) -> bool {
        self.key.load().is_some()
    }

    pub fn set_key(&self, key: Option<SigningKey>) {
        self.key.store(key.map(Arc::new));
    }

    /// The GitLab instance a caller's token speaks for: its
    /// `gitlab_instance_id`, else, for a GitLab-issued token (self-issued ones
    /// carry no such claim), its subject: the instance UUID, already bound to
    /// `X-Gitlab-Instance-Id`. Minted into our tokens, it binds them to that
    /// header, so a token minted for one instance is refused with another's.
    fn asking_instance(&self, c: &crate::auth::Claims) -> Option<String> {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        nonempty(&c.gitlab_instance_id).or_else(|| {
            (c.iss.as_deref() != Some(self.service_name.as_str()))
                .then(|| nonempty(&c.sub))
                .flatten()
        })
    }

    /// Adds iss/aud/iat/nbf/exp/jti to `claims` and signs them.
    fn mint(&self, mut claims: Map<String, Value>) -> Result<Minted, MintError> {
        let guard = self.key.load();
        let key = guard.as_ref().ok_or(MintError::NoKey)?;
        let iat = now();
        let exp = iat + TOKEN_LIFETIME_SECS;
        claims.insert("iss".into(), json!(self.service_name));
        claims.insert("aud".into(), json!(self.service_name));
        claims.insert("iat".into(), json!(iat));
        claims.insert("nbf".into(), json!(iat));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        let token = key.mint(&claims)?;
        Ok(Minted {
            token,
            expires_at: exp,
        })
    }

    /// The AI Gateway's user access token for IDE direct connections.
    /// `scopes` must already be filtered by the caller's permissions.
    pub fn mint_user_access(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        scopes: &[&str],
    ) -> Result<Minted, MintError> {
        let mut claims = Map::new();
        let caller_claims = caller.claims.as_ref();
        // Other custom claims of the caller travel along (e.g. skip_usage_cutoff).
        if let Some(c) = caller_claims {
            for (k, v) in &c.extra {
                if !crate::auth::Claims::REGISTERED.contains(&k.as_str()) {
                    claims.insert(k.clone(), v.clone());
                }
            }
        }
        claims.insert("sub".into(), json!(caller.global_user_id));
        let realm = caller_claims.and_then(|c| c.gitlab_realm.clone());
        claims.insert("gitlab_realm".into(), json!(realm));
        claims.insert(
            "gitlab_instance_id".into(),
            json!(caller_claims.and_then(|c| self.asking_instance(c))),
        );
        claims.insert("scopes".into(), json!(scopes));
        if realm.as_deref() == Some("saas") {
            claims.insert(
                "gitlab_project_id".into(),
                json!(header(headers, "x-gitlab-project-id")),
            );
            claims.insert(
                "gitlab_namespace_id".into(),
                json!(header(headers, "x-gitlab-namespace-id")),
            );
            let root = caller_claims
                .and_then(|c| c.extra.get("gitlab_root_namespace_id").cloned())
                .or_else(|| {
                    header(headers, "x-gitlab-root-namespace-id")
                        .and_then(|v| v.parse::<i64>().ok())
                        .map(Value::from)
                });
            claims.insert(
                "gitlab_root_namespace_id".into(),
                root.unwrap_or(Value::Null),
            );
        } else if let Some(uid) = caller_claims.and_then(|c| c.gitlab_instance_uid.clone()) {
            claims.insert("gitlab_instance_uid".into(), uid);
        }
        self.mint(claims)
    }

    /// `aigw dev-token`: a token for trying the gateway by hand in `--dev`
    /// mode, carrying `scopes` and no user, realm or instance (so no
    /// `X-Gitlab-*` header needs to match). Only ever signed with the
    /// development key: the command refuses when a real key is configured.
    pub fn mint_dev(&self, scopes: &[String]) -> Result<Minted, MintError> {
        let mut claims = Map::new();
        claims.insert("scopes".into(), json!(scopes));
        claims.insert("aigw_dev_token".into(), json!(true));
        self.mint(claims)
    }

    /// The Duo Workflow service's token (`GenerateToken`).
    pub fn mint_workflow(&self, caller: &Caller, headers: &HeaderMap) -> Result<Minted, MintError> {
        let scopes: Vec<&str> = if caller.debug {
            WORKFLOW_SCOPES.to_vec()
        } else {
            WORKFLOW_SCOPES
                .iter()
                .copied()
                .filter(|s| caller.can(s, None))
                .collect()
        };
        let mut claims = Map::new();
        claims.insert(
            "sub".into(),
            json!(header(headers, "x-gitlab-global-user-id")),
        );
        claims.insert(
            "gitlab_realm".into(),
            json!(header(headers, "x-gitlab-realm")),
        );
        claims.insert(
            "gitlab_instance_id".into(),
            json!(header(headers, "x-gitlab-instance-id")),
        );
        claims.insert("scopes".into(), json!(scopes));
        let caller_claims = caller.claims.as_ref();
        if let Some(seats) = caller_claims
            .and_then(|c| c.duo_seat_count.clone())
            .filter(|v| !v.is_null() && v != &json!(""))
        {
            claims.insert("duo_seat_count".into(), seats);
        }
        claims.insert(
            "gitlab_instance_uid".into(),
            caller_claims
                .and_then(|c| c.gitlab_instance_uid.clone())
                .unwrap_or(Value::Null),
        );
        if let Some(c) = caller_claims {
            for name in WORKFLOW_CARRIED_CLAIMS {
                if let Some(v) = c.extra.get(*name) {
                    claims.insert((*name).to_string(), v.clone());
                }
            }
        }
        self.mint(claims)
    }
}
