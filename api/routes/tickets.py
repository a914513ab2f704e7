"""/v1/tickets: maintenance tickets, and closing one by hand after a visit
(devices/tickets.py says what a manual close does)."""

from __future__ import annotations

from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter

from api.auth import Actor, allow
from api.deps import Conn
from api.schemas import Limit, Offset, Page, Paged, QueryId, RowId, Ticket, TicketClose, page
from devices import queries, tickets
from devices.errors import NotFound
from devices.monitor import CONDITIONS
from devices.queries import Row

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])

Reader = Annotated[Actor, allow("registry:read")]
Writer = Annotated[Actor, allow("devices:write")]



def _ticket(conn: psycopg.Connection, ticket_id: int) -> Row:
    row = queries.ticket(conn, ticket_id)
    if row is None:
        raise NotFound("ticket", str(ticket_id))
    return row


@router.get("", response_model=Page[Ticket], summary="List tickets, newest first")
def list_tickets(_: Reader, conn: Conn, status: Literal["open", "closed", "all"] = "open",
                 condition: Literal[CONDITIONS] | None = None,  # type: ignore[valid-type]
                 device_id: QueryId = None, building_id: QueryId = None,
                 grid_id: QueryId = None, community_id: QueryId = None,
                 assigned_to: QueryId = None, limit: Limit = 100,
                 offset: Offset = 0) -> Paged[Row]:
    rows = queries.tickets(conn, status=status, condition=condition, device_id=device_id,
                           building_id=building_id, grid_id=grid_id,
                           community_id=community_id, assigned_to=assigned_to,
                           limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.get("/{ticket_id}", response_model=Ticket, summary="One ticket")
def get_ticket(ticket_id: RowId, _: Reader, conn: Conn) -> Row:
    return _ticket(conn, ticket_id)


@router.post("/{ticket_id}/close", response_model=Ticket,
             summary="Close a ticket after a visit, with a note of what was done")
def close(ticket_id: RowId, body: TicketClose, actor: Writer, conn: Conn) -> Row:
    tickets.close_ticket(conn, ticket_id, actor.history_name, body.note)
    return _ticket(conn, ticket_id)
