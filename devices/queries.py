"""Reads of the registry, for the API and for whoever routes alerts.

Writes go through devices.registry (it records the actor and keeps the broker in step);
everything here is a plain SELECT. Rows come back as dicts with the column names the API
and the CSV files use, so a route can return them as they are.

Listings page with limit/offset and a stable order (by id, or newest first for things that
happen): the registry of one street office is tens of thousands of rows, small enough that
offsets stay cheap and simple for a phone to follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]

# The registered columns every device answer carries; credentials never leave the table.
_DEVICE = """
    d.id, d.kind, d.model, d.firmware, d.building_id, d.floor, d.location, d.gateway_id,
    d.installed_at, d.state, d.heartbeat_s, d.credentials_rotated_at, d.retired_at,
    s.last_seen, s.battery_pct, s.rsrp_dbm, s.stream_online, d.replaces,
    (SELECT r.id FROM devices r WHERE r.replaces = d.id) AS replaced_by
"""
_DEVICE_FROM = """
    FROM devices d
    JOIN buildings b ON b.id = d.building_id
    JOIN grids g ON g.id = b.grid_id
    JOIN communities c ON c.id = g.community_id
    LEFT JOIN device_status s ON s.device_id = d.id
"""


def _rows(conn: psycopg.Connection, query: Any, params: Any = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _where(filters: dict[str, Any], *conditions: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause: `column = value` for each filter that is set, AND the conditions
    given as (sql, params). Column names and condition texts are ours, never the caller's."""
    parts = [f"{column} = %s" for column, value in filters.items() if value is not None]
    params = [value for value in filters.values() if value is not None]
    for text, values in conditions:
        parts.append(text)
        params.extend(values)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


# --- devices ------------------------------------------------------------------------------

def device(conn: psycopg.Connection, device_id: str) -> Row | None:
    """One device with its liveness and its open tickets (oldest first)."""
    rows = _rows(conn, f"""
        SELECT {_DEVICE},
               coalesce((SELECT json_agg(json_build_object(
                            'id', t.id, 'condition', t.condition, 'opened_at', t.opened_at,
                            'detail', t.detail, 'assigned_to', t.assigned_to)
                          ORDER BY t.opened_at, t.id)
                         FROM maintenance_tickets t
                         WHERE t.device_id = d.id AND t.closed_at IS NULL), '[]') AS open_tickets
        {_DEVICE_FROM} WHERE d.id = %s""", [device_id])
    return rows[0] if rows else None


def devices(conn: psycopg.Connection, *, building_id: str | None = None,
            grid_id: str | None = None, community_id: str | None = None,
            street_id: str | None = None, kind: str | None = None, state: str | None = None,
            limit: int = 100, offset: int = 0) -> list[Row]:
    """Devices by id, with liveness and the conditions of their open tickets."""
    where, params = _where({"d.building_id": building_id, "b.grid_id": grid_id,
                            "g.community_id": community_id, "c.street_id": street_id,
                            "d.kind": kind, "d.state": state})
    return _rows(conn, f"""
        SELECT {_DEVICE},
               array(SELECT t.condition FROM maintenance_tickets t
                     WHERE t.device_id = d.id AND t.closed_at IS NULL
                     ORDER BY t.opened_at, t.id) AS open_tickets
        {_DEVICE_FROM} {where} ORDER BY d.id LIMIT %s OFFSET %s""", [*params, limit, offset])


def device_history(conn: psycopg.Connection, device_id: str, *, limit: int = 100,
                   offset: int = 0) -> list[Row]:
    """Every change to a device's registry row, oldest first, with the fields it changed."""
    rows = _rows(conn, """
        SELECT at, actor, action, old, new FROM registry_history
        WHERE entity = 'devices' AND entity_id = %s
        ORDER BY at, id LIMIT %s OFFSET %s""", [device_id, limit, offset])
    for row in rows:
        old, new = row["old"] or {}, row["new"] or {}
        row["changed"] = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return rows


def device_readings(conn: psycopg.Connection, device_id: str, *, limit: int = 10,
                    offset: int = 0) -> list[Row]:
    """The device's status reports as ingest stored them, the newest (by its clock) first:
    what a technician checks on site (is it reporting, its battery, its signal)."""
    return _rows(conn, """
        SELECT ts, received_at, kind, gateway_id, obscuration_db_m, temperature_c, battery_pct,
               battery_v, rsrp_dbm, sinr_db, heartbeat_s, stream_online, recording,
               storage_free_mb
        FROM readings WHERE device_id = %s
        ORDER BY ts DESC, seq DESC LIMIT %s OFFSET %s""", [device_id, limit, offset])


