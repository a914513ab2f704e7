"""The daily readings rollup (readings_daily): one row per day, grid and device kind, for
trends over months. Devices report about hourly, so readings_hourly (a row per device and
hour) is as big as the raw readings; a year of the whole street in readings_daily is
~140,000 rows (~380 a day).

refresh() recomputes whole days, each in its own transaction (delete the day's rows, insert
them again: a device that moved grid leaves no stale row behind):

    backfill  every day from the oldest reading up to the day before yesterday that was never
              computed (readings_daily_state.filled_through), oldest first and one day per
              transaction, so a first run over a year of history holds no giant transaction
              and a restart carries on where it stopped
    settle    once per day, the older days late readings can still change: ingest accepts
              readings up to ingest.max_age_days old, so those days are recomputed daily
    live      yesterday and today (and tomorrow once device clocks, up to
              ingest.max_future_skew_s ahead, can reach it), on every run

Days start at 00:00 Asia/Shanghai, the street's calendar the dashboards use. The source is
readings_hourly: on TimescaleDB the continuous aggregate (fast, and the reason this is cheap
there); on plain PostgreSQL the same hourly grouping over readings, restricted to the day
before grouping so the ts index serves it (the plain view itself cannot be restricted by
ts). A device counts in its grid as the registry says when the day is computed.

Several monitors may run: a session advisory lock lets one refresh at a time, and the others
skip that run (the holder is doing the same work).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from devices import metrics
from runtime import timescale

TIME_ZONE = ZoneInfo("Asia/Shanghai")
_LOCK_KEY = 0x66677275  # "fgru"

# The source rows: one per device and hour, with readings_hourly's columns.
_FROM_CAGG = """
SELECT device_id, samples, min_battery_pct, avg_rsrp_dbm, avg_sinr_db, max_temperature_c,
       min_storage_free_mb
FROM readings_hourly
WHERE bucket >= %(start)s AND bucket < %(end)s"""
# runtime.timescale.hourly_select as the plain view defines it, filtered on ts first.
_FROM_READINGS = """
SELECT device_id, count(*) AS samples, min(battery_pct) AS min_battery_pct,
       avg(rsrp_dbm) AS avg_rsrp_dbm, avg(sinr_db) AS avg_sinr_db,
       max(temperature_c) AS max_temperature_c, min(storage_free_mb) AS min_storage_free_mb
FROM readings
WHERE ts >= %(start)s AND ts < %(end)s
GROUP BY device_id, date_trunc('hour', ts)"""

# Per device first (its lowest battery that day), then per grid and kind. The hourly means
# are weighted by the hour's readings.
_COMPUTE = """
WITH h AS ({source}),
dev AS (
  SELECT device_id, sum(samples) AS samples, min(min_battery_pct) AS min_battery,
         sum(avg_rsrp_dbm * samples) AS rsrp_w,
         sum(samples) FILTER (WHERE avg_rsrp_dbm IS NOT NULL) AS rsrp_n,
         min(avg_rsrp_dbm) AS min_rsrp,
         sum(avg_sinr_db * samples) AS sinr_w,
         sum(samples) FILTER (WHERE avg_sinr_db IS NOT NULL) AS sinr_n,
         max(max_temperature_c) AS max_temperature, min(min_storage_free_mb) AS min_storage
  FROM h GROUP BY device_id
)
INSERT INTO readings_daily (day, grid_id, kind, devices, samples, battery_devices,
                            min_battery_pct, avg_battery_pct, rsrp_samples, avg_rsrp_dbm,
                            min_rsrp_dbm, sinr_samples, avg_sinr_db, max_temperature_c,
                            min_storage_free_mb, computed_at)
SELECT %(start)s, b.grid_id, d.kind, count(*), sum(dev.samples), count(dev.min_battery),
       min(dev.min_battery), avg(dev.min_battery),
       coalesce(sum(dev.rsrp_n), 0), sum(dev.rsrp_w) / nullif(sum(dev.rsrp_n), 0),
       min(dev.min_rsrp),
       coalesce(sum(dev.sinr_n), 0), sum(dev.sinr_w) / nullif(sum(dev.sinr_n), 0),
       max(dev.max_temperature), min(dev.min_storage), %(now)s
