"""JSON Schema files of the wire protocol, one per topic channel (docs/schemas/*.json).

Generated from the pydantic models in protocol.models, which stay the law; the files are for
device makers and their tooling. Regenerate after any model change:

    firegrid protocol schemas --out docs/schemas

tests/test_schemas.py fails while the committed files differ from render_schemas().
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from protocol import models as p

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_V = p.PROTOCOL_VERSION

_DESCRIPTIONS = {
    "telemetry": f"Topic fg/v{_V}/{{device_id}}/telemetry: a smoke detector's heartbeat "
                 "(smoke_status) or a camera channel's keepalive (camera_status).",
    "event": f"Topic fg/v{_V}/{{device_id}}/event: alarms, faults and the other device "
             "events, told apart by `type`.",
    "gateway": f"Topic fg/v{_V}/{{gateway_id}}/gateway: one gateway's batch of telemetry and "
               "event messages of several devices. Each entry is a telemetry or event "
               "message plus the `device_id` it belongs to, with that device's own ts and "
               "seq. Ingest checks entries one by one: an entry that does not match is "
               "dead-lettered alone and the other entries are still stored.",
}


def channel_schema(channel: str) -> dict[str, Any]:
    """The JSON Schema of one topic channel ("telemetry", "event" or "gateway")."""
    if channel == "gateway":
        schema = _gateway_schema()
    else:
        schema = p.SCHEMAS[channel].json_schema()
    return {
        **schema,
        "$schema": DIALECT,
        "title": f"firegrid device protocol v{_V}: {channel}",
        "description": _DESCRIPTIONS[channel],
    }


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys, 2-space indent, final newline)."""
    return {
        f"{channel}.v{_V}.schema.json":
            json.dumps(channel_schema(channel), indent=2, sort_keys=True, ensure_ascii=False)
            + "\n"
        for channel in p.SCHEMAS
    }


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _gateway_schema() -> dict[str, Any]:
    """GatewayBatch types `entries` as plain objects (ingest validates them one by one);
    the published schema says what each entry must be: device_id + telemetry or event."""
    batch = p.GATEWAY.json_schema()
    telemetry, event = p.TELEMETRY.json_schema(), p.EVENT.json_schema()
    defs = _merge_defs(batch, telemetry, event)
    entry = {
        "description": "A telemetry or event message of the device `device_id`.",
        "allOf": [
            {
                "type": "object",
                "properties": {"device_id": {
                    "type": "string", "pattern": p.DEVICE_ID.pattern,
                    "description": "the device this entry comes from (not the gateway)",
                }},
                "required": ["device_id"],
            },
            {
                "oneOf": telemetry["oneOf"] + event["oneOf"],
                "discriminator": {
                    "propertyName": "type",
                    "mapping": {**telemetry["discriminator"]["mapping"],
                                **event["discriminator"]["mapping"]},
                },
            },
        ],
    }
    batch["properties"]["entries"]["items"] = entry
    batch["$defs"] = defs
    return batch


def _merge_defs(*schemas: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for schema in schemas:
        for name, definition in schema.get("$defs", {}).items():
            if merged.setdefault(name, copy.deepcopy(definition)) != definition:
                raise ValueError(f"two different JSON Schema definitions named {name!r}")
    return merged
