"""Ingest against a real Mosquitto and a real PostgreSQL: what lands, what is dead-lettered."""

from __future__ import annotations

import json

import pytest

from simulators import messages as m
from tests.helpers import Publisher, ThreadedIngest, wait_for_count


@pytest.fixture
def publisher(broker, uid):
    pub = Publisher(broker.host, broker.port, f"pub-{uid}")
    yield pub
    pub.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_good_readings_land_with_their_values(make_settings, publisher, db, db_url, protocol):
    settings = make_settings(mqtt={"protocol": protocol})
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms() - 1500
    smoke = m.smoke_status(7, ts, obscuration_db_m=0.15, temperature_c=31.5, battery_pct=64,
                           battery_v=2.91, rsrp_dbm=-104, sinr_db=-2.5, heartbeat_s=1800)
    camera = m.camera_status(3, ts, stream_online=False, recording=True, storage_free_mb=1024,
                             temperature_c=None)
    fire = m.event("fire_detected", 4, ts, confidence=0.93, snapshot_url="http://nvr/snap/1.jpg")
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all([
            (m.topic("SD-001", "telemetry", prefix), m.encode(smoke)),
            (m.topic("CAM-01.2", "telemetry", prefix), m.encode(camera)),
            (m.topic("CAM-01.2", "event", prefix), m.encode(fire)),
        ])
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 2) == 2
        assert wait_for_count(db_url, "SELECT count(*) FROM events", 1) == 1
    finally:
        ingest.stop()

    row = db.execute(
        "SELECT kind, (extract(epoch FROM ts) * 1000)::bigint, seq, obscuration_db_m,"
        " temperature_c, battery_pct, battery_v, rsrp_dbm, sinr_db, heartbeat_s, gateway_id,"
        " received_at >= ts FROM readings WHERE device_id = 'SD-001'").fetchone()
    assert row == ("smoke", ts, 7, pytest.approx(0.15), 31.5, 64, pytest.approx(2.91), -104,
                   -2.5, 1800, None, True)
    row = db.execute(
        "SELECT kind, seq, stream_online, recording, storage_free_mb, temperature_c,"
        " obscuration_db_m FROM readings WHERE device_id = 'CAM-01.2'").fetchone()
    assert row == ("camera", 3, False, True, 1024, None, None)
    row = db.execute("SELECT type, seq, attrs FROM events WHERE device_id = 'CAM-01.2'").fetchone()
    assert row == ("fire_detected", 4, {"confidence": 0.93, "snapshot_url": "http://nvr/snap/1.jpg"})
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_gateway_batch_stores_each_device_and_dead_letters_only_bad_entries(
        make_settings, publisher, db, db_url):
    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms()
    batch = m.gateway(1, [
        {"device_id": "SD-101", **m.smoke_status(1, ts)},
        {"device_id": "SD-102", **m.event("alarm", 9, ts, obscuration_db_m=0.4)},
        {"device_id": "SD-103", **m.event("self_test", 2, ts, result="maybe")},  # bad enum
    ])
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all([(m.topic("GW-1", "gateway", prefix), m.encode(batch))])
        assert wait_for_count(db_url, "SELECT count(*) FROM dead_letters", 1) == 1
    finally:
        ingest.stop()
    assert db.execute("SELECT device_id, gateway_id FROM readings").fetchall() == [
        ("SD-101", "GW-1")]
    assert db.execute("SELECT device_id, type, gateway_id, attrs FROM events").fetchall() == [
        ("SD-102", "alarm", "GW-1", {"obscuration_db_m": 0.4})]
    reason, device, detail, payload = db.execute(
        "SELECT reason, device_id, detail, payload FROM dead_letters").fetchone()
    assert (reason, device) == ("schema", "SD-103")
    assert "entry 2" in detail and "result" in detail
    assert json.loads(payload)["device_id"] == "SD-103"


