#!/usr/bin/env python3
"""Writes one spool segment of about 256 MiB (2 KiB records, spool format 1) into DIR, for
measuring what start-up recovery and `spool status` cost in memory (docs/reliability.md,
"How much memory"). The frame layout is src/delivery/spool/frame.rs's.

    python3 scripts/spikes/big_segment.py DIR [MiB]
    /usr/bin/time -f '%M KiB' qminder-bridge spool status --config <a config with spool.dir = DIR>
"""
import os
import struct
import sys
import zlib


def field(b):
    return struct.pack("<I", len(b)) + b


def main():
    where = sys.argv[1]
    target = int(sys.argv[2] if len(sys.argv) > 2 else 256) * 1024 * 1024 - 4096
    os.makedirs(where, exist_ok=True)
    value = b'{"specversion":"1.0","data":{"note":"' + b"p" * 1900 + b'"}}'
    seq, size = 0, 0
    with open(os.path.join(where, "%020d.seg" % 0), "wb") as out:
        while size < target:
            payload = (
                struct.pack("<QQ", seq, 1764979200000)
                + field(b"id%d" % seq)
                + field(b"qminder.ticket_created")
                + field(b"ticket_created")
                + b"\x01" + field(b"%d" % (seq % 1000))
                + field(value)
                + struct.pack("<I", 1) + field(b"content-type") + field(b"application/cloudevents+json")
            )
            frame = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
            out.write(frame)
            size += len(frame)
            seq += 1
    print(f"{seq} records, {size} bytes")


if __name__ == "__main__":
    main()
