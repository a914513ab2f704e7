"""One device's MQTT connection on asyncio: the Link the engine publishes through.

A lean MQTT 3.1.1 client, just what a device does: CONNECT with its id and password (clean
session: firmware resends from its own queue, simulators.uplink), QoS 1 PUBLISH, PUBACK,
PINGREQ. No thread per device and no client library: a connection is two small objects and
one reader task, so thousands fit in one process (paho-mqtt's thread per client does not
scale that far, and aiomqtt is not a dependency).

Errors never escape into the engine: a refused or failed connect reports done(False), a
dropped connection calls on_lost, and both are counted in `LinkCounters` for the progress line.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

from simulators.topology import DeviceSpec

CONNECT, CONNACK, PUBACK, PINGREQ, PINGRESP = 0x10, 0x20, 0x40, b"\xc0\x00", 0xD0
DISCONNECT = b"\xe0\x00"


@dataclass
class LinkCounters:
    connect_errors: int = 0     # refused (bad credentials) or unreachable broker
    lost: int = 0               # an open connection dropped without us closing it
    last_error: str = ""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None,
                   keepalive_s: int) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + utf8(client_id)
    if username:
        body += utf8(username)
        if password:
            body += utf8(password)
    return bytes([CONNECT]) + varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, pid: int) -> bytes:
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join((b"\x32", varint(body_len), struct.pack("!H", len(topic)), topic,
                     struct.pack("!H", pid), payload))


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, mult = 0, 1
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * mult
        if byte < 0x80:
            break
        mult <<= 7
    return first, await reader.readexactly(length) if length else b""


class MqttLink:
    def __init__(self, spec: DeviceSpec, on_lost: Callable[[], None], *, host: str, port: int,
                 slots: asyncio.Semaphore, counters: LinkCounters, keepalive_s: int = 60,
                 timeout_s: float = 10, use_credentials: bool = True,
                 source_addr: str | None = None) -> None:
        self.spec = spec
        self.on_lost = on_lost
        self.host, self.port = host, port
        self.slots = slots              # bounds connection attempts in progress at once
        self.counters = counters
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.use_credentials = use_credentials
        self.source_addr = source_addr   # a local address to bind to (127.0.0.2, ...)
        self.writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._connect_task: asyncio.Task | None = None
        self._acks: dict[int, Callable[[], None]] = {}
        self._next_pid = 1

    @property
    def open(self) -> bool:
        return self.writer is not None

    def connect(self, done: Callable[[bool], None]) -> None:
        self._connect_task = asyncio.get_running_loop().create_task(self._connect(done))

    async def _connect(self, done: Callable[[bool], None]) -> None:
        try:
            async with self.slots:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port,
                        local_addr=(self.source_addr, 0) if self.source_addr else None),
                    self.timeout_s)
                user = self.spec.id if self.use_credentials else None
                writer.write(connect_packet(self.spec.id, user, self.spec.password,
                                            self.keepalive_s))
                first, body = await asyncio.wait_for(read_packet(reader), self.timeout_s)
                if first != CONNACK or len(body) < 2 or body[1] != 0:
                    writer.close()
                    raise ConnectionRefusedError(f"CONNACK code {body[1:2].hex() or '?'}")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            self.counters.connect_errors += 1
            self.counters.last_error = f"{self.spec.id}: {exc!r}"[:200]
            done(False)
            return
        self.writer = writer
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        done(True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first, body = await read_packet(reader)
                if first == PUBACK:
                    callback = self._acks.pop(struct.unpack("!H", body[:2])[0], None)
                    if callback:
                        callback()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if self.writer is not None:      # not closed by us: the broker or network dropped it
            self.counters.lost += 1
            self.counters.last_error = f"{self.spec.id}: connection lost"
            self._teardown()
            self.on_lost()

    def publish(self, topic: str, payload: bytes, qos: int, on_ack: Callable[[], None]) -> None:
        if self.writer is None:
            return   # lost a moment ago: on_lost has requeued or is about to
        pid = self._next_pid
        self._next_pid = pid % 65535 + 1
        self._acks[pid] = on_ack
        self.writer.write(publish_packet(topic.encode(), payload, pid))

    def ping(self) -> None:
        if self.writer is not None:
            self.writer.write(PINGREQ)

    def close(self) -> None:
        if self._connect_task and not self._connect_task.done():
            self._connect_task.cancel()
        if self.writer is not None:
            try:
                self.writer.write(DISCONNECT)
            except (OSError, RuntimeError):
                pass
        self._teardown()

    def _teardown(self) -> None:
        writer, self.writer = self.writer, None
        self._acks.clear()
        if writer is not None:
            writer.close()
        if self._reader_task and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
