"""The registry's records, validated once for every way in: the CSV import reports a bad
value by row and column, the API answers 422 naming the field, and both use these models.

Field names are the CSV column names and the JSON field names, so a field technician's
spreadsheet and the API documentation speak the same words.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from protocol.models import DEVICE_ID

Ident = Annotated[str, Field(pattern=DEVICE_ID.pattern,
                             description="letters, digits, _ . - ; up to 64")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# A number a phone can dial from a tel: link: digits, spaces and dashes, an optional +.
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 -]{4,20}$")]

DEVICE_KINDS = ("smoke_detector", "camera", "gateway")
DEVICE_STATES = ("provisioned", "active", "maintenance", "retired")
BUILDING_USES = ("residential", "rental", "shop", "workshop", "mixed", "public", "other")
WORKER_ROLES = ("grid_worker", "grid_leader", "community_duty", "street_duty", "field_technician")
# The level of area each role covers (worker_areas): grid people cover grids, duty officers
# their community or street.
ROLE_AREA = {"grid_worker": "grid", "grid_leader": "grid", "field_technician": "grid",
             "community_duty": "community", "street_duty": "street"}
CHANNELS = ("sms", "wecom", "dingtalk", "feishu", "email", "webhook", "voice")
# Registered heartbeat when the row leaves it empty: cameras send the GB/T 28181 keepalive
# every 60 s; NB-IoT detectors and gateways typically report hourly.
DEFAULT_HEARTBEAT_S = {"smoke_detector": 3600, "camera": 60, "gateway": 300}


# Dates the registry can read back: PostgreSQL stores "0001-01-01T00:00+14:00" (1 BC in UTC)
# but Python cannot load it, so one such row would break every listing that holds it.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _aware_and_readable(value: datetime | None) -> datetime | None:
    if value is None:
        return value
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-11-21T09:30:00+08:00")
    if not EARLIEST <= value < LATEST:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _Record(BaseModel):
    # Unknown fields are refused: a misspelt column must not silently become a default.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: object) -> object:
        # PostgreSQL cannot store NUL in text, and other control characters in a name or an
        # address are a broken export, not data: refuse them here, naming the field.
        texts = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else [value])
        if any(isinstance(t, str) and _CONTROL.search(t) for t in texts):
            raise ValueError("contains a control character (NUL, ESC, ...)")
        return value


class Street(_Record):
    id: Ident
    name: Name


class Community(_Record):
    id: Ident
    street_id: Ident
    name: Name


class Grid(_Record):
    id: Ident
    community_id: Ident
    name: Name
    households: int | None = Field(None, ge=0, le=100_000)


class Building(_Record):
    id: Ident
    grid_id: Ident
    address: Name
    lat: float = Field(ge=-90, le=90, description="WGS-84 latitude")
    lon: float = Field(ge=-180, le=180, description="WGS-84 longitude")
    floors: int = Field(ge=1, le=200)
    households: int | None = Field(None, ge=0, le=10_000)
    use: Literal[BUILDING_USES]  # type: ignore[valid-type]
    # Whom to call about the building itself (landlord, manager): the console's button.
    contact_name: Name | None = Field(None, description="the building's contact person")
    contact_phone: Phone | None = Field(None, description="their phone")

    @field_validator("lon")
    @classmethod
    def _placed(cls, lon: float, info: ValidationInfo) -> float:
        # 0,0 is what an empty GPS fix or a blank spreadsheet cell turns into.
        if lon == 0 and info.data.get("lat") == 0:
            raise ValueError("lat/lon 0,0 is not a building's position (coordinates missing?)")
        return lon


def _not_a_service_name(value: str) -> str:
    # Service accounts (ingest, alert core) are named firegrid-*; a device with such an id
    # would share their broker username (docs/broker-auth.md, EMQX).
    if value.lower().startswith("firegrid"):
        raise ValueError("ids starting with 'firegrid' are reserved for firegrid's services")
    return value


class DevicePlacement(_Record):
    """Where a device hangs: what a move changes."""
    building_id: Ident
    floor: int | None = Field(None, ge=-10, le=200)
    location: str = Field("", max_length=200, description="room or spot, e.g. '3F corridor'")


class NewDevice(DevicePlacement):
    id: Ident
    kind: Literal[DEVICE_KINDS]  # type: ignore[valid-type]
    model: str = Field("", max_length=100)
    firmware: str = Field("", max_length=100)
    gateway_id: Ident | None = None
    installed_at: datetime | None = None
    heartbeat_s: int | None = Field(None, ge=10, le=7 * 86400,
                                    description="configured heartbeat; default by kind")
    # Set when the devices were flashed with a password beforehand (the simulator's
    # generator does this); otherwise provisioning generates one.
    password: str | None = Field(None, min_length=16, max_length=128)

    _installed_at = field_validator("installed_at")(_aware_and_readable)

    _reserved = field_validator("id")(_not_a_service_name)

    @model_validator(mode="after")
    def _default_heartbeat(self) -> NewDevice:
        if self.heartbeat_s is None:
            self.heartbeat_s = DEFAULT_HEARTBEAT_S[self.kind]
        return self


class Replacement(_Record):
    """The new unit that takes a device's place (POST /v1/devices/{id}/replace): its id,
    and its model and firmware when they differ from the old one's. Kind, building, floor,
    room, gateway and heartbeat are the old device's."""
    id: Ident = Field(description="the new unit's id (its label)")
    model: str = Field("", max_length=100, description="empty: the old one's")
    firmware: str = Field("", max_length=100, description="empty: the old one's")
    password: str | None = Field(None, min_length=16, max_length=128,
                                 description="set when the unit was flashed with one")

    _reserved = field_validator("id")(_not_a_service_name)


class Worker(_Record):
    id: Ident
    name: Name
    role: Literal[WORKER_ROLES]  # type: ignore[valid-type]
    phone: Phone | None = None
    channels: dict[Literal[CHANNELS], str] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="how to reach them: sms, wecom, dingtalk, ...")
    areas: list[Ident] = Field(default_factory=list,
                               description="grid ids (grid roles, technicians), community ids "
                                           "(community_duty) or street ids (street_duty)")
    active: bool = True


class Shift(_Record):
    worker_id: Ident
    starts_at: datetime
    ends_at: datetime

    _when = field_validator("starts_at", "ends_at")(_aware_and_readable)

    @field_validator("ends_at")
    @classmethod
    def _ordered(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and ends_at <= starts_at:
            raise ValueError("must be after starts_at")
        return ends_at
