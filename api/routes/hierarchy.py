"""/v1/streets, /v1/communities, /v1/grids, /v1/buildings: the grid hierarchy.

The four levels behave alike (PUT creates or updates by id, GET lists or fetches one), so
one function builds the three routes of each level from the table below. Admins write;
everyone who reads the registry reads.

(No `from __future__ import annotations` here: the routes are built in a function, and
FastAPI must see their body types as objects, not as names to look up in this module.)
"""

from typing import Annotated

import psycopg
from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import Actor, allow
from api.deps import Conn
from api.schemas import (
    BuildingBody,
    BuildingOut,
    CommunityBody,
    CommunityOut,
    GridBody,
    GridOut,
    LevelId,
    Limit,
    Offset,
    Page,
    Paged,
    StreetBody,
    StreetOut,
    page,
    with_path_id,
)
from devices import queries, registry
from devices.errors import NotFound
from devices.queries import Row
from protocol.models import DEVICE_ID

router = APIRouter(prefix="/v1", tags=["hierarchy"])

Reader = Annotated[Actor, allow("registry:read")]
Admin = Annotated[Actor, allow("hierarchy:write")]

# path, table, noun, request body, answer
LEVELS: list[tuple[str, str, str, type[BaseModel], type[BaseModel]]] = [
    ("streets", "street_offices", "street office", StreetBody, StreetOut),
    ("communities", "communities", "community", CommunityBody, CommunityOut),
    ("grids", "grids", "grid", GridBody, GridOut),
    ("buildings", "buildings", "building", BuildingBody, BuildingOut),
]


def _level(path: str, table: str, noun: str, body_model: type[BaseModel],
           answer: type[BaseModel]) -> None:
    parent = queries.HIERARCHY[table][1]

    def get_one(conn: psycopg.Connection, ident: str) -> Row:
        row = queries.hierarchy_row(conn, table, ident)
        if row is None:
            raise NotFound(noun, ident)
        return row

    @router.put(f"/{path}/{{id}}", response_model=answer, name=f"put_{path}",
                summary=f"Create or update a {noun} by id")
    def put(ident: LevelId, body: body_model,  # type: ignore[valid-type]
            actor: Admin, conn: Conn) -> Row:
        with registry.changes(conn, actor.history_name):
            registry.upsert(conn, table, [with_path_id(body, ident)])
        return get_one(conn, ident)

    @router.get(f"/{path}/{{id}}", response_model=answer, name=f"get_{path}",
                summary=f"One {noun}")
    def get(ident: LevelId, _: Reader, conn: Conn) -> Row:
        return get_one(conn, ident)

    def list_rows(conn: psycopg.Connection, parent_id: str | None, limit: int,
                  offset: int) -> Paged[Row]:
        rows = queries.hierarchy(conn, table, parent=parent_id, limit=limit + 1, offset=offset)
        return page(rows, limit, offset)

    if parent is None:
        def list_(_: Reader, conn: Conn, limit: Limit = 100,
                  offset: Offset = 0) -> Paged[Row]:
            return list_rows(conn, None, limit, offset)
    else:
        ParentId = Annotated[str | None, Query(alias=parent, pattern=DEVICE_ID.pattern,
                                               description=f"only those under this {parent}")]

        def list_(_: Reader, conn: Conn, parent_id: ParentId = None,  # type: ignore[misc]
                  limit: Limit = 100, offset: Offset = 0) -> Paged[Row]:
            return list_rows(conn, parent_id, limit, offset)

    router.get(f"/{path}", response_model=Page[answer],  # type: ignore[valid-type]
               name=f"list_{path}", summary=f"List {path} by id")(list_)


for _args in LEVELS:
    _level(*_args)
