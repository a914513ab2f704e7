"""The three paho-mqtt internals transport/mqtt.py relies on, checked for what they do against
the real broker, not just for being there: a paho release that keeps a name but changes its
meaning must fail here, not slow ingest down, lose acknowledgements or drop connections.

    BurstClient      one loop_read() takes many queued messages, not one
    _packet_queue    a batch of PUBACKs written as one buffer really acknowledges them
    _ping_t          cleared by incoming messages; paho's keepalive does read it
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from runtime.localsvc import wait_until
from runtime.settings import MqttSettings
from tests.helpers import Publisher
from transport.mqtt import BURST_INTERNALS, BurstClient, Consumer, _client_class
from transport.window import Inbound, Window

SERVICE = "transport-internals-test"


@pytest.fixture
def mqtt_settings(broker, uid) -> MqttSettings:
    # A plain subscription: the session's queue is this client's alone.
    return MqttSettings(host=broker.host, port=broker.port, client_id=f"internals-{uid}",
                        topic_prefix=f"fg/{uid}", share_group="",
                        reconnect_min_s=0.1, reconnect_max_s=1.0)


@pytest.fixture
def publish(broker, uid, mqtt_settings):
    """publish(payloads): QoS 1 to the test's prefix, returning once the broker has them."""
    publisher = Publisher(broker.host, broker.port, f"internals-pub-{uid}")
    topic = f"{mqtt_settings.topic_prefix}/SD-1/telemetry"

    def send(payloads: list[bytes]) -> None:
        publisher.publish_all([(topic, payload) for payload in payloads])

    yield send
    publisher.close()


class Session:
    """Consumers started one after another with the same client id (one persistent session
    on the broker), each with its own window; all stopped at the end of the test."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self._started: list[Consumer] = []

    def consumer(self, *, start: bool = True) -> tuple[Consumer, Window]:
        window = Window(batch_max=100_000, max_age_s=60, max_messages=100_000,
                    max_bytes=2**30)
        consumer = Consumer(self.settings, window, service=SERVICE)
        if start:
            self.start(consumer)
        return consumer, window

    def start(self, consumer: Consumer) -> None:
        self._started.append(consumer)
        consumer.start()
        assert consumer.subscribed.wait(15), "consumer did not subscribe"

    def close(self) -> None:
        for consumer in self._started:
            consumer.stop()


@pytest.fixture
def session(mqtt_settings):
    opened = Session(mqtt_settings)
    yield opened
    opened.close()


def payloads(window: Window) -> list[bytes]:
    return [item.payload for item in window.take_now()]


def test_the_internals_are_there_and_chosen():
    """The cheap check first: a missing name makes ingest fall back to plain paho."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    for name in (*BURST_INTERNALS, "_packet_queue", "_ping_t"):
        assert hasattr(client, name), name
    assert _client_class() is BurstClient


def test_burst_client_reads_many_queued_messages_per_loop_read(session, publish):
    # Subscribe once, leave: the broker queues what follows in our persistent session.
    first, _ = session.consumer()
    first.stop()
    backlog = 1000
    publish([b"%d" % i for i in range(backlog)])

    consumer, window = session.consumer(start=False)
    client = consumer._client
    assert isinstance(client, BurstClient)
    per_call: list[int] = []
    results: list[MQTTErrorCode] = []
    burst_read = client.loop_read

    def counting_loop_read(max_packets: int = 1) -> MQTTErrorCode:
        # paho's network thread calls this once per select() wake-up and on_message runs
        # inside it, on the same thread: the growth of `received` is this call's share.
        before = consumer.received
        rc = burst_read(max_packets)
        per_call.append(consumer.received - before)
        results.append(rc)
        return rc

    client.loop_read = counting_loop_read
    session.start(consumer)
    # Counted when loop_read returns, which is after the window has the messages.
    wait_until(lambda: sum(per_call) >= backlog, 30, "the backlog to be read")

    assert sorted(int(p) for p in payloads(window)) == list(range(backlog))
    assert sum(per_call) == backlog
    reads = [n for n in per_call if n]
    # Plain paho's loop_read takes one packet per call for QoS 1 traffic (manual_ack keeps
    # nothing in its _in_messages): this many messages in far fewer calls is the burst read.
    assert max(reads) > 1, per_call
    assert len(reads) < backlog // 4, f"{len(reads)} reads for {backlog} messages"
    # _packet_read's "no more data" must still end a burst quietly, not as an error that
    # drops the connection.
    assert set(results) <= {MQTTErrorCode.MQTT_ERR_SUCCESS}, results


def test_a_batch_ack_through_the_packet_queue_is_honoured_by_the_broker(session, publish):
    consumer, window = session.consumer()
    client = consumer._client
    queued: list[tuple[int, bytes]] = []
    packet_queue = client._packet_queue

    def recording_packet_queue(command: int, packet: bytes, *args, **kwargs) -> MQTTErrorCode:
        queued.append((command, bytes(packet)))
        return packet_queue(command, packet, *args, **kwargs)

    client._packet_queue = recording_packet_queue
    sent = [b"m%d" % i for i in range(10)]
    publish(sent)
    wait_until(lambda: len(window) >= len(sent), 15, "the messages to arrive")
    items: list[Inbound] = window.take_now()
    assert [item.payload for item in items] == sent
    acked, unacked = items[:7], items[7:]

    assert consumer.ack(acked) == len(acked)
    pubacks = [packet for command, packet in queued if command == 0x40]
    assert pubacks == [b"".join(b"\x40\x02" + item.mid.to_bytes(2, "big") for item in acked)]
    consumer.stop()  # a clean DISCONNECT, queued after the PUBACK buffer: the session stays

    _, window = session.consumer()
    # The broker resends unacknowledged messages first, then what arrives after we are
    # subscribed: once the marker is here, every redelivery has been too.
    publish([b"marker"])
    got: list[bytes] = []

    def marker_arrived() -> bool:
        got.extend(payloads(window))
        return b"marker" in got

    wait_until(marker_arrived, 15, "the marker after the redeliveries")
    assert got == [item.payload for item in unacked] + [b"marker"]


def test_incoming_messages_clear_the_ping_timer_that_paho_disconnects_on(session, publish):
    consumer, window = session.consumer()
    client = consumer._client
    keepalive = consumer._settings.keepalive_s
    generation = consumer.generation
    ping_after: list[float] = []

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # As if our PINGREQ had gone unanswered for longer than the keepalive, as happens
        # behind a long backlog on Mosquitto 2.0.x. paho checks the timer after reading.
        c._ping_t = time.monotonic() - 2 * keepalive
        consumer._on_message(c, userdata, msg)
        ping_after.append(c._ping_t)

    client.on_message = on_message
    publish([b"p%d" % i for i in range(20)])
    wait_until(lambda: len(window) >= 20, 15, "the messages to arrive")
    assert ping_after == [0] * 20
    assert consumer.generation == generation and consumer.subscribed.is_set(), (
        "the connection dropped although messages kept arriving")

    # The other half: with no traffic to clear it, a stale _ping_t makes paho drop the
    # connection. Were the timer renamed, clearing _ping_t would protect nothing.
    client._ping_t = time.monotonic() - 2 * keepalive
    wait_until(lambda: consumer.generation != generation, 10,
               "paho to drop the connection on its stale ping timer")
    # Dropped, then connected (generation + 2) and subscribed again, as after any loss.
    wait_until(lambda: consumer.generation >= generation + 2 and consumer.subscribed.is_set(),
               15, "the consumer to reconnect")
