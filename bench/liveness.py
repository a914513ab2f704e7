#!/usr/bin/env python
"""Liveness flush and maintenance check at the size of one street office.

    .venv/bin/python bench/liveness.py [--smoke 18064] [--cameras 3673] [--unknown 1000]

Starts a private, durable PostgreSQL (fsync on) through runtime.localsvc, migrates it,
registers the devices (provisioned), and times, on one connection:

    observe   LivenessTracker.observe of one status per device plus 2% condition events
              and one message per unknown id (the cost ingest's writer thread pays)
    flush 1   every device heard for the first time: device_status inserts, provisioned ->
              active with a history row each, conditions, quarantine inserts
    flush 2+  the steady state: every device heard again, all updates (median of 5)
    check     monitor check: cold (every camera silent: thousands of tickets opened), then
              steady (nothing to do; median of 5)

The last line printed is always:
    RESULT devices=<n> observe_us_per_msg=<x> flush_first_s=<x> flush_steady_s=<x>
           check_open_s=<x> check_steady_s=<x>            (one line)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from devices.monitor import check  # noqa: E402
from ingest.liveness import LivenessTracker  # noqa: E402
from protocol.decode import Decoder  # noqa: E402
from runtime import migrate  # noqa: E402
from runtime.localsvc import Postgres, make_state_dir  # noqa: E402
from runtime.settings import DatabaseSettings, DevicesSettings  # noqa: E402
from simulators import messages as m  # noqa: E402


def register(conn: psycopg.Connection, smoke: int, cameras: int) -> list[tuple[str, str]]:
    buildings = max(1, smoke // 5)
    conn.execute("INSERT INTO street_offices VALUES ('S1', 'street')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO communities VALUES (%s, 'S1', 'community')",
                        [(f"C{i}",) for i in range(10)])
        cur.executemany("INSERT INTO grids (id, community_id, name) VALUES (%s, %s, 'grid')",
                        [(f"G{i}", f"C{i % 10}") for i in range(100)])
        cur.executemany("INSERT INTO workers (id, name, role) VALUES (%s, 'tech',"
                        " 'field_technician')", [(f"W{i}",) for i in range(50)])
        cur.executemany("INSERT INTO worker_areas (worker_id, grid_id) VALUES (%s, %s)",
                        [(f"W{i % 50}", f"G{i}") for i in range(100)])
        with cur.copy("COPY buildings (id, grid_id, address, lat, lon, floors, use)"
                      " FROM STDIN") as copy:
            for i in range(buildings):
                copy.write_row((f"B{i}", f"G{i % 100}", "lane", 22.5, 114.1, 6, "rental"))
        devices = [(f"SD-{i:06d}", "smoke_detector") for i in range(smoke)]
        devices += [(f"CAM-{i:06d}", "camera") for i in range(cameras)]
        with cur.copy("COPY devices (id, kind, building_id, heartbeat_s, password_hash,"
                      " password_salt) FROM STDIN") as copy:
            for n, (device_id, kind) in enumerate(devices):
                copy.write_row((device_id, kind, f"B{n % buildings}",
                                60 if kind == "camera" else 3600, "ab", "cd"))
    return devices


def messages(devices: list[tuple[str, str]], unknown: int, received_ms: int, seq: int) -> list:
    decoder = Decoder(prefix="fg/v1", max_payload_bytes=65536, max_future_skew_s=300,
                      max_age_days=30)
    out = []
    for n, (device_id, kind) in enumerate(devices):
        body = (m.camera_status(seq, received_ms) if kind == "camera"
                else m.smoke_status(seq, received_ms, battery_pct=15 if n % 50 == 0 else 80))
        out.append(decoder.decode(f"fg/v1/{device_id}/telemetry", m.encode(body), received_ms))
        if n % 50 == 1:
            event = m.event("tamper", seq + 1, received_ms, state="removed")
            out.append(decoder.decode(f"fg/v1/{device_id}/event", m.encode(event), received_ms))
    for i in range(unknown):
        body = m.smoke_status(seq, received_ms)
        out.append(decoder.decode(f"fg/v1/STRAY-{i:05d}/telemetry", m.encode(body),
                                  received_ms))
    return out


def timed_flush(conn: psycopg.Connection, tracker: LivenessTracker, items: list) -> float:
    tracker.observe(items)
    started = time.perf_counter()
    tracker.flush(conn, source="bench")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", type=int, default=18_064)
    parser.add_argument("--cameras", type=int, default=3_673)
    parser.add_argument("--unknown", type=int, default=1_000)
    args = parser.parse_args()

    server = Postgres(make_state_dir("fg-bench-liveness-"), durable=True).start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        migrate.migrate(DatabaseSettings(url=server.url("bench"), timescale="off"))
        with psycopg.connect(server.url("bench"), autocommit=True) as conn:
            devices = register(conn, args.smoke, args.cameras)
            settings = DevicesSettings()
            tracker = LivenessTracker(settings)
            now_ms = time.time_ns() // 1_000_000

            items = messages(devices, args.unknown, now_ms, 1)
            count = sum(len(i.readings) + len(i.events) for i in items)
            started = time.perf_counter()
            tracker.observe(items)
            observe_us = (time.perf_counter() - started) / count * 1e6
            tracker = LivenessTracker(settings)
            first = timed_flush(conn, tracker, items)
            print(f"observe: {observe_us:.2f} us/message ({count} messages, "
                  f"{len(devices)} devices, {args.unknown} unknown)")
            print(f"flush 1 (first heard, activations): {first:.3f} s")

            steady = []
            for seq in range(2, 7):
                received = now_ms + seq * 60_000
                steady.append(timed_flush(conn, tracker, messages(devices, args.unknown,
                                                                  received, seq * 2)))
            print("flush 2..6 (all updates): " + ", ".join(f"{t:.3f}" for t in steady) + " s")

            # Every camera silent 10 minutes after its last keepalive: tickets for all.
            later = datetime.fromtimestamp(now_ms / 1000 + 6 * 60 + 600, UTC)
            conn.execute("UPDATE ingest_heartbeats SET since = %s, flushed_at = %s",
                         [later - timedelta(days=1), later])
            started = time.perf_counter()
            report = check(conn, later, settings)
            cold = time.perf_counter() - started
            print(f"check, opening {report.opened}: {cold:.3f} s")
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                check(conn, later, settings)
                runs.append(time.perf_counter() - started)
            print("check, steady: " + ", ".join(f"{t:.3f}" for t in runs) + " s")
    finally:
        server.destroy()
    print(f"RESULT devices={len(devices)} observe_us_per_msg={observe_us:.2f} "
          f"flush_first_s={first:.3f} flush_steady_s={statistics.median(steady):.3f} "
          f"check_open_s={cold:.3f} check_steady_s={statistics.median(runs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
