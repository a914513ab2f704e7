"""Duty as people run it (issue 16), on the real database with a fake clock: leave and
substitutes, a shift change under an open incident, escalate now, adding a responder and
reassigning. (tests/test_duty_live.py runs the same through the alert core and the API.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts import handover, loop
from alerts.errors import Conflict
from alerts.rules import load_policy
from api.app import create_app
from api.auth import create_token
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import Grid, Shift, Worker
from tests.alert_support import (
    NO_CHANNELS,
    T0,
    WORKERS,
    alarm,
    build_ward,
    log,
    pages,
    record,
    tick,
)
from tests.api_support import TestClient, settings  # noqa: F401 (a fixture)

POLICY = load_policy()


def _leave(conn, worker: str, substitute: str | None, *, cancelled: bool = False) -> None:
    conn.execute("INSERT INTO leave (worker_id, starts_at, ends_at, substitute_id, reason,"
                 " created_by, cancelled_at) VALUES (%s, %s, %s, %s, 'sick', 'test', %s)",
                 [worker, T0 - timedelta(hours=1), T0 + timedelta(hours=8), substitute,
                  T0 - timedelta(minutes=5) if cancelled else None])


def _paged_at(conn, incident: int, step: int) -> list[str]:
    return sorted({w for s, w, _, _ in pages(conn, incident) if s == step and w})


def _open(conn) -> int:
    return record(conn, [alarm("SD-1", 1, T0)], T0).opened[0]


@pytest.mark.parametrize(("substitute", "expected"), [("gw2", ["gl1", "gw2"]), (None, ["gl1"])])
def test_leave_takes_a_worker_off_the_ladder_and_a_substitute_stands_in(db, substitute,
                                                                        expected):
    build_ward(db)
    _leave(db, "gw1", substitute)
    assert _paged_at(db, _open(db), 1) == expected


def test_cancelled_leave_changes_nothing(db):
    build_ward(db)
    _leave(db, "gw1", "gw2", cancelled=True)
    assert _paged_at(db, _open(db), 1) == ["gl1", "gw1"]


def test_a_shift_change_under_an_open_incident_pages_the_incoming_worker(db):
    build_ward(db, on_shift=tuple(w for w in WORKERS if w != "gw1"))
    change = T0 + timedelta(seconds=20)
    with registry.changes(db, "test"):
        registry.upsert_workers(db, [Worker(id="gw3", name="gw3", role="grid_worker",
                                            areas=["G1"])])
        registry.add_shifts(db, [Shift(worker_id="gw1", starts_at=T0 - timedelta(hours=12),
                                       ends_at=change),
                                 Shift(worker_id="gw3", starts_at=change,
                                       ends_at=change + timedelta(hours=12))])
    incident = _open(db)
    assert _paged_at(db, incident, 1) == ["gl1", "gw1"]
    with db.transaction():
        assert handover.hand_over(db, T0 + timedelta(seconds=10), POLICY, NO_CHANNELS) == 0
    at = change + timedelta(seconds=1)
    with db.transaction():
        assert handover.hand_over(db, at, POLICY, NO_CHANNELS) == 1
        # a second pass (or a second alert core) pages nobody again
        assert handover.hand_over(db, at, POLICY, NO_CHANNELS) == 0
    assert _paged_at(db, incident, 1) == ["gl1", "gw1", "gw3"]
    assert db.execute("SELECT detail->'from', detail->'to' FROM incident_log"
                      " WHERE incident_id = %s AND action = 'handed_over'",
                      [incident]).fetchall() == [(["gw1"], ["gw3"])]
    # The rung's timer runs on: the community at 30 s as before, the fire's minute kept.
    assert db.execute("SELECT escalate_at FROM incidents WHERE id = %s",
                      [incident]).fetchone()[0] == T0 + timedelta(seconds=30)


def test_escalate_now_fires_the_next_rung_at_once(db):
    build_ward(db)
    incident = _open(db)
    now = T0 + timedelta(seconds=3)
    loop.escalate(db, incident, "api:cd1-desk", POLICY, note="看到浓烟 smoke on camera", now=now)
    assert tick(db, now) == 1
    assert _paged_at(db, incident, 2) == ["cd1"]
    assert ("escalated", "notified", "notified") in log(db, incident)


def test_escalate_to_a_level_skips_the_rungs_between(db):
    build_ward(db)
    incident = _open(db)
    loop.escalate(db, incident, "api:gl1-phone", POLICY, to="street", now=T0)
    tick(db, T0)
    assert _paged_at(db, incident, 2) == ["sd1"]
    with pytest.raises(Conflict):        # nothing above the street
        loop.escalate(db, incident, "api:gl1-phone", POLICY, to="community", now=T0)


def test_a_person_escalating_a_hushed_alarm_is_not_held_in_the_grid(db):
    build_ward(db)
    incident = _open(db)
    db.execute("INSERT INTO events (device_id, ts, seq, type, received_at, attrs)"
               " VALUES ('SD-1', %s, 2, 'mute', %s, '{}')", [T0, T0 + timedelta(seconds=5)])
    loop.escalate(db, incident, "api:gl1-phone", POLICY, now=T0 + timedelta(seconds=10))
    tick(db, T0 + timedelta(seconds=10))
    assert _paged_at(db, incident, 2) == ["cd1"]


def test_adding_a_responder_pages_them_and_reassigning_reopens_the_timer(db):
    build_ward(db)
    incident = _open(db)
    loop.add_responder(db, incident, "api:gl1-phone", "gw2", POLICY, NO_CHANNELS,
                       now=T0 + timedelta(seconds=2))
    assert _paged_at(db, incident, 2) == ["gw2"]
    ack = T0 + timedelta(seconds=5)
    loop.acknowledge(db, incident, "api:gw1-phone", now=ack)
    moved = T0 + timedelta(seconds=40)
    row = loop.add_responder(db, incident, "api:cd1-desk", "gw2", POLICY, NO_CHANNELS,
                             reassign=True, note="gw1 去了另一起 gw1 is at another fire",
                             now=moved)
    assert (row["state"], row["escalate_at"]) == ("notified", moved + timedelta(seconds=30))
    assert row["acknowledged_at"] == ack                 # the first response stays measured
    assert _paged_at(db, incident, 3) == ["gw2"]
    assert [a for a, *_ in log(db, incident)][-2:] == ["acknowledged", "reassigned"]
    # Nobody takes it: the ladder goes on from where it was.
    assert tick(db, moved + timedelta(seconds=30)) == 1
    assert _paged_at(db, incident, 4) == ["cd1"]


# --- through the API: officers keep the grid covered ------------------------------------

@pytest.fixture
def officer_api(settings, db):
    build_ward(db)
    tokens = {w: create_token(db, f"{w}-token", role, w)
              for w, role in (("cd1", "community_duty"), ("gw1", "grid_worker"),
                              ("gl1", "grid_leader"))}
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        yield lambda who: {"Authorization": f"Bearer {tokens[who]}"}, client


def test_an_officer_puts_a_worker_on_leave_and_the_substitute_is_paged(officer_api, db):
    auth, client = officer_api
    body = {"worker_id": "gw1", "starts_at": (T0 - timedelta(hours=1)).isoformat(),
            "ends_at": (T0 + timedelta(hours=8)).isoformat(), "substitute_id": "gw2",
            "reason": "病假 sick"}
    saved = client.post("/v1/leave", json=body, headers=auth("cd1"))
    assert saved.status_code == 201, saved.text
    assert saved.json()["warnings"] == []
    assert _paged_at(db, _open(db), 1) == ["gl1", "gw2"]
    history = db.execute("SELECT actor FROM registry_history WHERE entity = 'leave'").fetchall()
    assert history == [("api:cd1-token",)]
    # A grid worker cannot change the roster.
    assert client.post("/v1/leave", json=body, headers=auth("gw1")).status_code == 403


def test_leave_without_cover_is_saved_with_a_warning_naming_the_gap(officer_api, db):
    auth, client = officer_api
    got = client.post("/v1/leave", headers=auth("gl1"), json={
        "worker_id": "gw1", "starts_at": (T0 - timedelta(hours=1)).isoformat(),
        "ends_at": (T0 + timedelta(hours=8)).isoformat()})
    assert got.status_code == 201, got.text
    [warning] = got.json()["warnings"]
    assert "网格 G1" in warning and "grid G1" in warning
    cancelled = client.post(f"/v1/leave/{got.json()['id']}/cancel", headers=auth("gl1"))
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_at"]
    assert _paged_at(db, _open(db), 1) == ["gl1", "gw1"]


def test_two_workers_swap_shifts(officer_api, db):
    auth, client = officer_api
    later = T0 + timedelta(days=2)
    with registry.changes(db, "test"):
        registry.add_shifts(db, [Shift(worker_id="gw1", starts_at=later,
                                       ends_at=later + timedelta(hours=12)),
                                 Shift(worker_id="gw2", starts_at=later + timedelta(hours=12),
                                       ends_at=later + timedelta(hours=24))])
    ids = [r[0] for r in db.execute("SELECT id FROM roster WHERE starts_at >= %s ORDER BY"
                                    " starts_at", [later])]
    got = client.post("/v1/roster/swap", json={"shift_ids": ids}, headers=auth("cd1"))
    assert got.status_code == 200, got.text
    assert [s["worker_id"] for s in got.json()] == ["gw2", "gw1"]
    # A grid worker and a community officer are not of one role: refused, nothing changed.
    cd1 = db.execute("SELECT id FROM roster WHERE worker_id = 'cd1'").fetchone()[0]
    refused = client.post("/v1/roster/swap", json={"shift_ids": [ids[0], cd1]},
                          headers=auth("cd1"))
    assert refused.status_code == 422


def test_leave_lists_only_the_callers_area(officer_api, db):
    auth, client = officer_api
    with registry.changes(db, "test"):
        registry.upsert(db, "grids", [Grid(id="G9", community_id="C1", name="Grid 9")])
        registry.upsert_workers(db, [Worker(id="gw9", name="gw9", role="grid_worker",
                                            areas=["G9"])])
    for who in ("gw1", "gw9"):
        assert client.post("/v1/leave", headers=auth("cd1"), json={
            "worker_id": who, "starts_at": T0.isoformat(),
            "ends_at": (T0 + timedelta(hours=8)).isoformat()}).status_code == 201
    window = {"from": (T0 - timedelta(hours=1)).isoformat(),
              "to": (T0 + timedelta(days=1)).isoformat()}
    seen = {who: {r["worker_id"] for r in client.get("/v1/leave", params=window,
                                                     headers=auth(who)).json()}
            for who in ("cd1", "gl1")}
    assert seen == {"cd1": {"gw1", "gw9"}, "gl1": {"gw1"}}       # G1's leader: G1 only


def test_a_grid_leader_reads_the_people_and_shifts_of_their_own_grid_only(officer_api, db):
    """The console's duty tab lets a grid leader swap shifts and put people on leave: it
    reads /v1/workers and /v1/roster. A leader sees their own grid's people (and phones),
    never another grid's; an officer still sees everyone they dispatch."""
    auth, client = officer_api
    later = T0 + timedelta(days=1)
    with registry.changes(db, "test"):
        registry.upsert(db, "grids", [Grid(id="G9", community_id="C1", name="Grid 9")])
        registry.upsert_workers(db, [Worker(id="gw9", name="gw9", role="grid_worker",
                                            areas=["G9"])])
        registry.add_shifts(db, [Shift(worker_id=w, starts_at=later,
                                       ends_at=later + timedelta(hours=12))
                                 for w in ("gw1", "gw9")])
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(days=3)).isoformat()}

    def seen(who: str) -> tuple[set[str], set[str]]:
        workers = client.get("/v1/workers", params={"limit": 500}, headers=auth(who))
        roster = client.get("/v1/roster", params=window, headers=auth(who))
        assert workers.status_code == roster.status_code == 200, (workers.text, roster.text)
        return ({w["id"] for w in workers.json()["items"]},
                {s["worker_id"] for s in roster.json()})

    leader_workers, leader_shifts = seen("gl1")
    assert "gw1" in leader_workers and "gw9" not in leader_workers
    assert "gw1" in leader_shifts and "gw9" not in leader_shifts
    officer_workers, officer_shifts = seen("cd1")
    assert {"gw1", "gw9"} <= officer_workers and {"gw1", "gw9"} <= officer_shifts
    assert client.get("/v1/workers/gw9", headers=auth("gl1")).status_code == 404
    assert client.get("/v1/workers/gw1", headers=auth("gl1")).status_code == 200
    # A grid worker still reads nobody's phone.
    assert client.get("/v1/workers", headers=auth("gw1")).status_code == 403
