//! Our own RSA keys: loading them, minting tokens with them, and their public halves.
//!
//! Each service (AI Gateway, Duo Workflow) has a signing key and an optional
//! validation key (the previous signing key during rotation). Keys arrive as
//! PEM text in an environment variable, as a file, or as a systemd credential
//! (`config::SecretSource`). Key material never leaves this module except as a
//! signature or a public JWK; nothing here logs it.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::Arc,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rsa::{
    RsaPrivateKey,
    pkcs1::DecodeRsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    traits::PublicKeyParts,
};
use serde::Serialize;

use crate::config::SecretSource;

/// Why a key could not be loaded or used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: cannot read key: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: not an RSA private key in PEM form (PKCS#8 or PKCS#1)")]
    Parse { origin: String },
    #[error("{origin}: RSA key too small ({bits} bits); use 2048 or more")]
    TooSmall { origin: String, bits: usize },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} already exists; `aigw keygen --force {path}` replaces it")]
    Exists { path: String },
}

/// A public key we accept signatures from.
#[derive(Clone)]
pub struct VerifyKey {
    /// RFC 7638 thumbprint, or the JWKS `kid`.
    pub kid: Option<String>,
    pub key: Arc<DecodingKey>,
    /// Where the key came from, for logs ("local signing key", an issuer URL).
    pub origin: Arc<str>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("origin", &self.origin)
            .finish()
    }
}

/// An RSA private key able to mint RS256 tokens.
///
/// Signing uses ring with the key parsed once (about 0.6 ms per token here);
/// jsonwebtoken's pure-Rust backend re-parses the key and signs in about
/// 2.2 ms. jsonwebtoken still verifies every token.
pub struct SigningKey {
    keypair: RsaKeyPair,
    kid: String,
    public: VerifyKey,
    origin: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads and parses a key from its configured source.
    pub fn load(source: &SecretSource) -> Result<Self, KeyError> {
        let origin = source.describe();
        let pem = match source {
            SecretSource::Inline { text, .. } => normalise_pem(text),
            SecretSource::File { path, .. } | SecretSource::Credential { path, .. } => {
                let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
                    origin: origin.clone(),
                    source,
                })?;
                normalise_pem(&text)
            }
            SecretSource::DevKey { path } => normalise_pem(&dev_key_pem(path)?),
        };
        let key = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|_| KeyError::Parse {
                origin: origin.clone(),
            })?;
        Self::from_private(&key, origin)
    }

    fn from_private(key: &RsaPrivateKey, origin: String) -> Result<Self, KeyError> {
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(KeyError::TooSmall { origin, bits });
        }
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Parse {
            origin: origin.clone(),
        })?;
        let keypair = RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|_| KeyError::Parse {
            origin: origin.clone(),
        })?;
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        let kid = rfc7638_thumbprint(&n, &e);
        let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|_| KeyError::Parse {
            origin: origin.clone(),
        })?;
        Ok(Self {
            keypair,
            kid: kid.clone(),
            public: VerifyKey {
                kid: Some(kid),
                key: Arc::new(decoding),
                origin: Arc::from(origin.as_str()),
            },
            origin,
        })
    }

    /// Signs `claims` as an RS256 JWT in JWS compact form (RFC 7515):
    /// header `{"alg":"RS256","typ":"JWT","kid":<our thumbprint>}`.
    pub fn mint<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let mut signature = vec![0; self.keypair.public().modulus_len()];
        self.keypair
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| KeyError::Sign("RSA signing failed".to_string()))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// The public half, to validate tokens we minted.
    pub fn verify_key(&self) -> VerifyKey {
        self.public.clone()
    }

    /// Where the key came from (never the key itself).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Env files often carry PEM on one line with literal `\n`; accept both forms.
