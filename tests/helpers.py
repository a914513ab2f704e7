"""Test helpers that talk to the real services: publish and wait for the broker's PUBACK,
run ingest in a thread or a child process, and wait for rows by polling the database."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.service import IngestService
from runtime.settings import Settings


class Publisher:
    """A QoS 1 publisher; publish_all returns once the broker has acknowledged everything."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish_all(self, messages: Iterable[tuple[str, bytes]], timeout: float = 60) -> int:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "broker did not acknowledge a publish"
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ThreadedService:
    """A service (ingest, the alert core) in a background thread of the test process."""

    def __init__(self, service, name: str = "ingest") -> None:
        self.service = service
        self.name = name
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ThreadedService:
        self.thread.start()
        assert self.service.consumer.subscribed.wait(15), f"{self.name} did not subscribe"
        telemetry = getattr(self.service, "telemetry", None)   # the alert core's second session
        if telemetry is not None:
            assert telemetry.subscribed.wait(15), f"{self.name} did not subscribe (telemetry)"
        return self

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), f"{self.name} did not stop"
        if self.error:
            raise self.error


class ThreadedIngest(ThreadedService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(IngestService(settings), "ingest")


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as FIREGRID_* variables, for `firegrid ...` in a child process."""
    env = dict(os.environ)
    for section in ("mqtt", "database", "ingest", "alerts"):
        for key, value in getattr(settings, section).model_dump(mode="json").items():
            if value is not None:
                env[f"FIREGRID_{section.upper()}__{key.upper()}"] = str(value)
    return env


class IngestProcess:
    """`firegrid ingest` (or another service command) as a real child process, so tests can
    SIGKILL or SIGTERM it."""

    command: tuple[str, ...] = ("ingest",)

    def __init__(self, settings: Settings, log_path) -> None:
        self._env = settings_env(settings)
        self._log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> IngestProcess:
        log = open(self._log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "firegrid.cli", *self.command],
                                     env=self._env, stdout=log, stderr=log)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def wait_for_count(url: str, query: str, expected: int, timeout: float = 60) -> int:
    """Poll the database until the query's count reaches `expected` (rides out a database
    restart); return the last count seen, so the caller's assert shows how far it got."""
    deadline = time.monotonic() + timeout
    count = -1
    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                while True:
                    count = conn.execute(query).fetchone()[0]
                    if count >= expected or time.monotonic() > deadline:
                        return count
                    time.sleep(0.05)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                return count
            time.sleep(0.1)


def await_subscribed(publisher: Publisher, prefix: str, url: str, timeout: float = 30) -> None:
    """Publish probe events until ingest stores one: proof that it is subscribed. (A message
    sent before the subscription exists has no queue to wait in.) Probes go to the events
    table under device PROBE, so they never disturb a test's readings."""
    from simulators import messages as m

    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM events WHERE device_id = 'PROBE'"
    seq = 0
    while True:
        probe = m.encode(m.event("self_test", seq, result="pass"))
        publisher.publish_all([(m.topic("PROBE", "event", prefix), probe)])
        if wait_for_count(url, query, 1, timeout=0.5) >= 1:
            return
        assert time.monotonic() < deadline, "ingest never subscribed"
        seq += 1


def scrape(port: int, name: str) -> float:
    """The value of one series on a process's /metrics, named as the exposition writes it
    (`name` or `name{label="value"}`); -1 if the process or the series is not there (yet)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
    except OSError:
        return -1
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1


def required_tool(name: str, install: str) -> str:
    """The path of an external program a test needs (a name on the PATH, or a path). A
    missing one fails the test saying how to install it: a skipped check would read as a
    passing one, and `./dev test` installs them all."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {install}")
    return found


def on_a_terminal(args: list[str], env: dict[str, str], *, stderr: bool = True) -> str:
    """`firegrid <args>` on a pseudo-terminal, as a person would see it: its output (and
    its stderr, unless stderr=False), once it has exited 0."""
    leader, follower = pty.openpty()
    try:
        child = subprocess.Popen([sys.executable, "-m", "firegrid.cli", *args],
                                 cwd=Path(__file__).resolve().parent.parent, stdout=follower,
                                 stderr=follower if stderr else subprocess.DEVNULL, env=env)
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:          # the child closed the terminal: EIO on Linux
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(timeout=120) == 0, output.decode("utf-8", "replace")
    finally:
        os.close(leader)
    return output.decode("utf-8", "replace")
