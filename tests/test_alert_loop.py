"""The closed loop (alerts/loop.py), silences (alerts/silences.py), the incident reads
(alerts/queries.py) and the people's CLI (firegrid/alerts_cli.py), against a real database.

Incidents are inserted with SQL as the alert store would leave them, so these tests depend
on the schema only; times are fixed instants passed as `now`."""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts import loop, queries, silences
from alerts.errors import Conflict, Invalid, NotFound
from alerts.queries import Scope
from alerts.rules import FeedbackRules, load_policy
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import NewDevice
from firegrid import alerts_cli as cli
from runtime.settings import load_settings
from tests.api_support import grid  # noqa: F401 (fixture)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
POLICY = load_policy()  # feedback: 3 false alarms within 30 days
ALL = Scope.all()


@pytest.fixture
def place(db, grid):
    """The api_support grid (S1 > C1 > G1 {B1, B2}, G2 {B3}), detectors SD-1, SD-2 in B1,
    SD-3 in B3, and field technicians: T-C1 for the community, T-G1 for grid G1."""
    registry.provision(db, NoBrokerAuth(), [
        NewDevice(id=d, kind="smoke_detector", building_id=b, floor=1)
        for d, b in (("SD-1", "B1"), ("SD-2", "B1"), ("SD-3", "B3"))], "test", 1)
    with registry.changes(db, "test"):
        db.execute("INSERT INTO workers (id, name, role) VALUES"
                   " ('T-C1', 'Chen', 'field_technician'), ('T-G1', 'Gao', 'field_technician')")
        db.execute("INSERT INTO worker_areas (worker_id, community_id) VALUES ('T-C1', 'C1')")
        db.execute("INSERT INTO worker_areas (worker_id, grid_id) VALUES ('T-G1', 'G1')")


def open_incident(db, building: str = "B1", *, state: str = "notified",
                  severity: str = "warning", opened_at: datetime = T0,
                  devices: tuple[str, ...] = ("SD-1",), muted: bool = False) -> int:
    """An incident as the store and escalator leave it: rung 0 fired, timer running."""
    (incident_id,) = db.execute(
        "INSERT INTO incidents (building_id, hazard, severity, state, opened_at, last_alert_at,"
        " alert_count, ladder, rung, step, escalate_at, notified_at)"
        " VALUES (%s, 'fire', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [building, severity, state, opened_at, opened_at, len(devices), severity,
         -1 if state == "raised" else 0, 0 if state == "raised" else 1,
         opened_at + timedelta(seconds=60),
         None if state == "raised" else opened_at]).fetchone()
    for seq, device in enumerate(devices):
        db.execute("INSERT INTO alerts (device_id, ts, seq, rule, device_kind, building_id,"
                   " incident_id, received_at, muted) VALUES (%s, %s, %s, 'smoke_alarm',"
                   " 'smoke_detector', %s, %s, %s, %s)",
                   [device, opened_at, seq + 1000 * incident_id, building, incident_id,
                    opened_at, muted])
    return incident_id


def log_rows(db, incident_id: int) -> list[tuple]:
    return db.execute("SELECT at, actor, action, from_state, to_state, detail FROM incident_log"
                      " WHERE incident_id = %s ORDER BY id", [incident_id]).fetchall()


def incident_row(db, incident_id: int) -> dict:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM incidents WHERE id = %s", [incident_id]).fetchone()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- transitions ----------------------------------------------------------------------------

def test_acknowledge_arrive_resolve_are_audited_and_timed(db, place):
    i = open_incident(db)
    row = loop.acknowledge(db, i, "api:wang", "on my way", now=at(30))
    assert (row["state"], row["acknowledged_at"], row["acknowledged_by"], row["escalate_at"]) \
        == ("acknowledged", at(30), "api:wang", None)
    loop.arrive(db, i, "api:wang", now=at(120))
    row = loop.resolve(db, i, "api:wang", "cooking_steam", " pot left on the stove ", POLICY,
                       now=at(600))
    assert (row["state"], row["cause"], row["note"], row["resolved_at"], row["resolved_by"]) \
        == ("resolved", "cooking_steam", "pot left on the stove", at(600), "api:wang")
    assert row["on_site_at"] == at(120) and row["on_site_by"] == "api:wang"
    assert log_rows(db, i) == [
        (at(30), "api:wang", "acknowledged", "notified", "acknowledged", {"note": "on my way"}),
        (at(120), "api:wang", "on_site", "acknowledged", "on_site", {"note": None}),
        (at(600), "api:wang", "resolved", "on_site", "resolved",
         {"note": "pot left on the stove", "cause": "cooking_steam"}),
    ]
    shown = queries.incident(db, i, ALL)
    assert (shown["ack_s"], shown["arrive_s"], shown["resolve_s"]) == (30.0, 120.0, 600.0)
    assert [e["action"] for e in shown["log"]] == ["acknowledged", "on_site", "resolved"]


