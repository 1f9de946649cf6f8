//! Rotating the webhook with Qminder (`qminder-bridge webhooks`) against the API
//! simulator: register, remove, and a rotation's overlap, walked while a bridge runs.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use qminder_bridge::config::{RegistrationSettings, Settings};
use qminder_bridge::secret::SecretSpec;

use crate::helpers::app::{SECRET, sign, spawn_app_from, test_settings};
use crate::helpers::broker;
use crate::helpers::qminder_sim::QminderSim;
use crate::helpers::volume::Volume;

const BIN: &str = env!("CARGO_BIN_EXE_qminder-bridge");
const KEY: &str = "the-simulated-accounts-api-key";

/// Test settings whose endpoint has Qminder's API at `sim`, watched every 50 ms; the
/// secrets in `files` (a literal would be written out redacted).
fn settings(sim: &QminderSim, files: &Volume) -> Settings {
    let mut s = test_settings(broker::shared());
    s.reload.watch_interval_ms = 50;
    let file = |name: &str| SecretSpec::parse(&format!("file:{}", files.path(name).display()));
    s.endpoints[0].secrets = vec![file("webhook")];
    s.endpoints[0].qminder = Some(sim.settings(file("api-key")));
    s
}

fn webhooks<S: AsRef<std::ffi::OsStr>>(config: &std::path::Path, args: &[S]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("webhooks")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("QMINDER_BRIDGE_CONFIG");
    command
}

/// `rotate` to `new_url`, removing `old_id`, with (secret file, state file), one bridge,
/// polled every 50 ms for `timeout_s`.
fn rotate_args(
    new_url: &str,
    old_id: &str,
    (secret_file, state_file): (&std::path::Path, &std::path::Path),
    metrics: &str,
    timeout_s: &str,
) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let mut args: Vec<String> = ["rotate", "--new-url", new_url, "--old-id", old_id]
        .map(str::to_owned)
        .to_vec();
    args.extend(["--secret-file".to_owned(), path(secret_file)]);
    args.extend(["--state-file".to_owned(), path(state_file)]);
    args.extend(
        [
            "--bridge",
            metrics,
            "--timeout-s",
            timeout_s,
            "--poll-ms",
            "50",
        ]
        .map(str::to_owned),
    );
    args
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the tool")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_removes_a_webhook_keeping_its_secret_out_of_the_terminal() {
    let sim = QminderSim::start(KEY, Vec::new()).await;
    let secrets = Volume::new(&[("webhook", SECRET), ("api-key", KEY)]);
    let config =
        crate::helpers::config_file(&toml::to_string(&settings(&sim, &secrets)).expect("TOML"));
    let dir = tempfile::tempdir().expect("a directory");
    let secret_file = dir.path().join("secret");
    let url = "https://bridge.example.com/webhooks/qminder";
    let args = [
        "register",
        "--url",
        url,
        "--secret-file",
        secret_file.to_str().expect("utf-8"),
    ];
    let registered = output(webhooks(config.path(), &args)).await;
    assert!(registered.status.success(), "{registered:?}");
    let id = stdout(&registered).trim().to_owned();
    let held = sim.webhooks();
    assert_eq!(held, [(id.clone(), url.to_owned())]);
    let secret = std::fs::read_to_string(&secret_file).expect("the secret file");
    assert!(
        !stdout(&registered).contains(&secret),
        "the secret was printed"
    );
    let mode = std::fs::metadata(&secret_file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A secret file is never overwritten: refused before anything is registered, so no
    // registration is left whose secret has nowhere to go.
    let again = output(webhooks(config.path(), &args)).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&secret_file).expect("kept"), secret);
    assert_eq!(sim.webhooks().len(), 1, "no orphan registration");

    let removed = output(webhooks(config.path(), &["remove", &id])).await;
    assert!(removed.status.success(), "{removed:?}");
    assert_eq!(sim.webhooks(), []);
    let unknown = output(webhooks(config.path(), &["remove", &id])).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    let no_sink = output(webhooks(config.path(), &["register", "--url", url])).await;
    assert_eq!(
        no_sink.status.code(),
        Some(2),
        "a secret with nowhere to go"
    );
    // An answer lost after the registration was made: the error says it may exist.
    sim.fail_next(&[crate::helpers::qminder_sim::Fault::LostAnswer]);
    let lost = output(webhooks(
        config.path(),
        &["register", "--url", url, "--show-secret"],
    ))
    .await;
    assert_eq!(lost.status.code(), Some(2));
    let said = String::from_utf8_lossy(&lost.stderr);
    assert!(said.contains("may have registered it"), "{said}");
    assert_eq!(
        sim.webhooks().len(),
        1,
        "registered, its answer lost: not sent twice"
    );
    let requests = sim.log().len();
    for id in ["../locations", "", "1/../../v1/locations"] {
        let odd = output(webhooks(config.path(), &["remove", id])).await;
        assert_eq!(odd.status.code(), Some(2), "{id:?}");
    }
    assert_eq!(
        sim.log().len(),
        requests,
        "nothing sent for an id that is not one"
    );
}

