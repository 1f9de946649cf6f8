//! Every change an operator makes to a running bridge, in one run of the real binary under
//! steady signed traffic over keep-alive TLS connections: a webhook secret rotated, the
//! listener's certificate renewed, the Kafka password changed (the old one revoked on the
//! broker first), then ten reloads in a row. No answer but 2xx, no event lost, no restart,
//! memory and file descriptors flat.

use std::time::{Duration, Instant};

use qminder_bridge::config::{Settings, TlsSettings};
use qminder_bridge::secret::SecretSpec;

use crate::helpers::app::{SECRET, test_settings};
use crate::helpers::broker::{Tansu, free_port};
use crate::helpers::process::BridgeProcess;
use crate::helpers::traffic::{Traffic, lost};
use crate::helpers::volume::Volume;

const OLD_PASSWORD: &str = "the-old-kafka-password";
const NEW_PASSWORD: &str = "the-new-kafka-password";
const NEW_SECRET: &str = "the-secret-of-the-new-registration";

fn certificate() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// The Secret volume's files: webhook secrets, Kafka password, TLS pair.
struct Secrets {
    webhook: Vec<(&'static str, &'static str)>,
    password: &'static str,
    tls: (String, String),
}

impl Secrets {
    fn publish(&self, volume: &mut Volume) {
        let mut files: Vec<(&str, &str)> = self.webhook.clone();
        files.push(("kafka-password", self.password));
        files.push(("tls.crt", &self.tls.0));
        files.push(("tls.key", &self.tls.1));
        volume.update(&files);
    }
}

/// The bridge's settings: TLS, SASL and webhook secrets from `volume`.
fn settings(broker: &Tansu, volume: &Volume) -> Settings {
    let file = |name: &str| SecretSpec::parse(&format!("file:{}", volume.path(name).display()));
    let mut s = test_settings(&broker.bootstrap());
    s.server.listen = format!("127.0.0.1:{}", free_port());
    s.reload.watch_interval_ms = 50;
    s.server.tls = Some(TlsSettings {
        cert_file: volume.path("tls.crt"),
        key_file: volume.path("tls.key"),
        http2: false,
    });
    s.endpoints[0].secrets = vec![file("webhook")];
    crate::helpers::broker::use_scram(&mut s, "bridge", file("kafka-password"));
    s
}

async fn wait_for(bridge: &BridgeProcess, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.metric(series).await < want {
        assert!(
            Instant::now() < deadline,
            "{series} < {want}\n{}",
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied(bridge: &BridgeProcess, n: u32) {
    let series = "qminder_bridge_config_reloads_total{result=\"applied\"}";
    wait_for(bridge, series, f64::from(n)).await;
}

/// Waits for `more` events forwarded to Kafka beyond what is counted now.
async fn more_traffic(bridge: &BridgeProcess, more: f64) {
    let series = "qminder_bridge_events_forwarded_total{event_type=\"ticket_created\"";
    let text = bridge.metrics().await;
    let now = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let since = now(&text);
    let deadline = Instant::now() + Duration::from_secs(30);
    while now(&bridge.metrics().await) < since + more {
        assert!(
            Instant::now() < deadline,
            "traffic stalled\n{}",
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_bridge_takes_every_live_change_under_traffic_without_a_non_2xx_or_a_lost_event()
{
    let _timed = crate::helpers::HEAVY.read().await;
    let broker = tokio::task::spawn_blocking(|| Tansu::start_scram("bridge", OLD_PASSWORD))
        .await
        .expect("a SCRAM broker");
    let mut secrets = Secrets {
        webhook: vec![("webhook", SECRET)],
        password: OLD_PASSWORD,
        tls: certificate(),
    };
    let mut volume = Volume::new(&[]);
    secrets.publish(&mut volume);
    let mut config = settings(&broker, &volume);
    let dir = volume.path("");
    let webhook_files = |names: &[&str]| -> Vec<SecretSpec> {
        let file = |name: &&str| format!("file:{}", dir.join(name).display());
        names.iter().map(|n| SecretSpec::parse(&file(n))).collect()
    };
    let mut bridge = BridgeProcess::launch(config.clone());
    bridge.wait_ready(Duration::from_secs(30)).await;
    let url = config.endpoints[0].url.clone();
    let started = Instant::now();
    let traffic = Traffic::start_on(&bridge.address, &url, started, 8, Duration::from_millis(20));
    more_traffic(&bridge, 200.0).await;
    let before = bridge.rss_and_fds();

    // 1. The webhook secret: the new one beside the old, then Qminder signs with it, then
    //    the old one goes.
    secrets.webhook.push(("webhook-new", NEW_SECRET));
    secrets.publish(&mut volume);
    config.endpoints[0].secrets = webhook_files(&["webhook", "webhook-new"]);
    bridge.rewrite_config(&config);
    applied(&bridge, 1).await;
    traffic.sign_with(&url, NEW_SECRET);
    more_traffic(&bridge, 100.0).await;
    config.endpoints[0].secrets = webhook_files(&["webhook-new"]);
    bridge.rewrite_config(&config);
    applied(&bridge, 2).await;

    // 2. The listener's certificate, renewed.
    secrets.tls = certificate();
    secrets.publish(&mut volume);
    applied(&bridge, 3).await;
    more_traffic(&bridge, 100.0).await;

    // 3. The Kafka password: changed on the broker (the old one refused from then on),
    //    then in the Secret.
    let bootstrap = broker.bootstrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("tests/clients/scram_password.py")
            .args([bootstrap.as_str(), "bridge", OLD_PASSWORD, NEW_PASSWORD])
            .output()
            .expect("python3 runs")
    });
    assert!(output.await.expect("the script").status.success());
    secrets.password = NEW_PASSWORD;
    secrets.publish(&mut volume);
    applied(&bridge, 4).await;
    wait_for(&bridge, "qminder_bridge_producer_renewals_total", 1.0).await;
    more_traffic(&bridge, 100.0).await;

    // 4. Ten reloads in a row, each of a live key.
    for n in 0..10 {
        config.server.allow_cidrs = vec![format!("127.0.0.0/{}", 8 + n)];
        bridge.rewrite_config(&config);
        applied(&bridge, 5 + n).await;
        more_traffic(&bridge, 20.0).await;
    }
    let (answers, _) = traffic.finish().await;
    let elapsed = started.elapsed();

    let after = bridge.settled_rss_and_fds(before.1).await;
    let refused: Vec<_> = answers.iter().filter(|a| !a.ok()).collect();
    eprintln!(
        "{} webhooks in {elapsed:?} ({:.0}/s), {} not 2xx; RSS and fds before the changes {before:?}, after {after:?}",
        answers.len(),
        answers.len() as f64 / elapsed.as_secs_f64(),
        refused.len()
    );
    assert!(refused.is_empty(), "non-2xx answers: {refused:?}");
    assert!(bridge.running(), "the bridge restarted or died");
    assert!(
        after.1 <= before.1,
        "descriptors grew: {before:?} -> {after:?}"
    );
    assert!(
        after.0 < before.0 + (16 << 20),
        "RSS grew: {before:?} -> {after:?}"
    );
    const SASL: &[(&str, &str)] = &[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "bridge"),
        ("sasl.password", NEW_PASSWORD),
    ];
    let topic = format!("{}.ticket_created", config.kafka.topic_prefix);
    let lost = lost(&answers, &broker.bootstrap(), SASL, &topic).await;
    assert_eq!(lost, Vec::<String>::new(), "lost");
    bridge.terminate();
    assert_eq!(bridge.wait_exit(Duration::from_secs(20)), Some(0));
}
