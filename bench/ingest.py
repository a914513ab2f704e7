#!/usr/bin/env python
"""firegrid ingest benchmark: backlog drain, baselines, loss check and live lag, in one run.

    .venv/bin/python bench/ingest.py [--messages N]      (default N = 1,000,000)

Starts a private Mosquitto (the shipped deploy/mosquitto/conf.d) and a private, durable
PostgreSQL (fsync on) through runtime.localsvc, on 127.0.0.1 only, and removes both at the
end. --flavour timescale runs that PostgreSQL with TimescaleDB (bench/flavour.py: readings
a hypertable, as in production) instead of plain tables. Every measurement gets a fresh
broker with the same configuration and the same payloads: realistic smoke_status telemetry
(~190 bytes of JSON) from --devices devices with a per-device seq; the device ts is the
publish time.

Backlog drain (the primary figure): the subscriber's persistent session is created first
(QoS 1 subscriptions on firegrid's own topic filters), N messages are published QoS 1 while it
is away (the broker queues them; publishing is not timed), then the subscriber starts and is
timed until the N-th message is handled:

    firegrid   IngestService (the same code and FIREGRID_* settings as `firegrid ingest`) in
               its own process; timed from the first row's received_at until N distinct
               readings are committed (and acknowledged) by ingest's own counters.
    paho       (timed from CONNACK, like raw and naive)
               paho-mqtt 2 count-only subscriber, auto-ack, MQTT 5 with Receive Maximum
               65535 (and MQTT 3.1.1, where the broker's max_inflight_messages rules): the
               MQTT client ceiling.
    raw        bench/mqttraw.py, a minimal socket client that parses PUBLISH packets from one
               big recv buffer and answers each recv with one sendall of PUBACKs: the broker
               ceiling.
    naive      the tutorial pipeline: paho on_message -> json.loads -> one INSERT + COMMIT per
               message. Slow, so it runs on --naive-messages (default min(N, 20,000)).

Then: lost/duplicated are checked by query against exactly what was published, a few
window/batch/protocol settings are compared on --sweep-messages (best of --sweep-repeat
runs; the primary figure always uses --window/--batch/--age-ms/--protocol, by default the
shipped defaults), and a live run publishes at
--live-rate msg/s for --live-seconds (paced, own process) with ingest running and reports
device-to-row lag (received_at - ts) and receive-to-commit lag.

Memory: the firegrid worker reports its peak RSS (ru_maxrss) and the window's peaks (messages
and payload bytes held unacknowledged at once) and waits. --gateway-every K makes 1 message
in K of the primary drain a gateway batch of ~64 KiB (smoke_status entries, each a readings
row in the loss check); --memory-check runs only that drain (K = 100 unless given):

    .venv/bin/python bench/ingest.py --messages 1000000 --memory-check

The last two lines printed are always:
    MEMORY peak_rss_kib=<n> start_rss_kib=<n> window_peak_msgs=<n> window_peak_bytes=<n>
           window_waits=<n> window_max=<n> window_max_bytes=<n> msgs_per_s=<n>
           rows_per_s=<n> messages=<n> gateway_every=<k> gateway_bytes=<n> lost=<n>
           duplicated=<n>            (one line; the primary firegrid drain)
    RESULT ingest_msgs_per_s=<n> vs_paho=<ratio> vs_raw=<ratio> vs_naive=<ratio> lost=<n>
           duplicated=<n> flavour=<plain|timescale>            (one line)

Worker modes (`bench/ingest.py _publish|_raw|_paho|_naive|_firegrid ...`) are internal: the
benchmark runs each client in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from threading import Timer

REPO = Path(__file__).resolve().parent.parent
# As a script, this file's folder is sys.path[0], where "ingest" would be this file rather
# than the firegrid package. Put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import flavour as flavours  # noqa: E402
from bench import mqttraw  # noqa: E402

HOST = "127.0.0.1"
PREFIX = "fg/v1"
TARGETS = {"vs_paho": 0.8, "vs_naive": 15.0}
# Gateway ids the mixed-in gateway batches come from, round robin; each relays for its own
# devices, so 100 of them with ~300 entries each add ~30,000 device ids to the 20,000.
GATEWAYS = 100
SWEEP = "4000/1000/50,2000/500/50,16000/4000/100,4000/1000/50/3.1.1,4000/2000/100/3.1.1"


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


# --- workers (each runs in its own process) -----------------------------------------------

def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def w_publish(a: argparse.Namespace) -> None:
    fleet = Fleet(a.devices, a.gateway_every, a.first + a.count)
    pub = mqttraw.Publisher(HOST, a.port, a.client_id, window=20000)
    started = time.monotonic()
    end = a.first + a.count
    i = a.first
    if not a.rate:
        while i < end:
            n = min(1000, end - i)
            ts = now_ms()
            pub.send(fleet.message(k, ts) for k in range(i, i + n))
            i += n
    else:
        tick = 0.005
        while i < end:
            due = a.first + min(a.count, int((time.monotonic() - started) * a.rate)) - i
            if due > 0:
                ts = now_ms()
                pub.send(fleet.message(k, ts) for k in range(i, i + due))
                i += due
            time.sleep(tick)
    sent_s = time.monotonic() - started
    pub.flush(timeout=a.timeout)
    acked_s = time.monotonic() - started
    pub.close()
    emit({"sent": pub.sent, "acked": pub.acked, "send_s": sent_s, "seconds": acked_s})


def w_raw(a: argparse.Namespace) -> None:
    r = mqttraw.drain(HOST, a.port, a.client_id, a.count, version=_version(a.protocol),
                      receive_max=a.receive_max, session_expiry=a.session_expiry,
                      timeout=a.timeout)
    emit({"count": r["count"], "session_present": r["session_present"],
          "seconds": r["t_last"] - r["t_connack"], "recvs": r["recvs"]})


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
    handle(msg) for each first if given; report the count and the time from CONNACK, exit."""
    import threading

    st = {"count": 0, "t_connack": None, "t_last": None, "present": None}

    def on_connect(client, userdata, flags, reason, properties):
        st["t_connack"] = time.monotonic()
        st["present"] = flags.session_present

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
          "seconds": done - (st["t_connack"] or done)})
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


