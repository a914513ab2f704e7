"""A minimal MQTT 3.1.1 / 5 client on a plain socket, for the benchmarks only.

Two jobs, both as fast as Python can go, so they measure the broker and not a client library:

    drain()    count-only subscriber: persistent session, QoS 1, parses PUBLISH packets out of
               one big recv buffer (packets may straddle recv boundaries) and answers every
               recv with one sendall of all its PUBACKs. "The broker ceiling". codec="raw"
               parses inline in Python (MQTT 3.1.1 or 5); codec="mqtt5" reads and writes
               every packet with the `mqtt5` package (0.8, a Rust sans-IO codec; MQTT 5
               only), the codec issue 18 builds firegrid's transport on.
    Publisher  QoS 1 publisher that pipelines PUBLISHes (up to `window` unacknowledged) and
               counts PUBACKs; used to fill the broker's queue and to drive the live run.

Not a general client: no QoS 2, no TLS, no keepalive (keepalive 0), no reconnect, no
retained-message or property handling beyond what the broker sends us and we skip.
A module of bench/ingest.py (`from bench import mqttraw`), not a script of its own.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence

# The simulators' MQTT encoding, shared so the two raw clients cannot drift apart.
from simulators.mqtt import publish_packet, utf8, varint

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGRESP, DISCONNECT = 0x82, 0x90, 0xD0, 0xE0


class ProtocolError(RuntimeError):
    pass


# --- encoding ---------------------------------------------------------------------------

def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id: str, *, version: int, clean: bool, session_expiry: int = 0,
                   receive_max: int = 0, keepalive: int = 0) -> bytes:
    flags = 0x02 if clean else 0x00
    body = utf8("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        props = b""
        if session_expiry:
            props += b"\x11" + struct.pack("!I", session_expiry)
        if receive_max:
            props += b"\x21" + struct.pack("!H", receive_max)
        body += varint(len(props)) + props
    return packet(CONNECT, body + utf8(client_id))


def subscribe_packet(filters: Sequence[str], *, version: int, pid: int = 1) -> bytes:
    body = struct.pack("!H", pid) + (b"\x00" if version == 5 else b"")
    for f in filters:
        body += utf8(f) + b"\x01"  # QoS 1
    return packet(SUBSCRIBE, body)


# --- decoding ---------------------------------------------------------------------------

def split_packet(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """(first byte, body start, body end) of the packet at pos, or None if incomplete."""
    n = len(buf)
    if pos + 2 > n:
        return None
    i, mult, length = pos + 1, 1, 0
    while True:
        if i >= n:
            return None
        byte = buf[i]
        i += 1
        length += (byte & 0x7F) * mult
        if byte < 0x80:
            break
        mult <<= 7
        if mult > 128 ** 3:
            raise ProtocolError("remaining length longer than 4 bytes")
    end = i + length
    return (buf[pos], i, end) if end <= n else None


class Connection:
    def __init__(self, host: str, port: int, *, version: int = 5, timeout: float = 30) -> None:
        if version not in (4, 5):
            raise ValueError("version is 4 (MQTT 3.1.1) or 5")
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.buf = bytearray()

    def read_packet(self) -> tuple[int, bytes]:
        """Blocking read of one whole packet (handshakes only; the hot loops parse inline)."""
        while True:
            found = split_packet(self.buf, 0)
            if found:
                first, start, end = found
                body = bytes(self.buf[start:end])
                del self.buf[:end]
                return first, body
            data = self.sock.recv(65536)
            if not data:
                raise ProtocolError("broker closed the connection")
            self.buf += data

    def handshake(self, client_id: str, *, clean: bool, session_expiry: int = 0,
                  receive_max: int = 0) -> bool:
        """CONNECT and wait for CONNACK; returns the session-present flag."""
        self.sock.sendall(connect_packet(client_id, version=self.version, clean=clean,
                                         session_expiry=session_expiry,
                                         receive_max=receive_max))
        first, body = self.read_packet()
        if first != CONNACK or body[1] != 0:
            raise ProtocolError(f"connection refused: packet {first:#x} body {body[:8].hex()}")
        return bool(body[0] & 1)

    def subscribe(self, filters: Sequence[str]) -> None:
        self.sock.sendall(subscribe_packet(filters, version=self.version))
        while True:
            first, body = self.read_packet()
            if first == SUBACK:
                break
            if first >> 4 == 3:
                raise ProtocolError("PUBLISH before SUBACK: subscribe on an empty session")
        codes = body[2:]
        if self.version == 5:
            # skip the SUBACK properties
            plen, i, mult = 0, 2, 1
            while True:
                byte = body[i]
                i += 1
                plen += (byte & 0x7F) * mult
                mult <<= 7
                if byte < 0x80:
                    break
            codes = body[i + plen:]
        if any(c >= 0x80 for c in codes):
            raise ProtocolError(f"subscription refused: {codes.hex()}")

    def disconnect(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.shutdown(socket.SHUT_WR)
            # wait for the broker to close, so the session is stored before we return
            self.sock.settimeout(5)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()


def prepare_session(host: str, port: int, client_id: str, filters: Sequence[str], *,
                    version: int, session_expiry: int) -> None:
    """Create a persistent session with QoS 1 subscriptions, then go away: from now on the
    broker queues for `client_id`."""
    conn = Connection(host, port, version=version)
    conn.handshake(client_id, clean=False, session_expiry=session_expiry)
    conn.subscribe(filters)
    conn.disconnect()


def drop_session(host: str, port: int, client_id: str, *, version: int) -> None:
    """Connect with a clean session and leave: the broker forgets the queue."""
    conn = Connection(host, port, version=version)
    conn.handshake(client_id, clean=True, session_expiry=0)
    conn.disconnect()


def drain(host: str, port: int, client_id: str, target: int, *, version: int = 5,
          receive_max: int = 65535, session_expiry: int = 86400,
          timeout: float = 600, codec: str = "raw",
          on_connack: Callable[[], None] | None = None) -> dict:
    """Count-only subscriber: resume the persistent session and take `target` messages.
    Times are time.monotonic(); t_connack is when the CONNACK arrived, and on_connack is
    called right then."""
    if codec == "mqtt5":
        if version != 5:
            raise ValueError("the mqtt5 codec speaks MQTT 5 only")
        return _drain_mqtt5(host, port, client_id, target, receive_max=receive_max,
                            session_expiry=session_expiry, timeout=timeout,
                            on_connack=on_connack)
    if codec != "raw":
        raise ValueError(f"codec is raw or mqtt5, not {codec!r}")
    conn = Connection(host, port, version=version, timeout=timeout)
    present = conn.handshake(client_id, clean=False, session_expiry=session_expiry,
                             receive_max=receive_max)
    t_connack = time.monotonic()
    if on_connack is not None:
        on_connack()
    wall_connack = time.time()
    sock, buf = conn.sock, conn.buf
    count = dups = 0
    t_first = t_last = None
    recvs = 0
    deadline = t_connack + timeout
    while count < target:
        data = sock.recv(1 << 20)
        if not data:
            raise ProtocolError(f"broker closed the connection after {count} messages")
        recvs += 1
        buf += data
        pos, n = 0, len(buf)
        acks = []
        while True:
            # inline split_packet: this loop is the benchmark
            if pos + 2 > n:
                break
            i, mult, length = pos + 1, 1, 0
            while i < n:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * mult
                if byte < 0x80:
                    break
                mult <<= 7
            else:
                break
            end = i + length
            if end > n:
                break
            first = buf[pos]
            if first >> 4 == 3:
                if (first >> 1) & 3:
                    tlen = (buf[i] << 8) | buf[i + 1]
                    acks.append(b"\x40\x02" + buf[i + 2 + tlen:i + 4 + tlen])
                if first & 0x08:
                    dups += 1
                count += 1
            elif first == DISCONNECT:
                raise ProtocolError("broker sent DISCONNECT")
            pos = end
        if pos:
            del buf[:pos]
        if acks:
            sock.sendall(b"".join(acks))
        now = time.monotonic()
        if t_first is None and count:
            t_first = now
        if now > deadline:
            break
    t_last = time.monotonic()
    conn.disconnect()
    return {"count": count, "dup_flag": dups, "session_present": present, "recvs": recvs,
            "t_connack": t_connack, "t_first": t_first, "t_last": t_last,
            "wall_connack": wall_connack}


def _drain_mqtt5(host: str, port: int, client_id: str, target: int, *, receive_max: int,
                 session_expiry: int, timeout: float,
                 on_connack: Callable[[], None] | None) -> dict:
    """drain() with the `mqtt5` package decoding every packet (mqtt5.read on the buffer)
    and encoding every PUBACK; the socket handling is drain()'s."""
    import mqtt5

    conn = Connection(host, port, version=5, timeout=timeout)
    sock = conn.sock
    sock.sendall(mqtt5.ConnectPacket(client_id, clean_start=False,
                                     session_expiry_interval=session_expiry,
                                     receive_max=receive_max).write())
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ProtocolError("broker closed the connection before CONNACK")
        buf += data
        try:
            connack, used = mqtt5.read(memoryview(buf))
            break
        except IndexError:  # mqtt5: "Not enough bytes"
            continue
    if (not isinstance(connack, mqtt5.ConnAckPacket)
            or connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS):
        raise ProtocolError(f"connection refused: {connack!r}")
    t_connack = time.monotonic()
    if on_connack is not None:
        on_connack()
    wall_connack = time.time()
    buf = buf[used:]
    publish, puback, read = mqtt5.PublishPacket, mqtt5.PubAckPacket, mqtt5.read
    count = dups = recvs = 0
    t_first = None
    deadline = t_connack + timeout
    while count < target:
        data = sock.recv(1 << 20)
        if not data:
            raise ProtocolError(f"broker closed the connection after {count} messages")
        recvs += 1
        view = memoryview(buf + data if buf else data)
        pos, n = 0, len(view)
        acks = []
        while pos < n:
            try:
                pkt, used = read(view[pos:])
            except IndexError:  # the rest of this packet comes with the next recv
                break
            pos += used
            if isinstance(pkt, publish):
                if pkt.qos:
                    acks.append(puback(pkt.packet_id).write())
                if pkt.duplicate:
                    dups += 1
                count += 1
            elif isinstance(pkt, mqtt5.DisconnectPacket):
                raise ProtocolError(f"broker sent DISCONNECT: {pkt.reason_code!r}")
        buf = bytes(view[pos:])
        view.release()
        if acks:
            sock.sendall(b"".join(acks))
        now = time.monotonic()
        if t_first is None and count:
            t_first = now
        if now > deadline:
            break
    t_last = time.monotonic()
    conn.disconnect()
    return {"count": count, "dup_flag": dups, "session_present": connack.session_present,
            "recvs": recvs, "t_connack": t_connack, "t_first": t_first, "t_last": t_last,
            "wall_connack": wall_connack}


