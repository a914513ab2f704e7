"""The alert core's store and ladder against a real database, on a fake clock."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from alerts import loop
from alerts.rules import RuleEngine, load_policy
from protocol.decode import Event
from tests.alert_support import T0, alarm, build_ward, log, pages, record, tick


@pytest.fixture
def ward(db):
    build_ward(db)
    return db


def incident(conn, building="B1"):
    return conn.execute("SELECT id, severity, state, rung, step, escalate_at, alert_count"
                        " FROM incidents WHERE building_id = %s ORDER BY id DESC LIMIT 1",
                        [building]).fetchone()


def test_an_alarm_opens_an_incident_and_pages_the_grid_team_at_once(ward):
    out = record(ward, [alarm("SD-1", 1, T0)], T0)
    assert len(out.opened) == 1 and out.pages == 2
    inc_id, severity, state, rung, step, escalate_at, count = incident(ward)
    assert (severity, state, rung, step, count) == ("warning", "notified", 0, 1, 1)
    assert escalate_at == T0 + timedelta(seconds=30)
    # The grid worker and the leader on duty together: one silent phone delays nobody.
    assert pages(ward, inc_id) == [(1, "gl1", "mqtt", "pending"), (1, "gw1", "mqtt", "pending")]
    assert log(ward, inc_id) == [("raised", None, "raised"), ("notified", "raised", "notified")]


def test_repeats_and_redeliveries_update_the_incident_without_new_pages(ward):
    record(ward, [alarm("SD-1", 1, T0)], T0)
    again = record(ward, [alarm("SD-1", 1, T0), alarm("SD-1", 1, T0)], T0 + timedelta(seconds=1))
    assert again.alerts == 0                                  # the same message, redelivered
    record(ward, [alarm("SD-1", 2, T0 + timedelta(seconds=5))], T0 + timedelta(seconds=5))
    inc_id, *_, count = incident(ward)
    assert count == 2
    assert ward.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1
    assert len(pages(ward, inc_id)) == 2


def test_the_ladder_climbs_on_missed_acknowledgements(ward):
    record(ward, [alarm("SD-1", 1, T0)], T0)
    inc_id = incident(ward)[0]
    assert tick(ward, T0 + timedelta(seconds=29)) == 0          # not yet due
    assert tick(ward, T0 + timedelta(seconds=30)) == 1          # -> community duty
    assert tick(ward, T0 + timedelta(seconds=60)) == 1          # -> street command centre
    assert tick(ward, T0 + timedelta(seconds=360)) == 1         # past the last rung: pause
    assert [a for a, *_ in log(ward, inc_id)][-1] == "repeating"
    assert tick(ward, T0 + timedelta(seconds=959)) == 0
    assert tick(ward, T0 + timedelta(seconds=960)) == 1         # the grid team again
    assert [(s, w) for s, w, _, _ in pages(ward, inc_id)] == [
        (1, "gl1"), (1, "gw1"), (2, "cd1"), (3, "sd1"), (4, "gl1"), (4, "gw1")]
    assert incident(ward)[3] == 0


def test_without_a_repeat_an_unanswered_ladder_goes_quiet(ward):
    policy = load_policy()
    policy = policy.model_copy(update={"repeat": policy.repeat.model_copy(
        update={"every_s": None})})
    record(ward, [alarm("SD-1", 1, T0)], T0, policy)
    inc_id = incident(ward)[0]
    for at in (30, 60, 360):
        assert tick(ward, T0 + timedelta(seconds=at), policy) == 1
    assert tick(ward, T0 + timedelta(days=1), policy) == 0
    assert [a for a, *_ in log(ward, inc_id)][-1] == "exhausted"
    assert incident(ward)[5] is None


def test_an_acknowledged_incident_does_not_repeat(ward):
    record(ward, [alarm("SD-1", 1, T0)], T0)
    inc_id = incident(ward)[0]
    loop.acknowledge(ward, inc_id, "api:gw1", now=T0 + timedelta(seconds=5))
    assert tick(ward, T0 + timedelta(days=1)) == 0
    assert "repeating" not in [a for a, *_ in log(ward, inc_id)]


def test_a_level_with_nobody_on_duty_is_skipped_and_recorded(db):
    build_ward(db, on_shift=("gw2", "cd1", "sd1"))              # G1's worker and leader off
    record(db, [alarm("SD-1", 1, T0)], T0)
    inc_id = incident(db)[0]
    assert pages(db, inc_id) == [(1, "cd1", "mqtt", "pending")]
    skipped = db.execute("SELECT detail->'roles' FROM incident_log WHERE incident_id = %s"
                         " AND action = 'skipped' ORDER BY id", [inc_id]).fetchall()
    assert skipped == [(["grid_worker", "grid_leader"],)]
    assert incident(db)[5] == T0 + timedelta(seconds=30)        # community rung's timeout


def test_two_detectors_confirm_a_fire_and_every_level_is_paged_at_once(ward):
    record(ward, [alarm("SD-1", 1, T0)], T0)
    out = record(ward, [alarm("SD-2", 1, T0 + timedelta(seconds=30))], T0 + timedelta(seconds=30))
    assert out.confirmed and not out.opened
    inc_id, severity, state, *_ = incident(ward)
    assert (severity, state) == ("confirmed", "notified")
    step2 = {w for s, w, _, _ in pages(ward, inc_id) if s == 2}
    assert step2 == {"gw1", "gl1", "cd1", "sd1"}
    assert ("confirmed", "notified", "notified") in log(ward, inc_id)


def test_a_detector_and_a_camera_confirm_but_alarms_outside_the_window_do_not(ward):
    record(ward, [alarm("SD-1", 1, T0)], T0)
    late = T0 + timedelta(seconds=301)
    out = record(ward, [alarm("CAM-1", 1, late, "camera_smoke")], late)
    assert not out.confirmed                                   # SD-1 is 301 s old
    out = record(ward, [alarm("SD-1", 2, late)], late)
    assert out.confirmed                                       # now within 300 s of CAM-1


def test_one_building_alarming_does_not_confirm_another(ward):
    record(ward, [alarm("SD-1", 1, T0), alarm("SD-3", 1, T0)], T0)
    assert ward.execute("SELECT count(*) FROM incidents WHERE severity = 'confirmed'"
                        ).fetchone()[0] == 0
    assert ward.execute("SELECT count(*) FROM incidents").fetchone()[0] == 2


def test_unknown_devices_alerts_are_kept_unrouted(ward):
    out = record(ward, [alarm("NOT-REGISTERED", 1, T0)], T0)
    assert (out.alerts, out.unroutable, out.opened) == (1, 1, [])
    assert ward.execute("SELECT device_id, building_id, incident_id FROM alerts").fetchall() == [
        ("NOT-REGISTERED", None, None)]


def test_a_silenced_building_is_recorded_but_its_pages_are_muted(ward):
    ward.execute("INSERT INTO silences (building_id, starts_at, ends_at, reason, created_by)"
                 " VALUES ('B1', %s, %s, 'renovation', 'test')", [T0, T0 + timedelta(hours=2)])
    record(ward, [alarm("SD-1", 1, T0)], T0)
    inc_id, severity, state, *_ = incident(ward)
    assert state == "raised"
    assert pages(ward, inc_id) == [(1, "gl1", "mqtt", "muted"), (1, "gw1", "mqtt", "muted")]
    # a muted device never confirms a fire either
    record(ward, [alarm("SD-2", 1, T0)], T0)
    assert incident(ward)[1] == "warning"


def test_a_device_in_test_mode_mutes_until_a_real_alarm_comes(ward):
    ward.execute("UPDATE devices SET state = 'maintenance' WHERE id = 'SD-1'")
    record(ward, [alarm("SD-1", 1, T0)], T0)
    inc_id = incident(ward)[0]
    assert pages(ward, inc_id) == [(1, "gl1", "mqtt", "muted"), (1, "gw1", "mqtt", "muted")]
    record(ward, [alarm("SD-2", 1, T0 + timedelta(seconds=10))], T0 + timedelta(seconds=10))
    assert pages(ward, inc_id)[-1] == (2, "gw1", "mqtt", "pending")
    assert incident(ward)[2] == "notified"


def test_confirmed_fires_are_forwarded_to_the_fire_service_when_configured(ward):
    channels = frozenset({"fire_service"})
    record(ward, [alarm("SD-1", 1, T0), alarm("SD-2", 1, T0)], T0, channels=channels)
    inc_id = incident(ward)[0]
    assert (1, None, "fire_service", "pending") in pages(ward, inc_id)
    assert ("forwarded", "raised", "raised") in log(ward, inc_id)


def test_worker_channels_become_pages_only_where_configured(db):
    build_ward(db, channels={"gw1": {"wecom": "wecombot://key", "sms": "+8613800000000"}})
    record(db, [alarm("SD-1", 1, T0)], T0, channels=frozenset({"wecom"}))
    assert [(w, c) for _, w, c, _ in pages(db, incident(db)[0])] == [
        ("gl1", "mqtt"), ("gw1", "mqtt"), ("gw1", "wecom")]


def test_a_storm_from_many_connections_opens_one_incident_per_building(ward, db_url):
    """Eight connections record alarms of the same buildings at once: the partial unique
    index leaves exactly one open incident per building and one first page each."""
    policy = load_policy()
    barrier = threading.Barrier(8)
    errors = []

    def storm(n: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                for i in range(20):
                    record(conn, [alarm(d, n * 100 + i, T0) for d in ("SD-1", "SD-3", "SD-4")],
                           T0, policy)
        except Exception as exc:   # any of them: reported below
            errors.append(exc)

    threads = [threading.Thread(target=storm, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = ward.execute("SELECT building_id, count(*), sum(alert_count) FROM incidents"
                        " GROUP BY building_id ORDER BY 1").fetchall()
    assert rows == [("B1", 1, 160), ("B2", 1, 160), ("B3", 1, 160)]
    first_pages = ward.execute("SELECT count(*) FROM pages WHERE step = 1").fetchone()[0]
    assert first_pages == 5                  # G1's worker and leader twice, G2's worker


def test_a_gateway_cannot_raise_alarms_for_devices_not_behind_it(ward):
    ward.execute("INSERT INTO devices (id, kind, building_id, heartbeat_s, password_hash,"
                 " password_salt) VALUES ('GW-1', 'gateway', 'B3', 60, 'x', 'y')")
    spoofed = alarm("SD-1", 1, T0)
    out = record(ward, [replace(spoofed, gateway_id="GW-1")], T0)
    assert (out.alerts, out.unroutable, out.opened) == (1, 1, [])
    assert ward.execute("SELECT building_id, incident_id, detail->>'refused' FROM alerts"
                        ).fetchone() == (None, None, "gateway GW-1 does not serve it")
    ward.execute("UPDATE devices SET gateway_id = 'GW-1' WHERE id = 'SD-2'")
    out = record(ward, [replace(alarm("SD-2", 1, T0), gateway_id="GW-1")], T0)
    assert len(out.opened) == 1                       # its own gateway speaks for it


def test_a_nul_in_an_event_does_not_stop_the_alarms_batched_with_it(ward):
    engine = RuleEngine(load_policy())
    ms = int(T0.timestamp() * 1000)
    rows = [Event("CAM-1", ms, 1, "smoke_detected", ms, None,
                  json.dumps({"confidence": 0.9, "snapshot_url": "http://x/\x00.jpg"})),
            Event("SD-3", ms, 1, "alarm", ms, None, "{}")]
    out = record(ward, engine.events(rows), T0)
    assert out.alerts == 2 and len(out.opened) == 2
