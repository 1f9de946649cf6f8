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

/// Checks signatures for one registered URL and its secrets.
///
/// Keying HMAC and hashing the URL are done once here; each request clones that state.
#[derive(Clone)]
pub struct Verifier {
    /// One HMAC state per secret, already keyed and fed the URL bytes.
    keyed: Vec<Signer>,
    /// SHA-256 state already fed the URL bytes, for the event id.
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
        let keyed = secrets.iter().map(|s| Signer::new(url, s)).collect();
        let mut id_prefix = Sha256::new();
        id_prefix.update(url.as_bytes());
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
        let mut matched = false;
        for keyed in &self.keyed {
            let mut mac = keyed.0.clone();
            mac.update(&body);
            matched |= mac.verify_slice(&signature.0).is_ok();
        }
        if !matched {
            return Err(SignatureError::Invalid);
        }
        let mut id = self.id_prefix.clone();
        id.update(&body);
        let mut id_hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(id.finalize(), &mut id_hex);
        Ok(Verified { id_hex, body })
    }
}

/// A request body whose signature was checked. Only [`Verifier`] can make one.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Lower-case hex, kept inline: no allocation per request.
    id_hex: [u8; 64],
    body: Bytes,
}

impl Verified {
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
mod tests {
    use super::*;

    // Qminder's webhook page signs `{ "statusCode": 200 }` for https://example.com/webhooks
    // with this secret in its Node.js example (quoted in docs/testing.md); this is what
    // that example prints: the known-answer vector.
    const QMINDER_EXAMPLE_SECRET: &str = "71dX4IUKcJMDOaMHeA5IACBSHJkS4LzYNXlZPleg";
    const QMINDER_EXAMPLE_URL: &str = "https://example.com/webhooks";
    const QMINDER_EXAMPLE_BODY: &str = "{ \"statusCode\": 200 }";
    const QMINDER_EXAMPLE_SIGNATURE: &str =
        "cc316996bed6b481bfe539a643159a25bc8db08be2402e89be25b48e4935fde4";

    fn verifier(url: &str, secrets: &[&str]) -> Verifier {
        let secrets: Vec<SecretString> = secrets.iter().map(|s| (*s).into()).collect();
        Verifier::new(url, &secrets)
    }

    fn signer(url: &str, secret: &str) -> Signer {
        Signer::new(url, &secret.into())
    }

    #[test]
    fn an_empty_list_of_secrets_authenticates_nothing() {
        let none = verifier(QMINDER_EXAMPLE_URL, &[]);
        assert_eq!(
            check(&none, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).unwrap_err(),
            SignatureError::Invalid
        );
    }

    fn check(v: &Verifier, header: &str, body: &str) -> Result<Verified, SignatureError> {
        v.verify(Some(header.as_bytes()), Bytes::from(body.to_owned()))
    }

    #[test]
    fn signs_qminder_s_own_example_as_its_webhook_page_documents() {
        assert_eq!(
            signer(QMINDER_EXAMPLE_URL, QMINDER_EXAMPLE_SECRET)
                .sign(QMINDER_EXAMPLE_BODY.as_bytes()),
            QMINDER_EXAMPLE_SIGNATURE
        );
    }

