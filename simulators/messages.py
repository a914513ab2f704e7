"""Builders for protocol v1 payloads (docs/protocol.md). The simulators, the demo, the tests
and the benchmarks all speak through these, so a protocol change is made in one place."""

from __future__ import annotations

import json
import time
from typing import Any

# A protocol message as JSON decodes it (field names to values).
Message = dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# One encoder for every message: json.dumps with separators builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def encode(message: Message) -> bytes:
    return _ENCODE(message).encode()


def smoke_status(seq: int, ts: int | None = None, *, obscuration_db_m: float = 0.02,
                 temperature_c: float = 22.5, battery_pct: int = 87, battery_v: float = 3.02,
                 rsrp_dbm: int = -97, sinr_db: float = 8.5, heartbeat_s: int = 3600) -> Message:
    return {"v": 1, "type": "smoke_status", "ts": ts or now_ms(), "seq": seq,
            "obscuration_db_m": obscuration_db_m, "temperature_c": temperature_c,
            "battery_pct": battery_pct, "battery_v": battery_v, "rsrp_dbm": rsrp_dbm,
            "sinr_db": sinr_db, "heartbeat_s": heartbeat_s}


def camera_status(seq: int, ts: int | None = None, *, stream_online: bool = True,
                  recording: bool = True, storage_free_mb: int = 51200,
                  temperature_c: float | None = 41.0) -> Message:
    return {"v": 1, "type": "camera_status", "ts": ts or now_ms(), "seq": seq,
            "stream_online": stream_online, "recording": recording,
            "storage_free_mb": storage_free_mb, "temperature_c": temperature_c}


def event(kind: str, seq: int, ts: int | None = None, **fields: Any) -> Message:
    return {"v": 1, "type": kind, "ts": ts or now_ms(), "seq": seq, **fields}


def gateway(seq: int, entries: list[Message], ts: int | None = None) -> Message:
    """entries: device messages, each with its own device_id added."""
    return {"v": 1, "ts": ts or now_ms(), "seq": seq, "entries": entries}


def topic(device_id: str, channel: str, prefix: str = "fg/v1") -> str:
    return f"{prefix}/{device_id}/{channel}"
