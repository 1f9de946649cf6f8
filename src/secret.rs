//! Webhook secrets: where they come from, and how they are kept out of sight.
//!
//! A configured secret is a literal, `env:NAME` (an environment variable) or `file:PATH`
//! (a Kubernetes secret mount). References lose one trailing newline (`\n` or `\r\n`):
//! a file ends in one, and so does a variable filled from one (a Kubernetes Secret made
//! with `--from-file`), while no real secret does. A [`SecretSpec`] never
//! shows a literal in `Debug`, `Display` or serialized output (`check-config` prints
//! `[redacted]`); references are shown, since naming a variable or file reveals nothing.
//! Resolution fails closed: a missing or empty secret is an error, never an empty key.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const REDACTED: &str = "[redacted]";

/// One configured secret, before resolution.
#[derive(Clone)]
pub enum SecretSpec {
    Literal(SecretString),
    Env(String),
    File(PathBuf),
}

/// Why a secret could not be resolved. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or not UTF-8); set it or change the secret")]
    EnvMissing(String),
    #[error("secret file {path} cannot be read ({source}); mount it or change the secret")]
    FileUnreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is empty; a webhook secret must not be empty")]
    Empty(String),
}

impl SecretSpec {
    /// Reads a spec from its configured text.
    pub fn parse(text: &str) -> Self {
        if let Some(name) = text.strip_prefix("env:") {
            Self::Env(name.to_owned())
        } else if let Some(path) = text.strip_prefix("file:") {
            Self::File(PathBuf::from(path))
        } else {
            Self::Literal(SecretString::from(text))
        }
    }

    /// Resolves the secret's value.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let (value, what) = match self {
            Self::Literal(s) => (
                s.expose_secret().to_owned(),
                "the literal secret".to_owned(),
            ),
            Self::Env(name) => {
                let text =
                    std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?;
                (
                    trim_one_newline(&text).to_owned(),
                    format!("environment variable {name}"),
                )
            }
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    SecretError::FileUnreadable {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                (
                    trim_one_newline(&text).to_owned(),
                    format!("secret file {}", path.display()),
                )
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(SecretString::from(value))
    }
}

/// `text` without one trailing `\n` or `\r\n`.
fn trim_one_newline(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

impl fmt::Display for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str(REDACTED),
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSpec({self})")
    }
}

impl Serialize for SecretSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_a_literal() {
        let spec = SecretSpec::parse("hunter2-very-secret");
        assert_eq!(format!("{spec}"), REDACTED);
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&spec).unwrap().contains("hunter2"));
        assert_eq!(
            spec.resolve().unwrap().expose_secret(),
            "hunter2-very-secret"
        );
    }

    #[test]
    fn reads_files_trimming_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (content, expected) in [
            ("abc\n", "abc"),
            ("abc\r\n", "abc"),
            ("abc", "abc"),
            ("a b \n\n", "a b \n"),
        ] {
            let path = dir.path().join("s");
            std::fs::write(&path, content).unwrap();
            let spec = SecretSpec::parse(&format!("file:{}", path.display()));
            assert_eq!(spec.resolve().unwrap().expose_secret(), expected);
        }
    }

    #[test]
    fn fails_closed_on_missing_or_empty_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let cases = [
            "".to_owned(),
            "env:QMINDER_BRIDGE_TEST_SURELY_UNSET_VARIABLE".to_owned(),
            format!("file:{}", dir.path().join("absent").display()),
            format!("file:{}", empty.display()),
        ];
        for text in cases {
            assert!(SecretSpec::parse(&text).resolve().is_err(), "{text}");
        }
    }
}
