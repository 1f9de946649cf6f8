#!/usr/bin/env python3
"""Reads one record the bridge published with confluent-kafka and extracts its trace
context with the OpenTelemetry Python SDK's W3C propagator (as a consumer's
instrumentation would). Prints {"trace_id","span_id","sampled","headers"} as JSON, ids in
lower-case hex.

usage: trace_of_record.py BOOTSTRAP TOPIC PARTITION OFFSET
       trace_of_record.py BOOTSTRAP TOPIC --id EVENT_ID   (the record of that CloudEvents id,
                                                           from any partition: spool mode)
"""
import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def wanted(bootstrap, topic, where):
    """A consumer on TOPIC, and a test of whether a message is the one asked for."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"qminder-bridge-trace-check-{time.monotonic_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    if where[0] == "--id":
        event_id = where[1].encode()
        consumer.subscribe([topic])
        return consumer, lambda m: event_id in m.value() or (b"ce_id", event_id) in (m.headers() or [])
    partition, offset = int(where[0]), int(where[1])
    consumer.assign([TopicPartition(topic, partition, offset)])
    return consumer, lambda m: m.offset() == offset


def main() -> int:
    bootstrap, topic = sys.argv[1], sys.argv[2]
    consumer, is_it = wanted(bootstrap, topic, sys.argv[3:5])
    deadline = time.monotonic() + 20
    message = None
    while time.monotonic() < deadline and message is None:
        m = consumer.poll(0.5)
        if m is not None and not m.error() and is_it(m):
            message = m
    consumer.close()
    if message is None:
        print(f"no such record in {topic}: {sys.argv[3:5]}", file=sys.stderr)
        return 1
    headers = {k: v.decode() for k, v in (message.headers() or [])}
    context = TraceContextTextMapPropagator().extract(carrier=headers)
    span_context = trace.get_current_span(context).get_span_context()
    print(json.dumps({
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
        "sampled": span_context.trace_flags.sampled,
        "valid": span_context.is_valid,
        "headers": sorted(headers),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
