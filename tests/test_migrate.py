"""Migrations against a real PostgreSQL, on both flavours (conftest's `pg_flavour`):
idempotent, serialised, the hourly summary answering on either path."""

from __future__ import annotations

import threading

import psycopg

from runtime import migrate
from runtime.settings import DatabaseSettings


def _expected_flavour(pg_flavour: str, flavour: str) -> bool:
    if pg_flavour == "timescale":
        return flavour.startswith("timescaledb 2.")
    return flavour == "postgresql"


def test_migrate_is_idempotent_and_records_versions(db_url, db, pg_flavour):
    report = migrate.migrate(DatabaseSettings(url=db_url))  # template is already migrated
    assert report.applied == []
    assert _expected_flavour(pg_flavour, report.flavour), report.flavour
    assert report.changes == ()     # policies already follow the settings
    assert migrate.current_version(db) == max(v for v, _, _ in migrate._migration_files())


def test_concurrent_migrators_apply_each_migration_once(pg_server, pg_flavour):
    url = pg_server.url("fg_concurrent")
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fg_concurrent")
        conn.execute("CREATE DATABASE fg_concurrent")
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(migrate.migrate(DatabaseSettings(url=url)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(len(r.applied) for r in reports)[-1] == len(migrate._migration_files())
    assert sum(len(r.applied) for r in reports) == len(migrate._migration_files())
    assert all(_expected_flavour(pg_flavour, r.flavour) for r in reports)


def test_the_hourly_summary_answers_on_either_path(db):
    """A plain view on PostgreSQL; on TimescaleDB the continuous aggregate, whose real-time
    part answers for hours not materialised yet."""
    db.execute("INSERT INTO readings (device_id, ts, seq, kind, received_at, temperature_c)"
               " VALUES ('SD-1', '2026-01-01 10:05+00', 1, 'smoke', now(), 20),"
               "        ('SD-1', '2026-01-01 10:35+00', 2, 'smoke', now(), 30)")
    row = db.execute("SELECT samples, avg_temperature_c, max_temperature_c FROM readings_hourly"
                     " WHERE device_id = 'SD-1'").fetchone()
    assert row == (2, 25.0, 30.0)
