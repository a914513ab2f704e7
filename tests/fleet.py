"""Registry rows for the liveness and monitor tests, in plain SQL: one street, community,
grid and building, devices in it, technicians, and the decoded messages ingest would hand
the liveness tracker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from protocol.decode import Decoded, Decoder
from simulators import messages as m

PREFIX = "fg/v1"
_DECODER = Decoder(prefix=PREFIX, max_payload_bytes=65536, max_future_skew_s=300,
                   max_age_days=3650)


def add_building(db: psycopg.Connection, building: str = "B1", grid: str = "G1",
                 community: str = "C1", street: str = "S1") -> None:
    db.execute("INSERT INTO street_offices (id, name) VALUES (%s, 'street')"
               " ON CONFLICT DO NOTHING", [street])
    db.execute("INSERT INTO communities (id, street_id, name) VALUES (%s, %s, 'community')"
               " ON CONFLICT DO NOTHING", [community, street])
    db.execute("INSERT INTO grids (id, community_id, name) VALUES (%s, %s, 'grid')"
               " ON CONFLICT DO NOTHING", [grid, community])
    db.execute("INSERT INTO buildings (id, grid_id, address, lat, lon, floors, use)"
               " VALUES (%s, %s, 'Lane 1', 22.5, 114.1, 6, 'rental') ON CONFLICT DO NOTHING",
               [building, grid])


def add_device(db: psycopg.Connection, device_id: str, kind: str = "smoke_detector", *,
               heartbeat_s: int = 3600, state: str = "provisioned", building: str = "B1",
               installed_at: datetime | None = None, gateway: str | None = None) -> None:
    """`gateway`: the registered gateway it reports through (devices.gateway_id)."""
    add_building(db, building)
    db.execute(
        "INSERT INTO devices (id, kind, building_id, heartbeat_s, state, password_hash,"
        " password_salt, installed_at, gateway_id) VALUES (%s, %s, %s, %s, %s, 'ab12', 'cd34',"
        " coalesce(%s, now()), %s)",
        [device_id, kind, building, heartbeat_s, state, installed_at, gateway])


def retire(db: psycopg.Connection, device_id: str) -> None:
    db.execute("UPDATE devices SET state = 'retired', retired_at = now(), password_hash = NULL,"
               " password_salt = NULL WHERE id = %s", [device_id])


def add_worker(db: psycopg.Connection, worker_id: str, *, role: str = "field_technician",
               grid: str | None = None, community: str | None = None,
               active: bool = True) -> None:
    db.execute("INSERT INTO workers (id, name, role, active) VALUES (%s, %s, %s, %s)",
               [worker_id, f"worker {worker_id}", role, active])
    db.execute("INSERT INTO worker_areas (worker_id, grid_id, community_id) VALUES (%s, %s, %s)",
               [worker_id, grid, community])


def watching(db: psycopg.Connection, at: datetime, client_id: str = "ingest-test") -> None:
    """Record an ingest that has been subscribed and flushing for a day up to `at`."""
    db.execute("INSERT INTO ingest_heartbeats (client_id, since, flushed_at)"
               " VALUES (%s, %s, %s) ON CONFLICT (client_id) DO UPDATE"
               " SET since = EXCLUDED.since, flushed_at = EXCLUDED.flushed_at",
               [client_id, at - timedelta(days=1), at])


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def at(ms_: int) -> datetime:
    return datetime.fromtimestamp(ms_ / 1000, UTC)


def decoded(device_id: str, channel: str, message: dict, received_ms: int) -> Decoded:
    """A message as ingest's writer thread hands it to the tracker, through the real
    decoder; fails the test if the decoder refused it."""
    item = _DECODER.decode(m.topic(device_id, channel, PREFIX), m.encode(message), received_ms)
    assert not item.dead, item.dead
    return item