def w_firegrid(a: argparse.Namespace) -> None:
    """IngestService exactly as `firegrid ingest` runs it (settings from FIREGRID_*), plus a
    monitor thread that notes when --count distinct readings are stored, then stops it."""
    import logging
    import resource
    import signal
    import threading

    from prometheus_client import REGISTRY

    from ingest.service import IngestService
    from runtime.settings import load_settings

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = IngestService(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())

    commit_lags: list[float] = []
    if a.commit_lag:
        # Receive-to-commit lag: consumer.ack runs right after COMMIT with the batch.
        real_ack = service.consumer.ack

        def ack(items):
            sent = real_ack(items)
            now = time.monotonic()
            commit_lags.extend(now - item.received_mono for item in items)
            return sent
        service.consumer.ack = ack

    result: dict = {}

    def stored() -> float:
        """Readings rows inserted (not duplicates), from ingest's own metrics."""
        value = REGISTRY.get_sample_value("firegrid_ingest_rows_total",
                                          {"table": "readings", "outcome": "stored"})
        return service.committed if value is None else value

    def monitor() -> None:
        deadline = time.monotonic() + a.timeout
        ready = getattr(service.consumer, "subscribed", None) or service.consumer.connected
        if not ready.wait(a.timeout):
            result["error"] = "never subscribed"
            service.stop()
            return
        t_conn, cpu_conn = time.monotonic(), time.process_time()
        emit({"event": "connected"})
        next_trace = t_conn
        # Done when --count distinct readings are stored. `committed` counts messages, and a
        # message redelivered after a reconnect is committed again (ON CONFLICT makes it
        # one row), so it can reach n while some messages are still in the broker.
        while time.monotonic() < deadline:
            # Every message must be committed before the last row is stored, and reading
            # committed costs nothing; stored() walks the metrics registry (~ms), so it is
            # asked only near the end. (--messages: a gateway batch is many rows.)
            if service.committed >= (a.messages or a.count) and stored() >= a.count:
                break
            time.sleep(0.02)
            if time.monotonic() >= next_trace:  # a progress timeline for the log
                next_trace += 1.0
                print(f"bench: t={time.monotonic() - t_conn:6.2f}s stored={stored():.0f} "
                      f"committed={service.committed} received="
                      f"{getattr(service.consumer, 'received', '?')} window="
                      f"{len(service.window)} held={service.window.held}/"
                      f"{service.window.held_bytes}B rss={vm_kib('VmRSS')}KiB",
                      file=sys.stderr, flush=True)
        # done_wall is compared with the first row's received_at: the drain is timed from the
        # first message taken, as SUBACK (subscribed) arrives only after the first window.
        result.update(count=int(stored()), done_wall=time.time(),
                      ingest_cpu_s=time.process_time() - cpu_conn)
        emit({"event": "done"})
        service.stop()

    threading.Thread(target=monitor, daemon=True).start()
    # What the process holds before the first message (interpreter, imports, settings): the
    # drain's own cost is the peak above it.
    result["rss_start_kib"] = vm_kib("VmRSS")
    service.run()
    result["committed_final"] = service.committed
    # ru_maxrss (KiB on Linux) is the peak over the whole process life, drain included.
    window = service.window
    result.update(peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  window_peak=window.peak, window_peak_bytes=window.peak_bytes,
                  window_waits=window.waits, window_max=settings.ingest.inflight_window,
                  window_max_bytes=settings.ingest.window_max_bytes)
    result["duplicates_absorbed"] = REGISTRY.get_sample_value(
        "firegrid_ingest_rows_total", {"table": "readings", "outcome": "duplicate"}) or 0
    if commit_lags:
        commit_lags.sort()
        last = len(commit_lags) - 1
        result["commit_lag_ms"] = {"p50": commit_lags[int(0.5 * last)] * 1000,
                                   "p99": commit_lags[int(0.99 * last)] * 1000,
                                   "max": commit_lags[-1] * 1000}
    emit(result)


