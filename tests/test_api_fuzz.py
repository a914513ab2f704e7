"""Malformed input never gets a 5xx. Every operation in the app's OpenAPI is sent bodies
with each field replaced by hostile values, raw non-JSON bodies, and malformed path ids and
query values, against a real database holding the things those requests point at, so
values that pass validation reach PostgreSQL too. Hand-rolled and deterministic: the same
requests on every run."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from api.app import create_app
from api.auth import create_token
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import NewDevice
from tests.api_support import TestClient, detector, grid, settings  # noqa: F401 (fixtures)

HOSTILE: list[Any] = [
    None, "", " ", "\x00", "a\x00b", "x" * 20_000, "é漢字🔥", "' OR 1=1 --", "%s", "{}",
    0, -1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**40, 1e308, -1e308, 0.5, True,
    [], [None], {}, {"a": 1},
    "2026-02-30T00:00:00+08:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "2026-01-01T00:00:00",
]
RAW_BODIES = [b"", b"{", b"null", b"[]", b"[{}]", b'"text"', b"1", b'{"lat": NaN}',
              b'{"floor": Infinity}', b"\xff\xfe\x00", b'{"a":' * 2000]
BAD_IDS = ["%00", "a%20b", "x" * 65, ".hidden", "-x", "%F0%9F%94%A5", "..%2F..", "a%2Fb",
           "%27--"]
BAD_ROW_IDS = ["0", "-1", "1.5", "abc", "9223372036854775808", "1" * 40, "%00"]
ROW_ID_PARAMS = ("ticket_id", "token_id", "incident_id", "silence_id", "leave_id")  # integers
START = "2026-03-02T08:00:00+08:00"
END = "2026-03-02T20:00:00+08:00"
LATER = "2026-03-03T08:00:00+08:00"
CALLBACK_TOKEN = "fuzz-callback-token"
RULES = (Path(__file__).parents[1] / "alerts" / "default_rules.toml").read_text("utf-8")
# A silence must end in the future, within 90 days.
SOON = (datetime.now(UTC) + timedelta(days=1)).isoformat()


@dataclass
class Op:
    body: Any                                    # a valid body, None for none
    target: Callable[[Any, int], dict[str, str]]  # (db, n) -> path params of a fresh target
    fresh_id: bool = False                       # the body's id must be new each time


def _device(db, n: int) -> dict[str, str]:
    device_id = f"FZ-{n}"
    registry.provision(db, NoBrokerAuth(), [NewDevice(id=device_id, kind="camera",
                                                      building_id="B1")], "fuzz", 1)
    return {"device_id": device_id}


def _quarantined(db, n: int) -> dict[str, str]:
    device_id = f"FQ-{n}"
    db.execute("INSERT INTO quarantine (device_id, first_seen, last_seen, messages, last_topic)"
               " VALUES (%s, now(), now(), 1, 't')", [device_id])
    return {"device_id": device_id}


def _ticket(db, n: int) -> dict[str, str]:
    device_id = _device(db, n)["device_id"]
    (ticket_id,) = db.execute(
        "INSERT INTO maintenance_tickets (device_id, condition, opened_at)"
        " VALUES (%s, 'fault', now()) RETURNING id", [device_id]).fetchone()
    return {"ticket_id": str(ticket_id)}


def _token(db, n: int) -> dict[str, str]:
    create_token(db, f"fuzz-{n}", "field_technician")
    (token_id,) = db.execute("SELECT max(id) FROM api_tokens").fetchone()
    return {"token_id": str(token_id)}


def _incident(db, n: int, state: str = "notified") -> dict[str, str]:
    # Its own building each time: one open incident per building and hazard.
    building = f"FB-{n}"
    db.execute("INSERT INTO buildings (id, grid_id, address, lat, lon, floors, use)"
               " VALUES (%s, 'G1', 'Fuzz Rd', 22.5, 114.1, 6, 'rental')", [building])
    resolved = state == "resolved"
    (incident_id,) = db.execute(
        "INSERT INTO incidents (building_id, hazard, severity, state, opened_at, last_alert_at,"
        " ladder, resolved_at, cause) VALUES (%s, 'fire', 'warning', %s, now(), now(),"
        " 'warning', CASE WHEN %s THEN now() END, CASE WHEN %s THEN 'test_drill' END)"
        " RETURNING id", [building, state, resolved, resolved]).fetchone()
    return {"incident_id": str(incident_id)}


def _resolved(db, n: int) -> dict[str, str]:
    return _incident(db, n, "resolved")


def _silence(db, n: int) -> dict[str, str]:
    (silence_id,) = db.execute(
        "INSERT INTO silences (building_id, starts_at, ends_at, reason, created_by)"
        " VALUES ('B1', now(), now() + interval '1 hour', 'fuzz', 'fuzz') RETURNING id"
    ).fetchone()
    return {"silence_id": str(silence_id)}


def _leave(db, n: int) -> dict[str, str]:
    (leave_id,) = db.execute(
        "INSERT INTO leave (worker_id, starts_at, ends_at, created_by) VALUES"
        " ('W0', now(), now() + interval '1 day', 'fuzz') RETURNING id").fetchone()
    return {"leave_id": str(leave_id)}


def _fixed(**params: str) -> Callable[[Any, int], dict[str, str]]:
    return lambda db, n: params


WRITES: dict[tuple[str, str], Op] = {
    ("post", "/v1/devices"): Op(detector(model="NB-1", firmware="1.0", gateway_id=None,
                                         installed_at=START, heartbeat_s=3600), _fixed(),
                                fresh_id=True),
    ("post", "/v1/devices/{device_id}/move"): Op({"building_id": "B2", "floor": 2,
                                                  "location": "2F"}, _device),
    ("post", "/v1/devices/{device_id}/state"): Op({"state": "maintenance"}, _device),
    ("post", "/v1/devices/{device_id}/rotate-credentials"): Op(None, _device),
    ("post", "/v1/devices/{device_id}/retire"): Op(None, _device),
    ("post", "/v1/devices/{device_id}/replace"): Op({"id": "FRESH", "model": "NB-2",
                                                     "firmware": "2.0"}, _device, fresh_id=True),
    ("put", "/v1/streets/{id}"): Op({"name": "Street"}, _fixed(id="S1")),
    ("put", "/v1/communities/{id}"): Op({"street_id": "S1", "name": "C"}, _fixed(id="C1")),
    ("put", "/v1/grids/{id}"): Op({"community_id": "C1", "name": "G", "households": 300},
                                  _fixed(id="G1")),
    ("put", "/v1/buildings/{id}"): Op({"grid_id": "G1", "address": "1 Rd", "lat": 22.5,
                                       "lon": 114.1, "floors": 6, "households": 40,
                                       "use": "rental"}, _fixed(id="B9")),
    ("put", "/v1/workers/{worker_id}"): Op({"name": "Li", "role": "grid_worker",
                                            "phone": "+8613800000000",
                                            "channels": {"sms": "+8613800000000"},
                                            "areas": ["G1"], "active": True},
                                           _fixed(worker_id="W1")),
    ("post", "/v1/roster"): Op([{"worker_id": "W0", "starts_at": START, "ends_at": END}],
                               _fixed()),
    ("post", "/v1/tickets/{ticket_id}/close"): Op({"note": "replaced the battery"}, _ticket),
    ("post", "/v1/quarantine/{device_id}/claim"): Op({"kind": "smoke_detector",
                                                      "building_id": "B1", "floor": 1},
                                                     _quarantined),
    ("post", "/v1/tokens"): Op({"name": "phone", "role": "street_duty", "worker_id": "W0"},
                               _fixed()),
    ("post", "/v1/tokens/{token_id}/revoke"): Op(None, _token),
    ("post", "/v1/incidents/{incident_id}/acknowledge"): Op({"note": "on my way"}, _incident),
    ("post", "/v1/incidents/{incident_id}/arrive"): Op({"note": "3F corridor"}, _incident),
    ("post", "/v1/incidents/{incident_id}/confirm"): Op({"note": "flames at the window"},
                                                        _incident),
    ("post", "/v1/incidents/{incident_id}/resolve"): Op({"cause": "cooking_steam",
                                                        "note": "burnt rice"}, _incident),
    ("post", "/v1/incidents/{incident_id}/reopen"): Op({"note": "smoke again"}, _resolved),
    ("post", "/v1/incidents/{incident_id}/escalate"): Op({"to": "community",
                                                         "note": "smoke on camera"}, _incident),
    ("post", "/v1/incidents/{incident_id}/responders"): Op({"worker_id": "W0", "reassign": True,
                                                           "note": "closer"}, _incident),
    ("post", "/v1/leave"): Op({"worker_id": "W0", "starts_at": START, "ends_at": END,
                               "substitute_id": None, "reason": "sick"}, _fixed()),
    ("post", "/v1/leave/{leave_id}/cancel"): Op(None, _leave),
    ("post", "/v1/roster/swap"): Op({"shift_ids": [1, 2]}, _fixed()),
    ("put", "/v1/rules"): Op({"body": RULES, "note": "fuzz"}, _fixed()),
    # The providers' pushes: no bearer, a secret in the query (api/routes/callbacks.py).
    ("post", "/v1/voice/report?token={token}"): Op(
        [{"out_id": "1", "dtmf": "1", "call_id": "c", "status_code": "200000"}],
        _fixed(token=CALLBACK_TOKEN)),
    ("post", "/v1/sms/reply?token={token}"): Op(
        [{"phone_number": "13800000001", "content": "收到"}], _fixed(token=CALLBACK_TOKEN)),
    ("post", "/v1/silences"): Op({"device_id": None, "building_id": "B1", "grid_id": None,
                                  "starts_at": None, "ends_at": SOON,
                                  "reason": "renovation"}, _fixed()),
    ("post", "/v1/silences/{silence_id}/end"): Op(None, _silence),
}


def _openapi_operations(app) -> list[tuple[str, str, dict]]:
    return [(m, p, op) for p, ops in app.openapi()["paths"].items() for m, op in ops.items()]


def _url(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)


@pytest.fixture
def client(settings, db, grid):
    with registry.changes(db, "fuzz"):
        db.execute("INSERT INTO workers (id, name, role) VALUES ('W0', 'Wu', 'grid_worker'),"
                   " ('W8', 'Ba', 'grid_worker')")
        # Shifts 1 and 2, for the swap's example.
        db.execute("INSERT INTO roster (worker_id, starts_at, ends_at) OVERRIDING SYSTEM VALUE"
                   " VALUES ('W0', %s, %s), ('W8', %s, %s)", [START, END, END, LATER])
    token = create_token(db, "fuzz-admin", "admin")
    settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(
        update={"voice_callback_token": SecretStr(CALLBACK_TOKEN)})})
    app = create_app(settings, broker=NoBrokerAuth())
    with TestClient(app, raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_every_write_operation_has_a_fuzz_example(client):
    writes = {(m, p) for m, p, _ in _openapi_operations(client.app) if m in ("post", "put")}
    assert writes == {(m, p.split("?")[0]) for m, p in WRITES}


def _mutations(body: Any) -> list[Any]:
    """The valid body with each field replaced by each hostile value, dropped, or joined by
    an unknown field; for a list body, the same done to its first item."""
    if body is None:
        return [{}, {"unexpected": 1}]
    if isinstance(body, list):
        return [[item] for item in _mutations(body[0]) if isinstance(item, dict)] + HOSTILE
    out: list[Any] = [{k: v for k, v in body.items() if k != drop} for drop in body]
    out += [{**body, key: value} for key in body for value in HOSTILE]
    out += [{**body, "unexpected": 1}, *HOSTILE]
    return out


def test_malformed_writes_never_get_a_5xx(client, db):
    counter = itertools.count()
    failures: list[str] = []

    def send(method: str, path: str, op: Op, body: Any = None, raw: bytes | None = None,
             params: dict[str, str] | None = None) -> int:
        n = next(counter)
        params = params or op.target(db, n)
        if op.fresh_id and isinstance(body, dict) and body.get("id") == "FRESH":
            body = {**body, "id": f"FN-{n}"}
        kwargs: dict[str, Any] = ({"content": raw, "headers": {"content-type": "application/json"}}
                                  if raw is not None else {"json": body})
        r = client.request(method, _url(path, params), **kwargs)
        if r.status_code >= 500:
            shown = raw[:80] if raw is not None else json.dumps(body)[:160]
            failures.append(f"{method.upper()} {_url(path, params)} {shown} -> "
                            f"{r.status_code} {r.text[:200]}")
        return r.status_code

    for (method, path), op in WRITES.items():
        example = {**op.body, "id": "FRESH"} if op.fresh_id else op.body
        assert send(method, path, op, example) < 300, f"valid example refused: {method} {path}"
        for body in _mutations(example):
            send(method, path, op, body)
        for raw in RAW_BODIES:
            send(method, path, op, raw=raw)
        for name in re.findall(r"\{(\w+)\}", path):
            bad = BAD_ROW_IDS if name in ROW_ID_PARAMS else BAD_IDS
            for value in bad:
                send(method, path, op, example, params={**op.target(db, next(counter)),
                                                        name: value})
    # Whatever the hostile writes stored must read back (a date PostgreSQL takes and Python
    # cannot load would break every listing holding the row).
    for method, path, _ in _openapi_operations(client.app):
        if method == "get" and "{" not in path:
            r = client.get(path, params={"limit": 1000})
            if r.status_code != 200:
                failures.append(f"GET {path} after the writes -> {r.status_code} {r.text[:200]}")
    for (device_id,) in db.execute("SELECT id FROM devices").fetchall():
        r = client.get(f"/v1/devices/{device_id}")
        if r.status_code != 200:
            failures.append(f"GET /v1/devices/{device_id} -> {r.status_code} {r.text[:200]}")
    assert not failures, f"{len(failures)} requests failed:\n" + "\n".join(failures[:20])


def test_malformed_reads_never_get_a_5xx(client):
    failures: list[str] = []
    values = [str(v) for v in HOSTILE if not isinstance(v, list | dict)] + BAD_IDS + BAD_ROW_IDS
    for method, path, op in _openapi_operations(client.app):
        if method != "get":
            continue
        names = [p["name"] for p in op.get("parameters", [])]
        for name in names:
            for value in values:
                params = {n: ("1" if n in ROW_ID_PARAMS else "B1")
                          for n in names if f"{{{n}}}" in path}
                query = {}
                if f"{{{name}}}" in path:
                    # The BAD_ values are already URL-encoded on purpose; quote the rest.
                    params[name] = value if "%" in value else quote(value, safe="")
                else:
                    query[name] = value
                r = client.get(_url(path, params), params=query)
                if r.status_code >= 500:
                    failures.append(f"GET {_url(path, params)} {query} -> {r.status_code}")
    assert not failures, f"{len(failures)} requests got a 5xx:\n" + "\n".join(failures[:20])
