"""/v1/workers and /v1/roster: who covers which area, and who is on shift when.

Admins write both. Duty officers read them (they dispatch people and need their phones);
field technicians and grid roles do not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Body, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel

from api.auth import Actor, allow
from api.deps import Conn
from api.schemas import (
    Limit,
    Offset,
    Page,
    Paged,
    PathId,
    QueryId,
    ShiftBody,
    ShiftOut,
    WorkerBody,
    WorkerOut,
    page,
    with_path_id,
)
from devices import queries, registry
from devices.errors import Invalid, NotFound
from devices.models import EARLIEST, LATEST, WORKER_ROLES
from devices.queries import Row

router = APIRouter(prefix="/v1", tags=["people"])

Reader = Annotated[Actor, allow("people:read")]
Admin = Annotated[Actor, allow("people:write")]

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
def list_workers(_: Reader, conn: Conn,
                 role: Literal[WORKER_ROLES] | None = None,  # type: ignore[valid-type]
                 area: QueryId = None,
                 active: bool | None = None, limit: Limit = 100,
                 offset: Offset = 0) -> Paged[Row]:
    rows = queries.workers(conn, role=role, area=area, active=active, limit=limit + 1,
                           offset=offset)
    return page(rows, limit, offset)


@router.get("/workers/{worker_id}", response_model=WorkerOut, summary="One worker")
def get_worker(worker_id: PathId, _: Reader, conn: Conn) -> Row:
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


@router.get("/roster", response_model=list[ShiftOut],
            summary="Shifts overlapping [from, to): by default the coming 7 days; at most 92")
def get_roster(_: Reader, conn: Conn,
               start: From = None, end: To = None,
               worker_id: QueryId = None) -> list[Row]:
    start = start or datetime.now(UTC)
    end = end or start + timedelta(days=7)
    if not timedelta(0) < end - start <= _LONGEST:
        raise RequestValidationError([{
            "loc": ("query", "to"), "type": "value_error",
            "msg": f"must be after from, and at most {_LONGEST.days} days after it"}])
    return queries.roster(conn, start, end, worker_id=worker_id)
