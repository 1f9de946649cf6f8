//! Micro-benchmarks of the bridge's per-event CPU work, without HTTP or Kafka:
//! `signature::Verifier::verify` (HMAC-SHA256 of url ‖ body, plus the SHA-256 event id),
//! `event::parse` (byte-exact envelope reading) and `record::encode` (structured CloudEvent),
//! each alone and all three in a row, for bodies of 0.5, 2 and 16 KiB.
//!
//! `cargo bench --bench hot_path` (add `-- --quick` for a short run). Under `cargo test
//! --all-targets` each benchmark runs once, as a smoke test.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use qminder_bridge::event;
use qminder_bridge::record::{self, Context, RecordFormat};
use qminder_bridge::routing::Route;
use qminder_bridge::signature::Verifier;
use secrecy::SecretString;
use sha2::Sha256;
use time::OffsetDateTime;

const URL: &str = "https://bridge.example.com/webhooks/qminder";
const SECRET: &str = "bench-secret-7f3c9a";
const SIZES: [usize; 3] = [512, 2048, 16 * 1024];

/// A `ticket_called` webhook shaped like Qminder's, padded with a note to `size` bytes.
fn body(size: usize) -> Bytes {
    let head = r##"{"type":"ticket_called","data":{"id":"7024061","status":"CALLED","source":"MANUAL","line":12345,"firstName":"Zoë","lastName":"Åström","phoneNumber":37255512345,"email":"visitor@example.com","created":{"date":"2026-11-26T09:12:03.120Z"},"called":{"date":"2026-11-26T09:20:41.004Z","caller":90123,"desk":4},"orderAfter":null,"labels":[{"color":"#ffd700","value":"VIP"}],"extra":[{"title":"Notes","value":""##;
    let tail = r#""}]}}"#;
    let mut text = String::with_capacity(size);
    text.push_str(head);
    let words = "customer asked about passport renewal and needs a translator ";
    while text.len() + tail.len() < size {
        let room = size - tail.len() - text.len();
        text.push_str(&words[..room.min(words.len())]);
    }
    text.push_str(tail);
    Bytes::from(text)
}

/// What Qminder would send in `X-Qminder-Signature`, computed independently of the bridge.
fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(URL.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn hot_path(c: &mut Criterion) {
    let verifier = Verifier::new(URL, &[SecretString::from(SECRET)]);
    let route = Route {
        id: 0,
        topic: "qminder.ticket_called".to_owned(),
        label: "ticket_called".to_owned(),
    };
    let ctx = Context {
        source: URL,
        received_at: OffsetDateTime::now_utc(),
        trace: None,
    };
    let mut group = c.benchmark_group("hot_path");
    for size in SIZES {
        let body = body(size);
        assert_eq!(body.len(), size);
        let signature = sign(&body);
        let header = Some(signature.as_bytes());
        let verified = verifier
            .verify(header, body.clone())
            .expect("a valid signature");
        let parsed = event::parse(&verified).expect("a well-formed event");
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function(BenchmarkId::new("verify", size), |b| {
            b.iter(|| verifier.verify(black_box(header), black_box(body.clone())))
        });
        group.bench_function(BenchmarkId::new("parse", size), |b| {
            b.iter(|| event::parse(black_box(&verified)).map(|e| e.data.len()))
        });
        group.bench_function(BenchmarkId::new("encode", size), |b| {
            b.iter(|| {
                record::encode(
                    RecordFormat::Structured,
                    black_box(&verified),
                    black_box(&parsed),
                    &route,
                    ctx,
                )
                .value
                .len()
            })
        });
        group.bench_function(BenchmarkId::new("verify+parse+encode", size), |b| {
            b.iter(|| {
                let verified = verifier
                    .verify(black_box(header), black_box(body.clone()))
                    .expect("a valid signature");
                let parsed = event::parse(&verified).expect("a well-formed event");
                let record =
                    record::encode(RecordFormat::Structured, &verified, &parsed, &route, ctx);
                record.value.len()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hot_path
}
criterion_main!(benches);
