//! The command line: `sign` agrees with Qminder's own JavaScript, `check-config` explains.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::helpers::config_file;

const BIN: &str = env!("CARGO_BIN_EXE_qminder-bridge");

fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("QMINDER_BRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

/// Qminder's own example, verbatim but for the inputs, run by Node.js.
const SEED_JS: &str = r#"
const crypto = require('crypto');
const QMINDER_SECRET = process.env.QMINDER_SECRET;
function getSignature(url, postBody) {
  const hmac = crypto.createHmac('sha256', QMINDER_SECRET);
  hmac.update(url);
  hmac.update(postBody);
  const signature = hmac.digest('hex');
  return signature;
}
console.log(getSignature(process.env.URL, require('fs').readFileSync(0, 'utf8')));
"#;

#[test]
fn sign_agrees_with_qminders_javascript_example() {
    let secret = "71dX4IUKcJMDOaMHeA5IACBSHJkS4LzYNXlZPleg";
    let known = run(
        &["sign", "--url", "https://example.com/webhooks"],
        &[("QMINDER_SECRET", secret)],
        b"{ \"statusCode\": 200 }",
    );
    assert!(known.status.success());
    assert_eq!(
        String::from_utf8_lossy(&known.stdout).trim(),
        "cc316996bed6b481bfe539a643159a25bc8db08be2402e89be25b48e4935fde4"
    );

    let bodies = [
        "{ \"statusCode\": 200 }".to_owned(),
        "{\"type\":\"ticket_created\",\"data\":{\"firstName\":\"Zoë\",\"n\":1.50}}\n".to_owned(),
        "x".repeat(10_000),
    ];
    for body in bodies {
        let url = "https://bridge.example.com/webhooks/qminder?account=1";
        let mut node = Command::new("node")
            .args(["-e", SEED_JS])
            .env("QMINDER_SECRET", secret)
            .env("URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is installed (scripts/setup)");
        node.stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write");
        let node = node.wait_with_output().expect("node output");
        assert!(node.status.success());
        let ours = run(
            &["sign", "--url", url],
            &[("QMINDER_SECRET", secret)],
            body.as_bytes(),
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout).trim(),
            String::from_utf8_lossy(&node.stdout).trim()
        );
    }
}

#[test]
fn sign_refuses_to_work_without_a_secret() {
    let out = run(&["sign", "--url", "https://x.example.com/"], &[], b"{}");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("QMINDER_SECRET"));
}

const VALID: &str = r#"
[kafka]
bootstrap_servers = "kafka:9092"
[kafka.librdkafka]
"compression.type" = "zstd"
"ssl.keystore.password" = "keystore-secret-in-passthrough-321"
[[endpoints]]
path = "/webhooks/qminder"
url = "https://bridge.example.com/webhooks/qminder"
secrets = ["super-secret-literal-123", "env:CHECK_CONFIG_TEST_SECRET"]
"#;

