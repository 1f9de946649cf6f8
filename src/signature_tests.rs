//! Tests of `signature.rs`, Qminder's own example among them.

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
fn tells_which_registration_signed_and_takes_the_id_from_the_canonical_url() {
    let canonical = "https://bridge.example/hook";
    let second = "https://bridge.example/hook?registration=2";
    let (old, new): (SecretString, SecretString) = ("old-secret".into(), "new-secret".into());
    let both = Verifier::registered(canonical, &[(canonical, &[old][..]), (second, &[new][..])]);
    let body = "{\"type\":\"ticket_created\"}";
    let by_old = check(
        &both,
        &signer(canonical, "old-secret").sign(body.as_bytes()),
        body,
    );
    let by_new = check(
        &both,
        &signer(second, "new-secret").sign(body.as_bytes()),
        body,
    );
    let (by_old, by_new) = (by_old.expect("the old"), by_new.expect("the new"));
    assert_eq!((by_old.registration(), by_new.registration()), (0, 1));
    assert_eq!(
        by_old.id(),
        by_new.id(),
        "one event, one id, whoever delivered it"
    );
    let crossed = signer(second, "old-secret").sign(body.as_bytes());
    assert_eq!(
        check(&both, &crossed, body).unwrap_err(),
        SignatureError::Invalid
    );
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
        signer(QMINDER_EXAMPLE_URL, QMINDER_EXAMPLE_SECRET).sign(QMINDER_EXAMPLE_BODY.as_bytes()),
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
    let by_old = signer(QMINDER_EXAMPLE_URL, "old-secret").sign(QMINDER_EXAMPLE_BODY.as_bytes());
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
