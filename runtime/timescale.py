"""Every TimescaleDB-specific statement firegrid runs, in one place.

Written against the documented 2.x API (2.13 or newer for by_range; compression through
ALTER TABLE ... SET (timescaledb.compress ...) and add_compression_policy, which 2.18+ still
supports beside the newer columnstore names). Every call is idempotent (if_not_exists), so it
runs on every `firegrid db migrate`. Without the extension none of this runs and the plain
tables and views from the migrations are used; CI tests that path, this one is exercised
against a real TimescaleDB outside CI.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import psycopg

from runtime.errors import MigrationError
from runtime.settings import DatabaseSettings

log = logging.getLogger(__name__)

MIN_VERSION = (2, 13)

# (table, chunk interval). Readings: ~22k devices, a status every 1-60 min -> ~1 day chunks
# stay well inside the documented "chunk fits in 25% of memory" guideline.
HYPERTABLES = (("readings", "1 day"), ("events", "7 days"))

def hourly_select(bucket: str) -> str:
    """The hourly per-device summary, bucketed by `bucket` (an SQL expression over ts). One
    definition for both paths: a plain view on PostgreSQL, a continuous aggregate here."""
    return f"""
SELECT device_id,
       {bucket}              AS bucket,
       count(*)              AS samples,
       avg(temperature_c)    AS avg_temperature_c,
       max(temperature_c)    AS max_temperature_c,
       max(obscuration_db_m) AS max_obscuration_db_m,
       min(battery_pct)      AS min_battery_pct,
       avg(rsrp_dbm)         AS avg_rsrp_dbm,
       avg(sinr_db)          AS avg_sinr_db,
       min(storage_free_mb)  AS min_storage_free_mb
FROM readings
GROUP BY device_id, {bucket}"""


PLAIN_HOURLY_VIEW = ("CREATE OR REPLACE VIEW readings_hourly AS"
                     + hourly_select("date_trunc('hour', ts)"))
HOURLY_CAGG = (
    "CREATE MATERIALIZED VIEW readings_hourly"
    " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
    + hourly_select("time_bucket(INTERVAL '1 hour', ts)") + " WITH NO DATA"
)


PRELOAD_HINT = ("add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart"
                " the server")


def preloaded(conn: psycopg.Connection) -> bool:
    """TimescaleDB works only when the server loaded it at start; otherwise CREATE EXTENSION
    ends the session with a FATAL error."""
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return row is not None and "timescaledb" in str(row[0])


def installed_version(conn: psycopg.Connection) -> str | None:
    """The TimescaleDB version this database uses, or None (the plain path)."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                       ).fetchone()
    return None if row is None else str(row[0])


def job_health(conn: psycopg.Connection) -> list[tuple[int, str, str, str | None, int, int]]:
    """(job id, what it runs, on which table, last run's status, runs, failures) of every
    TimescaleDB background job, from the documented timescaledb_information views."""
    return [(int(r[0]), str(r[1]), str(r[2]), r[3], int(r[4]), int(r[5])) for r in conn.execute(
        "SELECT j.job_id, j.proc_name, coalesce(j.hypertable_name, ''), s.last_run_status,"
        " coalesce(s.total_runs, 0), coalesce(s.total_failures, 0)"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id"
        " ORDER BY j.job_id").fetchall()]


class JobHealth(NamedTuple):
    """A TimescaleDB background job as the maintenance monitor exports it."""

    job: str                   # proc_name, and "/table" for a policy: a bounded label
    last_success: float        # Unix time of the last successful finish; 0: never
    consecutive_failures: int  # failed runs since then (job_errors)


def job_metrics(conn: psycopg.Connection) -> list[JobHealth]:
    """Every background job's last success and the failures since, from the documented
    timescaledb_information views (jobs, job_stats, job_errors); [] on plain PostgreSQL.
    Stats only move when the scheduler runs a job: a foreground CALL run_job does not
    record them. Two jobs with one name (custom jobs) give the worse of the two."""
    if installed_version(conn) is None:
        return []
    worst: dict[str, JobHealth] = {}
    for job, success, failures in conn.execute(
            "SELECT j.proc_name || coalesce('/' || j.hypertable_name, ''),"
            " CASE WHEN isfinite(s.last_successful_finish)"
            "  THEN extract(epoch FROM s.last_successful_finish)::float8 ELSE 0 END,"
            " (SELECT count(*) FROM timescaledb_information.job_errors e"
            "  WHERE e.job_id = j.job_id"
            "  AND e.start_time > coalesce(s.last_successful_finish, '-infinity'))"
            " FROM timescaledb_information.jobs j"
            " LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id"
            " ORDER BY j.job_id").fetchall():
        health = JobHealth(str(job), float(success), int(failures))
        seen = worst.get(health.job)
        if seen is None or (health.consecutive_failures, -health.last_success) > (
                seen.consecutive_failures, -seen.last_success):
            worst[health.job] = health
    return list(worst.values())


