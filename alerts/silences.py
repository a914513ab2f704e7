"""Silences: mute the pages for a device, a building or a grid for a while.

    create(conn, actor, *, device_id | building_id | grid_id, ends_at, reason,
           starts_at=None, now=None, scope=Scope.all())
    end(conn, silence_id, actor, now=None, scope=Scope.all())
    list_silences(conn, *, active_only=True, scope=Scope.all(), ...)

A silence mutes pages, never the record: alerts and incidents are written as usual and the
store writes the pages as 'muted' (alerts/store.py reads this table). A device in test
mode, a building under renovation, a grid during a drill.

Rules: exactly one target; it must exist and lie in the caller's scope (outside reads as
unknown, as for incidents); ends after it starts and in the future; at most 90 days long
(a longer silence is a forgotten one: renew it) and planned at most a year ahead. Ending a
silence sets ends_at to now; one that had not begun yet is shrunk to an instant before now,
so it never mutes anything and the record of who planned it stays. Ending one that is over
changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow, dict_row

from alerts.errors import Invalid, NotFound
from alerts.queries import Scope

LONGEST = timedelta(days=90)
AHEAD = timedelta(days=365)
REASON_MAX = 500

Row = dict[str, Any]

# Scope is frozen, so one instance can be every call's default: everything, as for the CLI.
_EVERYTHING = Scope.all()

# Where each kind of target sits, for the scope check: (noun, SQL reaching g and co).
_TARGETS = {
    "device_id": ("device", "FROM devices d JOIN buildings b ON b.id = d.building_id"
                            " JOIN grids g ON g.id = b.grid_id"
                            " JOIN communities co ON co.id = g.community_id"
                            " WHERE d.id = %(target)s"),
    "building_id": ("building", "FROM buildings b JOIN grids g ON g.id = b.grid_id"
                                " JOIN communities co ON co.id = g.community_id"
                                " WHERE b.id = %(target)s"),
    "grid_id": ("grid", "FROM grids g JOIN communities co ON co.id = g.community_id"
                        " WHERE g.id = %(target)s"),
}

_SILENCE = """
    SELECT s.id, s.device_id, s.building_id, s.grid_id, s.starts_at, s.ends_at, s.reason,
           s.created_by, s.created_at,
           (s.starts_at <= %(now)s AND s.ends_at > %(now)s) AS running
    FROM silences s
    LEFT JOIN devices d ON d.id = s.device_id
    LEFT JOIN buildings b ON b.id = coalesce(s.building_id, d.building_id)
    JOIN grids g ON g.id = coalesce(s.grid_id, b.grid_id)
    JOIN communities co ON co.id = g.community_id
"""


def create(conn: psycopg.Connection[TupleRow], actor: str, *, ends_at: datetime, reason: str,
           device_id: str | None = None, building_id: str | None = None,
           grid_id: str | None = None, starts_at: datetime | None = None,
           now: datetime | None = None, scope: Scope = _EVERYTHING) -> Row:
    now = now or datetime.now(UTC)
    given = {k: v for k, v in (("device_id", device_id), ("building_id", building_id),
                               ("grid_id", grid_id)) if v is not None}
    if len(given) != 1:
        raise Invalid(list(given)[1] if given else "device_id",
                      "give exactly one of device_id, building_id, grid_id")
    ((field, target),) = given.items()
    starts_at = starts_at or now
    for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if value.tzinfo is None:
            raise Invalid(name, "needs a time zone (e.g. +08:00)")
    if starts_at > now + AHEAD:
        raise Invalid("starts_at", f"at most {AHEAD.days} days ahead")
    if ends_at <= starts_at:
        raise Invalid("ends_at", "must be after starts_at")
    if ends_at <= now:
        raise Invalid("ends_at", "is in the past")
    if ends_at - starts_at > LONGEST:
        raise Invalid("ends_at", f"a silence lasts at most {LONGEST.days} days; renew it "
                                 "when it ends")
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("reason", "must not be empty: say why pages are muted")
    if len(reason) > REASON_MAX:
        raise Invalid("reason", f"at most {REASON_MAX} characters")
    noun, located = _TARGETS[field]
    where, params = scope.condition()
    if conn.execute(f"SELECT 1 {located} AND {where}",
                    {**params, "target": target}).fetchone() is None:
        raise NotFound(noun, target, field=field)
    [(silence_id,)] = conn.execute(
        f"INSERT INTO silences ({field}, starts_at, ends_at, reason, created_by)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        [target, starts_at, ends_at, reason, actor]).fetchall()
    return _one(conn, silence_id, scope, now)


def end(conn: psycopg.Connection[Any], silence_id: int, actor: str, now: datetime | None = None,
        scope: Scope = _EVERYTHING) -> Row:
    """End a silence now. `actor` is not stored (the table records only who created it)."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        row = _one(conn, silence_id, scope, now, lock=True)
        if row["ends_at"] > now:
            conn.execute("UPDATE silences SET ends_at = %(now)s,"
                         " starts_at = least(starts_at, %(now)s - interval '1 microsecond')"
                         " WHERE id = %(id)s", {"now": now, "id": silence_id})
    return _one(conn, silence_id, scope, now)


def list_silences(conn: psycopg.Connection[Any], *, active_only: bool = True,
                  scope: Scope = _EVERYTHING, device_id: str | None = None,
                  building_id: str | None = None, grid_id: str | None = None,
                  now: datetime | None = None, limit: int = 100, offset: int = 0) -> list[Row]:
    """Silences in `scope`, latest ending first. active_only: those not over yet (running
    or planned)."""
    now = now or datetime.now(UTC)
    where, params = scope.condition()
    parts = [where]
    params.update(now=now, limit=limit, offset=offset)
    if active_only:
        parts.append("s.ends_at > %(now)s")
    for column, value in (("device_id", device_id), ("building_id", building_id),
                          ("grid_id", grid_id)):
        if value is not None:
            parts.append(f"s.{column} = %({column})s")
            params[column] = value
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"{_SILENCE} WHERE {' AND '.join(parts)}"
                           " ORDER BY s.ends_at DESC, s.id DESC"
                           " LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()


def _one(conn: psycopg.Connection[Any], silence_id: int, scope: Scope, now: datetime,
         lock: bool = False) -> Row:
    where, params = scope.condition()
    params.update(now=now, id=silence_id)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"{_SILENCE} WHERE s.id = %(id)s AND {where}"
                          + (" FOR UPDATE OF s" if lock else ""), params).fetchone()
    if row is None:
        raise NotFound("silence", str(silence_id))
    return row