def device_events(conn: psycopg.Connection, device_id: str, *, limit: int = 10,
                  offset: int = 0) -> list[Row]:
    """The device's events (alarms, faults, tamper, self tests, ...), the newest first."""
    return _rows(conn, """
        SELECT ts, received_at, type, gateway_id, attrs FROM events WHERE device_id = %s
        ORDER BY ts DESC, seq DESC LIMIT %s OFFSET %s""", [device_id, limit, offset])


# --- the grid hierarchy -------------------------------------------------------------------

# table: (columns, the parent column a listing filters on)
HIERARCHY = {
    "street_offices": (("id", "name"), None),
    "communities": (("id", "street_id", "name"), "street_id"),
    "grids": (("id", "community_id", "name", "households"), "community_id"),
    "buildings": (("id", "grid_id", "address", "lat", "lon", "floors", "households", "use",
                   "contact_name", "contact_phone"),
                  "grid_id"),
}


def hierarchy(conn: psycopg.Connection, table: str, *, parent: str | None = None,
              limit: int = 100, offset: int = 0) -> list[Row]:
    """Streets, communities, grids or buildings by id, optionally those under `parent`."""
    cols, parent_col = HIERARCHY[table]
    where, params = _where({parent_col: parent} if parent_col else {})
    return _rows(conn, f"SELECT {', '.join(cols)} FROM {table} {where}"
                       " ORDER BY id LIMIT %s OFFSET %s", [*params, limit, offset])


def hierarchy_row(conn: psycopg.Connection, table: str, ident: str) -> Row | None:
    cols, _ = HIERARCHY[table]
    rows = _rows(conn, f"SELECT {', '.join(cols)} FROM {table} WHERE id = %s", [ident])
    return rows[0] if rows else None


# --- people -------------------------------------------------------------------------------

_WORKERS = """
    SELECT w.id, w.name, w.role, w.phone, w.channels, w.active,
           array(SELECT coalesce(a.grid_id, a.community_id, a.street_id)::text FROM worker_areas a
                 WHERE a.worker_id = w.id ORDER BY a.id) AS areas
    FROM workers w
"""


def workers(conn: psycopg.Connection, *, role: str | None = None, area: str | None = None,
            active: bool | None = None, limit: int = 100, offset: int = 0) -> list[Row]:
    """Workers by id with the areas they cover; `area` is a grid, community or street id."""
    in_area = ("EXISTS (SELECT 1 FROM worker_areas a WHERE a.worker_id = w.id"
               " AND %s IN (a.grid_id, a.community_id, a.street_id))", [area])
    where, params = _where({"w.role": role, "w.active": active},
                           *([in_area] if area is not None else []))
    return _rows(conn, f"{_WORKERS} {where} ORDER BY w.id LIMIT %s OFFSET %s",
                 [*params, limit, offset])


def worker(conn: psycopg.Connection, worker_id: str) -> Row | None:
    rows = _rows(conn, _WORKERS + " WHERE w.id = %s", [worker_id])
    return rows[0] if rows else None


def roster(conn: psycopg.Connection, start: datetime, end: datetime, *,
           worker_id: str | None = None) -> list[Row]:
    """Shifts that overlap [start, end), in time order."""
    where, params = _where({"r.worker_id": worker_id}, ("r.starts_at < %s", [end]),
                           ("r.ends_at > %s", [start]))
    return _rows(conn, f"""
        SELECT r.id, r.worker_id, w.name, w.role, r.starts_at, r.ends_at
        FROM roster r JOIN workers w ON w.id = r.worker_id
        {where} ORDER BY r.starts_at, r.worker_id""", params)


@dataclass(frozen=True)
class OnDuty:
    worker_id: str
    name: str
    role: str
    level: str          # grid | community | street: the area through which they cover it
    phone: str | None
    channels: dict[str, str]
    shift_ends_at: datetime


# The order to climb: the building's grid first, then its community, then the street office;
# inside a level the grid workers before their leader.
_LEVEL_ORDER = ("grid", "community", "street")
_ROLE_ORDER = ("grid_worker", "field_technician", "grid_leader", "community_duty", "street_duty")


