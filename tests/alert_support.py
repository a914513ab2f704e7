"""A small ward for the alert-core tests, and helpers to drive the core with a fake clock.

    street S1 > community C1 > grid G1 > buildings B1, B2
                             > grid G2 > building B3
    workers: gw1 (grid worker, G1), gl1 (grid leader, G1), gw2 (grid worker, G2),
             cd1 (community duty, C1), sd1 (street duty, S1), tech1 (technician, G1)
    devices: SD-1, SD-2, CAM-1 in B1; SD-3 in B2; SD-4 in B3
Everybody is on shift from T0 - 1 day to T0 + 1 day (or around another time) unless a
test changes the roster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from alerts import ladder, store
from alerts.rules import Candidate, Policy, load_policy
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import Building, Community, Grid, NewDevice, Shift, Street, Worker

T0 = datetime(2026, 11, 16, 2, 0, tzinfo=UTC)   # Monday 10:00 in Shanghai
WORKERS = {"gw1": ("grid_worker", "G1"), "gl1": ("grid_leader", "G1"),
           "gw2": ("grid_worker", "G2"), "cd1": ("community_duty", "C1"),
           "sd1": ("street_duty", "S1"), "tech1": ("field_technician", "G1")}
DEVICES = {"SD-1": ("smoke_detector", "B1"), "SD-2": ("smoke_detector", "B1"),
           "CAM-1": ("camera", "B1"), "SD-3": ("smoke_detector", "B2"),
           "SD-4": ("smoke_detector", "B3")}
NO_CHANNELS = frozenset()


def build_ward(conn: psycopg.Connection, *, on_shift: tuple[str, ...] = tuple(WORKERS),
               channels: dict[str, dict] | None = None, around: datetime = T0) -> None:
    with registry.changes(conn, "test-setup"):
        registry.upsert(conn, "street_offices", [Street(id="S1", name="Futian")])
        registry.upsert(conn, "communities", [Community(id="C1", street_id="S1",
                                                        name="Shuiwei")])
        registry.upsert(conn, "grids", [Grid(id="G1", community_id="C1", name="Grid 1"),
                                        Grid(id="G2", community_id="C1", name="Grid 2")])
        registry.upsert(conn, "buildings", [
            Building(id=b, grid_id=g, address=f"{b} Shuiwei Rd", lat=22.52, lon=114.05,
                     floors=7, use="rental") for b, g in (("B1", "G1"), ("B2", "G1"),
                                                          ("B3", "G2"))])
        registry.upsert_workers(conn, [
            Worker(id=w, name=w, role=role, areas=[area],
                   channels=(channels or {}).get(w, {}))
            for w, (role, area) in WORKERS.items()])
        registry.add_shifts(conn, [Shift(worker_id=w, starts_at=around - timedelta(days=1),
                                         ends_at=around + timedelta(days=1)) for w in on_shift])
    registry.provision(conn, NoBrokerAuth(), [
        NewDevice(id=d, kind=kind, building_id=b, floor=2) for d, (kind, b) in DEVICES.items()],
        "test-setup", 1)


def alarm(device: str, seq: int, at: datetime, rule: str = "smoke_alarm") -> Candidate:
    ms = int(at.timestamp() * 1000)
    return Candidate(device, ms, seq, rule, ms, {})


def record(conn: psycopg.Connection, candidates: list[Candidate], now: datetime,
           policy: Policy | None = None, channels: frozenset[str] = NO_CHANNELS,
           hand_off_s: float = 0.0):
    with conn.transaction():
        return store.record(conn, candidates, now, policy or load_policy(), channels,
                            hand_off_s)


def tick(conn: psycopg.Connection, now: datetime, policy: Policy | None = None,
         channels: frozenset[str] = NO_CHANNELS) -> int:
    """One escalator pass at `now`: fire every due timer; returns how many fired."""
    with conn.transaction():
        due = ladder.claim_due(conn, now, 10_000)
        ladder.fire(conn, due, now, policy or load_policy(), channels)
    return len(due)


def pages(conn: psycopg.Connection, incident_id: int) -> list[tuple]:
    """(step, worker, channel, status) of an incident's pages, in order."""
    return conn.execute("SELECT step, worker_id, channel, status FROM pages"
                        " WHERE incident_id = %s ORDER BY step, worker_id, channel",
                        [incident_id]).fetchall()


def log(conn: psycopg.Connection, incident_id: int) -> list[tuple]:
    return conn.execute("SELECT action, from_state, to_state FROM incident_log"
                        " WHERE incident_id = %s ORDER BY id", [incident_id]).fetchall()
