"""firegrid's MQTT 5 session (transport/mqtt.py) at the level of packets: what the broker
keeps after a batch of PUBACKs and a clean stop, a backlog read many packets per recv(),
keepalive while a broker is slow to answer pings, and a reused packet id.

A real Mosquitto where a real one can show the behaviour; a scripted broker on a socket
(speaking through the same mqtt5 codec) where a real one cannot be made to misbehave on
purpose: never answering pings, reusing a packet id.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mqtt5
import pytest

from runtime.localsvc import wait_until
from runtime.settings import MqttSettings
from tests.helpers import Publisher
from transport import metrics
from transport.link import Reader
from transport.mqtt import Consumer
from transport.window import Inbound, Window

SERVICE = "transport-session-test"


def _window() -> Window:
    return Window(batch_max=100_000, max_age_s=60, max_messages=100_000, max_bytes=2**30)


@pytest.fixture
def mqtt_settings(broker, uid) -> MqttSettings:
    # A plain subscription: the session's queue is this client's alone.
    return MqttSettings(host=broker.host, port=broker.port, client_id=f"session-{uid}",
                        topic_prefix=f"fg/{uid}", share_group="", protocol="5",
                        reconnect_min_s=0.1, reconnect_max_s=1.0)


@pytest.fixture
def publish(broker, uid, mqtt_settings):
    """publish(payloads): QoS 1 to the test's prefix, returning once the broker has them."""
    publisher = Publisher(broker.host, broker.port, f"session-pub-{uid}")
    topic = f"{mqtt_settings.topic_prefix}/SD-1/telemetry"

    def send(payloads: list[bytes]) -> None:
        publisher.publish_all([(topic, payload) for payload in payloads])

    yield send
    publisher.close()


@contextmanager
def running(settings: MqttSettings) -> Iterator[tuple[Consumer, Window]]:
    window = _window()
    consumer = Consumer(settings, window, service=SERVICE)
    consumer.start()
    try:
        yield consumer, window
    finally:
        window.close()
        consumer.stop()


def payloads(window: Window) -> list[bytes]:
    return [item.payload for item in window.take_now()]


def test_a_batch_of_pubacks_then_a_clean_stop_keeps_exactly_the_rest(mqtt_settings, publish):
    """7 of 10 acknowledged in one send(), then stop(): the broker must redeliver exactly
    the other 3, first, on the next connection of the same session."""
    with running(mqtt_settings) as (consumer, window):
        assert consumer.subscribed.wait(15)
        sent = [b"m%d" % i for i in range(10)]
        publish(sent)
        wait_until(lambda: len(window) >= len(sent), 15, "the messages to arrive")
        items: list[Inbound] = window.take_now()
        assert [item.payload for item in items] == sent
        assert consumer.ack(items[:7]) == 7

    with running(mqtt_settings) as (consumer, window):
        assert consumer.subscribed.wait(15)
        # The broker resends unacknowledged messages first, then what arrives after we are
        # subscribed: once the marker is here, every redelivery has been too.
        publish([b"marker"])
        got: list[bytes] = []

        def marker_arrived() -> bool:
            got.extend(payloads(window))
            return b"marker" in got

        wait_until(marker_arrived, 15, "the marker after the redeliveries")
        assert got == sent[7:] + [b"marker"]


def test_a_backlog_is_read_many_packets_per_recv(mqtt_settings, publish, monkeypatch):
    with running(mqtt_settings) as (consumer, _):
        assert consumer.subscribed.wait(15)   # the session exists; now away
    backlog = 1000
    publish([b"%d" % i for i in range(backlog)])

    per_read: list[int] = []
    some = Reader.some

    def counting(self: Reader) -> list[mqtt5.Packet]:
        packets = some(self)
        per_read.append(sum(type(p) is mqtt5.PublishPacket for p in packets))
        return packets

    monkeypatch.setattr(Reader, "some", counting)
    with running(mqtt_settings) as (consumer, window):
        wait_until(lambda: consumer.received >= backlog, 30, "the backlog to be read")
        assert sorted(int(p) for p in payloads(window)) == list(range(backlog))
    reads = [n for n in per_read if n]
    # (What came with the CONNACK is counted twice: read by one(), handed on by some().)
    assert sum(reads) >= backlog
    assert len(reads) < backlog // 10, f"{len(reads)} reads for {backlog} messages"


