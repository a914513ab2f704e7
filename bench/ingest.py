#!/usr/bin/env python
"""firegrid ingest benchmark: ingest against count-only MQTT clients, in interleaved rounds.

    .venv/bin/python bench/ingest.py [--messages N] [--rounds R]   (default 300,000, 4)

Starts a private, durable PostgreSQL (fsync on) through bench/harness.services() and, for
every row, a fresh private Mosquitto with the shipped deploy/mosquitto/conf.d, on 127.0.0.1
only; removes them all at the end. --flavour timescale runs that PostgreSQL with TimescaleDB
(bench/flavour.py: readings a hypertable, as in production).

Every row is a backlog drain of the same N QoS 1 messages: realistic smoke_status telemetry
(~190 bytes of JSON) from --devices devices with a per-device seq, device ts = publish time.
The subscriber's persistent session (a QoS 1 subscription on ingest's own filter) is created
first, the N messages are published while it is away (the broker queues them; not timed),
then the subscriber starts:

    ingest     `firegrid ingest`, one process, as shipped, configured through FIREGRID_*
               settings (--window/--batch/--age-ms/--protocol override the shipped
               defaults). Timed from the first row's received_at until its own
               firegrid_ingest_rows_total (stored readings, scraped from its /metrics) reaches
               N; then the readings are checked by query: 0 lost, 0 duplicated.
    workers    `firegrid ingest --workers W` (--workers, default 2), timed and checked alike
               (the workers' metrics summed).
    paho       paho-mqtt count-only subscriber, MQTT 3.1.1, auto-ack: the Python MQTT client
               ingest has to beat. Timed from CONNACK to the N-th message, like the others.
    mqtt5      bench/mqttraw.py's count-only subscriber on the `mqtt5` codec (MQTT 5,
               Receive Maximum 65535): every packet decoded and every PUBACK encoded by the
               codec, one big recv buffer, one sendall of PUBACKs per recv. The ceiling of a
               Python client on that codec, and near the broker's.
    (--rows adds: raw, the same subscriber parsing inline in Python; paho5, paho on MQTT 5;
     naive, paho + json.loads + one INSERT and COMMIT per message, on --naive-messages.
     --tree DIR adds tree: `firegrid ingest` from another checkout, e.g. the commit before a
     change, in the same rounds: before and after side by side.)

The rows run in interleaved rounds, A B C D / D C B A / A B C D ..., each round's ratios from
its own rows, so that a change in the machine's load between rows hits every row alike
instead of one ratio; an untimed ingest drain (--warmup) comes first. Beside each row: the
1-minute load average at its end, the cores that everything else on the machine used
meanwhile, the CPU per message of the client (ingest's process, or the subscriber), the
broker and PostgreSQL, and the box's limit: the cores over the sum of those three, the rate
the machine would allow if nothing else ran. The verdict on issue 18's goal (one ingest
process >= 1.5x paho) takes the median of the rounds' ratios and prints every round's.

--memory-check runs only the ingest row, once, with a gateway batch of ~64 KiB as every K-th
message (--gateway-every, 100 unless given), and reports its peak RSS and the window's peak
(sampled from ingest's metrics at every scrape):

    .venv/bin/python bench/ingest.py --messages 1000000 --memory-check

The last lines printed are always (each one line):
    MEMORY peak_rss_kib=<n> start_rss_kib=<n> window_peak_msgs=<n> window_peak_bytes=<n>
           window_waits=<n> window_max=<n> window_max_bytes=<n> msgs_per_s=<n> rows_per_s=<n>
           messages=<n> gateway_every=<k> gateway_bytes=<n> lost=<n> duplicated=<n>
           (the first ingest row)
    RESULT ingest_msgs_per_s=<median> vs_paho=<median of the rounds' ratios>
           vs_paho_rounds=<r1,r2,...> workers_msgs_per_s=<median> vs_mqtt5=<median>
           lost=<n> duplicated=<n> postgres_us_per_msg=<median> ingest_us_per_msg=<median>
           broker_us_per_msg=<median> rounds=<R> messages=<N> flavour=<plain|timescale>

Worker modes (`bench/ingest.py _publish|_paho|_drain|_naive ...`) are internal: the benchmark
runs each client in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from threading import Timer
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
# As a script, this file's folder is sys.path[0], where "ingest" would be this file rather
# than the firegrid package. Put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import flavour as flavours  # noqa: E402
from bench import harness, mqttraw  # noqa: E402

HOST = "127.0.0.1"
PREFIX = "fg/v1"
GOAL_VS_PAHO = 1.5      # issue 18: one ingest process >= 1.5x the paho count-only subscriber
# Gateway ids the mixed-in gateway batches come from, round robin; each relays for its own
# devices, so 100 of them with ~300 entries each add ~30,000 device ids to the 20,000.
GATEWAYS = 100


# --- the fleet: what devices send ---------------------------------------------------------

class Fleet:
    """Message i comes from device i % devices with seq i // devices (so the published set is
    known exactly for the loss check): a smoke_status heartbeat built by simulators.messages
    (the one place the protocol is spoken), with per-device values. Encoding goes through a
    per-device template with only ts and seq filled in per message, so the publisher keeps
    up with the broker. With gateway_every K, message i is instead gateway batch i // K
    whenever i % K == K - 1 (see Gateways); the others keep their device and seq."""

    TS_MARK, SEQ_MARK = 1999999999999, 4294967295

    def __init__(self, devices: int, gateway_every: int = 0, messages: int = 0) -> None:
        from simulators import messages as m
        self.devices = devices
        self.every = gateway_every
        self.gateways = Gateways(messages // gateway_every) if gateway_every else None
        rng = random.Random(20241121)
        self.topics = [m.topic(device_id(d), "telemetry", PREFIX).encode()
                       for d in range(devices)]
        self.templates = [template(m.encode(m.smoke_status(
            self.SEQ_MARK, self.TS_MARK, **smoke_values(rng))), 1) for _ in range(devices)]

    def message(self, i: int, ts_ms: int) -> tuple[bytes, bytes]:
        if self.gateways is not None and i % self.every == self.every - 1:
            return self.gateways.message(i // self.every, ts_ms)
        d = i % self.devices
        return self.topics[d], self.templates[d] % {b"ts": ts_ms, b"seq": i // self.devices}

    def telemetry_count(self, n: int) -> int:
        return n - (n // self.every if self.every else 0)

    def expected_rows(self, n: int) -> int:
        """readings rows the first n messages make: one per telemetry message, one per
        gateway entry."""
        g = self.gateways
        return self.telemetry_count(n) + (g.count * g.entries if g else 0)


class Gateways:
    """Gateway batch j comes from gateway j % GATEWAYS with seq j // GATEWAYS and carries one
    smoke_status entry (with its device_id) for each of the `entries` devices behind that
    gateway, all with the batch's seq and ts. `entries` is the most that keeps every batch
    of the run (seq up to its last one) under ingest.max_payload_bytes: a larger message
    would be dead-lettered as oversized, not stored, and the run would not measure the
    window holding 64 KiB messages."""

    def __init__(self, count: int) -> None:
        from runtime.settings import IngestSettings
        from simulators import messages as m
        self.count = count
        self.limit = IngestSettings().max_payload_bytes
        last_seq = max(count - 1, 0) // GATEWAYS
        rng = random.Random(20241122)
        # Up to the protocol's 1,000 entries per batch; each gateway's own values.
        candidates = [[{"device_id": entry_id(g, e),
                        **m.smoke_status(Fleet.SEQ_MARK, Fleet.TS_MARK, **smoke_values(rng))}
                       for e in range(1000)] for g in range(GATEWAYS)]

        def tmpl(g: int, k: int) -> bytes:
            return template(m.encode(m.gateway(Fleet.SEQ_MARK, candidates[g][:k],
                                               Fleet.TS_MARK)), k + 1)

        def fits(g: int, k: int) -> bool:
            return len(tmpl(g, k) % {b"ts": Fleet.TS_MARK, b"seq": last_seq}) < self.limit

        # The same entry count for every gateway (the loss check expects it): the largest
        # that fits all of them, found by bisection per gateway.
        entries = 1000
        for g in range(GATEWAYS):
            lo, hi = 0, entries
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(g, mid) else (lo, mid - 1)
            entries = lo
        if entries < 1:
            raise RuntimeError(f"no gateway entry fits in {self.limit} bytes")
        self.entries = entries
        self.topics = [m.topic(gateway_id(g), "gateway", PREFIX).encode()
                       for g in range(GATEWAYS)]
        self.templates = [tmpl(g, entries) for g in range(GATEWAYS)]
        # Payload sizes of the run: the smallest at seq 0, the largest at its last seq.
        self.min_bytes = min(len(t % {b"ts": Fleet.TS_MARK, b"seq": 0}) for t in self.templates)
        self.max_bytes = max(len(t % {b"ts": Fleet.TS_MARK, b"seq": last_seq})
                             for t in self.templates)

    def message(self, j: int, ts_ms: int) -> tuple[bytes, bytes]:
        g = j % GATEWAYS
        return self.topics[g], self.templates[g] % {b"ts": ts_ms, b"seq": j // GATEWAYS}


def smoke_values(rng: random.Random) -> dict:
    return dict(obscuration_db_m=round(rng.uniform(0, 0.08), 3),
                temperature_c=round(rng.uniform(12, 38), 1), battery_pct=rng.randint(20, 100),
                battery_v=round(rng.uniform(2.7, 3.3), 2), rsrp_dbm=rng.randint(-120, -70),
                sinr_db=round(rng.uniform(-5, 25), 1),
                heartbeat_s=rng.choice((3600, 7200, 14400, 86400)))


def template(raw: bytes, marks: int) -> bytes:
    """An encoded message with Fleet's ts and seq marks -> a %-template for bytes % dict.
    marks: how often each must occur (a gateway batch: its own plus one per entry)."""
    ts, seq = b"%d" % Fleet.TS_MARK, b"%d" % Fleet.SEQ_MARK
    if raw.count(ts) != marks or raw.count(seq) != marks:
        raise RuntimeError("simulators.messages changed shape")
    return raw.replace(b"%", b"%%").replace(ts, b"%(ts)d").replace(seq, b"%(seq)d")


def device_id(d: int) -> str:
    return f"sd{d:06d}"


def gateway_id(g: int) -> str:
    return f"gw{g:04d}"


def entry_id(g: int, e: int) -> str:
    """The e-th device behind gateway g (verify() spells the same ids in SQL)."""
    return f"gw{g:04d}-sd{e:04d}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- clients (each runs in its own process) -----------------------------------------------

def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def w_publish(a: argparse.Namespace) -> None:
    """Fill the broker's queue: QoS 1, pipelined, as fast as the broker takes it; with
    --rate, paced at that many messages a second (the live run)."""
    fleet = Fleet(a.devices, a.gateway_every, a.first + a.count)
    pub = mqttraw.Publisher(HOST, a.port, a.client_id, window=20000)
    started = time.monotonic()
    end = a.first + a.count
    i = a.first
    while i < end:
        n = min(1000, end - i)
        if a.rate:
            n = a.first + min(a.count, int((time.monotonic() - started) * a.rate)) - i
            if n <= 0:
                time.sleep(0.005)
                continue
        ts = now_ms()
        pub.send(fleet.message(k, ts) for k in range(i, i + n))
        i += n
    send_s = time.monotonic() - started
    pub.flush(timeout=a.timeout)
    seconds = time.monotonic() - started
    pub.close()
    emit({"sent": pub.sent, "acked": pub.acked, "send_s": send_s, "seconds": seconds})


def w_drain(a: argparse.Namespace) -> None:
    """bench/mqttraw.py's count-only subscriber, --codec raw or mqtt5."""
    cpu: list[float] = []

    def connack() -> None:
        cpu.append(time.process_time())
        emit({"event": "connected"})

    r = mqttraw.drain(HOST, a.port, a.client_id, a.count, version=_version(a.protocol),
                      receive_max=a.receive_max, session_expiry=a.session_expiry,
                      timeout=a.timeout, codec=a.codec, on_connack=connack)
    emit({"count": r["count"], "session_present": r["session_present"],
          "seconds": r["t_last"] - r["t_connack"], "recvs": r["recvs"],
          "client_cpu_s": time.process_time() - cpu[0]})


