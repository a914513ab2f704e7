"""Simulator load benchmark (issue 4): publish rate of the multiplexed mode against paho-mqtt
publishers, and 100,000 per-device connections at once with the memory per device.

    .venv/bin/python bench/simulators.py                       # about 5 minutes on 2 cores
    .venv/bin/python bench/simulators.py --skip-load           # 100,000 connections (~2.5 min)
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
    connections --devices per-device connections (own client id, keepalive 600 s) from
                --processes simulator processes, each with its own broker and bound to
                --source-addrs (2) addresses of its own (127.0.0.2-.3, .4-.5, ...): under
                half the ephemeral range per address, where connect() finds a port fast.
                Every 5 s: connected (per process), connect errors by cause
                (timeout_tcp, timeout_connack, refused, EMFILE, EADDRNOTAVAIL...),
                connections lost, RSS. Once all are connected they are held --hold-s
                (60) more and measured again (held, RSS); if they are not all connected
                after --give-up-s (900) the run reports the plateau and its causes. Then
                the brokers' log lines, counted by kind. --connect-concurrency (500 per
                process) bounds attempts in flight; failed devices retry with their own
                backoff (2 s doubling to 300 s), as real ones do.

One process may hold only as many sockets as its open-file limit (20,000 hard here, and
raising it needs CAP_SYS_RESOURCE), and a Mosquitto child inherits the same limit: so the
connections are spread over --processes simulators, each with its own broker. Ends with
`RESULT mux_msgs_per_s=... vs_paho=... vs_issue_paho=... connections=... peak=...
connect_all_s=... sim_kb_per_device=... broker_kb_per_connection=...` (connections: held at
the end). `kill <pid>` stops it cleanly (simulators and brokers too).

Worker modes (`bench/simulators.py _paho|_mux|_hold ...`) are internal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
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
    mark = mark or (t0, 0)  # a run shorter than the warm-up counts from the start
    emit({"rate": (n1 - mark[1]) / (t1 - mark[0]), "acked": n1})


def _shard(street, index: int, count: int):
    from simulators.topology import Topology
    keep = {b for n, b in enumerate(sorted(street.buildings)) if n % count == index}
    return Topology({b: street.buildings[b] for b in keep},
                    [d for d in street.devices if d.building in keep])


def w_mux(a: argparse.Namespace) -> None:

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
    """Connect `count` devices, each on its own connection, and hold them until told to stop
    on stdin; report every few seconds (and at once when all are connected)."""
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
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    t0 = time.monotonic()
    state = {"all_s": None, "peak": 0, "last": 0.0}

    def progress(p) -> None:
        now = time.monotonic()
        state["peak"] = max(state["peak"], p.connected)
        first_all = p.connected == p.devices and state["all_s"] is None
        if first_all:
            state["all_s"] = now - t0
        if first_all or now - state["last"] >= a.report_s:
            state["last"] = now
            emit({"t": now - t0, "connected": p.connected, "peak": state["peak"],
                  "devices": p.devices, "all_s": state["all_s"], "rss_mb": rss_mb(),
                  "base_rss_mb": base, "connect_errors": p.connect_errors,
                  "causes": p.connect_causes, "lost": p.lost,
                  "fds": len(os.listdir("/proc/self/fd"))})

    summary = run_simulation(settings, street=street, speed=1, duration_s=7 * 86400 - 1,
                             seed=1, stop_event=stop, progress_cb=progress,
                             source_addrs=a.source.split(","), keepalive_s=600,
                             connect_concurrency=a.concurrency, drain_s=0)
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
    p.add_argument("--concurrency", type=int, default=500)
    p.add_argument("--report-s", type=float, default=5)
    a = p.parse_args(argv)
    WORKERS[a.mode](a)


# --- the benchmark ------------------------------------------------------------------------

class Worker:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.last: dict | None = None        # the latest report, read by a thread (_hold)
        self._reader: threading.Thread | None = None

    def result(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            if line.startswith("@"):
                return json.loads(line[1:])
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"worker {self.proc.args[2:]} gave no result")

    def follow(self) -> None:
        """Keep `last` up to date with the worker's reports, in the background."""
        def read() -> None:
            for line in self.proc.stdout:
                if line.startswith("@"):
                    self.last = json.loads(line[1:])
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def finish(self) -> dict | None:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        if self._reader is None:
            self.follow()
        self.proc.wait(120)
        self._reader.join(10)
        return self.last


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


def _add(into: dict, more: dict) -> dict:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v
    return into


_LOG_NOISE = re.compile(r"^\d+: |/\S+|\b(SD\d+|[0-9.]+:\d+|auto-[0-9A-F-]+|\d+)\b")


def broker_log_summary(mq) -> dict:
    """What the broker logged, by kind of line (ids, addresses and numbers blanked)."""
    kinds: dict[str, int] = {}
    try:
        with open(mq.base / "mosquitto.log", errors="replace") as f:
            for line in f:
                kind = _LOG_NOISE.sub("#", line.strip())
                kinds[kind] = kinds.get(kind, 0) + 1
    except OSError:
        pass
    return kinds


