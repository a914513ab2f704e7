"""The MQTT push to the worker app: pages published at QoS 1 on one socket of our own.

Each worker's app subscribes to {alerts.page_topic_prefix}/{worker_id}/pages. A page counts
as sent when the broker has acknowledged it (PUBACK with a success reason); the broker then
delivers it to the app, queueing it in the app's persistent session while the phone is
offline.

    send(messages, deadline)           a batch on the wire in one sendall(), at once
    wait(sending, deadline)            which of them the broker acknowledged (PUBACK)
    publish_all(messages, timeout_s)   both

Why not paho: the dispatcher sends pages in batches of hundreds and needs only "which of
these did the broker take". paho's publish() alone took ~60 us of Python a message in a
profile of 10,000 pages drained (an MQTTMessage, an MQTTMessageInfo with its Condition, a
lock round per message), before its network thread handled each PUBACK one select() at a
time: pages drained at ~3,000 a second (issue 18). Here a batch is encoded with the `mqtt5`
codec (Rust, ~1 us a PUBLISH), written with one sendall(), and the network thread takes
every PUBACK that one recv() brings and wakes the caller once.

MQTT 5 always, whatever mqtt.protocol says for the device sessions (3.1.1 there serves
brokers without 5; this publisher needs one with it): a v5 PUBACK carries a reason code, so
a publish the broker refuses (not authorised, quota exceeded) is not taken for delivered, as
a 3.1.1 PUBACK would have it.

A clean session with no expiry: the publisher keeps nothing across a reconnect. A page whose
PUBACK did not come (the connection dropped, the broker was slow) is reported not
acknowledged; the dispatcher leaves it pending and publishes it again, with the same page_id,
which the app drops if it already has it. So a lost connection costs a retry, never a page.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import mqtt5

from runtime.retry import Backoff
from runtime.settings import AlertsSettings, MqttSettings
from transport import link

log = logging.getLogger(__name__)

_READ = 1 << 16          # bytes per recv(): ~16,000 PUBACKs
_QOS1 = mqtt5.QoS.AT_LEAST_ONCE
# In flight at most, whatever the broker allows: packet ids are 16 bits and each in-flight
# page holds one; a batch larger than this waits for PUBACKs between its chunks.
_MAX_INFLIGHT = 4096


@dataclass(eq=False)
class Sending:
    """Messages of one send() on their way: which the broker acknowledged so far."""
    acked: list[bool]
    topics: list[str]
    generation: int = 0         # of the connection they went out on
    waiting: int = 0            # PUBACKs still to come
    done_at: float | None = None    # time.time() of the last one's arrival
    refused: dict[int, str] = field(default_factory=dict)   # index -> reason


class PagePublisher:
    def __init__(self, mqtt_settings: MqttSettings, alerts: AlertsSettings) -> None:
        self._prefix = alerts.page_topic_prefix.rstrip("/")
        self._settings = mqtt_settings
        self._client_id = f"{alerts.client_id}-pages"
        self._backoff = Backoff(mqtt_settings.reconnect_min_s, mqtt_settings.reconnect_max_s)
        self.connected = threading.Event()
        self._stopping = threading.Event()
        # _cond guards the connection's state: the socket, the packet ids in flight, the
        # window, the generation (+1 on every connect and loss).
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()    # publish_all and the keepalive both send
        self._sock: link.Stream | None = None
        self._generation = 0
        self._window = _MAX_INFLIGHT
        # packet id -> the call and index waiting for it; None once its call stopped
        # waiting (its id stays taken until its PUBACK or the connection's end, so a late
        # PUBACK can never resolve another page that reused the id).
        self._inflight: dict[int, tuple[Sending, int] | None] = {}
        self._next_id = 0
        self._last_send = 0.0
        self._thread: threading.Thread | None = None

    def topic(self, worker_id: str) -> str:
        return f"{self._prefix}/{worker_id}/pages"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="page-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            sock = self._sock
        if sock is not None:
            try:
                self._send(sock, mqtt5.DisconnectPacket().write())
            except OSError:
                pass
            self._lost(sock, "stopping")
        if self._thread is not None:
            self._thread.join(timeout=link.CONNECT_TIMEOUT_S)

    def publish_all(self, messages: list[tuple[str, bytes]], timeout_s: float) -> list[bool]:
        """Publish (topic, payload) pairs at QoS 1; for each, whether the broker
        acknowledged it within the timeout. Not connected: all False, at once. The
        connection lost meanwhile: what was acknowledged before, without waiting longer."""
        deadline = time.monotonic() + timeout_s
        return self.wait(self.send(messages, deadline), deadline)

    def send(self, messages: list[tuple[str, bytes]], deadline: float) -> Sending:
        """Put the messages on the wire and return at once (unless the broker's window is
        full: then wait for room until `deadline`, time.monotonic()); wait() tells which
        the broker acknowledged. The dispatcher claims its next batch meanwhile."""
        call = Sending([False] * len(messages), [t for t, _ in messages])
        sent = 0
        with self._cond:
            call.generation = generation = self._generation
            while sent < len(messages):
                if self._sock is None or self._generation != generation:
                    break
                room = min(self._window - len(self._inflight), len(messages) - sent)
                if room <= 0:
                    if not self._cond.wait(deadline - time.monotonic()):
                        break
                    continue
                wire = []
                for index in range(sent, sent + room):
                    packet_id = self._take_id()
                    self._inflight[packet_id] = (call, index)
                    topic, payload = messages[index]
                    wire.append(mqtt5.PublishPacket(topic, payload, qos=_QOS1,
                                                    packet_id=packet_id).write())
                call.waiting += room
                sent += room
                sock = self._sock
                # Sent without _cond, so the network thread can take PUBACKs meanwhile.
                self._cond.release()
                try:
                    self._send(sock, b"".join(wire))
                except OSError as exc:
                    self._lost(sock, f"sending pages: {exc}")
                finally:
                    self._cond.acquire()
        return call

    def wait(self, call: Sending, deadline: float) -> list[bool]:
        """For each message of a send(), whether the broker acknowledged it by `deadline`
        (time.monotonic()); at once for a connection lost meanwhile."""
        with self._cond:
            while call.waiting and self._generation == call.generation:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            if call.waiting:
                # Reported unacknowledged (the dispatcher publishes them again); their ids
                # stay taken until a late PUBACK or the connection's end.
                for packet_id, found in self._inflight.items():
                    if found is not None and found[0] is call:
                        self._inflight[packet_id] = None
                call.waiting = 0
        for index, reason in call.refused.items():
            log.warning("the broker refused a page on %s: %s", call.topics[index], reason)
        return call.acked

    def _take_id(self) -> int:
        """The next packet id not in flight (caller holds _cond; at most _MAX_INFLIGHT of
        the 65,535 are, so the search is short)."""
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id

    def _send(self, sock: link.Stream, data: bytes) -> None:
        with self._send_lock:
            sock.sendall(data)
            self._last_send = time.monotonic()

    # --- the network thread ------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                sock = self._open()
            except (OSError, link.Gone) as exc:
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning("page publisher cannot reach the broker: %s; retry in %.1fs",
                            exc, delay)
                self._stopping.wait(delay)
                continue
            attempt = 0
            why = "stopping"
            try:
                self._serve(sock)
            except Exception as exc:    # whatever ended it, reconnect: pages wait meanwhile
                why = str(exc)
                if not self._stopping.is_set():
                    log.warning("page publisher lost the broker: %s; reconnecting", why)
            self._lost(sock, why)
            sock.close()    # here only: another thread may shut it down, never close it

    def _open(self) -> link.Stream:
        s = self._settings
        sock, _, connack = link.connect(s, mqtt5.ConnectPacket(
            self._client_id, username=s.username, password=link.password(s),
            clean_start=True, keep_alive=s.keepalive_s, session_expiry_interval=0))
        # (Its reader is left: nothing but PUBACKs and PINGRESPs follow, read below.)
        sock.settimeout(s.keepalive_s)      # bounds a send to a broker that stopped
        with self._cond:
            self._sock = sock
            self._generation += 1
            self._window = max(1, min(connack.receive_max, _MAX_INFLIGHT))
            self._last_send = time.monotonic()
            self.connected.set()
            self._cond.notify_all()
        return sock

    def _serve(self, sock: link.Stream) -> None:
        """Read PUBACKs until the connection ends; PINGREQ when we have been quiet for half
        the keepalive; the link is dead when nothing arrived for 1.5 keepalives."""
        keepalive = self._settings.keepalive_s
        buf = bytearray()
        heard = time.monotonic()
        while not self._stopping.is_set():
            ready, _, _ = select.select([sock], [], [], min(1.0, keepalive / 2))
            now = time.monotonic()
            if ready:
                data = sock.recv(_READ)
                if not data:
                    raise link.Gone("the broker closed the connection")
                heard = now
                buf += data
                used = self._packets(buf)
                del buf[:used]
            elif now - heard > 1.5 * keepalive:
                raise link.Gone(f"nothing from the broker for {now - heard:.0f} s")
            if now - self._last_send >= keepalive / 2:
                self._send(sock, mqtt5.PingReqPacket().write())

    def _packets(self, buf: bytearray) -> int:
        """Take the whole packets at the start of buf; the bytes used. PUBACKs resolve their
        pages and wake the callers once for all of them."""
        pos, end = 0, len(buf)
        with self._cond:
            inflight = self._inflight
            with memoryview(buf) as view:
                while pos < end:
                    if buf[pos] == 0x40 and end - pos >= 4 and buf[pos + 1] == 2:
                        # The common case, a PUBACK "success" without properties: no packet
                        # object for it.
                        found = inflight.pop((buf[pos + 2] << 8) | buf[pos + 3], None)
                        if found:
                            call, index = found
                            call.acked[index] = True
                            _answered(call)
                        pos += 4
                        continue
                    try:
                        packet, size = mqtt5.read(view[pos:])
                    except IndexError:       # cut in two: the rest comes with the next recv
                        break
                    pos += size
                    self._control(packet)
            self._cond.notify_all()
        return pos

    def _control(self, packet: mqtt5.Packet) -> None:
        """Any other packet (caller holds _cond)."""
        if isinstance(packet, mqtt5.PubAckPacket):
            found = self._inflight.pop(packet.packet_id, None)
            if found:
                call, index = found
                _answered(call)
                # "No matching subscribers" (0x10) counts: the broker has it. (The codec's
                # reason codes are not ints: compare their values.)
                if int(packet.reason_code) < 0x80:
                    call.acked[index] = True
                else:
                    call.refused[index] = packet.reason_code.name
        elif isinstance(packet, mqtt5.DisconnectPacket):
            raise link.Gone(f"the broker disconnected us: {packet.reason_code.name}"
                        + (f" ({packet.reason_str})" if packet.reason_str else ""))
        # PINGRESP: proof of life, already counted by the read.

    def _lost(self, sock: link.Stream, why: str) -> None:
        """End this connection (from any thread: shut down, closed by the network thread):
        callers waiting on it return what was acknowledged."""
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._cond:
            if self._sock is not sock:
                return              # already handled (the other thread saw it first)
            self._sock = None
            self._generation += 1
            self.connected.clear()
            self._inflight.clear()
            self._cond.notify_all()
        log.debug("page publisher connection ended: %s", why)


def _answered(call: Sending) -> None:
    """One more PUBACK for `call` (caller holds _cond)."""
    call.waiting -= 1
    if not call.waiting:
        call.done_at = time.time()
