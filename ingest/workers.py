"""`firegrid ingest --workers N`: N ingest processes splitting the stream by device.

One ingest process is one core at most: paho's network thread and the writer share a GIL
(docs/benchmarks.md). Each worker has its own client id ({client_id}-{i}), and so its own
persistent session and queue. By default each subscribes plainly to the whole prefix and
keeps the devices whose id hashes to its partition i of N, acknowledging the others at once:
a plain subscription survives a Mosquitto restart, a $share one does not (docs/operations.md,
"Broker restarts"). With mqtt.share_group set (an EMQX cluster), the workers share that
group instead and the broker splits the messages.

Keep N stable: a device's partition depends on it, and a retired worker's session keeps
queueing until it is cleared. A worker that exits unexpectedly is restarted (with backoff)
rather than left down, since its session queues its share meanwhile. SIGTERM/SIGINT go to
every worker, which drain as a single ingest does; then the supervisor exits.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from runtime.errors import ConfigError
from runtime.retry import Backoff
from runtime.settings import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF = Backoff(0.5, 30.0, floor=1.0)
# A worker that ran this long before it exited was healthy: its next restart is quick again,
# so a crash once an hour never waits the 30 s that ten crashes in a row earn.
HEALTHY_S = 120.0


def restart_delay(restarts: int, ran_s: float) -> tuple[int, float]:
    """(restarts counted now, seconds to wait) for a worker that exited after ran_s seconds,
    having been restarted `restarts` times in a row before."""
    count = 1 if ran_s >= HEALTHY_S else restarts + 1
    return count, RESTART_BACKOFF.delay(count)


def worker_env(settings: Settings, index: int, workers: int) -> dict[str, str]:
    env = dict(os.environ)
    env["FIREGRID_MQTT__CLIENT_ID"] = f"{settings.mqtt.client_id}-{index}"
    if not settings.mqtt.share_group:
        env["FIREGRID_MQTT__PARTITIONS"] = str(workers)
        env["FIREGRID_MQTT__PARTITION"] = str(index)
    port = settings.ingest.metrics_port
    env["FIREGRID_INGEST__METRICS_PORT"] = str(port + index if port else 0)
    return env


def _check_ports(settings: Settings, workers: int) -> None:
    """Worker i serves /metrics on ingest.metrics_port + i. With the defaults (9108, monitor
    9109, alert core 9110) a second worker takes the monitor's port; if the monitor runs on
    this machine, whichever starts second cannot serve /metrics and exits. The monitor may
    well run elsewhere, so this warns, before anything starts, rather than refusing."""
    base = settings.ingest.metrics_port
    if not base or workers < 2:
        return
    taken = {"devices.metrics_port (the monitor)": settings.devices.metrics_port,
             "alerts.metrics_port (the alert core)": settings.alerts.metrics_port}
    for name, port in taken.items():
        if port and base <= port < base + workers:
            log.warning("--workers %d serve /metrics on ports %d-%d, which includes %s, %d:"
                        " if that service runs on this machine, set ingest.metrics_port"
                        " (FIREGRID_INGEST__METRICS_PORT) to a free range, e.g. 9120",
                        workers, base, base + workers - 1, name, port)


def run_workers(settings: Settings, workers: int, config_file: str | None) -> int:
    if settings.mqtt.partitions > 1:
        raise ConfigError("--workers sets mqtt.partitions for its workers itself: leave it 1")
    _check_ports(settings, workers)
    argv = [sys.executable, "-m", "firegrid.cli"]
    if config_file:
        argv += ["--config", config_file]
    argv.append("ingest")
    stopping = threading.Event()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    restarts: dict[int, int] = {}
    started: dict[int, float] = {}

    def start(i: int) -> None:
        started[i] = time.monotonic()
        procs[i] = subprocess.Popen(argv, env=worker_env(settings, i, workers))
        log.info("worker %d started (pid %d, client id %s-%d)", i, procs[i].pid,
                 settings.mqtt.client_id, i)

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for i in range(workers):
        start(i)
    failed = False
    while procs:
        for i, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            if stopping.is_set():
                failed |= code != 0
                del procs[i]
                continue
            restarts[i], delay = restart_delay(restarts.get(i, 0),
                                               time.monotonic() - started[i])
            log.error("worker %d exited with code %s; restarting in %.1fs", i, code, delay)
            if stopping.wait(delay):
                del procs[i]
                continue
            start(i)
        stopping.wait(0.2)
    return 1 if failed else 0
