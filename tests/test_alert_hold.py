"""Small matters stay in the grid (issue 15, item 4): a cooking alarm that its detector
clears, or that a resident hushes, with no second device agreeing, is held at grid level
instead of paging the community and the street. A fire keeps climbing: a detector that
alarms again, or one that went silent or faulted, holds nothing. Real database; the
escalator is driven with a fake clock (tests/alert_support.py); the clear and mute events
are in the events table as ingest stores them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.rules import load_policy
from tests.alert_support import T0, alarm, build_ward, pages, record, tick


@pytest.fixture
def ward(db):
    build_ward(db)
    return db


def _event(conn, device: str, seq: int, kind: str, at) -> None:
    conn.execute("INSERT INTO events (device_id, ts, seq, type, received_at, attrs)"
                 " VALUES (%s, %s, %s, %s, %s, '{}')", [device, at, seq, kind, at])


def _paged(conn, incident_id: int) -> list[str]:
    return sorted({worker for _, worker, _, _ in pages(conn, incident_id) if worker})


def _climb(conn, incident_id: int, until: timedelta) -> None:
    """Run the escalator at every due time up to T0 + until."""
    while True:
        due = conn.execute("SELECT escalate_at FROM incidents WHERE id = %s",
                           [incident_id]).fetchone()[0]
        if due is None or due > T0 + until:
            return
        tick(conn, due)


@pytest.mark.parametrize("hush", ["alarm_clear", "mute"])
def test_a_cleared_or_hushed_cooking_alarm_stays_with_the_grid(ward, hush):
    out = record(ward, [alarm("SD-1", 1, T0)], T0)
    incident = out.opened[0]
    _event(ward, "SD-1", 2, hush, T0 + timedelta(seconds=20))
    _climb(ward, incident, timedelta(hours=1))
    # The grid worker and the grid leader: grid level. Never the community or the street.
    assert _paged(ward, incident) == ["gl1", "gw1"]
    actions = [a for (a,) in ward.execute(
        "SELECT action FROM incident_log WHERE incident_id = %s ORDER BY id", [incident])]
    assert "held" in actions and "exhausted" not in actions
    assert ward.execute("SELECT state, rung FROM incidents WHERE id = %s",
                        [incident]).fetchone() == ("notified", 0)


def test_a_detector_alarming_again_after_the_hush_climbs_on(ward):
    out = record(ward, [alarm("SD-1", 1, T0)], T0)
    incident = out.opened[0]
    _event(ward, "SD-1", 2, "mute", T0 + timedelta(seconds=20))
    _climb(ward, incident, timedelta(seconds=150))          # held in the grid so far
    assert "cd1" not in _paged(ward, incident)
    record(ward, [alarm("SD-1", 3, T0 + timedelta(seconds=200))], T0 + timedelta(seconds=200))
    _climb(ward, incident, timedelta(hours=1))
    assert _paged(ward, incident) == ["cd1", "gl1", "gw1", "sd1"]


@pytest.mark.parametrize("event", [None, "fault"])
def test_a_detector_gone_silent_or_faulted_holds_nothing(ward, event):
    out = record(ward, [alarm("SD-1", 1, T0)], T0)
    incident = out.opened[0]
    if event:
        _event(ward, "SD-1", 2, event, T0 + timedelta(seconds=20))
    _climb(ward, incident, timedelta(hours=1))
    assert _paged(ward, incident) == ["cd1", "gl1", "gw1", "sd1"]


def test_the_hold_needs_the_only_device_to_have_cleared(ward):
    """Two devices in the incident (here a detector and a smoke-seeing camera would confirm,
    so the policy asks for three): one clearing is not the building clearing."""
    policy = load_policy()
    policy = policy.model_copy(update={"confirm": policy.confirm.model_copy(
        update={"detectors": 3, "detector_and_camera": False})})
    out = record(ward, [alarm("SD-1", 1, T0), alarm("SD-2", 1, T0)], T0, policy)
    incident = out.opened[0]
    _event(ward, "SD-1", 2, "alarm_clear", T0 + timedelta(seconds=20))
    while True:
        due = ward.execute("SELECT escalate_at FROM incidents WHERE id = %s",
                           [incident]).fetchone()[0]
        if due is None or due > T0 + timedelta(hours=1):
            break
        tick(ward, due, policy)
    assert _paged(ward, incident) == ["cd1", "gl1", "gw1", "sd1"]