    #[test]
    fn accepts_the_known_answer_in_either_hex_case() {
        let v = verifier(QMINDER_EXAMPLE_URL, &[QMINDER_EXAMPLE_SECRET]);
        assert!(check(&v, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).is_ok());
        assert!(
            check(
                &v,
                &QMINDER_EXAMPLE_SIGNATURE.to_uppercase(),
                QMINDER_EXAMPLE_BODY
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_the_known_answer_signature_for_every_other_registered_url() {
        for url in [
            "https://example.com/webhooks/",
            "http://example.com/webhooks",
            "https://example.com/webhooks?x=1",
            "https://example.com:443/webhooks",
            "https://EXAMPLE.com/webhooks",
            "",
        ] {
            let v = verifier(url, &[QMINDER_EXAMPLE_SECRET]);
            assert_eq!(
                check(&v, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).unwrap_err(),
                SignatureError::Invalid,
                "{url}"
            );
        }
    }

    #[test]
    fn rejects_a_signature_over_the_body_alone() {
        let body_only = signer("", QMINDER_EXAMPLE_SECRET).sign(QMINDER_EXAMPLE_BODY.as_bytes());
        let v = verifier(QMINDER_EXAMPLE_URL, &[QMINDER_EXAMPLE_SECRET]);
        assert_eq!(
            check(&v, &body_only, QMINDER_EXAMPLE_BODY).unwrap_err(),
            SignatureError::Invalid
        );
    }

    #[test]
    fn rejects_a_body_changed_by_one_byte() {
        let v = verifier(QMINDER_EXAMPLE_URL, &[QMINDER_EXAMPLE_SECRET]);
        assert!(check(&v, QMINDER_EXAMPLE_SIGNATURE, "{ \"statusCode\": 201 }").is_err());
        assert!(check(&v, QMINDER_EXAMPLE_SIGNATURE, "{ \"statusCode\": 200 } ").is_err());
        assert!(check(&v, QMINDER_EXAMPLE_SIGNATURE, "{\"statusCode\": 200 }").is_err());
    }

    #[test]
    fn accepts_any_of_several_secrets_and_no_other() {
        let v = verifier(QMINDER_EXAMPLE_URL, &["old-secret", QMINDER_EXAMPLE_SECRET]);
        assert!(check(&v, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).is_ok());
        let by_old =
            signer(QMINDER_EXAMPLE_URL, "old-secret").sign(QMINDER_EXAMPLE_BODY.as_bytes());
        assert!(check(&v, &by_old, QMINDER_EXAMPLE_BODY).is_ok());
        let by_other = signer(QMINDER_EXAMPLE_URL, "another").sign(QMINDER_EXAMPLE_BODY.as_bytes());
        assert!(check(&v, &by_other, QMINDER_EXAMPLE_BODY).is_err());
    }

    #[test]
    fn rejects_malformed_signature_headers() {
        let v = verifier(QMINDER_EXAMPLE_URL, &[QMINDER_EXAMPLE_SECRET]);
        let cases = [
            ("empty", String::new()),
            (
                "one digit short",
                QMINDER_EXAMPLE_SIGNATURE[..63].to_owned(),
            ),
            ("one byte short", QMINDER_EXAMPLE_SIGNATURE[..62].to_owned()),
            ("one byte long", format!("{QMINDER_EXAMPLE_SIGNATURE}00")),
            (
                "non-hex digit",
                format!("{}g", &QMINDER_EXAMPLE_SIGNATURE[..63]),
            ),
            (
                "sha256= prefix",
                format!("sha256={QMINDER_EXAMPLE_SIGNATURE}"),
            ),
            ("surrounding space", format!(" {QMINDER_EXAMPLE_SIGNATURE}")),
            (
                "base64",
                "zDFplr7UtIG/5TmmQxWaJbyNsIviQC6JviW0jkk1/eQ=".to_owned(),
            ),
        ];
        for (name, header) in cases {
            assert_eq!(
                check(&v, &header, QMINDER_EXAMPLE_BODY).unwrap_err(),
                SignatureError::Invalid,
                "{name}"
            );
        }
        assert_eq!(
            v.verify(None, Bytes::from_static(QMINDER_EXAMPLE_BODY.as_bytes()))
                .unwrap_err(),
            SignatureError::Missing
        );
    }

    #[test]
    fn gives_the_same_id_to_the_same_delivery_and_another_to_any_other() {
        let v = verifier(QMINDER_EXAMPLE_URL, &[QMINDER_EXAMPLE_SECRET]);
        let a = check(&v, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).unwrap();
        let b = check(&v, QMINDER_EXAMPLE_SIGNATURE, QMINDER_EXAMPLE_BODY).unwrap();
        assert_eq!(a.id(), b.id());
        let mut expected = Sha256::new();
        expected.update(QMINDER_EXAMPLE_URL.as_bytes());
        expected.update(QMINDER_EXAMPLE_BODY.as_bytes());
        assert_eq!(a.id(), hex::encode(expected.finalize()));
        let other_url = verifier("https://example.com/other", &[QMINDER_EXAMPLE_SECRET]);
        let sig = signer("https://example.com/other", QMINDER_EXAMPLE_SECRET)
            .sign(QMINDER_EXAMPLE_BODY.as_bytes());
        assert_ne!(
            check(&other_url, &sig, QMINDER_EXAMPLE_BODY).unwrap().id(),
            a.id()
        );
    }
}
