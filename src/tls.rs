//! Optional TLS on the listener (`[server.tls]`), through actix-web's rustls 0.23
//! integration: HTTP/2 and HTTP/1.1, chosen by ALPN; ring as the crypto provider.
//! Certificates and key are PEM files (the key PKCS#8, PKCS#1 or SEC1), read at start-up.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}; give a PEM file with the chain")]
    Certificates { path: String, reason: String },
    #[error("cannot read a private key from {path}: {reason}; give a PEM file with the key")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server configuration for `cert_file` (chain, leaf first) and `key_file`.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert_file.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: cert_file.display().to_string(),
            reason: "no certificate in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