fn normalise_pem(text: &str) -> String {
    let t = text.trim().trim_matches('"').trim();
    if !t.contains('\n') && t.contains("\\n") {
        t.replace("\\n", "\n")
    } else {
        t.to_string()
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key.
pub fn rfc7638_thumbprint(n_b64: &str, e_b64: &str) -> String {
    let canonical = format!(r#"{{"e":"{e_b64}","kty":"RSA","n":"{n_b64}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn generate_rsa() -> Result<RsaPrivateKey, KeyError> {
    let mut rng = rand::rngs::OsRng;
    RsaPrivateKey::new(&mut rng, 2048).map_err(|e| KeyError::Generate(e.to_string()))
}

/// A new RSA-2048 private key as PKCS#8 PEM (`aigw keygen -`).
pub fn new_key_pem() -> Result<rsa::pkcs8::der::zeroize::Zeroizing<String>, KeyError> {
    generate_rsa()?
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))
}

/// The development key's PEM: read from `path`, or generated and written
/// there (directory 0700, file 0600) by the first `--dev` start.
fn dev_key_pem(path: &Path) -> Result<String, KeyError> {
    match fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyError::Read {
                origin: SecretSource::DevKey { path: path.into() }.describe(),
                source,
            });
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyError::Write {
                path: dir.display().to_string(),
                source,
            })?;
    }
    match write_new_key(path, false) {
        // Another `--dev` process won the race: use its key.
        Ok(()) | Err(KeyError::Exists { .. }) => {}
        Err(e) => return Err(e),
    }
    fs::read_to_string(path).map_err(|source| KeyError::Read {
        origin: SecretSource::DevKey { path: path.into() }.describe(),
        source,
    })
}

/// `aigw keygen`: writes a new RSA-2048 PKCS#8 PEM key, mode 0600.
pub fn write_new_key(path: &Path, overwrite: bool) -> Result<(), KeyError> {
    let pem = new_key_pem()?;
    let write_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.display().to_string(),
            }
        } else {
            KeyError::Write {
                path: path.display().to_string(),
                source,
            }
        }
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    // `mode` applies only on creation; make an overwritten file private too.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(write_err)?;
    Ok(())
}

/// The keys of one service: one to sign with, and every public key to accept.
#[derive(Default)]
pub struct LocalKeys {
    pub signing: Option<SigningKey>,
    pub verify: Vec<VerifyKey>,
}

impl LocalKeys {
    /// Loads the signing and validation keys. A configured key that is broken is
    /// an error (startup refuses); an absent one is not.
    pub fn load(
        signing: Option<&SecretSource>,
        validation: Option<&SecretSource>,
    ) -> Result<Self, KeyError> {
        let signing = signing.map(SigningKey::load).transpose()?;
        let validation = validation.map(SigningKey::load).transpose()?;
        let verify = signing
            .iter()
            .chain(validation.iter())
            .map(SigningKey::verify_key)
            .collect();
        Ok(Self { signing, verify })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_the_rfc_example() {
        // RFC 7638 section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rfc7638_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn minted_tokens_verify_with_the_public_half() {
        let key = SigningKey::from_private(&generate_rsa().unwrap(), "test".into()).unwrap();
        let token = key
            .mint(&serde_json::json!({"aud": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&["x"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key.verify_key().key, &v).unwrap();
        assert_eq!(data.claims["aud"], "x");
    }

    #[test]
    fn escaped_newlines_are_accepted() {
        assert_eq!(normalise_pem("\"a\\nb\""), "a\nb");
        assert_eq!(normalise_pem("a\nb"), "a\nb");
    }

    #[test]
    fn garbage_key_is_a_clear_error_without_the_content() {
        let source = SecretSource::Inline {
            var: "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY",
            text: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----".into(),
        };
        let e = SigningKey::load(&source).unwrap_err().to_string();
        assert!(
            e.contains("DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY"),
            "{e}"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }
}
/// Micro-benchmarks for BENCHMARKS.md (ignored by default; they print, they do not assert):
/// `cargo test --release --lib keys::micro_bench -- --ignored --nocapture`.
#[cfg(test)]
mod micro_bench {
    use super::*;

    #[test]
    #[ignore]
    fn sign_and_verify() {
        crate::jwt_crypto::install();
        let key = SigningKey::from_private(&generate_rsa().unwrap(), "test".into()).unwrap();
        let claims =
            serde_json::json!({"aud": "x", "exp": 4_000_000_000u64, "scopes": ["duo_chat"]});
        let n = 200;
        let t = std::time::Instant::now();
        for _ in 0..n {
            key.mint(&claims).unwrap();
        }
        println!("mint (ring RS256): {:?} per token", t.elapsed() / n);
        let token = key.mint(&claims).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&["x"]);
        let vk = key.verify_key();
        let t = std::time::Instant::now();
        for _ in 0..n {
            jsonwebtoken::decode::<serde_json::Value>(&token, &vk.key, &v).unwrap();
        }
        println!(
            "verify (jsonwebtoken + ring RS256): {:?} per token",
            t.elapsed() / n
        );
    }
}
