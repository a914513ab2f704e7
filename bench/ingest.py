#!/usr/bin/env python
"""firegrid ingest benchmark: backlog drain, baselines, loss check and live lag, in one run.

    .venv/bin/python bench/ingest.py [--messages N]      (default N = 1,000,000)

Starts a private Mosquitto (the shipped deploy/mosquitto/conf.d) and a private, durable
PostgreSQL (fsync on) through runtime.localsvc, on 127.0.0.1 only, and removes both at the
end. Every measurement gets a fresh broker with the same configuration and the same payloads:
realistic smoke_status telemetry (~190 bytes of JSON) from --devices devices with a per-device
seq; the device ts is the publish time.

Backlog drain (the primary figure): the subscriber's persistent session is created first
(QoS 1 subscriptions on firegrid's own topic filters), N messages are published QoS 1 while it
is away (the broker queues them; publishing is not timed), then the subscriber starts and is
timed from its CONNACK until the N-th message is handled:

    firegrid   IngestService (the same code and FIREGRID_* settings as `firegrid ingest`) in
               its own process; "handled" = committed to PostgreSQL and acknowledged.
    paho       paho-mqtt 2 count-only subscriber, auto-ack, MQTT 5 with Receive Maximum
               65535 (and MQTT 3.1.1, where the broker's max_inflight_messages rules): the
               MQTT client ceiling.
    raw        bench/mqttraw.py, a minimal socket client that parses PUBLISH packets from one
               big recv buffer and answers each recv with one sendall of PUBACKs: the broker
               ceiling.
    naive      the tutorial pipeline: paho on_message -> json.loads -> one INSERT + COMMIT per
               message. Slow, so it runs on --naive-messages (default min(N, 20,000)).

Then: lost/duplicated are checked by query against exactly what was published, a few
inflight-window/batch settings are compared on --sweep-messages, and a live run publishes at
--live-rate msg/s for --live-seconds (paced, own process) with ingest running and reports
device-to-row lag (received_at - ts) and receive-to-commit lag.

The last line printed is always:
    RESULT ingest_msgs_per_s=<n> vs_paho=<ratio> vs_raw=<ratio> vs_naive=<ratio> lost=<n> duplicated=<n>

Worker modes (`bench/ingest.py _publish|_raw|_paho|_naive|_firegrid ...`) are internal: the
benchmark runs each client in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# As a script, this file's folder is sys.path[0], where "ingest" would be this file rather
# than the firegrid package. Put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import mqttraw  # noqa: E402

HOST = "127.0.0.1"
PREFIX = "fg/v1"
TARGETS = {"vs_paho": 0.8, "vs_naive": 15.0}
SWEEP = "4000/1000/50,2000/500/50,8000/2000/50,16000/4000/100,32000/5000/100"


# --- the fleet: what devices send ---------------------------------------------------------

class Fleet:
    """Message i comes from device i % devices with seq i // devices (so the published set is
    known exactly for the loss check): a smoke_status heartbeat built by simulators.messages
    (the one place the protocol is spoken), with per-device values. Encoding goes through a
    per-device template with only ts and seq filled in per message, so the publisher keeps
    up with the broker."""

    TS_MARK, SEQ_MARK = 1999999999999, 4294967295

    def __init__(self, devices: int) -> None:
        from simulators import messages
        self.devices = devices
        rng = random.Random(20241121)
        self.topics = [messages.topic(device_id(d), "telemetry", PREFIX).encode()
                       for d in range(devices)]
        self.templates = []
        for _ in range(devices):
            raw = messages.encode(messages.smoke_status(
                self.SEQ_MARK, self.TS_MARK,
                obscuration_db_m=round(rng.uniform(0, 0.08), 3),
                temperature_c=round(rng.uniform(12, 38), 1), battery_pct=rng.randint(20, 100),
                battery_v=round(rng.uniform(2.7, 3.3), 2), rsrp_dbm=rng.randint(-120, -70),
                sinr_db=round(rng.uniform(-5, 25), 1),
                heartbeat_s=rng.choice((3600, 7200, 14400, 86400))))
            if raw.count(b"%d" % self.TS_MARK) != 1 or raw.count(b"%d" % self.SEQ_MARK) != 1:
                raise RuntimeError("simulators.messages.smoke_status changed shape")
            self.templates.append(raw.replace(b"%", b"%%")
                                  .replace(b"%d" % self.TS_MARK, b"%(ts)d")
                                  .replace(b"%d" % self.SEQ_MARK, b"%(seq)d"))

    def message(self, i: int, ts_ms: int) -> tuple[bytes, bytes]:
        d = i % self.devices
        return self.topics[d], self.templates[d] % {b"ts": ts_ms, b"seq": i // self.devices}


def device_id(d: int) -> str:
    return "sd%06d" % d


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- workers (each runs in its own process) -----------------------------------------------

def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def w_publish(a: argparse.Namespace) -> None:
    fleet = Fleet(a.devices)
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
    client.connect(HOST, a.port, 60, clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                   properties=props)
    return client


def w_paho(a: argparse.Namespace) -> None:
    """Count-only paho subscriber: on_message counts, paho acknowledges on return."""
    import threading
    st = {"count": 0, "t_connack": None, "t_last": None, "present": None}

    def on_connect(client, userdata, flags, reason, properties):
        st["t_connack"] = time.monotonic()
        st["present"] = flags.session_present

    def on_message(client, userdata, msg):
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


def w_naive(a: argparse.Namespace) -> None:
    """What the tutorials teach: decode, INSERT, COMMIT, per message, in on_message."""
    import threading
    from datetime import UTC, datetime

    import psycopg
    conn = psycopg.connect(a.db_url)
    cur = conn.cursor()
    st = {"count": 0, "t_connack": None, "t_last": None, "present": None}

    def on_connect(client, userdata, flags, reason, properties):
        st["t_connack"] = time.monotonic()
        st["present"] = flags.session_present

    def on_message(client, userdata, msg):
        data = json.loads(msg.payload)
        cur.execute(
            "INSERT INTO naive_readings (device_id, ts, seq, kind, received_at,"
            " obscuration_db_m, temperature_c, battery_pct, battery_v, rsrp_dbm, sinr_db,"
            " heartbeat_s) VALUES (%s, %s, %s, 'smoke', now(), %s, %s, %s, %s, %s, %s, %s)",
            (msg.topic.split("/")[2], datetime.fromtimestamp(data["ts"] / 1000, UTC),
             data["seq"], data["obscuration_db_m"], data["temperature_c"], data["battery_pct"],
             data["battery_v"], data["rsrp_dbm"], data["sinr_db"], data["heartbeat_s"]))
        conn.commit()
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
    os._exit(0)


def w_firegrid(a: argparse.Namespace) -> None:
    """IngestService exactly as `firegrid ingest` runs it (settings from FIREGRID_*), plus a
    monitor thread that notes when `committed` reaches --count and then stops the service."""
    import logging
    import signal
    import threading

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

    def monitor() -> None:
        deadline = time.monotonic() + a.timeout
        ready = getattr(service.consumer, "subscribed", None) or service.consumer.connected
        if not ready.wait(a.timeout):
            result["error"] = "never connected"
            service.stop()
            return
        t_conn = time.monotonic()
        emit({"event": "connected"})
        while service.committed < a.count and time.monotonic() < deadline:
            time.sleep(0.02)
        result.update(count=service.committed, seconds=time.monotonic() - t_conn)
        service.stop()

    threading.Thread(target=monitor, daemon=True).start()
    service.run()
    result["committed_final"] = service.committed
    if commit_lags:
        commit_lags.sort()
        pick = lambda q: commit_lags[min(len(commit_lags) - 1, int(q * len(commit_lags)))]  # noqa: E731
        result["commit_lag_ms"] = {"p50": pick(0.5) * 1000, "p99": pick(0.99) * 1000,
                                   "max": commit_lags[-1] * 1000}
    emit(result)


def _version(protocol: str) -> int:
    return 5 if protocol == "5" else 4


WORKERS = {"_publish": w_publish, "_raw": w_raw, "_paho": w_paho, "_naive": w_naive,
           "_firegrid": w_firegrid}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog=f"bench/ingest.py {argv[0]}")
    p.add_argument("--port", type=int)
    p.add_argument("--client-id", default="bench")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--devices", type=int, default=20000)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    p.add_argument("--receive-max", type=int, default=65535)
    p.add_argument("--session-expiry", type=int, default=86400)
    p.add_argument("--db-url")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--commit-lag", action="store_true")
    WORKERS[argv[0]](p.parse_args(argv[1:]))


# --- the harness --------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from runtime.localsvc import Postgres, make_state_dir
        self.args = args
        self.state = Path(args.state_dir) if args.state_dir else make_state_dir("firegrid-bench-")
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)
        self.logs = self.state / "logs"
        self.logs.mkdir(exist_ok=True)
        self.pg = Postgres(self.state / "pg", durable=True)
        self.brokers: list = []
        self.rows: list[tuple] = []
        self.results: dict = {}
        self.phase = 0

    # infrastructure

    def start_db(self) -> None:
        from runtime import db, migrate
        from runtime.settings import DatabaseSettings
        self.pg.start()
        self.db_url = self.pg.url("firegrid")
        settings = DatabaseSettings(url=self.db_url)
        db.ensure_database(settings)
        migrate.migrate(settings)
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

    def publish(self, mq, count: int, *, tag: str, rate: float = 0) -> dict:
        r = self.worker("_publish", "--port", str(mq.port), "--client-id", f"pub-{tag}",
                        "--count", str(count), "--devices", str(self.args.devices),
                        "--rate", str(rate), tag=f"{tag}-pub",
                        timeout=max(120.0, count / 5000 + (count / rate if rate else 0)))
        if r["acked"] != count:
            raise RuntimeError(f"publisher: {r['acked']} of {count} acknowledged")
        return r

    def prepare(self, mq, client_id: str, protocol: str) -> None:
        from ingest.consumer import subscriptions
        from runtime.settings import MqttSettings
        mqttraw.prepare_session(HOST, mq.port, client_id, subscriptions(MqttSettings()),
                                version=_version(protocol),
                                session_expiry=MqttSettings().session_expiry_s)

    def firegrid_env(self, mq, window: int, batch: int, age_ms: int, tag: str) -> dict:
        env = dict(os.environ)
        env.update({
            "FIREGRID_MQTT__HOST": HOST, "FIREGRID_MQTT__PORT": str(mq.port),
            "FIREGRID_MQTT__CLIENT_ID": f"firegrid-bench-{tag}",
            "FIREGRID_DATABASE__URL": self.db_url,
            "FIREGRID_INGEST__METRICS_PORT": "0",
            "FIREGRID_INGEST__INFLIGHT_WINDOW": str(window),
            "FIREGRID_INGEST__BATCH_MAX_ROWS": str(batch),
            "FIREGRID_INGEST__BATCH_MAX_AGE_MS": str(age_ms),
        })
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

    def drain_firegrid(self, n: int, window: int, batch: int, age_ms: int, *, tag: str,
                       verify: bool) -> dict:
        mq = self.fresh_broker(tag)
        proc = spy = None
        try:
            env = self.firegrid_env(mq, window, batch, age_ms, tag)
            self.prepare(mq, env["FIREGRID_MQTT__CLIENT_ID"], "5")
            self.reset_tables()
            pub = self.publish(mq, n, tag=tag)
            timeout = self.drain_timeout(n, "firegrid")
            cmd = [sys.executable, str(Path(__file__).resolve()), "_firegrid",
                   "--count", str(n), "--timeout", str(timeout)]
            with open(self.logs / f"{self.phase:02d}-{tag}.log", "ab") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env,
                                        cwd=REPO)
                if verify and self.args.py_spy:
                    spy = subprocess.Popen(
                        [self.args.py_spy_bin, "record", "--pid", str(proc.pid), "--threads",
                         "--nonblocking", "--rate", "100", "--format", "flamegraph",
                         "-o", self.args.py_spy], stdout=err, stderr=err)
                out, _ = proc.communicate(timeout=timeout + 60)
            if spy is not None:
                spy.wait(30)
            r = self._firegrid_result(proc, out)
        finally:
            for p in (proc, spy):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            self.drop_broker(mq)
        r["rate"] = r["count"] / r["seconds"] if r["seconds"] else 0
        r["publish_rate"] = n / pub["seconds"]
        r["settings"] = f"{window}/{batch}/{age_ms}"
        if verify:
            r.update(self.verify(n))
        return r

    def _firegrid_result(self, proc, out: bytes) -> dict:
        lines = [ln for ln in out.decode().splitlines()
                 if ln.startswith("{") and '"event"' not in ln]
        r = json.loads(lines[-1]) if lines else {}
        if proc.returncode != 0 or "seconds" not in r:
            raise RuntimeError(f"firegrid ingest failed (exit {proc.returncode}, {r}); see "
                               f"{self.logs}")
        return r

    def verify(self, n: int) -> dict:
        """Compare readings with exactly what was published: messages 0..n-1."""
        d = self.args.devices
        rows, distinct, first, last = self.sql(
            "SELECT count(*), count(DISTINCT (device_id, seq)), min(received_at),"
            " max(received_at) FROM readings", fetch=True)[0]
        lost = self.sql(
            "SELECT count(*) FROM generate_series(0, %s - 1) g WHERE NOT EXISTS ("
            " SELECT 1 FROM readings r WHERE r.device_id = 'sd' || lpad((g %% %s)::text, 6, '0')"
            " AND r.seq = g / %s)", (n, d, d), fetch=True)[0][0]
        dead = self.sql("SELECT coalesce(sum(seen_count), 0) FROM dead_letters",
                        fetch=True)[0][0]
        span = (last - first).total_seconds() if rows else 0.0
        return {"rows": rows, "lost": lost, "duplicated": rows - distinct,
                "unexpected": distinct - (n - lost), "dead_letters": int(dead),
                "received_span_s": span}

    def live(self, rate: float, seconds: float, window: int, batch: int, age_ms: int) -> dict:
        n = int(rate * seconds)
        tag = "live"
        mq = self.fresh_broker(tag)
        proc = None
        try:
            env = self.firegrid_env(mq, window, batch, age_ms, tag)
            self.prepare(mq, env["FIREGRID_MQTT__CLIENT_ID"], "5")
            self.reset_tables()
            timeout = seconds + self.drain_timeout(n, "firegrid")
            cmd = [sys.executable, str(Path(__file__).resolve()), "_firegrid", "--count",
                   str(n), "--timeout", str(timeout), "--commit-lag"]
            with open(self.logs / f"{self.phase:02d}-{tag}.log", "ab") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env,
                                        cwd=REPO)
                first = proc.stdout.readline().decode()
                if '"connected"' not in first:
                    raise RuntimeError(f"live: ingest did not connect; see {self.logs}")
                pub = self.publish(mq, n, tag=tag, rate=rate)
                out, _ = proc.communicate(timeout=timeout + 60)
            r = self._firegrid_result(proc, out)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self.drop_broker(mq)
        r.update(self.verify(n))
        p50, p99, worst = self.sql(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x) FROM ("
            " SELECT extract(epoch FROM received_at - ts) * 1000 AS x FROM readings) s",
            fetch=True)[0]
        r.update(lag_p50_ms=p50, lag_p99_ms=p99, lag_max_ms=worst, offered=n,
                 achieved_rate=pub["sent"] / pub["send_s"], settings=f"{window}/{batch}/{age_ms}")
        return r

    def close(self) -> None:
        for mq in list(self.brokers):
            self.drop_broker(mq)
        self.pg.destroy()
        if not self.args.keep:
            import shutil
            shutil.rmtree(self.state, ignore_errors=True)


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
    p.add_argument("--naive-messages", type=int, default=20000,
                   help="messages for the naive pipeline (default min(N, 20,000))")
    p.add_argument("--sweep", default=SWEEP,
                   help=f"window/batch/age_ms settings to compare (default {SWEEP})")
    p.add_argument("--sweep-messages", type=int, default=200_000,
                   help="backlog per sweep setting (default min(N, 200,000))")
    p.add_argument("--live-rate", type=float, default=5000, help="live run msg/s (5000)")
    p.add_argument("--live-seconds", type=float, default=20, help="live run length (20 s)")
    for part in ("raw", "paho", "paho311", "naive", "sweep", "live"):
        p.add_argument(f"--skip-{part}", action="store_true")
    p.add_argument("--py-spy", metavar="SVG",
                   help="record a py-spy flame graph of the primary firegrid drain")
    p.add_argument("--state-dir", help="where the private broker/database live (temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the state dir (logs) at the end")
    args = p.parse_args(argv)
    n = args.messages
    naive_n = min(n, args.naive_messages)
    sweep_n = min(n, args.sweep_messages)
    if args.py_spy:
        import shutil
        args.py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    primary = (args.window, args.batch, args.age_ms)

    bench = Bench(args)
    started = time.monotonic()
    say = lambda msg: print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)  # noqa: E731
    res: dict = {}
    try:
        say(f"state in {bench.state}; starting PostgreSQL (durable: fsync on)")
        bench.start_db()
        pg_version = bench.sql("SHOW server_version", fetch=True)[0][0]
        say(f"machine: {machine()}; PostgreSQL {pg_version}")
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
        res["firegrid"] = bench.drain_firegrid(n, *primary, tag="firegrid", verify=True)
        fg = res["firegrid"]
        say(f"firegrid {fg['settings']}: {fmt_rate(fg['rate'])} msg/s, lost {fg['lost']}, "
            f"duplicated {fg['duplicated']}")
        sweep = []
        if not args.skip_sweep:
            for spec in args.sweep.split(","):
                w, b, a = (int(x) for x in spec.split("/"))
                r = bench.drain_firegrid(sweep_n, w, b, a, tag=f"sweep-{w}-{b}-{a}",
                                         verify=False)
                say(f"sweep {spec}: {fmt_rate(r['rate'])} msg/s on {sweep_n:,}")
                sweep.append(r)
        if not args.skip_live:
            res["live"] = bench.live(args.live_rate, args.live_seconds, *primary)
            lv = res["live"]
            say(f"live {args.live_rate:.0f} msg/s: lag p50 {lv['lag_p50_ms']:.0f} ms, "
                f"p99 {lv['lag_p99_ms']:.0f} ms")
    finally:
        bench.close()
    report(args, res, sweep, n, naive_n, sweep_n, pg_version, time.monotonic() - started)
    return 0


def report(args, res, sweep, n, naive_n, sweep_n, pg_version, total_s) -> None:
    fg = res["firegrid"]
    rate = fg["rate"]

    def ratio(key: str) -> float | None:
        base = res.get(key, {}).get("rate")
        return rate / base if base else None

    lines = []
    add = lines.append
    add("")
    add(f"firegrid ingest benchmark: {machine()}; PostgreSQL {pg_version} (fsync on)")
    add(f"payload: smoke_status JSON ~{len(Fleet(1).message(0, now_ms())[1])} bytes, "
        f"{args.devices:,} devices, QoS 1, persistent sessions, one fresh broker per row")
    add("")
    head = f"{'backlog drain (CONNACK -> last message handled)':<52} {'messages':>10} " \
           f"{'seconds':>8} {'msg/s':>9}  firegrid is"
    add(head)
    add("-" * len(head))

    def row(label, r, count, rel):
        rel_s = f"{rel:.2f}x" if rel else ""
        add(f"{label:<52} {count:>10,} {r['seconds']:>8.2f} {fmt_rate(r['rate']):>9}  {rel_s}"
            + (f"  {r['note']}" if r.get("note") else ""))

    row(f"firegrid ingest (window/batch/age {fg['settings']})", fg, n, None)
    if "paho" in res:
        row("paho-mqtt 2 count-only, MQTT 5 (ReceiveMax 65535)", res["paho"], n, ratio("paho"))
    if "paho311" in res:
        row("paho-mqtt 2 count-only, MQTT 3.1.1 (inflight 4000)", res["paho311"], n,
            ratio("paho311"))
    if "raw" in res:
        row("raw socket count-only, MQTT 5 (ReceiveMax 65535)", res["raw"], n, ratio("raw"))
    if "naive" in res:
        row(f"naive paho INSERT+COMMIT per msg (ONLY {naive_n:,} msgs)", res["naive"], naive_n,
            ratio("naive"))
    add("")
    add(f"firegrid check ({n:,} published): rows {fg['rows']:,}, lost {fg['lost']}, "
        f"duplicated {fg['duplicated']}, unexpected rows {fg['unexpected']}, dead letters "
        f"{fg['dead_letters']}; committed counter {fg['committed_final']:,} "
        f"(redelivered {max(0, fg['committed_final'] - n)}); received_at span "
        f"{fg['received_span_s']:.2f} s")
    pubs = [f"{k} {fmt_rate(v['publish_rate'])}" for k, v in res.items() if "publish_rate" in v]
    add("backlog publish rates (not timed in the drain): " + ", ".join(pubs) + " msg/s")
    if sweep:
        add("")
        add(f"settings sweep (firegrid drain of {sweep_n:,} each):")
        add(f"  {'window/batch/age_ms':<22} {'seconds':>8} {'msg/s':>9}")
        best = max(sweep, key=lambda r: r["rate"])
        for r in sweep:
            mark = "  <- best" if r is best else ""
            add(f"  {r['settings']:<22} {r['seconds']:>8.2f} {fmt_rate(r['rate']):>9}{mark}")
    if "live" in res:
        lv = res["live"]
        cl = lv.get("commit_lag_ms", {})
        add("")
        add(f"live run: {args.live_rate:,.0f} msg/s offered for {args.live_seconds:g} s "
            f"({lv['offered']:,} msgs, publisher achieved {fmt_rate(lv['achieved_rate'])}/s), "
            f"firegrid {lv['settings']}")
        add(f"  device ts -> received_at   p50 {lv['lag_p50_ms']:.1f} ms, p99 "
            f"{lv['lag_p99_ms']:.1f} ms, max {lv['lag_max_ms']:.1f} ms")
        if cl:
            add(f"  received -> committed      p50 {cl['p50']:.1f} ms, p99 {cl['p99']:.1f} ms, "
                f"max {cl['max']:.1f} ms")
        add(f"  rows {lv['rows']:,}, lost {lv['lost']}, duplicated {lv['duplicated']}")
    add("")
    add("targets:")
    checks = []
    if ratio("paho") is not None:
        checks.append((f"firegrid >= {TARGETS['vs_paho']} x paho count-only",
                       f"{ratio('paho'):.2f}x", ratio("paho") >= TARGETS["vs_paho"]))
    if ratio("naive") is not None:
        checks.append((f"firegrid >= {TARGETS['vs_naive']:g} x naive",
                       f"{ratio('naive'):.1f}x", ratio("naive") >= TARGETS["vs_naive"]))
    lost = fg["lost"] + res.get("live", {}).get("lost", 0)
    dup = fg["duplicated"] + res.get("live", {}).get("duplicated", 0)
    checks.append(("0 lost (verified by query)", str(lost), lost == 0))
    checks.append(("0 duplicated (verified by query)", str(dup), dup == 0))
    for label, value, ok in checks:
        add(f"  {label:<40} {value:>8}  {'PASS' if ok else 'FAIL'}")
    add("")
    add(f"total run time {total_s:.0f} s")
    print("\n".join(lines))

    def r2(x: float | None) -> str:
        return f"{x:.2f}" if x is not None else "n/a"
    print(f"RESULT ingest_msgs_per_s={rate:.0f} vs_paho={r2(ratio('paho'))} "
          f"vs_raw={r2(ratio('raw'))} vs_naive={r2(ratio('naive'))} lost={lost} "
          f"duplicated={dup}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
