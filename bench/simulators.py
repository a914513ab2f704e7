"""Simulator load benchmark (issue 4): publish rate of the multiplexed mode against paho-mqtt
publishers, and 100,000 per-device connections at once with the memory per device.

    .venv/bin/python bench/simulators.py                       # about 10 minutes on 2 cores
    .venv/bin/python bench/simulators.py --skip-connections    # the publish rates only (~2 min)
    .venv/bin/python bench/simulators.py --devices 20000 --processes 2   # a smaller hold

Everything against private Mosquittos (runtime.localsvc, shipped conf.d) on 127.0.0.1:

    paho        the issue's baseline: paho-mqtt 2 publishers, QoS 1, loop_start, max
                in-flight 1000, publishing as fast as they are acknowledged, from
                --load-processes processes (2, as in the issue: ~17,000 msg/s there).
    mux         firegrid simulate's multiplexed mode: the `street` preset (21,737 devices)
                reporting every 10 s, sped up until the engine cannot keep up, split by
                building over the same number of processes, 4 connections each. Counted:
                messages acknowledged by the broker per second over the steady part of the
                run (first seconds of connecting left out); every one is a device model's
                message with its own ts/seq, in the truth file.
    connections --devices per-device connections (own client id, keepalive 600 s) held at
                once, from --processes simulator processes bound to 127.0.0.2, .3, ...;
                RSS of every simulator process and broker when the last one is connected.

One process may hold only as many sockets as its open-file limit (20,000 hard here, and
raising it needs CAP_SYS_RESOURCE), and a Mosquitto child inherits the same limit: so the
connections are spread over --processes simulators, each with its own broker. Ends with
`RESULT mux_msgs_per_s=... vs_paho=... vs_issue_paho=... connections=... sim_kb_per_device=...
broker_kb_per_connection=...`.

Worker modes (`bench/simulators.py _paho|_mux|_hold ...`) are internal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ISSUE_PAHO = 17_000       # msg/s, two paho processes, from the issue
LOAD_SCENARIO = """name = "load"
description = "Every device reports every 10 s."
[devices]
smoke_heartbeat_s = 10
camera_keepalive_s = 10
"""


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def emit(obj: dict) -> None:
    print("@" + json.dumps(obj), flush=True)


# --- workers ------------------------------------------------------------------------------

def w_paho(a: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from simulators import messages as m

    acked = [0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-pub-{a.index}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(2000)
    client.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", a.port, keepalive=600)
    client.loop_start()
    payloads = [m.encode(m.smoke_status(i, 1_750_000_000_000 + i)) for i in range(1000)]
    topics = [f"fg/v1/P{a.index}D{i:05d}/telemetry" for i in range(1000)]
    t0 = time.monotonic()
    mark = None
    i = 0
    while time.monotonic() - t0 < a.seconds:
        info = client.publish(topics[i % 1000], payloads[i % 1000], qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.0005)    # paho's queue is full: nothing to await in its API
            continue
        i += 1
        if mark is None and time.monotonic() - t0 >= a.warmup:
            mark = (time.monotonic(), acked[0])
    t1, n1 = time.monotonic(), acked[0]
    client.disconnect()
    client.loop_stop()
    emit({"rate": (n1 - mark[1]) / (t1 - mark[0]), "acked": n1})


def _shard(street, index: int, count: int):
    from simulators.topology import Topology
    keep = {b for n, b in enumerate(sorted(street.buildings)) if n % count == index}
    return Topology({b: street.buildings[b] for b in keep},
                    [d for d in street.devices if d.building in keep])


def w_mux(a: argparse.Namespace) -> None:
    import tempfile

    from runtime.settings import load_settings
    from simulators import topology
    from simulators.run import run_simulation

    with tempfile.TemporaryDirectory() as tmp:
        topology.generate(Path(tmp), "street", 1)
        street = _shard(topology.load(Path(tmp)), a.index, a.of)
        scenario = Path(tmp) / "load.toml"
        scenario.write_text(LOAD_SCENARIO)
        settings = load_settings(None, mqtt={"host": "127.0.0.1", "port": a.port,
                                             "topic_prefix": "fg/v1"})
        marks: list[tuple[float, int]] = []
        summary = run_simulation(
            settings, street=street, mode="multiplexed", connections=4, scenarios=[scenario],
            speed=a.speed, duration_s=a.speed * a.seconds, seed=1, drain_s=0,
            truth_path=Path(tmp) / "truth.jsonl",
            progress_cb=lambda p: marks.append((p.elapsed_s, p.acked)))
    steady = [(t, n) for t, n in marks if t >= a.warmup]
    (t0, n0), (t1, n1) = steady[0], steady[-1]
    emit({"rate": (n1 - n0) / max(t1 - t0, 1e-6), "acked": summary.stats.acked,
          "published": summary.stats.published, "devices": len(street.devices),
          "rss_mb": rss_mb()})


def w_hold(a: argparse.Namespace) -> None:
    """Connect `count` devices, each on its own connection; report when all are, then hold
    them until told to stop on stdin."""
    from runtime.settings import load_settings
    from simulators.run import run_simulation
    from simulators.topology import Building, DeviceSpec, Topology

    base = rss_mb()
    ids = range(a.offset, a.offset + a.count)
    street = Topology({f"B{i:05d}": Building(f"B{i:05d}", "C1", "G1", 6)
                       for i in {n // 10 for n in ids}},
                      [DeviceSpec(f"SD{n:06d}", "smoke_detector", f"B{n // 10:05d}", 1 + n % 6,
                                  "C1", 3600) for n in ids])
    settings = load_settings(None, mqtt={"host": "127.0.0.1", "port": a.port,
                                         "topic_prefix": "fg/v1"})
    stop = threading.Event()
    reported = threading.Event()
    t0 = time.monotonic()

    def progress(p) -> None:
        if p.connected == p.devices and not reported.is_set():
            reported.set()
            emit({"connected": p.connected, "connect_s": time.monotonic() - t0,
                  "rss_mb": rss_mb(), "base_rss_mb": base,
                  "connect_errors": p.connect_errors})
            threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()),
                             daemon=True).start()

    summary = run_simulation(settings, street=street, speed=1, duration_s=7 * 86400 - 1,
                             seed=1, stop_event=stop, progress_cb=progress,
                             source_addrs=[a.source], keepalive_s=600,
                             connect_concurrency=500, drain_s=0)
    emit({"done": True, "lost": summary.counters.lost})


WORKERS = {"_paho": w_paho, "_mux": w_mux, "_hold": w_hold}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--of", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--speed", type=float, default=30)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--source", default="127.0.0.2")
    a = p.parse_args(argv)
    WORKERS[a.mode](a)


# --- the benchmark ------------------------------------------------------------------------

class Worker:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def result(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            if line.startswith("@"):
                return json.loads(line[1:])
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"worker {self.proc.args[2:]} gave no result")

    def finish(self) -> dict | None:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        out = None
        for line in self.proc.stdout:
            if line.startswith("@"):
                out = json.loads(line[1:])
        self.proc.wait(60)
        return out


def brokers(n: int):
    from runtime.localsvc import Mosquitto, make_state_dir
    return [Mosquitto(make_state_dir("fg-bench-sim-")).start() for _ in range(n)]


def load_rates(processes: int, seconds: float, speed: float) -> dict:
    out = {}
    for kind in ("paho", "mux"):
        (mq,) = brokers(1)
        try:
            workers = [Worker(f"_{kind}", "--port", str(mq.port), "--index", str(i),
                              "--of", str(processes), "--seconds", str(seconds),
                              "--speed", str(speed)) for i in range(processes)]
            results = [w.result(seconds + 120) for w in workers]
            for w in workers:
                w.proc.wait(60)
        finally:
            mq.destroy()
        out[kind] = {"rate": sum(r["rate"] for r in results), "each": results}
    return out


def hold_connections(devices: int, processes: int) -> dict:
    per = -(-devices // processes)
    if per > resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200:
        raise SystemExit(f"{per} connections per process is over the open-file limit: "
                         "use more --processes")
    mqs = brokers(processes)
    workers = []
    try:
        base_broker = sum(rss_mb(mq.proc.pid) for mq in mqs)
        t0 = time.monotonic()
        for i, mq in enumerate(mqs):
            count = min(per, devices - i * per)
            workers.append(Worker("_hold", "--port", str(mq.port), "--offset", str(i * per),
                                  "--count", str(count), "--source", f"127.0.0.{2 + i}"))
        reports = [w.result(1800) for w in workers]
        wall = time.monotonic() - t0
        # Every device connected at once: measure everyone now.
        sim_rss = sum(rss_mb(w.proc.pid) for w in workers)
        broker_rss = sum(rss_mb(mq.proc.pid) for mq in mqs)
        finals = [w.finish() for w in workers]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
        for mq in mqs:
            mq.destroy()
    connected = sum(r["connected"] for r in reports)
    base = sum(r["base_rss_mb"] for r in reports)
    return {"connected": connected, "wall_s": wall, "sim_rss_mb": sim_rss, "sim_base_mb": base,
            "broker_rss_mb": broker_rss, "broker_base_mb": base_broker,
            "sim_kb_per_device": (sim_rss - base) * 1024 / connected,
            "sim_total_kb_per_device": sim_rss * 1024 / connected,
            "broker_kb_per_connection": (broker_rss - base_broker) * 1024 / connected,
            "connect_errors": sum(r["connect_errors"] for r in reports),
            "lost": sum((f or {}).get("lost", 0) for f in finals)}


def contention() -> str:
    out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:4]
    return "; ".join(" ".join(line.split()) for line in out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load-processes", type=int, default=2)
    p.add_argument("--load-seconds", type=float, default=25)
    p.add_argument("--speed", type=float, default=30,
                   help="mux run speed: high enough that the engine, not the clock, limits")
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-connections", action="store_true")
    a = p.parse_args(argv)
    print(f"busiest processes before: {contention()}", flush=True)
    rows = []
    res: dict = {}
    if not a.skip_load:
        res["load"] = load_rates(a.load_processes, a.load_seconds, a.speed)
        paho, mux = res["load"]["paho"]["rate"], res["load"]["mux"]["rate"]
        rows += [(f"paho publishers, {a.load_processes} processes, QoS 1", f"{paho:,.0f} msg/s",
                  "1.00x", f"{paho / ISSUE_PAHO:.2f}x"),
                 (f"multiplexed mode, {a.load_processes} processes x 4 connections, QoS 1",
                  f"{mux:,.0f} msg/s", f"{mux / paho:.2f}x", f"{mux / ISSUE_PAHO:.2f}x")]
    if not a.skip_connections:
        c = res["conn"] = hold_connections(a.devices, a.processes)
        rows += [(f"per-device connections held at once ({a.processes} processes)",
                  f"{c['connected']:,}", f"{c['wall_s']:.0f} s to connect", ""),
                 ("simulator RSS per device (growth / total)",
                  f"{c['sim_kb_per_device']:.1f} / {c['sim_total_kb_per_device']:.1f} KB",
                  f"{c['sim_rss_mb']:,.0f} MB total", ""),
                 ("broker RSS per connection", f"{c['broker_kb_per_connection']:.2f} KB",
                  f"{c['broker_rss_mb']:,.0f} MB total", "")]
    print(f"busiest processes after: {contention()}")
    print(json.dumps(res, indent=1))
    print(f"\n| {'what':<62} | {'figure':>20} | {'vs paho (this run)':>18} | "
          f"{'vs issue 17k':>12} |")
    print(f"|{'-' * 64}|{'-' * 22}:|{'-' * 20}:|{'-' * 14}:|")
    for r in rows:
        print(f"| {r[0]:<62} | {r[1]:>20} | {r[2]:>18} | {r[3]:>12} |")
    result = []
    if "load" in res:
        result += [f"mux_msgs_per_s={mux:.0f}", f"vs_paho={mux / paho:.2f}",
                   f"vs_issue_paho={mux / ISSUE_PAHO:.2f}"]
    if "conn" in res:
        result += [f"connections={c['connected']}",
                   f"sim_kb_per_device={c['sim_kb_per_device']:.1f}",
                   f"broker_kb_per_connection={c['broker_kb_per_connection']:.2f}"]
    print("RESULT " + " ".join(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
