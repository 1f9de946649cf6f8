#!/usr/bin/env python3
"""Reads one record the bridge published with confluent-kafka and extracts its trace
context with the OpenTelemetry Python SDK's W3C propagator (as a consumer's
instrumentation would). Prints {"trace_id","span_id","sampled","headers"} as JSON, ids in
lower-case hex.

usage: trace_of_record.py BOOTSTRAP TOPIC PARTITION OFFSET
"""
import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main() -> int:
    bootstrap, topic, partition, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "qminder-bridge-trace-check",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 15
    message = None
    while time.monotonic() < deadline and message is None:
        m = consumer.poll(0.5)
        if m is not None and not m.error() and m.offset() == offset:
            message = m
    consumer.close()
    if message is None:
        print(f"no record at {topic}/{partition}@{offset}", file=sys.stderr)
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
