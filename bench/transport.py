"""The per-message cost of ingest's own Python, without a broker or a database:
the consumer's on_message path into a real bounded Window (and out again), and the decoder.

    .venv/bin/python bench/transport.py            # 300,000 messages, a few seconds

Prints a table and, last, `RESULT on_message_us=<x> decode_us=<x>`. docs/benchmarks.md
quotes it beside the end-to-end drain of bench/ingest.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

# As a script, bench/ is sys.path[0], where bench/simulators.py would hide the package.
REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)

from protocol.decode import Decoder  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from simulators import messages as m  # noqa: E402
from transport.mqtt import Consumer  # noqa: E402
from transport.window import Window  # noqa: E402


class _Link:
    """What on_message touches of paho's client: the ping timer."""
    _ping_t = 0.0


def on_message_us(n: int) -> float:
    window = Window(batch_max=1000, max_age_s=0.05, max_messages=n + 1, max_bytes=2**40)
    consumer = Consumer(load_settings(None, mqtt={"client_id": "bench"}).mqtt, window,
                        service="bench")
    batch = []
    for i in range(1000):
        msg = mqtt.MQTTMessage(mid=i + 1, topic=b"fg/v1/SD-000123/telemetry")
        msg.qos, msg.payload = 1, m.encode(m.smoke_status(i))
        batch.append(msg)
    link = _Link()
    started = time.perf_counter()
    for _ in range(n // len(batch)):
        for msg in batch:
            consumer._on_message(link, None, msg)   # type: ignore[arg-type]
        consumer.ack(window.take_now())             # not connected: releases, sends nothing
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
    receive, decode = on_message_us(n), decode_us(n)
    print(f"{'per message, ' + format(n, ',') + ' messages':<46} {'us':>8}")
    print(f"{'on_message -> Window.put, take, ack/release':<46} {receive:8.2f}")
    print(f"{'Decoder.decode (smoke_status -> Reading)':<46} {decode:8.2f}")
    print(f"RESULT on_message_us={receive:.2f} decode_us={decode:.2f}")


if __name__ == "__main__":
    main()
