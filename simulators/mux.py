"""Multiplexed load mode: many devices' messages over a few shared MQTT connections.

    engine ─► MuxLink (one per device: its topics, its seq, its acks; no socket)
                 │ publish(topic, payload, on_ack)
                 ▼
              MuxConnection (a few: asyncio.Protocol, no reader task, no StreamReader)
                 │ PUBLISH packets appended to one list, written in one transport.write per
                 │ loop turn; up to `window` unacknowledged, the rest wait in order
                 ▼
              broker ─► PUBACKs parsed out of whatever data_received hands over (big
                        buffers, packets may straddle them): pid ─► the device's on_ack

The approach of bench/mqttraw.py (pipelined QoS 1, acknowledgements counted from big
receive buffers), but inside the simulation: every message still comes from its device
model with its own ts and seq, the engine still writes the ground truth at the first
publish, and an acknowledgement still reaches the device's uplink, so resends, buffers and
the truth's `unacked` records mean the same as in per-device mode.

What it gives up is realism at the broker: the connections log in with the settings' MQTT
account (mqtt.username, or anonymous), not as the devices, so a broker that enforces
per-device ACLs refuses the devices' topics unless that account may publish there (a
service account). Use per-device mode to exercise credentials and ACLs.

A shared connection lost: every device on it is told (on_lost) and reconnects through its
uplink's backoff, which waits for the shared connection to come back (it retries every
`retry_s`).
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import cast

from simulators.mqtt import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    ConnackRefused,
    LinkCounters,
    connect_cause,
    connect_packet,
    varint,
)
from simulators.topology import DeviceSpec

_PID = struct.Struct("!H")


class MuxConnection(asyncio.Protocol):
    def __init__(self, index: int, *, host: str, port: int, client_id: str,
                 username: str | None, password: str | None, keepalive_s: int,
                 window: int, counters: LinkCounters, retry_s: float = 1.0) -> None:
        if not 0 < window < 65535:
            raise ValueError("window must leave packet ids free (1..65534)")
        self.index = index
        self.host, self.port = host, port
        self.client_id, self.username, self.password = client_id, username, password
        self.keepalive_s = keepalive_s
        self.window = window
        self.counters = counters
        self.retry_s = retry_s
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.closing = False
        self.members: set[MuxLink] = set()
        self.waiting: list[tuple[MuxLink, Callable[[bool], None]]] = []
        self.acks: dict[int, Callable[[], None]] = {}
        # (topic, payload, on_ack) waiting for room in the window
        self.queued: deque[tuple[bytes, bytes, Callable[[], None]]] = deque()
        self.sent = 0
        self.acked = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._buf = bytearray()
        self._pid = 0
        self._connack: asyncio.Future[int] | None = None   # the CONNACK's return code
        self._task: asyncio.Task[None] | None = None

    # --- connecting ---

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect_loop())

    async def _connect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            self._connack = loop.create_future()
            try:
                await asyncio.wait_for(loop.create_connection(lambda: self, self.host, self.port),
                                       10)
                # Set by connection_made, which create_connection calls before it returns.
                assert self.transport is not None
                self.transport.write(connect_packet(self.client_id, self.username,
                                                    self.password, self.keepalive_s))
                code = await asyncio.wait_for(self._connack, 10)
                if code != 0:
                    raise ConnackRefused(f"{code:02x}")
            except (TimeoutError, OSError) as exc:
                self.counters.connect_failed(
                    connect_cause(exc, "connack" if self.transport else "tcp"),
                    f"{self.client_id}: {exc!r}")
                if self.transport is not None:
                    self.transport.abort()
                self._fail_waiting()
                await asyncio.sleep(self.retry_s)
                continue
            self.ready = True
            waiting, self.waiting = self.waiting, []
            for link, done in waiting:
                link._joined(done)
            return

    def _fail_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for _, done in waiting:
            done(False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection makes a stream transport (BaseProtocol's type is the base class).
        self.transport = cast(asyncio.Transport, transport)
        self._buf.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        was_ready, self.ready = self.ready, False
        self.transport = None
        self.acks.clear()
        self.queued.clear()
        self._out.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionResetError("closed before CONNACK"))
        if self.closing or not was_ready:
            return
        self.counters.lost += 1
        self.counters.last_error = f"{self.client_id}: connection lost"
        members, self.members = self.members, set()
        for link in members:
            link._lost()
        self.start()

    # --- receiving: the broker sends a publisher only CONNACK, PUBACK and PINGRESP ---

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n, pos = len(buf), 0
        acks = self.acks
        while pos + 2 <= n:
            first, length = buf[pos], buf[pos + 1]
            if length & 0x80:      # nothing we expect is that long: skip it properly
                i, mult, length = pos + 1, 1, 0
                while i < n:
                    byte = buf[i]
                    i += 1
                    length += (byte & 0x7F) * mult
                    mult <<= 7
                    if byte < 0x80:
                        break
                else:
                    break
                start = i
            else:
                start = pos + 2
            end = start + length
            if end > n:
                break
            if first == PUBACK:
                callback = acks.pop((buf[start] << 8) | buf[start + 1], None)
                if callback is not None:
                    self.acked += 1
                    callback()
            elif first == CONNACK and self._connack is not None and not self._connack.done():
                self._connack.set_result(buf[start + 1] if length >= 2 else 255)
            pos = end
        if pos:
            del buf[:pos]
        while self.queued and len(acks) < self.window and self.ready:
            self._send(*self.queued.popleft())

    # --- publishing ---

    def publish(self, topic: bytes, payload: bytes, on_ack: Callable[[], None]) -> None:
        if not self.ready:
            return
        if len(self.acks) >= self.window or self.queued:
            self.queued.append((topic, payload, on_ack))
            return
        self._send(topic, payload, on_ack)

    def _send(self, topic: bytes, payload: bytes, on_ack: Callable[[], None]) -> None:
        acks = self.acks
        pid = self._pid % 65535 + 1
        while pid in acks:            # still in flight from the last time round
            pid = pid % 65535 + 1
        self._pid = pid
        acks[pid] = on_ack
        body_len = 4 + len(topic) + len(payload)
        self._out.append(b"".join((b"\x32", varint(body_len), _PID.pack(len(topic)), topic,
                                   _PID.pack(pid), payload)))
        self.sent += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def ping(self) -> None:
        if self.ready and self.transport is not None:
            self.transport.write(PINGREQ)

    def close(self) -> None:
        self.closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._flush()
        if self.transport is not None:
            self.transport.write(DISCONNECT)
            self.transport.close()
        self.ready = False


class MuxLink:
    """One device's Link over a shared connection (simulators.uplink.Link)."""

    __slots__ = ("spec", "on_lost", "conn", "open")

    def __init__(self, spec: DeviceSpec, on_lost: Callable[[], None], conn: MuxConnection) -> None:
        self.spec, self.on_lost, self.conn = spec, on_lost, conn
        self.open = False

    def connect(self, done: Callable[[bool], None]) -> None:
        if self.conn.ready:
            self._joined(done)
        else:
            self.conn.waiting.append((self, done))

    def _joined(self, done: Callable[[bool], None]) -> None:
        self.open = True
        self.conn.members.add(self)
        done(True)

    def _lost(self) -> None:
        if self.open:
            self.open = False
            self.on_lost()

    def publish(self, topic: str, payload: bytes, qos: int, on_ack: Callable[[], None]) -> None:
        if self.open:
            self.conn.publish(topic.encode(), payload, on_ack)

    def close(self) -> None:
        # The device goes away (its network is down, or the run ends); the shared
        # connection stays. A PUBACK for something it sent still reaches its uplink: the
        # broker has the message, which is what the truth records.
        self.open = False
        self.conn.members.discard(self)
        self.conn.waiting = [(link, done) for link, done in self.conn.waiting if link is not self]


class Mux:
    """The shared connections, and which device goes over which."""

    def __init__(self, connections: int, *, host: str, port: int, client_prefix: str,
                 username: str | None, password: str | None, keepalive_s: int,
                 counters: LinkCounters, window: int = 16000) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.conns = [MuxConnection(i, host=host, port=port, client_id=f"{client_prefix}-{i}",
                                    username=username, password=password,
                                    keepalive_s=keepalive_s, window=window, counters=counters)
                      for i in range(connections)]
        self._next = 0

    def start(self) -> None:
        for conn in self.conns:
            conn.start()

    def link(self, spec: DeviceSpec, on_lost: Callable[[], None]) -> MuxLink:
        conn = self.conns[self._next % len(self.conns)]
        self._next += 1
        return MuxLink(spec, on_lost, conn)

    def ping(self) -> None:
        for conn in self.conns:
            conn.ping()

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.conns)

    @property
    def acked(self) -> int:
        return sum(c.acked for c in self.conns)