def available_version(conn: psycopg.Connection) -> tuple[int, ...] | None:
    """The TimescaleDB version the server can load, or None."""
    row = conn.execute(
        "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions "
        "WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return tuple(int(part) for part in row[0].split("-")[0].split(".")[:2])


def apply(conn: psycopg.Connection, settings: DatabaseSettings,
          lookback_days: int = 31) -> list[str]:
    """Turn the plain schema into hypertables with policies that follow the settings, and
    return what changed in the policies. conn must be in autocommit: continuous aggregates
    cannot be created inside a transaction block. `lookback_days` is how far back the
    hourly aggregate is refreshed: as far back as ingest accepts late readings."""
    changes: list[str] = []
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table, interval in HYPERTABLES:
            conn.execute(
                f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '{interval}'),"
                " if_not_exists => TRUE, migrate_data => TRUE)"
            )
            conn.execute(
                f"ALTER TABLE {table} SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'device_id',"
                " timescaledb.compress_orderby = 'ts DESC, seq DESC')"
            )
            changes += _follow(
                conn, "policy_compression", table, "compress_after",
                f"{settings.compress_after_days} days",
                f"SELECT remove_compression_policy('{table}')",
                f"SELECT add_compression_policy('{table}',"
                f" compress_after => INTERVAL '{settings.compress_after_days} days')")
            changes += _follow(
                conn, "policy_retention", table, "drop_after", f"{settings.retention_days} days",
                f"SELECT remove_retention_policy('{table}')",
                f"SELECT add_retention_policy('{table}',"
                f" drop_after => INTERVAL '{settings.retention_days} days')")
        changes += _ensure_hourly_cagg(conn, settings, lookback_days)
    except psycopg.Error as exc:
        raise MigrationError(f"TimescaleDB setup failed: {exc}".strip()) from exc
    return changes


def _follow(conn: psycopg.Connection, proc: str, table: str | None, key: str, want: str,
            remove: str, add: str) -> list[str]:
    """Make the policy job `proc` (on `table`; None: the only one) have `key` = `want`.
    add_*_policy(if_not_exists) keeps an old job as it is, so a changed setting would never
    reach the database: an existing job with another value is replaced."""
    row = conn.execute(
        "SELECT config->>%s, (config->>%s)::interval = %s::interval"
        " FROM timescaledb_information.jobs WHERE proc_name = %s"
        " AND (%s::text IS NULL OR hypertable_name = %s)",
        [key, key, want, proc, table, table]).fetchone()
    if row is not None and row[1]:
        return []
    if row is not None:
        conn.execute(remove)
    conn.execute(add)
    was = "none" if row is None else row[0]
    return [f"{table or proc}: {key} {was} -> {want}"]


def is_continuous_aggregate(conn: psycopg.Connection, view: str) -> bool:
    """Safe on plain PostgreSQL too (no timescaledb_information schema there)."""
    present = conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = 'timescaledb_information'").fetchone()
    if not present:
        return False
    return bool(conn.execute(
        "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
        [view]).fetchone())


def _ensure_hourly_cagg(conn: psycopg.Connection, settings: DatabaseSettings,
                        lookback_days: int) -> list[str]:
    if not is_continuous_aggregate(conn, "readings_hourly"):
        # The plain-path view has the same name and columns; replace it.
        conn.execute("DROP VIEW IF EXISTS readings_hourly")
        conn.execute(HOURLY_CAGG)
    # Refreshed as far back as ingest accepts late readings (the window used to be 3 days
    # while ingest took readings 30 days old: those days' hours were never aggregated). Only
    # invalidated ranges are recomputed, so the long window costs little when nothing came
    # late.
    return _follow(
        conn, "policy_refresh_continuous_aggregate", None, "start_offset",
        f"{lookback_days} days",
        "SELECT remove_continuous_aggregate_policy('readings_hourly')",
        "SELECT add_continuous_aggregate_policy('readings_hourly',"
        f" start_offset => INTERVAL '{lookback_days} days', end_offset => INTERVAL '1 hour',"
        " schedule_interval => INTERVAL '30 minutes')") + _hourly_storage(
            conn, settings, lookback_days)


def _hourly_storage(conn: psycopg.Connection, settings: DatabaseSettings,
                    lookback_days: int) -> list[str]:
    """The aggregate's own compression and retention (docs/operations.md). It has a row per
    device and hour, as many as the raw readings at ~170 B each, and was never compressed
    nor dropped. Compressed once late readings can no longer change an hour: a day after
    the refresh window (TimescaleDB refuses a compression policy that overlaps it). Kept as
    long as the raw readings (database.retention_days): readings_daily keeps the trends for
    longer, and an hour of the aggregate is no use once its readings are gone."""
    compress_after = lookback_days + 1
    enabled = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = 'readings_hourly'").fetchone()
    if enabled is None or not enabled[0]:
        conn.execute("ALTER MATERIALIZED VIEW readings_hourly SET (timescaledb.compress = true)")
    return _follow(
        conn, "policy_compression", "readings_hourly", "compress_after",
        f"{compress_after} days",
        "SELECT remove_compression_policy('readings_hourly')",
        "SELECT add_compression_policy('readings_hourly',"
        f" compress_after => INTERVAL '{compress_after} days')") + _follow(
        conn, "policy_retention", "readings_hourly", "drop_after",
        f"{settings.retention_days} days",
        "SELECT remove_retention_policy('readings_hourly')",
        "SELECT add_retention_policy('readings_hourly',"
        f" drop_after => INTERVAL '{settings.retention_days} days')")
