"""The provisioning API against a real PostgreSQL: each test asserts on the rows."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from api.app import create_app
from api.auth import create_token, revoke_token
from devices import monitor
from devices.broker import NoBrokerAuth
from devices.credentials import verify_password
from runtime.settings import DevicesSettings, load_settings
from tests.api_support import (  # noqa: F401 (fixtures)
    TestClient,
    api,
    detector,
    grid,
    settings,
    token_name,
)

TECH = f"api:{token_name('field_technician')}"
ADMIN = f"api:{token_name('admin')}"


def _field(response, name: str) -> bool:
    """True when a 422 answer names `name` as the last element of one error's loc."""
    assert response.status_code == 422, response.text
    return any(err["loc"][-1] == name for err in response.json()["detail"])


def _device_row(db, device_id: str) -> dict:
    cur = db.execute("SELECT * FROM devices WHERE id = %s", [device_id])
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else {}


# --- devices ------------------------------------------------------------------------------

def test_register_stores_only_a_hash_and_records_the_technician(api, grid, db, settings):
    r = api.as_("field_technician").post("/v1/devices", json=detector())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == "SD-0001" and len(body["password"]) >= 20
    assert r.headers["cache-control"] == "no-store"

    row = _device_row(db, "SD-0001")
    assert (row["building_id"], row["state"], row["heartbeat_s"]) == ("B1", "provisioned", 3600)
    assert body["password"] not in (row["password_hash"], row["password_salt"])
    assert verify_password(body["password"], row["password_hash"], row["password_salt"],
                           settings.broker_auth.hash_iterations)
    history = db.execute("SELECT actor, action FROM registry_history"
                         " WHERE entity = 'devices' AND entity_id = 'SD-0001'").fetchall()
    assert history == [(TECH, "insert")]

    # The password is not answered again, by any read.
    again = api.as_("field_technician").get("/v1/devices/SD-0001")
    assert again.status_code == 200 and body["password"] not in again.text


def test_registering_an_id_twice_is_a_conflict_naming_id(api, grid, db):
    tech = api.as_("field_technician")
    assert tech.post("/v1/devices", json=detector()).status_code == 201
    r = tech.post("/v1/devices", json=detector(building_id="B2"))
    assert r.status_code == 409 and r.json()["field"] == "id"
    assert _device_row(db, "SD-0001")["building_id"] == "B1"


def test_unknown_building_is_a_422_naming_building_id(api, grid, db):
    tech = api.as_("field_technician")
    r = tech.post("/v1/devices", json=detector(building_id="NO-SUCH-B"))
    assert _field(r, "building_id")
    assert "NO-SUCH-B" in r.text
    assert _device_row(db, "SD-0001") == {}

    assert tech.post("/v1/devices", json=detector()).status_code == 201
    r = tech.post("/v1/devices/SD-0001/move", json={"building_id": "NO-SUCH-B"})
    assert _field(r, "building_id")
    assert _device_row(db, "SD-0001")["building_id"] == "B1"


def test_move_state_rotate_and_retire_change_the_rows(api, grid, db, settings):
    tech = api.as_("field_technician")
    first = tech.post("/v1/devices", json=detector()).json()["password"]

    r = tech.post("/v1/devices/SD-0001/move",
                  json={"building_id": "B3", "floor": 5, "location": "stairwell"})
    assert r.status_code == 200, r.text
    row = _device_row(db, "SD-0001")
    assert (row["building_id"], row["floor"], row["location"]) == ("B3", 5, "stairwell")

    assert tech.post("/v1/devices/SD-0001/state", json={"state": "maintenance"}).status_code == 200
    assert _device_row(db, "SD-0001")["state"] == "maintenance"
    assert tech.post("/v1/devices/SD-0001/state", json={"state": "active"}).status_code == 200
    assert _device_row(db, "SD-0001")["state"] == "active"
    assert _field(tech.post("/v1/devices/SD-0001/state", json={"state": "retired"}), "state")

    r = tech.post("/v1/devices/SD-0001/rotate-credentials")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    second = r.json()["password"]
    row = _device_row(db, "SD-0001")
    n = settings.broker_auth.hash_iterations
    assert verify_password(second, row["password_hash"], row["password_salt"], n)
    assert not verify_password(first, row["password_hash"], row["password_salt"], n)
    assert row["credentials_rotated_at"] is not None

    r = tech.post("/v1/devices/SD-0001/retire")
    assert r.status_code == 200 and r.json()["state"] == "retired"
    row = _device_row(db, "SD-0001")
    assert (row["state"], row["password_hash"]) == ("retired", None)
    assert row["retired_at"] is not None

    actions = db.execute("SELECT actor, count(*) FROM registry_history WHERE entity = 'devices'"
                         " GROUP BY actor").fetchall()
    assert actions == [(TECH, 6)]  # insert, move, maintenance, active, rotate, retire


