//! Optional TLS (rustls, ring provider) with optional client-certificate verification.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// `tls:` in the server config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, every client must present a certificate they signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

fn err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("tls {what} {}: {e}", path.display()))
}

/// Builds the rustls server configuration.
pub fn server_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| err("cert", &cfg.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("cert", &cfg.cert, e))?;
    if certs.is_empty() {
        return Err(err("cert", &cfg.cert, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| err("key", &cfg.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| err("client_ca", ca, e))? {
                roots
                    .add(c.map_err(|e| err("client_ca", ca, e))?)
                    .map_err(|e| err("client_ca", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| err("cert/key", &cfg.cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
