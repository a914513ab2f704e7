"""Raw MQTT message -> rows to store, or dead letters with a reason. Pure: no I/O.

Every kind of bad input ends as a DeadLetter with one of REASONS; nothing is dropped:

    oversized         payload larger than ingest.max_payload_bytes (kept, cut to that size)
    unknown_topic     not fg/v1/{id}/telemetry|event|gateway (fg/v1/{id}/cmd... is the
                      platform's own command traffic: acknowledged, not stored)
    bad_device_id     the id in the topic or a gateway entry is not a valid device id
    invalid_json      not UTF-8 JSON
    schema            JSON, but not a valid v1 message for its topic (detail names the field)
    future_timestamp  device clock more than max_future_skew_s ahead of arrival
    too_old           device time older than max_age_days (older than the data kept hot)
    db_rejected       valid here, but not storable: refused by the database, or a value its
                      driver cannot encode (set by the writer, not here)
    conflicting_resend  a message whose (device_id, ts, seq) is already stored with another
                      body: the stored one stays, this one is kept here (set by the writer)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import ValidationError

from protocol import fast
from protocol import models as p

REASONS = (
    "oversized", "unknown_topic", "bad_device_id", "invalid_json", "schema",
    "future_timestamp", "too_old", "db_rejected", "conflicting_resend",
)
# A set, not a frozenset: the type pydantic declares for model_dump(exclude=...).
_EVENT_BASE_FIELDS = {"v", "ts", "seq", "type"}
_MAX_DETAIL = 1000


class Reading(NamedTuple):
    """One status report, as a row of `readings`. A NamedTuple: the writer COPYs it as it
    is (field order = column order), every other reader uses the names."""
    device_id: str
    ts_ms: int
    seq: int
    kind: str                        # smoke | camera
    received_ms: int
    gateway_id: str | None           # the gateway that relayed it, if any
    obscuration_db_m: float | None   # smoke detectors
    temperature_c: float | None
    battery_pct: int | None
    battery_v: float | None
    rsrp_dbm: int | None
    sinr_db: float | None
    heartbeat_s: int | None
    stream_online: bool | None       # cameras
    recording: bool | None
    storage_free_mb: int | None


class Event(NamedTuple):
    """One event (alarm, fault, tamper, ...), as a row of `events`."""
    device_id: str
    ts_ms: int
    seq: int
    type: str
    received_ms: int
    gateway_id: str | None
    attrs: str                       # the event's own fields, as JSON text


@dataclass(slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    payload_size: int
    reason: str
    detail: str
    device_id: str | None
    received_ms: int


@dataclass(slots=True)
class Decoded:
    """What one MQTT message turns into. A gateway message can yield rows and dead letters.
    The raw message is kept so the writer can dead-letter it whole if the database refuses."""
    topic: str
    payload: bytes
    received_ms: int
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    lag_ms: list[int] = field(default_factory=list)


class Decoder:
    def __init__(self, *, prefix: str, max_payload_bytes: int, max_future_skew_s: int,
                 max_age_days: int) -> None:
        self._prefix = tuple(prefix.strip("/").split("/"))
        self._max_payload = max_payload_bytes
        self._skew_ms = max_future_skew_s * 1000
        self._max_age_ms = max_age_days * 86_400_000

    def decode(self, topic: str, payload: bytes, received_ms: int) -> Decoded:
        out = Decoded(topic, payload, received_ms)
        if len(payload) > self._max_payload:
            self._dead(out, topic, payload, received_ms, "oversized",
                       f"{len(payload)} bytes > limit {self._max_payload}", None)
            return out
        device_id, channel = (_route(self._prefix, topic) if len(topic) <= _CACHED_TOPIC
                              else _split(self._prefix, topic))
        if channel == "cmd":
            return out  # platform -> device commands share the prefix; not ours to store
        if channel == "":
            self._dead(out, topic, payload, received_ms, "unknown_topic",
                       "expected {prefix}/{device_id}/telemetry|event|gateway", None)
            return out
        if channel == "bad_id":
            self._dead(out, topic, payload, received_ms, "bad_device_id",
                       f"invalid device id in topic: {device_id[:80]!r}", None)
            return out
        if channel == "gateway":
            self._gateway(out, topic, payload, received_ms, device_id)
            return out
        if channel == "telemetry" and (quick := fast.telemetry(payload)) is not None:
            self._take(out, topic, payload, received_ms, device_id, None, quick)
            return out
        adapter = p.TELEMETRY if channel == "telemetry" else p.EVENT
        try:
            msg = adapter.validate_json(payload)
        except ValidationError as exc:
            reason, detail = _explain(exc)
            self._dead(out, topic, payload, received_ms, reason, detail, device_id)
            return out
        self._take(out, topic, payload, received_ms, device_id, None, msg)
        return out

    def _gateway(self, out: Decoded, topic: str, payload: bytes, received_ms: int,
                 gateway_id: str) -> None:
        try:
            batch = p.GATEWAY.validate_json(payload)
        except ValidationError as exc:
            reason, detail = _explain(exc)
            self._dead(out, topic, payload, received_ms, reason, detail, gateway_id)
            return
        for index, entry in enumerate(batch.entries):
            raw = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
            try:
                header = p.GATEWAY_HEADER.validate_python(entry)
            except ValidationError as exc:
                reason = "bad_device_id" if _field_failed(exc, "device_id") else "schema"
                self._dead(out, topic, raw, received_ms, reason,
                           f"entry {index}: {_explain(exc)[1]}", gateway_id)
                continue
            adapter = p.TELEMETRY if header.type in p.TELEMETRY_TYPES else p.EVENT
            try:
                msg = adapter.validate_python(entry)
            except ValidationError as exc:
                self._dead(out, topic, raw, received_ms, "schema",
                           f"entry {index}: {_explain(exc)[1]}", header.device_id)
                continue
            self._take(out, topic, raw, received_ms, header.device_id, gateway_id, msg)

    def _take(self, out: Decoded, topic: str, raw: bytes, received_ms: int, device_id: str,
              gateway_id: str | None,
              msg: p.TelemetryMessage | p.EventMessage | Any) -> None:
        lag = received_ms - msg.ts
        if -lag > self._skew_ms:
            self._dead(out, topic, raw, received_ms, "future_timestamp",
                       f"device time is {-lag / 1000:.0f} s ahead of arrival", device_id)
            return
        if lag > self._max_age_ms:
            self._dead(out, topic, raw, received_ms, "too_old",
                       f"device time is {lag / 86_400_000:.1f} days old", device_id)
            return
        out.lag_ms.append(lag)
        if isinstance(msg, (p.SmokeStatus, fast.SmokeStatus)):
            out.readings.append(Reading(
                device_id, msg.ts, msg.seq, "smoke", received_ms, gateway_id,
                msg.obscuration_db_m, msg.temperature_c, msg.battery_pct, msg.battery_v,
                msg.rsrp_dbm, msg.sinr_db, msg.heartbeat_s, None, None, None,
            ))
        elif isinstance(msg, (p.CameraStatus, fast.CameraStatus)):
            out.readings.append(Reading(
                device_id, msg.ts, msg.seq, "camera", received_ms, gateway_id,
                None, msg.temperature_c, None, None, None, None, None,
                msg.stream_online, msg.recording, msg.storage_free_mb,
            ))
        else:
            attrs = msg.model_dump(exclude=_EVENT_BASE_FIELDS, exclude_none=True)
            out.events.append(Event(
                device_id, msg.ts, msg.seq, msg.type, received_ms, gateway_id,
                json.dumps(attrs, separators=(",", ":"), ensure_ascii=False),
            ))

    def _dead(self, out: Decoded, topic: str, payload: bytes, received_ms: int, reason: str,
              detail: str, device_id: str | None) -> None:
        out.dead.append(DeadLetter(
            topic=_printable(topic), payload=payload[: self._max_payload],
            payload_size=len(payload), reason=reason, detail=_printable(detail[:_MAX_DETAIL]),
            device_id=device_id, received_ms=received_ms,
        ))


def _split(prefix: tuple[str, ...], topic: str) -> tuple[str, str]:
    """(device id, channel) of a topic under the prefix; channel "cmd" for a command to a
    device, "" for a topic that is not ours, "bad_id" for a device id the protocol refuses."""
    parts = topic.split("/")
    n = len(prefix)
    if len(parts) >= n + 2 and parts[n + 1] == "cmd" and tuple(parts[:n]) == prefix:
        return "", "cmd"
    if len(parts) != n + 2 or tuple(parts[:n]) != prefix or parts[n + 1] not in (
            "telemetry", "event", "gateway"):
        return "", ""
    if not p.DEVICE_ID.fullmatch(parts[n]):
        return parts[n], "bad_id"
    return parts[n], parts[n + 1]


# Cached: a street's ~22,000 devices send on a few topics each, and splitting and checking
# each message's topic was ~0.5 us of its ~2.5 us decode (issue 18). Only topics of a
# sensible length, so that a client sending long random topics cannot fill memory with them.
_route = lru_cache(maxsize=65536)(_split)
_CACHED_TOPIC = 200


def _printable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; the raw bytes stay intact in the payload column.
    return text.replace("\x00", "\\x00")


def _explain(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] in ("json_invalid", "json_type"):
        return "invalid_json", errors[0]["msg"]
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "schema", "; ".join(parts) + more


def _field_failed(exc: ValidationError, name: str) -> bool:
    return any(err["loc"][:1] == (name,) for err in exc.errors(include_url=False))
