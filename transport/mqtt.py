"""The MQTT side of ingest: a paho-mqtt 2 client with manual acknowledgement.

- QoS 1, a stable client id and a persistent session (MQTT 5 clean_start=False with a
  Session Expiry Interval, or 3.1.1 clean_session=False), so the broker queues for us while
  we are away and redelivers whatever we did not acknowledge.
- manual_ack=True: paho sends no PUBACK by itself; the writer calls ack() after commit.
- The Window bounds what we hold unacknowledged, in messages and bytes; when it is full,
  on_message waits and the socket is not read (TCP pushes back on the broker). The bound is
  also sent as Receive Maximum with MQTT 5. on_message never waits for the database itself.
- A packet id reused while unacknowledged (a broker past 65,535 in flight) drops the
  connection rather than let one ack release two messages.
- Every (re)connect or disconnect bumps `generation`. An ack is sent only for messages of
  the current connection; older ones are redelivered by the broker and deduplicated.

Three uses of paho 2.x internals, each feature-detected with plain paho behaviour as the
fallback, each measured (docs/benchmarks.md), all exercised by the fault tests against a
real broker, and each checked for its behaviour by tests/test_transport_internals.py, so a
paho upgrade that drops or changes one fails CI instead of silently slowing down or losing
acks: BurstClient reads many packets per wake-up, `_packet_queue` sends a batch's PUBACKs as
one buffer, and `_ping_t` lets incoming traffic count as proof of life during long drains.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.settings import MqttSettings
from transport import metrics
from transport.window import Inbound, Window

log = logging.getLogger(__name__)

_PUBACK = struct.Struct("!BBH")  # type 0x40, remaining length 2, packet id: same in 3.1.1 and 5

# paho internals the burst read needs; if a paho release drops one, plain paho is used.
BURST_INTERNALS = ("_sock", "_packet_read", "_loop_rc_handle")
READ_BURST = 256


class BurstClient(mqtt.Client):
    """paho's network loop handles one packet per select() wake-up: its loop_read ignores its
    max_packets argument for QoS 1 traffic. Under a backlog every message then pays a
    select() and a pass through the loop (a third of ingest's time in py-spy). This reads
    up to READ_BURST packets per wake-up and stops as soon as the socket has no more data,
    exactly like paho's own loop_read otherwise (docs/benchmarks.md: 44 vs 50 us/msg)."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        for _ in range(max(max_packets, READ_BURST)):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def _client_class() -> type[mqtt.Client]:
    probe = mqtt.Client(CallbackAPIVersion.VERSION2)
    if all(hasattr(probe, name) for name in BURST_INTERNALS):
        return BurstClient
    log.warning("paho-mqtt %s lacks %s: reading one packet per wake-up (slower)",
                getattr(mqtt, "__version__", "?"), BURST_INTERNALS)
    return mqtt.Client


def subscriptions(settings: MqttSettings,
                  channels: tuple[str, ...] | None = None) -> list[str]:
    """Ingest takes the whole prefix, not just the known channels: a device publishing to a
    wrong topic must end up as an unknown_topic dead letter, not vanish unrouted in the
    broker. The alert core names its channels (an alarm's session apart from telemetry's)."""
    share = f"$share/{settings.share_group}/" if settings.share_group else ""
    if channels is None:
        return [f"{share}{settings.topic_prefix}/#"]
    return [f"{share}{settings.topic_prefix}/+/{channel}" for channel in channels]


class Consumer:
    def __init__(self, settings: MqttSettings, window: Window, *, service: str,
                 channels: tuple[str, ...] | None = None) -> None:
        self._settings = settings
        self._topics = subscriptions(settings, channels)
        self._window = window
        self._lock = threading.Lock()
        self.generation = 0
        self.received = 0  # messages taken from the broker by this process
        self.others = 0    # ... of them other partitions' (acknowledged, not kept)
        metrics.RECEIVED.labels(service).set_function(lambda: self.received)
        metrics.OTHERS.labels(service).set_function(lambda: self.others)
        self._partitions, self._partition = settings.partitions, settings.partition
        self._id_at = len(settings.topic_prefix.strip("/").split("/"))
        metrics.WINDOW_MESSAGES.labels(service).set_function(lambda: window.held)
        metrics.WINDOW_BYTES.labels(service).set_function(lambda: window.held_bytes)
        metrics.WINDOW_WAITS.labels(service).set_function(lambda: window.waits)
        self._mid_reused = metrics.MID_REUSED.labels(service)
        # QoS 1 packet ids of this connection not yet acknowledged. A broker that lets more
        # than 65,535 be unacknowledged reuses ids; an ack would then release both.
        self._pending: set[int] = set()
        self._tainted = False   # a packet id was reused: this connection acks nothing more
        self._connected = metrics.CONNECTED.labels(service)
        self._session_lost = metrics.SESSION_LOST.labels(service)
        self._connected_once = False
        # Set once the broker has granted our subscriptions: ready to receive.
        self.subscribed = threading.Event()
        v5 = settings.protocol == "5"
        self._client = _client_class()(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._clear_ping = hasattr(self._client, "_ping_t")  # paho 2.x internal, see _on_message
        self._jitter_reconnect()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        v5 = self._settings.protocol == "5"
        props = None
        if v5:
            # paho's properties module has no annotations.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = self._window.max_messages   # the broker's share of the bound
            props.SessionExpiryInterval = self._settings.session_expiry_s
        self._client.connect_async(
            self._settings.host, self._settings.port, self._settings.keepalive_s,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect after every queued PUBACK has been written, then stop the loop."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.set(0)

    # --- acknowledgement ---------------------------------------------------------------

    def ack(self, items: Sequence[Inbound]) -> int:
        """Acknowledge committed messages of the current connection and free their room in
        the window; returns how many were acknowledged."""
        try:
            return self._ack(items)
        finally:
            self._window.release(items)

    def _ack(self, items: Sequence[Inbound]) -> int:
        with self._lock:
            generation = self.generation
            mids = [item.mid for item in items if item.qos == 1 and item.generation == generation]
            if not mids:
                return 0
            self._pending.difference_update(mids)
            queue = getattr(self._client, "_packet_queue", None)
            if queue is None:  # a paho without the internal below: the public, slower path
                for mid in mids:
                    self._client.ack(mid, 1)
            else:
                # client.ack() queues one 4-byte packet and wakes paho's loop once per message;
                # a batch of acks as one buffer is one queue entry and one send(). paho clears
                # its out-queue on reconnect, so a half-written buffer never reaches a new
                # connection. (We subscribe at QoS 1, so no message needs the QoS 2 flow.)
                queue(0x40, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 0)
        return len(mids)

    # --- paho callbacks (network thread) -------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.received += 1  # exported at scrape time (metrics.RECEIVED), no lock per message
        if self._clear_ping:
            # Mosquitto 2.0.x answers a PINGREQ only after the backlog queued ahead of it, and
            # paho drops the connection when that answer is a keepalive late, even while
            # messages pour in: a long drain reconnected every 60 s. Traffic from the broker
            # proves the link is alive, so a pending ping no longer counts as unanswered.
            client._ping_t = 0
        topic, mid, qos = msg.topic, msg.mid, msg.qos   # paho properties: read each once
        if self._partitions > 1 and not self._owns(topic):
            # Another process keeps its own copy from its own session (docs/operations.md).
            self.others += 1
            client.ack(mid, qos)
            return
        if qos == 1:
            # No lock: only this thread adds, and set operations are atomic; ack() removes
            # under the lock, and connect/disconnect (this thread too) clear.
            if self._tainted:
                return  # left unacknowledged: redelivered after the reconnect
            if mid in self._pending:
                with self._lock:
                    self._taint(client, mid)
                return
            self._pending.add(mid)
        # paho types the payload bytes | bytearray; a received one is bytes.
        payload = msg.payload
        self._window.put(Inbound(
            topic, payload if type(payload) is bytes else bytes(payload), mid, qos,
            self.generation, time.time_ns() // 1_000_000, time.monotonic(),
        ))

    def _owns(self, topic: str) -> bool:
        """This process's share of the work: the device (or gateway) id in the topic, hashed.
        One device's messages always go to one process, in order."""
        parts = topic.split("/", self._id_at + 1)
        key = parts[self._id_at] if len(parts) > self._id_at else topic
        return zlib.crc32(key.encode()) % self._partitions == self._partition

    def _taint(self, client: mqtt.Client, mid: int) -> None:
        """The broker sent a message with the packet id of one we have not acknowledged.
        Acknowledging either would release both, one maybe not yet committed. So this
        connection acknowledges nothing more (a new generation), and is dropped: the broker
        redelivers every unacknowledged message on the next one. Called under the lock."""
        log.error("broker reused packet id %d while a message with it is unacknowledged;"
                  " reconnecting so that no acknowledgement releases the wrong message", mid)
        self._mid_reused.inc()
        self._tainted = True
        self.generation += 1
        self._pending.clear()
        sock = client.socket()
        if isinstance(sock, socket.socket):   # paho sees the loss and reconnects
            sock.shutdown(socket.SHUT_RDWR)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("broker refused connection: %s", reason)
            return
        with self._lock:
            self.generation += 1
            self._pending.clear()
            self._tainted = False
        if self._connected_once and not flags.session_present:
            # Our queue on the broker is gone (expired or the broker lost its store).
            log.warning("broker did not resume our session: messages queued meanwhile are lost")
            self._session_lost.inc()
        self._connected_once = True
        client.subscribe([(topic, 1) for topic in self._topics])
        log.info("connected to broker %s:%s (session present: %s)", self._settings.host,
                 self._settings.port, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", self._topics, refused)
            return
        self._connected.set(1)
        self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        log.warning("cannot reach broker %s:%s, retrying", self._settings.host, self._settings.port)
        self._jitter_reconnect()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        with self._lock:
            self.generation += 1
            self._pending.clear()
            self._tainted = False
        self.subscribed.clear()
        self._connected.set(0)
        if reason.is_failure:
            log.warning("lost broker connection: %s; reconnecting", reason)
        self._jitter_reconnect()

    def _jitter_reconnect(self) -> None:
        # paho doubles its delay from min to max without jitter; re-drawing both bounds on
        # every disconnect spreads many processes reconnecting after one broker restart.
        lo, hi = self._settings.reconnect_min_s, self._settings.reconnect_max_s
        self._client.reconnect_delay_set(
            # paho annotates the delays as int but computes with floats.
            min_delay=random.uniform(0.5 * lo, 1.5 * lo),  # type: ignore[arg-type]
            max_delay=random.uniform(0.75 * hi, hi),  # type: ignore[arg-type]
        )