def test_a_retired_device_cannot_be_moved_rotated_or_retired(api, grid, db):
    tech = api.as_("field_technician")
    tech.post("/v1/devices", json=detector())
    tech.post("/v1/devices/SD-0001/retire")
    for path, body in (("move", {"building_id": "B2"}), ("rotate-credentials", None),
                       ("retire", None), ("state", {"state": "active"})):
        r = tech.post(f"/v1/devices/SD-0001/{path}", json=body)
        assert r.status_code == 409, (path, r.text)
    row = _device_row(db, "SD-0001")
    assert (row["building_id"], row["state"]) == ("B1", "retired")


def test_unknown_or_malformed_device_ids(api, grid):
    tech = api.as_("field_technician")
    assert tech.get("/v1/devices/NOPE").status_code == 404
    assert tech.post("/v1/devices/NOPE/retire").status_code == 404
    r = tech.get("/v1/devices/bad id!")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "device_id"]


def test_replace_is_retire_then_register(api, grid, db):
    tech = api.as_("field_technician")
    tech.post("/v1/devices", json=detector("SD-OLD"))
    assert tech.post("/v1/devices/SD-OLD/retire").status_code == 200
    assert tech.post("/v1/devices", json=detector("SD-NEW")).status_code == 201
    states = dict(db.execute("SELECT id, state FROM devices").fetchall())
    assert states == {"SD-OLD": "retired", "SD-NEW": "provisioned"}


def test_replace_moves_the_place_and_links_the_history_in_one_step(api, grid, db, settings):
    tech = api.as_("field_technician")
    tech.post("/v1/devices", json=detector("GW-OLD", "B1", kind="gateway", floor=1))
    tech.post("/v1/devices", json={**detector("SD-OLD", "B1", floor=3, location="301"),
                                   "model": "JTY-1", "gateway_id": "GW-OLD"})
    db.execute("INSERT INTO quarantine (device_id, first_seen, last_seen, messages, last_topic)"
               " VALUES ('SD-NEW', now(), now(), 3, 'fg/v1/SD-NEW/telemetry')")
    r = tech.post("/v1/devices/SD-OLD/replace", json={"id": "SD-NEW"})
    assert r.status_code == 201, r.text
    creds = r.json()
    assert (creds["username"], creds["kind"]) == ("SD-NEW", "smoke_detector")
    assert r.headers["cache-control"] == "no-store"
    new, old = _device_row(db, "SD-NEW"), _device_row(db, "SD-OLD")
    assert (new["building_id"], new["floor"], new["location"], new["model"], new["gateway_id"],
            new["replaces"], new["state"]) == ("B1", 3, "301", "JTY-1", "GW-OLD", "SD-OLD",
                                                "provisioned")
    assert verify_password(creds["password"], new["password_hash"], new["password_salt"],
                           settings.broker_auth.hash_iterations)
    assert (old["state"], old["password_hash"]) == ("retired", None)
    answer = tech.get("/v1/devices/SD-NEW").json()
    assert (answer["replaces"], answer["replaced_by"]) == ("SD-OLD", None)
    assert tech.get("/v1/devices/SD-OLD").json()["replaced_by"] == "SD-NEW"
    history = tech.get("/v1/devices/SD-NEW/history").json()["items"]
    assert [(h["actor"], h["action"], h["new"]["replaces"]) for h in history] == [
        (TECH, "insert", "SD-OLD")]
    assert db.execute("SELECT claimed_by FROM quarantine WHERE device_id = 'SD-NEW'"
                      ).fetchone() == (TECH,)

    # A gateway's devices follow it to the new unit.
    assert tech.post("/v1/devices/GW-OLD/replace",
                     json={"id": "GW-NEW", "model": "GW-5G"}).status_code == 201
    assert _device_row(db, "SD-NEW")["gateway_id"] == "GW-NEW"
    assert _device_row(db, "GW-NEW")["model"] == "GW-5G"
    # Refusals: a retired device, an unknown one, a new id already registered, a reserved id,
    # and a duty officer.
    assert tech.post("/v1/devices/SD-OLD/replace", json={"id": "SD-X"}).status_code == 409
    assert tech.post("/v1/devices/NOPE/replace", json={"id": "SD-X"}).status_code == 404
    taken = tech.post("/v1/devices/SD-NEW/replace", json={"id": "GW-NEW"})
    assert taken.status_code == 409 and _device_row(db, "SD-NEW")["state"] == "provisioned"
    assert _field(tech.post("/v1/devices/SD-NEW/replace", json={"id": "firegrid-1"}), "id")
    assert api.as_("community_duty").post("/v1/devices/SD-NEW/replace",
                                          json={"id": "SD-Y"}).status_code == 403