def _paho_client(a: argparse.Namespace, on_connect, on_message):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    v5 = a.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else False)
    client.on_connect = on_connect
    client.on_message = on_message
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = a.session_expiry
        props.ReceiveMaximum = a.receive_max
    # keepalive 600: Mosquitto 2.0 answers PINGREQ only after the queued backlog, and paho
    # drops the connection when PINGRESP is 1 keepalive late (see docs/benchmarks.md); the
    # baselines must not reconnect and count redeliveries.
    client.connect(HOST, a.port, 600, clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                   properties=props)
    return client


def _count_until_done(a: argparse.Namespace, handle=None) -> None:
    """Run a paho subscriber until --count messages have arrived (or --timeout), calling
    handle(msg) for each first if given; report the count, the time from CONNACK and the
    process's CPU since then, and exit."""
    import threading

    st = {"count": 0, "t_connack": None, "t_last": None, "present": None, "cpu": 0.0}

    def on_connect(client, userdata, flags, reason, properties):
        st["t_connack"] = time.monotonic()
        st["cpu"] = time.process_time()
        st["present"] = flags.session_present
        emit({"event": "connected"})

    def on_message(client, userdata, msg):
        if handle is not None:
            handle(msg)
        st["count"] += 1
        if st["count"] == a.count:
            st["t_last"] = time.monotonic()
            client.disconnect()

    client = _paho_client(a, on_connect, on_message)
    threading.Timer(a.timeout, client.disconnect).start()
    client.loop_forever()
    done = st["t_last"] or time.monotonic()
    emit({"count": st["count"], "session_present": st["present"],
          "seconds": done - (st["t_connack"] or done),
          "client_cpu_s": time.process_time() - st["cpu"]})
    os._exit(0)  # the timeout Timer must not keep us alive


def w_paho(a: argparse.Namespace) -> None:
    """Count-only paho subscriber: on_message counts, paho acknowledges on return."""
    _count_until_done(a)


