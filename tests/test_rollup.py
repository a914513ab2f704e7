"""The daily readings rollup (devices/rollup.py) against a real PostgreSQL: the figures per
grid, kind and Asia/Shanghai day for known readings, re-runs that change nothing, late
readings, a device that moved grid, the backfill of history, several monitors, and the
monitor's loop running it."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta

import psycopg
import pytest

from devices import metrics, rollup
from devices.monitor import run_monitor
from devices.rollup import TIME_ZONE, day_start, refresh
from runtime import timescale
from tests.fleet import add_building, add_device

D = date(2026, 3, 10)  # "yesterday" in most tests


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TIME_ZONE)


NOW = local(D + timedelta(days=1), 12)  # today is D + 1


def reading(db, device_id: str, ts: datetime, *, battery=None, rsrp=None, sinr=None,
            temperature=None, storage=None, kind: str = "smoke",
            received: datetime | None = None) -> None:
    """A row as ingest stores it (seq from the clock, so each is unique)."""
    db.execute(
        "INSERT INTO readings (device_id, ts, seq, kind, received_at, battery_pct, rsrp_dbm,"
        " sinr_db, temperature_c, storage_free_mb) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s)",
        [device_id, ts, int(ts.timestamp()), kind, received or ts, battery, rsrp, sinr,
         temperature, storage])


def daily(db, day: date) -> dict[tuple[str, str], dict]:
    cur = db.execute("SELECT * FROM readings_daily WHERE day = %s ORDER BY grid_id, kind",
                     [day_start(day)])
    names = [c.name for c in cur.description]
    return {(r[1], r[2]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


@pytest.fixture
def street(db):
    """Grid G1 (building B1): detectors SD-1, SD-2 and camera CAM-1; grid G2 (B2): SD-3."""
    add_building(db, "B1", "G1")
    add_building(db, "B2", "G2")
    for device, kind, building in (("SD-1", "smoke_detector", "B1"),
                                   ("SD-2", "smoke_detector", "B1"),
                                   ("CAM-1", "camera", "B1"), ("SD-3", "smoke_detector", "B2")):
        add_device(db, device, kind, building=building, state="active")
    return db


def known_day(db) -> None:
    """Readings on day D with figures worked out by hand in the test below."""
    # SD-1: two readings in the 10:00 hour, one at 15:00
    reading(db, "SD-1", local(D, 10, 5), battery=80, rsrp=-90, sinr=10, temperature=21)
    reading(db, "SD-1", local(D, 10, 40), battery=78, rsrp=-100, sinr=6, temperature=23)
    reading(db, "SD-1", local(D, 15), battery=77, rsrp=-95, sinr=8, temperature=22)
    # SD-2: 23:30 Shanghai is day D (15:30 UTC); 00:30 is day D + 1 (16:30 UTC, same UTC day)
    reading(db, "SD-2", local(D, 23, 30), battery=50, rsrp=-115, sinr=2, temperature=20)
    reading(db, "SD-2", local(D + timedelta(days=1), 0, 30), battery=49, rsrp=-116, sinr=1)
    # CAM-1: keepalives without battery or signal
    reading(db, "CAM-1", local(D, 9), storage=1000, kind="camera")
    reading(db, "CAM-1", local(D, 21), storage=900, kind="camera")
    # SD-3 in G2
    reading(db, "SD-3", local(D, 12), battery=90, rsrp=-80, sinr=15, temperature=25)
    # unregistered: stored by ingest, in no grid, not in the rollup
    reading(db, "SD-GHOST", local(D, 12), battery=5, rsrp=-130, sinr=0)


def test_figures_per_grid_kind_and_shanghai_day(street):
    db = street
    known_day(db)
    report = refresh(db, NOW)
    assert not report.skipped and report.days == {"live": [D, D + timedelta(days=1)]}

    rows = daily(db, D)
    assert set(rows) == {("G1", "camera"), ("G1", "smoke_detector"), ("G2", "smoke_detector")}
    smoke = rows["G1", "smoke_detector"]
    assert smoke["day"] == local(D, 0)
    assert (smoke["devices"], smoke["samples"], smoke["battery_devices"]) == (2, 4, 2)
    # each device's lowest battery that day: SD-1 77, SD-2 50
    assert smoke["min_battery_pct"] == 50
    assert smoke["avg_battery_pct"] == pytest.approx(63.5)
    # hourly means weighted by the hour's readings: SD-1 10h -95 x 2, 15h -95, SD-2 -115
    assert smoke["rsrp_samples"] == 4
    assert smoke["avg_rsrp_dbm"] == pytest.approx(-100)
    assert smoke["min_rsrp_dbm"] == pytest.approx(-115)
    assert smoke["avg_sinr_db"] == pytest.approx((8 * 2 + 8 + 2) / 4)
    assert smoke["max_temperature_c"] == pytest.approx(23)

    camera = rows["G1", "camera"]
    assert (camera["devices"], camera["samples"], camera["battery_devices"]) == (1, 2, 0)
    assert camera["min_battery_pct"] is None and camera["avg_rsrp_dbm"] is None
    assert camera["rsrp_samples"] == 0 and camera["min_storage_free_mb"] == 900

    g2 = rows["G2", "smoke_detector"]
    assert (g2["devices"], g2["samples"], g2["min_battery_pct"]) == (1, 1, 90)
    assert g2["avg_rsrp_dbm"] == pytest.approx(-80)

    today = daily(db, D + timedelta(days=1))
    assert list(today) == [("G1", "smoke_detector")]
    assert (today["G1", "smoke_detector"]["samples"],
            today["G1", "smoke_detector"]["min_battery_pct"]) == (1, 49)


def test_the_continuous_aggregate_source_gives_the_same_figures(street, monkeypatch):
    """TimescaleDB's path reads readings_hourly itself. Here that is the plain view, with
    the same columns as the continuous aggregate: both sources must agree to the digit."""
    db = street
    known_day(db)
    refresh(db, NOW)
    plain = {day: daily(db, day) for day in (D, D + timedelta(days=1))}
    monkeypatch.setattr(timescale, "is_continuous_aggregate", lambda conn, view: True)
    refresh(db, NOW + timedelta(minutes=5))
    for day, rows in plain.items():
        again = daily(db, day)
        assert again.keys() == rows.keys()
        for key, row in rows.items():
            assert {k: v for k, v in again[key].items() if k != "computed_at"} == \
                {k: v for k, v in row.items() if k != "computed_at"}, key


def test_a_re_run_changes_nothing(street):
    db = street
    known_day(db)
    refresh(db, NOW)
    before = db.execute("SELECT * FROM readings_daily ORDER BY 1, 2, 3").fetchall()
    report = refresh(db, NOW)
    assert report.days == {"live": [D, D + timedelta(days=1)]}
    assert db.execute("SELECT * FROM readings_daily ORDER BY 1, 2, 3").fetchall() == before


def test_late_readings_for_yesterday_and_older_days_are_picked_up(street):
    db = street
    known_day(db)
    refresh(db, NOW)
    # SD-3 flushes its buffer after an outage: a reading from yesterday evening ...
    reading(db, "SD-3", local(D, 20), battery=60, rsrp=-100, received=NOW)
    # ... and one from three days before (ingest takes up to ingest.max_age_days)
    old = D - timedelta(days=3)
    reading(db, "SD-3", local(old, 8), battery=95, rsrp=-85, received=NOW)

    report = refresh(db, NOW + timedelta(minutes=5))
    g2 = daily(db, D)["G2", "smoke_detector"]
    assert (g2["samples"], g2["min_battery_pct"]) == (2, 60)
    assert g2["avg_rsrp_dbm"] == pytest.approx(-90)
    assert "settle" not in report.days and daily(db, old) == {}   # settled once a day

    # The first run of the next day settles the older days, within max_age_days only.
    report = refresh(db, local(D + timedelta(days=2), 0, 5), late_days=5)
    assert report.days["settle"] == [old, old + timedelta(days=1), old + timedelta(days=2)]
    assert report.days["backfill"] == [D]     # D left the live window
    assert daily(db, old)["G2", "smoke_detector"]["samples"] == 1
    assert "settle" not in refresh(db, local(D + timedelta(days=2), 0, 10)).days


def test_a_device_that_moved_grid_counts_in_its_new_grid(street):
    db = street
    known_day(db)
    refresh(db, NOW)
    db.execute("UPDATE devices SET building_id = 'B1' WHERE id = 'SD-3'")
    refresh(db, NOW + timedelta(minutes=5))
    rows = daily(db, D)
    assert ("G2", "smoke_detector") not in rows     # no stale row left in the old grid
    smoke = rows["G1", "smoke_detector"]
    assert (smoke["devices"], smoke["samples"], smoke["min_battery_pct"]) == (3, 5, 50)


class StopAfter:
    """A stop event that is set once it has been asked `n` times."""

    def __init__(self, n: int) -> None:
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_backfill_fills_every_day_of_history_one_day_at_a_time(street):
    db = street
    first = D - timedelta(days=9)
    for i in range(11):                     # D - 9 .. D + 1, one reading a day per device
        day = first + timedelta(days=i)
        for device, battery in (("SD-1", 100 - i), ("SD-3", 90 - i)):
            reading(db, device, local(day, 6), battery=battery, rsrp=-90)
    # A first run stopped after three days ...
    report = refresh(db, NOW, stop=StopAfter(3))
    assert report.interrupted and report.days == {"backfill": [first + timedelta(days=i)
                                                               for i in range(3)]}
    assert db.execute("SELECT filled_through FROM readings_daily_state").fetchone()[0] == \
        first + timedelta(days=2)
    # ... and the next one carries on from there, then does the live days.
    report = refresh(db, NOW)
    assert report.days["backfill"] == [first + timedelta(days=i) for i in range(3, 9)]
    assert report.days["live"] == [D, D + timedelta(days=1)]
    for i in range(11):
        rows = daily(db, first + timedelta(days=i))
        assert rows["G1", "smoke_detector"]["min_battery_pct"] == 100 - i
        assert rows["G2", "smoke_detector"]["min_battery_pct"] == 90 - i
    assert db.execute("SELECT count(*) FROM readings_daily").fetchone()[0] == 22


def test_a_second_monitor_skips_while_one_refreshes(street, db_url):
    db = street
    known_day(db)
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [rollup._LOCK_KEY])
        assert refresh(db, NOW).skipped
        assert db.execute("SELECT count(*) FROM readings_daily").fetchone()[0] == 0
        # Let go as a monitor does when it is done. (Closing the connection alone releases
        # the lock only when the server's backend has exited, a moment after close returns.)
        other.execute("SELECT pg_advisory_unlock(%s)", [rollup._LOCK_KEY])
    assert not refresh(db, NOW).skipped


def test_bad_calls_are_refused(db, db_url):
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh(db, datetime(2026, 3, 10, 12))
    with psycopg.connect(db_url) as conn, pytest.raises(ValueError, match="autocommit"):
        refresh(conn, NOW)


def test_the_monitor_runs_the_rollup(street, make_settings, db_url):
    db = street
    known_day(db)
    settings = make_settings(devices={"monitor_interval_s": 60, "rollup_interval_s": 0.05})
    runs = metrics.ROLLUP_RUNS._value.get()
    stop = threading.Event()
    runner = threading.Thread(target=run_monitor, args=(settings, stop, lambda: NOW))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while metrics.ROLLUP_RUNS._value.get() < runs + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metrics.ROLLUP_RUNS._value.get() >= runs + 2
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert set(daily(db, D)) == {("G1", "camera"), ("G1", "smoke_detector"),
                                 ("G2", "smoke_detector")}


def test_a_zero_interval_disables_it(street, make_settings):
    db = street
    known_day(db)
    settings = make_settings(devices={"monitor_interval_s": 0.05, "rollup_interval_s": 0})
    stop = threading.Event()
    runs = metrics.MONITOR_RUNS._value.get()
    runner = threading.Thread(target=run_monitor, args=(settings, stop, lambda: NOW))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while metrics.MONITOR_RUNS._value.get() < runs + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(10)
    assert metrics.MONITOR_RUNS._value.get() >= runs + 2
    assert db.execute("SELECT count(*) FROM readings_daily_state").fetchone()[0] == 0