def test_arriving_acknowledges_too_and_logs_both(db, place):
    i = open_incident(db, state="raised")
    row = loop.arrive(db, i, "api:li", "smoke in the stairwell", now=at(45))
    assert (row["state"], row["acknowledged_at"], row["acknowledged_by"], row["on_site_at"],
            row["escalate_at"]) == ("on_site", at(45), "api:li", at(45), None)
    assert [(r[2], r[3], r[4]) for r in log_rows(db, i)] == [
        ("acknowledged", "raised", "acknowledged"), ("on_site", "acknowledged", "on_site")]
    # A repeated arrival (the phone retried) changes nothing.
    assert loop.arrive(db, i, "api:li", now=at(50)) == row
    assert len(log_rows(db, i)) == 2


def test_a_repeated_acknowledgement_returns_the_incident_unchanged(db, place):
    i = open_incident(db)
    first = loop.acknowledge(db, i, "api:wang", now=at(10))
    assert loop.acknowledge(db, i, "api:zhao", "me too", now=at(12)) == first
    loop.arrive(db, i, "api:wang", now=at(100))
    assert loop.acknowledge(db, i, "api:zhao", now=at(110))["state"] == "on_site"
    assert [r[2] for r in log_rows(db, i)] == ["acknowledged", "on_site"]
    assert incident_row(db, i)["acknowledged_by"] == "api:wang"


def test_resolving_without_acknowledgement_fills_the_acknowledgement(db, place):
    i = open_incident(db)
    row = loop.resolve(db, i, "cli:ops", "test_drill", "monthly drill", POLICY, now=at(300))
    assert (row["acknowledged_at"], row["acknowledged_by"], row["escalate_at"]) \
        == (at(300), "cli:ops", None)
    assert [(r[2], r[3]) for r in log_rows(db, i)] == [("resolved", "notified")]


def test_illegal_transitions_are_conflicts_and_change_nothing(db, place):
    i = open_incident(db)
    with pytest.raises(Conflict, match="only a resolved incident"):
        loop.reopen(db, i, "api:wang", "again", now=at(5))
    loop.resolve(db, i, "api:wang", "dust_insects", "a moth", POLICY, now=at(60))
    before = incident_row(db, i)
    for attempt in (lambda: loop.acknowledge(db, i, "api:wang", now=at(70)),
                    lambda: loop.arrive(db, i, "api:wang", now=at(70)),
                    lambda: loop.resolve(db, i, "api:wang", "real_fire", "x", POLICY,
                                         now=at(70))):
        with pytest.raises(Conflict):
            attempt()
    assert incident_row(db, i) == before
    assert len(log_rows(db, i)) == 1


def test_resolve_needs_a_known_cause_and_a_note(db, place):
    i = open_incident(db)
    with pytest.raises(Invalid) as exc:
        loop.resolve(db, i, "api:wang", "aliens", "saw them", POLICY)
    assert exc.value.field == "cause"
    for note in ("", "   ", None):
        with pytest.raises(Invalid) as exc:
            loop.resolve(db, i, "api:wang", "real_fire", note, POLICY)
        assert exc.value.field == "note"
    with pytest.raises(NotFound):
        loop.acknowledge(db, 999_999, "api:wang")
    assert incident_row(db, i)["state"] == "notified" and log_rows(db, i) == []


def test_reopen_restarts_the_ladder_at_once_and_wakes_the_escalators(db, db_url, place):
    i = open_incident(db, severity="confirmed")
    # The escalator had moved it to another ladder and rung before it was resolved.
    db.execute("UPDATE incidents SET ladder = 'warning', rung = 2, step = 5 WHERE id = %s", [i])
    loop.arrive(db, i, "api:wang", now=at(100))
    loop.resolve(db, i, "api:wang", "real_fire", "small fire, put out", POLICY, now=at(900))
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN firegrid_escalate")
        row = loop.reopen(db, i, "api:zhao", "smouldering again", now=at(1200))
        woke = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in woke] == ["firegrid_escalate"]
    assert (row["state"], row["reopened"], row["ladder"], row["rung"], row["escalate_at"],
            row["step"]) == ("raised", 1, "confirmed", -1, at(1200), 5)
    assert (row["resolved_at"], row["resolved_by"], row["cause"], row["note"]) == (None,) * 4
    # The first response stays: reports measure it.
    assert (row["acknowledged_at"], row["on_site_at"]) == (at(100), at(100))
    assert log_rows(db, i)[-1] == (at(1200), "api:zhao", "reopened", "resolved", "raised",
                                   {"note": "smouldering again"})
    # It climbs the loop again from raised.
    assert loop.acknowledge(db, i, "api:zhao", now=at(1230))["state"] == "acknowledged"
    assert incident_row(db, i)["acknowledged_at"] == at(100)


