"""The maintenance monitor against a real PostgreSQL, on a fake clock: offline detection
at the right second, tickets opened once, closed when the condition clears."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg

from devices import metrics, tickets
from devices.monitor import check, run_monitor
from ingest.liveness import LivenessTracker
from runtime.settings import DevicesSettings
from simulators import messages as m
from tests.fleet import add_device, add_worker, at, decoded, ms, retire, watching
from tests.helpers import wait_for_count

SETTINGS = DevicesSettings()  # cameras 3 x 60 s, detectors 2 x period, grace 10 s
GRACE = timedelta(seconds=SETTINGS.offline_grace_s)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
L = at(T0)  # when the devices were last heard in these tests


def _hear(db, *items):
    """What ingest would do: observe the committed messages, flush."""
    tracker = LivenessTracker(SETTINGS)
    tracker.observe(items)
    tracker.flush(db)


def _keepalive(device_id: str, received, seq: int = 1):
    received_ms = int(received.timestamp() * 1000)
    return decoded(device_id, "telemetry", m.camera_status(seq, received_ms), received_ms)


def _check(db, now, settings: DevicesSettings = SETTINGS):
    watching(db, now)  # an ingest has been subscribed and flushing all along
    return check(db, now, settings)


def _open(db) -> list[tuple]:
    return db.execute("SELECT device_id, condition, opened_at, assigned_to FROM"
                      " maintenance_tickets WHERE closed_at IS NULL ORDER BY 1, 2").fetchall()


def test_camera_goes_offline_after_three_missed_keepalives_and_back(db):
    add_device(db, "CAM-1", "camera", heartbeat_s=60, state="active")
    _hear(db, _keepalive("CAM-1", L))
    limit = L + timedelta(seconds=3 * 60) + GRACE

    assert _check(db, limit - timedelta(seconds=1)).opened == {}
    assert _check(db, limit).opened == {}
    report = _check(db, limit + timedelta(seconds=1))
    assert report.opened == {"offline": 1} and report.open_tickets == {"offline": 1}
    assert _open(db) == [("CAM-1", "offline", limit + timedelta(seconds=1), None)]
    detail = db.execute("SELECT detail FROM maintenance_tickets").fetchone()[0]
    assert detail == "silent since 2026-01-01 00:00:00 UTC; reports every 60 s"
    # Still silent a minute later: the same ticket, no second one.
    assert _check(db, limit + timedelta(seconds=60)).opened == {}
    assert len(_open(db)) == 1

    back = limit + timedelta(seconds=70)
    _hear(db, _keepalive("CAM-1", back, seq=2))
    report = _check(db, back + timedelta(seconds=1))
    assert report.closed == {"cleared": 1} and report.open_tickets == {}
    assert db.execute("SELECT close_reason, closed_by, closed_at FROM maintenance_tickets"
                      ).fetchall() == [("cleared", "monitor", back + timedelta(seconds=1))]
    assert metrics.OPEN_TICKETS.labels("offline")._value.get() == 0


def test_detector_offline_uses_the_period_it_reports(db):
    add_device(db, "SD-1", heartbeat_s=600, state="active")
    _hear(db, decoded("SD-1", "telemetry", m.smoke_status(1, T0, heartbeat_s=3600), T0))
    # Twice the registered 600 s is long past: the detector said it reports hourly.
    assert _check(db, L + timedelta(seconds=2 * 600) + GRACE + timedelta(seconds=1)).opened == {}
    limit = L + timedelta(seconds=2 * 3600) + GRACE
    assert _check(db, limit).opened == {}
    assert _check(db, limit + timedelta(seconds=1)).opened == {"offline": 1}


def test_never_heard_provisioned_and_retired_devices_get_no_tickets(db):
    long_after = L + timedelta(days=30)
    add_device(db, "SD-NEW", state="provisioned", installed_at=L)
    add_device(db, "SD-GONE", state="active", installed_at=L)
    _hear(db, decoded("SD-GONE", "event", m.event("tamper", 1, T0, state="removed"), T0))
    assert _check(db, L + timedelta(minutes=1)).opened == {"tamper": 1}
    retire(db, "SD-GONE")
    report = _check(db, long_after)
    assert report.closed == {"retired": 1} and report.opened == {}
    assert _open(db) == []
    assert db.execute("SELECT close_reason FROM maintenance_tickets").fetchall() == [("retired",)]


def test_an_active_device_never_heard_is_silent_since_installation(db):
    add_device(db, "CAM-X", "camera", heartbeat_s=60, state="active", installed_at=L)
    limit = L + timedelta(seconds=180) + GRACE
    assert _check(db, limit).opened == {}
    assert _check(db, limit + timedelta(seconds=1)).opened == {"offline": 1}


def test_conditions_open_tickets_for_the_grid_technician_and_close_when_cleared(db):
    add_device(db, "SD-T", state="active")
    add_worker(db, "W-GRID-LEADER", role="grid_leader", grid="G1")
    add_worker(db, "W-AWAY", grid="G1", active=False)
    add_worker(db, "W-COMMUNITY", community="C1")
    add_worker(db, "W-TECH", grid="G1")

    def tamper(seq, ts, state):
        return decoded("SD-T", "event", m.event("tamper", seq, ts, state=state), ts)

    _hear(db, tamper(1, T0, "opened"),
          decoded("SD-T", "event", m.event("fault", 2, T0, code="E07"), T0))
    now = L + timedelta(minutes=1)
    assert _check(db, now).opened == {"tamper": 1, "fault": 1}
    assert _open(db) == [("SD-T", "fault", now, "W-TECH"), ("SD-T", "tamper", now, "W-TECH")]
    assert db.execute("SELECT detail FROM maintenance_tickets WHERE condition = 'fault'"
                      ).fetchone() == ("E07",)

    _hear(db, tamper(3, T0 + 10_000, "restored"))
    report = _check(db, now + timedelta(minutes=1))
    assert report.closed == {"cleared": 1} and report.opened == {}
    assert [r[1] for r in _open(db)] == ["fault"]

    # Without a technician on the grid, the community's one gets it.
    db.execute("UPDATE workers SET active = false WHERE id = 'W-TECH'")
    _hear(db, tamper(4, T0 + 20_000, "removed"))
    _check(db, now + timedelta(minutes=2))
    assert _open(db)[1][1:] == ("tamper", now + timedelta(minutes=2), "W-COMMUNITY")


def test_a_ticket_closed_by_hand_stays_closed_until_the_device_reports_again(db):
    add_device(db, "SD-M", state="active")
    add_device(db, "CAM-M", "camera", heartbeat_s=60, state="active")
    _hear(db, decoded("SD-M", "event", m.event("fault", 1, T0, code="E1"), T0),
          _keepalive("CAM-M", L))
    now = L + timedelta(minutes=10)
    assert _check(db, now).opened == {"fault": 1, "offline": 1}
    db.execute("UPDATE maintenance_tickets SET closed_at = %s, close_reason = 'manual',"
               " closed_by = 'tech-1'", [now + timedelta(seconds=5)])
    assert _check(db, now + timedelta(minutes=1)).opened == {}
    # New evidence after the close: the device reports the fault again; the camera was
    # heard after the close and then fell silent again.
    later = now + timedelta(minutes=2)
    _hear(db, decoded("SD-M", "event", m.event("fault", 2, int(later.timestamp() * 1000),
                                               code="E1"), int(later.timestamp() * 1000)),
          _keepalive("CAM-M", later, seq=2))
    assert _check(db, later + timedelta(minutes=10)).opened == {"fault": 1, "offline": 1}


def test_a_manual_close_does_not_silence_a_later_report_from_a_slow_device_clock(db):
    add_device(db, "SD-S", state="active")
    slow = 10 * 60_000  # the detector's clock is ten minutes behind the server's

    def tamper(seq, received_ms, state, ts=None):
        return decoded("SD-S", "event",
                       m.event("tamper", seq, ts or received_ms - slow, state=state), received_ms)

    # Real time: the manual close stamps closed_at with the database's clock.
    first = ms(db.execute("SELECT now()").fetchone()[0]) - 60_000
    _hear(db, tamper(1, first, "removed"))
    assert _check(db, at(first + 30_000)).opened == {"tamper": 1}
    ticket = db.execute("SELECT id FROM maintenance_tickets").fetchone()[0]
    tickets.close_ticket(db, ticket, "tech-1", "remounted")
    closed_at = db.execute("SELECT closed_at FROM maintenance_tickets").fetchone()[0]
    # The close marks the condition inactive and leaves the device's clock alone.
    assert db.execute("SELECT active, changed_ts FROM device_conditions").fetchone() == (
        False, at(first - slow))

    # The report from before the repair, redelivered: the same episode, no ticket.
    _hear(db, tamper(1, ms(closed_at) + 60_000, "removed", ts=first - slow))
    assert _check(db, closed_at + timedelta(minutes=2)).opened == {}

    # Five minutes after the close the detector reports a new tamper. Its own clock says
    # five minutes *before* the close; the server received it after: a new ticket.
    again = ms(closed_at) + 5 * 60_000
    _hear(db, tamper(2, again, "opened"))
    assert _check(db, at(again + 10_000)).opened == {"tamper": 1}
    assert _open(db) == [("SD-S", "tamper", at(again + 10_000), None)]
    assert db.execute("SELECT active, changed_ts, reported_at FROM device_conditions"
                      ).fetchone() == (True, at(again - slow), at(again))


def test_a_gateway_cannot_clear_tickets_of_a_device_not_behind_it(db):
    add_device(db, "GW-9", "gateway", heartbeat_s=300, state="active")
    add_device(db, "SD-1", heartbeat_s=600, state="active")  # no gateway
    _hear(db, decoded("SD-1", "event", m.event("fault", 1, T0, code="E07"), T0))
    silent = L + timedelta(hours=1)
    assert _check(db, silent).opened == {"fault": 1, "offline": 1}
    # An unrelated gateway relays a passing self test and a two-week heartbeat for SD-1.
    later = T0 + 3_600_000 + 60_000
    _hear(db, decoded("GW-9", "gateway", m.gateway(1, [
        {"device_id": "SD-1", **m.event("self_test", 2, later, result="pass")},
        {"device_id": "SD-1", **m.smoke_status(3, later, heartbeat_s=604800)}], later), later))
    report = _check(db, at(later + 1000))
    assert report.closed == {} and report.opened == {}
    assert _open(db) == [("SD-1", "fault", silent, None), ("SD-1", "offline", silent, None)]
    assert db.execute("SELECT last_seen, reported_heartbeat_s FROM device_status"
                      " WHERE device_id = 'SD-1'").fetchone() == (L, None)


def test_no_offline_tickets_while_no_ingest_is_watching(db):
    add_device(db, "CAM-P", "camera", heartbeat_s=60, state="active")
    add_device(db, "SD-P", state="active")
    _hear(db, _keepalive("CAM-P", L),
          decoded("SD-P", "event", m.event("tamper", 1, T0, state="removed"), T0))
    now = L + timedelta(hours=1)
    # Nobody ever flushed: ingest (or the broker, or its flush) is down.
    report = check(db, now, SETTINGS)
    assert report.offline_paused and report.opened == {"tamper": 1}
    assert metrics.OFFLINE_PAUSED._value.get() == 1
    # An ingest that just (re)connected: give a replayed backlog time to land first.
    db.execute("INSERT INTO ingest_heartbeats VALUES ('ingest-1', %s, %s)",
               [now - timedelta(seconds=5), now])
    assert check(db, now, SETTINGS).offline_paused
    # One that has been flushing all along, but stopped a minute ago.
    db.execute("UPDATE ingest_heartbeats SET since = %s, flushed_at = %s",
               [now - timedelta(days=1), now - timedelta(minutes=1)])
    assert check(db, now, SETTINGS).offline_paused
    report = _check(db, now)
    assert not report.offline_paused and report.opened == {"offline": 1}


def test_concurrent_checks_open_one_ticket(db, db_url):
    add_device(db, "CAM-C", "camera", heartbeat_s=60, state="active")
    _hear(db, _keepalive("CAM-C", L))
    now = L + timedelta(hours=1)
    watching(db, now)
    start = threading.Barrier(4)
    reports, errors = [], []

    def run() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                start.wait()
                reports.append(check(conn, now, SETTINGS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(r.opened.get("offline", 0) for r in reports) == [0, 0, 0, 1]
    assert db.execute("SELECT count(*) FROM maintenance_tickets").fetchone()[0] == 1


def test_run_monitor_keeps_going_when_its_connection_is_lost(make_settings, db, db_url):
    add_device(db, "CAM-R", "camera", heartbeat_s=60, state="active")
    _hear(db, _keepalive("CAM-R", L))
    settings = make_settings(devices={"monitor_interval_s": 0.05})
    clock = [L]  # the fake clock run_monitor reads
    watching(db, L + timedelta(hours=1))
    runs, failures = metrics.MONITOR_RUNS._value.get(), metrics.MONITOR_FAILURES._value.get()
    stop = threading.Event()
    runner = threading.Thread(target=run_monitor, args=(settings, stop, lambda: clock[0]))
    runner.start()
    try:
        assert _wait_until(lambda: metrics.MONITOR_RUNS._value.get() > runs)
        # The database drops every other session: the monitor's next check fails ...
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert _wait_until(lambda: metrics.MONITOR_FAILURES._value.get() > failures)
        # ... and the one after reconnects and does its work.
        clock[0] = L + timedelta(hours=1)
        assert wait_for_count(db_url, "SELECT count(*) FROM maintenance_tickets", 1,
                              timeout=10) == 1
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def _wait_until(predicate, timeout: float = 10) -> bool:
    """Poll `predicate` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