def vm_kib(field: str) -> int:
    """A figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _version(protocol: str) -> int:
    return 5 if protocol == "5" else 4


WORKERS = {"_publish": w_publish, "_raw": w_raw, "_paho": w_paho, "_naive": w_naive,
           "_firegrid": w_firegrid}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog=f"bench/ingest.py {argv[0]}")
    p.add_argument("--port", type=int)
    p.add_argument("--client-id", default="bench")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--messages", type=int, default=0, help="_firegrid: messages (--count rows)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--devices", type=int, default=20000)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    p.add_argument("--receive-max", type=int, default=65535)
    p.add_argument("--session-expiry", type=int, default=86400)
    p.add_argument("--db-url")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--commit-lag", action="store_true")
    p.add_argument("--gateway-every", type=int, default=0)
    WORKERS[argv[0]](p.parse_args(argv[1:]))


# --- the harness --------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from runtime.localsvc import make_state_dir
        self.args = args
        self.state = Path(args.state_dir) if args.state_dir else make_state_dir("firegrid-bench-")
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)
        self.logs = self.state / "logs"
        self.logs.mkdir(exist_ok=True)
        self.pg = flavours.postgres(self.state / "pg", args.flavour, durable=True)
        self.brokers: list = []
        self.phase = 0

    # infrastructure

    def start_db(self) -> None:
        from runtime import db, migrate
        from runtime.settings import DatabaseSettings
        self.pg.start()
        self.db_url = self.pg.url("firegrid")
        settings = DatabaseSettings(url=self.db_url,
                                    timescale=flavours.timescale_setting(self.args.flavour))
        db.ensure_database(settings)
        self.flavour = migrate.migrate(settings).flavour
        self.sql("CREATE TABLE IF NOT EXISTS naive_readings (LIKE readings INCLUDING ALL)")

    def sql(self, query: str, params=None, *, fetch: bool = False):
        import psycopg
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if fetch else None

    def fresh_broker(self, tag: str):
        from runtime.localsvc import Mosquitto
        self.phase += 1
        mq = Mosquitto(self.state / f"mq-{self.phase:02d}-{tag}").start()
        self.brokers.append(mq)
        return mq

    def drop_broker(self, mq) -> None:
        log = mq.base / "mosquitto.log"
        if log.exists():
            shutil.copy(log, self.logs / f"{mq.base.name}-mosquitto.log")
        mq.destroy()
        self.brokers.remove(mq)

    def worker(self, mode: str, *args: str, tag: str, timeout: float,
               env: dict | None = None) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), mode, *args]
        with open(self.logs / f"{self.phase:02d}-{tag}.log", "ab") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, env=env,
                                  timeout=timeout + 60, cwd=REPO)
        lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{mode} failed (exit {proc.returncode}); see "
                               f"{self.logs / f'{self.phase:02d}-{tag}.log'}")
        return json.loads(lines[-1])

    def publish(self, mq, count: int, *, tag: str, rate: float = 0,
                gateway_every: int = 0) -> dict:
        # Gateway batches are ~64 KiB each: allow for their bytes too (~1,000/s is slow).
        big = count // gateway_every / 1000 if gateway_every else 0
        r = self.worker("_publish", "--port", str(mq.port), "--client-id", f"pub-{tag}",
                        "--count", str(count), "--devices", str(self.args.devices),
                        "--rate", str(rate), "--gateway-every", str(gateway_every),
                        tag=f"{tag}-pub",
                        timeout=max(120.0, count / 5000 + big + (count / rate if rate else 0)))
        if r["acked"] != count:
            raise RuntimeError(f"publisher: {r['acked']} of {count} acknowledged")
        return r

    def prepare(self, mq, client_id: str, protocol: str) -> None:
        from runtime.settings import MqttSettings
        from transport.mqtt import subscriptions
        mqttraw.prepare_session(HOST, mq.port, client_id, subscriptions(MqttSettings()),
                                version=_version(protocol),
                                session_expiry=MqttSettings().session_expiry_s)

    def firegrid_env(self, mq, cfg: str, tag: str) -> dict:
        window, batch, age_ms, protocol = parse_cfg(cfg)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIREGRID_")}
        env.update({
            "FIREGRID_MQTT__HOST": HOST, "FIREGRID_MQTT__PORT": str(mq.port),
            "FIREGRID_MQTT__CLIENT_ID": f"firegrid-bench-{tag}",
            "FIREGRID_MQTT__PROTOCOL": protocol,
            "FIREGRID_DATABASE__URL": self.db_url,
            "FIREGRID_INGEST__METRICS_PORT": "0",
            "FIREGRID_INGEST__INFLIGHT_WINDOW": str(window),
            "FIREGRID_INGEST__BATCH_MAX_ROWS": str(batch),
            "FIREGRID_INGEST__BATCH_MAX_AGE_MS": str(age_ms),
        })
        if self.args.window_max_bytes:  # else ingest's own default
            env["FIREGRID_INGEST__WINDOW_MAX_BYTES"] = str(self.args.window_max_bytes)
        return env

    def reset_tables(self) -> None:
        self.sql("TRUNCATE readings, events, dead_letters, naive_readings")
        self.sql("CHECKPOINT")

    # measurements

    def drain_baseline(self, kind: str, n: int, protocol: str) -> dict:
        tag = f"{kind}{protocol.replace('.', '')}"
        mq = self.fresh_broker(tag)
        try:
            client_id = f"bench-{tag}"
            self.prepare(mq, client_id, protocol)
            if kind == "naive":
                self.reset_tables()
            pub = self.publish(mq, n, tag=tag)
            args = ["--port", str(mq.port), "--client-id", client_id, "--count", str(n),
                    "--protocol", protocol, "--timeout", str(self.drain_timeout(n, kind))]
            if kind == "naive":
                args += ["--db-url", self.db_url]
            r = self.worker(f"_{kind}", *args, tag=tag, timeout=self.drain_timeout(n, kind))
            if kind == "naive":
                r["rows"] = self.sql("SELECT count(*) FROM naive_readings", fetch=True)[0][0]
        finally:
            self.drop_broker(mq)
        r["rate"] = r["count"] / r["seconds"] if r["seconds"] else 0
        r["publish_rate"] = n / pub["seconds"]
        if r["count"] < n:
            r["note"] = f"TIMED OUT: {r['count']} of {n}"
        return r

    def drain_timeout(self, n: int, kind: str) -> float:
        return max(120.0, n / (150 if kind == "naive" else 2500))

    def run_firegrid(self, mq, n: int, cfg: str, *, tag: str, timeout: float,
                     commit_lag: bool = False, live_rate: float = 0, spy: str | None = None,
                     rows: int = 0) -> dict:
        """Run the firegrid ingest process on a prepared session until it has stored `rows`
        readings (default n: one per message). With live_rate, the paced publisher starts
        once ingest is subscribed. Notes the CPU time of the broker and of PostgreSQL
        between subscribe and done."""
        env = self.firegrid_env(mq, cfg, tag)
        cmd = [sys.executable, str(Path(__file__).resolve()), "_firegrid",
               "--count", str(rows or n), "--messages", str(n),
               "--timeout", str(timeout)] + (["--commit-lag"] if commit_lag else [])
        proc = spy_proc = None
        r: dict = {}
        log = self.logs / f"{self.phase:02d}-{tag}.log"
        try:
            with open(log, "ab") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env,
                                        cwd=REPO)
                if spy:
                    spy_proc = subprocess.Popen(
                        [self.args.py_spy_bin, "record", "--pid", str(proc.pid), "--threads",
                         "--nonblocking", "--rate", "100", "--format", spy_format(spy),
                         "-o", spy], stdout=err, stderr=err)
                killer = Timer(timeout + 60, proc.kill)
                killer.start()
                try:
                    cpu0 = None
                    for line in proc.stdout:
                        msg = json.loads(line) if line.startswith(b"{") else {}
                        if msg.get("event") == "connected":
                            cpu0 = self.cpu(mq)
                            if live_rate:
                                r["publisher"] = self.publish(mq, n, tag=tag, rate=live_rate)
                        elif msg.get("event") == "done" and cpu0:
                            r["cpu_s"] = {k: v - cpu0[k] for k, v in self.cpu(mq).items()}
                        elif msg and "event" not in msg:
                            r.update(msg)
                    proc.wait()
                finally:
                    killer.cancel()
            if spy_proc is not None:
                spy_proc.wait(60)
        finally:
            for p in (proc, spy_proc):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        if proc.returncode != 0 or "done_wall" not in r:
            raise RuntimeError(f"firegrid ingest failed (exit {proc.returncode}, {r}); see {log}")
        r.setdefault("cpu_s", {})["ingest"] = r.pop("ingest_cpu_s", 0.0)
        r["reconnects"] = log.read_text(errors="replace").count("lost broker connection")
        return r

    def cpu(self, mq) -> dict:
        """CPU seconds used so far by the broker and by the PostgreSQL server processes."""
        pg_pids = []
        try:
            postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
            pg_pids = [postmaster] + [int(p) for p in Path(f"/proc/{postmaster}/task/"
                                      f"{postmaster}/children").read_text().split()]
        except (OSError, ValueError):
            pass
        return {"broker": proc_cpu(mq.proc.pid), "postgres": sum(map(proc_cpu, pg_pids))}

    def drain_firegrid(self, n: int, cfg: str, *, tag: str, spy: str | None = None,
                       gateway_every: int = 0) -> dict:
        fleet = Fleet(1, gateway_every, n)  # for the gateway batches; devices do not matter
        rows = fleet.expected_rows(n)
        mq = self.fresh_broker(tag)
        try:
            self.prepare(mq, f"firegrid-bench-{tag}", cfg_protocol(cfg))
            self.reset_tables()
            pub = self.publish(mq, n, tag=tag, gateway_every=gateway_every)
            r = self.run_firegrid(mq, n, cfg, tag=tag,
                                  timeout=self.drain_timeout(rows, "firegrid"), spy=spy,
                                  rows=rows)
        finally:
            self.drop_broker(mq)
        r.update(self.verify(n, fleet))
        # From the first message taken (its received_at) to the last row's commit.
        r["seconds"] = r["done_wall"] - r["first_received"]
        r["rows_rate"] = r["count"] / r["seconds"]
        # msg/s counts MQTT messages: a gateway batch is one, whatever it carries. Without
        # gateways rows and messages are the same figure.
        r["rate"] = n * min(1.0, r["count"] / rows) / r["seconds"]
        r["publish_rate"] = n / pub["seconds"]
        r["settings"] = cfg
        if r["count"] < rows:
            r["note"] = f"TIMED OUT: {r['count']:,} of {rows:,} rows"
        if fleet.gateways is not None:
            g = fleet.gateways
            r["gateway"] = {"every": gateway_every, "count": g.count, "entries": g.entries,
                            "min_bytes": g.min_bytes, "max_bytes": g.max_bytes,
                            "limit": g.limit, "rows": rows}
        return r

    def drain_workers(self, n: int, cfg: str, workers: int) -> dict:
        """`firegrid ingest --workers W` exactly as shipped. Timed from the first row's
        received_at to the moment the workers' own metrics (rows stored, summed over their
        metrics ports) reach n, polled every 20 ms; a count(*) poll would itself load the
        database it measures. Rows are then verified by query as for every firegrid run."""
        tag = f"workers{workers}"
        mq = self.fresh_broker(tag)
        log = self.logs / f"{self.phase:02d}-{tag}.log"
        from runtime.localsvc import free_ports
        base = free_ports(workers)
        proc = None
        try:
            for i in range(workers):  # every member of the group subscribed before the fill
                self.prepare(mq, f"firegrid-bench-{tag}-{i}", cfg_protocol(cfg))
            self.reset_tables()
            pub = self.publish(mq, n, tag=tag)
            env = self.firegrid_env(mq, cfg, tag)
            env["FIREGRID_INGEST__METRICS_PORT"] = str(base)
            with open(log, "ab") as err:
                proc = subprocess.Popen([sys.executable, "-m", "firegrid.cli", "ingest",
                                         "--workers", str(workers)], env=env, stdout=err,
                                        stderr=err, cwd=REPO)
                deadline = time.monotonic() + self.drain_timeout(n, "firegrid")
                stored = 0.0
                while time.monotonic() < deadline:
                    stored = sum(scrape(base + i, "firegrid_ingest_rows_total",
                                        'outcome="stored",table="readings"')
                                 for i in range(workers))
                    if stored >= n:
                        break
                    time.sleep(0.02)
                done_wall = time.time()
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            self.drop_broker(mq)
        r = self.verify(n)
        count = r["rows"] - r["duplicated"]
        r.update(count=count, settings=cfg, workers=workers, publish_rate=n / pub["seconds"],
                 seconds=done_wall - r["first_received"])
        r["rate"] = count / r["seconds"] if r["seconds"] else 0
        if stored < n:
            r["note"] = f"TIMED OUT: {stored:.0f} of {n}"
        return r

    def verify(self, n: int, fleet: Fleet | None = None) -> dict:
        """Compare readings with exactly what was published: messages 0..n-1, and with a
        fleet that mixes in gateway batches, every entry of each (relayed by its gateway)."""
        d = self.args.devices
        every = fleet.every if fleet else 0
        rows, distinct, first, last = self.sql(
            "SELECT count(*), count(DISTINCT (device_id, seq)), min(received_at),"
            " max(received_at) FROM readings", fetch=True)[0]
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
        span = (last - first).total_seconds() if rows else 0.0
        return {"rows": rows, "lost": lost, "gateway_lost": gateway_lost,
                "duplicated": rows - distinct, "unexpected": distinct - (expected - lost),
                "dead_letters": int(dead), "received_span_s": span,
                "first_received": first.timestamp() if rows else 0}

    def live(self, rate: float, seconds: float, cfg: str) -> dict:
        n = int(rate * seconds)
        tag = "live"
        mq = self.fresh_broker(tag)
        try:
            self.prepare(mq, f"firegrid-bench-{tag}", cfg_protocol(cfg))
            self.reset_tables()
            r = self.run_firegrid(mq, n, cfg, tag=tag, commit_lag=True, live_rate=rate,
                                  timeout=seconds + self.drain_timeout(n, "firegrid"))
        finally:
            self.drop_broker(mq)
        r.update(self.verify(n))
        p50, p99, worst = self.sql(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x) FROM ("
            " SELECT extract(epoch FROM received_at - ts) * 1000 AS x FROM readings) s",
            fetch=True)[0]
        pub = r["publisher"]
        r.update(lag_p50_ms=float(p50), lag_p99_ms=float(p99), lag_max_ms=float(worst),
                 offered=n, achieved_rate=pub["sent"] / pub["send_s"], settings=cfg)
        return r

    def close(self) -> None:
        for mq in list(self.brokers):
            self.drop_broker(mq)
        self.pg.destroy()
        if not self.args.keep:
            shutil.rmtree(self.state, ignore_errors=True)


def parse_cfg(cfg: str) -> tuple[int, int, int, str]:
    """'window/batch/age_ms[/protocol]' -> values; protocol 5 (the default) or 3.1.1."""
    parts = cfg.split("/")
    if len(parts) not in (3, 4):
        raise ValueError(f"bad settings {cfg!r}: want window/batch/age_ms[/5|3.1.1]")
    protocol = parts[3] if len(parts) == 4 else "5"
    if protocol not in ("5", "3.1.1"):
        raise ValueError(f"bad protocol in {cfg!r}")
    return int(parts[0]), int(parts[1]), int(parts[2]), protocol


def cfg_protocol(cfg: str) -> str:
    return parse_cfg(cfg)[3]


def scrape(port: int, name: str, labels: str = "") -> float:
    """One sample from a worker's /metrics (0 while it is not up yet)."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return 0.0
    key = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def code_version() -> tuple[str, dict[str, float]]:
    """The commit measured, the uncommitted changes to the code under test, and the mtimes
    of that code (a change during the run makes the figures a mix of two versions)."""
    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return out.stdout.rstrip("\n") if out.returncode == 0 else ""
    sha = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "--", "ingest", "runtime", "simulators").splitlines()
    label = sha + (" + uncommitted: " + ", ".join(line[3:] for line in dirty) if dirty else "")
    mtimes = {str(p): p.stat().st_mtime for d in ("ingest", "runtime")
              for p in (REPO / d).rglob("*.py")}
    return label, mtimes


