//! Tests of the metrics: every one declared is exported, every series exists at zero.

use super::*;

fn labels() -> Labels<'static> {
    Labels {
        endpoints: vec!["/hook"],
        event_types: vec!["ticket_created"],
        routes: vec![("ticket_created", "qminder.ticket_created")],
        reject_reasons: vec!["invalid_signature"],
        failure_reasons: vec!["timeout"],
        rebuildable_types: vec!["ticket_created"],
        registrations: vec![("/hook", "https://b.example/hook")],
    }
}

#[test]
fn every_declared_metric_is_exported_under_the_one_prefix() {
    let m = Metrics::new(&labels());
    // These get series only from librdkafka's statistics: give each one.
    let k = &m.kafka;
    k.broker_rtt.with_label_values(&["1", "p99"]).set(0.0);
    k.batch_messages.with_label_values(&["t"]).set(0.0);
    for gauge in [&k.broker_in_flight, &k.broker_waiting] {
        gauge.with_label_values(&["1"]).set(0);
    }
    for counter in [
        &k.broker_transmit_errors,
        &k.broker_request_timeouts,
        &k.broker_retries,
        &k.broker_connects,
        &k.broker_disconnects,
    ] {
        counter.with_label_values(&["1"]);
    }
    // This one only once a topic is held.
    m.spool.held_events.with_label_values(&["t"]).set(0);
    let text = m.render();
    for name in m.declared() {
        assert!(name.starts_with(PREFIX), "{name}");
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is not exported"
        );
    }
    let exported = text.matches(&format!("# TYPE {PREFIX}")).count();
    assert_eq!(
        exported,
        m.declared().len(),
        "exported but not declared here"
    );
}

#[test]
fn exports_every_series_at_zero_before_any_traffic() {
    let m = Metrics::new(&labels());
    let text = m.render();
    for line in [
        r#"qminder_bridge_events_accepted_total{endpoint="/hook",event_type="ticket_created"} 0"#,
        r#"qminder_bridge_events_rejected_total{endpoint="/hook",reason="invalid_signature"} 0"#,
        r#"qminder_bridge_events_forwarded_total{event_type="ticket_created",topic="qminder.ticket_created"} 0"#,
        r#"qminder_bridge_events_failed_total{event_type="ticket_created",reason="timeout"} 0"#,
        "qminder_bridge_requests_in_flight 0",
        "qminder_bridge_producer_restarts_total 0",
        "qminder_bridge_kafka_delivery_duration_seconds_count 0",
        "qminder_bridge_kafka_queue_messages 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("qminder_bridge_build_info{version=\""));
    #[cfg(target_os = "linux")]
    assert!(text.contains("process_resident_memory_bytes"));
}