def test_device_answers_liveness_open_tickets_and_history(api, grid, db):
    tech = api.as_("field_technician")
    tech.post("/v1/devices", json=detector())
    tech.post("/v1/devices", json=detector("CAM-1", "B3", kind="camera"))
    db.execute("INSERT INTO device_status (device_id, last_seen, battery_pct)"
               " VALUES ('SD-0001', now(), 15)")
    db.execute("INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail)"
               " VALUES ('SD-0001', 'low_battery', now(), 'battery 15%')")

    duty = api.as_("community_duty")
    one = duty.get("/v1/devices/SD-0001").json()
    assert one["battery_pct"] == 15 and one["last_seen"] is not None
    assert [t["condition"] for t in one["open_tickets"]] == ["low_battery"]

    listing = duty.get("/v1/devices", params={"grid_id": "G1"}).json()
    assert [d["id"] for d in listing["items"]] == ["SD-0001"]
    assert listing["items"][0]["open_tickets"] == ["low_battery"]
    assert [d["id"] for d in duty.get("/v1/devices", params={"kind": "camera"}).json()["items"]] \
        == ["CAM-1"]
    first = duty.get("/v1/devices", params={"limit": 1}).json()
    assert [d["id"] for d in first["items"]] == ["CAM-1"] and first["next_offset"] == 1
    second = duty.get("/v1/devices", params={"limit": 1, "offset": 1}).json()
    assert [d["id"] for d in second["items"]] == ["SD-0001"] and second["next_offset"] is None

    tech.post("/v1/devices/SD-0001/move", json={"building_id": "B2"})
    history = duty.get("/v1/devices/SD-0001/history").json()["items"]
    assert [(h["actor"], h["action"]) for h in history] == [(TECH, "insert"), (TECH, "update")]
    assert history[1]["changed"] == ["building_id", "floor", "location"]
    assert "password_hash" not in history[0]["new"]


# --- the hierarchy ------------------------------------------------------------------------

def test_admin_upserts_the_hierarchy_by_id(api, db):
    admin = api.as_("admin")
    assert admin.put("/v1/streets/S9", json={"name": "Nanyuan"}).status_code == 200
    assert admin.put("/v1/communities/C9", json={"street_id": "S9", "name": "Nanyuan 1"}).json() \
        == {"id": "C9", "street_id": "S9", "name": "Nanyuan 1"}
    assert admin.put("/v1/grids/G9", json={"community_id": "C9", "name": "G9",
                                           "households": 420}).status_code == 200
    building = {"grid_id": "G9", "address": "12 Nanyuan Rd", "lat": 22.53, "lon": 114.08,
                "floors": 8, "use": "rental"}
    assert admin.put("/v1/buildings/B9", json=building).status_code == 200
    r = admin.put("/v1/buildings/B9", json={**building, "id": "B9", "floors": 9})
    assert r.status_code == 200 and r.json()["floors"] == 9
    assert db.execute("SELECT floors FROM buildings WHERE id = 'B9'").fetchone() == (9,)
    assert db.execute("SELECT actor FROM registry_history WHERE entity = 'buildings'"
                      " ORDER BY id").fetchall() == [(ADMIN,), (ADMIN,)]

    assert _field(admin.put("/v1/buildings/B9", json={**building, "id": "B8"}), "id")
    reader = api.as_("street_duty")
    listed = reader.get("/v1/buildings", params={"grid_id": "G9"}).json()["items"]
    assert [b["id"] for b in listed] == ["B9"]
    assert reader.get("/v1/grids/G9").json()["households"] == 420
    assert reader.get("/v1/grids/NOPE").status_code == 404