def w_naive(a: argparse.Namespace) -> None:
    """What the tutorials teach: decode, INSERT, COMMIT, per message, in on_message."""
    from datetime import UTC, datetime

    import psycopg
    conn = psycopg.connect(a.db_url)
    cur = conn.cursor()

    def insert(msg) -> None:
        data = json.loads(msg.payload)
        cur.execute(
            "INSERT INTO naive_readings (device_id, ts, seq, kind, received_at,"
            " obscuration_db_m, temperature_c, battery_pct, battery_v, rsrp_dbm, sinr_db,"
            " heartbeat_s) VALUES (%s, %s, %s, 'smoke', now(), %s, %s, %s, %s, %s, %s, %s)",
            (msg.topic.split("/")[2], datetime.fromtimestamp(data["ts"] / 1000, UTC),
             data["seq"], data["obscuration_db_m"], data["temperature_c"], data["battery_pct"],
             data["battery_v"], data["rsrp_dbm"], data["sinr_db"], data["heartbeat_s"]))
        conn.commit()

    _count_until_done(a, insert)


def _version(protocol: str) -> int:
    return 5 if protocol == "5" else 4


WORKERS = {"_publish": w_publish, "_drain": w_drain, "_paho": w_paho, "_naive": w_naive}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog=f"bench/ingest.py {argv[0]}")
    p.add_argument("--port", type=int)
    p.add_argument("--client-id", default="bench")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--devices", type=int, default=20000)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    p.add_argument("--codec", default="raw", choices=("raw", "mqtt5"))
    p.add_argument("--receive-max", type=int, default=65535)
    p.add_argument("--session-expiry", type=int, default=86400)
    p.add_argument("--db-url")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--gateway-every", type=int, default=0)
    WORKERS[argv[0]](p.parse_args(argv[1:]))


# --- the rows -----------------------------------------------------------------------------

class Row(NamedTuple):
    key: str
    label: str
    kind: str               # ingest (firegrid ingest), paho, drain (bench/mqttraw.py), naive
    protocol: str = "5"     # the baselines' MQTT version
    codec: str = ""         # drain: raw or mqtt5
    workers: int = 1        # ingest: --workers
    tree: str = ""          # ingest: another checkout's code (--tree), else this one's

    @property
    def firegrid(self) -> bool:
        return self.kind == "ingest"


def row_table(workers: int, tree: str = "", tree_label: str = "") -> dict[str, Row]:
    return {r.key: r for r in (
        Row("tree", f"firegrid ingest at {tree_label}, 1 process", "ingest", tree=tree),
        Row("ingest", "firegrid ingest, 1 process", "ingest"),
        Row("workers", f"firegrid ingest --workers {workers}", "ingest", workers=workers),
        Row("paho", "paho-mqtt count-only, MQTT 3.1.1", "paho", protocol="3.1.1"),
        Row("mqtt5", "mqtt5 0.8 codec count-only, MQTT 5", "drain", codec="mqtt5"),
        Row("raw", "raw socket count-only, MQTT 5", "drain", codec="raw"),
        Row("paho5", "paho-mqtt count-only, MQTT 5", "paho", protocol="5"),
        Row("naive", "naive INSERT+COMMIT per message", "naive", protocol="3.1.1"),
    )}


DEFAULT_ROWS = "ingest,workers,paho,mqtt5"
# The ratios printed per round: (numerator, denominator) where both rows ran.
RATIOS = [("ingest", "paho"), ("workers", "paho"), ("ingest", "mqtt5"), ("workers", "ingest"),
          ("ingest", "tree"), ("tree", "paho"), ("ingest", "raw"), ("ingest", "paho5"),
          ("ingest", "naive")]


def round_order(keys: list[str], rnd: int) -> list[str]:
    """A B C D in odd rounds (1, 3, ...), D C B A in even ones: over a pair of rounds every row
    sits at the same mean position, so a steady drift in load hits them alike."""
    return list(keys) if rnd % 2 else list(reversed(keys))