def test_reopen_conflicts_with_another_open_incident_of_the_building(db, place):
    old = open_incident(db)
    loop.resolve(db, old, "api:wang", "cooking_steam", "toast", POLICY, now=at(60))
    new = open_incident(db, opened_at=at(600))
    with pytest.raises(Conflict, match=f"incident {new} is open"):
        loop.reopen(db, old, "api:wang", "it was not toast", now=at(700))
    assert incident_row(db, old)["state"] == "resolved"
    assert [r[2] for r in log_rows(db, old)] == ["resolved"]


def test_two_people_acknowledging_at_once_give_one_log_row(db, db_url, place):
    i = open_incident(db)
    results: list = []
    with psycopg.connect(db_url, autocommit=True) as holder:
        # Hold the row so both acknowledgements are queued on its lock at the same time.
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM incidents WHERE id = %s FOR UPDATE", [i])

        def press(who: str) -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                results.append(loop.acknowledge(conn, i, who))

        threads = [threading.Thread(target=press, args=(who,)) for who in ("api:a", "api:b")]
        for t in threads:
            t.start()
        _await_lock_waiters(db, 2)
        holder.execute("COMMIT")
        for t in threads:
            t.join(timeout=30)
    assert len(results) == 2 and {r["state"] for r in results} == {"acknowledged"}
    rows = log_rows(db, i)
    assert len(rows) == 1 and rows[0][1] == incident_row(db, i)["acknowledged_by"]


def _await_lock_waiters(db, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (waiting,) = db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                " current_database() AND wait_event_type = 'Lock'").fetchone()
        if waiting >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{n} sessions never waited on the incident lock")


# --- false-alarm feedback -------------------------------------------------------------------

def _false_alarm(db, opened_at: datetime, devices=("SD-1",), cause="cooking_steam",
                 muted: bool = False) -> int:
    i = open_incident(db, opened_at=opened_at, devices=devices, muted=muted)
    loop.resolve(db, i, "api:wang", cause, "nothing burning", POLICY,
                 now=opened_at + timedelta(minutes=10))
    return i


def _tickets(db) -> list[tuple]:
    return db.execute("SELECT device_id, condition, assigned_to, detail, closed_at"
                      " FROM maintenance_tickets ORDER BY id").fetchall()


def test_repeated_false_alarms_open_one_ticket_at_the_threshold(db, place):
    day = timedelta(days=1)
    _false_alarm(db, T0 - 40 * day)                         # outside the 30-day window
    _false_alarm(db, T0 - 20 * day, devices=("SD-1", "SD-2"))
    _false_alarm(db, T0 - 10 * day, cause="real_fire")       # a real fire is no false alarm
    _false_alarm(db, T0 - 5 * day, muted=True)               # expected: the device was silenced
    _false_alarm(db, T0 - 2 * day, cause="dust_insects")
    assert _tickets(db) == []                                # two so far: below the threshold
    third = _false_alarm(db, T0, devices=("SD-1", "SD-2"), cause="device_fault")
    (ticket,) = _tickets(db)
    device, condition, assigned, detail, closed = ticket
    assert (device, condition, assigned, closed) == ("SD-1", "false_alarms", "T-G1", None)
    assert detail.startswith("3 false alarms in 30 days") and str(third) in detail
    (ticket_id,) = db.execute("SELECT id FROM maintenance_tickets").fetchone()
    assert log_rows(db, third)[-1][5]["tickets"] == [ticket_id]
    # A fourth adds no second ticket while the first is open.
    _false_alarm(db, T0 + day)
    assert len(_tickets(db)) == 1


def test_the_threshold_comes_from_the_policy_and_test_drills_never_count(db, place):
    strict = POLICY.model_copy(update={"feedback": FeedbackRules(false_alarms=1,
                                                                 window_days=7)})
    i = open_incident(db, devices=("SD-3",), building="B3")
    loop.resolve(db, i, "api:x", "test_drill", "drill", strict, now=at(60))
    assert _tickets(db) == []
    i = open_incident(db, devices=("SD-3",), building="B3", opened_at=at(600))
    loop.resolve(db, i, "api:x", "dust_insects", "spider", strict, now=at(660))
    # B3 is in grid G2: no grid technician there, so the community's.
    assert [(t[0], t[2]) for t in _tickets(db)] == [("SD-3", "T-C1")]