def test_bad_coordinates_are_a_422_naming_lat(api, grid, db):
    admin = api.as_("admin")
    building = {"grid_id": "G1", "address": "1 Shuiwei Rd", "floors": 3, "use": "shop"}
    assert _field(admin.put("/v1/buildings/B7", json={**building, "lat": 95.0, "lon": 114.0}),
                  "lat")
    assert _field(admin.put("/v1/buildings/B7", json={**building, "lat": "north", "lon": 1}),
                  "lat")
    assert admin.put("/v1/buildings/B7",
                     json={**building, "lat": 0, "lon": 0}).status_code == 422
    assert _field(admin.put("/v1/buildings/B7",
                            json={**building, "lat": 22.5, "lon": 114, "grid_id": "G404"}),
                  "grid_id")
    assert db.execute("SELECT count(*) FROM buildings WHERE id = 'B7'").fetchone() == (0,)


# --- people -------------------------------------------------------------------------------

def test_workers_with_areas_and_the_roster(api, grid, db):
    admin = api.as_("admin")
    r = admin.put("/v1/workers/W1", json={"name": "Li Na", "role": "grid_worker",
                                          "phone": "+8613800000001", "areas": ["G1", "G2"],
                                          "channels": {"sms": "+8613800000001"}})
    assert r.status_code == 200 and r.json()["areas"] == ["G1", "G2"]
    assert db.execute("SELECT grid_id FROM worker_areas WHERE worker_id = 'W1'"
                      " ORDER BY grid_id").fetchall() == [("G1",), ("G2",)]
    admin.put("/v1/workers/W1", json={"name": "Li Na", "role": "grid_worker", "areas": ["G2"]})
    assert db.execute("SELECT grid_id FROM worker_areas WHERE worker_id = 'W1'").fetchall() \
        == [("G2",)]

    r = admin.put("/v1/workers/W2", json={"name": "Wang", "role": "community_duty",
                                          "areas": ["G1"]})  # a grid is not a community
    assert _field(r, "areas")
    assert db.execute("SELECT count(*) FROM workers WHERE id = 'W2'").fetchone() == (0,)

    start = datetime(2026, 3, 2, 8, tzinfo=timezone(timedelta(hours=8)))
    shifts = [{"worker_id": "W1", "starts_at": (start + timedelta(days=d)).isoformat(),
               "ends_at": (start + timedelta(days=d, hours=12)).isoformat()} for d in range(3)]
    r = admin.post("/v1/roster", json=shifts)
    assert r.status_code == 201 and r.json() == {"saved": 3}
    assert db.execute("SELECT count(*) FROM roster WHERE worker_id = 'W1'").fetchone() == (3,)
    assert _field(admin.post("/v1/roster", json=[{**shifts[0], "worker_id": "W404"}]),
                  "worker_id")
    assert _field(admin.post("/v1/roster",
                             json=[{**shifts[0], "ends_at": shifts[0]["starts_at"]}]), "ends_at")

    duty = api.as_("street_duty")
    window = {"from": (start + timedelta(hours=1)).isoformat(),
              "to": (start + timedelta(days=1, hours=1)).isoformat()}
    got = duty.get("/v1/roster", params=window).json()
    assert [(s["worker_id"], s["name"]) for s in got] == [("W1", "Li Na")] * 2
    assert duty.get("/v1/roster", params={"from": "2026-03-02T08:00:00"}).status_code == 422
    assert duty.get("/v1/roster", params={**window, "to": window["from"]}).status_code == 422
    assert duty.get("/v1/roster", params={"from": "1900-01-01T00:00:00Z"}).status_code == 422
    r = admin.post("/v1/roster", json=[{**shifts[0], "starts_at": "0001-01-01T00:00:00+14:00"}])
    assert _field(r, "starts_at")
    assert [w["id"] for w in duty.get("/v1/workers", params={"area": "G2"}).json()["items"]] \
        == ["W1"]


# --- tickets and quarantine ---------------------------------------------------------------

def _ticket(db, device_id: str, condition: str) -> int:
    return db.execute("INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail)"
                      " VALUES (%s, %s, now(), 'reported') RETURNING id",
                      [device_id, condition]).fetchone()[0]


