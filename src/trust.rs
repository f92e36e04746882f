//! The one trust store every outbound TLS client uses (OIDC keys and model servers).
//!
//! Precedence follows what administrators already set for the Python gateway:
//! `AIGW_CA_BUNDLE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, then
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`, then the system bundle, then the compiled-in
//! Mozilla roots. The selected source *replaces* everything below it. A source
//! the administrator named explicitly must be usable, or startup fails naming
//! the variable and the path (before `READY=1`). Verification is never turned
//! off, whatever the variables say.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::config::CaSelection;

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why a CA bundle could not be used. Always names the variable and the path.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{var}={path}: cannot read CA bundle: {source}")]
    Unreadable {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{var}={path}: {reason}")]
    Unusable {
        var: String,
        path: PathBuf,
        reason: String,
    },
}

/// A resolved set of trust anchors and where they came from.
#[derive(Clone, Debug)]
pub struct TrustStore {
    roots: Arc<RootCertStore>,
    certs: Arc<Vec<CertificateDer<'static>>>,
    source: String,
}

impl TrustStore {
    /// Resolves the selection into trust anchors, failing loudly on explicit sources.
    pub fn load(selection: &CaSelection) -> Result<Self, TrustError> {
        match selection {
            CaSelection::Bundle { var, path } => {
                let certs = read_path(var, path)?;
                Self::from_certs(certs, format!("{var}={}", path.display()), var, path)
            }
            CaSelection::OpenSsl { file, dirs } => {
                let mut certs = Vec::new();
                if let Some(file) = file {
                    certs.extend(read_path("SSL_CERT_FILE", file)?);
                }
                // Like OpenSSL, a missing entry in the directory list is skipped;
                // only an empty union is an error.
                let mut missing = Vec::new();
                for dir in dirs {
                    if dir.exists() {
                        certs.extend(read_path("SSL_CERT_DIR", dir)?);
                    } else {
                        missing.push(dir.display().to_string());
                    }
                }
                if !missing.is_empty() {
                    tracing::warn!(missing = %missing.join(":"), "SSL_CERT_DIR entries do not exist; skipped");
                }
                let (var, path) = match file {
                    Some(f) => ("SSL_CERT_FILE", f.clone()),
                    None => ("SSL_CERT_DIR", PathBuf::from(join_paths(dirs))),
                };
                let mut source = Vec::new();
                if let Some(f) = file {
                    source.push(format!("SSL_CERT_FILE={}", f.display()));
                }
                if !dirs.is_empty() {
                    source.push(format!("SSL_CERT_DIR={}", join_paths(dirs)));
                }
                Self::from_certs(certs, source.join(" "), var, &path)
            }
            CaSelection::System => Ok(Self::system()),
        }
    }

    /// The OS bundle if one exists and parses, else the compiled-in roots.
    fn system() -> Self {
        for candidate in SYSTEM_BUNDLES {
            let path = Path::new(candidate);
            let Ok(bytes) = fs::read(path) else { continue };
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
                .filter_map(Result::ok)
                .collect();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added > 0 {
                return Self {
                    roots: Arc::new(roots),
                    certs: Arc::new(certs),
                    source: format!("system bundle {candidate}"),
                };
            }
        }
        Self::compiled_in()
    }

    /// Mozilla's roots, compiled into the binary (works in a FROM-scratch image).
    pub fn compiled_in() -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let certs = webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
        Self {
            roots: Arc::new(roots),
            certs: Arc::new(certs),
            source: "compiled-in Mozilla roots".to_string(),
        }
    }

    fn from_certs(
        certs: Vec<CertificateDer<'static>>,
        source: String,
        var: &str,
        path: &Path,
    ) -> Result<Self, TrustError> {
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(TrustError::Unusable {
                var: var.to_string(),
                path: path.to_path_buf(),
                reason: format!(
                    "no usable CA certificates ({} found, {ignored} rejected)",
                    certs.len()
                ),
            });
        }
        if ignored > 0 {
            tracing::warn!(source = %source, ignored, "some CA certificates could not be used as trust anchors");
        }
        Ok(Self {
            roots: Arc::new(roots),
            certs: Arc::new(certs),
            source,
        })
    }

    /// Anchors for rustls client configs.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The certificates themselves, for clients that want DER (reqwest).
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Number of trust anchors.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// True when there is no anchor (never the case for a loaded store).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Where the anchors came from, for logs and `check-config`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a PEM file, or every regular file of a directory (no hash names needed).
fn read_path(var: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let unreadable = |source| TrustError::Unreadable {
        var: var.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if meta.is_dir() {
        let mut seen = HashSet::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .map_err(unreadable)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        let mut certs = Vec::new();
        for entry in entries {
            let Ok(m) = fs::metadata(&entry) else {
                continue;
            };
            if !m.is_file() || !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            let Ok(bytes) = fs::read(&entry) else {
                continue;
            };
            // Directories hold all kinds of files (hash links, READMEs): take
            // what parses, as OpenSSL and rustls-native-certs do.
            certs.extend(CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok));
        }
        let mut dedup = HashSet::new();
        certs.retain(|c| dedup.insert(c.as_ref().to_vec()));
        if certs.is_empty() {
            return Err(TrustError::Unusable {
                var: var.to_string(),
                path: path.to_path_buf(),
                reason: "directory contains no PEM certificates".to_string(),
            });
        }
        return Ok(certs);
    }
    if !meta.is_file() {
        return Err(TrustError::Unusable {
            var: var.to_string(),
            path: path.to_path_buf(),
            reason: "not a regular file or directory".to_string(),
        });
    }
    let bytes = fs::read(path).map_err(unreadable)?;
    // An explicitly named bundle must be clean: a malformed block is an error,
    // not something to skip silently in a security setting.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TrustError::Unusable {
            var: var.to_string(),
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TrustError::Unusable {
            var: var.to_string(),
            path: path.to_path_buf(),
            reason: "contains no PEM certificates".to_string(),
        });
    }
    Ok(certs)
}

/// A rustls client config over this trust store (ring provider, TLS 1.2+).
pub fn client_config(store: &TrustStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store.roots())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(path: &Path) -> CaSelection {
        CaSelection::Bundle {
            var: "REQUESTS_CA_BUNDLE",
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn missing_empty_and_garbage_bundles_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = TrustStore::load(&sel(&missing)).unwrap_err().to_string();
        assert!(
            e.contains("REQUESTS_CA_BUNDLE") && e.contains("nope.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let e = TrustStore::load(&sel(&empty)).unwrap_err().to_string();
        assert!(e.contains("no PEM certificates"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TrustStore::load(&sel(&garbage)).unwrap_err().to_string();
        assert!(e.contains("garbage.pem"), "{e}");
    }

    #[test]
    fn compiled_in_roots_are_never_empty() {
        assert!(!TrustStore::compiled_in().is_empty());
    }
}
