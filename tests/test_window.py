"""The window firegrid bounds itself (issue 14): in messages and in bytes, whatever the
broker does. Pure logic first, then a real Mosquitto whose in-flight limit is set far above
the window, draining a backlog into a real database."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.localsvc import Mosquitto, make_state_dir
from simulators import messages as m
from tests.helpers import Publisher, ThreadedIngest, await_subscribed, wait_for_count
from transport.window import Inbound, Window


def _msg(i: int, size: int = 10) -> Inbound:
    return Inbound("t", b"x" * size, i, 1, 1, 0, time.monotonic())


def _put_in_thread(window: Window, item: Inbound) -> threading.Thread:
    thread = threading.Thread(target=window.put, args=(item,), daemon=True)
    thread.start()
    return thread


def test_a_full_window_holds_the_network_thread_until_a_release():
    window = Window(batch_max=2, max_age_s=0, max_messages=3, max_bytes=2**30)
    for i in range(3):
        window.put(_msg(i))
    blocked = _put_in_thread(window, _msg(3))
    blocked.join(0.2)
    assert blocked.is_alive() and window.held == 3 and window.waits == 1
    taken = window.take()                 # taking does not free room: acknowledging does
    blocked.join(0.2)
    assert blocked.is_alive()
    window.release(taken)
    blocked.join(5)
    assert not blocked.is_alive() and window.held == 2 and window.peak == 3


def test_the_byte_bound_holds_and_one_oversized_message_still_passes_alone():
    window = Window(batch_max=10, max_age_s=0, max_messages=100, max_bytes=1000)
    window.put(_msg(0, 600))
    blocked = _put_in_thread(window, _msg(1, 600))     # 1200 > 1000
    blocked.join(0.2)
    assert blocked.is_alive() and window.held_bytes == 600
    window.release(window.take())
    blocked.join(5)
    assert not blocked.is_alive()
    window.release(window.take())
    window.put(_msg(2, 5000))                          # larger than the bound, window empty
    assert window.held_bytes == 5000 and window.peak_bytes == 5000


def test_closing_lets_a_waiting_put_through():
    window = Window(batch_max=1, max_age_s=0, max_messages=1, max_bytes=2**30)
    window.put(_msg(0))
    blocked = _put_in_thread(window, _msg(1))
    blocked.join(0.1)
    assert blocked.is_alive()
    window.close()
    blocked.join(5)
    assert not blocked.is_alive()


BACKLOG = 20_000
WINDOW = 500


@pytest.fixture
def generous_broker():
    """Mosquitto with the shipped conf.d, but an in-flight limit far above the window (and
    Mosquitto 2.0 does not enforce it for MQTT 3.1.1 clients draining a backlog anyway)."""
    server = Mosquitto(make_state_dir("fg-test-mq-window-"),
                       extra_conf="max_inflight_messages 0\n").start()
    yield server
    server.destroy()


def test_the_bound_holds_while_draining_a_backlog(generous_broker, make_settings, uid, db_url):
    settings = make_settings(
        mqtt={"host": generous_broker.host, "port": generous_broker.port},
        ingest={"inflight_window": WINDOW, "batch_max_rows": 200,
                "window_max_bytes": 2**20})
    prefix = settings.mqtt.topic_prefix
    publisher = Publisher(generous_broker.host, generous_broker.port, f"pub-{uid}")
    try:
        ingest = ThreadedIngest(settings).start()        # creates the persistent session
        await_subscribed(publisher, prefix, db_url)
        ingest.stop()
        # The backlog: small readings, and gateway messages of ~60 KiB among them, so that
        # both bounds are met.
        entry = {**m.smoke_status(0), "device_id": "SD-X"}
        big = m.encode(m.gateway(0, [entry] * 250))
        backlog = []
        for i in range(BACKLOG):
            if i % 100 == 0:
                backlog.append((m.topic(f"GW-{i}", "gateway", prefix), big))
            else:
                backlog.append((m.topic(f"SD-{i}", "telemetry", prefix),
                                m.encode(m.smoke_status(1))))
        publisher.publish_all(backlog, timeout=120)
        service = ThreadedIngest(settings).start()
        try:
            stored = wait_for_count(db_url, "SELECT count(*) FROM readings WHERE device_id"
                                    " LIKE 'SD-%' AND device_id <> 'SD-X'",
                                    BACKLOG - BACKLOG // 100, timeout=120)
            assert stored == BACKLOG - BACKLOG // 100
            window = service.service.window
            assert window.peak <= WINDOW
            assert window.peak_bytes <= 2**20
            assert window.waits > 0, "the backlog never filled the window: the test proves nothing"
        finally:
            service.stop()
    finally:
        publisher.close()
