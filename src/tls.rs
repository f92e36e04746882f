//! Server-side TLS for the HTTP and gRPC listeners, with certificates that can
//! be swapped on SIGHUP without dropping connections.
//!
//! PEM is parsed with `rustls_pki_types::pem::PemObject` (rustls-pemfile is
//! archived). Only the ring crypto provider is used.

use std::sync::{Arc, Once};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::config::TlsFiles;

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Why a certificate or key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var}={path}: {reason}")]
    File {
        var: &'static str,
        path: String,
        reason: String,
    },
}

/// Loads a PEM chain and key into a rustls `CertifiedKey`.
pub fn load_certified_key(
    files: &TlsFiles,
    cert_var: &'static str,
    key_var: &'static str,
) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::File {
        var: cert_var,
        path: files.cert_file.display().to_string(),
        reason,
    };
    let key_err = |reason: String| TlsError::File {
        var: key_var,
        path: files.key_file.display().to_string(),
        reason,
    };
    let cert_pem = std::fs::read(&files.cert_file).map_err(|e| cert_err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err("contains no PEM certificate".into()));
    }
    let key_pem = std::fs::read(&files.key_file).map_err(|e| key_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| key_err("contains no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_err(format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .map_err(|e| key_err(format!("key does not match the certificate: {e}")))?;
    Ok(ck)
}

/// A certificate resolver whose certificate can be replaced at run time.
#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(key),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server config over a reloadable certificate. `alpn` lists the protocols
/// offered (h2 for gRPC; h2 and http/1.1 for the HTTP API).
pub fn server_config(
    resolver: Arc<ReloadableCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}
