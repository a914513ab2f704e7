"""/v1/workers, /v1/roster and /v1/leave: who covers which area, who is on shift when,
who is away and who stands in.

Admins write workers and shifts. Duty officers read them (they dispatch people and need
their phones); grid leaders read those of their own area (they keep it covered); field
technicians and grid workers do not. Leave, substitutes and swaps are changed by officers
and grid leaders for the workers of their own area
(devices/leave.py says what the ladder does with them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Body, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import Actor, allow, area_scope
from api.deps import Conn
from api.schemas import (
    Limit,
    Offset,
    Page,
    Paged,
    PathId,
    QueryId,
    RowId,
    ShiftBody,
    ShiftOut,
    WorkerBody,
    WorkerOut,
    page,
    with_path_id,
)
from devices import leave, queries, registry
from devices.errors import Invalid, NotFound
from devices.models import EARLIEST, LATEST, WORKER_ROLES
from devices.queries import Row

router = APIRouter(prefix="/v1", tags=["people"])

Reader = Annotated[Actor, allow("people:read")]
Admin = Annotated[Actor, allow("people:write")]
Officer = Annotated[Actor, allow("roster:change")]

# worker_areas has one column per level; the request has one list, `areas`.
_AREA_COLUMNS = ("grid_id", "community_id", "street_id")


def _worker(conn: psycopg.Connection, worker_id: str) -> Row:
    row = queries.worker(conn, worker_id)
    if row is None:
        raise NotFound("worker", worker_id)
    return row


@router.put("/workers/{worker_id}", response_model=WorkerOut,
            summary="Create or update a worker; `areas` replaces the areas they cover")
def put_worker(worker_id: PathId, body: WorkerBody, actor: Admin, conn: Conn) -> Row:
    try:
        with registry.changes(conn, actor.history_name):
            registry.upsert_workers(conn, [with_path_id(body, worker_id)])
    except NotFound as exc:
        if exc.field in _AREA_COLUMNS:  # an unknown area: name the field the admin sent
            raise Invalid("areas", str(exc)) from exc
        raise
    return _worker(conn, worker_id)


@router.get("/workers", response_model=Page[WorkerOut],
            summary="List workers by id; `area` is a grid, community or street id they cover")
def list_workers(actor: Reader, conn: Conn,
                 role: Literal[WORKER_ROLES] | None = None,  # type: ignore[valid-type]
                 area: QueryId = None,
                 active: bool | None = None, limit: Limit = 100,
                 offset: Offset = 0) -> Paged[Row]:
    rows = queries.workers(conn, role=role, area=area, active=active, limit=limit + 1,
                           offset=offset)
    return page(_leaders_own(conn, actor, rows, "id"), limit, offset)


@router.get("/workers/{worker_id}", response_model=WorkerOut, summary="One worker")
def get_worker(worker_id: PathId, actor: Reader, conn: Conn) -> Row:
    if actor.role == "grid_leader":
        _in_area(conn, actor, worker_id)
    return _worker(conn, worker_id)


class Saved(BaseModel):
    saved: int


@router.post("/roster", status_code=201, response_model=Saved,
             summary="Add shifts; a shift with the same worker and start takes the new end")
def add_shifts(shifts: Annotated[list[ShiftBody], Body(min_length=1, max_length=10_000)],
               actor: Admin, conn: Conn) -> Saved:
    with registry.changes(conn, actor.history_name):
        registry.add_shifts(conn, shifts)
    return Saved(saved=len(shifts))


# A window of years would send the whole roster to a phone.
_LONGEST = timedelta(days=92)
From = Annotated[AwareDatetime | None, Query(alias="from", ge=EARLIEST, le=LATEST)]
To = Annotated[AwareDatetime | None, Query(alias="to", ge=EARLIEST, le=LATEST)]


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[from, to): by default the coming 7 days; a 422 past _LONGEST."""
    start = start or datetime.now(UTC)
    end = end or start + timedelta(days=7)
    if not timedelta(0) < end - start <= _LONGEST:
        raise RequestValidationError([{
            "loc": ("query", "to"), "type": "value_error",
            "msg": f"must be after from, and at most {_LONGEST.days} days after it"}])
    return start, end


@router.get("/roster", response_model=list[ShiftOut],
            summary="Shifts overlapping [from, to): by default the coming 7 days; at most 92")
