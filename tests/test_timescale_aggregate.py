"""The hourly continuous aggregate on a real TimescaleDB (issue 17, items 1 and 5): readings
that arrive late reach `readings_hourly` and `readings_daily` once the jobs have run, and the
aggregate has its own compression and retention.

The refresh policy used to look back 3 days while ingest accepts readings 30 days old
(ingest.max_age_days): a reading 20 days late never reached the aggregate, and the daily
rollup's settle pass then wrote the day short, silently. The aggregate was never compressed
nor dropped.

The test server runs no background workers (conftest's TIMESCALEDB_SETTINGS), so the tests
run the jobs themselves, as `CALL run_job(id)`; times are relative to the server's clock,
since the policies' windows are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devices import rollup
from tests.fleet import add_building, add_device

pytestmark = pytest.mark.flavour("timescale")


def _job(db: psycopg.Connection, proc: str, table: str) -> int:
    row = db.execute("SELECT job_id FROM timescaledb_information.jobs"
                     " WHERE proc_name = %s AND hypertable_name = %s", [proc, table]).fetchone()
    assert row is not None, f"no {proc} job on {table}"
    return int(row[0])


def run_job(db: psycopg.Connection, proc: str, table: str) -> None:
    db.execute("CALL run_job(%s)", [_job(db, proc, table)])


def reading(db: psycopg.Connection, device_id: str, ts: datetime, battery: int) -> None:
    """A row as ingest stores it, received now."""
    db.execute("INSERT INTO readings (device_id, ts, seq, kind, received_at, battery_pct)"
               " VALUES (%s, %s, %s, 'smoke', now(), %s)",
               [device_id, ts, int(ts.timestamp()), battery])


def hourly(db: psycopg.Connection, device_id: str, hour: datetime) -> int | None:
    row = db.execute("SELECT samples FROM readings_hourly WHERE device_id = %s"
                     " AND bucket = %s", [device_id, hour]).fetchone()
    return None if row is None else int(row[0])


def daily_samples(db: psycopg.Connection, day: datetime) -> int:
    row = db.execute("SELECT coalesce(sum(samples), 0) FROM readings_daily WHERE day = %s"
                     " AND grid_id = 'G1'", [rollup.day_start(rollup.local_day(day))]
                     ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def now(db) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0].astimezone(UTC)


def test_readings_20_days_late_reach_the_hourly_and_daily_summaries(db, now):
    add_building(db, "B1", "G1")
    for device in ("SD-1", "SD-2"):
        add_device(db, device, "smoke_detector", building="B1", state="active")
    # SD-1 reports on time, twice a day for 25 days; the jobs and the rollup keep up
    for half_days in range(50, 0, -1):
        reading(db, "SD-1", now - timedelta(hours=12 * half_days), 90)
    run_job(db, "policy_refresh_continuous_aggregate", "readings_hourly")
    rollup.refresh(db, now, late_days=30)
    late = (now - timedelta(days=20)).replace(minute=0, second=0, microsecond=0)
    before = daily_samples(db, late)

    # SD-2's gateway was cut off and now delivers three readings from 20 days ago
    for minute in (5, 25, 45):
        reading(db, "SD-2", late + timedelta(minutes=minute), 60)
    # Behind the aggregate's watermark: not there until the refresh job runs
    assert hourly(db, "SD-2", late) is None

    run_job(db, "policy_refresh_continuous_aggregate", "readings_hourly")
    assert hourly(db, "SD-2", late) == 3
    # The next day's settle pass recomputes the days late readings can change, from the
    # aggregate
    report = rollup.refresh(db, now + timedelta(days=1), late_days=30)
    assert rollup.local_day(late) in report.days["settle"]
    assert daily_samples(db, late) == before + 3


def _aggregate_chunks(db: psycopg.Connection) -> list[tuple[datetime, bool]]:
    return [(end, compressed) for end, compressed in db.execute(
        "SELECT c.range_end, c.is_compressed FROM timescaledb_information.chunks c"
        " JOIN timescaledb_information.continuous_aggregates a"
        "  ON c.hypertable_schema = a.materialization_hypertable_schema"
        "  AND c.hypertable_name = a.materialization_hypertable_name"
        " WHERE a.view_name = 'readings_hourly' ORDER BY c.range_end").fetchall()]


def test_the_aggregate_is_compressed_and_dropped_by_its_own_jobs(db, now):
    """Compressed once late readings can no longer change an hour (32 days: a day past the
    31-day refresh window), dropped with the raw readings (retention_days, 400)."""
    hours = [(now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
             for days in (500, 60, 2)]
    for hour in hours:
        reading(db, "SD-1", hour + timedelta(minutes=10), 80)
    # An operator's backfill of the whole history (the policy only looks back 31 days)
    db.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, %s)",
               [now - timedelta(hours=1)])
    assert [hourly(db, "SD-1", hour) for hour in hours] == [1, 1, 1]

    run_job(db, "policy_compression", "readings_hourly")
    chunks = _aggregate_chunks(db)
    assert [compressed for end, compressed in chunks] == \
        [end <= now - timedelta(days=32) for end, _ in chunks]
    assert any(compressed for _, compressed in chunks)
    # still readable, compressed or not
    assert [hourly(db, "SD-1", hour) for hour in hours] == [1, 1, 1]

    run_job(db, "policy_retention", "readings_hourly")
    assert [hourly(db, "SD-1", hour) for hour in hours] == [None, 1, 1]
    assert all(end > now - timedelta(days=400) for end, _ in _aggregate_chunks(db))
