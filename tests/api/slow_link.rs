//! A slow, distant link to Kafka (a cloud cluster in another zone) is not an outage: with
//! every chunk held 200 ms each way by a proxy and `delivery_timeout_ms = 2000`, steady
//! signed traffic gets 2xx only, and every one is in Kafka. Two things make it so: the
//! readiness probe waits long enough for a distant cluster's first answer, and the
//! producer keeps 5 requests in flight once the probe has measured the distance (with 1,
//! forced by `kafka.max_in_flight_requests = 1`, 86 of 93 answers were 503 here).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::helpers::broker::{Tansu, free_port};
use crate::helpers::kafka;
use crate::helpers::proxy::DelayProxy;
use crate::helpers::spawn_app_with;
use crate::helpers::traffic::Traffic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_to_kafka_is_not_an_outage() {
    let _timed = crate::helpers::HEAVY.read().await;
    let tansu_port = free_port();
    let proxy = DelayProxy::start(tansu_port, Duration::from_millis(200)).await;
    let _broker = Tansu::start_with(tansu_port, proxy.port);
    let app = spawn_app_with(&format!("127.0.0.1:{}", proxy.port), |s| {
        s.kafka.delivery_timeout_ms = 2000;
        s.server.request_timeout_ms = 4000;
        s.server.shutdown_timeout_ms = 6000;
    })
    .await;
    let traffic = Traffic::start(&app, Instant::now(), 16, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (answers, _) = traffic.finish().await;
    let failed: Vec<u16> = answers
        .iter()
        .filter(|a| !a.ok())
        .map(|a| a.status)
        .collect();
    let slowest = answers
        .iter()
        .map(|a| a.done - a.sent)
        .max()
        .unwrap_or_default();
    println!(
        "slow link: {} answers, {} not 2xx, slowest {:.2} s",
        answers.len(),
        failed.len(),
        slowest.as_secs_f64()
    );
    assert!(answers.len() > 200, "{} answers", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} not 2xx: {failed:?}",
        failed.len(),
        answers.len()
    );
    let mut missing: HashSet<String> = answers.iter().map(|a| a.id.to_string()).collect();
    let (bootstrap, topic) = (app.bootstrap.clone(), app.topic("ticket_created"));
    tokio::task::spawn_blocking(move || {
        kafka::scan(&bootstrap, &topic, Duration::from_secs(60), |record| {
            missing.remove(record.key_str().expect("a key"));
            missing.is_empty()
        });
    })
    .await
    .expect("reader");
    app.stop().await;
}