# --- the harness --------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        from runtime.settings import MqttSettings
        self.args = args
        self.svc = harness.services(stack, "ingest", args.keep, args.flavour)
        self.logs = self.svc.work
        self.postmaster = harness.postmaster(self.svc.pg)
        self.sql("CREATE TABLE IF NOT EXISTS naive_readings (LIKE readings INCLUDING ALL)")
        # What ingest will run with: the shipped settings, but for the options given.
        self.mqtt = MqttSettings(**({"protocol": args.protocol} if args.protocol else {}))
        self.tree_settings: dict[str, tuple[str, int]] = {}
        self.phase = 0
        self.tls = None
        self.tls_port = 0   # the current broker's TLS listener (fresh_broker)
        if args.tls:
            from runtime.localsvc import make_tls_files
            self.tls = make_tls_files(self.logs / "tls")

    def sql(self, query: str, params=None, *, fetch: bool = False):
        cur = self.svc.conn.execute(query, params)
        return cur.fetchall() if fetch else None

    def fresh_broker(self, tag: str):
        from runtime.localsvc import Mosquitto, free_port, make_state_dir, tls_listener
        self.phase += 1
        self.tag = f"{self.phase:02d}-{tag}"
        extra = ""
        if self.tls is not None:
            self.tls_port = free_port()
            extra = tls_listener(self.tls_port, self.tls)
        return Mosquitto(make_state_dir("fg-bench-ingest-mq-"), extra_conf=extra).start()

    def drop_broker(self, mq) -> None:
        log = mq.base / "mosquitto.log"
        if self.args.keep and log.exists():
            (self.logs / f"{self.tag}-mosquitto.log").write_bytes(log.read_bytes())
        mq.destroy()

    def worker(self, mode: str, *args: str, timeout: float) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), mode, *args]
        log = self.logs / f"{self.tag}{mode}.log"
        with open(log, "ab") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err,
                                  timeout=timeout + 60, cwd=REPO)
        lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see {log}")
        return json.loads(lines[-1])

    def publish(self, mq, count: int, gateway_every: int = 0, rate: float = 0) -> dict:
        # Gateway batches are ~64 KiB each: allow for their bytes too (~1,000/s is slow).
        big = count // gateway_every / 1000 if gateway_every else 0
        r = self.worker("_publish", "--port", str(mq.port), "--client-id", f"pub-{self.tag}",
                        "--count", str(count), "--devices", str(self.args.devices),
                        "--gateway-every", str(gateway_every), "--rate", str(rate),
                        timeout=max(120.0, count / 5000 + big + (count / rate if rate else 0)))
        if r["acked"] != count:
            raise RuntimeError(f"publisher: {r['acked']} of {count} acknowledged")
        return r

    def prepare(self, mq, client_id: str, version: int, session_expiry: int) -> None:
        """The subscriber's persistent session with ingest's own subscription (the whole
        prefix, through the share group if one is set), before the backlog is published."""
        share = f"$share/{self.mqtt.share_group}/" if self.mqtt.share_group else ""
        mqttraw.prepare_session(HOST, mq.port, client_id, [f"{share}{self.mqtt.topic_prefix}/#"],
                                version=version, session_expiry=session_expiry)

    def reset_tables(self) -> None:
        self.sql("TRUNCATE readings, events, dead_letters, naive_readings")
        self.sql("CHECKPOINT")

    def meter(self, pids: dict[str, int]) -> tuple[harness.CpuMeter, float]:
        """A CPU meter on these processes, started now, and the machine's busy CPU-s now."""
        meter = harness.CpuMeter(pids)
        meter.start()
        return meter, harness.busy_s()

    def drain_timeout(self, n: int, kind: str) -> float:
        return max(120.0, n / (150 if kind == "naive" else 2500))

    def run(self, row: Row, rnd: int, n: int) -> dict:
        """One row of one round on a fresh broker: fill, drain, CPU, load, and for firegrid
        the check by query."""
        gateway_every = self.args.gateway_every if row.key == "ingest" else 0
        mq = self.fresh_broker(f"r{rnd}-{row.key}")
        try:
            if row.firegrid:
                r = self.firegrid(mq, row, rnd, n, gateway_every)
            else:
                r = self.baseline(mq, row, n)
        finally:
            self.drop_broker(mq)
        r.update(key=row.key, round=rnd, load1=os.getloadavg()[0])
        return r

    def baseline(self, mq, row: Row, n: int) -> dict:
        client_id = f"bench-{self.tag}"
        version = _version(row.protocol)
        self.prepare(mq, client_id, version, 86400)
        if row.kind == "naive":
            self.reset_tables()
        pub = self.publish(mq, n)
        timeout = self.drain_timeout(n, row.kind)
        mode = {"paho": "_paho", "naive": "_naive", "drain": "_drain"}[row.kind]
        args = ["--port", str(mq.port), "--client-id", client_id, "--count", str(n),
                "--protocol", row.protocol, "--timeout", str(timeout)]
        if row.kind == "drain":
            args += ["--codec", row.codec]
        if row.kind == "naive":
            args += ["--db-url", self.svc.url]
        cmd = [sys.executable, str(Path(__file__).resolve()), mode, *args]
        log = self.logs / f"{self.tag}.log"
        r: dict = {}
        meter = None
        with open(log, "ab") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO)
            killer = Timer(timeout + 60, proc.kill)
            killer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    msg = json.loads(line) if line.startswith(b"{") else {}
                    if msg.get("event") == "connected":
                        meter, busy0 = self.meter({"broker": mq.proc.pid,
                                                   "postgres": self.postmaster})
                    elif msg and "event" not in msg and meter is not None:
                        # The subscriber is done: read the others before it exits.
                        cpu = meter.seconds()
                        busy = harness.busy_s() - busy0
                        window = time.monotonic() - meter.t0
                        r.update(msg)
                proc.wait()
            finally:
                killer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0 or "count" not in r:
            raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see {log}")
        cpu["client"] = r.pop("client_cpu_s")
        r.update(cpu_s=cpu, others=(busy - sum(cpu.values())) / window,
                 client_cores=cpu["client"] / window,
                 rate=r["count"] / r["seconds"] if r["seconds"] else 0.0,
                 publish_rate=n / pub["seconds"], messages=n)
        if row.kind == "naive":
            r["rows"] = self.sql("SELECT count(*) FROM naive_readings", fetch=True)[0][0]
        if r["count"] < n:
            r["note"] = f"TIMED OUT: {r['count']:,} of {n:,}"
        return r

    def ingest_env(self, mq, client_id: str, metrics_port: int) -> dict:
        a = self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIREGRID_")}
        env.update({
            "FIREGRID_MQTT__HOST": HOST, "FIREGRID_MQTT__PORT": str(mq.port),
            "FIREGRID_MQTT__CLIENT_ID": client_id,
            "FIREGRID_DATABASE__URL": self.svc.url,
            "FIREGRID_DATABASE__TIMESCALE": flavours.timescale_setting(a.flavour),
            "FIREGRID_INGEST__METRICS_HOST": HOST,
            "FIREGRID_INGEST__METRICS_PORT": str(metrics_port),
        })
        given = {"MQTT__PROTOCOL": a.protocol, "INGEST__INFLIGHT_WINDOW": a.window,
                 "INGEST__BATCH_MAX_ROWS": a.batch, "INGEST__BATCH_MAX_AGE_MS": a.age_ms,
                 "INGEST__WINDOW_MAX_BYTES": a.window_max_bytes}
        env.update({f"FIREGRID_{k}": str(v) for k, v in given.items() if v})
        if self.tls is not None:
            env.update({"FIREGRID_MQTT__PORT": str(self.tls_port), "FIREGRID_MQTT__TLS": "true",
                        "FIREGRID_MQTT__TLS_CA_FILE": str(self.tls.ca),
                        "FIREGRID_MQTT__TLS_CERT_FILE": str(self.tls.client_cert),
                        "FIREGRID_MQTT__TLS_KEY_FILE": str(self.tls.client_key)})
        return env

    def firegrid(self, mq, row: Row, rnd: int, n: int, gateway_every: int) -> dict:
        """`firegrid ingest [--workers W]` as shipped, on sessions made before the fill. Timed
        from the first row's received_at until the processes' own count of stored readings
        reaches what was published; then the readings are checked by query."""
        fleet = Fleet(1, gateway_every, n)  # for the gateway batches; devices do not matter
        rows = fleet.expected_rows(n)
        client_id = self.sessions(mq, row.workers, row.tree)
        self.reset_tables()
        pub = self.publish(mq, n, gateway_every)
        r = self.ingest(mq, client_id, row.workers, rows, self.drain_timeout(rows, "ingest"),
                        spy=bool(self.args.py_spy) and row.key == "ingest" and rnd == 1,
                        tree=row.tree)
        r.update(self.verify(n, fleet), messages=n, publish_rate=n / pub["seconds"])
        stored = r["stored"]
        r["seconds"] = r["done_wall"] - r["first_received"] if r["rows"] else 0.0
        # msg/s counts MQTT messages: a gateway batch is one, whatever it carries.
        r["rate"] = n * min(1.0, stored / rows) / r["seconds"] if r["seconds"] else 0.0
        r["rows_rate"] = min(stored, rows) / r["seconds"] if r["seconds"] else 0.0
        if stored < rows:
            r["note"] = f"TIMED OUT: {stored:,.0f} of {rows:,} rows"
        if fleet.gateways is not None:
            g = fleet.gateways
            r["gateway"] = {"every": gateway_every, "count": g.count, "entries": g.entries,
                            "min_bytes": g.min_bytes, "max_bytes": g.max_bytes,
                            "limit": g.limit, "rows": rows}
        return r

    def sessions(self, mq, workers: int, tree: str) -> str:
        """Every ingest process's persistent session, as `firegrid ingest [--workers W]`
        names them and on the protocol it will speak; returns the client id to configure."""
        client_id = f"bench-{self.tag}"
        ids = [client_id] if workers == 1 else [f"{client_id}-{i}" for i in range(workers)]
        protocol, expiry = self.session_settings(tree)
        for cid in ids:
            self.prepare(mq, cid, _version(protocol), expiry)
        return client_id

    def session_settings(self, tree: str) -> tuple[str, int]:
        """mqtt.protocol and mqtt.session_expiry_s of this checkout's ingest, or of another
        one's (its own defaults may differ: read by its own code)."""
        if not tree:
            return self.mqtt.protocol, self.mqtt.session_expiry_s
        if tree not in self.tree_settings:
            code = ("import sys; from runtime.settings import MqttSettings as M; "
                    "m = M(**({'protocol': sys.argv[1]} if sys.argv[1] else {})); "
                    "print(m.protocol, m.session_expiry_s)")
            out = subprocess.run([sys.executable, "-c", code, self.args.protocol or ""],
                                 cwd=tree, capture_output=True, text=True, check=True)
            protocol, expiry = out.stdout.split()
            self.tree_settings[tree] = (protocol, int(expiry))
        return self.tree_settings[tree]

    def ingest(self, mq, client_id: str, workers: int, rows: int, timeout: float, *,
               spy: bool = False, during: Callable[[], dict] | None = None,
               tree: str = "") -> dict:
        """Run `firegrid ingest [--workers W]` until its processes' stored readings
        (firegrid_ingest_rows_total, from their /metrics) sum to `rows`, then stop it with
        SIGTERM. CPU and the machine's load are measured from the moment every /metrics
        answers (imports and settings done) to then; `during` runs once they answer (the
        live run's paced publisher) and its result is kept as "during"."""
        from runtime.localsvc import free_ports
        base = free_ports(workers)
        ports = [base + i for i in range(workers)]
        args = ["ingest"] + (["--workers", str(workers)] if workers > 1 else [])
        r: dict = {"expected_rows": rows}
        with ExitStack() as stack:
            child = harness.Child(self.tag, args, self.ingest_env(mq, client_id, base),
                                  self.logs, stack, Path(tree) if tree else REPO)
            deadline = time.monotonic() + 60
            while not all(scrape(p, ()) is not None for p in ports):
                if child.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"firegrid ingest never served /metrics; see {child.log}")
                time.sleep(0.01)
            meter, busy0 = self.meter({"client": child.proc.pid, "broker": mq.proc.pid,
                                       "postgres": self.postmaster})
            r["rss_start_kib"] = proc_kib(child.proc.pid, "VmRSS")
            spy_proc = None
            if spy:
                spy_log = stack.enter_context(open(self.logs / "py-spy.log", "ab"))
                spy_proc = subprocess.Popen(
                    [self.args.py_spy_bin, "record", "--pid", str(child.proc.pid),
                     "--threads", "--nonblocking", "--rate", "100", "--format",
                     spy_format(self.args.py_spy), "-o", self.args.py_spy],
                    stdout=spy_log, stderr=spy_log)
            if during is not None:
                r["during"] = during()
            stored, peak, peak_bytes, waits = self.watch(ports, rows, timeout, child)
            r["done_wall"] = time.time()
            cpu = meter.seconds()
            busy = harness.busy_s() - busy0
            window = time.monotonic() - meter.t0
            r["peak_rss_kib"] = max([proc_kib(child.proc.pid, "VmHWM")]
                                    + [proc_kib(p, "VmHWM") for p in children(child.proc.pid)])
            child.stop(signal.SIGTERM)
            if spy_proc is not None:
                spy_proc.wait(60)
        r.update(cpu_s=cpu, others=(busy - sum(cpu.values())) / window,
                 client_cores=cpu["client"] / window, stored=stored,
                 count=min(stored, rows), window_peak=peak, window_peak_bytes=peak_bytes,
                 window_waits=waits, reconnects=child.log.read_text(errors="replace").count(
                     "lost broker connection"))
        return r

    def live(self, rate: float, seconds: float) -> dict:
        """One ingest process running, a paced publisher offering `rate` msg/s for `seconds`:
        how long a reading takes from the device's ts to its received_at (by query)."""
        n = int(rate * seconds)
        mq = self.fresh_broker("live")
        try:
            client_id = self.sessions(mq, 1, "")
            self.reset_tables()
            r = self.ingest(mq, client_id, 1, n, seconds + self.drain_timeout(n, "ingest"),
                            during=lambda: self.publish(mq, n, rate=rate))
        finally:
            self.drop_broker(mq)
        r.update(self.verify(n), load1=os.getloadavg()[0])
        p50, p99, worst = self.sql(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x) FROM ("
            " SELECT extract(epoch FROM received_at - ts) * 1000 AS x FROM readings) s",
            fetch=True)[0]
        pub = r["during"]
        r.update(lag_p50_ms=float(p50 or 0), lag_p99_ms=float(p99 or 0),
                 lag_max_ms=float(worst or 0), offered=n,
                 achieved_rate=pub["sent"] / pub["send_s"] if pub["send_s"] else 0.0)
        return r

    def watch(self, ports: list[int], rows: int, timeout: float,
              child: harness.Child) -> tuple[float, float, float, float]:
        """Scrape the workers' /metrics until their stored readings sum to `rows`: often near
        the end, seldom before (a scrape costs the ingest process CPU). Returns the stored
        count and the window's peaks (messages, bytes; as sampled) and waits."""
        names = ("firegrid_ingest_rows_total", "firegrid_mqtt_window_messages",
                 "firegrid_mqtt_window_bytes", "firegrid_mqtt_window_waits")
        deadline = time.monotonic() + timeout
        last_t = time.monotonic()
        note = last_t + 10
        stored = last = peak = peak_bytes = waits = 0.0
        while time.monotonic() < deadline and child.proc.poll() is None:
            samples = [scrape(p, names) or {} for p in ports]
            stored = sum(s.get('firegrid_ingest_rows_total{outcome="stored",table="readings"}',
                               0.0) for s in samples)
            peak = max(peak, sum(s.get('firegrid_mqtt_window_messages{service="ingest"}', 0.0)
                                 for s in samples))
            peak_bytes = max(peak_bytes, sum(
                s.get('firegrid_mqtt_window_bytes{service="ingest"}', 0.0) for s in samples))
            waits = sum(s.get('firegrid_mqtt_window_waits{service="ingest"}', 0.0)
                        for s in samples)
            if stored >= rows:
                break
            now = time.monotonic()
            rate = (stored - last) / (now - last_t) if stored > last else 0.0
            last, last_t = stored, now
            # A third of the time left at the current rate, between 20 ms and 1 s.
            left = (rows - stored) / rate if rate else 1.0
            time.sleep(min(1.0, max(0.02, left / 3)))
            if now > note:
                note += 10
                print(f"    {stored:,.0f} of {rows:,} readings stored", flush=True)
        return stored, peak, peak_bytes, waits

    def verify(self, n: int, fleet: Fleet | None = None) -> dict:
        """Compare readings with exactly what was published: messages 0..n-1, and with a
        fleet that mixes in gateway batches, every entry of each (relayed by its gateway)."""
        d = self.args.devices
        every = fleet.every if fleet else 0
        rows, distinct, first = self.sql(
            "SELECT count(*), count(DISTINCT (device_id, seq)), min(received_at)"
            " FROM readings", fetch=True)[0]
        # Positions i % every == every - 1 carried a gateway batch, not telemetry.
        skip = f" AND g %% {every} <> {every - 1}" if every else ""
        lost = self.sql(
            "SELECT count(*) FROM generate_series(0, %s - 1) g WHERE NOT EXISTS ("
            " SELECT 1 FROM readings r WHERE r.device_id = 'sd' || lpad((g %% %s)::text, 6, '0')"
            " AND r.seq = g / %s)" + skip, (n, d, d), fetch=True)[0][0]
        gateway_lost = 0
        if fleet is not None and fleet.gateways is not None:
            gw = fleet.gateways  # batch j: gateway j % GATEWAYS, seq j // GATEWAYS; entry_id()
            gateway_lost = self.sql(
                "SELECT count(*) FROM generate_series(0, %s - 1) j, generate_series(0, %s - 1) e"
                " WHERE NOT EXISTS (SELECT 1 FROM readings r"
                "  WHERE r.device_id = 'gw' || lpad((j %% %s)::text, 4, '0') || '-sd'"
                "   || lpad(e::text, 4, '0') AND r.seq = j / %s"
                "  AND r.gateway_id = 'gw' || lpad((j %% %s)::text, 4, '0'))",
                (gw.count, gw.entries, GATEWAYS, GATEWAYS, GATEWAYS), fetch=True)[0][0]
            lost += gateway_lost
        expected = fleet.expected_rows(n) if fleet is not None else n
        dead = self.sql("SELECT coalesce(sum(seen_count), 0) FROM dead_letters",
                        fetch=True)[0][0]
        return {"rows": rows, "lost": lost, "gateway_lost": gateway_lost,
                "duplicated": rows - distinct, "unexpected": distinct - (expected - lost),
                "dead_letters": int(dead),
                "first_received": first.timestamp() if rows else 0.0}