FROM dev
JOIN devices d ON d.id = dev.device_id
JOIN buildings b ON b.id = d.building_id
GROUP BY b.grid_id, d.kind
ON CONFLICT (day, grid_id, kind) DO UPDATE SET
  devices = EXCLUDED.devices, samples = EXCLUDED.samples,
  battery_devices = EXCLUDED.battery_devices, min_battery_pct = EXCLUDED.min_battery_pct,
  avg_battery_pct = EXCLUDED.avg_battery_pct, rsrp_samples = EXCLUDED.rsrp_samples,
  avg_rsrp_dbm = EXCLUDED.avg_rsrp_dbm, min_rsrp_dbm = EXCLUDED.min_rsrp_dbm,
  sinr_samples = EXCLUDED.sinr_samples, avg_sinr_db = EXCLUDED.avg_sinr_db,
  max_temperature_c = EXCLUDED.max_temperature_c,
  min_storage_free_mb = EXCLUDED.min_storage_free_mb, computed_at = EXCLUDED.computed_at"""


@dataclass
class RollupReport:
    skipped: bool = False       # another process held the lock
    days: dict[str, list[date]] = field(default_factory=dict)  # phase -> days computed
    rows: int = 0               # readings_daily rows written
    seconds: float = 0.0
    interrupted: bool = False   # stopped mid-backfill; the next run carries on

    @property
    def computed(self) -> int:
        return sum(len(d) for d in self.days.values())


def local_day(at: datetime) -> date:
    return at.astimezone(TIME_ZONE).date()


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TIME_ZONE)


def refresh(conn: psycopg.Connection, now: datetime, *, late_days: int = 30,
            future_s: float = 300, stop: threading.Event | None = None) -> RollupReport:
    """Bring readings_daily up to date as of `now` (timezone-aware). `late_days`: how old a
    reading ingest still accepts (ingest.max_age_days); `future_s`: how far ahead a device
    clock may run (ingest.max_future_skew_s). conn must be in autocommit: each day is its
    own transaction. `stop` ends a long backfill between days."""
    if now.tzinfo is None:
        raise ValueError("refresh() needs a timezone-aware time")
    if not conn.autocommit:
        raise ValueError("refresh() needs an autocommit connection (one transaction per day)")
    started = time.perf_counter()
    report = RollupReport()
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY]).fetchone()
    assert locked is not None  # a SELECT without FROM answers one row
    if not locked[0]:
        report.skipped = True
        return report
    try:
        _refresh(conn, now, late_days, future_s, stop, report)
    finally:
        if not conn.closed:     # a lost connection has released the lock already
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    report.seconds = time.perf_counter() - started
    for phase, days in report.days.items():
        metrics.ROLLUP_DAYS.labels(phase).inc(len(days))
    metrics.ROLLUP_SECONDS.observe(report.seconds)
    metrics.ROLLUP_RUNS.inc()
    return report


def _refresh(conn: psycopg.Connection, now: datetime, late_days: int, future_s: float,
             stop: threading.Event | None, report: RollupReport) -> None:
    source = _FROM_CAGG if timescale.is_continuous_aggregate(conn, "readings_hourly") \
        else _FROM_READINGS
    sql = _COMPUTE.format(source=source)
    today = local_day(now)
    live = [today - timedelta(days=1), today]
    if local_day(now + timedelta(seconds=future_s)) > today:
        live.append(today + timedelta(days=1))
    settled = live[0] - timedelta(days=1)   # the newest day outside the live window

    state = conn.execute("SELECT filled_through, settled_on FROM readings_daily_state"
                         ).fetchone()
    if state is None:
        # The first run: history starts at the oldest reading, and the backfill computes
        # every day, so there is nothing to settle today.
        row = conn.execute("SELECT min(ts) FROM readings").fetchone()
        assert row is not None  # an aggregate answers one row, NULL when there is none
        oldest = row[0]
        first = local_day(oldest) if oldest is not None else live[0]
        state = (min(first, live[0]) - timedelta(days=1), today)
        conn.execute("INSERT INTO readings_daily_state (filled_through, settled_on,"
                     " refreshed_at) VALUES (%s, %s, %s)", [*state, now])
    filled_through, settled_on = state
    done: set[date] = set()

    def compute(day: date, phase: str, *extra: str) -> None:
        params = {"start": day_start(day), "end": day_start(day + timedelta(days=1)),
                  "now": now}
        with conn.transaction():
            conn.execute("DELETE FROM readings_daily WHERE day = %(start)s", params)
            report.rows += conn.execute(sql, params).rowcount
            for statement in extra:
                conn.execute(statement, params | {"day": day})
        report.days.setdefault(phase, []).append(day)
        done.add(day)

    # Backfill, oldest first; filled_through moves in the same transaction as each day.
    day = filled_through + timedelta(days=1)
    while day <= settled:
        if stop is not None and stop.is_set():
            report.interrupted = True
            return
        compute(day, "backfill", "UPDATE readings_daily_state SET filled_through = %(day)s")
        day += timedelta(days=1)

    if settled_on is None or settled_on < today:
        day = today - timedelta(days=late_days)
        while day <= settled:
            if stop is not None and stop.is_set():
                report.interrupted = True
                return
            if day not in done:
                compute(day, "settle")
            day += timedelta(days=1)
        conn.execute("UPDATE readings_daily_state SET settled_on = %s", [today])

    for day in live:
        compute(day, "live")
    conn.execute("UPDATE readings_daily_state SET refreshed_at = %s", [now])
