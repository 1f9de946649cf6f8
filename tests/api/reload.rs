//! Changing a running bridge: the configuration and its secrets in Kubernetes-style
//! volumes (symlink swaps), reloaded by the watch or SIGHUP, under steady signed traffic.

use std::time::{Duration, Instant};

use qminder_bridge::config::Settings;
use qminder_bridge::secret::SecretSpec;

use crate::helpers::app::{SECRET, spawn_app_from, test_settings};
use crate::helpers::broker;
use crate::helpers::traffic::Traffic;
use crate::helpers::volume::Volume;

const NEW_SECRET: &str = "the-secret-of-the-new-registration";

/// Test settings whose endpoint reads its secrets from `files` of `secrets`, watched
/// every 50 ms; as the TOML a ConfigMap would hold.
fn config(settings: &Settings, secrets: &Volume, files: &[&str]) -> String {
    let mut settings = settings.clone();
    settings.reload.watch_interval_ms = 50;
    settings.endpoints[0].secrets = files
        .iter()
        .map(|f| SecretSpec::parse(&format!("file:{}", secrets.path(f).display())))
        .collect();
    toml::to_string(&settings).expect("TOML")
}

async fn reloads(app: &crate::helpers::app::TestApp, result: &str) -> f64 {
    let series = format!("qminder_bridge_config_reloads_total{{result=\"{result}\"}}");
    app.metric(&series).await
}

async fn wait_for_reloads(app: &crate::helpers::app::TestApp, result: &str, n: f64) {
    let series = format!("qminder_bridge_config_reloads_total{{result=\"{result}\"}}");
    app.wait_for_metric(&series, n, Duration::from_secs(10))
        .await;
}

