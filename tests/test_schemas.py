"""The published protocol stays true: docs/schemas/*.json match the models, and every example
in docs/protocol.md is a valid v1 message. Pure: no broker, no database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from protocol import models as p
from protocol.schema import render_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "docs" / "schemas"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
REGENERATE = "regenerate with: .venv/bin/firegrid protocol schemas --out docs/schemas"

# ```json <channel>  ...  ```   (every json block must name its channel)
_FENCE = re.compile(r"^```json[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def _examples() -> list[tuple[str, dict]]:
    found = []
    for tag, body in _FENCE.findall(PROTOCOL_MD.read_text(encoding="utf-8")):
        channel = tag.strip()
        assert channel in p.SCHEMAS, (
            f"docs/protocol.md: a ```json block must be tagged with its channel "
            f"({', '.join(p.SCHEMAS)}), got {channel!r}:\n{body}")
        found.append((channel, json.loads(body)))
    assert found, "no ```json examples found in docs/protocol.md"
    return found


EXAMPLES = _examples()
_IDS = [f"{i}-{ch}-{msg.get('type', 'batch')}" for i, (ch, msg) in enumerate(EXAMPLES)]


def _all_types(adapter) -> set[str]:
    return set(adapter.json_schema()["discriminator"]["mapping"])


# --- the committed schema files -----------------------------------------------------------

def test_committed_schemas_are_current() -> None:
    rendered = render_schemas()
    committed = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert committed == set(rendered), (
        f"docs/schemas holds {sorted(committed)}, expected {sorted(rendered)}; {REGENERATE}")
    for name, text in rendered.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, (
            f"docs/schemas/{name} is out of date with protocol/models.py; {REGENERATE}")


def test_render_is_deterministic() -> None:
    assert render_schemas() == render_schemas()


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_schema_refs_resolve(name: str) -> None:
    schema = json.loads(render_schemas()[name])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    defs = schema.get("$defs", {})

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_gateway_entries_cover_every_message_type() -> None:
    schema = json.loads(render_schemas()[f"gateway.v{p.PROTOCOL_VERSION}.schema.json"])
    header, body = schema["properties"]["entries"]["items"]["allOf"]
    assert header["required"] == ["device_id"]
    assert header["properties"]["device_id"]["pattern"] == p.DEVICE_ID.pattern
    assert set(body["discriminator"]["mapping"]) == _all_types(p.TELEMETRY) | _all_types(p.EVENT)
    assert len(body["oneOf"]) == len(body["discriminator"]["mapping"])


# --- the examples in docs/protocol.md -----------------------------------------------------

@pytest.mark.parametrize(("channel", "message"), EXAMPLES, ids=_IDS)
def test_example_is_valid(channel: str, message: dict) -> None:
    raw = json.dumps(message).encode()
    if channel != "gateway":
        p.SCHEMAS[channel].validate_json(raw)
        return
    batch = p.GATEWAY.validate_json(raw)
    for entry in batch.entries:  # as protocol.decode does: header first, then the message
        header = p.GATEWAY_HEADER.validate_python(entry)
        adapter = p.TELEMETRY if header.type in p.TELEMETRY_TYPES else p.EVENT
        adapter.validate_python(entry)


def test_examples_cover_every_message_type() -> None:
    shown = {ch: {m["type"] for c, m in EXAMPLES if c == ch and "type" in m}
             for ch in ("telemetry", "event")}
    assert shown["telemetry"] == _all_types(p.TELEMETRY), "docs/protocol.md: telemetry examples"
    assert shown["event"] == _all_types(p.EVENT), "docs/protocol.md: event examples"
    assert any(ch == "gateway" for ch, _ in EXAMPLES), "docs/protocol.md: no gateway example"


# --- the same examples against the published JSON Schemas --------------------------------

def _validator(channel: str):
    schema = json.loads(render_schemas()[f"{channel}.v{p.PROTOCOL_VERSION}.schema.json"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(("channel", "message"), EXAMPLES, ids=_IDS)
def test_example_matches_json_schema(channel: str, message: dict) -> None:
    errors = [e.message for e in _validator(channel).iter_errors(message)]
    assert not errors, errors


def test_gateway_schema_checks_entries() -> None:
    validator = _validator("gateway")
    good = next(m for ch, m in EXAMPLES if ch == "gateway")
    entry = dict(good["entries"][0])
    assert validator.is_valid(good)
    without_id = {k: v for k, v in entry.items() if k != "device_id"}
    for bad in (without_id, {**entry, "device_id": "bad id"}, {**entry, "type": "nope"},
                {**entry, "battery_pct": 101}):
        assert not validator.is_valid({**good, "entries": [bad]}), bad
