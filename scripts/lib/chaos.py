"""Fault scenarios for qminder-bridge: drive signed traffic at the bridge and a real tansu
broker, break things (freeze the broker with SIGSTOP, SIGKILL the bridge, fill the spool,
overload it), then check with an independent consumer (confluent-kafka) that every event
answered 2xx is in Kafka. Run through scripts/chaos."""

import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BRIDGE = os.path.join(ROOT, "target", "release", "qminder-bridge")
TANSU = shutil.which("tansu") or os.path.expanduser("~/.cargo/bin/tansu")
SCALE = 0.4 if os.environ.get("QUICK") else 1.0
SECRET = "chaos-secret"
URL = "https://bridge.example.com/webhooks/qminder"
PATH = "/webhooks/qminder"
TYPES = ["ticket_created", "ticket_called", "ticket_changed", "ticket_served", "line_changed"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, within, what):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"chaos: {what} did not happen within {within}s")


class Tansu:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chaos-tansu-")
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._listening, 20, "tansu listening")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        self.thaw()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Bridge:
    """The bridge as a process; restartable on the same config (and spool dir)."""

    def __init__(self, bootstrap, prefix, spool_dir=None, extra=""):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chaos-bridge-")
        self.config = os.path.join(self.dir, "bridge.toml")
        spool = f'[spool]\nenabled = true\ndir = "{spool_dir}"\n' if spool_dir else ""
        with open(self.config, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:{self.port}"
{extra_server(extra)}
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{prefix}"
create_topics = true
partitions = 3
replication_factor = 1
health_interval_ms = 500
{spool}{extra_rest(extra)}
[[endpoints]]
path = "{PATH}"
url = "{URL}"
secrets = ["env:CHAOS_SECRET"]
""")
        self.proc = None
        self.peak_rss_kib = 0
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "bridge.log"), "a")
        self.proc = subprocess.Popen(
            [BRIDGE, "serve", "--config", self.config],
            env={**os.environ, "CHAOS_SECRET": SECRET, "RUST_LOG": "warn"},
            stdout=log, stderr=log)
        wait_for(self.ready, 30, "bridge ready")

    def ready(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            c.request("GET", "/readyz")
            return c.getresponse().status == 200
        except OSError:
            return False

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        except OSError:
            pass
        return self.peak_rss_kib

    def kill(self):
        self.rss_kib()
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.alive():
            self.rss_kib()
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def extra_server(extra):
    return extra.split("||")[0] if extra else ""


def extra_rest(extra):
    return extra.split("||")[1] if extra and "||" in extra else ""


class Load:
    """Signed, unique events from `threads` keep-alive connections, each paced to
    rate/threads per second (a thread whose request hangs falls behind, as a real sender
    would). Records every answer."""

    def __init__(self, bridge, rate, threads):
        self.bridge, self.rate, self.threads = bridge, rate, threads
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses = {}
        self.ok_ids = set()
        self.reject_latencies = []
        self.stop_flag = threading.Event()
        self.seq = 0
        self.workers = []

    def body(self):
        with self.lock:
            self.seq += 1
            n = self.seq
        event_type = TYPES[n % len(TYPES)]
        data = {"id": str(100000 + n % 5000), "status": "NEW", "line": 12345, "n": n,
                "firstName": "Jane", "lastName": "Eyre", "phoneNumber": 12125551234,
                "created": {"date": "2026-11-26T10:00:00Z"},
                "extra": [{"title": "note", "value": "x" * random.randint(300, 1500)}]}
        return json.dumps({"type": event_type, "data": data}).encode()

    def worker(self):
        interval = self.threads / self.rate
        conn = None
        next_at = time.monotonic()
        while not self.stop_flag.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(min(next_at - now, 0.1))
                continue
            next_at += interval
            body = self.body()
            sig = hmac.new(SECRET.encode(), URL.encode() + body, hashlib.sha256).hexdigest()
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=30)
                conn.request("POST", PATH, body, {"X-Qminder-Signature": sig,
                                                  "Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                status = "conn_error"
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            with self.lock:
                self.sent += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if isinstance(status, int) and 200 <= status < 300:
                    self.ok_ids.add(json.loads(text)["id"])
                elif status == 503:
                    self.reject_latencies.append(elapsed)

    def start(self):
        for _ in range(self.threads):
            t = threading.Thread(target=self.worker, daemon=True)
            t.start()
            self.workers.append(t)

    def stop(self):
        self.stop_flag.set()
        for t in self.workers:
            t.join(40)


def ids_in_kafka(bootstrap, prefix, wanted, within=90):
    """Unique CloudEvents ids found in the bridge's topics, reading until every wanted id
    is found or `within` seconds pass."""
    topics = [f"{prefix}.{t}" for t in TYPES]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{prefix}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(timeout=10)
    parts = [TopicPartition(t, p, 0) for t in topics if t in md.topics
             for p in md.topics[t].partitions]
    c.assign(parts)
    found = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not wanted <= found:
        for m in c.consume(500, 0.5):
            if m.error() is None:
                found.add(json.loads(m.value())["id"])
    c.close()
    return found


def run(name, load, bridge, tansu, prefix, timeline, duration):
    """Runs `load` for `duration` seconds, calling timeline actions at their times."""
    print(f"\n== {name}", flush=True)
    start = time.monotonic()
    load.start()
    for at, what, action in sorted(timeline, key=lambda x: x[0]):
        while time.monotonic() - start < at * SCALE:
            bridge.rss_kib()
            time.sleep(0.05)
        print(f"   t={time.monotonic() - start:5.1f}s  {what}", flush=True)
        action()
    while time.monotonic() - start < duration * SCALE:
        bridge.rss_kib()
        time.sleep(0.1)
    load.stop()
    found = ids_in_kafka(tansu.bootstrap, prefix, load.ok_ids)
    ok = len(load.ok_ids)
    lost = len(load.ok_ids - found)
    non_2xx = load.sent - sum(v for k, v in load.statuses.items() if isinstance(k, int) and 200 <= k < 300)
    lat = sorted(load.reject_latencies)
    p99 = f"{lat[int(len(lat) * 0.99) - 1] * 1000:.0f} ms" if lat else "-"
    row = {"scenario": name, "sent": load.sent, "2xx": ok, "non-2xx": non_2xx,
           "in_kafka": len(found & load.ok_ids), "lost": lost,
           "statuses": {str(k): v for k, v in sorted(load.statuses.items(), key=str)},
           "p99_503": p99, "peak_rss_mib": round(bridge.rss_kib() / 1024, 1),
           "bridge_alive": bridge.alive()}
    print(f"   sent {row['sent']} / 2xx {ok} / non-2xx {non_2xx} / "
          f"unique 2xx ids in Kafka {row['in_kafka']} / lost {lost}", flush=True)
    print(f"   statuses {row['statuses']}  p99 of 503s {p99}  peak RSS {row['peak_rss_mib']} MiB",
          flush=True)
    return row


def scenario_1(tansu):
    prefix = "c1"
    bridge = Bridge(tansu.bootstrap, prefix)
    load = Load(bridge, rate=200, threads=32)
    row = run("1. direct mode, broker frozen 30 s mid-run", load, bridge, tansu, prefix,
              [(10, "freeze broker", tansu.freeze), (40, "thaw broker", tansu.thaw)], 60)
    bridge.stop()
    return row


def scenario_2(tansu):
    prefix = "c2"
    spool = tempfile.mkdtemp(prefix="chaos-spool-")
    bridge = Bridge(tansu.bootstrap, prefix, spool)
    load = Load(bridge, rate=200, threads=32)
    row = run("2. spool mode, broker frozen 30 s mid-run", load, bridge, tansu, prefix,
              [(10, "freeze broker", tansu.freeze), (40, "thaw broker", tansu.thaw)], 60)
    bridge.stop()
    shutil.rmtree(spool, ignore_errors=True)
    return row


def scenario_3(tansu):
    prefix = "c3"
    spool = tempfile.mkdtemp(prefix="chaos-spool-")
    bridge = Bridge(tansu.bootstrap, prefix, spool)
    load = Load(bridge, rate=200, threads=32)
    row = run("3. spool mode, bridge SIGKILLed mid-run, restarted on the same spool", load,
              bridge, tansu, prefix,
              [(8, "freeze broker (the spool fills)", tansu.freeze),
               (15, "SIGKILL the bridge", bridge.kill),
               (18, "restart the bridge", bridge.start),
               (25, "thaw broker", tansu.thaw)], 45)
    bridge.stop()
    shutil.rmtree(spool, ignore_errors=True)
    return row


def scenario_4(tansu):
    prefix = "c4"
    spool = tempfile.mkdtemp(prefix="chaos-spool-")
    extra = "max_body_bytes = 65536||"
    bridge = Bridge(tansu.bootstrap, prefix, spool, extra)
    # A small spool: 1 MiB segments, 3 MiB in all.
    with open(bridge.config) as f:
        text = f.read()
    text = text.replace('[spool]\nenabled = true\n',
                        '[spool]\nenabled = true\nsegment_bytes = 1048576\nmax_bytes = 3145728\n')
    with open(bridge.config, "w") as f:
        f.write(text)
    bridge.stop_keep = True
    bridge.proc.terminate()
    bridge.proc.wait()
    bridge.start()
    load = Load(bridge, rate=300, threads=32)
    row = run("4. spool mode, spool capacity exhausted while Kafka is frozen", load, bridge,
              tansu, prefix,
              [(5, "freeze broker", tansu.freeze), (30, "thaw broker", tansu.thaw)], 45)
    bridge.stop()
    shutil.rmtree(spool, ignore_errors=True)
    return row


def scenario_5(tansu):
    prefix = "c5"
    extra = "max_in_flight = 64"
    bridge = Bridge(tansu.bootstrap, prefix, None, extra)
    stutter_stop = threading.Event()

    def stutter():
        # A slow broker: frozen 80 % of the time, in 250 ms cycles.
        while not stutter_stop.is_set():
            tansu.freeze()
            time.sleep(0.2)
            tansu.thaw()
            time.sleep(0.05)

    t = threading.Thread(target=stutter, daemon=True)
    # 128 senders against max_in_flight = 64: twice what the bridge admits at once.
    load = Load(bridge, rate=100000, threads=128)
    row = run("5. direct mode, 2x overload (128 senders, max_in_flight 64) on a slow broker",
              load, bridge, tansu, prefix,
              [(2, "broker turns slow (frozen 80 % of the time)", t.start),
               (28, "broker back to normal", stutter_stop.set)], 30)
    t.join()
    tansu.thaw()
    bridge.stop()
    return row


def process_sample(pid):
    """(RSS KiB, open fds, threads) of `pid` now."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


SOAK_SECONDS = 600
SOAK_WARMUP = 60
SOAK_RSS_GROWTH = 0.10


def scenario_6(tansu):
    """The soak: 10 minutes at 300 events/s, no fault. RSS, open fds and threads are
    sampled every 10 s; after a 60 s warm-up they must stay flat: RSS within +10 % of its
    value at the end of the warm-up, fds and threads never above their warm-up maximum."""
    prefix = "c6"
    bridge = Bridge(tansu.bootstrap, prefix)
    load = Load(bridge, rate=300, threads=16)
    duration = SOAK_SECONDS * SCALE
    warmup = SOAK_WARMUP * SCALE
    samples = []
    print(f"\n== 6. soak: direct mode, 300 events/s for {duration:.0f} s, sampled every 10 s",
          flush=True)
    start = time.monotonic()
    load.start()
    while time.monotonic() - start < duration:
        time.sleep(10)
        t = time.monotonic() - start
        rss, fds, threads = process_sample(bridge.proc.pid)
        samples.append((t, rss, fds, threads))
        print(f"   t={t:5.0f}s  RSS {rss / 1024:6.1f} MiB  fds {fds:4d}  threads {threads:3d}  "
              f"sent {load.sent}", flush=True)
    load.stop()
    row = finish_soak(samples, warmup, load, bridge, tansu, prefix)
    bridge.stop()
    return row


def finish_soak(samples, warmup, load, bridge, tansu, prefix):
    warm = [s for s in samples if s[0] <= warmup] or samples[:1]
    after = [s for s in samples if s[0] > warmup]
    rss_ref = warm[-1][1]
    fd_max, thread_max = max(s[2] for s in warm), max(s[3] for s in warm)
    rss_end = samples[-1][1]
    growth = (rss_end - rss_ref) / rss_ref if rss_ref else 0.0
    flat = (growth < SOAK_RSS_GROWTH
            and all(s[2] <= fd_max for s in after) and all(s[3] <= thread_max for s in after))
    print(f"   RSS {rss_ref / 1024:.1f} -> {rss_end / 1024:.1f} MiB ({growth:+.1%}, limit "
          f"+{SOAK_RSS_GROWTH:.0%}); fds max {fd_max} in warm-up, {max(s[2] for s in after)} "
          f"after; threads max {thread_max}, {max(s[3] for s in after)} after: "
          f"{'flat' if flat else 'NOT FLAT'}", flush=True)
    found = ids_in_kafka(tansu.bootstrap, prefix, load.ok_ids, within=180)
    lost = len(load.ok_ids - found)
    non_2xx = load.sent - sum(v for k, v in load.statuses.items()
                              if isinstance(k, int) and 200 <= k < 300)
    print(f"   sent {load.sent} / 2xx {len(load.ok_ids)} / non-2xx {non_2xx} / lost {lost}",
          flush=True)
    return {"scenario": "6. soak, direct mode, 300 events/s", "sent": load.sent,
            "2xx": len(load.ok_ids), "non-2xx": non_2xx,
            "in_kafka": len(found & load.ok_ids), "lost": lost,
            "statuses": {}, "p99_503": "-", "peak_rss_mib": round(bridge.rss_kib() / 1024, 1),
            "bridge_alive": bridge.alive(), "flat": flat}


def main():
    # The soak (6) is not in the default set: `scripts/chaos 6`.
    chosen = [int(a) for a in sys.argv[1:]] or [1, 2, 3, 4, 5]
    scenarios = {1: scenario_1, 2: scenario_2, 3: scenario_3, 4: scenario_4, 5: scenario_5,
                 6: scenario_6}
    rows = []
    for n in chosen:
        tansu = Tansu()
        try:
            rows.append(scenarios[n](tansu))
        finally:
            tansu.stop()
    print("\n| scenario | sent | 2xx | non-2xx | unique 2xx ids in Kafka | lost | p99 of 503s | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['sent']} | {r['2xx']} | {r['non-2xx']} | {r['in_kafka']} "
              f"| {r['lost']} | {r['p99_503']} | {r['peak_rss_mib']} MiB |")
    failed = [r["scenario"] for r in rows
              if r["lost"] or not r["bridge_alive"] or r.get("flat") is False]
    if failed:
        print(f"\nFAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
