//! RS256 verification for jsonwebtoken, on ring.
//!
//! Every authenticated request verifies a JWT. jsonwebtoken's pure-Rust
//! backend rebuilds the RSA key and verifies in about 230 µs here; ring does the
//! same check in a few tens of µs. jsonwebtoken still parses the token and
//! validates the claims (exp, nbf, aud); only the signature check moves to ring
//! through jsonwebtoken's documented `CryptoProvider` extension point. Only
//! RS256 exists in this provider: any other algorithm is refused outright.

use jsonwebtoken::{
    Algorithm, DecodingKey, DecodingKeyKind,
    crypto::{CryptoProvider, JwtVerifier, KeyUtils, rust_crypto::DEFAULT_PROVIDER as RC},
    errors::{Error, ErrorKind},
    signature::{self, Verifier},
};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

struct RingRs256 {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Verifier<Vec<u8>> for RingRs256 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, msg, sig)
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingRs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *alg != Algorithm::RS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => Ok(Box::new(RingRs256 {
            n: n.clone(),
            e: e.clone(),
        })),
        DecodingKeyKind::SecretOrDer(_) => Err(ErrorKind::InvalidKeyFormat.into()),
    }
}

static PROVIDER: CryptoProvider = CryptoProvider {
    // We never sign through jsonwebtoken (keys::SigningKey uses ring directly).
    signer_factory: RC.signer_factory,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: RC.key_utils.rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: RC.key_utils.rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: RC.key_utils.ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: RC.key_utils.ed_pub_components_from_private_key,
        compute_digest: RC.key_utils.compute_digest,
    },
};

/// Installs the provider for the process; idempotent.
pub fn install() {
    // Err means a provider is already installed: ours, from an earlier call.
    let _ = PROVIDER.install_default();
}