# --- silences -------------------------------------------------------------------------------

def test_silence_validation(db, place):
    hour = timedelta(hours=1)
    create = lambda **kw: silences.create(db, "cli:ops", now=T0, **{  # noqa: E731
        "ends_at": T0 + hour, "reason": "test mode", **kw})
    cases = [
        ({}, "device_id"),
        ({"device_id": "SD-1", "grid_id": "G1"}, "grid_id"),
        ({"device_id": "SD-1", "ends_at": T0 - hour}, "ends_at"),
        ({"device_id": "SD-1", "starts_at": T0 + 2 * hour}, "ends_at"),
        ({"device_id": "SD-1", "starts_at": T0 - 2 * hour, "ends_at": T0 - hour}, "ends_at"),
        ({"device_id": "SD-1", "ends_at": T0 + timedelta(days=91)}, "ends_at"),
        ({"device_id": "SD-1", "reason": "  "}, "reason"),
        ({"device_id": "SD-1", "ends_at": datetime(2026, 3, 3)}, "ends_at"),
        ({"device_id": "SD-1", "starts_at": T0 + timedelta(days=400),
          "ends_at": T0 + timedelta(days=401)}, "starts_at"),
    ]
    for kwargs, field in cases:
        with pytest.raises(Invalid) as exc:
            create(**kwargs)
        assert exc.value.field == field, kwargs
    for kwargs, field in (({"device_id": "NOPE"}, "device_id"),
                          ({"building_id": "B9"}, "building_id"), ({"grid_id": "G9"}, "grid_id")):
        with pytest.raises(NotFound) as exc:
            create(**kwargs)
        assert exc.value.field == field
    # Outside the caller's area reads like unknown.
    g2 = Scope(grids=("G2",))
    with pytest.raises(NotFound):
        create(device_id="SD-1", scope=g2)
    assert db.execute("SELECT count(*) FROM silences").fetchone() == (0,)
    row = create(building_id="B3", ends_at=T0 + timedelta(days=90), scope=g2)
    assert (row["building_id"], row["starts_at"], row["created_by"], row["running"]) \
        == ("B3", T0, "cli:ops", True)


def test_ending_and_listing_silences(db, place):
    running = silences.create(db, "a", device_id="SD-1", ends_at=at(3600), reason="r", now=T0)
    planned = silences.create(db, "b", grid_id="G1", starts_at=at(7200), ends_at=at(9000),
                              reason="drill", now=T0)
    other = silences.create(db, "c", building_id="B3", ends_at=at(600), reason="r", now=T0)
    listed = silences.list_silences(db, now=at(60))
    assert [r["id"] for r in listed] == [planned["id"], running["id"], other["id"]]
    assert [r["running"] for r in listed] == [False, True, True]
    g1 = Scope(grids=("G1",))
    assert {r["id"] for r in silences.list_silences(db, scope=g1, now=at(60))} \
        == {running["id"], planned["id"]}
    with pytest.raises(NotFound):
        silences.end(db, other["id"], "api:x", now=at(60), scope=g1)
    ended = silences.end(db, running["id"], "api:x", now=at(60))
    assert (ended["ends_at"], ended["running"]) == (at(60), False)
    assert silences.end(db, running["id"], "api:x", now=at(120))["ends_at"] == at(60)
    # A planned silence ended before it began never mutes anything.
    cancelled = silences.end(db, planned["id"], "api:x", now=at(60))
    assert cancelled["ends_at"] == at(60) and cancelled["starts_at"] < at(60)
    assert [r["id"] for r in silences.list_silences(db, now=at(60))] == [other["id"]]
    assert len(silences.list_silences(db, active_only=False, now=at(60))) == 3


# --- reads ----------------------------------------------------------------------------------

