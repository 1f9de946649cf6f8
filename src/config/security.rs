//! `[kafka.security]`: TLS and SASL to the brokers, and the checks that the settings can
//! work together (files readable, SASL complete, secrets resolvable). Mapped to librdkafka
//! properties in `delivery/kafka/config.rs`.

use serde::{Deserialize, Serialize};

use crate::secret::SecretSpec;

/// `[kafka.security]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// PEM file of the CA(s) that signed the brokers' certificates (default: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by TLS.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
    /// Password of `key_file`, if it is encrypted: literal, `env:NAME` or `file:PATH`.
    pub key_password: Option<SecretSpec>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password: literal, `env:NAME` or `file:PATH`.
    pub sasl_password: Option<SecretSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Checks `[kafka.security]` for settings that cannot work together.
pub fn check_security(sec: &KafkaSecurity, problems: &mut Vec<String>) {
    let p = sec.protocol;
    let tls_files = sec.ca_file.is_some() || sec.cert_file.is_some() || sec.key_file.is_some();
    if tls_files && !p.uses_tls() {
        problems.push(
            "kafka.security: ca_file/cert_file/key_file need protocol = \"ssl\" or \"sasl_ssl\""
                .into(),
        );
    }
    if sec.cert_file.is_some() != sec.key_file.is_some() {
        problems.push("kafka.security: give cert_file and key_file together".into());
    }
    for (key, path) in [
        ("ca_file", &sec.ca_file),
        ("cert_file", &sec.cert_file),
        ("key_file", &sec.key_file),
    ] {
        if let Some(path) = path
            && std::fs::metadata(path).is_err()
        {
            problems.push(format!(
                "kafka.security.{key} = {} cannot be read; mount it or fix the path",
                path.display()
            ));
        }
    }
    let sasl_given =
        sec.sasl_mechanism.is_some() || sec.sasl_username.is_some() || sec.sasl_password.is_some();
    if p.uses_sasl() {
        if sec.sasl_mechanism.is_none()
            || sec.sasl_username.is_none()
            || sec.sasl_password.is_none()
        {
            problems.push(
                "kafka.security: SASL needs sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), \
                 sasl_username and sasl_password"
                    .into(),
            );
        }
    } else if sasl_given {
        problems.push(
            "kafka.security: sasl_* settings need protocol = \"sasl_plaintext\" or \"sasl_ssl\""
                .into(),
        );
    }
    for (key, secret) in [
        ("sasl_password", &sec.sasl_password),
        ("key_password", &sec.key_password),
    ] {
        if let Some(Err(e)) = secret.as_ref().map(|s| s.resolve()) {
            problems.push(format!("kafka.security.{key}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_security_settings_that_cannot_work() {
        let cases = [
            KafkaSecurity {
                protocol: SecurityProtocol::SaslSsl,
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                sasl_username: Some("u".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                ca_file: Some("/etc/hosts".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                protocol: SecurityProtocol::Ssl,
                cert_file: Some("/etc/hosts".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                protocol: SecurityProtocol::Ssl,
                ca_file: Some("/surely/not/here.pem".into()),
                ..KafkaSecurity::default()
            },
        ];
        for sec in cases {
            let mut problems = Vec::new();
            check_security(&sec, &mut problems);
            assert!(!problems.is_empty(), "{sec:?}");
        }
    }
}
