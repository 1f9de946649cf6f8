//! Loading and validating what a rotation adds: registrations, and a file that does not
//! parse (reported without the text it holds).

use super::tests::{problems, valid};
use super::*;

#[test]
fn a_registration_is_the_endpoints_url_with_another_query_string() {
    for (url, ok) in [
        (
            "https://bridge.example/webhooks/qminder?registration=2",
            true,
        ),
        ("https://bridge.example/webhooks/qminder", false),
        ("https://bridge.example/elsewhere?registration=2", false),
        (
            "https://other.example/webhooks/qminder?registration=2",
            false,
        ),
    ] {
        let mut s = valid();
        s.endpoints[0].registrations = vec![RegistrationSettings {
            url: url.into(),
            secrets: vec![SecretSpec::parse("another-secret-16-bytes")],
        }];
        let problems = problems(&s);
        assert_eq!(problems.is_empty(), ok, "{url}: {problems:?}");
        if !ok {
            assert!(
                problems[0].contains("with another query string"),
                "{problems:?}"
            );
        }
    }
    let mut s = valid();
    s.endpoints[0].secrets.clear();
    assert!(!problems(&s).is_empty(), "no secret at all");
    s.endpoints[0].registrations = vec![RegistrationSettings {
        url: "https://bridge.example/webhooks/qminder?registration=2".into(),
        secrets: vec![SecretSpec::parse("another-secret-16-bytes")],
    }];
    assert_eq!(
        problems(&s),
        Vec::<String>::new(),
        "the old registration's secrets gone"
    );
}

#[test]
fn a_file_that_does_not_parse_is_reported_without_the_text_it_holds() {
    let secret = "whsec-a-literal-secret-half-written";
    let cases = [
        format!("[[endpoints]]\npath = \"/h\"\nsecrets = [\"{secret}"),
        format!("[[endpoints]]\npath = \"/h\"\nsecrets = \"{secret}\"\n"),
    ];
    for text in cases {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("a file");
        std::fs::write(file.path(), &text).expect("write");
        let error = Settings::load(Some(file.path()))
            .expect_err("does not load")
            .to_string();
        assert!(!error.contains(secret), "{error}");
        assert!(!error.contains("whsec"), "{error}");
        assert!(
            error.contains("line") || error.contains("invalid type"),
            "{error}"
        );
    }
}

#[test]
fn names_a_registrations_secret_by_its_own_key() {
    let mut s = valid();
    s.endpoints[0].registrations = vec![RegistrationSettings {
        url: format!("{}?registration=2", s.endpoints[0].url),
        secrets: vec![SecretSpec::parse("short")],
    }];
    let problems = problems(&s);
    let want = "endpoints[0].registrations[0].secrets[0] is 5 bytes";
    assert!(problems.iter().any(|p| p.starts_with(want)), "{problems:?}");
}
