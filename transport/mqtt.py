"""firegrid's MQTT 5 session: a socket, a thread, and the `mqtt5` codec (sans-IO, in Rust).

Why not a full client library: ingest must acknowledge a message only after its commit,
from another thread, a batch at a time, and stop reading while its window is full. paho
does this one packet and one select() at a time (53% of ingest's samples, with a private
internal for each fix); `mqtt5` only parses and writes packets (~0.4 us a PUBLISH), so the
loop below owns exactly the behaviour firegrid needs (docs/benchmarks.md):

- QoS 1, a stable client id and a persistent session (clean_start=False, Session Expiry
  Interval), so the broker queues for us while we are away and redelivers whatever we did
  not acknowledge. Receive Maximum is the window's bound.
- One recv() takes every packet that has arrived (up to _READ bytes); a batch's PUBACKs
  leave as one send().
- Keepalive: PINGREQ when nothing was sent for half the keep_alive; the link is declared dead
  when nothing at all arrived for 1.5 x keep_alive after it. Any packet counts as proof of
  life (Mosquitto 2.0.x answers a PINGREQ only after the backlog queued ahead of it).
- Lost connection: reconnect with the jittered backoff, resubscribe, and bump `generation`
  so that acks of the old connection are never written to the new one.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import mqtt5

from runtime.retry import Backoff
from runtime.settings import MqttSettings
from transport.receiver import Receiver, subscriptions
from transport.window import Window

__all__ = ["Consumer", "subscriptions"]

log = logging.getLogger(__name__)

_PUBACK = struct.Struct("!BBH")  # type 0x40, remaining length 2, packet id: reason "success"
_READ = 1 << 18                  # bytes per recv(): ~2,000 telemetry messages
_CONNECT_TIMEOUT_S = 10.0
_JOIN_TIMEOUT_S = 10.0


class Gone(Exception):
    """The connection ended (closed, refused, timed out or broken by the broker)."""


class Consumer(Receiver):
    def __init__(self, settings: MqttSettings, window: Window, *, service: str,
                 channels: tuple[str, ...] | None = None) -> None:
        super().__init__(settings, window, service=service, channels=channels)
        self._service = service
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()   # the network thread and ack() both write
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sent = 0.0
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self._service}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect cleanly (the session and its unacknowledged messages stay on the
        broker) after every PUBACK already handed to ack() has been written."""
        self._stopping.set()
        with self._send_lock:
            sock = self._sock
            if sock is not None:
                try:
                    sock.sendall(mqtt5.DisconnectPacket().write())
                    sock.shutdown(socket.SHUT_RDWR)   # wakes the network thread's recv()
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
        self._connected_gauge.set(0)

    # --- writing -----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return   # lost: what was to be sent belongs to a connection that is gone
            try:
                sock.sendall(data)
                self._last_sent = time.monotonic()
            except OSError as exc:
                log.warning("write to broker failed: %s", exc)
                self._break(sock)

    def _send_acks(self, mids: list[int]) -> None:
        self._send(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]))

    def _drop(self) -> None:
        with self._send_lock:
            if self._sock is not None:
                self._break(self._sock)

    @staticmethod
    def _break(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # the network thread's recv() returns b""
        except OSError:
            pass

    # --- the network thread ------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            sock = None
            try:
                sock, reader = self._open()
                attempt = 0
                self._serve(sock, reader)
            except (OSError, Gone, ValueError) as exc:
                # ValueError: the codec met bytes that are no MQTT 5 packet.
                if not self._stopping.is_set():
                    log.warning("broker %s:%s: %s; reconnecting", self._settings.host,
                                self._settings.port, exc or type(exc).__name__)
            except Exception:
                # A bug must not end the thread silently and stall the service: the
                # connection is dropped, and the broker redelivers.
                log.exception("MQTT session failed; reconnecting")
            finally:
                with self._send_lock:
                    self._sock = None
                if sock is not None:
                    sock.close()
                self._lost()
            if not self._stopping.is_set():
                self._stopping.wait(self._backoff.delay(attempt))
                attempt += 1

    def _open(self) -> tuple[socket.socket, _Reader]:
        cfg = self._settings
        sock = socket.create_connection((cfg.host, cfg.port), timeout=_CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            password = cfg.password.get_secret_value().encode() if cfg.password else None
            sock.sendall(mqtt5.ConnectPacket(
                cfg.client_id, username=cfg.username, password=password, clean_start=False,
                keep_alive=cfg.keepalive_s, session_expiry_interval=cfg.session_expiry_s,
                receive_max=min(self._window.max_messages, 65535)).write())
            reader = _Reader(sock)
            connack = reader.one()
            if not isinstance(connack, mqtt5.ConnAckPacket):
                raise Gone(f"expected CONNACK, got {type(connack).__name__}")
            if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                raise Gone(f"broker refused connection: {connack.reason_code.name}"
                           f" {connack.reason_str or ''}".rstrip())
        except BaseException:
            sock.close()
            raise
        self._connected(connack.session_present)
        with self._send_lock:
            self._sock = sock
            self._last_sent = time.monotonic()
        self._send(mqtt5.SubscribePacket(1, [
            mqtt5.TopicFilter(topic, max_qos=mqtt5.QoS.AT_LEAST_ONCE)
            for topic in self._topics]).write())
        return sock, reader

    def _serve(self, sock: socket.socket, reader: _Reader) -> None:
        keepalive = self._settings.keepalive_s
        sock.settimeout(keepalive / 2)
        last_heard = time.monotonic()
        publish, arrived = mqtt5.PublishPacket, self._arrived
        while not self._stopping.is_set():
            try:
                packets = reader.some()
            except TimeoutError:
                packets = []
            if not packets and time.monotonic() - last_heard > 1.5 * keepalive:
                raise Gone(f"nothing from the broker for {1.5 * keepalive:.0f} s")
            others: list[int] = []
            for packet in packets:
                if type(packet) is publish:
                    mid = arrived(packet.topic, packet.payload, packet.packet_id or 0,
                                  packet.qos.value)
                    if mid:
                        others.append(mid)
                else:
                    self._control(packet)
            if others:
                self._send(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in others]))
            now = time.monotonic()
            if packets:
                # After the window let them in: a wait there is not the broker's silence.
                last_heard = now
            if now - self._last_sent >= keepalive / 2:
                self._send(mqtt5.PingReqPacket().write())

    def _control(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.SubAckPacket):
            self._granted([code.name for code in packet.reason_codes if code.value >= 0x80])
        elif isinstance(packet, mqtt5.DisconnectPacket):
            raise Gone(f"broker disconnected us: {packet.reason_code.name}"
                       f" {packet.reason_str or ''}".rstrip())
        # PINGRESP (life, counted by arriving) and anything else need nothing.


class _Reader:
    """Packets from a socket, as many as one recv() brings; a packet cut in two waits for
    the rest in the buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._early: list[mqtt5.Packet] = []   # what came with the CONNACK

    def some(self) -> list[mqtt5.Packet]:
        if self._early:
            early, self._early = self._early, []
            return early
        data = self._sock.recv(_READ)
        if not data:
            raise Gone("connection closed")
        buf = self._buf
        buf += data
        packets: list[mqtt5.Packet] = []
        read, pos, end = mqtt5.read, 0, len(buf)
        with memoryview(buf) as view:
            while pos < end:
                try:
                    packet, size = read(view[pos:])
                except IndexError:   # "Not enough bytes": the rest comes with the next recv
                    break
                packets.append(packet)
                pos += size
        del buf[:pos]
        return packets

    def one(self) -> mqtt5.Packet:
        """The first packet (CONNACK), waiting for it. A resumed session's redeliveries
        may share its recv(); they are kept for some()."""
        while True:
            packets = self.some()
            if packets:
                self._early = packets[1:]
                return packets[0]