def scrape(port: int, names: tuple[str, ...]) -> dict[str, float] | None:
    """The samples of these metrics from one ingest process's /metrics, keyed by name and
    labels as printed (None while it does not answer). Only those metrics are rendered
    (prometheus_client's name[] filter), which keeps the scrape cheap for ingest."""
    import urllib.parse
    import urllib.request
    query = urllib.parse.urlencode([("name[]", n) for n in names] or [("name[]", "none")])
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics?{query}", timeout=2) as f:
            text = f.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def proc_kib(pid: int, field: str) -> int:
    """A figure of a process from /proc/<pid>/status (VmRSS, VmHWM), in KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def spy_format(path: str) -> str:
    """py-spy output format from the file name: .svg flame graph, .json speedscope, else
    collapsed stacks (one line per stack with its sample count)."""
    return {".svg": "flamegraph", ".json": "speedscope"}.get(Path(path).suffix, "raw")


def code_version() -> tuple[str, dict[str, float]]:
    """The commit measured, the uncommitted changes to the code under test, and the mtimes
    of that code (a change during the run makes the figures a mix of two versions)."""
    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return out.stdout.rstrip("\n") if out.returncode == 0 else ""
    code = ("ingest", "transport", "protocol", "runtime")
    sha = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--", *code).splitlines()
    label = sha + (" + uncommitted: " + ", ".join(line[3:] for line in dirty) if dirty else "")
    mtimes = {str(p): p.stat().st_mtime for d in code for p in (REPO / d).rglob("*.py")}
    return label, mtimes


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    mosq = mosq.splitlines()[0] if mosq else "mosquitto ?"
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem / 1024:.1f} GiB RAM; {mosq}; "
            f"Python {sys.version.split()[0]}")


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


# --- the run and its report ---------------------------------------------------------------

def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bench/ingest.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", "-n", type=int, default=300_000,
                   help="backlog per row (default 300,000)")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds, A B C D / D C B A / ... (default 4)")
    p.add_argument("--warmup", type=int, default=50_000,
                   help="messages of an untimed ingest drain before the first round (default "
                   "min(N, 50,000); 0: none): PostgreSQL's first run creates its WAL files "
                   "and fills its caches, which would slow whichever firegrid row came first")
    p.add_argument("--rows", default=DEFAULT_ROWS,
                   help=f"rows in round order (default {DEFAULT_ROWS}; also raw, paho5, "
                   "naive, and tree with --tree)")
    p.add_argument("--workers", type=int, default=2,
                   help="W for the workers row, `firegrid ingest --workers W` (2)")
    p.add_argument("--devices", type=int, default=20000, help="distinct device ids (20,000)")
    p.add_argument("--window", type=int, default=0,
                   help="ingest.inflight_window (default: the shipped setting)")
    p.add_argument("--batch", type=int, default=0,
                   help="ingest.batch_max_rows (default: the shipped setting)")
    p.add_argument("--age-ms", type=int, default=0,
                   help="ingest.batch_max_age_ms (default: the shipped setting)")
    p.add_argument("--protocol", choices=("5", "3.1.1"),
                   help="mqtt.protocol of the firegrid rows (default: the shipped setting)")
    p.add_argument("--window-max-bytes", type=int, default=0,
                   help="ingest.window_max_bytes (default: the shipped setting)")
    p.add_argument("--tree", metavar="DIR",
                   help="another checkout of firegrid (e.g. `git worktree add /tmp/old "
                   "<commit>`): adds the row tree, its `firegrid ingest` in one process, next "
                   "to this checkout's, for a before/after comparison in the same rounds")
    p.add_argument("--naive-messages", type=int, default=20000,
                   help="backlog of the naive row (default min(N, 20,000))")
    p.add_argument("--live-rate", type=float, default=0, metavar="R",
                   help="after the rounds, a live run: one ingest process, a paced publisher "
                   "offering R msg/s for --live-seconds; device ts -> received_at lag "
                   "(default 0: no live run)")
    p.add_argument("--live-seconds", type=float, default=20, help="live run length (20 s)")
    p.add_argument("--gateway-every", type=int, default=0, metavar="K",
                   help="in the ingest row, every K-th message a gateway batch of ~64 KiB "
                   "(smoke_status entries, just under ingest.max_payload_bytes), each entry a "
                   "readings row checked like the rest; the other rows stay telemetry only")
    p.add_argument("--memory-check", action="store_true",
                   help="only the ingest row, one round, with gateway batches (--gateway-every,"
                   " 100 if not given): peak RSS and the window's peaks")
    p.add_argument("--py-spy", metavar="FILE",
                   help="record a py-spy profile of the first ingest row (.svg flame graph, "
                   ".json speedscope, else collapsed stacks; pip install py-spy)")
    p.add_argument("--keep", action="store_true",
                   help="keep every process's log and each broker's (the path is printed)")
    p.add_argument("--tls", action="store_true",
                   help="the firegrid rows connect over TLS (mqtt.tls, a client certificate,"
                   " a second listener of each broker); publishers and count-only rows stay"
                   " on plain MQTT")
    flavours.add_argument(p)
    args = p.parse_args(argv)
    if args.memory_check:
        args.rows, args.rounds, args.live_rate = "ingest", 1, 0
        args.gateway_every = args.gateway_every or 100
    tree_label = ""
    if args.tree:
        args.tree = str(Path(args.tree).resolve())
        if not (Path(args.tree) / "firegrid" / "cli.py").exists():
            p.error(f"--tree: {args.tree} has no firegrid/cli.py")
        tree_label = subprocess.run(["git", "-C", args.tree, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
        tree_label = tree_label or Path(args.tree).name
    args.tree_label = tree_label
    table = row_table(args.workers, args.tree or "", tree_label)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    if args.tree and "tree" not in keys:
        keys.insert(keys.index("ingest") + 1 if "ingest" in keys else 0, "tree")
    if "tree" in keys and not args.tree:
        p.error("--rows tree: give --tree DIR")
    unknown = [k for k in keys if k not in table]
    if unknown or not keys or len(set(keys)) != len(keys):
        p.error(f"--rows: a list of distinct rows among {', '.join(table)}")
    if args.rounds < 1 or args.gateway_every < 0 or args.messages < 1:
        p.error("--rounds and --messages must be >= 1, --gateway-every >= 0")
    if "workers" in keys and args.workers < 2:
        p.error("--workers: 2 or more (leave the workers row out of --rows instead)")
    if args.py_spy:
        import shutil
        args.py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(args.py_spy_bin).exists():
            p.error("--py-spy: no py-spy here (.venv/bin/pip install py-spy)")
    n = args.messages
    started = time.monotonic()
    ticks0 = cpu_ticks()
    args.code, mtimes0 = code_version()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    results: list[dict] = []
    with ExitStack() as stack:
        bench = Bench(args, stack)
        pg_version = bench.sql("SHOW server_version", fetch=True)[0][0]
        say(f"{machine()}; PostgreSQL {pg_version} ({args.flavour}); logs in {bench.logs}")
        warmup = None
        if args.warmup and not args.memory_check:
            warmup = bench.run(table["ingest"], 0, min(n, args.warmup))
            say(f"warm-up (not in the table): firegrid ingest, 1 process, "
                f"{warmup['messages']:,} messages: {fmt_rate(warmup['rate'])} msg/s, lost "
                f"{warmup['lost']}, duplicated {warmup['duplicated']}")
        for rnd in range(1, args.rounds + 1):
            for key in round_order(keys, rnd):
                row = table[key]
                count = min(n, args.naive_messages) if row.kind == "naive" else n
                r = bench.run(row, rnd, count)
                results.append(r)
                check = (f", lost {r['lost']}, duplicated {r['duplicated']}"
                         if row.firegrid else "")
                say(f"round {rnd} {row.label}: {fmt_rate(r['rate'])} msg/s, load "
                    f"{r['load1']:.2f}, others {r['others']:.2f} cores{check}"
                    + (f"  {r['note']}" if r.get("note") else ""))
        live = None
        if args.live_rate:
            live = bench.live(args.live_rate, args.live_seconds)
            say(f"live {args.live_rate:,.0f} msg/s: lag p50 {live['lag_p50_ms']:.1f} ms, p99 "
                f"{live['lag_p99_ms']:.1f} ms, lost {live['lost']}, duplicated "
                f"{live['duplicated']}")
        ingest_settings = settings_line(bench)
    mtimes1 = code_version()[1]
    args.code_changed = sorted(Path(p).relative_to(REPO).as_posix() for p in
                               set(mtimes0) | set(mtimes1) if mtimes0.get(p) != mtimes1.get(p))
    steal, total = (b - a for a, b in zip(ticks0, cpu_ticks(), strict=True))
    args.steal_pct = 100 * steal / total if total else 0.0
    report(args, table, keys, results, [x for x in (warmup, live) if x], live, n, pg_version,
           ingest_settings, time.monotonic() - started)
    return 0


def settings_line(bench: Bench) -> str:
    """The settings the firegrid rows ran with (shipped, but for the options given)."""
    from runtime.settings import IngestSettings
    a = bench.args
    ing = IngestSettings(**{k: v for k, v in (
        ("inflight_window", a.window), ("batch_max_rows", a.batch),
        ("batch_max_age_ms", a.age_ms), ("window_max_bytes", a.window_max_bytes)) if v})
    return (f"MQTT {bench.mqtt.protocol}{' over TLS' if a.tls else ''}, window "
            f"{ing.inflight_window} messages / "
            f"{ing.window_max_bytes / 2**20:.0f} MiB, batch {ing.batch_max_rows} rows / "
            f"{ing.batch_max_age_ms} ms" + (" (given)" if any(
                (a.protocol, a.window, a.batch, a.age_ms, a.window_max_bytes)) else
                " (shipped defaults)"))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(args, table: dict[str, Row], keys: list[str], results: list[dict],
           extra_runs: list[dict], live: dict | None, n: int, pg_version: str,
           ingest_settings: str, total_s: float) -> None:
    """The table, the ratios per round, the rows over the rounds, the checks (over every
    firegrid run: the rows, the warm-up and the live run), MEMORY and RESULT."""
    ncpu = os.cpu_count() or 1
    lines: list[str] = []
    add = lines.append
    add("")
    add(f"firegrid ingest benchmark: {machine()}; PostgreSQL {pg_version} (fsync on, "
        f"{args.flavour})")
    add(f"code: {args.code}")
    if args.code_changed:
        add(f"WARNING: changed during the run, figures mix versions: "
            f"{', '.join(args.code_changed)}")
    add(f"firegrid rows: {ingest_settings}")
    add(f"{n:,} queued QoS 1 messages per row (smoke_status JSON "
        f"~{len(Fleet(1).message(0, now_ms())[1])} bytes, {args.devices:,} devices), a fresh "
        f"broker per row; {args.rounds} round(s) in the order "
        + " / ".join(" ".join(round_order(keys, r)) for r in range(1, min(args.rounds, 2) + 1)))
    gw = next((r["gateway"] for r in results if r.get("gateway")), None)
    if gw:
        share = "every message" if gw["every"] == 1 else f"1 message in {gw['every']}"
        add(f"ingest row: {share} a gateway batch instead ({gw['count']:,} of them, {GATEWAYS} "
            f"gateway ids, {gw['entries']} smoke_status entries each, {gw['min_bytes']:,}-"
            f"{gw['max_bytes']:,} bytes; limit {gw['limit']:,}): {gw['rows']:,} readings rows "
            "expected; its CPU is per readings row, not per message")
    for r in results:
        per = r.get("count") or r["messages"]
        r["us"] = {k: v / per * 1e6 for k, v in r["cpu_s"].items()} if per else {}
        total_us = sum(r["us"].values())
        r["limit"] = ncpu / total_us * 1e6 if total_us else 0.0
    add("")
    w = max(len(table[k].label) for k in keys)
    head = (f"{'round':>5}  {'row':<{w}} {'msg/s':>9} {'seconds':>8} {'load1':>6} {'others':>6}"
            f"  {'CPU us/msg: client':>18} {'broker':>6} {'pg':>6}  {'limit':>9} "
            f"{'client cores':>12}  check")
    add(head)
    add("-" * len(head))
    for r in results:
        row = table[r["key"]]
        us = r["us"]
        check = (f"lost {r['lost']} dup {r['duplicated']}" if row.firegrid else "")
        if row.kind == "naive":
            check = f"{r['messages']:,} messages only"
        add(f"{r['round']:>5}  {row.label:<{w}} {fmt_rate(r['rate']):>9} {r['seconds']:>8.2f} "
            f"{r['load1']:>6.2f} {r['others']:>6.2f}  {us.get('client', 0):>18.1f} "
            f"{us.get('broker', 0):>6.1f} {us.get('postgres', 0):>6.1f}  "
            f"{fmt_rate(r['limit']):>9} {r['client_cores']:>12.2f}  {check}"
            + (f"  {r['note']}" if r.get("note") else ""))
    lines.extend(textwrap.wrap(
        "(msg/s: firegrid from the first row's received_at to the last reading stored, the "
        "others from CONNACK to the last message counted; load1: the 1-minute load average at "
        "the row's end; others: cores busy with anything but the row's client, broker and "
        f"PostgreSQL meanwhile; client: the ingest process(es) or the subscriber; limit: {ncpu}"
        " cores / (client + broker + pg CPU per message), the rate this box allows if "
        "nothing else ran; client cores: the client's CPU over the row's time, 1.00 = a whole "
        "core; under 1 it waited, on its own pipeline or for a core the others held)",
        len(head)))

    # Ratios from rows of the same round.
    by_round: dict[int, dict[str, dict]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["key"]] = r
    pairs = [(a, b) for a, b in RATIOS if a in keys and b in keys]
    ratios: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    if pairs:
        add("")
        names = [f"{a} / {b}" for a, b in pairs]
        add(f"{'round':>5}  " + "  ".join(f"{x:>16}" for x in names)
            + "   (ratios of msg/s, rows of the same round)")
        for rnd, rows in sorted(by_round.items()):
            cells = []
            for a, b in pairs:
                if rows[a]["rate"] and rows[b]["rate"]:
                    ratios[(a, b)].append(rows[a]["rate"] / rows[b]["rate"])
                    cells.append(f"{ratios[(a, b)][-1]:>15.2f}x")
                else:
                    cells.append(f"{'-':>16}")
            add(f"{rnd:>5}  " + "  ".join(cells))
        add(f"{'median':>5}  " + "  ".join(
            f"{median(ratios[pair]):>15.2f}x" if ratios[pair] else f"{'-':>16}"
            for pair in pairs))

    # Per row, over the rounds.
    add("")
    add(f"{'row, over the rounds':<{w}} {'msg/s median':>12} {'min-max':>17}  "
        f"{'CPU us/msg client / broker / pg (median)':>40}")
    summary: dict[str, dict] = {}
    for key in keys:
        rs = [r for r in results if r["key"] == key]
        rates = [r["rate"] for r in rs]
        us = {k: median([r["us"].get(k, 0.0) for r in rs]) or 0.0
              for k in ("client", "broker", "postgres")}
        summary[key] = {"rate": median(rates), "us": us}
        add(f"{table[key].label:<{w}} {fmt_rate(median(rates)):>12} "
            f"{fmt_rate(min(rates)) + '-' + fmt_rate(max(rates)):>17}  "
            f"{us['client']:>24.1f} / {us['broker']:>5.1f} / {us['postgres']:>5.1f}")

    if live is not None:
        add("")
        add(f"live run: {args.live_rate:,.0f} msg/s offered for {args.live_seconds:g} s "
            f"({live['offered']:,} messages, the publisher achieved "
            f"{fmt_rate(live['achieved_rate'])}/s), one ingest process, load "
            f"{live['load1']:.2f}")
        add(f"  device ts -> received_at  p50 {live['lag_p50_ms']:.1f} ms, p99 "
            f"{live['lag_p99_ms']:.1f} ms, max {live['lag_max_ms']:.1f} ms; rows "
            f"{live['rows']:,}, lost {live['lost']}, duplicated {live['duplicated']}")
    fg = [r for r in results if table[r["key"]].firegrid] + extra_runs
    lost = sum(r["lost"] for r in fg)
    dup = sum(r["duplicated"] for r in fg)
    if fg:
        add("")
        add(f"firegrid check, by query after each of the {len(fg)} firegrid runs: lost {lost}, "
            f"duplicated {dup}, unexpected rows {sum(r['unexpected'] for r in fg)}, dead "
            f"letters {sum(r['dead_letters'] for r in fg)}, reconnects "
            f"{sum(r['reconnects'] for r in fg)}")
    vs_paho = ratios.get(("ingest", "paho"), [])
    pg_us = summary.get("ingest", {}).get("us", {}).get("postgres")
    if vs_paho or fg:
        add("")
        add("issue 18, done when:")
        if vs_paho:
            mid = median(vs_paho) or 0.0
            add(f"  one firegrid ingest process >= {GOAL_VS_PAHO}x paho count-only (3.1.1), "
                f"median of the rounds: {mid:.2f}x (rounds: "
                f"{', '.join(f'{x:.2f}x' for x in vs_paho)})  "
                f"{'PASS' if mid >= GOAL_VS_PAHO else 'FAIL'}")
            cpu_ratio = (summary["paho"]["us"]["client"] / summary["ingest"]["us"]["client"]
                         if summary["ingest"]["us"]["client"] else 0.0)
            add(f"    by client CPU per message (medians over the rounds): paho's "
                f"{summary['paho']['us']['client']:.1f} us / ingest's "
                f"{summary['ingest']['us']['client']:.1f} us = {cpu_ratio:.2f}x")
        if fg:
            add(f"  0 lost: {lost}  {'PASS' if lost == 0 else 'FAIL'}")
            add(f"  0 duplicated: {dup}  {'PASS' if dup == 0 else 'FAIL'}")
        if pg_us is not None:
            add(f"  PostgreSQL CPU per message, one ingest process (median): {pg_us:.1f} us "
                "(at d307ebe, before issue 18: 13-18 us; the goal is at most half)")
        tree_pg = summary.get("tree", {}).get("us", {}).get("postgres")
        if pg_us is not None and tree_pg:
            add(f"    against {table['tree'].label} in the same rounds: {tree_pg:.1f} us, so "
                f"{pg_us / tree_pg:.2f} of it")
    add("")
    add(f"total run time {total_s:.0f} s; CPU steal by the hypervisor during the run "
        f"{args.steal_pct:.1f}%")
    print("\n".join(lines))

    first = next((r for r in results if r["key"] == "ingest"), None)
    if first is not None:
        gw = first.get("gateway")
        print(f"MEMORY peak_rss_kib={first['peak_rss_kib']} "
              f"start_rss_kib={first['rss_start_kib']} "
              f"window_peak_msgs={first['window_peak']:.0f} "
              f"window_peak_bytes={first['window_peak_bytes']:.0f} "
              f"window_waits={first['window_waits']:.0f} "
              f"window_max={window_bounds(args)[0]} window_max_bytes={window_bounds(args)[1]} "
              f"msgs_per_s={first['rate']:.0f} rows_per_s={first['rows_rate']:.0f} "
              f"messages={n} gateway_every={gw['every'] if gw else 0} "
              f"gateway_bytes={gw['max_bytes'] if gw else 0} lost={first['lost']} "
              f"duplicated={first['duplicated']}", flush=True)

    def num(x: float | None, fmt: str) -> str:
        return format(x, fmt) if x is not None else "n/a"

    def rate(key: str) -> str:
        return num(summary.get(key, {}).get("rate"), ".0f")

    def us(part: str) -> str:
        return num(summary.get("ingest", {}).get("us", {}).get(part), ".1f")
    print(f"RESULT ingest_msgs_per_s={rate('ingest')} vs_paho={num(median(vs_paho), '.2f')} "
          f"vs_paho_rounds={','.join(f'{x:.2f}' for x in vs_paho) or 'n/a'} "
          f"workers_msgs_per_s={rate('workers')} "
          f"vs_mqtt5={num(median(ratios.get(('ingest', 'mqtt5'), [])), '.2f')} "
          f"lost={lost} duplicated={dup} postgres_us_per_msg={us('postgres')} "
          f"ingest_us_per_msg={us('client')} broker_us_per_msg={us('broker')} "
          f"rounds={args.rounds} messages={n} flavour={args.flavour}"
          + (f" tree={args.tree_label} "
             f"vs_tree={num(median(ratios.get(('ingest', 'tree'), [])), '.2f')} "
             f"tree_postgres_us_per_msg={num(summary['tree']['us']['postgres'], '.1f')}"
             if "tree" in summary else ""), flush=True)


def window_bounds(args) -> tuple[int, int]:
    from runtime.settings import IngestSettings
    ing = IngestSettings(**{k: v for k, v in (("inflight_window", args.window),
                                              ("window_max_bytes", args.window_max_bytes)) if v})
    return ing.inflight_window, ing.window_max_bytes


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
