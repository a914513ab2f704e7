"""/v1/devices: what a field technician does on site, and what duty officers look up.

Every write goes through devices.registry, which records `api:<token name>` in the history
and pushes credentials to the broker inside the same transaction. Passwords are answered
once, with Cache-Control: no-store, and never stored in clear.
"""

from __future__ import annotations

from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Response

from api.auth import Actor, allow
from api.deps import AppSettings, Broker, Conn
from api.schemas import (
    Credentials,
    Device,
    DeviceBody,
    DeviceSummary,
    EventOut,
    HistoryEntry,
    Limit,
    Offset,
    Page,
    Paged,
    PathId,
    QueryId,
    ReadingOut,
    StateChange,
    page,
    shown_once,
)
from devices import queries, registry
from devices.errors import NotFound
from devices.models import DEVICE_KINDS, DEVICE_STATES, DevicePlacement, Replacement
from devices.queries import Row

router = APIRouter(prefix="/v1/devices", tags=["devices"])

Reader = Annotated[Actor, allow("registry:read")]
Writer = Annotated[Actor, allow("devices:write")]


def _device(conn: psycopg.Connection, device_id: str) -> Row:
    row = queries.device(conn, device_id)
    if row is None:
        raise NotFound("device", device_id)
    return row


@router.post("", status_code=201, response_model=Credentials,
             summary="Register a device; answers its MQTT password once")
def register(body: DeviceBody, actor: Writer, conn: Conn, broker: Broker,
             settings: AppSettings, response: Response) -> Credentials:
    [creds] = registry.provision(conn, broker, [body], actor.history_name,
                                 settings.broker_auth.hash_iterations)
    return shown_once(creds, response)


@router.get("", response_model=Page[DeviceSummary], summary="List devices")
def list_devices(_: Reader, conn: Conn, building_id: QueryId = None, grid_id: QueryId = None,
                 community_id: QueryId = None, street_id: QueryId = None,
                 kind: Literal[DEVICE_KINDS] | None = None,  # type: ignore[valid-type]
                 state: Literal[DEVICE_STATES] | None = None,  # type: ignore[valid-type]
                 limit: Limit = 100, offset: Offset = 0) -> Paged[Row]:
    rows = queries.devices(conn, building_id=building_id, grid_id=grid_id,
                           community_id=community_id, street_id=street_id, kind=kind,
                           state=state, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.get("/{device_id}", response_model=Device,
            summary="One device, with when it was last heard and its open tickets")
def get_device(device_id: PathId, _: Reader, conn: Conn) -> Row:
    return _device(conn, device_id)


@router.post("/{device_id}/move", response_model=Device,
             summary="Move a device to another building, floor or spot")
def move(device_id: PathId, body: DevicePlacement, actor: Writer, conn: Conn) -> Row:
    registry.move_device(conn, device_id, body, actor.history_name)
    return _device(conn, device_id)


@router.post("/{device_id}/state", response_model=Device,
             summary="Put a device into maintenance or back to active")
def set_state(device_id: PathId, body: StateChange, actor: Writer, conn: Conn) -> Row:
    registry.set_state(conn, device_id, body.state, actor.history_name)
    return _device(conn, device_id)


@router.post("/{device_id}/rotate-credentials", response_model=Credentials,
             summary="Issue a new MQTT password (answered once); the old one stops working")
def rotate_credentials(device_id: PathId, actor: Writer, conn: Conn, broker: Broker,
                       settings: AppSettings, response: Response) -> Credentials:
    creds = registry.rotate_credentials(conn, broker, device_id, actor.history_name,
                                        settings.broker_auth.hash_iterations)
    return shown_once(creds, response)


@router.post("/{device_id}/retire", response_model=Device,
             summary="Retire a device for good: its credentials are deleted, its history kept")
def retire(device_id: PathId, actor: Writer, conn: Conn, broker: Broker) -> Row:
    registry.retire_device(conn, broker, device_id, actor.history_name)
    return _device(conn, device_id)


@router.post("/{device_id}/replace", status_code=201, response_model=Credentials,
             summary="Replace a device by a new unit at its place; answers the new one's "
                     "MQTT password once")
def replace(device_id: PathId, body: Replacement, actor: Writer, conn: Conn, broker: Broker,
            settings: AppSettings, response: Response) -> Credentials:
    """The new unit takes the old one's kind, building, floor, room and gateway, and names
    it in `replaces`; the old one is retired (its password deleted) in the same step."""
    creds = registry.replace_device(conn, broker, device_id, body, actor.history_name,
                                    settings.broker_auth.hash_iterations)
    return shown_once(creds, response)


@router.get("/{device_id}/readings", response_model=Page[ReadingOut],
            summary="The device's latest status reports, newest first")
def readings(device_id: PathId, _: Reader, conn: Conn, limit: Limit = 10,
             offset: Offset = 0) -> Paged[Row]:
    _device(conn, device_id)
    rows = queries.device_readings(conn, device_id, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.get("/{device_id}/events", response_model=Page[EventOut],
            summary="The device's latest events (alarms, faults, tamper, ...), newest first")
def events(device_id: PathId, _: Reader, conn: Conn, limit: Limit = 10,
           offset: Offset = 0) -> Paged[Row]:
    _device(conn, device_id)
    rows = queries.device_events(conn, device_id, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.get("/{device_id}/history", response_model=Page[HistoryEntry],
            summary="Every change to the device's registration: who, when, what")
def history(device_id: PathId, _: Reader, conn: Conn, limit: Limit = 100,
            offset: Offset = 0) -> Paged[Row]:
    _device(conn, device_id)
    rows = queries.device_history(conn, device_id, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)
