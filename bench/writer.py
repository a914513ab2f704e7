#!/usr/bin/env python
"""What storing a reading costs PostgreSQL (issue 18): ingest's batch writer on its own.

    .venv/bin/python bench/writer.py                  # 200,000 readings per row, ~1 min
    .venv/bin/python bench/writer.py --flavour timescale

A private, durable PostgreSQL (fsync on; bench/flavour.py for TimescaleDB) and
ingest.writer.BatchWriter in this process, writing --batches batches of --batch readings
(the shape of smoke_status: 16 columns, distinct devices and seqs) three ways, in
interleaved rounds (A B C C B A ...) so that load drift hits them alike:

    staged   COPY into the temp stage, INSERT ... SELECT ... ON CONFLICT DO NOTHING
             (every batch before issue 18; now only after a duplicate)
    direct   COPY straight into readings under a savepoint (the writer's normal path)
    keyless  the same, into a second database whose readings has no primary key: what
             the idempotency key (device_id, ts, seq) costs, i.e. the floor of any
             writer that keeps redeliveries out (issue 18 asks PostgreSQL's CPU halved)

Per row: readings/s and the PostgreSQL server's CPU per reading (postmaster and backends,
from /proc), and this process's. The last line is always
    RESULT staged_pg_us=<x> direct_pg_us=<x> pg_cpu_ratio=<direct/staged> staged_per_s=<n>
           direct_per_s=<n> keyless_pg_us=<x> flavour=<plain|timescale>
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench import flavour  # noqa: E402
from bench.harness import cpu_s, postmaster  # noqa: E402
from ingest import writer as w  # noqa: E402
from protocol.decode import Decoded, Reading  # noqa: E402
from runtime import migrate  # noqa: E402
from runtime.localsvc import make_state_dir  # noqa: E402
from runtime.settings import DatabaseSettings, load_settings  # noqa: E402


def batches(start: int, count: int, size: int) -> list[list[Decoded]]:
    now = int(time.time() * 1000)
    out = []
    for b in range(count):
        rows = [Reading(f"SD-{(start + b * size + i) % 20000:05d}", now - 1000, start + b * size
                        + i, "smoke", now, None, 0.05, 24.5, 87, 3.61, -95, 11.5, 3600, None,
                        None, None) for i in range(size)]
        out.append([Decoded(topic="fg/v1/x/telemetry", payload=b"{}", received_ms=now,
                            readings=rows)])
    return out


def run_row(writer: w.BatchWriter, pid: int, data: list[list[Decoded]], staged: bool
            ) -> tuple[float, float, float]:
    cpu0, me0, t0 = cpu_s(pid), time.process_time(), time.perf_counter()
    for batch in data:
        if staged:
            writer._staged = 1          # the benchmark picks the path
        result = writer.write(batch)
        assert result.readings_stored == len(batch[0].readings), result
    elapsed = time.perf_counter() - t0
    n = sum(len(b[0].readings) for b in data)
    return n / elapsed, (cpu_s(pid) - cpu0) / n * 1e6, (time.process_time() - me0) / n * 1e6


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2, help="A B C C B A rounds")
    flavour.add_argument(p)
    a = p.parse_args(argv)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    pg = flavour.postgres(make_state_dir("fg-bench-writer-"), a.flavour, durable=True)
    try:
        pg.start()
        writers = {}
        for db in ("bench", "keyless"):
            with psycopg.connect(pg.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {db}")
            url = pg.url(db)
            migrate.migrate(DatabaseSettings(url=url, timescale=flavour.timescale_setting(
                a.flavour)))
            if db == "keyless":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("ALTER TABLE readings DROP CONSTRAINT readings_pkey")
            settings = load_settings(None, database={"url": url})
            writers[db] = w.BatchWriter(settings.database, settings.ingest, threading.Event())
            writers[db].write(batches(10**9, 1, 10)[0])         # connect, warm the caches
        url = pg.url("bench")
        pid = postmaster(pg)
        seq = 0
        modes = ("staged", "direct", "keyless")
        figures: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        order = [m for r in range(a.rounds) for m in (modes if r % 2 == 0 else modes[::-1])]
        for mode in order:
            data = batches(seq, a.batches, a.batch)
            seq += a.batches * a.batch
            writer = writers["keyless" if mode == "keyless" else "bench"]
            figures[mode].append(run_row(writer, pid, data, mode == "staged"))
            rate, pg_us, me = figures[mode][-1]
            print(f"{mode:7} {rate:>10,.0f} readings/s  PostgreSQL {pg_us:6.2f} µs/reading  "
                  f"writer {me:6.2f} µs/reading  load {os.getloadavg()[0]:.2f}", flush=True)
        for writer in writers.values():
            writer.close()
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    finally:
        pg.destroy()
    mean = {m: tuple(sum(x[i] for x in v) / len(v) for i in range(3)) for m, v in figures.items()}
    print(f"\nstored {stored:,} readings; means over {a.rounds} rounds:")
    print("| path | readings/s | PostgreSQL CPU µs/reading | writer CPU µs/reading |")
    print("|---|---|---|---|")
    for m, (rate, pg, me) in mean.items():
        print(f"| {m} | {rate:,.0f} | {pg:.2f} | {me:.2f} |")
    print(f"RESULT staged_pg_us={mean['staged'][1]:.2f} direct_pg_us={mean['direct'][1]:.2f} "
          f"pg_cpu_ratio={mean['direct'][1] / mean['staged'][1]:.2f} "
          f"staged_per_s={mean['staged'][0]:.0f} direct_per_s={mean['direct'][0]:.0f} "
          f"keyless_pg_us={mean['keyless'][1]:.2f} flavour={a.flavour}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
