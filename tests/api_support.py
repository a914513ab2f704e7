"""Shared by the tests/test_api*.py files: an app on the test's own database, one token
per role, and a small grid to hang devices on. The broker side is NoBrokerAuth here; the
dynamic-security implementation has its own tests against a real Mosquitto."""

from __future__ import annotations

import hashlib
import secrets
import warnings

import pytest

from api.app import create_app
from api.auth import NEEDS_WORKER, ROLES, create_token
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import Building, Community, Grid, Street
from runtime.settings import Settings, load_settings

with warnings.catch_warnings():
    # Starlette suggests another HTTP client package for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


class Api:
    """A TestClient that calls as a given role: api.as_("admin").get(...)."""

    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def as_(self, role: str) -> _Caller:
        return _Caller(self.client, {"Authorization": f"Bearer {self.tokens[role]}"})

    def anonymous(self) -> _Caller:
        return _Caller(self.client, {})


class _Caller:
    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self._client = client
        self._headers = headers

    def request(self, method: str, path: str, **kwargs):
        return self._client.request(method, path, headers=self._headers, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs):
        return self.request("PUT", path, **kwargs)


def token_name(role: str) -> str:
    return f"{role}-phone"


@pytest.fixture
def settings(db_url) -> Settings:
    return load_settings(None, database={"url": db_url})


def workerless_token(db, name: str, role: str) -> str:
    """A token of a grid role that belongs to no worker. issue_token refuses to make one
    now, but databases hold such tokens from before; the API and the console must still
    answer them with a 403, never a 500."""
    token = "fg_" + secrets.token_urlsafe(32)
    with registry.changes(db, "test-setup"):
        db.execute("INSERT INTO api_tokens (name, role, token_sha256) VALUES (%s, %s, %s)",
                   [name, role, hashlib.sha256(token.encode()).digest()])
    return token


@pytest.fixture
def api(settings, db) -> Api:
    tokens = {role: (workerless_token if role in NEEDS_WORKER else create_token)(
        db, token_name(role), role) for role in ROLES}
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        yield Api(client, tokens)


@pytest.fixture
def grid(db) -> None:
    """Street S1 > community C1 > grid G1 > buildings B1, B2; and a second grid G2 > B3."""
    with registry.changes(db, "test-setup"):
        registry.upsert(db, "street_offices", [Street(id="S1", name="Futian street office")])
        registry.upsert(db, "communities", [Community(id="C1", street_id="S1", name="Shuiwei")])
        registry.upsert(db, "grids", [Grid(id="G1", community_id="C1", name="Grid 1"),
                                      Grid(id="G2", community_id="C1", name="Grid 2")])
        registry.upsert(db, "buildings", [
            Building(id=b, grid_id=g, address=f"{b} Shuiwei Rd", lat=22.52, lon=114.05,
                     floors=7, use="rental")
            for b, g in (("B1", "G1"), ("B2", "G1"), ("B3", "G2"))])


def detector(device_id: str = "SD-0001", building_id: str = "B1", **extra) -> dict:
    return {"id": device_id, "kind": "smoke_detector", "building_id": building_id, "floor": 3,
            "location": "3F corridor", **extra}