def test_every_kind_of_bad_input_is_dead_lettered_with_its_reason(
        make_settings, publisher, db, db_url):
    settings = make_settings(ingest={"max_payload_bytes": 4096, "max_future_skew_s": 60,
                                     "max_age_days": 2})
    prefix = settings.mqtt.topic_prefix
    now = m.now_ms()
    good = m.encode(m.smoke_status(1, now))
    cases = {
        "oversized": (m.topic("SD-1", "telemetry", prefix), b"{" + b" " * 5000 + b"}"),
        "unknown_topic": (f"{prefix}/SD-1/telemetry/extra", good),
        "bad_device_id": (m.topic("-bad!", "telemetry", prefix), good),
        "invalid_json": (m.topic("SD-2", "telemetry", prefix), b'{"type": "smoke_status",'),
        "schema": (m.topic("SD-3", "telemetry", prefix),
                   m.encode({**m.smoke_status(1, now), "battery_pct": 140})),
        "future_timestamp": (m.topic("SD-4", "telemetry", prefix),
                             m.encode(m.smoke_status(1, now + 3_600_000))),
        "too_old": (m.topic("SD-5", "telemetry", prefix),
                    m.encode(m.smoke_status(1, now - 3 * 86_400_000))),
        # Valid JSON and schema, but PostgreSQL's jsonb refuses \u0000: a permanent data
        # error that must sink only this message, not the batch it rides in.
        "db_rejected": (m.topic("SD-6", "event", prefix),
                        m.encode(m.event("fault", 1, now, code="E42", detail="bad\u0000byte"))),
    }
    fine = [(m.topic(f"SD-OK{i}", "telemetry", prefix), m.encode(m.smoke_status(i, now)))
            for i in range(20)]
    duplicates_before = _duplicates()
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all(fine[:10] + list(cases.values()) + fine[10:])
        assert wait_for_count(db_url, "SELECT count(*) FROM dead_letters", len(cases)) == len(cases)
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 20) == 20
    finally:
        ingest.stop()
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT reason, topic, payload, payload_size, detail FROM dead_letters")}
    assert set(rows) == set(cases)
    for reason, (topic, payload) in cases.items():
        got_topic, got_payload, got_size, detail = rows[reason]
        assert got_topic == topic, reason
        assert got_size == len(payload), reason
        assert detail, reason
        if reason == "oversized":
            assert bytes(got_payload) == payload[:4096]
        else:
            assert bytes(got_payload) == payload, reason
    assert "battery_pct" in rows["schema"][3]
    assert rows["db_rejected"][3].startswith("SQLSTATE 22")
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    # Bisecting around the rejected message stored each good reading once, and counted none
    # of them as a duplicate.
    assert _duplicates() == duplicates_before


def _duplicates() -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(
        "firegrid_ingest_rows_total", {"table": "readings", "outcome": "duplicate"}) or 0.0


def test_duplicates_are_stored_once_and_repeated_garbage_is_counted(
        make_settings, publisher, db, db_url):
    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms()
    reading = (m.topic("SD-9", "telemetry", prefix), m.encode(m.smoke_status(5, ts)))
    alarm = (m.topic("SD-9", "event", prefix), m.encode(m.event("alarm", 6, ts)))
    garbage = (m.topic("SD-9", "event", prefix), b"\xff\xfe not json")
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all([reading, alarm, garbage, reading, alarm])
        # A device resend of the same reading arriving in a later batch, too.
        assert wait_for_count(db_url, "SELECT count(*) FROM events", 1) == 1
        publisher.publish_all([reading, alarm, garbage])
        committed = 8
        deadline_count = wait_for_count(
            db_url, "SELECT coalesce(sum(seen_count), 0) FROM dead_letters", 2)
        assert deadline_count == 2
    finally:
        ingest.stop()
    assert ingest.service.committed == committed
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert db.execute("SELECT reason, seen_count FROM dead_letters").fetchall() == [
        ("invalid_json", 2)]


def test_an_idle_ingest_reports_its_database_connection(make_settings):
    """Health checks and the Kubernetes readiness probe read the gauge before any device
    has sent anything (deploy/compose, deploy/k8s)."""
    from prometheus_client import REGISTRY

    ingest = ThreadedIngest(make_settings()).start()
    try:
        assert REGISTRY.get_sample_value("firegrid_ingest_database_connected") == 1
    finally:
        ingest.stop()
    assert REGISTRY.get_sample_value("firegrid_ingest_database_connected") == 0
