"""One MQTT 5 connection, through the `mqtt5` codec (sans-IO, in Rust): what firegrid's own
sessions share. transport/mqtt.py receives on it (ingest, the alert core);
alerts/publisher.py publishes pages on it.

    sock, reader, connack = connect(settings, ConnectPacket(...))
    reader.some()      the packets one recv() brought (a packet cut in two waits)

`sock` is a Stream: the socket itself, or with settings.tls a transport.tls.TlsStream over
it (the same calls).

Each user keeps its own loop (what to read, when to ping, what a lost connection means);
this is the part that is the same: the TCP connection, CONNECT, the CONNACK and its
refusal, and cutting a byte stream into packets.
"""

from __future__ import annotations

import socket
from typing import Protocol

import mqtt5

from runtime.settings import MqttSettings
from transport import tls

READ = 1 << 18              # bytes per recv(): ~2,000 telemetry messages
CONNECT_TIMEOUT_S = 10.0


class Stream(Protocol):
    """What firegrid's sessions use of a connection: a socket.socket or a tls.TlsStream."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...


class Gone(Exception):
    """The connection ended (closed, refused, timed out or broken by the broker)."""


class Reader:
    """Packets from a socket, as many as one recv() brings; a packet cut in two waits for
    the rest in the buffer."""

    def __init__(self, sock: Stream) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._early: list[mqtt5.Packet] = []   # what came with the CONNACK

    def some(self) -> list[mqtt5.Packet]:
        if self._early:
            early, self._early = self._early, []
            return early
        data = self._sock.recv(READ)
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


def connect(settings: MqttSettings,
            packet: mqtt5.ConnectPacket) -> tuple[Stream, Reader, mqtt5.ConnAckPacket]:
    """A connection the broker accepted: raises Gone when it refuses, OSError when it
    cannot be reached (ssl.SSLError, an OSError, when its certificate is not trusted). The
    connection keeps CONNECT_TIMEOUT_S until the caller sets its own."""
    raw = socket.create_connection((settings.host, settings.port), timeout=CONNECT_TIMEOUT_S)
    sock: Stream = raw
    try:
        # A single alarm, or its page, must not wait for Nagle's timer.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = settings.ssl_context()
        if ctx is not None:
            sock = tls.TlsStream(raw, ctx, settings.host)
            sock.handshake()
        sock.sendall(packet.write())
        reader = Reader(sock)
        connack = reader.one()
        if not isinstance(connack, mqtt5.ConnAckPacket):
            raise Gone(f"expected CONNACK, got {type(connack).__name__}")
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            raise Gone(f"broker refused connection: {connack.reason_code.name}"
                       f" {connack.reason_str or ''}".rstrip())
    except BaseException:
        raw.close()
        raise
    return sock, reader, connack


def password(settings: MqttSettings) -> bytes | None:
    return settings.password.get_secret_value().encode() if settings.password else None
