//! Personal-data controls (`[privacy]`): drop or hash named fields of `data`.
//!
//! Rules name field paths under `data` (`phoneNumber`, `email`, `called.caller`); `drop`
//! removes the member, `hash` replaces its value by the hex HMAC-SHA256 of it under a
//! configured key (a string is hashed by its text, anything else by its JSON text, so
//! `12125551234` and `"12125551234"` hash alike and joins across events still work).
//! This is the one exception to "data is byte-exact": only the objects on a rule's path are
//! re-written (their members joined without whitespace); every other byte — and the whole
//! of `data` when no rule matches — is left as sent. Paths do not enter arrays. Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

/// What to do with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Hash,
}

/// The configured rules and the hashing key.
#[derive(Clone)]
pub struct Privacy {
    rules: Vec<(Vec<String>, Action)>,
    key: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// `fields` maps dotted paths to actions; `key` is required when any action is `hash`
    /// (configuration validation guarantees it; without one, `hash` falls back to `drop`).
    pub fn new(fields: &BTreeMap<String, Action>, key: Option<&SecretString>) -> Self {
        Self {
            rules: fields
                .iter()
                .map(|(path, action)| (path.split('.').map(str::to_owned).collect(), *action))
                .collect(),
            key: key.map(|k| {
                Hmac::<Sha256>::new_from_slice(k.expose_secret().as_bytes())
                    .expect("HMAC takes keys of any length")
            }),
        }
    }

    /// `data` with the rules applied; borrowed unchanged when no rule matches.
    pub fn apply<'a>(&self, data: &'a str) -> Cow<'a, str> {
        if self.rules.is_empty() {
            return Cow::Borrowed(data);
        }
        let rules: Vec<(&[String], Action)> =
            self.rules.iter().map(|(p, a)| (p.as_slice(), *a)).collect();
        self.apply_object(data, &rules)
    }

    fn apply_object<'a>(&self, text: &'a str, rules: &[(&[String], Action)]) -> Cow<'a, str> {
        if !text.trim_start().starts_with('{') {
            return Cow::Borrowed(text);
        }
        // `text` is valid JSON (it was parsed as the envelope's `data`), so the scan only
        // fails on a bug; then the object is replaced rather than passed on unfiltered.
        let Some(members) = members(text) else {
            return Cow::Owned("{}".to_owned());
        };
        let mut changed = false;
        let mut kept: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(members.len());
        for (raw_key, value) in members {
            // A key that does not decode (a lone surrogate escape) matches no rule, and is
            // kept as written.
            let key: Option<Cow<'_, str>> = serde_json::from_str(raw_key).ok();
            let here: Vec<(&[String], Action)> = rules
                .iter()
                .filter(|(path, _)| {
                    path.first()
                        .zip(key.as_deref())
                        .is_some_and(|(first, key)| first == key)
                })
                .map(|(path, action)| (&path[1..], *action))
                .collect();
            let leaf = here
                .iter()
                .find(|(rest, _)| rest.is_empty())
                .map(|(_, a)| *a);
            match (leaf, &self.key) {
                (Some(Action::Hash), Some(mac)) => {
                    changed = true;
                    kept.push((raw_key, Cow::Owned(hashed(mac, value))));
                }
                (Some(_), _) => changed = true,
                (None, _) => {
                    let deeper: Vec<(&[String], Action)> = here
                        .into_iter()
                        .filter(|(rest, _)| !rest.is_empty())
                        .collect();
                    let value = if deeper.is_empty() {
                        Cow::Borrowed(value)
                    } else {
                        self.apply_object(value, &deeper)
                    };
                    changed |= matches!(value, Cow::Owned(_));
                    kept.push((raw_key, value));
                }
            }
        }
        if !changed {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        out.push('{');
        for (i, (key, value)) in kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        Cow::Owned(out)
    }
}

fn hashed(mac: &Hmac<Sha256>, value: &str) -> String {
    let text: Cow<'_, str> = serde_json::from_str(value).unwrap_or(Cow::Borrowed(value));
    let mut mac = mac.clone();
    mac.update(text.as_bytes());
    format!("\"{}\"", hex::encode(mac.finalize().into_bytes()))
}