def on_duty(conn: psycopg.Connection, building_id: str, at: datetime, *,
            roles: Sequence[str] | None = None) -> list[OnDuty]:
    """Active workers on shift at `at` whose areas cover the building, nearest level first.

    A worker covers a building through a grid area (the building's grid), a community area
    (the grid's community) or a street area (the community's street office): the
    building_cover view (migration 0010), as the alert core's ladder reads it. `roles`
    narrows the answer (the alert router leaves out field technicians); an unknown building
    or nobody on shift gives an empty list."""
    rows = conn.execute("""
        SELECT DISTINCT ON (w.id) w.id, w.name, w.role, v.level, w.phone, w.channels, r.ends_at
        FROM building_cover v
        JOIN workers w ON w.id = v.worker_id AND w.active
        JOIN roster r ON r.worker_id = w.id AND r.starts_at <= %(at)s AND r.ends_at > %(at)s
        WHERE v.building_id = %(building)s
          AND (%(roles)s::text[] IS NULL OR w.role = ANY(%(roles)s))
        ORDER BY w.id, v.distance, r.ends_at DESC""",
        {"at": at, "building": building_id, "roles": list(roles) if roles is not None else None},
    ).fetchall()
    found = [OnDuty(*row) for row in rows]
    return sorted(found, key=lambda o: (_LEVEL_ORDER.index(o.level), _ROLE_ORDER.index(o.role),
                                        o.worker_id))


# --- tickets and quarantine ---------------------------------------------------------------

_TICKET = """
    SELECT t.id, t.device_id, d.kind, d.building_id, b.address, b.grid_id, t.condition,
           t.opened_at, t.detail, t.assigned_to, t.closed_at, t.close_reason, t.closed_by,
           t.close_note
    FROM maintenance_tickets t
    JOIN devices d ON d.id = t.device_id
    JOIN buildings b ON b.id = d.building_id
    JOIN grids g ON g.id = b.grid_id
"""


def tickets(conn: psycopg.Connection, *, status: str = "open", condition: str | None = None,
            device_id: str | None = None, building_id: str | None = None,
            grid_id: str | None = None, community_id: str | None = None,
            assigned_to: str | None = None, limit: int = 100, offset: int = 0) -> list[Row]:
    """Maintenance tickets, newest first; status is open, closed or all."""
    state: list[tuple[str, list[Any]]] = {
        "open": [("t.closed_at IS NULL", [])], "closed": [("t.closed_at IS NOT NULL", [])],
        "all": []}[status]
    where, params = _where({"t.condition": condition, "t.device_id": device_id,
                            "d.building_id": building_id, "b.grid_id": grid_id,
                            "g.community_id": community_id, "t.assigned_to": assigned_to},
                           *state)
    return _rows(conn, f"{_TICKET} {where} ORDER BY t.opened_at DESC, t.id DESC"
                       " LIMIT %s OFFSET %s", [*params, limit, offset])


def ticket(conn: psycopg.Connection, ticket_id: int) -> Row | None:
    rows = _rows(conn, _TICKET + " WHERE t.id = %s", [ticket_id])
    return rows[0] if rows else None


def quarantine(conn: psycopg.Connection, *, claimed: bool = False, limit: int = 100,
               offset: int = 0) -> list[Row]:
    """Unregistered ids that sent valid messages, most recently heard first."""
    return _rows(conn, f"""
        SELECT device_id, first_seen, last_seen, messages, last_topic, claimed_at, claimed_by
        FROM quarantine WHERE claimed_at IS {'NOT ' if claimed else ''}NULL
        ORDER BY last_seen DESC, device_id LIMIT %s OFFSET %s""", [limit, offset])


# --- API tokens ---------------------------------------------------------------------------

def tokens(conn: psycopg.Connection, *, revoked: bool = False) -> list[Row]:
    """Tokens by id, without their hashes; revoked ones only when asked for."""
    return _rows(conn, f"""
        SELECT id, name, role, worker_id, created_at, revoked_at FROM api_tokens
        {'' if revoked else 'WHERE revoked_at IS NULL'} ORDER BY id""")


def token(conn: psycopg.Connection, token_id: int) -> Row | None:
    rows = _rows(conn, "SELECT id, name, role, worker_id, created_at, revoked_at"
                       " FROM api_tokens WHERE id = %s", [token_id])
    return rows[0] if rows else None
