"""TimescaleDB's background jobs, watched (issue 17, item 5): a job that fails is retried
with backoff and nothing said so. The maintenance monitor's check exports each job's last
success and its failures since (firegrid_timescale_job_*), the rule
FiregridTimescaleJobFailing fires on them (deploy/prometheus/tests/timescale.yml).

Job statistics move only when TimescaleDB's scheduler runs a job (a foreground CALL run_job
records none), so this module's server runs the scheduler, unlike the suite's TimescaleDB
pass. The job is scheduled to start at once and the test waits for its failure to be
recorded (polling the database, bounded), as an operator's monitor would see it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from devices.monitor import check
from runtime import migrate, timescale
from runtime.localsvc import Postgres, make_state_dir, wait_until
from runtime.settings import DatabaseSettings, DevicesSettings

FAILING = "fg_test_failing_job"


@pytest.fixture(scope="module")
def scheduled(tsdb_bindir: Path) -> Iterator[str]:
    """A migrated database on a TimescaleDB server whose scheduler runs."""
    server = Postgres(make_state_dir("fg-test-tsjobs-"), durable=False, bindir=tsdb_bindir,
                      settings=("shared_preload_libraries=timescaledb",
                                "timescaledb.telemetry_level=off")).start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE jobs")
        url = server.url("jobs")
        migrate.migrate(DatabaseSettings(url=url, timescale="require"))
        yield url
    finally:
        server.destroy()


def _metric(name: str, job: str) -> float | None:
    return REGISTRY.get_sample_value(f"firegrid_timescale_job_{name}", {"job_name": job})


@pytest.mark.flavour("timescale")
def test_a_failing_job_raises_the_metric_and_a_removed_job_loses_its_series(scheduled):
    with psycopg.connect(scheduled, autocommit=True) as db:
        db.execute(f"CREATE PROCEDURE {FAILING}(job_id int, config jsonb) LANGUAGE plpgsql"
                   " AS $$ BEGIN RAISE EXCEPTION 'disk full (a test)'; END $$")
        row = db.execute(f"SELECT add_job('{FAILING}', INTERVAL '1 day',"
                         " initial_start => now())").fetchone()
        assert row is not None
        job_id = row[0]

        def failed() -> bool:
            stats = db.execute("SELECT total_failures FROM timescaledb_information.job_stats"
                               " WHERE job_id = %s", [job_id]).fetchone()
            return stats is not None and (stats[0] or 0) >= 1

        wait_until(failed, 60, "the scheduler to run the failing job")
        check(db, datetime.now(UTC), DevicesSettings())
        assert (_metric("consecutive_failures", FAILING) or 0) >= 1
        assert _metric("last_success_timestamp_seconds", FAILING) == 0     # never
        # firegrid's own policies are exported too, one series each
        for job in ("policy_retention/readings", "policy_compression/readings_hourly",
                    "policy_refresh_continuous_aggregate/readings_hourly"):
            assert _metric("consecutive_failures", job) is not None, job

        db.execute("SELECT delete_job(%s)", [job_id])
        check(db, datetime.now(UTC), DevicesSettings())
        assert _metric("consecutive_failures", FAILING) is None
        assert _metric("last_success_timestamp_seconds", FAILING) is None


def test_the_job_series_follow_the_flavour(db, pg_flavour):
    """Plain PostgreSQL has no jobs, and a check there leaves no job series behind; the
    suite's TimescaleDB server runs no scheduler, so its policies are exported as never
    having succeeded."""
    check(db, datetime.now(UTC), DevicesSettings())
    if pg_flavour == "plain":
        assert timescale.job_metrics(db) == []
        assert _metric("last_success_timestamp_seconds", "policy_retention/readings") is None
    else:
        assert _metric("last_success_timestamp_seconds", "policy_retention/readings") == 0
        assert _metric("consecutive_failures", "policy_retention/readings") == 0