class ScriptedBroker:
    """One MQTT 5 connection at a time on a local port, driven by the test."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None
        self.reader: Reader | None = None

    def accept(self) -> list[mqtt5.Packet]:
        """Take the next connection; CONNACK its CONNECT, SUBACK its SUBSCRIBE."""
        self.conn, _ = self.server.accept()
        self.conn.settimeout(10)
        self.reader = Reader(self.conn)
        connect = self.reader.one()
        assert isinstance(connect, mqtt5.ConnectPacket) and not connect.clean_start
        self.conn.sendall(mqtt5.ConnAckPacket(session_present=True).write())
        subscribe = self.next(mqtt5.SubscribePacket)
        self.conn.sendall(mqtt5.SubAckPacket(
            subscribe.packet_id,
            [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE] * len(subscribe.topic_filters),
        ).write())
        return [connect, subscribe]

    def next(self, kind: type) -> mqtt5.Packet:
        assert self.reader is not None
        while True:
            for packet in self.reader.some():
                if isinstance(packet, kind):
                    return packet

    def publish(self, mid: int, topic: str = "fg/v1/SD-1/event") -> None:
        assert self.conn is not None
        self.conn.sendall(mqtt5.PublishPacket(topic, b"{}", qos=mqtt5.QoS.AT_LEAST_ONCE,
                                              packet_id=mid).write())

    def closed_by_client(self) -> bool:
        assert self.conn is not None
        try:
            while self.conn.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            pass
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def scripted():
    broker = ScriptedBroker()
    yield broker
    broker.close()


def scripted_settings(make_settings, port: int, **changes) -> MqttSettings:
    # Below the settings' floor of 5 s on purpose (model_copy does not validate): the test
    # waits for a few keepalives.
    return make_settings(mqtt={"port": port, "protocol": "5", "reconnect_min_s": 30,
                               "reconnect_max_s": 60}).mqtt.model_copy(update=changes)


def test_a_reused_packet_id_drops_the_connection_instead_of_acking_the_wrong_message(
        make_settings, scripted):
    """A broker that lets more than 65,535 messages be unacknowledged reuses packet ids; an
    ack would then release two messages, one maybe not committed. The session keeps the
    first, refuses the second (left unacknowledged, so redelivered), acknowledges nothing
    more on this connection and drops it."""
    with running(scripted_settings(make_settings, scripted.port)) as (consumer, window):
        scripted.accept()
        assert consumer.subscribed.wait(10)
        reused = metrics.MID_REUSED.labels(SERVICE)
        before = reused._value.get()
        for mid in (7, 8, 7, 9):
            scripted.publish(mid)
        assert scripted.closed_by_client(), "the connection was not dropped"
        taken = window.take_now()
        assert [item.mid for item in taken] == [7, 8]
        assert reused._value.get() == before + 1
        # Nothing committed on the dropped connection is acknowledged on any other.
        assert consumer.ack(taken) == 0 and window.held == 0


def test_traffic_keeps_the_link_alive_without_pingresp_and_silence_ends_it(
        make_settings, scripted):
    """Mosquitto 2.0.x answers a PINGREQ only after the backlog queued ahead of it: a
    client that waits for PINGRESP drops the connection in the middle of a long drain.
    Messages prove the link is alive; only silence longer than 1.5 keepalives ends it."""
    keepalive = 1
    settings = scripted_settings(make_settings, scripted.port, keepalive_s=keepalive)
    with running(settings) as (consumer, window):
        scripted.accept()
        assert consumer.subscribed.wait(10)
        generation = consumer.generation
        pings = 0
        started = time.monotonic()
        mid = 0
        # 4 keepalives of messages and never a PINGRESP.
        while time.monotonic() - started < 4 * keepalive:
            mid += 1
            scripted.publish(mid)
            pings += _pings_within(scripted, 0.1)
        assert pings >= 2, "the session sent no PINGREQ although it only received"
        assert consumer.generation == generation, "dropped while messages kept coming"
        assert len(window) == mid

        # Now silence: no message, no PINGRESP.
        silent = time.monotonic()
        assert scripted.closed_by_client()
        assert time.monotonic() - silent <= 1.5 * keepalive + 1.5
        wait_until(lambda: consumer.generation != generation, 5, "the loss to be counted")


def _pings_within(broker: ScriptedBroker, seconds: float) -> int:
    """PINGREQs the session sends within `seconds` (PUBACK-free: nothing is committed)."""
    assert broker.conn is not None and broker.reader is not None
    broker.conn.settimeout(seconds)
    n = 0
    try:
        for packet in broker.reader.some():
            n += isinstance(packet, mqtt5.PingReqPacket)
    except TimeoutError:
        pass
    finally:
        broker.conn.settimeout(10)
    return n


def test_stop_returns_while_the_broker_is_unreachable(make_settings):
    """A service stopping while its broker is down must not hang in a reconnect."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]   # closed again below: nobody listens there
    window = _window()
    consumer = Consumer(scripted_settings(make_settings, port), window, service=SERVICE)
    consumer.start()
    stopped = threading.Event()
    threading.Thread(target=lambda: (consumer.stop(), stopped.set()), daemon=True).start()
    assert stopped.wait(5)
    assert not consumer.subscribed.is_set()
