"""A broken or hostile device: messages that ingest must dead-letter, each with the reason
ingest gives (protocol/decode.py). Every one goes out on the device's own connection, under its
own id, so it passes a broker that enforces per-device ACLs and reaches ingest.

    invalid_json   a heartbeat cut off mid-way (a radio frame lost)
    schema         a heartbeat with the battery as a string and a field missing
    oversized      a 70 KiB event (over ingest's 64 KiB, under the broker's 1 MiB limit)
    spoofed_id     a gateway batch whose entry claims an id no device can have
                   ("SD000001/../CAM000001"): bad_device_id. (A well-formed id of another
                   device is the broker's ACL to refuse; ingest cannot tell.)
    future_clock   a heartbeat stamped in 2099 (a clock never set, counting from a bad base)
"""

from __future__ import annotations

import json
from typing import Literal, get_args

from simulators import messages as m
from simulators.devices import Device
from simulators.uplink import Outgoing

Kind = Literal["invalid_json", "schema", "oversized", "spoofed_id", "future_clock"]
KINDS: tuple[Kind, ...] = get_args(Kind)
REASONS = {"invalid_json": "invalid_json", "schema": "schema", "oversized": "oversized",
           "spoofed_id": "bad_device_id", "future_clock": "future_timestamp"}
YEAR_2099_MS = 4_070_908_800_000


def misbehave(device: Device, kind: str, t: int, incident: str) -> Outgoing:
    seq = device.next_seq()
    good = m.smoke_status(seq, t)
    if kind == "invalid_json":
        # seq in the bytes keeps two such messages apart in dead_letters (identical payloads
        # on one topic collapse into one row there).
        payload = m.encode(good)[:40] + f',"seq":{seq}'.encode()
        return _bad(device, "telemetry", "smoke_status", None, None, payload, kind, incident)
    if kind == "schema":
        bad = dict(good, battery_pct=str(good["battery_pct"]))
        del bad["rsrp_dbm"]
        return _bad(device, "telemetry", "smoke_status", t, seq, m.encode(bad), kind, incident)
    if kind == "oversized":
        msg = m.event("fault", seq, t, code="E99", detail="x" * 70_000)
        return _bad(device, "event", "fault", t, seq, m.encode(msg), kind, incident)
    if kind == "spoofed_id":
        entry = {"device_id": "SD000001/../CAM000001", **m.event("alarm", seq, t)}
        msg = m.gateway(seq, [entry], t)
        return _bad(device, "gateway", "gateway", t, seq, m.encode(msg), kind, incident)
    if kind == "future_clock":
        msg = m.smoke_status(seq, YEAR_2099_MS + t % 86_400_000)
        return _bad(device, "telemetry", "smoke_status", msg["ts"], seq, m.encode(msg), kind,
                    incident)
    raise ValueError(f"unknown hostile kind {kind!r}")


def _bad(device: Device, channel: str, type_: str, ts: int | None, seq: int | None,
         payload: bytes, kind: str, incident: str) -> Outgoing:
    return Outgoing(device.id, channel, type_, ts, seq, payload, json.loads(payload)
                    if kind not in ("invalid_json",) else None,
                    expect=REASONS[kind], incident=incident)
