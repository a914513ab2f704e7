"""What the benchmarks share: private services and their children, CPU meters, the preset's
import and the roster check. Imported by bench/alerts.py, bench/field.py, bench/ingest.py and
bench/writer.py (run from the repository root: `.venv/bin/python bench/<name>.py`)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import psycopg

from bench import flavour as flavours
from runtime import migrate
from runtime.localsvc import Mosquitto, Postgres, make_state_dir
from runtime.settings import DatabaseSettings
from simulators import topology

REPO = Path(__file__).resolve().parent.parent


class Services(NamedTuple):
    work: Path                          # logs and generated files
    pg: Postgres
    mq: Mosquitto
    url: str                            # the migrated `bench` database
    conn: psycopg.Connection            # autocommit, on `url`


def services(stack: ExitStack, name: str, keep: bool, flavour: str = "plain") -> Services:
    """A work directory, a private durable PostgreSQL with a migrated `bench` database and a
    private Mosquitto, all removed when `stack` closes (the work directory kept with keep).
    flavour "timescale": that PostgreSQL with TimescaleDB, migrated with hypertables
    (bench/flavour.py)."""
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before the run",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"fg-bench-{name}-"))
    stack.callback(lambda: print(f"logs kept in {work}") if keep
                   else shutil.rmtree(work, ignore_errors=True))
    pg = flavours.postgres(make_state_dir(f"fg-bench-{name}-pg-"), flavour, durable=True)
    stack.callback(pg.destroy)
    mq = Mosquitto(make_state_dir(f"fg-bench-{name}-mq-"))
    stack.callback(mq.destroy)
    pg.start()
    mq.start()
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bench")
    url = pg.url("bench")
    migrate.migrate(DatabaseSettings(url=url, timescale=flavours.timescale_setting(flavour)))
    return Services(work, pg, mq, url, stack.enter_context(psycopg.connect(url,
                                                                           autocommit=True)))


def postmaster(pg: Postgres) -> int:
    """The server's pid (postmaster.pid), for cpu_s; -1 when it is not running."""
    try:
        return int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def pct(values: list[float], p: float) -> float:
    """Nearest rank: of 200 samples, p99 is the 198th smallest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Child:
    """A firegrid command as a child process in its own session (a Ctrl-C reaches only
    the benchmark, which stops the children), stopped when `stack` closes. `tree`: the
    checkout whose code runs (another commit's worktree, for a before/after comparison)."""

    def __init__(self, name: str, args: list[str], env: dict, logdir: Path,
                 stack: ExitStack, tree: Path = REPO) -> None:
        self.name, self.log = name, logdir / f"{name}.log"
        with open(self.log, "ab") as log:
            # `-m` puts the working directory first on sys.path: the tree's packages.
            self.proc = subprocess.Popen([sys.executable, "-m", "firegrid.cli", *args], env=env,
                                         stdout=log, stderr=log, cwd=tree,
                                         start_new_session=True)
        # The simulator ends its run on SIGINT; the services on SIGTERM.
        stack.callback(self.stop, signal.SIGINT if name == "simulate" else signal.SIGTERM)

    def stop(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class CpuMeter:
    """CPU % of one core per process between start() and read()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0, self.cpu0 = time.monotonic(), {k: cpu_s(v) for k, v in self.pids.items()}

    def read(self) -> dict[str, float]:
        """CPU % of one core per process since start(); `elapsed` keeps the seconds."""
        self.elapsed = elapsed = time.monotonic() - self.t0
        return {k: (cpu_s(v) - self.cpu0[k]) / elapsed * 100 for k, v in self.pids.items()}

    def seconds(self) -> dict[str, float]:
        """CPU seconds per process since start() (read before the processes exit)."""
        return {k: cpu_s(v) - self.cpu0[k] for k, v in self.pids.items()}


def busy_s() -> float:
    """CPU seconds the whole machine has been busy, all cores together (/proc/stat: every
    state but idle and iowait, steal included); the difference of two readings, less what
    a benchmark's own processes used, is what everything else on the machine took."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds of a process; for PostgreSQL's postmaster, with its backends."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or (int(fields[1]) == pid and pid != os.getpid()
                                 and fields[0] != "Z"):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def child_env(mq: Mosquitto, db_url: str, metrics_port: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FIREGRID_")}
    env.update({"FIREGRID_MQTT__HOST": mq.host, "FIREGRID_MQTT__PORT": str(mq.port),
                "FIREGRID_DATABASE__URL": db_url, "FIREGRID_DATABASE__TIMESCALE": "off",
                "FIREGRID_INGEST__METRICS_PORT": "0", "FIREGRID_DEVICES__METRICS_PORT": "0",
                "FIREGRID_ALERTS__METRICS_PORT": str(metrics_port),
                "FIREGRID_ALERTS__CLIENT_ID": "bench-alerts",
                "FIREGRID_MQTT__CLIENT_ID": "bench-ingest"})
    return env


def register(work: Path, preset: str, env: dict) -> dict[str, list[str]]:
    """The preset from CSVs through `firegrid devices import`; detectors by building."""
    files = topology.generate(work / "street", preset, 1)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "firegrid.cli", "devices", "import",
                    *map(str, files.values()), "--actor", "bench"], env=env, cwd=REPO,
                   check=True, capture_output=True)
    print(f"imported the {preset} preset in {time.perf_counter() - started:.1f} s", flush=True)
    detectors: dict[str, list[str]] = defaultdict(list)
    for d in topology.load(work / "street").devices:
        if d.kind == "smoke_detector" and d.gateway_id is None:
            detectors[d.building].append(d.id)
    return detectors


def check_roster(conn: psycopg.Connection, hours: float) -> None:
    """The generated roster runs a week from yesterday 08:00 (Asia/Shanghai); a building
    without a grid worker on duty would skip rung 0. Cover the run if it does not."""
    query = """SELECT count(*) FROM buildings b WHERE NOT EXISTS (
        SELECT 1 FROM worker_areas a JOIN workers w ON w.id = a.worker_id
        JOIN roster r ON r.worker_id = w.id WHERE a.grid_id = b.grid_id
        AND w.role = 'grid_worker' AND r.starts_at <= %(t)s AND r.ends_at > %(t)s)"""
    now = datetime.now(UTC)
    uncovered = [conn.execute(query, {"t": t}).fetchone()[0]
                 for t in (now, now + timedelta(hours=hours))]
    until = conn.execute("SELECT max(ends_at) FROM roster").fetchone()[0]
    print(f"roster runs until {until:%Y-%m-%d %H:%M} UTC; buildings without a grid worker on "
          f"duty now / in {hours:g} h: {uncovered[0]} / {uncovered[1]}", flush=True)
    if any(uncovered):
        conn.execute("INSERT INTO roster (worker_id, starts_at, ends_at) SELECT id, %s, %s"
                     " FROM workers WHERE role <> 'field_technician' ON CONFLICT DO NOTHING",
                     [now - timedelta(hours=1), now + timedelta(hours=hours + 1)])
        print("  added a shift covering the run for every worker", flush=True)


