//! Stage 2 of the data path: authenticate a webhook before anything reads it.
//!
//! Qminder signs `hex(HMAC-SHA256(secret, registered_url ‖ raw_body))` and sends it in
//! `X-Qminder-Signature`. The URL is the one registered in Qminder, taken from
//! configuration, never from the request (a proxy in front changes what we see).
//!
//! [`Verifier::verify`] is the only way to build a [`Verified`] body, and the later stages
//! only accept a `Verified`, so no code path can parse or publish an unauthenticated body.
//! Comparison is constant-time (`Mac::verify_slice`); the hex may be either case; any of
//! several configured secrets may match (rotation). Pure: no actix, no rdkafka.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The header Qminder puts its signature in.
pub const SIGNATURE_HEADER: &str = "X-Qminder-Signature";

/// Why a request was not authenticated. Both map to 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request carries no X-Qminder-Signature header")]
    Missing,
    #[error("the X-Qminder-Signature header does not match the body")]
    Invalid,
}

/// A decoded signature header: 32 bytes, from 64 hex digits of either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl Signature {
    /// Decodes the header value. Anything but exactly 64 hex digits is `Invalid`: the
    /// check can then be done before the body is read.
    pub fn from_header(value: &[u8]) -> Result<Self, SignatureError> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(value, &mut raw).map_err(|_| SignatureError::Invalid)?;
        Ok(Self(raw))
    }
}

/// Signs as Qminder does, for one registered URL and one secret (`sign`, `send`, tests).
#[derive(Clone)]
pub struct Signer(HmacSha256);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// HMAC-SHA256 keyed with `secret` and already fed `url`'s bytes.
    pub fn new(url: &str, secret: &SecretString) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(url.as_bytes());
        Self(mac)
    }

    /// The signature Qminder would send for `body`: lower-case hex.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Checks signatures for one endpoint: its registrations in Qminder (a URL and its
/// secrets each; several while a webhook is rotated) and the canonical URL event ids are
/// computed from, whichever registration delivered.
///
/// Keying HMAC and hashing the URL are done once here; each request clones that state.
#[derive(Clone)]
pub struct Verifier {
    /// One HMAC state per secret, already keyed and fed its registration's URL bytes, and
    /// the index of that registration.
    keyed: Vec<(Signer, usize)>,
    /// SHA-256 state already fed the canonical URL's bytes, for the event id.
    id_prefix: Sha256,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keyed.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds a verifier for `url` (byte for byte as registered in Qminder).
    ///
    /// # Panics
    /// Never: HMAC accepts keys of any length. `secrets` must not be empty; configuration
    /// validation guarantees that, and an empty list simply authenticates nothing.
    pub fn new(url: &str, secrets: &[SecretString]) -> Self {
        Self::registered(url, &[(url, secrets)])
    }

    /// A verifier for several registrations, `(url, secrets)` each; ids from `canonical`.
    /// [`Verified::registration`] says which one signed a request (its index).
    pub fn registered(canonical: &str, registrations: &[(&str, &[SecretString])]) -> Self {
        let keyed = registrations
            .iter()
            .enumerate()
            .flat_map(|(i, (url, secrets))| secrets.iter().map(move |s| (Signer::new(url, s), i)))
            .collect();
        let mut id_prefix = Sha256::new();
        id_prefix.update(canonical.as_bytes());
        Self { keyed, id_prefix }
    }

    /// Authenticates `body` against the header value (`None` when the header is absent).
    ///
    /// Every secret is tried, even after one matched, so the time taken does not depend
    /// on which secret signed the request.
    pub fn verify(&self, header: Option<&[u8]>, body: Bytes) -> Result<Verified, SignatureError> {
        let signature = Signature::from_header(header.ok_or(SignatureError::Missing)?)?;
        self.verify_decoded(&signature, body)
    }

    /// Like [`verify`](Self::verify), with a header already decoded (the ingress decodes it
    /// before reading the body, to refuse garbage early).
    pub fn verify_decoded(
        &self,
        signature: &Signature,
        body: Bytes,
    ) -> Result<Verified, SignatureError> {
        let mut matched = None;
        for (keyed, registration) in &self.keyed {
            let mut mac = keyed.0.clone();
            mac.update(&body);
            if mac.verify_slice(&signature.0).is_ok() {
                matched = Some(*registration);
            }
        }
        let Some(registration) = matched else {
            return Err(SignatureError::Invalid);
        };
        let mut id = self.id_prefix.clone();
        id.update(&body);
        let mut id_hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(id.finalize(), &mut id_hex);
        Ok(Verified {
            id_hex,
            body,
            registration,
        })
    }
}

/// A request body whose signature was checked. Only [`Verifier`] can make one.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Lower-case hex, kept inline: no allocation per request.
    id_hex: [u8; 64],
    body: Bytes,
    /// Which registration's URL and secret signed it.
    registration: usize,
}

impl Verified {
    /// Which of the endpoint's registrations signed it (0: the one at the canonical URL).
    pub fn registration(&self) -> usize {
        self.registration
    }

    /// The raw body, exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The deterministic event id: hex SHA-256 of `url ‖ body`. A redelivery of the same
    /// webhook gets the same id, so consumers can de-duplicate on it.
    pub fn id(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.id_hex).unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
