"""The API's own shapes: thin request wrappers around devices.models, and the answers.

Requests reuse the registry's models (devices/models.py), so a field is validated the same
way whether it comes from a spreadsheet or a phone. The wrappers only let the id come from
the path (PUT /v1/buildings/B1 need not repeat "id": "B1") and add the few bodies that are
not registry records. Answers are plain models without validators: they describe what the
database holds and must never turn a stored row into a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypedDict, TypeVar

from fastapi import Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import ROLES
from devices.credentials import DeviceCredentials
from devices.errors import Invalid
from devices.models import (
    Building,
    Community,
    Grid,
    Ident,
    Name,
    NewDevice,
    Shift,
    Street,
    Worker,
)
from devices.quarantine import QuarantineEntry as QuarantineEntry  # the API answers it as is
from protocol.models import DEVICE_ID

T = TypeVar("T")
Record = TypeVar("Record", bound=BaseModel)


# --- requests -----------------------------------------------------------------------------

# The *Body models let the path give the id. pydantic allows a subclass to redefine a field
# as optional, which mypy, reading it as a plain attribute, calls an incompatible override
# (ignore[assignment]); with_path_id() sets the id before a body reaches the registry.

class StreetBody(Street):
    id: Ident | None = None  # type: ignore[assignment]


class CommunityBody(Community):
    id: Ident | None = None  # type: ignore[assignment]


class GridBody(Grid):
    id: Ident | None = None  # type: ignore[assignment]


class BuildingBody(Building):
    id: Ident | None = None  # type: ignore[assignment]


class WorkerBody(Worker):
    id: Ident | None = None  # type: ignore[assignment]


# Request bodies are the registry's models (devices/models.py validates every way in).
DeviceBody = NewDevice


class ClaimBody(NewDevice):
    """A registration for a quarantined id: the id is the one in the path."""
    id: Ident | None = None  # type: ignore[assignment]


ShiftBody = Shift


def with_path_id(body: Record, path_id: str) -> Record:
    """The body with its id taken from the path; an id in the body must agree."""
    given = getattr(body, "id", None)
    if given is not None and given != path_id:
        raise Invalid("id", f"{given!r} does not match the id in the path ({path_id!r})")
    return body.model_copy(update={"id": path_id})


# Ids in paths and filters: the registry's id alphabet, so a malformed one is a 422 naming
# the parameter before it reaches the database.
PathId = Annotated[str, Path(pattern=DEVICE_ID.pattern, max_length=64)]
QueryId = Annotated[str | None, Query(pattern=DEVICE_ID.pattern, max_length=64)]
# The hierarchy's routes serve four levels with one function; the path says {id}.
LevelId = Annotated[str, Path(alias="id", pattern=DEVICE_ID.pattern, max_length=64)]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


class StateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["active", "maintenance"] = Field(
        description="maintenance: being worked on; active: back in service")


class TicketClose(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    note: str = Field(min_length=1, max_length=500, description="what was done on site")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: Name = Field(description="who or what uses it; history records changes as api:<name>")
    role: Literal[ROLES]  # type: ignore[valid-type]
    worker_id: Ident | None = None


# --- answers ------------------------------------------------------------------------------

class Page(BaseModel, Generic[T]):
    items: list[T]
    next_offset: int | None = Field(description="pass as offset for the next page; "
                                                "null on the last page")


class Credentials(BaseModel):
    """Shown once: firegrid keeps only a hash. Write the password into the device now."""
    id: str
    kind: str
    username: str
    password: str


class OpenTicket(BaseModel):
    id: int
    condition: str
    opened_at: datetime
    detail: str
    assigned_to: str | None


class _DeviceBase(BaseModel):
    id: str
    kind: str
    model: str
    firmware: str
    building_id: str
    floor: int | None
    location: str
    gateway_id: str | None
    installed_at: datetime
    state: str
    heartbeat_s: int
    credentials_rotated_at: datetime | None
    retired_at: datetime | None
    last_seen: datetime | None = Field(description="when ingest last heard from it; "
                                                   "null if never")
    battery_pct: int | None
    rsrp_dbm: int | None
    stream_online: bool | None
    replaces: str | None = Field(description="the device this one replaced (its history "
                                             "is under that id)")
    replaced_by: str | None = Field(description="the device that replaced this one")


class DeviceSummary(_DeviceBase):
    open_tickets: list[str] = Field(description="conditions of its open tickets")


class Device(_DeviceBase):
    open_tickets: list[OpenTicket]


class ReadingOut(BaseModel):
    ts: datetime = Field(description="the device's own clock")
    received_at: datetime
    kind: str = Field(description="smoke or camera")
    gateway_id: str | None
    obscuration_db_m: float | None
    temperature_c: float | None
    battery_pct: int | None
    battery_v: float | None
    rsrp_dbm: int | None
    sinr_db: float | None
    heartbeat_s: int | None
    stream_online: bool | None
    recording: bool | None
    storage_free_mb: int | None


class EventOut(BaseModel):
    ts: datetime = Field(description="the device's own clock")
    received_at: datetime
    type: str
    gateway_id: str | None
    attrs: dict[str, Any] = Field(description="the event's own fields (docs/protocol.md)")


class HistoryEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    changed: list[str]
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class Ticket(BaseModel):
    id: int
    device_id: str
    kind: str
    building_id: str
    address: str
    grid_id: str
    condition: str
    opened_at: datetime
    detail: str
    assigned_to: str | None
    closed_at: datetime | None
    close_reason: str | None
    closed_by: str | None
    close_note: str | None


class StreetOut(BaseModel):
    id: str
    name: str


class CommunityOut(BaseModel):
    id: str
    street_id: str
    name: str


class GridOut(BaseModel):
    id: str
    community_id: str
    name: str
    households: int | None


class BuildingOut(BaseModel):
    id: str
    grid_id: str
    address: str
    lat: float
    lon: float
    floors: int
    households: int | None
    use: str
    contact_name: str | None
    contact_phone: str | None


class WorkerOut(BaseModel):
    id: str
    name: str
    role: str
    phone: str | None
    channels: dict[str, Any]
    areas: list[str]
    active: bool


class ShiftOut(BaseModel):
    id: int
    worker_id: str
    name: str
    role: str
    starts_at: datetime
    ends_at: datetime


class TokenInfo(BaseModel):
    id: int
    name: str
    role: str
    worker_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    """Shown once: firegrid keeps only its SHA-256."""
    id: int
    name: str
    role: str
    worker_id: str | None
    token: str


def shown_once(creds: DeviceCredentials, response: Response) -> Credentials:
    """The credentials answer; no-store keeps the password out of caches on the way."""
    response.headers["Cache-Control"] = "no-store"
    return Credentials(id=creds.device_id, kind=creds.kind, username=creds.device_id,
                       password=creds.password)


class Paged(TypedDict, Generic[T]):
    """A page as a route returns it; FastAPI checks it against the route's Page model."""
    items: list[T]
    next_offset: int | None


def page(rows: list[T], limit: int, offset: int) -> Paged[T]:
    """A Page from `limit + 1` fetched rows: the extra row says whether more follow."""
    more = len(rows) > limit
    return {"items": rows[:limit], "next_offset": offset + limit if more else None}