def get_roster(actor: Reader, conn: Conn,
               start: From = None, end: To = None,
               worker_id: QueryId = None) -> list[Row]:
    start, end = _window(start, end)
    rows = queries.roster(conn, start, end, worker_id=worker_id)
    return _leaders_own(conn, actor, rows, "worker_id")


def _leaders_own(conn: psycopg.Connection, actor: Actor, rows: list[Row],
                 key: str) -> list[Row]:
    """A grid leader sees the people of their own area; officers see all they dispatch.
    (A leader's page of workers may come back shorter than `limit`: the filter runs on it.)"""
    if actor.role != "grid_leader":
        return rows
    mine = _area_workers(conn, actor, {r[key] for r in rows})
    return [r for r in rows if r[key] in mine]


# --- leave, substitutes, swaps ---------------------------------------------------------------

class LeaveSaved(BaseModel):
    id: int
    warnings: list[str] = Field(description="coverage gaps the leave opens (中文 / English)")


class LeaveOut(BaseModel):
    id: int
    worker_id: str
    starts_at: datetime
    ends_at: datetime
    substitute_id: str | None
    reason: str | None
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None


class SwapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shift_ids: list[int] = Field(min_length=2, max_length=2, description="two shifts' ids")


def _in_area(conn: psycopg.Connection, actor: Actor, *workers: str | None) -> None:
    """A worker outside the caller's area is a 404, like one that does not exist."""
    wanted = [w for w in workers if w]
    inside = _area_workers(conn, actor, set(wanted))
    for worker in wanted:
        if worker not in inside:
            raise NotFound("worker", worker)


def _area_workers(conn: psycopg.Connection, actor: Actor, workers: set[str]) -> set[str]:
    """Those of `workers` who cover a grid, community or street in the caller's area."""
    scope = area_scope(conn, actor)
    if scope.everything:
        return workers
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT wa.worker_id FROM worker_areas wa"
        " LEFT JOIN grids g ON g.id = wa.grid_id"
        " LEFT JOIN communities c ON c.id = coalesce(wa.community_id, g.community_id)"
        " WHERE wa.worker_id = ANY(%s) AND (wa.grid_id = ANY(%s) OR c.id = ANY(%s)"
        " OR coalesce(wa.street_id, c.street_id) = ANY(%s))",
        [sorted(workers), list(scope.grids), list(scope.communities),
         list(scope.streets)]).fetchall()}


@router.post("/leave", status_code=201, response_model=LeaveSaved,
             summary="请假/替班 Put a worker on leave, with a substitute who gets their pages")
def add_leave(body: leave.Leave, actor: Officer, conn: Conn) -> LeaveSaved:
    _in_area(conn, actor, body.worker_id, body.substitute_id)
    leave_id, warnings = leave.add_leave(conn, body, actor.history_name)
    return LeaveSaved(id=leave_id, warnings=warnings)


@router.get("/leave", response_model=list[LeaveOut],
            summary="Leave overlapping [from, to): by default the coming 7 days")
def get_leave(actor: Officer, conn: Conn, start: From = None, end: To = None,
              worker_id: QueryId = None) -> list[Row]:
    start, end = _window(start, end)
    rows = leave.leaves(conn, start, end, worker_id)
    # Only the leave of the caller's own people: a grid leader sees their grid's.
    mine = _area_workers(conn, actor, {r["worker_id"] for r in rows})
    return [r for r in rows if r["worker_id"] in mine]


@router.post("/leave/{leave_id}/cancel", response_model=LeaveOut,
             summary="End a leave early (the row stays, with cancelled_at)")
def cancel_leave(leave_id: RowId, actor: Officer, conn: Conn) -> Row:
    found = conn.execute("SELECT worker_id FROM leave WHERE id = %s", [leave_id]).fetchone()
    if found is None:
        raise NotFound("leave", str(leave_id))
    _in_area(conn, actor, found[0])
    return leave.cancel_leave(conn, leave_id, actor.history_name)


@router.post("/roster/swap", response_model=list[ShiftOut],
             summary="换班 Two people of the same role trade shifts")
def swap_shifts(body: SwapBody, actor: Officer, conn: Conn) -> list[Row]:
    owners = [r[0] for r in conn.execute("SELECT worker_id FROM roster WHERE id = ANY(%s)",
                                         [body.shift_ids]).fetchall()]
    _in_area(conn, actor, *owners)
    return leave.swap(conn, body.shift_ids[0], body.shift_ids[1], actor.history_name)
