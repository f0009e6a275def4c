//! TLS for the HTTP listener: self-signed certificate bootstrap, certificate/key loading and a
//! hardened rustls server configuration (ring provider, TLS 1.2 + 1.3, production-guide suites).

mod self_signed;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ParsedCertificate, ServerConfig};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, version};
use sha2::{Digest, Sha256};

pub use self_signed::ensure_self_signed;

/// Errors from loading or generating TLS material. Messages name the offending file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no certificate found in {}", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("invalid certificate in {}: {reason}", .path.display())]
    InvalidCertificate { path: PathBuf, reason: String },
    #[error("no private key found in {}", .path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("invalid private key in {}: {reason}", .path.display())]
    InvalidPrivateKey { path: PathBuf, reason: String },
    #[error(
        "key does not match certificate (key {}, certificate {})",
        .key.display(),
        .cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("generating self-signed certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building TLS server configuration failed: {0}")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// Stable machine-readable code for logs and status output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "tls-io",
            Self::NoCertificate { .. } | Self::InvalidCertificate { .. } => "tls-cert",
            Self::NoPrivateKey { .. } | Self::InvalidPrivateKey { .. } => "tls-key",
            Self::KeyMismatch { .. } => "tls-key-mismatch",
            Self::Generate(_) => "tls-generate",
            Self::Config(_) => "tls-config",
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsError {
    move |source| TlsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Install ring as the process-level rustls CryptoProvider; idempotent, safe to call many times and from tests.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed (by us or someone else); either way one exists.
    if CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The ring provider restricted to the production guide's cipher policy, in server preference order.
fn server_crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            // TLS 1.2: ECDHE + AES-GCM only, mirroring the NGINX `ssl_ciphers` line (no ChaCha20).
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// Read a PEM certificate chain; the leaf must come first and parse as X.509.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err("cannot read", path))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    };
    ParsedCertificate::try_from(leaf).map_err(|e| TlsError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1/RSA or SEC1) from a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(io_err("cannot read", path))?;
    let invalid = |reason: String| TlsError::InvalidPrivateKey {
        path: path.to_path_buf(),
        reason,
    };
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Err(e) => Err(invalid(format!("malformed PEM: {e}"))),
        // pemfile silently skips encrypted keys; say so instead of "no key found".
        Ok(None) if pem.windows(9).any(|w| w == b"ENCRYPTED") => Err(invalid(
            "encrypted private keys are not supported; decrypt it first".to_owned(),
        )),
        Ok(None) => Err(TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
    }
}

/// Load cert chain + private key with rustls-pemfile (PKCS#8, PKCS#1/RSA and SEC1 keys) and build the server config:
/// TLS 1.2 and 1.3 only; for TLS 1.2 exactly these suites (the production guide's NGINX policy):
/// ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384
/// (no ChaCha20 for 1.2); TLS 1.3 suites: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. Server prefers its own order.
/// No stateless session tickets (the guide's `ssl_session_tickets off`); resumption uses a server-side cache.
/// ALPN: ["h2", "http/1.1"]. The key is checked against the certificate's public key.
pub fn load_server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(server_crypto_provider());

    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::InvalidPrivateKey {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls itself accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TlsError::InvalidCertificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    }

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The builder's default ticketer never issues stateless tickets (no ticket key to rotate or
    // leak); TLS 1.3 resumption goes through the default in-memory session cache instead.
    Ok(Arc::new(config))
}

/// SHA-256 fingerprint of the leaf certificate (DER) as uppercase colon-separated hex,
/// e.g. "AB:CD:...", the format of `openssl x509 -fingerprint -sha256`.
pub fn cert_fingerprint_sha256(cert_path: &Path) -> Result<String, TlsError> {
    let certs = read_certs(cert_path)?;
    let leaf = certs.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.to_path_buf(),
    })?;
    let digest = Sha256::digest(leaf.as_ref());
    Ok(digest
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect::<Vec<_>>()
        .join(":"))
}
