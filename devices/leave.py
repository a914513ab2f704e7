"""Leave, substitutes and swaps: the roster as people change it during a week.

    add_leave(conn, leave, actor)      -> (id, warnings)   off duty, maybe with a substitute
    cancel_leave(conn, leave_id, actor)
    leaves(conn, start, end, worker_id=None)               leave overlapping [start, end)
    swap(conn, shift_a, shift_b, actor)                    two people trade shifts

The ladder reads leave when it asks who is on duty (alerts/ladder.py ON_DUTY): a worker on
leave is off the ladder, and a substitute gets their pages. Leave that leaves one of the
worker's grids with nobody of the worker's role on duty for a while is saved (people do
fall ill) but answered with a warning per gap, Chinese first, so the officer can find
cover. Every change is in registry_history with its actor.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from devices import registry
from devices.errors import Conflict, Invalid, NotFound
from devices.models import EARLIEST, LATEST, Ident
from devices.queries import Row


class Leave(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    worker_id: Ident
    starts_at: AwareDatetime = Field(ge=EARLIEST, lt=LATEST)
    ends_at: AwareDatetime = Field(ge=EARLIEST, lt=LATEST)
    substitute_id: Ident | None = Field(None, description="who takes the shifts meanwhile")
    reason: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _sane(self) -> Leave:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.substitute_id == self.worker_id:
            raise ValueError("a worker cannot substitute for themselves")
        return self


# Stretches of the worker's shifts inside the leave where nobody else of the same role who
# covers the same grid is on a shift (and no substitute is named).
_GAPS = """
    SELECT wa.grid_id, greatest(r.starts_at, %(start)s) AS gap_from,
           least(r.ends_at, %(end)s) AS gap_to
    FROM roster r
    JOIN workers w ON w.id = r.worker_id
    JOIN worker_areas wa ON wa.worker_id = w.id AND wa.grid_id IS NOT NULL
    WHERE r.worker_id = %(worker)s AND r.starts_at < %(end)s AND r.ends_at > %(start)s
      AND NOT EXISTS (
        SELECT 1 FROM roster o JOIN workers ow ON ow.id = o.worker_id AND ow.active
        JOIN worker_areas oa ON oa.worker_id = ow.id AND oa.grid_id = wa.grid_id
        WHERE ow.id <> w.id AND ow.role = w.role
          AND o.starts_at <= greatest(r.starts_at, %(start)s)
          AND o.ends_at >= least(r.ends_at, %(end)s))
    ORDER BY 2, 1"""


def add_leave(conn: psycopg.Connection, leave: Leave, actor: str) -> tuple[int, list[str]]:
    """Save the leave; its id and the coverage gaps it leaves (none with a substitute)."""
    with registry.changes(conn, actor):
        for who in filter(None, (leave.worker_id, leave.substitute_id)):
            if conn.execute("SELECT 1 FROM workers WHERE id = %s AND active",
                            [who]).fetchone() is None:
                raise NotFound("worker", who)
        row = conn.execute(
            "INSERT INTO leave (worker_id, starts_at, ends_at, substitute_id, reason,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [leave.worker_id, leave.starts_at, leave.ends_at, leave.substitute_id,
             leave.reason, actor]).fetchone()
        assert row is not None   # INSERT ... RETURNING answers its row or raises
        gaps = [] if leave.substitute_id else conn.execute(
            _GAPS, {"worker": leave.worker_id, "start": leave.starts_at,
                    "end": leave.ends_at}).fetchall()
    warnings = [f"网格 {grid} 在 {a:%Y-%m-%d %H:%M} 至 {b:%Y-%m-%d %H:%M} (UTC) 无同岗人员值班，"
                f"请安排替班 / grid {grid} has nobody else of this role on duty from "
                f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC: name a substitute"
                for grid, a, b in gaps]
    leave_id: int = row[0]
    return leave_id, warnings


def cancel_leave(conn: psycopg.Connection, leave_id: int, actor: str) -> Row:
    with registry.changes(conn, actor), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("UPDATE leave SET cancelled_at = coalesce(cancelled_at, now())"
                          " WHERE id = %s RETURNING *", [leave_id]).fetchone()
    if row is None:
        raise NotFound("leave", str(leave_id))
    return row


def leaves(conn: psycopg.Connection, start: datetime, end: datetime,
           worker_id: str | None = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM leave WHERE starts_at < %s AND ends_at > %s"
            " AND (%s::text IS NULL OR worker_id = %s OR substitute_id = %s)"
            " ORDER BY starts_at, id", [end, start, worker_id, worker_id, worker_id]).fetchall()


def swap(conn: psycopg.Connection, shift_a: int, shift_b: int, actor: str) -> list[Row]:
    """Two people of the same role trade shifts; both shifts as they are afterwards."""
    with registry.changes(conn, actor), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT r.id, r.worker_id, r.starts_at, w.role FROM roster r"
            " JOIN workers w ON w.id = r.worker_id WHERE r.id = ANY(%s) ORDER BY r.id"
            " FOR UPDATE OF r", [[shift_a, shift_b]]).fetchall()
        if len(rows) != 2:
            missing = {shift_a, shift_b} - {r["id"] for r in rows}
            raise NotFound("shift", ", ".join(map(str, sorted(missing))) or str(shift_a))
        a, b = rows
        if a["role"] != b["role"]:
            raise Invalid("shift_ids", f"a {a['role']} and a {b['role']} cannot swap shifts")
        if a["worker_id"] == b["worker_id"] or a["starts_at"] == b["starts_at"]:
            raise Conflict("a swap needs two people's shifts that start at different times")
        try:
            cur.execute(
                "UPDATE roster SET worker_id = CASE id WHEN %(a)s THEN %(wb)s ELSE %(wa)s END"
                " WHERE id IN (%(a)s, %(b)s)",
                {"a": a["id"], "b": b["id"], "wa": a["worker_id"], "wb": b["worker_id"]})
        except psycopg.errors.UniqueViolation:
            raise Conflict("one of them already has a shift starting at that time") from None
        return cur.execute(
            "SELECT r.id, r.worker_id, w.name, w.role, r.starts_at, r.ends_at FROM roster r"
            " JOIN workers w ON w.id = r.worker_id WHERE r.id IN (%s, %s)"
            " ORDER BY r.starts_at", [a["id"], b["id"]]).fetchall()