def test_lists_are_confined_to_the_scope_and_show_the_escalation(db, place):
    g1 = open_incident(db, "B1")
    g2 = open_incident(db, "B3", devices=("SD-3",), opened_at=at(60))
    done = open_incident(db, "B2", devices=(), opened_at=at(120))
    loop.resolve(db, done, "api:x", "test_drill", "drill", POLICY, now=at(180))
    db.execute("INSERT INTO incident_log (incident_id, at, actor, action, detail)"
               " VALUES (%s, %s, 'escalator', 'notified', %s)",
               [g2, at(61), Jsonb({"ladder": "warning", "rung": 0, "step": 1,
                                   "roles": ["grid_worker"], "workers": ["W-2"]})])
    ids = lambda **kw: [r["id"] for r in queries.list_incidents(db, **kw)]  # noqa: E731
    assert ids(scope=ALL) == [g2, g1]
    assert ids(scope=ALL, state="all") == [done, g2, g1]
    assert ids(scope=ALL, state="resolved") == [done]
    assert ids(scope=Scope(grids=("G1",)), state="all") == [done, g1]
    assert ids(scope=Scope(communities=("C1",))) == [g2, g1]
    assert ids(scope=Scope(streets=("S1",)), grid_id="G2") == [g2]
    assert ids(scope=Scope()) == []
    assert ids(scope=ALL, since=at(30)) == [g2]
    row = queries.list_incidents(db, scope=ALL, building_id="B3")[0]
    assert row["escalation"] == {
        "ladder": "warning", "rung": 0, "escalate_at": at(120), "exhausted": False,
        "last_notified_at": at(61), "last_notified_rung": 0, "roles": ["grid_worker"],
        "workers": ["W-2"]}
    assert (row["address"], row["grid_name"], row["community_name"], row["devices"]) \
        == ("B3 Shuiwei Rd", "Grid 2", "Shuiwei", ["SD-3"])
    assert queries.incident(db, g2, Scope(grids=("G1",))) is None
    assert queries.incident(db, g2, ALL)["alerts"][0]["device_id"] == "SD-3"


# --- the CLI --------------------------------------------------------------------------------

def _cli(db_url, *argv: str) -> int:
    top = argparse.ArgumentParser()
    cli.add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["alerts", *argv])
    return cli.run(args, load_settings(None, database={"url": db_url}))


def test_cli_lists_acts_and_shows(db, db_url, place, capsys):
    i = open_incident(db)
    assert _cli(db_url, "incidents") == 0
    assert f"{i:>6}  notified" in capsys.readouterr().out
    assert _cli(db_url, "ack", str(i), "--actor", "cli:duty", "--note", "seen") == 0
    assert _cli(db_url, "resolve", str(i), "--cause", "cooking_steam", "--note", "toast",
                "--actor", "cli:duty") == 0
    assert incident_row(db, i)["state"] == "resolved"
    assert [(r[1], r[2]) for r in log_rows(db, i)] == [("cli:duty", "acknowledged"),
                                                       ("cli:duty", "resolved")]
    capsys.readouterr()
    assert _cli(db_url, "show", str(i)) == 0
    out = capsys.readouterr().out
    assert "cooking_steam by cli:duty: toast" in out and "acknowledged" in out
    with pytest.raises(Conflict) as exc:
        _cli(db_url, "ack", str(i))
    assert exc.value.exit_code == 1
    with pytest.raises(NotFound) as exc:
        _cli(db_url, "show", "424242")
    assert exc.value.exit_code == 2


def test_cli_silences(db, db_url, place, capsys):
    assert _cli(db_url, "silence", "add", "--device", "SD-1", "--for", "2h", "--reason",
                "replacing the battery", "--actor", "cli:tech") == 0
    (silence_id, created_by, length) = db.execute(
        "SELECT id, created_by, ends_at - starts_at FROM silences").fetchone()
    assert created_by == "cli:tech" and timedelta(hours=2) - length < timedelta(seconds=5)
    assert _cli(db_url, "silence", "list") == 0
    assert "device SD-1" in capsys.readouterr().out
    assert _cli(db_url, "silence", "end", str(silence_id)) == 0
    capsys.readouterr()
    assert _cli(db_url, "silence", "list") == 0
    assert "SD-1" not in capsys.readouterr().out
    with pytest.raises(Invalid):
        _cli(db_url, "silence", "add", "--grid", "G1", "--for", "soon", "--reason", "x")
    with pytest.raises(Invalid):
        _cli(db_url, "silence", "add", "--grid", "G1", "--until", "2020-01-01T00:00+08:00",
             "--reason", "x")


def test_the_firegrid_command_maps_errors_to_exit_codes(db, db_url, place, monkeypatch,
                                                         capsys):
    from firegrid.cli import main
    monkeypatch.setenv("FIREGRID_DATABASE__URL", db_url)
    monkeypatch.delenv("FIREGRID_CONFIG", raising=False)
    assert main(["alerts", "ack", "424242"]) == 2
    assert "incident '424242' does not exist" in capsys.readouterr().err
    i = open_incident(db)
    assert main(["alerts", "arrive", str(i), "--actor", "cli:li"]) == 0
    assert main(["alerts", "resolve", str(i), "--cause", "test_drill", "--note", "drill"]) == 0
    assert main(["alerts", "arrive", str(i)]) == 1
    assert "is resolved" in capsys.readouterr().err
