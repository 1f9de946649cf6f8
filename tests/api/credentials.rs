//! Kafka credentials renewed while the bridge runs: the SASL password changed on the
//! broker (the old one revoked), then in the Secret the bridge reads, under traffic.

use std::time::{Duration, Instant};

use qminder_bridge::secret::SecretSpec;

use crate::helpers::app::{SECRET, spawn_app_from, test_settings};
use crate::helpers::broker::Tansu;
use crate::helpers::traffic::Traffic;
use crate::helpers::volume::Volume;

const OLD: &str = "the-old-kafka-password";
const NEW: &str = "the-new-kafka-password";

/// Changes the bridge user's SCRAM password on the broker, authenticated with the old
/// one, by confluent-kafka's Admin API: from then on the old password is refused.
async fn change_password_on_the_broker(broker: &Tansu) {
    let mut script = std::process::Command::new("python3");
    script.arg("tests/clients/scram_password.py").args([
        broker.bootstrap().as_str(),
        "bridge",
        OLD,
        NEW,
    ]);
    let output = tokio::task::spawn_blocking(move || script.output())
        .await
        .expect("the script")
        .expect("python3 runs (scripts/setup installs confluent-kafka)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_password_rotated_on_the_broker_and_in_the_secret_loses_no_delivery() {
    let broker = tokio::task::spawn_blocking(|| Tansu::start_scram("bridge", OLD))
        .await
        .expect("a SCRAM broker");
    let mut secrets = Volume::new(&[("webhook", SECRET), ("kafka-password", OLD)]);
    let mut settings = test_settings(&broker.bootstrap());
    settings.reload.watch_interval_ms = 50;
    settings.endpoints[0].secrets = vec![SecretSpec::parse(&format!(
        "file:{}",
        secrets.path("webhook").display()
    ))];
    crate::helpers::broker::use_scram(
        &mut settings,
        "bridge",
        SecretSpec::parse(&format!(
            "file:{}",
            secrets.path("kafka-password").display()
        )),
    );
    let configs = Volume::new(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let traffic = Traffic::start(&app, Instant::now(), 4, Duration::from_millis(10));
    let accepted = "qminder_bridge_events_forwarded_total{event_type=\"ticket_created\"";
    let forwarded = move |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(accepted))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let on = &app;
    let wait_for = |more: f64| async move {
        let app = on;
        let since = forwarded(app.metrics().await);
        let deadline = Instant::now() + Duration::from_secs(30);
        while forwarded(app.metrics().await) < since + more {
            assert!(Instant::now() < deadline, "traffic stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(50.0).await;

    // The broker's password changes first (the old one revoked), then the Secret.
    change_password_on_the_broker(&broker).await;
    // A typo first: the producer made with it cannot connect, so it must not replace the
    // one still connected with the old password (the broker refuses the old one only for
    // new connections).
    secrets.update(&[
        ("webhook", SECRET),
        ("kafka-password", "a-mistyped-password"),
    ]);
    let applied = "qminder_bridge_config_reloads_total{result=\"applied\"}";
    app.wait_for_metric(applied, 1.0, Duration::from_secs(10))
        .await;
    wait_for(100.0).await;
    let renewals = app.metric("qminder_bridge_producer_renewals_total").await;
    assert_eq!(
        renewals, 0.0,
        "a producer that cannot connect replaced one that can"
    );
    secrets.update(&[("webhook", SECRET), ("kafka-password", NEW)]);
    app.wait_for_metric(applied, 2.0, Duration::from_secs(10))
        .await;
    // The producer that authenticated with the old password is gone (flushed): every
    // record from now on goes over connections made with the new one.
    app.wait_for_metric(
        "qminder_bridge_producer_renewals_total",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    wait_for(100.0).await;
    let (answers, _) = traffic.finish().await;

    let refused: Vec<_> = answers.iter().filter(|a| !a.ok()).collect();
    assert!(refused.is_empty(), "non-2xx answers: {refused:?}");
    const SASL: &[(&str, &str)] = &[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "bridge"),
        ("sasl.password", NEW),
    ];
    let topic = app.topic("ticket_created");
    let lost = crate::helpers::traffic::lost(&answers, &broker.bootstrap(), SASL, &topic).await;
    assert_eq!(lost, Vec::<String>::new(), "lost");
    app.stop().await;
}

/// `[reconcile]` reads the bridge's topics back and takes a lease on Kafka in every run:
/// after the password changed, its runs use the new one too, also when the configuration
/// points at another file for it (the reconciler read the configuration once, at start,
/// before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_runs_on_with_the_renewed_password() {
    use crate::helpers::qminder_sim::{QminderSim, account};
    let broker = tokio::task::spawn_blocking(|| Tansu::start_scram("bridge", OLD))
        .await
        .expect("a SCRAM broker");
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let tickets = account(7, 1, 40, now - 50 * 60_000, 40 * 60_000, now - 60_000);
    let sim = QminderSim::start("reconcile-api-key-of-the-test", tickets).await;
    let mut secrets = Volume::new(&[
        ("webhook", SECRET),
        ("kafka-password", OLD),
        ("api-key", "reconcile-api-key-of-the-test"),
    ]);
    let file = |name: &str| SecretSpec::parse(&format!("file:{}", secrets.path(name).display()));
    let mut settings = test_settings(&broker.bootstrap());
    settings.reload.watch_interval_ms = 50;
    settings.endpoints[0].secrets = vec![file("webhook")];
    settings.endpoints[0].qminder = Some(sim.settings(file("api-key")));
    settings.reconcile.enabled = true;
    settings.reconcile.interval_s = 1;
    settings.reconcile.lag_s = 0;
    settings.reconcile.lookback_hours = 1;
    crate::helpers::broker::use_scram(&mut settings, "bridge", file("kafka-password"));
    let configs = Volume::new(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let app = spawn_app_from(&configs.path("bridge.toml")).await;
    let runs = |result: &'static str| {
        let app = &app;
        async move {
            let series = format!("qminder_bridge_reconcile_runs_total{{result=\"{result}\"}}");
            app.metric(&series).await
        }
    };
    let completed_by = |n: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while runs("completed").await < n {
            assert!(
                Instant::now() < deadline,
                "{} failed runs",
                runs("failed").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    completed_by(1.0).await;

    change_password_on_the_broker(&broker).await;
    // The new password in a file of its own, and the configuration pointed at it (a `file:`
    // reference is read again whenever a client is made; a changed reference is not).
    secrets.update(&[
        ("webhook", SECRET),
        ("kafka-password", OLD),
        ("kafka-password-2", NEW),
        ("api-key", "reconcile-api-key-of-the-test"),
    ]);
    let mut configs = configs;
    settings.kafka.security.sasl_password = Some(SecretSpec::parse(&format!(
        "file:{}",
        secrets.path("kafka-password-2").display()
    )));
    configs.update(&[("bridge.toml", &toml::to_string(&settings).expect("TOML"))]);
    let applied = "qminder_bridge_config_reloads_total{result=\"applied\"}";
    app.wait_for_metric(applied, 1.0, Duration::from_secs(10))
        .await;
    let (done, failed) = (runs("completed").await, runs("failed").await);
    completed_by(done + 2.0).await;
    assert_eq!(
        runs("failed").await,
        failed,
        "runs failed after the rotation"
    );
    app.stop().await;
}
