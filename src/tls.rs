//! Optional TLS on the listener (`[server.tls]`), through actix-web's rustls 0.23
//! integration; ring as the crypto provider. Certificates and key are PEM files (the key
//! PKCS#8, PKCS#1 or SEC1), read at start-up and again on each reload
//! ([`Certificates`]: new connections get the new pair, those open keep theirs; a pair that
//! does not load, or whose key does not match the certificate, is refused and the old
//! one stays).
//!
//! ALPN offers HTTP/1.1 only, unless `[server.tls] http2 = true`. actix-http 3 runs HTTP/2
//! with the `h2` crate's default settings and gives no way to change them: header lists of
//! up to 16 MiB, decoded before the bridge's 431 check, and no limit on concurrent streams
//! per connection. That would put every budget of `ingress/admission.rs` and the memory
//! bound out of reach of the configuration, so HTTP/2 is something to opt into (and
//! `check-config` warns when it is on). Plain-text h2c is never served: the plain listener
//! speaks HTTP/1.1 only.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate the listener presents, swapped whole on reload.
#[derive(Debug)]
pub struct Certificates(ArcSwap<CertifiedKey>);

impl Certificates {
    /// Reads `cert_file` (chain, leaf first) and `key_file`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        Ok(Self(ArcSwap::from_pointee(certified_key(
            cert_file, key_file,
        )?)))
    }

    /// Reads the pair again; new connections get it. On an error the old pair stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        self.0.store(Arc::new(certified_key(cert_file, key_file)?));
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The chain and key of the two files, the key checked against the leaf certificate.
fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
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
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// The server configuration presenting `certificates`, offering HTTP/2 by ALPN only if
/// `http2`.
pub fn server_config(
    certificates: Arc<Certificates>,
    http2: bool,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}