def test_closing_a_ticket_by_hand_clears_its_condition(api, grid, db):
    tech = api.as_("field_technician")
    tech.post("/v1/devices", json=detector())
    db.execute("INSERT INTO device_conditions (device_id, condition, active, changed_ts)"
               " VALUES ('SD-0001', 'tamper', true, now() - interval '1 hour')")
    tamper = _ticket(db, "SD-0001", "tamper")
    offline = _ticket(db, "SD-0001", "offline")

    open_ = api.as_("community_duty").get("/v1/tickets", params={"grid_id": "G1"}).json()
    assert sorted(t["id"] for t in open_["items"]) == sorted([tamper, offline])

    r = tech.post(f"/v1/tickets/{tamper}/close", json={"note": "remounted on the ceiling"})
    assert r.status_code == 200, r.text
    closed = db.execute("SELECT close_reason, closed_by, detail, close_note FROM"
                        " maintenance_tickets WHERE id = %s AND closed_at IS NOT NULL",
                        [tamper]).fetchone()
    assert closed == ("manual", TECH, "reported", "remounted on the ceiling")
    assert db.execute("SELECT active FROM device_conditions WHERE device_id = 'SD-0001'"
                      ).fetchone() == (False,)

    assert tech.post(f"/v1/tickets/{offline}/close", json={"note": "power back"}).status_code == 200
    assert db.execute("SELECT close_reason FROM maintenance_tickets WHERE id = %s",
                      [offline]).fetchone() == ("manual",)
    # The monitor does not reopen the tamper ticket from the report made before the repair.
    db.execute("UPDATE devices SET state = 'active'")
    monitor.check(db, datetime.now(UTC), DevicesSettings())
    assert db.execute("SELECT count(*) FROM maintenance_tickets WHERE closed_at IS NULL"
                      ).fetchone() == (0,)
    assert tech.post(f"/v1/tickets/{offline}/close", json={"note": "again"}).status_code == 409
    assert tech.post("/v1/tickets/999999/close", json={"note": "x"}).status_code == 404
    assert _field(tech.post(f"/v1/tickets/{tamper}/close", json={"note": ""}), "note")
    assert tech.get("/v1/tickets").json()["items"] == []
    assert len(tech.get("/v1/tickets", params={"status": "closed"}).json()["items"]) == 2


def _quarantined(db, device_id: str) -> None:
    db.execute("INSERT INTO quarantine (device_id, first_seen, last_seen, messages, last_topic)"
               " VALUES (%s, now(), now(), 3, %s)", [device_id, f"fg/v1/{device_id}/telemetry"])


def test_claiming_a_quarantined_id_registers_it_and_marks_the_row(api, grid, db):
    _quarantined(db, "SD-LOST")
    tech = api.as_("field_technician")
    assert [q["device_id"] for q in tech.get("/v1/quarantine").json()["items"]] == ["SD-LOST"]

    # A failed registration leaves the quarantine row unclaimed (one transaction).
    r = tech.post("/v1/quarantine/SD-LOST/claim",
                  json={"kind": "smoke_detector", "building_id": "B404"})
    assert _field(r, "building_id")
    assert db.execute("SELECT claimed_at FROM quarantine").fetchone() == (None,)

    r = tech.post("/v1/quarantine/SD-LOST/claim",
                  json={"kind": "smoke_detector", "building_id": "B2", "floor": 4})
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "SD-LOST" and r.json()["password"]
    assert _device_row(db, "SD-LOST")["building_id"] == "B2"
    assert db.execute("SELECT claimed_by, claimed_at IS NOT NULL FROM quarantine").fetchone() \
        == (TECH, True)
    assert tech.get("/v1/quarantine").json()["items"] == []

    assert tech.post("/v1/quarantine/SD-LOST/claim",
                     json={"kind": "smoke_detector", "building_id": "B2"}).status_code == 409
    assert tech.post("/v1/quarantine/NEVER-SEEN/claim",
                     json={"kind": "smoke_detector", "building_id": "B2"}).status_code == 404
    assert _field(tech.post("/v1/quarantine/SD-LOST/claim",
                            json={"id": "OTHER", "kind": "camera", "building_id": "B2"}), "id")
    assert _device_row(db, "NEVER-SEEN") == {}


# --- tokens -------------------------------------------------------------------------------