/// The overlap: the new registration is made and saved, the bridges learn its URL and
/// secret by a reload, Qminder delivers through both (the same event, one id), and only
/// once every bridge has verified a delivery by the new one is the old one removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_through_an_overlap_the_bridge_reloads_into_and_resumes_after_a_time_out() {
    let sim = QminderSim::start(KEY, Vec::new()).await;
    // Ids as numbers this time (as the SDK types them); the other test has the UUIDs.
    sim.numeric_webhook_ids();
    let secrets = Volume::new(&[("webhook", SECRET), ("api-key", KEY)]);
    let mut settings = settings(&sim, &secrets);
    let old_url = settings.endpoints[0].url.clone();
    let dir = tempfile::tempdir().expect("a directory");
    let secret_file = dir.path().join("new-secret");
    let state_file = dir.path().join("rotation.json");
    let mut configs = Volume::new(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let register = ["register", "--url", &old_url, "--show-secret"];
    let old_id = stdout(&output(webhooks(&configs.path("bridge.toml"), &register)).await);
    let old_id = old_id.lines().next().expect("an id").to_owned();
    let new_url = format!("{old_url}?registration=2");
    let metrics = format!("{}/metrics", app.address);
    let config_file = configs.path("bridge.toml");
    let rotate = |timeout_s: &str| {
        let files = (secret_file.as_path(), state_file.as_path());
        webhooks(
            &config_file,
            &rotate_args(&new_url, &old_id, files, &metrics, timeout_s),
        )
    };

    // No bridge knows the new registration yet: the rotation times out, leaving both.
    let timed_out = output(rotate("1")).await;
    assert_eq!(timed_out.status.code(), Some(1), "{timed_out:?}");
    assert!(stdout(&timed_out).contains("both registrations remain"));
    assert_eq!(sim.webhooks().len(), 2);
    // A crash after the state was written, before the secret file: the next run writes it.
    let written = std::fs::read_to_string(&secret_file).expect("the new secret");
    std::fs::remove_file(&secret_file).expect("remove");
    assert_eq!(output(rotate("0")).await.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("again"),
        written
    );
    let mode = std::fs::metadata(&state_file)
        .expect("state")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the state holds the secret");

    // The bridge learns the new URL and secret; Qminder delivers through both.
    settings.endpoints[0].registrations = vec![RegistrationSettings {
        url: new_url.clone(),
        secrets: vec![SecretSpec::parse(&format!(
            "file:{}",
            secret_file.display()
        ))],
    }];
    configs.update(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let applied = "qminder_bridge_config_reloads_total{result=\"applied\"}";
    app.wait_for_metric(applied, 1.0, Duration::from_secs(10))
        .await;
    let body = crate::helpers::traffic::ticket_created(7);
    let new_secret = std::fs::read_to_string(&secret_file).expect("the new secret");
    let (old_signature, new_signature) = (
        sign(SECRET, &old_url, body.as_bytes()),
        sign(&new_secret, &new_url, body.as_bytes()),
    );
    let by_old = app
        .post("/webhooks/qminder", &body, Some(&old_signature))
        .await;
    let by_new = app
        .post("/webhooks/qminder", &body, Some(&new_signature))
        .await;
    assert_eq!(
        (by_old.status().as_u16(), by_new.status().as_u16()),
        (200, 200)
    );
    let (a, b): (serde_json::Value, serde_json::Value) = (
        by_old.json().await.expect("json"),
        by_new.json().await.expect("json"),
    );
    assert_eq!(a["id"], b["id"], "one event delivered twice has one id");

    // Resumed: no second registration; the old one goes, even though the answer to its
    // DELETE is lost (the retry finds it gone: 404, which counts as done).
    sim.fail_next(&[crate::helpers::qminder_sim::Fault::LostAnswer]);
    let resumed = output(rotate("30")).await;
    assert!(resumed.status.success(), "{resumed:?}");
    let held = sim.webhooks();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].1, new_url);
    let posts = sim.log().iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 2, "the old registration and the new one, once");
    app.stop().await;
}

/// Rotating back to a URL that delivered before (a second rotation returning to the
/// endpoint's own url): its counter is already above 0, so only deliveries beyond what
/// each bridge had counted when the rotation began may let the old registration go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_to_a_url_that_delivered_before_waits_for_new_deliveries() {
    let sim = QminderSim::start(KEY, Vec::new()).await;
    let secrets = Volume::new(&[("webhook", SECRET), ("api-key", KEY)]);
    let settings = settings(&sim, &secrets);
    let url = settings.endpoints[0].url.clone();
    let configs = Volume::new(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let config = configs.path("bridge.toml");
    let app = spawn_app_from(&config).await;
    let body = crate::helpers::traffic::ticket_created(11);
    let signature = sign(SECRET, &url, body.as_bytes());
    let delivered = app.post("/webhooks/qminder", &body, Some(&signature)).await;
    assert_eq!(
        delivered.status().as_u16(),
        200,
        "a delivery counted under {url}"
    );
    let other = format!("{url}?registration=2");
    let register = ["register", "--url", &other, "--show-secret"];
    let old_id = stdout(&output(webhooks(&config, &register)).await);
    let old_id = old_id.lines().next().expect("an id").to_owned();

    let dir = tempfile::tempdir().expect("a directory");
    let (secret_file, state_file) = (dir.path().join("secret"), dir.path().join("state"));
    let metrics = format!("{}/metrics", app.address);
    let files = (secret_file.as_path(), state_file.as_path());
    let args = rotate_args(&url, &old_id, files, &metrics, "1");
    let rotated = output(webhooks(&config, &args)).await;
    assert_eq!(rotated.status.code(), Some(1), "{rotated:?}");
    assert!(
        sim.webhooks().iter().any(|(id, _)| *id == old_id),
        "the old one stays"
    );
    app.stop().await;
}
