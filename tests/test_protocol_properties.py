"""Property-based (issue 14): messages drawn from the published JSON Schemas themselves
(docs/schemas/), extreme values included, go through the real decoder and the real writer
into PostgreSQL. Nothing may raise out of the writer, and every message must end stored or
dead-lettered: never lost, never a crash.

The strategy is built from the schema files, not from the models: it covers what the
contract given to device makers allows. (hypothesis-jsonschema would do this in general,
but its last release does not run on current Hypothesis; our schemas use a handful of
keywords, read below.)"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.writer import BatchWriter
from protocol.decode import Decoded, Decoder
from protocol.models import DEVICE_ID
from runtime.settings import DatabaseSettings

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
PREFIX = "fg/v1"
LIMITS = dict(max_payload_bytes=65536, max_future_skew_s=300, max_age_days=30)


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    return schema


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A strategy for the JSON values `schema` accepts, for the keywords our schemas use:
    $ref, oneOf/anyOf, const, enum, type with minimum/maximum, min/maxLength, pattern,
    min/maxItems, properties with required (optional ones drawn present or absent)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs) for s in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if kind == "integer":
        # Where the schema sets no bound, far beyond any column: the extremes a device could
        # send are what this test is for (Hypothesis favours a range's ends).
        return st.integers(-(2**80) if low is None else low, 2**80 if high is None else high)
    if kind == "number":
        return st.floats(low, high, allow_nan=False) | st.integers(
            None if low is None else math.ceil(low), None if high is None else math.floor(high))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda t: len(t) <= schema.get("maxLength", len(t)))
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength"))
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {"type": "null"}), defs),
                        min_size=schema.get("minItems", 0), max_size=schema.get("maxItems"))
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in props.items() if k in required},
            optional={k: from_schema(v, defs) for k, v in props.items() if k not in required})
    raise AssertionError(f"a schema keyword this strategy does not read: {schema}")


device_ids = st.from_regex(DEVICE_ID, fullmatch=True)
telemetry = from_schema(_schema("telemetry"))
events = from_schema(_schema("event"))
# A gateway's entries are objects of any shape in its schema (each is validated on its own):
# draw them as device messages with a device id.
entries = st.lists(st.builds(lambda msg, device: {**msg, "device_id": device},
                             st.one_of(telemetry, events), device_ids),
                   min_size=1, max_size=5)
gateway = _schema("gateway")
gateway["properties"] = {k: v for k, v in gateway["properties"].items() if k != "entries"}
gateway["required"] = [k for k in gateway["required"] if k != "entries"]
messages = st.one_of(
    st.tuples(st.just("telemetry"), telemetry),
    st.tuples(st.just("event"), events),
    st.tuples(st.just("gateway"), st.builds(lambda env, e: {**env, "entries": e},
                                            from_schema(gateway), entries)),
)


@pytest.fixture
def writer(make_settings, db_url):
    out = BatchWriter(DatabaseSettings(url=db_url), make_settings().ingest, threading.Event())
    yield out
    out.close()


def _accounted(conn: psycopg.Connection, item: Decoded) -> list[str]:
    """What of this message is neither stored nor dead-lettered (empty when all is kept)."""
    letters = {(topic, digest) for topic, digest in conn.execute(
        "SELECT topic, payload_sha256 FROM dead_letters").fetchall()}
    whole = (item.topic, hashlib.sha256(item.payload).digest()) in letters
    missing = []
    for table, rows in (("readings", item.readings), ("events", item.events)):
        for row in rows:
            found = conn.execute(
                f"SELECT 1 FROM {table} WHERE device_id = %s AND seq = %s"
                " AND ts = timestamptz 'epoch' + %s * interval '1 millisecond'",
                [row.device_id, row.seq, row.ts_ms]).fetchone()
            if found is None and not whole:
                missing.append(f"{table} {row.device_id}/{row.ts_ms}/{row.seq}")
    for dead in item.dead:
        if (dead.topic, hashlib.sha256(dead.payload).digest()) not in letters:
            missing.append(f"dead letter {dead.reason}")
    return missing


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=messages, device_id=device_ids)
def test_every_schema_valid_message_is_stored_or_dead_lettered(writer, db, message, device_id):
    channel, body = message
    payload = json.dumps(body, ensure_ascii=False).encode()
    # Arrival at the message's own time, so the clock checks let it through to the writer
    # (the decoder's clock limits have their own tests).
    received_ms = body["ts"]
    decoder = Decoder(prefix=PREFIX, **LIMITS)
    item = decoder.decode(f"{PREFIX}/{device_id}/{channel}", payload, received_ms)
    writer.write([item])          # must not raise, whatever the message holds
    assert _accounted(db, item) == []