/// Waits until the bridge has accepted `more` events beyond `since`.
async fn wait_for_traffic(app: &crate::helpers::app::TestApp, since: f64, more: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.metrics().await;
        let accepted: f64 = text
            .lines()
            .filter(|l| l.starts_with("qminder_bridge_events_accepted_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if accepted >= since + more {
            return accepted;
        }
        assert!(Instant::now() < deadline, "traffic stalled at {accepted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_a_secret_and_reloads_ten_times_under_traffic_without_a_non_2xx_or_a_lost_event() {
    let settings = test_settings(broker::shared());
    let mut secrets = Volume::new(&[("webhook", SECRET)]);
    let mut configs = Volume::new(&[]);
    configs.update(&[("bridge.toml", &config(&settings, &secrets, &["webhook"]))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let traffic = Traffic::start(&app, Instant::now(), 4, Duration::from_millis(10));
    let mut seen = wait_for_traffic(&app, 0.0, 50.0).await;

    // The new secret arrives in the Secret volume; then the ConfigMap lists both.
    secrets.update(&[("webhook", SECRET), ("webhook-new", NEW_SECRET)]);
    let both = config(&settings, &secrets, &["webhook", "webhook-new"]);
    configs.update(&[("bridge.toml", &both)]);
    wait_for_reloads(&app, "applied", 1.0).await;
    // Qminder signs with the new secret from now on; then the old one goes.
    traffic.sign_with(app.url(), NEW_SECRET);
    seen = wait_for_traffic(&app, seen, 50.0).await;
    let only_new = config(&settings, &secrets, &["webhook-new"]);
    configs.update(&[("bridge.toml", &only_new)]);
    wait_for_reloads(&app, "applied", 2.0).await;
    secrets.update(&[("webhook-new", NEW_SECRET)]);

    // Ten reloads in a row, each of a live key (the allow-list), traffic flowing.
    for n in 0..10 {
        let mut next: Settings = toml::from_str(&only_new).expect("TOML");
        next.server.allow_cidrs = vec![format!("127.0.0.0/{}", 8 + n)];
        configs.update(&[("bridge.toml", &toml::to_string(&next).expect("TOML"))]);
        wait_for_reloads(&app, "applied", f64::from(3 + n)).await;
        seen = wait_for_traffic(&app, seen, 10.0).await;
    }
    let (answers, _) = traffic.finish().await;

    let refused: Vec<_> = answers.iter().filter(|a| !a.ok()).collect();
    assert!(refused.is_empty(), "non-2xx answers: {refused:?}");
    assert!(answers.len() > 200, "only {} webhooks sent", answers.len());
    let topic = app.topic("ticket_created");
    let lost = crate::helpers::traffic::lost(&answers, &app.bootstrap, &[], &topic).await;
    assert_eq!(lost, Vec::<String>::new(), "lost");
    assert_eq!(reloads(&app, "invalid").await, 0.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_reload_it_cannot_apply_and_goes_on_under_the_old_configuration() {
    let settings = test_settings(broker::shared());
    let secrets = Volume::new(&[("webhook", SECRET)]);
    let good = config(&settings, &secrets, &["webhook"]);
    let mut configs = Volume::new(&[("bridge.toml", &good)]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let restart_key = good.replace("keep_alive_s = 30", "keep_alive_s = 31");
    assert_ne!(restart_key, good);
    let missing_secret = config(&settings, &secrets, &["webhook", "not-there"]);
    let cases: [(&str, String, &str); 4] = [
        ("not TOML", "[server\nlisten =".to_owned(), "invalid"),
        (
            "an unknown key",
            format!("{good}\n[typo]\nx = 1\n"),
            "invalid",
        ),
        ("a secret file that is not there", missing_secret, "invalid"),
        ("a key that needs a restart", restart_key, "restart_needed"),
    ];
    let mut counts = std::collections::HashMap::new();
    for (case, text, result) in cases {
        configs.update(&[("bridge.toml", &text)]);
        let n = counts.entry(result).or_insert(0.0);
        *n += 1.0;
        wait_for_reloads(&app, result, *n).await;
        let status = app
            .post_signed(&crate::helpers::traffic::ticket_created(1))
            .await;
        assert_eq!(status.status().as_u16(), 200, "{case}: still served");
        let ok = app
            .metric("qminder_bridge_config_last_reload_successful")
            .await;
        assert_eq!(ok, 0.0, "{case}");
    }
    assert_eq!(reloads(&app, "applied").await, 0.0);
    configs.update(&[("bridge.toml", &good)]);
    wait_for_reloads(&app, "applied", 1.0).await;
    app.stop().await;
}

/// SIGHUP, the signal operators send to ask for a reload, used to kill the bridge (its
/// default action) without draining. Ten in a row under traffic: every webhook answered
/// 2xx, memory and file descriptors flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup_ten_times_under_traffic_with_memory_and_descriptors_flat() {
    use crate::helpers::process::BridgeProcess;
    let bridge = BridgeProcess::start(broker::shared(), |_| {});
    bridge.wait_ready(Duration::from_secs(30)).await;
    let send = |n: u64| {
        let posts: Vec<_> = (0..20)
            .map(|i| bridge.post_signed(&crate::helpers::traffic::ticket_created(n * 100 + i)))
            .collect();
        futures_util::future::join_all(posts)
    };
    let mut statuses: Vec<u16> = send(0).await.into_iter().map(|(s, _)| s).collect();
    let before = bridge.rss_and_fds();
    let series = "qminder_bridge_config_reloads_total{result=\"applied\"}";
    for n in 1..=10 {
        let (posts, ()) = tokio::join!(send(n), async { bridge.signal("HUP") });
        statuses.extend(posts.into_iter().map(|(s, _)| s));
        let deadline = Instant::now() + Duration::from_secs(10);
        while bridge.metric(series).await != f64::from(u32::try_from(n).expect("n")) {
            assert!(
                Instant::now() < deadline,
                "reload {n} not applied:\n{}",
                bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    statuses.extend(send(11).await.into_iter().map(|(s, _)| s));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses.len(), 12 * 20);
    let after = bridge.settled_rss_and_fds(before.1).await;
    eprintln!("RSS and fds before the reloads {before:?}, after ten {after:?}");
    assert!(
        after.1 <= before.1,
        "descriptors grew: {before:?} -> {after:?}"
    );
    assert!(
        after.0 < before.0 + (8 << 20),
        "RSS grew: {before:?} -> {after:?}"
    );
    assert_eq!(
        bridge
            .metric("qminder_bridge_config_last_reload_successful")
            .await,
        1.0
    );
    bridge.terminate();
    assert_eq!(bridge.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A certificate and its key, as PEM.
fn certificate() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// The leaf certificate (DER) the bridge presented on the connection `client` used.
async fn presented(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().await.expect("an HTTPS answer");
    assert_eq!(response.status().as_u16(), 200);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>();
    info.and_then(|i| i.peer_certificate())
        .expect("a peer certificate")
        .to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

/// cert-manager renews a certificate by updating its Secret: new connections get the new
/// certificate, a connection already open keeps working, and a pair that does not match
/// is refused with the old one still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_renewed_certificate_to_new_connections_and_keeps_open_ones() {
    let (old_cert, old_key) = certificate();
    let mut tls = Volume::new(&[("tls.crt", &old_cert), ("tls.key", &old_key)]);
    let secrets = Volume::new(&[("webhook", SECRET)]);
    let mut settings = test_settings(broker::shared());
    settings.server.tls = Some(qminder_bridge::config::TlsSettings {
        cert_file: tls.path("tls.crt"),
        key_file: tls.path("tls.key"),
        http2: false,
    });
    let configs = Volume::new(&[("bridge.toml", &config(&settings, &secrets, &["webhook"]))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let healthz = format!("{}/healthz", app.address);
    let client = || {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .tls_info(true)
            .build()
            .expect("a client")
    };
    let open = client();
    assert_eq!(presented(&open, &healthz).await, der(&old_cert));

    let (new_cert, new_key) = certificate();
    tls.update(&[("tls.crt", &new_cert), ("tls.key", &new_key)]);
    wait_for_reloads(&app, "applied", 1.0).await;
    assert_eq!(presented(&client(), &healthz).await, der(&new_cert));
    assert_eq!(
        presented(&open, &healthz).await,
        der(&old_cert),
        "the open one"
    );

    let (other_cert, _) = certificate();
    tls.update(&[("tls.crt", &other_cert), ("tls.key", &new_key)]);
    wait_for_reloads(&app, "invalid", 1.0).await;
    assert_eq!(presented(&client(), &healthz).await, der(&new_cert));
    app.stop().await;
}

/// On Kubernetes the ConfigMap and the Secret are two volumes, updated independently: a
/// configuration naming a secret file that has not arrived yet is refused, then applied
/// as soon as the file is there, with nothing else changing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_a_configuration_refused_for_a_secret_file_once_the_file_arrives() {
    let settings = test_settings(broker::shared());
    let mut secrets = Volume::new(&[("webhook", SECRET)]);
    let configs = Volume::new(&[("bridge.toml", &config(&settings, &secrets, &["webhook"]))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let mut configs = configs;
    let both = config(&settings, &secrets, &["webhook", "webhook-new"]);
    configs.update(&[("bridge.toml", &both)]);
    wait_for_reloads(&app, "invalid", 1.0).await;

    secrets.update(&[("webhook", SECRET), ("webhook-new", NEW_SECRET)]);
    wait_for_reloads(&app, "applied", 1.0).await;
    let body = crate::helpers::traffic::ticket_created(3);
    let signature = crate::helpers::app::sign(NEW_SECRET, app.url(), body.as_bytes());
    let answer = app
        .post(crate::helpers::app::PATH, &body, Some(&signature))
        .await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        reloads(&app, "invalid").await,
        1.0,
        "refused once, not on every try"
    );
    app.stop().await;
}
