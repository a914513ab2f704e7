"""Running the alert core against the test's broker and database: in a thread, or as a
`firegrid alerts run` child process that tests can kill -9; and a worker's phone, a
subscriber on the page topics that records what arrives."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts import dispatch
from alerts.publisher import PagePublisher
from alerts.rules import rules_text
from alerts.service import AlertService
from runtime.settings import Settings
from simulators import messages as m
from tests.helpers import IngestProcess, Publisher, ThreadedService, wait_for_count


def alert_settings(make_settings, uid: str, **alerts) -> Settings:
    return make_settings(alerts={"client_id": f"alerts-{uid}",
                                 "page_topic_prefix": f"pages/{uid}", "metrics_port": 0,
                                 "poll_s": 0.2, **alerts})


class Phones:
    """Subscribes to every worker's page topic; `take` waits for the next page."""

    def __init__(self, settings: Settings) -> None:
        self.pages: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, dict]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, msg: self._got(msg)
        self.client.on_subscribe = lambda *a: subscribed.set()
        topic = f"{settings.alerts.page_topic_prefix}/+/pages"
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(settings.mqtt.host, settings.mqtt.port)
        self.client.loop_start()
        assert subscribed.wait(10), "phone did not subscribe"

    def _got(self, msg) -> None:
        worker = msg.topic.split("/")[-2]
        page = json.loads(msg.payload)
        self.seen.append((worker, page))
        self.pages.put((worker, page))

    def take(self, timeout: float = 20) -> tuple[str, dict]:
        return self.pages.get(timeout=timeout)

    def take_n(self, n: int, timeout: float = 30) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        return [self.pages.get(timeout=max(0.01, deadline - time.monotonic()))
                for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ThreadedAlerts(ThreadedService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(AlertService(settings), "alert core")


class AlertsProcess(IngestProcess):
    """`firegrid alerts run` as a child process."""

    command = ("alerts", "run")


def page_publisher(settings: Settings, client_id: str | None = None) -> PagePublisher:
    """The alert core's page publisher, started and connected."""
    alerts = settings.alerts.model_copy(update={"client_id": client_id or
                                                settings.alerts.client_id})
    publisher = PagePublisher(settings.mqtt, alerts)
    publisher.start()
    assert publisher.connected.wait(10)
    return publisher


@contextmanager
def dispatcher_on(settings: Settings, db_url: str,
                  publisher: PagePublisher) -> Iterator[dispatch.Dispatcher]:
    """A dispatcher on a connection of its own, closed after the block."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        sender = dispatch.Dispatcher(conn, settings.alerts, publisher, {})
        try:
            yield sender
        finally:
            sender.close()


def fast_ladder(rung_s: int) -> str:
    """A rules file whose warning ladder climbs every `rung_s` seconds through the four
    levels, for tests that watch escalations happen in real time."""
    rungs = "".join(f"[[ladder.warning]]\nroles = [\"{role}\"]\nack_timeout_s = {rung_s}\n"
                    for role in ("grid_worker", "grid_leader", "community_duty", "street_duty"))
    # No repeat: these tests watch every ladder run to its end (exhausted).
    return rungs + ("[repeat]\nevery_s = false\n"
                    "[[ladder.confirmed]]\nroles = [\"grid_worker\", \"grid_leader\","
                    " \"community_duty\", \"street_duty\"]\nack_timeout_s = 60\n")


def shipped_rules(tmp_path: Path, rung_s: int, voice_after_s: int | None = None) -> str:
    """The shipped rules file with every rung's timeout set to `rung_s` seconds (and the
    voice call's wait to `voice_after_s`), written to tmp_path: the real ladder's shape at a
    test's pace."""
    lines = []
    for line in rules_text()[0].splitlines():
        if line.startswith("ack_timeout_s"):
            line = f"ack_timeout_s = {rung_s}"
        elif line.startswith("after_s") and voice_after_s is not None:
            line = f"after_s = {voice_after_s}"
        lines.append(line)
    path = tmp_path / "rules.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def send_alarm(publisher: Publisher, settings: Settings, device: str) -> None:
    publisher.publish_all([(m.topic(device, "event", settings.mqtt.topic_prefix),
                            m.encode(m.event("alarm", 1)))])


def pages_sent(settings: Settings, n: int, timeout: float = 60) -> int:
    """Wait until n pages are sent and none is pending: a quiet moment between rungs. (A
    kill in the instant between the broker's PUBACK and the COMMIT that marks a page sent
    would send it again, with the same page_id for the app to drop: docs/alerts.md. Kills
    in the tests land between rungs, where the guarantee is exactly once.)"""
    quiet = ("SELECT CASE WHEN count(*) FILTER (WHERE status = 'pending') = 0"
             " THEN count(*) FILTER (WHERE status = 'sent') ELSE 0 END FROM pages")
    return wait_for_count(settings.database.url, quiet, n, timeout)