def test_tokens_are_stored_as_hashes_and_revocable(api, db):
    admin = api.as_("admin")
    r = admin.post("/v1/tokens", json={"name": "tech-zhang", "role": "field_technician"})
    assert r.status_code == 201, r.text
    token, token_id = r.json()["token"], r.json()["id"]
    stored = db.execute("SELECT token_sha256, role FROM api_tokens WHERE id = %s",
                        [token_id]).fetchone()
    assert stored[1] == "field_technician" and token.encode() not in bytes(stored[0])
    assert len(bytes(stored[0])) == 32

    as_new = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/tickets", headers=as_new).status_code == 200
    assert admin.post(f"/v1/tokens/{token_id}/revoke").json()["revoked_at"] is not None
    assert api.client.get("/v1/tickets", headers=as_new).status_code == 401
    assert token_id not in [t["id"] for t in admin.get("/v1/tokens").json()]
    assert admin.post("/v1/tokens/999999/revoke").status_code == 404
    assert _field(admin.post("/v1/tokens", json={"name": "x", "role": "root"}), "role")
    assert _field(admin.post("/v1/tokens", json={"name": "x", "role": "admin",
                                                  "worker_id": "W404"}), "worker_id")
    # A grid role's token belongs to a worker, or it could do nothing at all.
    for role in ("grid_worker", "grid_leader"):
        r = admin.post("/v1/tokens", json={"name": f"lost-{role}", "role": role})
        assert _field(r, "worker_id") and "log in" in r.text
    assert db.execute("SELECT count(*) FROM api_tokens WHERE name LIKE 'lost-%'"
                      ).fetchone()[0] == 0


def test_a_revoked_token_or_inactive_worker_is_refused(api, grid, db):
    tech = api.as_("field_technician")
    assert tech.get("/v1/tickets").status_code == 200
    (token_id,) = db.execute("SELECT id FROM api_tokens WHERE role = 'field_technician'"
                             ).fetchone()
    revoke_token(db, token_id)
    r = tech.get("/v1/tickets")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"

    admin = api.as_("admin")
    admin.put("/v1/workers/W5", json={"name": "Zhao", "role": "field_technician"})
    token = admin.post("/v1/tokens", json={"name": "zhao", "role": "field_technician",
                                           "worker_id": "W5"}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/tickets", headers=headers).status_code == 200
    admin.put("/v1/workers/W5", json={"name": "Zhao", "role": "field_technician",
                                      "active": False})
    assert api.client.get("/v1/tickets", headers=headers).status_code == 401


def test_healthz_needs_no_token(api):
    r = api.anonymous().get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_an_unreachable_database_is_a_503_not_a_500():
    settings = load_settings(None, database={"url": "postgresql://nobody@127.0.0.1:1/none",
                                             "connect_timeout_s": 1})
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        assert client.get("/healthz").status_code == 503
        r = client.get("/v1/devices", headers={"Authorization": "Bearer fg_x"})
        assert r.status_code == 503 and r.headers["retry-after"]


def test_serve_answers_over_http(db_url, db, grid):
    """`firegrid api serve` is serve(settings): a real uvicorn in a child process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = create_token(db, "ops", "street_duty")
    env = {**os.environ, "FIREGRID_DATABASE__URL": db_url, "FIREGRID_API__PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", "from api.app import serve;"
                             " from runtime.settings import load_settings;"
                             " serve(load_settings())"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.1)
        r = httpx.get(f"{url}/v1/buildings", headers={"Authorization": f"Bearer {token}"})
        assert [b["id"] for b in r.json()["items"]] == ["B1", "B2", "B3"]
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read().decode()


def test_registration_checks_floor_gateway_and_reserved_ids(api, db, grid):
    tech = api.as_("field_technician")
    r = tech.post("/v1/devices", json={"id": "SD-HIGH", "kind": "smoke_detector",
                                       "building_id": "B1", "floor": 150})
    assert r.status_code == 422 and _field(r, "floor"), r.text
    r = tech.post("/v1/devices", json={"id": "SD-GW", "kind": "smoke_detector",
                                       "building_id": "B1", "gateway_id": "SD-GW"})
    assert r.status_code == 422 and _field(r, "gateway_id"), r.text
    r = tech.post("/v1/devices", json={"id": "firegrid-ingest", "kind": "camera",
                                       "building_id": "B1"})
    assert r.status_code == 422 and _field(r, "id"), r.text
    assert db.execute("SELECT count(*) FROM devices WHERE id IN"
                      " ('SD-HIGH', 'SD-GW', 'firegrid-ingest')").fetchone() == (0,)


def test_live_token_names_are_unique_so_history_names_one_holder(api, db):
    from devices.errors import Conflict
    first_id = db.execute("SELECT id FROM api_tokens WHERE name = %s",
                          [token_name("admin")]).fetchone()[0]
    with pytest.raises(Conflict):
        create_token(db, token_name("admin"), "admin")
    revoke_token(db, first_id)
    assert create_token(db, token_name("admin"), "admin")  # the name is free again
