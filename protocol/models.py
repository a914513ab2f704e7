"""The device wire protocol, version 1 (docs/protocol.md is the prose; these models the law).

Topics (prefix configurable, default fg/v1):

    fg/v1/{device_id}/telemetry   periodic status: smoke heartbeat or camera keepalive
    fg/v1/{device_id}/event       alarms, faults and the other events
    fg/v1/{gateway_id}/gateway    a gateway's batch: telemetry and events of several devices
    fg/v1/{device_id}/cmd         commands to the device (devices subscribe; ingest ignores)

Every message carries the device's own clock `ts` (Unix epoch milliseconds, UTC) and a
per-device sequence number `seq`: one counter per device across all its topics,
incremented per message, wrapping at 2**32. (device_id, ts, seq) identifies a message: a
redelivery or a device resend carries the same triple and is stored once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

EpochMs = Annotated[int, Field(ge=946684800000, le=32503680000000,
                               description="Unix epoch ms, UTC")]
Seq = Annotated[int, Field(ge=0, le=2**32 - 1, description="per-device sequence number")]


class _Message(BaseModel):
    # Unknown fields are ignored so newer v1 firmware can add fields without being refused.
    # Strict: "ts": "1741..." or "active": "yes" are refused, as the published JSON Schemas
    # refuse them; ingest and the schemas given to device makers must agree.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    v: Literal[1] = 1
    ts: EpochMs
    seq: Seq


# --- telemetry -------------------------------------------------------------------------

class SmokeStatus(_Message):
    """A smoke detector's periodic heartbeat (NB-IoT/4G detectors: typically every 1-24 h)."""
    type: Literal["smoke_status"]
    obscuration_db_m: float = Field(ge=0, le=100, description="smoke obscuration, dB/m")
    temperature_c: float = Field(ge=-50, le=200, description="°C")
    battery_pct: int = Field(ge=0, le=100, description="battery, %")
    battery_v: float = Field(ge=0, le=20, description="battery voltage, V")
    rsrp_dbm: int = Field(ge=-160, le=0, description="LTE/NB-IoT reference signal power")
    sinr_db: float = Field(ge=-30, le=60, description="signal to interference and noise, dB")
    heartbeat_s: int = Field(ge=10, le=7 * 86400, description="configured heartbeat period")


class CameraStatus(_Message):
    """A camera channel's keepalive (GB/T 28181 style, every 60 s)."""
    type: Literal["camera_status"]
    stream_online: bool = Field(description="the video stream is up")
    recording: bool = Field(description="the recorder is writing this channel")
    # Bounded by its column (bigint): a larger number would pass validation and then stop
    # the batch in the database driver.
    storage_free_mb: int = Field(ge=0, le=2**63 - 1, description="free recording storage, MB")
    temperature_c: float | None = Field(None, ge=-50, le=200, description="°C")


TelemetryMessage = SmokeStatus | CameraStatus
Telemetry = Annotated[TelemetryMessage, Field(discriminator="type")]

# --- events ----------------------------------------------------------------------------

class Alarm(_Message):
    type: Literal["alarm"]
    obscuration_db_m: float | None = Field(None, ge=0, le=100)
    temperature_c: float | None = Field(None, ge=-50, le=200)


class AlarmClear(_Message):
    type: Literal["alarm_clear"]


class Fault(_Message):
    type: Literal["fault"]
    code: str = Field(min_length=1, max_length=64, description="vendor fault code")
    detail: str | None = Field(None, max_length=512)


class Tamper(_Message):
    type: Literal["tamper"]
    state: Literal["removed", "opened", "restored"] = Field(
        description="removed from its base, housing opened, or put back")


class LowBattery(_Message):
    type: Literal["low_battery"]
    battery_pct: int = Field(ge=0, le=100)
    battery_v: float | None = Field(None, ge=0, le=20)


class SelfTest(_Message):
    type: Literal["self_test"]
    result: Literal["pass", "fail"]
    detail: str | None = Field(None, max_length=512)


class Mute(_Message):
    type: Literal["mute"]
    duration_s: int = Field(ge=0, le=86400,
                            description="sounder silenced for this long; 0 = mute ended early")


# A link the duty console puts in front of a grid worker (a camera's snapshot or clip):
# http or https only, with a host and no spaces or control characters. Anything else
# (javascript:, file:, a bare path) would run or read something on the worker's phone, or
# lead nowhere; such a message is dead-lettered like any other schema error.
MEDIA_URL = r"^https?://[^\x00-\x20\x7f/?#]+[^\x00-\x20\x7f]*$"
MediaUrl = Annotated[str, Field(max_length=1024, pattern=MEDIA_URL)]


class _Detection(_Message):
    confidence: float = Field(ge=0, le=1, description="video analytics confidence, 0..1")
    snapshot_url: MediaUrl | None = Field(
        None, description="a still of what the analytics saw (http or https)")
    clip_url: MediaUrl | None = Field(
        None, description="a recording around the detection (http or https)")


class SmokeDetected(_Detection):
    """Camera video analytics saw smoke."""
    type: Literal["smoke_detected"]


class FireDetected(_Detection):
    """Camera video analytics saw flame."""
    type: Literal["fire_detected"]


class Occlusion(_Message):
    type: Literal["occlusion"]
    active: bool = Field(description="true when the condition starts, false when it ends")


class VideoLoss(_Message):
    type: Literal["video_loss"]
    active: bool = Field(description="true when the condition starts, false when it ends")


EventMessage = (
    Alarm | AlarmClear | Fault | Tamper | LowBattery | SelfTest | Mute
    | SmokeDetected | FireDetected | Occlusion | VideoLoss
)
Event = Annotated[EventMessage, Field(discriminator="type")]

SMOKE_EVENTS = frozenset({"alarm", "alarm_clear", "fault", "tamper", "low_battery", "self_test",
                          "mute"})
CAMERA_EVENTS = frozenset({"smoke_detected", "fire_detected", "occlusion", "video_loss", "fault",
                           "tamper"})

# --- gateway ---------------------------------------------------------------------------

class GatewayBatch(BaseModel):
    """Readings of several devices relayed by one gateway. Each entry is a telemetry or
    event message as above plus `device_id`, and keeps that device's own ts/seq. Entries are
    validated one by one, so one bad entry is dead-lettered alone; the message-level fields
    must be valid for any entry to be taken."""
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    v: Literal[1] = 1
    ts: EpochMs
    seq: Seq
    entries: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class GatewayEntryHeader(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    device_id: str = Field(pattern=DEVICE_ID.pattern)
    type: str


TELEMETRY_TYPES = frozenset({"smoke_status", "camera_status"})


# Prebuilt adapters: building a TypeAdapter is expensive, validating with one is cheap.
TELEMETRY = TypeAdapter(Telemetry)
EVENT = TypeAdapter(Event)
GATEWAY = TypeAdapter(GatewayBatch)
GATEWAY_HEADER = TypeAdapter(GatewayEntryHeader)

SCHEMAS: dict[str, TypeAdapter[Any]] = {"telemetry": TELEMETRY, "event": EVENT,
                                        "gateway": GATEWAY}
