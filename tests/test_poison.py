"""One message must never stop ingest (issue 14): a value beyond its column, a value the
database driver cannot encode, a resend that contradicts what is stored. Each is kept as a
dead letter with its reason and everything around it is stored; real broker, real database.
"""

from __future__ import annotations

import threading

from ingest.writer import BatchWriter
from protocol.decode import Decoded, Reading
from runtime.settings import DatabaseSettings
from simulators import messages as m
from tests.helpers import IngestProcess, Publisher, await_subscribed, wait_for_count

ALARMS = 200


def test_a_value_beyond_its_column_is_dead_lettered_and_the_alarms_behind_it_land(
        make_settings, broker, uid, db, db_url, tmp_path):
    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    publisher = Publisher(broker.host, broker.port, f"pub-{uid}")
    ingest = IngestProcess(settings, tmp_path / "ingest.log").start()
    try:
        await_subscribed(publisher, prefix, db_url)
        # The storage_free_mb that used to pass validation and then crash the writer (and,
        # never acknowledged, crash every restart after it).
        poison = m.camera_status(1, storage_free_mb=2**63)
        alarms = [(m.topic(f"SD-{i}", "event", prefix), m.encode(m.event("alarm", 1)))
                  for i in range(ALARMS)]
        publisher.publish_all([(m.topic("CAM-1", "telemetry", prefix), m.encode(poison)),
                               *alarms])
        stored = wait_for_count(db_url, "SELECT count(*) FROM events WHERE type = 'alarm'",
                                ALARMS)
        assert stored == ALARMS
        assert ingest.proc is not None and ingest.proc.poll() is None, "ingest exited"
    finally:
        ingest.kill()
        publisher.close()
    reason, detail, device = db.execute(
        "SELECT reason, detail, device_id FROM dead_letters").fetchone()
    assert (reason, device) == ("schema", "CAM-1")
    assert "storage_free_mb" in detail
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0


def _reading(device: str, seq: int, ts: int, **values: object) -> Reading:
    fields = dict.fromkeys(Reading._fields[6:])
    fields.update(values)
    return Reading(device, ts, seq, "camera", ts, None, **fields)  # type: ignore[arg-type]


def _item(*rows: Reading) -> Decoded:
    return Decoded(topic=f"fg/v1/{rows[0].device_id}/telemetry",
                   payload=f"raw {rows[0].device_id}".encode(), received_ms=rows[0].ts_ms,
                   readings=list(rows))


def test_a_value_the_driver_cannot_encode_is_narrowed_to_its_message(make_settings, db,
                                                                       db_url):
    """Behind the models' bounds, the writer holds too: whatever raises while one message's
    rows are written (here OverflowError from the binary COPY, not a psycopg.Error) narrows
    to that message, and the rest of the batch commits."""
    settings = make_settings()
    writer = BatchWriter(DatabaseSettings(url=db_url), settings.ingest, threading.Event())
    ts = m.now_ms()
    batch = [_item(_reading(f"CAM-{i}", 1, ts, stream_online=True, recording=True,
                            storage_free_mb=100)) for i in range(10)]
    batch.insert(3, _item(_reading("CAM-BIG", 1, ts, storage_free_mb=2**64)))
    batch.insert(7, _item(_reading("CAM-HOT", 2, ts, storage_free_mb=-(2**64))))
    try:
        result = writer.write(batch)
    finally:
        writer.close()
    assert result.readings_stored == 10
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    letters = dict(db.execute("SELECT convert_from(payload, 'UTF8'), reason || ': ' || detail"
                              " FROM dead_letters").fetchall())
    assert set(letters) == {"raw CAM-BIG", "raw CAM-HOT"}, letters
    assert all(text.startswith("db_rejected: not storable (") for text in letters.values())


def test_a_resend_with_another_body_is_kept_and_never_stored_twice(
        make_settings, broker, uid, db, db_url):
    from tests.helpers import ThreadedIngest

    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms() - 1000
    first = m.encode(m.smoke_status(5, ts, battery_pct=64))
    other = m.encode(m.smoke_status(5, ts, battery_pct=10))      # same identity, new body
    alarm = m.encode(m.event("alarm", 6, ts, temperature_c=57.5))
    alarm_other = m.encode(m.event("alarm", 6, ts, temperature_c=80.0))
    topic = m.topic("SD-9", "telemetry", prefix)
    event_topic = m.topic("SD-9", "event", prefix)
    publisher = Publisher(broker.host, broker.port, f"pub-{uid}")
    ingest = ThreadedIngest(settings).start()
    try:
        await_subscribed(publisher, prefix, db_url)
        publisher.publish_all([(topic, first), (event_topic, alarm)])
        assert wait_for_count(db_url, "SELECT count(*) FROM events WHERE device_id = 'SD-9'",
                              1) == 1
        # A redelivery of the same message, then the contradicting ones, twice.
        publisher.publish_all([(topic, first), (topic, other), (event_topic, alarm_other),
                               (topic, other), (event_topic, alarm)])
        assert wait_for_count(db_url, "SELECT coalesce(sum(seen_count), 0) FROM dead_letters",
                              3) == 3, db.execute("SELECT reason, seen_count,"
                                                  " right(encode(payload, 'escape'), 40)"
                                                  " FROM dead_letters").fetchall()
    finally:
        ingest.stop()
        publisher.close()
    assert db.execute("SELECT battery_pct FROM readings WHERE device_id = 'SD-9'"
                      ).fetchall() == [(64,)]
    assert db.execute("SELECT attrs FROM events WHERE device_id = 'SD-9'"
                      ).fetchall() == [({"temperature_c": 57.5},)]
    letters = db.execute("SELECT payload, reason, device_id, seen_count FROM dead_letters"
                         " ORDER BY payload").fetchall()
    assert sorted(letters) == sorted([(other, "conflicting_resend", "SD-9", 2),
                                      (alarm_other, "conflicting_resend", "SD-9", 1)])


def test_dead_letter_reasons_are_documented():
    from pathlib import Path

    from protocol.decode import REASONS
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert [r for r in REASONS if f"`{r}`" not in text] == []


_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63, "float4": 3.4e38}


def test_every_stored_number_is_bounded_by_its_column_in_the_published_schemas():
    """psycopg's binary COPY truncates an out-of-range smallint or integer silently (2**20
    stored as 0) and turns a real's overflow into infinity: the published bounds are what
    keeps a reading's values true. Event fields go to jsonb and are bounded alike."""
    import json
    from pathlib import Path

    from ingest.writer import _READING_COLS, _READING_TYPES

    column = dict(zip(_READING_COLS, _READING_TYPES, strict=True)) | {"ts": "int8",
                                                                     "seq": "int8"}
    docs = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    unbounded = []
    for name in ("telemetry", "event"):
        schema = json.loads((docs / f"{name}.v1.schema.json").read_text())
        for model, definition in schema["$defs"].items():
            for field, spec in definition.get("properties", {}).items():
                for alternative in spec.get("anyOf", [spec]):
                    kind = alternative.get("type")
                    if kind not in ("integer", "number") or "const" in alternative:
                        continue
                    limit = _RANGES[column.get(field, "float4")]
                    low, high = alternative.get("minimum"), alternative.get("maximum")
                    if low is None or high is None or low < -limit or high >= limit:
                        unbounded.append(f"{model}.{field}: [{low}, {high}]")
    assert unbounded == []
