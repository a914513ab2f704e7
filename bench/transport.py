"""The per-message cost of ingest's own Python, without a broker or a database:
the MQTT 5 session's read path (recv'd bytes -> mqtt5 codec -> Receiver -> a real bounded
Window, and out again with the batch's PUBACKs), and the decoder.

    .venv/bin/python bench/transport.py            # 300,000 messages, a few seconds

Prints a table and, last, `RESULT read_us=<x> decode_us=<x>`. docs/benchmarks.md quotes it
beside the end-to-end drain of bench/ingest.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mqtt5

# As a script, bench/ is sys.path[0], where bench/simulators.py would hide the package.
REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)

from protocol.decode import Decoder  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from simulators import messages as m  # noqa: E402
from transport.link import Reader  # noqa: E402
from transport.mqtt import Consumer  # noqa: E402
from transport.window import Window  # noqa: E402


class _Socket:
    """What the reader touches of a socket: recv() hands out the same 1,000 packets."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def recv(self, size: int) -> bytes:
        return self._data


def read_us(n: int) -> float:
    window = Window(batch_max=1000, max_age_s=0.05, max_messages=n + 1, max_bytes=2**40)
    consumer = Consumer(load_settings(None, mqtt={"client_id": "bench"}).mqtt, window,
                        service="bench")
    data = b"".join(mqtt5.PublishPacket(
        "fg/v1/SD-000123/telemetry", m.encode(m.smoke_status(i)),
        qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=i + 1).write() for i in range(1000))
    reader = Reader(_Socket(data))  # type: ignore[arg-type]
    publish, arrived = mqtt5.PublishPacket, consumer._arrived
    started = time.perf_counter()
    for _ in range(n // 1000):
        for packet in reader.some():          # the loop of Consumer._serve
            if type(packet) is publish:
                arrived(packet.topic, packet.payload, packet.packet_id or 0, packet.qos.value)
        consumer.ack(window.take_now())        # not connected: releases, sends nothing
    return (time.perf_counter() - started) / n * 1e6


def decode_us(n: int) -> float:
    decoder = Decoder(prefix="fg/v1", max_payload_bytes=65536, max_future_skew_s=300,
                      max_age_days=30)
    now = m.now_ms()
    batch = [(m.topic(f"SD-{i:06d}", "telemetry"), m.encode(m.smoke_status(i, now)))
             for i in range(1000)]
    started = time.perf_counter()
    for _ in range(n // len(batch)):
        for topic, payload in batch:
            decoder.decode(topic, payload, now)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", "-n", type=int, default=300_000)
    n = parser.parse_args().messages
    receive, decode = read_us(n), decode_us(n)
    print(f"{'per message, ' + format(n, ',') + ' messages':<46} {'us':>8}")
    print(f"{'recv bytes -> mqtt5 -> Window.put, take, ack':<46} {receive:8.2f}")
    print(f"{'Decoder.decode (smoke_status -> Reading)':<46} {decode:8.2f}")
    print(f"RESULT read_us={receive:.2f} decode_us={decode:.2f}")


if __name__ == "__main__":
    main()