#[test]
fn check_config_prints_the_effective_settings_with_secrets_redacted() {
    let file = config_file(VALID);
    let path = file.path().to_str().expect("path");
    let out = run(
        &["check-config", "--config", path],
        &[
            ("CHECK_CONFIG_TEST_SECRET", "from-the-environment-456"),
            ("QMINDER_BRIDGE__SERVER__MAX_IN_FLIGHT", "77"),
            // Strings that look like numbers stay strings: a topic "007" is not topic "7".
            ("QMINDER_BRIDGE__KAFKA__TOPICS__TICKET_CREATED", "007"),
            ("QMINDER_BRIDGE__KAFKA__TOPIC_PREFIX", "0123"),
            ("QMINDER_BRIDGE__SPOOL__ENABLED", "true"),
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[redacted]"));
    assert!(stdout.contains("env:CHECK_CONFIG_TEST_SECRET"));
    assert!(
        stdout.contains("max_in_flight = 77"),
        "environment layer applies:\n{stdout}"
    );
    for line in [
        r#"ticket_created = "007""#,
        r#"topic_prefix = "0123""#,
        "enabled = true",
    ] {
        assert!(stdout.contains(line), "{line} in\n{stdout}");
    }
    assert!(
        stdout.contains("delivery_timeout_ms = 5000"),
        "defaults shown:\n{stdout}"
    );
    assert!(!stdout.contains("super-secret-literal-123"));
    assert!(!stdout.contains("from-the-environment-456"));
    assert!(stdout.contains("ssl.keystore.password"), "{stdout}");
    assert!(
        !stdout.contains("keystore-secret-in-passthrough-321"),
        "{stdout}"
    );
}

#[test]
fn check_config_says_what_is_wrong_and_how_to_fix_it() {
    let cases = [
        (
            "no endpoints",
            "[kafka]\nbootstrap_servers = \"k:9092\"\n",
            "no [[endpoints]]",
        ),
        ("unknown key", "[server]\nlisten_port = 80\n", "listen_port"),
        (
            "acks weakened",
            &VALID.replace("\"compression.type\" = \"zstd\"", "acks = \"1\""),
            "would weaken delivery",
        ),
        (
            "unknown librdkafka property",
            &VALID.replace(
                "\"compression.type\" = \"zstd\"",
                "\"no.such.property\" = \"1\"",
            ),
            "no.such.property",
        ),
        (
            "a credential librdkafka refuses, echoed in its error",
            &VALID.replace(
                "\"compression.type\" = \"zstd\"",
                "\"sasl.oauthbearer.client.secret\" = \"super-secret-literal-123\"",
            ),
            "sasl.oauthbearer.client.secret [redacted]",
        ),
        (
            "missing secret variable",
            &VALID.replace("CHECK_CONFIG_TEST_SECRET", "SURELY_UNSET_VARIABLE_X"),
            "SURELY_UNSET_VARIABLE_X is not set",
        ),
        (
            "timeouts out of order",
            &VALID.replace("[kafka]\n", "[kafka]\ndelivery_timeout_ms = 20000\n"),
            "must exceed kafka.delivery_timeout_ms",
        ),
        (
            "a webhook secret too short to resist guessing",
            &VALID.replace("\"super-secret-literal-123\", ", "\"fifteen-bytes-x\", "),
            "endpoints[0].secrets[0] is 15 bytes; a webhook secret must be at least 16",
        ),
        (
            "a webhook secret from the environment, too short",
            &VALID.replace(
                "env:CHECK_CONFIG_TEST_SECRET",
                "env:CHECK_CONFIG_SHORT_SECRET",
            ),
            "endpoints[0].secrets[1] is 5 bytes",
        ),
        (
            "empty secrets",
            &VALID.replace(
                "secrets = [\"super-secret-literal-123\", \"env:CHECK_CONFIG_TEST_SECRET\"]",
                "secrets = []",
            ),
            "secrets is empty",
        ),
    ];
    for (name, text, expected) in cases {
        let file = config_file(text);
        let out = run(
            &[
                "check-config",
                "--config",
                file.path().to_str().expect("path"),
            ],
            &[
                ("CHECK_CONFIG_TEST_SECRET", "from-the-environment-456"),
                ("CHECK_CONFIG_SHORT_SECRET", "short"),
            ],
            b"",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("super-secret-literal-123"), "{name}");
    }
}

#[test]
fn check_config_warns_of_weakened_tls_and_of_limits_beyond_the_memory_limit() {
    let weakened = VALID.replace(
        "\"compression.type\" = \"zstd\"",
        "\"enable.ssl.certificate.verification\" = \"false\"\n\"ssl.endpoint.identification.algorithm\" = \"none\"",
    );
    let over = VALID.replace(
        "[kafka]\n",
        "[server]\nmax_unverified_body_bytes = 1073741824\n[kafka]\n",
    );
    let cases = [
        (
            weakened.as_str(),
            vec![
                "enable.ssl.certificate.verification",
                "ssl.endpoint.identification.algorithm",
            ],
        ),
        (
            over.as_str(),
            vec!["server.memory_limit_bytes", "max_unverified_body_bytes"],
        ),
    ];
    for (text, expected) in cases {
        let file = config_file(text);
        let path = file.path().to_str().expect("path");
        let secret = ("CHECK_CONFIG_TEST_SECRET", "from-the-environment-456");
        let out = run(&["check-config", "--config", path], &[secret], b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a warning, not a refusal: {stderr}");
        for word in expected {
            assert!(
                stderr.contains("warning") && stderr.contains(word),
                "{word} in {stderr}"
            );
        }
    }
    // The defaults pass the memory check.
    let file = config_file(VALID);
    let path = file.path().to_str().expect("path");
    let out = run(
        &["check-config", "--config", path],
        &[("CHECK_CONFIG_TEST_SECRET", "from-the-environment-456")],
        b"",
    );
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let file = config_file(&VALID.replace("CHECK_CONFIG_TEST_SECRET", "SURELY_UNSET_VARIABLE_Y"));
    let out = run(
        &["serve", "--config", file.path().to_str().expect("path")],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SURELY_UNSET_VARIABLE_Y"));
}

#[test]
fn topics_lists_what_is_missing_and_creates_it() {
    let bootstrap = crate::helpers::broker::shared();
    let prefix = format!("topics{}", std::process::id());
    let file = config_file(&format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\n\
         partitions = 2\nreplication_factor = 1\n\
         [kafka.topics]\nticket_moved = \"{prefix}.moved\"\n\
         [[endpoints]]\npath = \"/h\"\nurl = \"https://x.example.com/h\"\nsecrets = [\"a-secret-of-16-bytes\"]\n"
    ));
    let path = file.path().to_str().expect("path");
    let before = run(&["topics", "--config", path], &[], b"");
    let stdout = String::from_utf8_lossy(&before.stdout);
    assert_eq!(before.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("missing  {prefix}.ticket_created")),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        12,
        "9 types, unknown, dead letter, one override"
    );

    let create = run(&["topics", "--config", path, "--create"], &[], b"");
    let stdout = String::from_utf8_lossy(&create.stdout);
    assert!(
        create.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&create.stderr)
    );
    assert!(
        stdout.contains(&format!("created  {prefix}.moved")),
        "{stdout}"
    );

    let after = run(&["topics", "--config", path], &[], b"");
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert!(after.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "exists   {prefix}.deadletter (2 partitions, 1 replicas, min.insync.replicas 1"
        )),
        "{stdout}"
    );
}

