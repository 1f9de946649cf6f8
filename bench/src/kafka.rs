//! The broker's share of the latency: librdkafka producing straight to the broker, no HTTP.
//!
//! Open loop at a fixed rate, like the bridge's latency run: record `i` is scheduled at
//! `start + i / rate` and its latency counts from then until librdkafka's delivery report.
//! The producer is configured as the bridge configures its own (`acks=all`, idempotence,
//! the bridge's `linger.ms` and requests in flight, plus the same overrides); values are bodies from
//! [`events`](crate::events), keys spread like ticket ids, over a 3-partition topic of its
//! own. What this measures is the floor under the bridge's latency on the same broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::events::{self, SizeRange};
use crate::load::Window;
use crate::stats::{Tally, micros};

/// What to produce, where, how fast.
#[derive(Debug, Clone)]
pub struct ProducePlan {
    pub bootstrap: String,
    pub topic: String,
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub sizes: SizeRange,
    /// librdkafka properties on top of the bridge's (`acks=all`, idempotence).
    pub overrides: Vec<(String, String)>,
}

/// Creates the topic, then produces open loop; `on_window` as in [`crate::load::run`].
/// A record's "status" in the tally is 200 when delivered, 500 when librdkafka failed it.
///
/// # Errors
/// When the runtime, the clients or the topic cannot be created.
pub fn run(plan: &ProducePlan, on_window: impl FnOnce(Window)) -> Result<Tally, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(run_async(plan, on_window))
        .map_err(|e| e.to_string())
}

async fn run_async(
    plan: &ProducePlan,
    on_window: impl FnOnce(Window),
) -> Result<Tally, KafkaError> {
    create_topic(plan).await?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &plan.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "5000");
    for (key, value) in &plan.overrides {
        config.set(key, value);
    }
    let producer: FutureProducer = config.create()?;
    let window = Window::starting_soon(plan.warmup, plan.duration);
    on_window(window);
    produce(plan, &producer, window).await
}

async fn create_topic(plan: &ProducePlan) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &plan.bootstrap)
        .create()?;
    let topic = NewTopic::new(&plan.topic, 3, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

async fn produce(
    plan: &ProducePlan,
    producer: &FutureProducer,
    window: Window,
) -> Result<Tally, KafkaError> {
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let unsent = Arc::new(AtomicU64::new(0));
    let mut waits = tokio::task::JoinSet::new();
    for i in 0u64.. {
        let scheduled = window.start + Duration::from_secs_f64(i as f64 / plan.rate);
        if scheduled >= window.end {
            break;
        }
        let body = events::body(i, plan.sizes);
        let key = (7_000_000 + i % 100_000).to_string();
        tokio::time::sleep_until(scheduled.into()).await;
        let record = FutureRecord::to(&plan.topic).key(&key).payload(&body);
        let Ok(report) = producer.send_result(record) else {
            unsent.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let tally = Arc::clone(&tally);
        let in_window = scheduled >= window.measure;
        waits.spawn(async move {
            let delivered = matches!(report.await, Ok(Ok(_)));
            let done = Instant::now();
            let mut tally = tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tally.answer(if delivered { 200 } else { 500 }, in_window);
            if in_window {
                tally.latency.saturating_record(micros(done - scheduled));
            }
        });
    }
    while waits.join_next().await.is_some() {}
    let mut tally = std::mem::take(
        &mut *tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    tally.unsent = unsent.load(Ordering::Relaxed);
    Ok(tally)
}