def spy_format(path: str) -> str:
    """py-spy output format from the file name: .svg flame graph, .json speedscope, else
    collapsed stacks (one line per stack with its sample count)."""
    suffix = Path(path).suffix
    return {".svg": "flamegraph", ".json": "speedscope"}.get(suffix, "raw")


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


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bench/ingest.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="All parts run by default; --skip-* leaves one out.")
    p.add_argument("--messages", "-n", type=int, default=1_000_000,
                   help="backlog size for the primary drain and the paho/raw baselines "
                   "(default 1,000,000)")
    p.add_argument("--devices", type=int, default=20000, help="distinct device ids (20,000)")
    p.add_argument("--window", type=int, default=4000, help="firegrid inflight_window (4000)")
    p.add_argument("--batch", type=int, default=1000, help="firegrid batch_max_rows (1000)")
    p.add_argument("--age-ms", type=int, default=50, help="firegrid batch_max_age_ms (50)")
    p.add_argument("--protocol", default="3.1.1", choices=("5", "3.1.1"),
                   help="firegrid mqtt.protocol (3.1.1, the shipped default); vs_paho compares "
                        "with paho on the same protocol")
    p.add_argument("--workers", type=int, default=2,
                   help="also drain with `firegrid ingest --workers N` (2; 0 skips)")
    p.add_argument("--naive-messages", type=int, default=20000,
                   help="messages for the naive pipeline (default min(N, 20,000))")
    p.add_argument("--sweep", default=SWEEP,
                   help="window/batch/age_ms[/protocol] settings to compare (default "
                   f"{SWEEP}); with 3.1.1 the broker's max_inflight_messages (4000) is the "
                   "window")
    p.add_argument("--sweep-messages", type=int, default=150_000,
                   help="backlog per sweep run (default min(N, 150,000))")
    p.add_argument("--sweep-repeat", type=int, default=2,
                   help="runs per sweep setting, best one counts (default 2: single runs of "
                   "this size vary by +-15%% on a 2-core VM)")
    p.add_argument("--live-rate", type=float, default=5000, help="live run msg/s (5000)")
    p.add_argument("--live-seconds", type=float, default=20, help="live run length (20 s)")
    for part in ("raw", "paho", "paho311", "naive", "sweep", "live"):
        p.add_argument(f"--skip-{part}", action="store_true")
    p.add_argument("--gateway-every", type=int, default=0, metavar="K",
                   help="mix a gateway batch of ~64 KiB (smoke_status entries, just under "
                   "ingest.max_payload_bytes) into the primary drain's backlog as every K-th "
                   "message; each entry is a readings row, checked like the rest. The "
                   "baselines, --workers, sweep and live runs stay telemetry only (0: off)")
    p.add_argument("--window-max-bytes", type=int, default=0,
                   help="firegrid ingest.window_max_bytes for every firegrid run (default: "
                   "ingest's own, 64 MiB)")
    p.add_argument("--memory-check", action="store_true",
                   help="only the primary firegrid drain, with gateway batches mixed in "
                   "(--gateway-every, 100 if not given): the ingest process's peak RSS and "
                   "the window's peaks; no raw/paho/naive baselines, --workers, sweep or live")
    p.add_argument("--py-spy", metavar="FILE",
                   help="record a py-spy profile of the primary firegrid drain (.svg flame "
                   "graph, .json speedscope, else collapsed stacks; pip install py-spy)")
    p.add_argument("--state-dir", help="where the private broker/database live (temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the state dir (logs) at the end")
    flavours.add_argument(p)
    args = p.parse_args(argv)
    if args.memory_check:
        for part in ("raw", "paho", "paho311", "naive", "sweep", "live"):
            setattr(args, f"skip_{part}", True)
        args.workers = 0
        args.gateway_every = args.gateway_every or 100
    if args.gateway_every < 0:
        p.error("--gateway-every must be >= 0")
    n = args.messages
    naive_n = min(n, args.naive_messages)
    sweep_n = min(n, args.sweep_messages)
    if args.py_spy:
        args.py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    primary = f"{args.window}/{args.batch}/{args.age_ms}/{args.protocol}"
    for spec in [primary] + args.sweep.split(","):
        parse_cfg(spec)

    bench = Bench(args)
    started = time.monotonic()
    ticks0 = cpu_ticks()
    args.code, mtimes0 = code_version()
    say = lambda msg: print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)  # noqa: E731
    res: dict = {}
    sweep: list[dict] = []
    try:
        say(f"state in {bench.state}; starting PostgreSQL (durable: fsync on)")
        bench.start_db()
        pg_version = bench.sql("SHOW server_version", fetch=True)[0][0]
        say(f"machine: {machine()}; PostgreSQL {pg_version}; schema: {bench.flavour}")
        if not args.skip_raw:
            res["raw"] = bench.drain_baseline("raw", n, "5")
            say(f"raw socket, MQTT 5: {fmt_rate(res['raw']['rate'])} msg/s")
        if not args.skip_paho:
            res["paho"] = bench.drain_baseline("paho", n, "5")
            say(f"paho count-only, MQTT 5: {fmt_rate(res['paho']['rate'])} msg/s")
        if not args.skip_paho311:
            res["paho311"] = bench.drain_baseline("paho", n, "3.1.1")
            say(f"paho count-only, MQTT 3.1.1: {fmt_rate(res['paho311']['rate'])} msg/s")
        if not args.skip_naive:
            res["naive"] = bench.drain_baseline("naive", naive_n, "3.1.1")
            say(f"naive INSERT+COMMIT per message: {fmt_rate(res['naive']['rate'])} msg/s")
        res["firegrid"] = bench.drain_firegrid(n, primary, tag="firegrid", spy=args.py_spy,
                                               gateway_every=args.gateway_every)
        fg = res["firegrid"]
        say(f"firegrid {fg['settings']}: {fmt_rate(fg['rate'])} msg/s, lost {fg['lost']}, "
            f"duplicated {fg['duplicated']}; peak RSS {fg['peak_rss_kib'] / 1024:.1f} MiB, "
            f"window peak {fg['window_peak']:,} msgs / {fg['window_peak_bytes'] / 2**20:.1f} MiB")
        if args.workers > 1:
            res["workers"] = bench.drain_workers(n, primary, args.workers)
            wk = res["workers"]
            say(f"firegrid --workers {args.workers} {primary}: {fmt_rate(wk['rate'])} msg/s, "
                f"lost {wk['lost']}, duplicated {wk['duplicated']}")
        if not args.skip_sweep:
            for rep in range(args.sweep_repeat):  # interleaved, so drift hits all alike
                for spec in args.sweep.split(","):
                    r = bench.drain_firegrid(sweep_n, spec,
                                             tag=f"sweep-{spec.replace('/', '-')}-{rep + 1}")
                    say(f"sweep {spec} run {rep + 1}: {fmt_rate(r['rate'])} msg/s on "
                        f"{sweep_n:,}, lost {r['lost']}, duplicated {r['duplicated']}")
                    sweep.append(r)
        if not args.skip_live:
            res["live"] = bench.live(args.live_rate, args.live_seconds, primary)
            lv = res["live"]
            say(f"live {args.live_rate:.0f} msg/s: lag p50 {lv['lag_p50_ms']:.0f} ms, "
                f"p99 {lv['lag_p99_ms']:.0f} ms")
    finally:
        bench.close()
    mtimes1 = code_version()[1]
    args.code_changed = sorted(Path(p).relative_to(REPO).as_posix() for p in
                               set(mtimes0) | set(mtimes1) if mtimes0.get(p) != mtimes1.get(p))
    steal, total = (b - a for a, b in zip(ticks0, cpu_ticks(), strict=True))
    args.steal_pct = 100 * steal / total if total else 0.0
    report(args, res, sweep, n, naive_n, sweep_n, pg_version, time.monotonic() - started)
    return 0


