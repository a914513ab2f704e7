"""/v1/quarantine: ids that send valid messages but are not registered, and claiming one.

A detector installed before its registration shows up here (ingest stores its readings
anyway). Claiming registers it and marks the quarantine row in one transaction, so an id
is never claimed without being registered, nor registered twice from here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from api.auth import Actor, allow
from api.deps import AppSettings, Broker, Conn
from api.schemas import (
    ClaimBody,
    Credentials,
    Limit,
    Offset,
    Page,
    Paged,
    PathId,
    QuarantineEntry,
    page,
    shown_once,
    with_path_id,
)
from devices import quarantine, queries, registry
from devices.queries import Row

router = APIRouter(prefix="/v1/quarantine", tags=["quarantine"])

Reader = Annotated[Actor, allow("registry:read")]
Writer = Annotated[Actor, allow("devices:write")]


@router.get("", response_model=Page[QuarantineEntry],
            summary="Unregistered ids heard from, most recent first")
def list_quarantine(_: Reader, conn: Conn, claimed: bool = False, limit: Limit = 100,
                    offset: Offset = 0) -> Paged[Row]:
    rows = queries.quarantine(conn, claimed=claimed, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.post("/{device_id}/claim", status_code=201, response_model=Credentials,
             summary="Register a quarantined id as a device; answers its MQTT password once")
def claim(device_id: PathId, body: ClaimBody, actor: Writer, conn: Conn, broker: Broker,
          settings: AppSettings, response: Response) -> Credentials:
    [creds] = registry.provision(
        conn, broker, [with_path_id(body, device_id)], actor.history_name,
        settings.broker_auth.hash_iterations,
        before=lambda tx: quarantine.claim(tx, device_id, actor.history_name))
    return shown_once(creds, response)
