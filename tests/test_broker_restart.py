"""The broker restarts while devices keep publishing (issue 14). Devices reconnect at once
and publish the moment the broker is back, before ingest and the alert core have
reconnected (they wait 2 s here, as a backoff after a restart may): every reading the broker
acknowledged to a device is stored once, and an alarm sent in that gap is paged once.

With a $share subscription this lost everything sent in the gap (0 of 2,000 stored):
Mosquitto 2.0 restores a persistent session's plain subscriptions after a restart but never
its shared ones, so it acknowledged the devices' messages and dropped them. firegrid now
subscribes plainly, and --workers splits by device (docs/operations.md, "Broker restarts").

SIGKILL: Mosquitto keeps only what it saved (autosave_interval); the test's broker saves
every second, as the shipped one does every 30 s, and ingest keeps up, so nothing it
acknowledged is only in the killed broker's memory."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runtime.localsvc import Mosquitto, free_ports, make_state_dir, wait_until
from simulators import messages as m
from tests.alert_live import AlertsProcess, pages_sent
from tests.alert_support import build_ward
from tests.helpers import IngestProcess, scrape, settings_env, wait_for_count

RATE = 300          # readings per second, from 20 devices
CONNECTED = 'firegrid_mqtt_connected{service="%s"}'


class Devices:
    """Detectors publishing QoS 1 readings without pause, reconnecting at once whenever the
    broker is gone (paho queues what they publish meanwhile and sends it on reconnect).
    `acked` is what the broker acknowledged (PUBACK): what a device rightly forgets. No lock
    is shared with paho's thread (list.append and dict stores are atomic): a lock taken in
    on_publish and around publish() would deadlock with paho's own."""

    def __init__(self, host: str, port: int, prefix: str, uid: str) -> None:
        self._keys: dict[int, tuple[str, int]] = {}     # packet id -> (device, seq)
        self._acked_mids: list[int] = []
        self._stop = threading.Event()
        self._prefix = prefix
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uid}")
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_publish = lambda c, u, mid, reason, props: self._acked_mids.append(mid)
        self.client.connect(host, port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def acked(self) -> set[tuple[str, int]]:
        keys = (self._keys.get(mid) for mid in list(self._acked_mids))
        return {key for key in keys if key is not None}

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            device = f"SD-{seq % 20:02d}"
            info = self.client.publish(m.topic(device, "telemetry", self._prefix),
                                       m.encode(m.smoke_status(seq)), qos=1)
            self._keys[info.mid] = (device, seq)
            seq += 1
            self._stop.wait(1 / RATE)

    def start(self) -> Devices:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop publishing and wait until everything published is acknowledged."""
        self._stop.set()
        self._thread.join(10)
        wait_until(lambda: len(self._acked_mids) >= len(self._keys), 60,
                   "devices' last readings acknowledged")
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def restartable_broker():
    server = Mosquitto(make_state_dir("fg-test-mq-restart-"), extra_conf="autosave_interval 1\n")
    server.start()
    yield server
    server.destroy()


def _restart(broker: Mosquitto, how: signal.Signals) -> None:
    if how == signal.SIGKILL:
        broker.kill()
    else:
        broker.stop()
    broker.start()


def _stored(db: psycopg.Connection) -> list[tuple[str, int]]:
    return db.execute("SELECT device_id, seq FROM readings WHERE device_id LIKE 'SD-__'"
                      ).fetchall()


def _run_through_a_restart(how, broker, settings, db, db_url, uid, wait_subscribed) -> None:
    build_ward(db, around=datetime.now(UTC))
    prefix = settings.mqtt.topic_prefix
    wait_subscribed()
    # The broker has written the subscriptions to its persistence file (it saves every
    # second): what any broker would have done at its last autosave before a crash.
    state = broker.base / "mosquitto.db"
    saved_after = time.time()
    wait_until(lambda: state.exists() and state.stat().st_mtime > saved_after, 10,
               "the broker saved its state")
    devices = Devices(broker.host, broker.port, prefix, uid).start()
    wait_for_count(db_url, "SELECT count(*) FROM readings", 200)
    _restart(broker, how)
    # The moment it is back: the devices are reconnecting already; a detector alarms.
    alarm = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"alarm-{uid}")
    alarm.connect(broker.host, broker.port)
    alarm.loop_start()
    info = alarm.publish(m.topic("SD-1", "event", prefix), m.encode(m.event("alarm", 1)), qos=1)
    info.wait_for_publish(10)
    assert info.is_published()
    alarm.disconnect()
    alarm.loop_stop()
    after = len(devices.acked)
    wait_until(lambda: len(devices.acked) > after + RATE, 30, "devices publishing again")
    devices.stop()

    expected = sorted(devices.acked)
    assert wait_for_count(db_url, "SELECT count(*) FROM readings WHERE device_id LIKE 'SD-__'",
                          len(expected)) == len(expected)
    assert sorted(_stored(db)) == expected            # each once, none missing
    assert pages_sent(settings, 2) == 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The alarm opened B1's incident and its first rung paged B1's grid team, once each.
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1
        assert conn.execute("SELECT worker_id, status FROM pages ORDER BY worker_id"
                            ).fetchall() == [("gl1", "sent"), ("gw1", "sent")]


def _settings(make_settings, uid, broker, ingest_port, alerts_port):
    """Ingest and the alert core come back 2-3 s after the broker: later than devices."""
    return make_settings(
        mqtt={"host": broker.host, "port": broker.port, "reconnect_min_s": 2.0,
              "reconnect_max_s": 3.0},
        ingest={"metrics_port": ingest_port},
        alerts={"client_id": f"alerts-{uid}", "page_topic_prefix": f"pages/{uid}",
                "metrics_port": alerts_port, "poll_s": 0.2})


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_one_ingest_and_the_alert_core_lose_nothing(how, restartable_broker, make_settings,
                                                    uid, db, db_url, tmp_path):
    first = free_ports(2)
    settings = _settings(make_settings, uid, restartable_broker, first, first + 1)
    ingest = IngestProcess(settings, tmp_path / "ingest.log").start()
    core = AlertsProcess(settings, tmp_path / "alerts.log").start()
    try:
        def subscribed() -> None:
            wait_until(lambda: scrape(first, CONNECTED % "ingest") == 1
                       and scrape(first + 1, CONNECTED % "alerts") == 1, 60, "subscribed")
        _run_through_a_restart(how, restartable_broker, settings, db, db_url, uid, subscribed)
    finally:
        ingest.kill()
        core.kill()


def test_two_workers_lose_nothing(restartable_broker, make_settings, uid, db, db_url, tmp_path):
    first = free_ports(3)
    settings = _settings(make_settings, uid, restartable_broker, first, first + 2)
    log = open(tmp_path / "workers.log", "ab")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "firegrid.cli", "ingest", "--workers", "2"],
        env=settings_env(settings), stdout=log, stderr=log)
    core = AlertsProcess(settings, tmp_path / "alerts.log").start()
    try:
        def subscribed() -> None:
            wait_until(lambda: scrape(first, CONNECTED % "ingest") == 1
                       and scrape(first + 1, CONNECTED % "ingest") == 1
                       and scrape(first + 2, CONNECTED % "alerts") == 1, 60, "subscribed")
        _run_through_a_restart(signal.SIGTERM, restartable_broker, settings, db, db_url, uid,
                               subscribed)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        core.kill()