/// The members of the JSON object `text`, in order, as (raw key with its quotes, raw
/// value). Keys are not decoded, so none can fail to; values are delimited by serde_json.
fn members(text: &str) -> Option<Vec<(&str, &str)>> {
    let bytes = text.as_bytes();
    let skip = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip(0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip(i + 1);
    let mut out = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return (skip(i + 1) == bytes.len()).then_some(out);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        i += 1;
        loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        i += 1;
        let key = text.get(key_start..i)?;
        i = skip(i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let rest = text.get(i + 1..)?;
        let mut de = serde_json::Deserializer::from_str(rest);
        let raw: &RawValue = Deserialize::deserialize(&mut de).ok()?;
        let value_start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let value_end = value_start + raw.get().len();
        out.push((key, text.get(value_start..value_end)?));
        i = skip(value_end);
        match bytes.get(i)? {
            b',' => i = skip(i + 1),
            b'}' => return (skip(i + 1) == bytes.len()).then_some(out),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy(rules: &[(&str, Action)]) -> Privacy {
        let fields = rules.iter().map(|(p, a)| ((*p).to_owned(), *a)).collect();
        Privacy::new(&fields, Some(&SecretString::from("pii-key")))
    }

    fn hmac_hex(text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"pii-key").unwrap();
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    const TICKET: &str = "{ \"id\": \"1\", \"firstName\": \"Jane\", \"lastName\": \"Eyre\",\n  \"phoneNumber\": 12125551234, \"email\": \"jane@example.com\",\n  \"called\": { \"date\": \"2020-05-25T00:00:00Z\", \"caller\": 77 },\n  \"extra\": [ { \"title\": \"x\", \"value\": \"Jane\" } ] }";

    #[test]
    fn leaves_data_byte_exact_when_no_rule_matches() {
        let p = privacy(&[("passport", Action::Drop), ("called.desk", Action::Hash)]);
        assert!(matches!(p.apply(TICKET), Cow::Borrowed(t) if t == TICKET));
    }

    #[test]
    fn drops_and_hashes_named_fields_and_nothing_else() {
        let p = privacy(&[
            ("email", Action::Drop),
            ("phoneNumber", Action::Hash),
            ("lastName", Action::Hash),
            ("called.caller", Action::Drop),
        ]);
        let out = p.apply(TICKET);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v.get("email").is_none());
        assert_eq!(v["phoneNumber"], hmac_hex("12125551234"));
        assert_eq!(v["lastName"], hmac_hex("Eyre"));
        assert_eq!(v["firstName"], "Jane");
        assert!(v["called"].get("caller").is_none());
        assert_eq!(v["called"]["date"], "2020-05-25T00:00:00Z");
        // Untouched members keep their bytes, whitespace included.
        assert!(
            out.contains("\"extra\":[ { \"title\": \"x\", \"value\": \"Jane\" } ]"),
            "{out}"
        );
        assert!(!out.contains("jane@example.com") && !out.contains("Eyre"));
    }

    #[test]
    fn hashes_a_number_and_its_string_form_alike() {
        let p = privacy(&[("phoneNumber", Action::Hash)]);
        let a = p.apply(r#"{"phoneNumber":12125551234}"#).into_owned();
        let b = p.apply(r#"{"phoneNumber":"12125551234"}"#).into_owned();
        let expected = format!(r#"{{"phoneNumber":"{}"}}"#, hmac_hex("12125551234"));
        assert_eq!(a, expected);
        assert_eq!(b, expected);
    }

    #[test]
    fn applies_to_every_copy_of_a_duplicated_key() {
        let p = privacy(&[("email", Action::Drop)]);
        let out = p.apply(r#"{"email":"a@x","email":"b@x","id":1}"#);
        assert_eq!(out, r#"{"id":1}"#);
    }

    #[test]
    fn applies_rules_beside_keys_that_do_not_decode() {
        // Found by fuzzing: a lone surrogate escape in a sibling key once made the whole
        // object skip its rules.
        let p = privacy(&[("assigned.assignee", Action::Drop), ("email", Action::Hash)]);
        let data = r#"{"assigned":{"\udc0e":4,"assignee":4},"email":"a@x","\ud800":1}"#;
        let out = p.apply(data);
        assert_eq!(
            out,
            format!(
                r#"{{"assigned":{{"\udc0e":4}},"email":"{}","\ud800":1}}"#,
                hmac_hex("a@x")
            )
        );
    }

    #[test]
    fn leaves_non_objects_alone() {
        let p = privacy(&[("email", Action::Drop)]);
        for data in ["[1,2]", "null", "\"email\""] {
            assert_eq!(p.apply(data), data);
        }
        // Never reached with a parsed envelope, but an object that cannot be scanned is
        // replaced, not passed on unfiltered.
        assert_eq!(p.apply("{not json"), "{}");
    }
}
