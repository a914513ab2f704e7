"""/v1/incidents and /v1/silences: each caller sees and acts only in their own area, and the
closed loop's rules reach the HTTP answers (tests/test_alert_loop.py covers the rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from api.auth import create_token
from tests.api_support import api, grid, settings  # noqa: F401 (fixtures)
from tests.test_alert_loop import open_incident, place  # noqa: F401 (fixture)

# Who is who: (token name, role, worker, area column, area).
PEOPLE = [
    ("wang", "grid_worker", "W-G1", "grid_id", "G1"),
    ("liu", "grid_worker", "W-G2", "grid_id", "G2"),
    ("zhou", "grid_leader", "L-G1", "grid_id", "G1"),
    ("sun", "community_duty", "D-C1", "community_id", "C1"),
    ("ma", "street_duty", "D-S1", "street_id", "S1"),
    ("gao", "field_technician", "T-G1", None, None),  # place() gives T-G1 grid G1
]


@pytest.fixture
def people(api, db, place):
    """Tokens for workers with areas, added to api's tokens under their names."""
    for name, role, worker, column, area in PEOPLE:
        if column:
            db.execute("INSERT INTO workers (id, name, role) VALUES (%s, %s, %s)",
                       [worker, name, role])
            db.execute(f"INSERT INTO worker_areas (worker_id, {column}) VALUES (%s, %s)",
                       [worker, area])
        api.tokens[name] = create_token(db, name, role, worker)
    return api


@pytest.fixture
def fires(db, place):
    """An incident in grid G1 (B1) and one in G2 (B3), both paged at rung 0."""
    now = datetime.now(UTC)
    g1 = open_incident(db, "B1", opened_at=now - timedelta(seconds=30))
    g2 = open_incident(db, "B3", devices=("SD-3",), opened_at=now - timedelta(seconds=20))
    for incident, worker in ((g1, "W-G1"), (g2, "W-G2")):
        db.execute("INSERT INTO incident_log (incident_id, at, actor, action, from_state,"
                   " to_state, detail) VALUES (%s, now(), 'escalator', 'notified', 'raised',"
                   " 'notified', %s)",
                   [incident, Jsonb({"ladder": "warning", "rung": 0, "step": 1,
                                     "roles": ["grid_worker"], "workers": [worker]})])
    return g1, g2


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def locs(response) -> list[str]:
    assert response.status_code == 422, response.text
    return [err["loc"][-1] for err in response.json()["detail"]]


