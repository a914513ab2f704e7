"""simulators.mqtt's connects, one by one: a connection from a source address gets its port
at connect() (IP_BIND_ADDRESS_NO_PORT: the 100,000-connection ramp stalled in bind()
without it), and every failed connect is counted by its cause and leaves no socket open."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

import pytest

from simulators.mqtt import (
    IP_BIND_ADDRESS_NO_PORT,
    ConnackRefused,
    LinkCounters,
    MqttLink,
    connect_cause,
    open_stream,
)
from simulators.topology import DeviceSpec

SPEC = DeviceSpec("SD000001", "smoke_detector", "B00001", 1, "C1", 3600, password="pw")


def test_connect_causes_are_named():
    assert connect_cause(TimeoutError(), "tcp") == "timeout_tcp"
    assert connect_cause(TimeoutError(), "connack") == "timeout_connack"
    assert connect_cause(asyncio.IncompleteReadError(b"", 4), "connack") == "closed"
    assert connect_cause(ConnackRefused("05"), "connack") == "connack_05"
    assert connect_cause(ConnectionRefusedError(errno.ECONNREFUSED, "x"), "tcp") == "refused"
    assert connect_cause(OSError(errno.EMFILE, "x"), "tcp") == "EMFILE"
    assert connect_cause(OSError(errno.EADDRNOTAVAIL, "x"), "tcp") == "EADDRNOTAVAIL"
    counters = LinkCounters()
    counters.connect_failed("EMFILE", "SD1: too many")
    counters.connect_failed("EMFILE", "SD2: too many")
    counters.connect_failed("timeout_tcp", "SD3: timeout")
    assert counters.connect_errors == 3
    assert counters.connect_causes == {"EMFILE": 2, "timeout_tcp": 1}
    assert counters.last_error == "SD3: timeout"


class Server:
    """A TCP server on 127.0.0.1 that answers CONNECT with `connack` (None: never answers),
    and records each accepted connection's peer and whether the client closed it."""

    def __init__(self, connack: bytes | None) -> None:
        self.connack = connack
        self.peers: list[tuple[str, int]] = []
        self.closed_by_client = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        self.peers.append(writer.get_extra_info("peername"))
        await reader.read(2)
        if self.connack is not None:
            writer.write(self.connack)
        await reader.read()      # returns when the client hangs up
        self.closed_by_client += 1
        writer.close()


async def _connect(port: int, timeout_s: float = 5, source: str | None = None):
    counters = LinkCounters()
    results: list[bool] = []
    link = MqttLink(SPEC, lambda: None, host="127.0.0.1", port=port, slots=asyncio.Semaphore(1),
                    counters=counters, timeout_s=timeout_s, source_addr=source)
    link.connect(results.append)
    await link._connect_task
    return link, counters, results


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket option")
def test_source_address_connection_takes_its_port_at_connect():
    async def main():
        server = Server(b"\x20\x02\x00\x00")
        port = await server.start()
        link, counters, results = await _connect(port, source="127.0.0.3")
        assert results == [True] and counters.connect_errors == 0
        sock = link.writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT) == 1
        assert server.peers[0][0] == "127.0.0.3"
        link.close()
        server.server.close()
    asyncio.run(main())


def test_open_stream_resolves_a_host_name():
    async def main():
        server = Server(None)
        port = await server.start()
        _, writer = await open_stream("localhost", port, "127.0.0.2")
        assert writer.get_extra_info("sockname")[0] == "127.0.0.2"
        writer.close()
        server.server.close()
    asyncio.run(main())


@pytest.mark.parametrize("connack, cause", [(None, "timeout_connack"),
                                            (b"\x20\x02\x00\x05", "connack_05")])
def test_a_failed_login_is_counted_and_its_socket_closed(connack, cause):
    async def main():
        server = Server(connack)
        port = await server.start()
        link, counters, results = await _connect(port, timeout_s=0.3, source="127.0.0.2")
        assert results == [False] and not link.open
        assert counters.connect_causes == {cause: 1}
        # The broker sees the client hang up: the socket was closed, not left on the loop.
        for _ in range(100):
            if server.closed_by_client:
                break
            await asyncio.sleep(0.02)
        assert server.closed_by_client == 1
        server.server.close()
    asyncio.run(main())


def test_nothing_listening_is_refused():
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]     # bound, not listening: the connect is refused
            for source in (None, "127.0.0.2"):
                _, counters, results = await _connect(port, source=source)
                assert results == [False] and counters.connect_causes == {"refused": 1}
    asyncio.run(main())