class Publisher:
    """Pipelined QoS 1 publisher (MQTT 3.1.1, clean session)."""

    def __init__(self, host: str, port: int, client_id: str, *, window: int = 20000) -> None:
        if not 0 < window < 60000:
            raise ValueError("window must leave packet ids free (1..59999)")
        self.conn = Connection(host, port, version=4)
        self.conn.handshake(client_id, clean=True)
        self.window = window
        self.sent = 0
        self.acked = 0
        self._pid = 0
        self._partial = 0  # bytes of a PUBACK cut by a recv boundary

    def _read_acks(self, block: bool) -> None:
        sock = self.conn.sock
        sock.setblocking(block)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        finally:
            sock.setblocking(True)
        if not data:
            raise ProtocolError("broker closed the connection")
        # The broker sends this client nothing but PUBACKs: 4 bytes each, 0x40 0x02 id id.
        total = self._partial + len(data)
        self.acked += total // 4
        self._partial = total % 4

    def send(self, messages: Iterable[tuple[bytes, bytes]]) -> int:
        """Send one burst (one sendall) of (topic, payload) pairs; returns how many."""
        parts = []
        pid = self._pid
        for topic, payload in messages:
            pid = pid % 65535 + 1
            parts.append(publish_packet(topic, payload, pid))
        self._pid = pid
        while self.sent - self.acked + len(parts) > self.window:
            self._read_acks(block=True)
        self.conn.sock.sendall(b"".join(parts))
        self.sent += len(parts)
        self._read_acks(block=False)
        return len(parts)

    def flush(self, timeout: float = 120) -> None:
        """Wait until every PUBLISH is acknowledged (the broker has queued it)."""
        deadline = time.monotonic() + timeout
        self.conn.sock.settimeout(timeout)
        while self.acked < self.sent:
            if time.monotonic() > deadline:
                raise ProtocolError(f"{self.sent - self.acked} PUBLISHes never acknowledged")
            self._read_acks(block=True)

    def close(self) -> None:
        self.conn.disconnect()
