"""Versioned, idempotent schema migrations.

Migrations are the numbered SQL files in runtime/migrations/, each applied once in its own
transaction and recorded in schema_migrations. A session advisory lock serialises concurrent
migrators (several ingest processes starting at once). After the plain migrations, the
TimescaleDB step (runtime/timescale.py) runs when the extension is there and wanted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg

from runtime import timescale
from runtime.db import connect
from runtime.errors import MigrationError
from runtime.settings import DatabaseSettings

log = logging.getLogger(__name__)

_LOCK_KEY = 0x66697265  # "fire"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


# How far a migration run is, for a progress display: (step, done, total, detail). The steps
# are labelled for people, Chinese first: "应用迁移 applying migrations" counts the pending
# migration files (detail: the one being applied, then the last one applied), and
# "TimescaleDB 超表与策略 hypertables and policies" is the TimescaleDB step, 0 of 1 while it
# works (on a large readings table, create_hypertable moves the rows and the hourly aggregate
# is refreshed a month back). Nothing is drawn here: the CLI draws it (runtime has no rich).
Progress = Callable[[str, int, int, str], None]

APPLYING = "应用迁移 applying migrations"
TIMESCALE = "TimescaleDB 超表与策略 hypertables and policies"


def _quiet(step: str, done: int, total: int, detail: str) -> None:
    pass


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    flavour: str  # "timescaledb X.Y" or "postgresql"
    changes: tuple[str, ...] = ()   # TimescaleDB policies brought in line with the settings


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("runtime.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(settings: DatabaseSettings, *, max_age_days: int = 30,
            progress: Progress = _quiet) -> MigrationReport:
    """`max_age_days`: the oldest reading ingest accepts (ingest.max_age_days); the hourly
    aggregate is refreshed that far back, and a day more. `progress` hears each migration
    applied and the TimescaleDB step (see Progress)."""
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            applied = _apply_versions(conn, progress)
            flavour, changes = _apply_flavour(conn, settings, max_age_days + 1, progress)
        finally:
            # A FATAL error (the server ended the session) released the lock with it, and
            # unlocking on the dead connection would hide that error behind its own.
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return MigrationReport(applied=applied, flavour=flavour, changes=tuple(changes))


def _apply_versions(conn: psycopg.Connection, progress: Progress = _quiet) -> list[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied: list[str] = []
    pending = [m for m in _migration_files() if m[0] not in done]
    for version, name, text in pending:
        progress(APPLYING, len(applied), len(pending), name)
        try:
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    [version, name],
                )
        except psycopg.Error as exc:
            raise MigrationError(f"migration {name} failed: {exc}".strip()) from exc
        log.info("applied migration %s", name)
        applied.append(name)
        progress(APPLYING, len(applied), len(pending), name)
    return applied


def _apply_flavour(conn: psycopg.Connection, settings: DatabaseSettings,
                   lookback_days: int, progress: Progress = _quiet) -> tuple[str, list[str]]:
    if settings.timescale == "off":
        log.info("schema path: plain PostgreSQL (timescale = off)")
        return _plain(conn), []
    version = timescale.available_version(conn)
    if version is None or version < timescale.MIN_VERSION:
        why = "not available" if version is None else f"{version} is older than 2.13"
        if settings.timescale == "require":
            raise MigrationError(f"TimescaleDB required but {why} on this server")
        log.info("schema path: plain PostgreSQL (TimescaleDB %s)", why)
        return _plain(conn), []
    if not timescale.preloaded(conn):
        why = f"installed but not preloaded: {timescale.PRELOAD_HINT}"
        if settings.timescale == "require":
            raise MigrationError(f"TimescaleDB required but {why}")
        log.warning("schema path: plain PostgreSQL (TimescaleDB %s)", why)
        return _plain(conn), []
    label = "timescaledb " + ".".join(map(str, version))
    progress(TIMESCALE, 0, 1, label)
    changes = timescale.apply(conn, settings, lookback_days)
    progress(TIMESCALE, 1, 1, label)
    log.info("schema path: %s (hypertables, compression, retention, continuous aggregate)", label)
    return label, changes


def _plain(conn: psycopg.Connection) -> str:
    if not timescale.is_continuous_aggregate(conn, "readings_hourly"):
        conn.execute(timescale.PLAIN_HOURLY_VIEW)
    return "postgresql"


def current_version(conn: psycopg.Connection) -> int:
    try:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0] or 0) if row else 0
