#!/usr/bin/env python3
"""Reads one record the bridge published, with clients nobody on this project wrote:
confluent-kafka to consume, the CloudEvents SDK's Kafka binding to parse (structured or
binary mode, detected from the headers). Prints what the SDK understood, as JSON.

usage: read_cloudevent.py BOOTSTRAP TOPIC PARTITION OFFSET
"""
import json
import sys
import time

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Consumer, TopicPartition


def main() -> int:
    bootstrap, topic, partition, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "qminder-bridge-python-check",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 15
    message = None
    while time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(f"consume error: {m.error()}", file=sys.stderr)
            return 1
        if m.offset() == offset:
            message = m
            break
    consumer.close()
    if message is None:
        print(f"no record at {topic}/{partition}@{offset}", file=sys.stderr)
        return 1
    headers = {k: v for k, v in (message.headers() or [])}
    event = from_kafka(KafkaMessage(headers=headers, key=message.key(), value=message.value()), JSONFormat())
    attributes = {}
    for name, value in event.get_attributes().items():
        attributes[name] = value.isoformat() if hasattr(value, "isoformat") else value
    print(json.dumps({
        "mode": "binary" if any(k.startswith("ce_") for k in headers) else "structured",
        "key": message.key().decode() if message.key() is not None else None,
        "attributes": attributes,
        "data": event.get_data(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