def test_a_grid_worker_sees_and_acknowledges_only_their_grid(people, fires, db):
    g1, g2 = fires
    wang = people.as_("wang")
    assert ids(wang.get("/v1/incidents")) == [g1]
    assert ids(wang.get("/v1/incidents", params={"grid_id": "G2"})) == []
    for r in (wang.get(f"/v1/incidents/{g2}"),
              wang.post(f"/v1/incidents/{g2}/acknowledge", json={"note": "mine?"})):
        assert r.status_code == 404 and r.json() == {"detail": f"incident '{g2}' does not exist"}
    assert db.execute("SELECT state FROM incidents WHERE id = %s", [g2]).fetchone() \
        == ("notified",)

    r = wang.post(f"/v1/incidents/{g1}/acknowledge", json={"note": "on my way"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["acknowledged_by"], body["escalation"]["escalate_at"]) \
        == ("acknowledged", "api:wang", None)
    assert body["log"][-1]["action"] == "acknowledged"
    assert body["log"][-1]["detail"] == {"note": "on my way"}
    assert 0 < body["ack_s"] < 600
    # The phone retries without a body: same answer, no second log row.
    again = wang.post(f"/v1/incidents/{g1}/acknowledge")
    assert again.status_code == 200 and again.json()["log"] == body["log"]
    assert db.execute("SELECT count(*) FROM incident_log WHERE incident_id = %s"
                      " AND action = 'acknowledged'", [g1]).fetchone() == (1,)


def test_a_community_officer_sees_both_grids_with_their_escalation(people, fires):
    g1, g2 = fires
    sun = people.as_("sun")
    r = sun.get("/v1/incidents")
    assert ids(r) == [g2, g1]
    item = r.json()["items"][0]
    assert (item["grid_id"], item["community_name"], item["address"], item["devices"]) \
        == ("G2", "Shuiwei", "B3 Shuiwei Rd", ["SD-3"])
    esc = item["escalation"]
    assert (esc["ladder"], esc["rung"], esc["roles"], esc["workers"], esc["exhausted"]) \
        == ("warning", 0, ["grid_worker"], ["W-G2"], False)
    assert esc["escalate_at"] is not None and esc["last_notified_at"] is not None
    assert ids(sun.get("/v1/incidents", params={"grid_id": "G1"})) == [g1]
    assert ids(people.as_("ma").get("/v1/incidents")) == [g2, g1]
    assert ids(people.as_("admin").get("/v1/incidents")) == [g2, g1]
    assert sun.get(f"/v1/incidents/{g1}").json()["pages"] == []


def test_resolve_needs_a_cause_and_a_note_then_reopen(people, fires, db):
    g1, _ = fires
    zhou = people.as_("zhou")
    url = f"/v1/incidents/{g1}"
    assert sorted(locs(zhou.post(f"{url}/resolve", json={}))) == ["cause", "note"]
    assert locs(zhou.post(f"{url}/resolve", json={"cause": "real_fire"})) == ["note"]
    assert locs(zhou.post(f"{url}/resolve", json={"cause": "real_fire", "note": "  "})) \
        == ["note"]
    assert locs(zhou.post(f"{url}/resolve", json={"cause": "arson?", "note": "x"})) == ["cause"]
    r = zhou.post(f"{url}/resolve", json={"cause": "cooking_steam", "note": "burnt rice"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["cause"], r.json()["resolved_by"]) \
        == ("resolved", "cooking_steam", "api:zhou")
    assert zhou.post(f"{url}/resolve", json={"cause": "real_fire", "note": "x"}).status_code \
        == 409
    assert zhou.post(f"{url}/acknowledge").status_code == 409
    assert locs(zhou.post(f"{url}/reopen", json={})) == ["note"]
    r = zhou.post(f"{url}/reopen", json={"note": "smoke again"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["reopened"], r.json()["escalation"]["rung"]) \
        == ("raised", 1, -1)
    # While reopened it holds the building: resolving it and opening a new one, then
    # reopening the old one, is a conflict naming the new one.
    zhou.post(f"{url}/resolve", json={"cause": "real_fire", "note": "out"})
    newer = open_incident(db, "B1", devices=("SD-2",))
    r = zhou.post(f"{url}/reopen", json={"note": "again"})
    assert r.status_code == 409 and f"incident {newer}" in r.json()["detail"]


def test_arrive_through_the_api(people, fires):
    g1, _ = fires
    r = people.as_("wang").post(f"/v1/incidents/{g1}/arrive", json={"note": "3F corridor"})
    assert r.status_code == 200, r.text
    assert [(e["action"], e["to_state"]) for e in r.json()["log"][-2:]] == [
        ("acknowledged", "acknowledged"), ("on_site", "on_site")]
    assert r.json()["on_site_by"] == "api:wang"


def test_technicians_read_their_grid_and_silence_devices_but_do_not_act(people, fires):
    g1, g2 = fires
    gao = people.as_("gao")
    assert ids(gao.get("/v1/incidents")) == [g1]
    assert gao.post(f"/v1/incidents/{g1}/acknowledge").status_code == 403
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    r = gao.post("/v1/silences", json={"device_id": "SD-1", "ends_at": until,
                                       "reason": "test mode while replacing the sounder"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert (silence["device_id"], silence["created_by"], silence["running"]) \
        == ("SD-1", "api:gao", True)
    # SD-3 is in grid G2: unknown to this technician.
    assert locs(gao.post("/v1/silences", json={"device_id": "SD-3", "ends_at": until,
                                                "reason": "x"})) == ["device_id"]
    assert [s["id"] for s in gao.get("/v1/silences").json()["items"]] == [silence["id"]]
    assert people.as_("liu").get("/v1/silences").json()["items"] == []
    assert people.as_("sun").post(f"/v1/silences/{silence['id']}/end").status_code == 200
    assert gao.get("/v1/silences").json()["items"] == []
    assert people.as_("liu").post(f"/v1/silences/{silence['id']}/end").status_code == 403
    assert people.as_("ma").post(f"/v1/silences/{silence['id']}/end").json()["running"] \
        is False


def test_silence_bodies_are_checked(people):
    admin = people.as_("admin")
    soon = datetime.now(UTC) + timedelta(hours=1)
    body = {"building_id": "B1", "ends_at": soon.isoformat(), "reason": "renovation"}
    assert locs(admin.post("/v1/silences", json={**body, "grid_id": "G1"})) == ["grid_id"]
    assert locs(admin.post("/v1/silences", json={**body, "ends_at": "2026-03-02T08:00:00"})) \
        == ["ends_at"]
    far = (soon + timedelta(days=91)).isoformat()
    assert locs(admin.post("/v1/silences", json={**body, "ends_at": far})) == ["ends_at"]
    assert locs(admin.post("/v1/silences", json={**body, "building_id": "B404"})) \
        == ["building_id"]
    assert admin.post("/v1/silences/999999/end").status_code == 404
    assert admin.post("/v1/silences", json=body).status_code == 201


def test_permissions_per_role(people, fires):
    g1, _ = fires
    # Role tokens of the api fixture belong to no worker: they cover no area.
    for role in ("grid_worker", "community_duty", "field_technician"):
        r = people.as_(role).get("/v1/incidents")
        assert r.status_code == 403 and "belongs to no worker" in r.json()["detail"], role
    expected = {  # (acknowledge, create a silence) for each worker, in their own area
        "wang": (200, 403), "zhou": (200, 201), "sun": (200, 201), "ma": (200, 201),
        "gao": (403, 201), "admin": (200, 201)}
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for who, (ack, silence) in expected.items():
        caller = people.as_(who)
        assert caller.get(f"/v1/incidents/{g1}").status_code == 200, who
        assert caller.post(f"/v1/incidents/{g1}/acknowledge").status_code == ack, who
        r = caller.post("/v1/silences", json={"building_id": "B1", "ends_at": until,
                                              "reason": "drill"})
        assert r.status_code == silence, (who, r.text)


def test_resolved_since_looks_back_by_resolution_time(people, fires, db):
    g1, g2 = fires
    sun = people.as_("sun")
    for incident in (g1, g2):
        r = sun.post(f"/v1/incidents/{incident}/resolve",
                     json={"cause": "dust_insects", "note": "a moth"})
        assert r.status_code == 200, r.text
    # g1 was opened two days ago and resolved an hour ago: a look back over the last day by
    # resolution time has it, one by opening time does not. g2 was over two days ago.
    for incident, opened, resolved in ((g1, "2 days", "1 hour"), (g2, "3 days", "2 days")):
        db.execute("UPDATE incidents SET opened_at = now() - %s::interval,"
                   " resolved_at = now() - %s::interval WHERE id = %s",
                   [opened, resolved, incident])
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert ids(sun.get("/v1/incidents", params={"state": "resolved",
                                                "resolved_since": day})) == [g1]
    assert ids(sun.get("/v1/incidents", params={"state": "resolved", "since": day})) == []
    assert ids(sun.get("/v1/incidents", params={"state": "open", "resolved_since": day})) == []
    assert locs(sun.get("/v1/incidents", params={"resolved_since": "yesterday"})) \
        == ["resolved_since"]