def hold_connections(devices: int, processes: int, concurrency: int, hold_s: float,
                     give_up_s: float, addrs: int) -> dict:
    """Connect `devices` per-device connections from `processes` simulators, each with its
    own broker and source address; watch them every 5 s until all are connected (then hold
    them hold_s more and measure again) or until give_up_s without all of them."""
    per = -(-devices // processes)
    if per > resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200:
        raise SystemExit(f"{per} connections per process is over the open-file limit: "
                         "use more --processes")
    mqs = brokers(processes)
    workers: list[Worker] = []
    out: dict = {"timeline": []}
    try:
        base_broker = sum(rss_mb(mq.proc.pid) for mq in mqs)
        t0 = time.monotonic()
        for i, mq in enumerate(mqs):
            count = min(per, devices - i * per)
            workers.append(Worker("_hold", "--port", str(mq.port), "--offset", str(i * per),
                                  "--count", str(count), "--source", ",".join(
                                      f"127.0.0.{2 + i * addrs + k}" for k in range(addrs)),
                                  "--index", str(i), "--concurrency", str(concurrency)))
            workers[-1].follow()
        peak, all_at, held_until = 0, None, None
        while True:
            time.sleep(5)
            dead = [w for w in workers if w.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"simulator {dead[0].proc.args[2:]} exited "
                                   f"({dead[0].proc.returncode})")
            reps = [w.last or {} for w in workers]
            t = time.monotonic() - t0
            connected = sum(r.get("connected", 0) for r in reps)
            causes = {}
            for r in reps:
                _add(causes, r.get("causes", {}))
            sample = {"t": round(t), "connected": connected,
                      "each": [r.get("connected", 0) for r in reps],
                      "errors": sum(r.get("connect_errors", 0) for r in reps), "causes": causes,
                      "lost": sum(r.get("lost", 0) for r in reps),
                      "sim_rss_mb": sum(rss_mb(w.proc.pid) for w in workers),
                      "broker_rss_mb": sum(rss_mb(mq.proc.pid) for mq in mqs),
                      "sim_fds": [r.get("fds", 0) for r in reps]}
            out["timeline"].append(sample)
            print(f"  {t:5.0f} s  connected {connected:7,}  each {sample['each']}  "
                  f"connect errors {sample['errors']} {causes}  lost {sample['lost']}  "
                  f"sim {sample['sim_rss_mb']:,.0f} MB  brokers "
                  f"{sample['broker_rss_mb']:,.0f} MB", flush=True)
            peak = max(peak, connected)
            if all_at is None and connected == devices:
                all_at = sample
                out["all_s"] = max(r["all_s"] for r in reps)
                held_until = time.monotonic() + hold_s
            if held_until is not None and time.monotonic() >= held_until:
                break
            if all_at is None and t > give_up_s:
                break
        end = out["timeline"][-1]
        sim_base = sum(r.get("base_rss_mb", 0) for r in reps)
        finals = [w.finish() for w in workers]
        out["broker_logs"] = _add({}, {})
        for mq in mqs:
            _add(out["broker_logs"], broker_log_summary(mq))
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)
        for mq in mqs:
            mq.destroy()
    connected = end["connected"]
    out.update({
        "devices": devices, "peak": peak, "held": connected, "all_connected": all_at is not None,
        "held_s": end["t"] - all_at["t"] if all_at else 0,
        "wall_s": end["t"], "sim_rss_mb": end["sim_rss_mb"], "sim_base_mb": sim_base,
        "broker_rss_mb": end["broker_rss_mb"], "broker_base_mb": base_broker,
        "sim_kb_per_device": (end["sim_rss_mb"] - sim_base) * 1024 / max(connected, 1),
        "sim_total_kb_per_device": end["sim_rss_mb"] * 1024 / max(connected, 1),
        "broker_kb_per_connection":
            (end["broker_rss_mb"] - base_broker) * 1024 / max(connected, 1),
        "connect_errors": end["errors"], "causes": end["causes"],
        "lost": sum((f or {}).get("lost", 0) for f in finals)})
    return out


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
    p.add_argument("--connect-concurrency", type=int, default=500,
                   help="connection attempts in flight per simulator process")
    p.add_argument("--source-addrs", type=int, default=2,
                   help="source addresses per simulator process (127.0.0.2, .3, ...)")
    p.add_argument("--hold-s", type=float, default=60,
                   help="once all are connected, hold them this long and measure again")
    p.add_argument("--give-up-s", type=float, default=900,
                   help="stop waiting for all to connect after this")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-connections", action="store_true")
    a = p.parse_args(argv)
    # `kill <pid>` ends the run through the finally blocks: no simulator or broker left over.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
        c = res["conn"] = hold_connections(a.devices, a.processes, a.connect_concurrency,
                                           a.hold_s, a.give_up_s, a.source_addrs)
        to_all = f"{c['all_s']:.0f} s to connect all" if c["all_connected"] else "not all"
        rows += [(f"per-device connections, peak at once ({a.processes} processes)",
                  f"{c['peak']:,}", to_all, ""),
                 (f"per-device connections held {c['held_s']:.0f} s after", f"{c['held']:,}",
                  f"connect errors {c['connect_errors']:,}", ""),
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
        result += [f"connections={c['held']}", f"peak={c['peak']}",
                   f"connect_all_s={c.get('all_s', 0):.0f}",
                   f"sim_kb_per_device={c['sim_kb_per_device']:.1f}",
                   f"broker_kb_per_connection={c['broker_kb_per_connection']:.2f}"]
    print("RESULT " + " ".join(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