def report(args, res, sweep, n, naive_n, sweep_n, pg_version, total_s) -> None:
    fg = res["firegrid"]
    # The headline is firegrid as docs/operations.md recommends running it on this machine:
    # `firegrid ingest --workers N` on one shared subscription. One process is one core at
    # most (paho's thread and the writer share a GIL); its figure stays in the table.
    rate = res["workers"]["rate"] if "workers" in res else fg["rate"]
    paho_key = "paho" if cfg_protocol(fg["settings"]) == "5" else "paho311"

    def ratio(key: str) -> float | None:
        base = res.get(key, {}).get("rate")
        return rate / base if base else None

    lines: list[str] = []
    add = lines.append
    add("")
    add(f"firegrid ingest benchmark: {machine()}; PostgreSQL {pg_version} (fsync on)")
    add(f"code: {args.code}")
    if args.code_changed:
        add(f"WARNING: changed during the run, figures mix two versions: "
            f"{', '.join(args.code_changed)}")
    add(f"payload: smoke_status JSON ~{len(Fleet(1).message(0, now_ms())[1])} bytes, "
        f"{args.devices:,} devices, QoS 1, persistent session, N queued before the "
        "subscriber starts; a fresh broker per row")
    gw = fg.get("gateway")
    if gw:
        share = "every message" if gw["every"] == 1 else f"1 message in {gw['every']}"
        add(f"  primary drain: {share} is a gateway batch instead "
            f"({gw['count']:,} of them, {GATEWAYS} gateway ids, {gw['entries']} smoke_status "
            f"entries each, {gw['min_bytes']:,}-{gw['max_bytes']:,} bytes; limit "
            f"{gw['limit']:,}): {gw['rows']:,} readings rows expected")
    add("")
    head = (f"{'backlog drain: first message -> last one handled':<54} {'messages':>10} "
            f"{'seconds':>8} {'msg/s':>9}  firegrid / this")
    add(head)
    add("-" * len(head))

    def row(label: str, r: dict, count: int, rel: float | None) -> None:
        rel_s = f"{rel:.2f}x" if rel else ""
        add(f"{label:<54} {count:>10,} {r['seconds']:>8.2f} {fmt_rate(r['rate']):>9}  "
            f"{rel_s}" + (f"  {r['note']}" if r.get("note") else ""))

    window, batch, age, proto = parse_cfg(fg["settings"])
    row(f"firegrid ingest, MQTT {proto}, {window}/{batch}/{age} (w/b/ms)"
        + (" + gw" if gw else ""), fg, n, None)
    if "workers" in res:
        wk = res["workers"]
        base = res.get(paho_key, {}).get("rate")
        add(f"{'  same, --workers ' + str(wk['workers']) + ' (one shared subscription)':<54} "
            f"{n:>10,} {wk['seconds']:>8.2f} {fmt_rate(wk['rate']):>9}  "
            + (f"{wk['rate'] / base:.2f}x vs paho MQTT {proto}" if base else "")
            + f"  lost {wk['lost']} dup {wk['duplicated']}"
            + (f"  {wk['note']}" if wk.get("note") else ""))
    if "paho" in res:
        row("paho-mqtt 2 count-only, MQTT 5, ReceiveMax 65535", res["paho"], n, ratio("paho"))
    if "paho311" in res:
        row("paho-mqtt 2 count-only, MQTT 3.1.1, inflight 4000", res["paho311"], n,
            ratio("paho311"))
    if "raw" in res:
        row("raw socket count-only, MQTT 5, ReceiveMax 65535", res["raw"], n, ratio("raw"))
    if "naive" in res:
        row(f"naive INSERT+COMMIT per msg (ONLY {naive_n:,} msgs)", res["naive"], naive_n,
            ratio("naive"))
    add("(firegrid: first row's received_at -> n-th commit; the others: CONNACK -> n-th "
        "message counted/inserted)")
    if "workers" in res:
        add(f"(the last column and RESULT use firegrid --workers {res['workers']['workers']}, "
            "the recommended way to run it here; one process alone is the first row)")
    add("")
    mib = 2**20
    add("memory, firegrid primary drain (ingest process)")
    add(f"  peak RSS (ru_maxrss)             {fg['peak_rss_kib'] / 1024:>9.1f} MiB   "
        f"({fg['rss_start_kib'] / 1024:.1f} MiB before the first message)")
    add(f"  window peak, messages            {fg['window_peak']:>9,}       "
        f"(bound ingest.inflight_window {fg['window_max']:,})")
    add(f"  window peak, payload bytes       {fg['window_peak_bytes'] / mib:>9.1f} MiB   "
        f"({fg['window_peak_bytes']:,} B; bound ingest.window_max_bytes "
        f"{fg['window_max_bytes'] / mib:.1f} MiB)")
    add(f"  window waits (socket not read)   {fg['window_waits']:>9,}")
    add(f"  drain rate                       {fmt_rate(fg['rate']):>9} msg/s "
        f"({fmt_rate(fg['rows_rate'])} readings rows/s)")
    add("")
    add(f"firegrid check ({n:,} published): rows {fg['rows']:,}, lost {fg['lost']}, "
        f"duplicated {fg['duplicated']}, unexpected rows {fg['unexpected']}, dead letters "
        f"{fg['dead_letters']}"
        + (f" (gateway entries: {gw['rows'] - (n - gw['count']):,} expected, "
           f"{fg['gateway_lost']} lost)" if gw else ""))
    add(f"  ingest committed {fg['committed_final']:,} messages for these {n:,}: "
        f"{fg['reconnects']} reconnect(s), {fg['duplicates_absorbed']:,.0f} redelivered "
        "messages stored once (ON CONFLICT)")
    cpu = fg.get("cpu_s", {})
    if cpu:
        # Per readings row: with gateways a message can be hundreds of rows.
        us = {k: v / fg["count"] * 1e6 for k, v in cpu.items()}
        ncpu = os.cpu_count() or 1
        add(f"CPU during the firegrid drain ({fg['seconds']:.1f} s wall x {ncpu} cores = "
            f"{ncpu * fg['seconds']:.0f} CPU-s): ingest process {cpu.get('ingest', 0):.1f} s, "
            f"PostgreSQL {cpu.get('postgres', 0):.1f} s, Mosquitto {cpu.get('broker', 0):.1f} s"
            f" = {us.get('ingest', 0):.0f} / {us.get('postgres', 0):.0f} / "
            f"{us.get('broker', 0):.0f} us per {'row' if gw else 'message'}")
    pubs = [f"{k} {fmt_rate(v['publish_rate'])}" for k, v in res.items() if "publish_rate" in v]
    add("backlog fill rates (raw QoS 1 publisher, not part of any drain time): "
        + ", ".join(pubs) + " msg/s")
    if sweep:
        add("")
        add(f"settings sweep: firegrid drains of {sweep_n:,}, best of {args.sweep_repeat} "
            "(window/batch/age_ms/protocol; with 3.1.1 the broker's max_inflight_messages "
            "4000 is the window)")
        by_cfg: dict[str, list[dict]] = {}
        for r in sweep:
            by_cfg.setdefault(r["settings"], []).append(r)
        best_rate = {cfg: max(r["rate"] for r in rs) for cfg, rs in by_cfg.items()}
        winner = max(best_rate, key=best_rate.get)
        for cfg, rs in by_cfg.items():
            runs_s = ", ".join(fmt_rate(r["rate"]) for r in rs)
            mark = "  <- best" if cfg == winner else ""
            add(f"  {cfg:<22} {fmt_rate(best_rate[cfg]):>9} msg/s   (runs: {runs_s}; lost "
                f"{sum(r['lost'] for r in rs)}, dup {sum(r['duplicated'] for r in rs)}){mark}")
    if "live" in res:
        lv = res["live"]
        cl = lv.get("commit_lag_ms", {})
        add("")
        add(f"live run: {args.live_rate:,.0f} msg/s offered for {args.live_seconds:g} s "
            f"({lv['offered']:,} msgs, publisher achieved {fmt_rate(lv['achieved_rate'])}/s), "
            f"firegrid {lv['settings']}")
        add(f"  device ts -> received_at    p50 {lv['lag_p50_ms']:.1f} ms, p99 "
            f"{lv['lag_p99_ms']:.1f} ms, max {lv['lag_max_ms']:.1f} ms")
        if cl:
            add(f"  received -> committed       p50 {cl['p50']:.1f} ms, p99 {cl['p99']:.1f} ms, "
                f"max {cl['max']:.1f} ms")
        add(f"  rows {lv['rows']:,}, lost {lv['lost']}, duplicated {lv['duplicated']}")
    runs = [fg] + sweep + [res[k] for k in ("workers", "live") if k in res]
    lost = sum(r["lost"] for r in runs)
    dup = sum(r["duplicated"] for r in runs)
    add("")
    add(f"targets (lost/duplicated summed over all {len(runs)} firegrid runs, by query):")
    checks = []
    if ratio(paho_key) is not None:
        checks.append((f"firegrid >= {TARGETS['vs_paho']} x paho count-only (MQTT {proto})",
                       f"{ratio(paho_key):.2f}x", ratio(paho_key) >= TARGETS["vs_paho"]))
    if ratio("naive") is not None:
        checks.append((f"firegrid >= {TARGETS['vs_naive']:g} x naive",
                       f"{ratio('naive'):.1f}x", ratio("naive") >= TARGETS["vs_naive"]))
    checks.append(("0 lost", str(lost), lost == 0))
    checks.append(("0 duplicated", str(dup), dup == 0))
    for label, value, ok in checks:
        add(f"  {label:<46} {value:>8}  {'PASS' if ok else 'FAIL'}")
    add("")
    add(f"total run time {total_s:.0f} s; CPU steal by the hypervisor during the run "
        f"{args.steal_pct:.1f}%")
    print("\n".join(lines))

    def r2(x: float | None) -> str:
        return f"{x:.2f}" if x is not None else "n/a"
    print(f"MEMORY peak_rss_kib={fg['peak_rss_kib']} start_rss_kib={fg['rss_start_kib']} "
          f"window_peak_msgs={fg['window_peak']} window_peak_bytes={fg['window_peak_bytes']} "
          f"window_waits={fg['window_waits']} window_max={fg['window_max']} "
          f"window_max_bytes={fg['window_max_bytes']} msgs_per_s={fg['rate']:.0f} "
          f"rows_per_s={fg['rows_rate']:.0f} messages={n} "
          f"gateway_every={gw['every'] if gw else 0} "
          f"gateway_bytes={gw['max_bytes'] if gw else 0} lost={fg['lost']} "
          f"duplicated={fg['duplicated']}", flush=True)
    print(f"RESULT ingest_msgs_per_s={rate:.0f} vs_paho={r2(ratio(paho_key))} "
          f"vs_raw={r2(ratio('raw'))} vs_naive={r2(ratio('naive'))} lost={lost} "
          f"duplicated={dup} flavour={args.flavour}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