#[test]
fn the_shipped_example_and_local_configurations_are_valid() {
    for file in ["config/example.toml", "config/local.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = run(
            &["check-config", "--config", &path],
            &[(
                "QMINDER_WEBHOOK_SECRET",
                "a-webhook-secret-of-40-characters-000000",
            )],
            b"",
        );
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The example webhooks shipped in `examples/events/`, one per known event type.
fn example_events() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/events")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Runs the binary off the async runtime (it blocks until every answer is in).
async fn run_async(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(&args, &env, b"")
    })
    .await
    .expect("the binary ran")
}

/// `qminder-bridge send --url URL --sign-url SIGN_URL ARGS...` with `secret` in
/// `$QMINDER_SECRET`. The bridge is reached on a loopback port; the signature covers the
/// URL registered in Qminder, which is what `--sign-url` is for.
async fn send(url: String, sign_url: &str, secret: &str, args: Vec<String>) -> Output {
    let mut all = vec![
        "send".to_owned(),
        "--url".to_owned(),
        url,
        "--sign-url".to_owned(),
        sign_url.to_owned(),
    ];
    all.extend(args);
    run_async(all, vec![("QMINDER_SECRET", secret.to_owned())]).await
}

fn paths(files: &[std::path::PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_each_example_like_qminder_and_every_one_reaches_its_topic() {
    use crate::helpers::app::{PATH, SECRET, spawn_app};
    let app = spawn_app().await;
    let files = example_events();
    assert_eq!(files.len(), 9, "one example per known event type");
    let out = send(
        format!("{}{PATH}", app.address),
        app.url(),
        SECRET,
        paths(&files),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len(), "{stdout}");
    for (line, file) in lines.iter().zip(&files) {
        let mut columns = line.splitn(3, '\t');
        let (status, name, answer) = (
            columns.next().expect("status"),
            columns.next().expect("file"),
            columns.next().expect("answer"),
        );
        assert_eq!(status, "200", "{line}");
        assert_eq!(name, file.display().to_string());
        let ack: serde_json::Value = serde_json::from_str(answer).expect("the bridge's JSON");
        let sent: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).expect("example")).expect("JSON");
        let event_type = sent["type"].as_str().expect("type");
        assert_eq!(ack["topic"], app.topic(event_type), "{line}");
        let record = app.record_for(&ack).await.json();
        assert_eq!(record["type"], format!("com.qminder.{event_type}"));
        assert_eq!(record["data"], sent["data"], "{line}");
        assert_eq!(record["id"], ack["id"]);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exits_non_zero_and_prints_each_refusal_when_the_secret_is_wrong() {
    use crate::helpers::app::{PATH, spawn_app};
    let app = spawn_app().await;
    let files = example_events();
    let out = send(
        format!("{}{PATH}", app.address),
        app.url(),
        "not-the-secret",
        paths(&files[..2]),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for line in stdout.lines() {
        assert!(line.starts_with("401\t"), "{line}");
        assert!(
            line.ends_with("{\"error\":\"invalid_signature\"}"),
            "{line}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 2"));
    assert_eq!(app.published().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sends_nothing_when_any_file_cannot_be_read() {
    use crate::helpers::app::{PATH, SECRET, spawn_app};
    let app = spawn_app().await;
    let files = example_events();
    let out = send(
        format!("{}{PATH}", app.address),
        app.url(),
        SECRET,
        vec![
            files[0].display().to_string(),
            "/surely/not/here.json".into(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/surely/not/here.json"));
    assert!(out.stdout.is_empty());
    assert_eq!(
        app.metric(&format!(
            "qminder_bridge_request_duration_seconds_count{{endpoint=\"{PATH}\"}}"
        ))
        .await
            + app.published().await as f64,
        0.0,
        "nothing reached the bridge"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_trusts_a_private_ca_for_an_https_bridge() {
    use crate::helpers::app::{PATH, SECRET, spawn_tls_app};
    let (app, tls) = spawn_tls_app(false).await;
    let url = format!("https://localhost:{}{PATH}", app.port());
    let example = example_events()[0].display().to_string();
    let untrusted = send(url.clone(), app.url(), SECRET, vec![example.clone()]).await;
    let stdout = String::from_utf8_lossy(&untrusted.stdout);
    assert_eq!(untrusted.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("error\t"), "{stdout}");
    assert!(stdout.contains("certificate"), "says why: {stdout}");

    let ca_file = tls.cert_file.display().to_string();
    let trusted = send(
        url,
        app.url(),
        SECRET,
        vec!["--ca-file".into(), ca_file, example],
    )
    .await;
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(trusted.status.success(), "{stdout}");
    assert!(stdout.starts_with("200\t"), "{stdout}");
    app.stop().await;
}

/// `min.insync.replicas` of `topic`, as the broker describes it (DescribeConfigs).
fn min_insync_replicas(bootstrap: &str, topic: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let described = runtime
        .block_on(admin.describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(10))),
        ))
        .expect("DescribeConfigs");
    let resource = described.into_iter().next()?.ok()?;
    resource.get("min.insync.replicas")?.value.clone()
}

#[test]
fn topics_the_bridge_creates_wait_for_two_replicas_and_thinner_ones_are_warned_of() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let bootstrap = crate::helpers::broker::shared();
    let prefix = format!("durable{}", std::process::id());
    // Someone else made the ticket_created topic: three replicas, but min.insync.replicas 1.
    let thin = format!("{prefix}.ticket_created");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(&thin, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "1")],
            &AdminOptions::new(),
        ))
        .expect("CreateTopics");
    let file = config_file(&format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\n\
         partitions = 1\nreplication_factor = 3\n\
         [[endpoints]]\npath = \"/h\"\nurl = \"https://x.example.com/h\"\nsecrets = [\"a-secret-of-16-bytes\"]\n"
    ));
    let path = file.path().to_str().expect("path");
    let out = run(&["topics", "--config", path, "--create"], &[], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        min_insync_replicas(bootstrap, &format!("{prefix}.ticket_called")).as_deref(),
        Some("2"),
        "a topic the bridge created"
    );
    assert!(
        stderr.contains(&format!(
            "warning: topic {thin} has 3 replicas but min.insync.replicas = 1"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("warning").count(),
        1,
        "only the thin topic: {stderr}"
    );
    // `serve` says the same at start-up, once it has looked at the topics.
    let bridge = crate::helpers::process::BridgeProcess::start(bootstrap, |s| {
        s.kafka.topic_prefix = prefix.clone();
        s.kafka.create_topics = false;
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let said = format!("topic {thin} has 3 replicas but min.insync.replicas = 1");
    while !bridge.log().contains(&said) {
        assert!(std::time::Instant::now() < deadline, "{}", bridge.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn backfill_refuses_a_look_back_it_could_not_honour_instead_of_searching_none() {
    // Before: a look-back too large for ms in an i64 became 0, and the run searched only
    // tickets created inside the window, reporting older tickets' transitions as absent.
    let config = format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"));
    let out = run(
        &[
            "backfill",
            "--config",
            &config,
            "--since",
            "1796115600",
            "--lookback-hours",
            "99999999999999",
        ],
        &[(
            "QMINDER_WEBHOOK_SECRET",
            "a-webhook-secret-of-40-characters-000000",
        )],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--lookback-hours"), "{stderr}");
}
