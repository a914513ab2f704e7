"""The database flavour a benchmark runs on (`--flavour plain|timescale`).

    plain      the system's PostgreSQL, migrated with database.timescale = "off"
    timescale  the PostgreSQL 15 with TimescaleDB that ../shared/timescaledb/install lays out
               (FIREGRID_TIMESCALEDB_INSTALL names another install script), with
               timescaledb preloaded, migrated with database.timescale = "require":
               hypertables, compression, retention, the hourly continuous aggregate

On TimescaleDB the scheduler is off (timescaledb.max_background_workers = 0): a job starting
mid-measurement would time the job, not firegrid, and on this machine's TimescaleDB 2.28.3 /
PostgreSQL 15.20 every background job ends in an error anyway (shared/timescaledb/README).
A benchmark that needs a job's work (the aggregate's refresh, compression) runs it itself
with run_jobs(), as the scheduler would, and says how long it took.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import psycopg

from runtime.localsvc import Postgres

REPO = Path(__file__).resolve().parent.parent
FLAVOURS = ("plain", "timescale")
INSTALL = Path(os.environ.get("FIREGRID_TIMESCALEDB_INSTALL",
                              REPO.parent / "shared" / "timescaledb" / "install"))
SETTINGS = ("shared_preload_libraries=timescaledb", "timescaledb.max_background_workers=0",
            "timescaledb.telemetry_level=off")


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flavour", choices=FLAVOURS, default="plain",
                        help="plain PostgreSQL (default) or TimescaleDB, from"
                             " ../shared/timescaledb/install")


def postgres(base: Path, flavour: str, *, durable: bool) -> Postgres:
    """A private server of that flavour (not started)."""
    if flavour == "plain":
        return Postgres(base, durable=durable)
    if not INSTALL.exists():
        raise SystemExit(f"--flavour timescale: {INSTALL} is not on this machine"
                         " (see ../shared/timescaledb/README)")
    out = subprocess.run([str(INSTALL)], capture_output=True, text=True, check=True,
                         timeout=300)
    bindir = Path(out.stdout.strip().splitlines()[-1])
    return Postgres(base, durable=durable, bindir=bindir, settings=SETTINGS)


def timescale_setting(flavour: str) -> str:
    """database.timescale for that flavour: the benchmark gets what it asked for or fails."""
    return "require" if flavour == "timescale" else "off"


def run_jobs(conn: psycopg.Connection, *procs: str) -> dict[str, float]:
    """CALL run_job for every job running one of `procs` (as the scheduler would), in job
    order; seconds per job, keyed by procedure and table."""
    took: dict[str, float] = {}
    for job_id, proc, table in conn.execute(
            "SELECT job_id, proc_name, coalesce(hypertable_name, '')"
            " FROM timescaledb_information.jobs WHERE proc_name = ANY(%s) ORDER BY job_id",
            [list(procs)]).fetchall():
        started = time.perf_counter()
        conn.execute("CALL run_job(%s)", [job_id])
        took[f"{proc}/{table}"] = time.perf_counter() - started
    return took
