"""firegrid's MQTT 5 session: a socket, a thread, and the `mqtt5` codec (sans-IO, in Rust).

Why not a full client library: ingest must acknowledge a message only after its commit,
from another thread, a batch at a time, and stop reading while its window is full. paho
does this one packet and one select() at a time (53% of ingest's samples, with a private
internal for each fix); `mqtt5` only parses and writes packets (~0.4 us a PUBLISH), so the
loop below owns exactly the behaviour firegrid needs (docs/benchmarks.md):

- QoS 1, a stable client id and a persistent session (clean_start=False, Session Expiry
  Interval), so the broker queues for us while we are away and redelivers whatever we did
  not acknowledge. Receive Maximum is the window's bound.
- One recv() takes every packet that has arrived (transport/link.py); a batch's PUBACKs
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
from transport import link
from transport.link import Gone
from transport.receiver import Receiver
from transport.window import Window

__all__ = ["Consumer"]

log = logging.getLogger(__name__)

_PUBACK = struct.Struct("!BBH")  # type 0x40, remaining length 2, packet id: reason "success"
_JOIN_TIMEOUT_S = 10.0


class Consumer(Receiver):
    def __init__(self, settings: MqttSettings, window: Window, *, service: str,
                 channels: tuple[str, ...] | None = None) -> None:
        super().__init__(settings, window, service=service, channels=channels)
        self._service = service
        self._sock: link.Stream | None = None
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
        """One buffer of PUBACKs, one sendall(). (Receiver.ack calls it under its lock;
        the network thread for other partitions' messages, without: it only writes.)"""
        self._send(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]))

    def _drop(self) -> None:
        with self._send_lock:
            if self._sock is not None:
                self._break(self._sock)

    @staticmethod
    def _break(sock: link.Stream) -> None:
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

    def _open(self) -> tuple[link.Stream, link.Reader]:
        cfg = self._settings
        sock, reader, connack = link.connect(cfg, mqtt5.ConnectPacket(
            cfg.client_id, username=cfg.username, password=link.password(cfg),
            clean_start=False, keep_alive=cfg.keepalive_s,
            session_expiry_interval=cfg.session_expiry_s,
            receive_max=min(self._window.max_messages, 65535)))
        self._connected(connack.session_present)
        with self._send_lock:
            self._sock = sock
            self._last_sent = time.monotonic()
        self._send(mqtt5.SubscribePacket(1, [
            mqtt5.TopicFilter(topic, max_qos=mqtt5.QoS.AT_LEAST_ONCE)
            for topic in self._topics]).write())
        return sock, reader

    def _serve(self, sock: link.Stream, reader: link.Reader) -> None:
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
                self._send_acks(others)
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
