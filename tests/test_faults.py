"""Nothing lost, nothing stored twice: ingest killed, the database restarted, the broker
restarted, ingest stopped for longer than Mosquitto's default queue, and a slow database.
Each test compares what the broker acknowledged to the publisher with rows in PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psycopg
import pytest

from runtime import migrate
from runtime.localsvc import (
    Mosquitto,
    Postgres,
    free_port,
    free_ports,
    make_state_dir,
    wait_until,
)
from runtime.settings import DatabaseSettings
from simulators import messages as m
from tests.helpers import (
    IngestProcess,
    Publisher,
    ThreadedIngest,
    await_subscribed,
    scrape,
    settings_env,
    wait_for_count,
)

CONNECTED = 'firegrid_mqtt_connected{service="ingest"}'
RECEIVED = 'firegrid_mqtt_messages_received{service="ingest"}'
OTHERS = 'firegrid_mqtt_messages_others{service="ingest"}'
COUNT_ROWS = "SELECT count(*) FROM readings"
COUNT_DISTINCT = "SELECT count(DISTINCT (device_id, seq)) FROM readings"


def stream(prefix: str, start: int, count: int, devices: int = 50) -> list[tuple[str, bytes]]:
    """`count` smoke readings; message i goes to device i % devices with seq i."""
    ts = m.now_ms()
    return [(m.topic(f"SD-{i % devices:04d}", "telemetry", prefix), m.encode(m.smoke_status(i, ts)))
            for i in range(start, start + count)]


def publish_in_background(broker, uid: str, batches: list[list[tuple[str, bytes]]]):
    """Publish batch after batch from a thread; join() returns once the broker has
    acknowledged everything."""
    errors: list[BaseException] = []

    def run() -> None:
        pub = Publisher(broker.host, broker.port, f"bgpub-{uid}")
        try:
            for batch in batches:
                pub.publish_all(batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            pub.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(120)
        assert not thread.is_alive() and not errors, errors

    return join


def assert_exactly(url: str, expected: int) -> None:
    with psycopg.connect(url) as conn:
        assert conn.execute(COUNT_ROWS).fetchone()[0] == expected
        assert conn.execute(COUNT_DISTINCT).fetchone()[0] == expected


def test_kill_9_mid_stream_then_restart_stores_every_message_once(
        make_settings, broker, db_url, uid, tmp_path):
    settings = make_settings(ingest={"batch_max_rows": 200})
    prefix = settings.mqtt.topic_prefix
    total = 12_000
    first = IngestProcess(settings, tmp_path / "ingest.log").start()
    try:
        # Wait until the first process has subscribed (its session now queues for it),
        # then stream while it commits, and kill it without warning part-way.
        publisher = Publisher(broker.host, broker.port, f"probe-{uid}")
        await_subscribed(publisher, prefix, db_url)
        publisher.close()
        join = publish_in_background(broker, uid,
                                     [stream(prefix, i, 500) for i in range(0, total, 500)])
        assert wait_for_count(db_url, COUNT_ROWS, 2000) >= 2000
        first.kill()
        at_kill = wait_for_count(db_url, COUNT_ROWS, total, timeout=0)
        assert at_kill < total, "the stream finished before the kill; nothing was tested"
        join()
    finally:
        first.kill()
    second = IngestProcess(settings, tmp_path / "ingest.log").start()
    try:
        assert wait_for_count(db_url, COUNT_ROWS, total) == total
    finally:
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    assert_exactly(db_url, total)


def test_sigterm_drains_commits_and_acknowledges_before_exit(make_settings, broker, db_url, uid,
                                                             tmp_path):
    port = free_port()
    # Batches that never fill and never age: only the drain on SIGTERM commits them.
    settings = make_settings(ingest={"batch_max_rows": 1000, "batch_max_age_ms": 60_000,
                                     "metrics_port": port})
    prefix = settings.mqtt.topic_prefix
    proc = IngestProcess(settings, tmp_path / "ingest.log").start()
    try:
        def received() -> float:
            return scrape(port, RECEIVED)

        wait_until(lambda: scrape(port, CONNECTED) == 1, 15,
                   "ingest subscribed")
        publisher = Publisher(broker.host, broker.port, f"pub-{uid}")
        publisher.publish_all(stream(prefix, 0, 300))
        publisher.close()
        wait_until(lambda: received() >= 300, 15, "ingest to receive 300 messages")
        assert wait_for_count(db_url, COUNT_ROWS, 1, timeout=0) == 0  # still only buffered
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    with psycopg.connect(db_url) as conn:
        assert conn.execute(COUNT_DISTINCT).fetchone()[0] == 300
    # Acknowledged, so a new session finds nothing left to redeliver: a fresh ingest with
    # the same client id stores nothing new (and the count stays exact).
    again = ThreadedIngest(settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"batch_max_age_ms": 20, "metrics_port": 0})})).start()
    publisher = Publisher(broker.host, broker.port, f"pub2-{uid}")
    publisher.publish_all(stream(prefix, 300, 1))
    publisher.close()
    assert wait_for_count(db_url, COUNT_ROWS, 301) == 301
    again.stop()
    assert again.service.consumer.received == 1


def test_database_restart_mid_stream_loses_nothing(make_settings, broker, uid):
    pg = Postgres(make_state_dir("fg-test-pgr-"), durable=True).start()
    try:
        url = pg.url("postgres")
        migrate.migrate(DatabaseSettings(url=url))
        settings = make_settings(database={"url": url}, ingest={"batch_max_rows": 200})
        prefix = settings.mqtt.topic_prefix
        ingest = ThreadedIngest(settings).start()
        try:
            join = publish_in_background(
                broker, uid, [stream(prefix, i, 500) for i in range(0, 10_000, 500)])
            assert wait_for_count(url, COUNT_ROWS, 1500) >= 1500
            pg.stop("fast")  # terminates ingest's connection mid-batch
            join()           # the broker keeps taking messages while the database is down
            pg.start()
            assert wait_for_count(url, COUNT_ROWS, 10_000) == 10_000
        finally:
            ingest.stop()
        assert_exactly(url, 10_000)
    finally:
        pg.destroy()


def test_broker_restart_with_persistence_loses_nothing(make_settings, db_url, uid):
    mq = Mosquitto(make_state_dir("fg-test-mqr-")).start()
    try:
        settings = make_settings(mqtt={"port": mq.port})
        prefix = settings.mqtt.topic_prefix
        # 1. Create ingest's persistent session, then stop ingest.
        ThreadedIngest(settings).start().stop()
        # 2. While ingest is away, 3,000 messages queue for it; then the broker restarts.
        pub = Publisher(mq.host, mq.port, f"pub-{uid}")
        pub.publish_all(stream(prefix, 0, 3000))
        pub.close()
        mq.restart()
        # 3. Ingest comes back and drains the persisted queue. Hold its commits with a
        #    table lock so the broker restarts again with messages in flight, unacked.
        ingest = ThreadedIngest(settings).start()
        try:
            with psycopg.connect(db_url) as blocker:
                blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                wait_until(lambda: ingest.service.consumer.received >= 1000, 30, "deliveries")
                mq.restart()
            # 4. More messages after the restart.
            wait_until(ingest.service.consumer.subscribed.is_set, 30, "ingest to resubscribe")
            pub = Publisher(mq.host, mq.port, f"pub2-{uid}")
            pub.publish_all(stream(prefix, 3000, 1000))
            pub.close()
            assert wait_for_count(db_url, COUNT_ROWS, 4000) == 4000
        finally:
            ingest.stop()
        assert_exactly(db_url, 4000)
    finally:
        mq.destroy()


def test_shipped_broker_config_keeps_more_than_the_default_queue_for_a_stopped_ingest(
        make_settings, broker, db_url, uid):
    # Mosquitto's default max_queued_messages (1000) would drop 4 of these 5 thousand.
    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    ThreadedIngest(settings).start().stop()
    pub = Publisher(broker.host, broker.port, f"pub-{uid}")
    pub.publish_all(stream(prefix, 0, 5000))
    pub.close()
    ingest = ThreadedIngest(settings).start()
    try:
        assert wait_for_count(db_url, COUNT_ROWS, 5000) == 5000
    finally:
        ingest.stop()
    assert_exactly(db_url, 5000)


@pytest.mark.parametrize(("protocol", "window"), [
    ("5", 100),       # the client's Receive Maximum
    ("3.1.1", 8000),  # the broker's max_inflight_messages from deploy/mosquitto/conf.d
])
def test_slow_database_fills_the_window_and_the_broker_holds_the_rest(
        make_settings, broker, db_url, uid, protocol, window):
    settings = make_settings(mqtt={"protocol": protocol},
                             ingest={"inflight_window": window, "batch_max_rows": 50})
    prefix = settings.mqtt.topic_prefix
    total = window + 2000
    ingest = ThreadedIngest(settings).start()
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            pub = Publisher(broker.host, broker.port, f"pub-{uid}")
            pub.publish_all(stream(prefix, 0, total))
            pub.close()
            consumer = ingest.service.consumer
            wait_until(lambda: consumer.received >= window, 15, "the window to fill")
            # The broker must now hold back. Nothing signals "did not send", so give it a
            # bounded moment to misbehave before checking.
            threading.Event().wait(0.5)
            assert consumer.received == window
            assert ingest.service.committed == 0
        assert wait_for_count(db_url, COUNT_ROWS, total) == total
    finally:
        ingest.stop()
    assert_exactly(db_url, total)


def test_workers_split_the_stream_and_a_killed_worker_is_replaced(make_settings, broker, db_url,
                                                                  uid, tmp_path):
    base = free_ports(2)
    settings = make_settings(ingest={"batch_max_rows": 200, "metrics_port": base})
    prefix = settings.mqtt.topic_prefix
    log = open(tmp_path / "workers.log", "ab")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "firegrid.cli", "ingest", "--workers", "2"],
        env=settings_env(settings), stdout=log, stderr=log)
    connected = CONNECTED
    try:
        # Both workers subscribed before the stream, so each has a session queueing it.
        wait_until(lambda: scrape(base, connected) == 1 and scrape(base + 1, connected) == 1,
                   60, "both workers subscribed")
        children = sorted(_children(supervisor.pid))
        assert len(children) == 2
        publisher = Publisher(broker.host, broker.port, f"pub-{uid}")
        publisher.publish_all(stream(prefix, 0, 3000))
        os.kill(children[0], signal.SIGKILL)  # the supervisor restarts it; its queue waits
        publisher.publish_all(stream(prefix, 3000, 3000))
        publisher.close()
        assert wait_for_count(db_url, COUNT_ROWS, 6000) == 6000
        survivor = next(p for p in _children(supervisor.pid) if p == children[1])
        assert survivor  # the other worker was never disturbed
        # Each worker kept its own devices and acknowledged the other's.
        took = scrape(base + 1, RECEIVED) - scrape(base + 1, OTHERS)
        assert 0 < took < 6000, took
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
    assert_exactly(db_url, 6000)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]
