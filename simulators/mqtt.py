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
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulators.topology import DeviceSpec

CONNECT, CONNACK, PUBACK, PINGREQ, PINGRESP = 0x10, 0x20, 0x40, b"\xc0\x00", 0xD0
DISCONNECT = b"\xe0\x00"


@dataclass
class LinkCounters:
    connect_errors: int = 0     # refused (bad credentials) or unreachable broker
    lost: int = 0               # an open connection dropped without us closing it
    last_error: str = ""
    # connect_errors by cause (connect_cause): what a stalled ramp of 100,000 connections
    # is diagnosed from.
    connect_causes: dict[str, int] = field(default_factory=dict)

    def connect_failed(self, cause: str, detail: str) -> None:
        self.connect_errors += 1
        self.connect_causes[cause] = self.connect_causes.get(cause, 0) + 1
        self.last_error = detail[:200]


def connect_cause(exc: BaseException, stage: str) -> str:
    """Why a connect failed, as a short name: `timeout_tcp` / `timeout_connack` (no TCP
    handshake, or no CONNACK, within the link's timeout), `refused` (nothing listening),
    `connack_05` (the broker said no: bad credentials...), `closed` (the broker hung up
    before its CONNACK), or the errno's name (`EMFILE`: out of open files, `EADDRNOTAVAIL`:
    out of ephemeral ports, `ECONNRESET`...)."""
    if isinstance(exc, asyncio.TimeoutError):
        return f"timeout_{stage}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed"
    if isinstance(exc, ConnackRefused):
        return f"connack_{exc.code}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


class ConnackRefused(ConnectionRefusedError):
    def __init__(self, code: str) -> None:
        super().__init__(f"CONNACK code {code}")
        self.code = code


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


# Linux: bind() fixes the address only; connect() picks the port, unique per 4-tuple (not in
# Python's socket module before 3.12).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def open_stream(host: str, port: int, source_addr: str | None = None,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP stream to host:port, from source_addr if given.

    Not open_connection(local_addr=...): that binds to (source_addr, 0), and bind() must find
    a port free of every other socket bound to it, a search through the kernel's bind table
    that grows with every connection. At ~14,000 connections per address it took most of
    the CPU (perf: inet_bhash2_conflict, inet_bind2_bucket_find), the loop stalled in bind()
    and connects timed out by the thousand. With IP_BIND_ADDRESS_NO_PORT the port is chosen
    at connect() time, only needing to be unique towards this broker: ~28,000 per source
    address, at no cost."""
    if not source_addr:
        return await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ipaddress.ip_address(source_addr).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        except OSError:
            pass    # not Linux: bind() picks the port, as before
        sock.bind((source_addr, 0))
        await loop.sock_connect(sock, await _resolve(host, port, family))
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


# (host, port, family) -> the address sock_connect takes: (ip, port), or for IPv6 (ip, port,
# flowinfo, scope_id), as getaddrinfo gives it.
_resolved: dict[tuple[str, int, int], tuple[Any, ...]] = {}


async def _resolve(host: str, port: int, family: int) -> tuple[Any, ...]:
    key = (host, port, family)
    if key not in _resolved:
        try:
            ipaddress.ip_address(host)
            _resolved[key] = (host, port)
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM)
            if not infos:
                raise OSError(errno.EADDRNOTAVAIL,
                              f"{host}: no address of this family") from None
            _resolved[key] = infos[0][4]
    return _resolved[key]


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
        self._reader_task: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._acks: dict[int, Callable[[], None]] = {}
        self._next_pid = 1

    @property
    def open(self) -> bool:
        return self.writer is not None

    def connect(self, done: Callable[[bool], None]) -> None:
        self._connect_task = asyncio.get_running_loop().create_task(self._connect(done))

    async def _connect(self, done: Callable[[bool], None]) -> None:
        writer = None
        stage = "tcp"
        try:
            async with self.slots:
                reader, writer = await asyncio.wait_for(
                    open_stream(self.host, self.port, self.source_addr), self.timeout_s)
                stage = "connack"
                user = self.spec.id if self.use_credentials else None
                writer.write(connect_packet(self.spec.id, user, self.spec.password,
                                            self.keepalive_s))
                first, body = await asyncio.wait_for(read_packet(reader), self.timeout_s)
                if first != CONNACK or len(body) < 2 or body[1] != 0:
                    raise ConnackRefused(body[1:2].hex() or "?")
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            if writer is not None:
                # Close what was opened: a socket left open here stays registered with the
                # loop for good, an open file in us and a client in the broker.
                writer.close()
            self.counters.connect_failed(connect_cause(exc, stage), f"{self.spec.id}: {exc!r}")
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
