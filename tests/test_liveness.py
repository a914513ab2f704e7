"""Liveness from ingest against a real Mosquitto and PostgreSQL: last_seen once per device
per flush, provisioned -> active, conditions from events and statuses, the quarantine."""

from __future__ import annotations

import psycopg
import pytest

from devices import quarantine, queries
from devices.errors import Conflict, NotFound
from ingest import metrics as ingest_metrics
from ingest.liveness import LivenessTracker
from ingest.metrics import LIVENESS_FOREIGN_ENTRIES
from runtime.settings import DevicesSettings
from simulators import messages as m
from tests.fleet import add_device, at, decoded
from tests.helpers import Publisher, ThreadedIngest, wait_for_count


@pytest.fixture
def publisher(broker, uid):
    pub = Publisher(broker.host, broker.port, f"pub-{uid}")
    yield pub
    pub.close()


def _count_writes(db, table: str) -> None:
    """Count every row written to `table` (test-only trigger), to see how often ingest
    touches a device's row."""
    db.execute("CREATE TABLE row_writes (n integer)")
    db.execute("CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN INSERT INTO row_writes VALUES (1); RETURN NULL; END $$")
    db.execute(f"CREATE TRIGGER count_write AFTER INSERT OR UPDATE ON {table}"
               " FOR EACH ROW EXECUTE FUNCTION count_write()")


def test_ingest_keeps_last_seen_per_device_not_per_message(make_settings, publisher, db,
                                                           db_url):
    add_device(db, "SD-1")
    add_device(db, "CAM-1", "camera", heartbeat_s=60)
    _count_writes(db, "device_status")
    settings = make_settings(devices={"liveness_flush_s": 1.0})
    prefix = settings.mqtt.topic_prefix
    base = m.now_ms() - 60_000
    smoke = [(m.topic("SD-1", "telemetry", prefix),
              m.encode(m.smoke_status(i, base + i * 1000, battery_pct=90 - i, heartbeat_s=1800)))
             for i in range(20)]
    camera = [(m.topic("CAM-1", "telemetry", prefix), m.encode(m.camera_status(i, base + i * 1000)))
              for i in range(20)]
    ingest = ThreadedIngest(settings).start()
    try:
        before = m.now_ms()
        publisher.publish_all(smoke + camera)
        assert wait_for_count(
            db_url, "SELECT coalesce(sum(messages), 0) FROM device_status", 40) == 40
    finally:
        ingest.stop()
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT device_id, last_seen, last_ts, status_ts, reported_heartbeat_s, battery_pct,"
        " stream_online, messages FROM device_status")}
    assert set(rows) == {"SD-1", "CAM-1"}
    last_seen, last_ts, status_ts, heartbeat, battery, stream, messages = rows["SD-1"]
    assert before - 1000 <= last_seen.timestamp() * 1000 <= m.now_ms()
    assert last_ts == status_ts == at(base + 19_000)
    assert (heartbeat, battery, stream, messages) == (1800, 71, None, 20)
    assert rows["CAM-1"][3:] == (None, None, True, 20)
    # 40 messages in one burst: one write per device per flush, so two or (when the burst
    # straddles a flush) four writes, never one per message.
    writes = db.execute("SELECT count(*) FROM row_writes").fetchone()[0]
    assert 2 <= writes <= 4
    # Heard for the first time: provisioned -> active, and the history names ingest.
    assert dict(db.execute("SELECT id, state FROM devices").fetchall()) == {
        "SD-1": "active", "CAM-1": "active"}
    assert db.execute(
        "SELECT entity_id, actor, old ->> 'state', new ->> 'state' FROM registry_history"
        " WHERE action = 'update' ORDER BY entity_id").fetchall() == [
        ("CAM-1", "ingest", "provisioned", "active"), ("SD-1", "ingest", "provisioned", "active")]
    # While subscribed, every flush tells the monitor that this ingest is watching.
    assert db.execute("SELECT client_id FROM ingest_heartbeats").fetchall() == [
        (settings.mqtt.client_id,)]


def test_unknown_ids_are_quarantined_and_their_readings_still_stored(
        make_settings, publisher, db, db_url):
    add_device(db, "GW-1", "gateway", heartbeat_s=300)
    add_device(db, "SD-2", gateway="GW-1")
    add_device(db, "SD-9")  # not behind GW-1
    settings = make_settings(devices={"liveness_flush_s": 0.2})
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms() - 5000
    stray = [(m.topic("STRAY-1", "telemetry", prefix), m.encode(m.smoke_status(i, ts + i)))
             for i in range(3)]
    stray.append((m.topic("STRAY-1", "event", prefix),
                  m.encode(m.event("tamper", 3, ts + 3, state="removed"))))
    batch = m.gateway(1, [{"device_id": "SD-2", **m.smoke_status(1, ts)},
                          {"device_id": "STRAY-2", **m.event("alarm", 1, ts)},
                          {"device_id": "SD-9", **m.smoke_status(1, ts)}])
    gateway_topic = m.topic("GW-1", "gateway", prefix)
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all(stray + [(gateway_topic, m.encode(batch))])
        assert wait_for_count(db_url, "SELECT count(*) FROM quarantine", 2) == 2
        assert wait_for_count(db_url, "SELECT count(*) FROM device_status", 2) == 2
    finally:
        ingest.stop()
    assert db.execute("SELECT device_id, messages, last_topic, first_seen <= last_seen,"
                      " claimed_at FROM quarantine ORDER BY device_id").fetchall() == [
        ("STRAY-1", 4, m.topic("STRAY-1", "event", prefix), True, None),
        ("STRAY-2", 1, gateway_topic, True, None)]
    # Nothing of theirs was dropped, and nothing about them leaked into the registry tables.
    assert db.execute("SELECT count(*) FROM readings WHERE device_id = 'STRAY-1'"
                      ).fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM events WHERE device_id LIKE 'STRAY-%'"
                      ).fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM device_conditions WHERE device_id LIKE 'STRAY-%'"
                      ).fetchone()[0] == 0
    # The gateway is heard by its own message, the device behind it by its entry; SD-9's
    # entry is stored with the gateway that relayed it, but says nothing about SD-9's life.
    assert db.execute("SELECT device_id, messages FROM device_status ORDER BY 1").fetchall() == [
        ("GW-1", 1), ("SD-2", 1)]
    assert db.execute("SELECT gateway_id FROM readings WHERE device_id = 'SD-9'").fetchall() == [
        ("GW-1",)]
    assert db.execute("SELECT state FROM devices WHERE id = 'SD-9'").fetchone() == ("provisioned",)

    entry = quarantine.claim(db, "STRAY-1", "tech-7")
    assert (entry.device_id, entry.claimed_by, entry.messages) == ("STRAY-1", "tech-7", 4)
    assert quarantine.claim(db, "STRAY-1", "tech-7").claimed_at == entry.claimed_at
    with pytest.raises(Conflict):
        quarantine.claim(db, "STRAY-1", "tech-8")
    with pytest.raises(NotFound):
        quarantine.claim(db, "NOBODY", "tech-7")
    assert [e["device_id"] for e in queries.quarantine(db)] == ["STRAY-2"]


def test_stopping_ingest_flushes_what_is_pending(make_settings, publisher, db, db_url):
    add_device(db, "SD-3")
    # A flush interval far beyond the test: only the flush at stop can write the row.
    settings = make_settings(devices={"liveness_flush_s": 300})
    prefix = settings.mqtt.topic_prefix
    ingest = ThreadedIngest(settings).start()
    try:
        publisher.publish_all([(m.topic("SD-3", "telemetry", prefix),
                                m.encode(m.smoke_status(1)))])
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 1) == 1
        assert db.execute("SELECT count(*) FROM device_status").fetchone()[0] == 0
    finally:
        ingest.stop()
    assert db.execute("SELECT device_id, messages FROM device_status").fetchall() == [("SD-3", 1)]


# --- the tracker without ingest: observe, then flush directly --------------------------

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _flush(db, *items, settings: DevicesSettings | None = None):
    tracker = LivenessTracker(settings or DevicesSettings())
    tracker.observe(items)
    return tracker.flush(db)


def _conditions(db) -> dict:
    return {(r[0], r[1]): r[2:] for r in db.execute(
        "SELECT device_id, condition, active, changed_ts, detail FROM device_conditions")}


def test_events_and_statuses_set_and_clear_conditions(db):
    for device in ("SD-T", "SD-F", "SD-G", "SD-L"):
        add_device(db, device, state="active")
    add_device(db, "CAM-V", "camera", heartbeat_s=60, state="active")

    def ev(device, kind, seq, ts, **f):
        return decoded(device, "event", m.event(kind, seq, ts, **f), ts)

    _flush(db,
           ev("SD-T", "tamper", 1, T0, state="removed"),
           ev("SD-T", "tamper", 2, T0 + 1000, state="restored"),
           ev("SD-F", "fault", 1, T0, code="E07", detail="sensor chamber dirty"),
           ev("SD-F", "self_test", 2, T0 + 1000, result="pass"),
           ev("SD-G", "fault", 1, T0, code="E07"),
           ev("SD-G", "self_test", 2, T0 + 1000, result="fail", detail="horn"),
           ev("SD-L", "low_battery", 1, T0, battery_pct=9),
           ev("CAM-V", "video_loss", 1, T0, active=True),
           ev("CAM-V", "occlusion", 2, T0, active=True),
           ev("CAM-V", "occlusion", 3, T0 + 1000, active=False),
           ev("CAM-V", "fault", 4, T0, code="F1"),
           decoded("CAM-V", "telemetry", m.camera_status(5, T0 + 2000), T0 + 2000))
    assert _conditions(db) == {
        ("SD-T", "tamper"): (False, at(T0 + 1000), "restored"),
        ("SD-F", "fault"): (False, at(T0 + 1000), "self_test pass"),
        ("SD-G", "fault"): (True, at(T0 + 1000), "self_test fail: horn"),
        ("SD-L", "low_battery"): (True, at(T0), "battery 9%"),
        ("CAM-V", "video_loss"): (True, at(T0), ""),
        ("CAM-V", "occlusion"): (False, at(T0 + 1000), ""),
        ("CAM-V", "fault"): (False, at(T0 + 2000), "streaming and recording"),
    }


def test_low_battery_from_statuses_has_hysteresis(db):
    add_device(db, "SD-B", state="active")
    settings = DevicesSettings(low_battery_pct=20, low_battery_clear_pct=30)

    def status(seq, pct):
        return decoded("SD-B", "telemetry",
                       m.smoke_status(seq, T0 + seq * 1000, battery_pct=pct), T0 + seq * 1000)

    inactive_50, active_20 = (False, "battery 50%"), (True, "battery 20%")
    steps = [(50, inactive_50), (25, inactive_50), (20, active_20), (29, active_20),
             (21, active_20), (30, (False, "battery 30%")), (25, (False, "battery 30%")),
             (5, (True, "battery 5%"))]
    for seq, (pct, expected) in enumerate(steps, start=1):
        _flush(db, status(seq, pct), settings=settings)
        active, _, detail = _conditions(db)[("SD-B", "low_battery")]
        assert (active, detail) == expected, pct


def test_older_messages_do_not_overwrite_newer_state(db):
    add_device(db, "SD-O", state="active")
    newer = [decoded("SD-O", "event", m.event("tamper", 2, T0 + 60_000, state="restored"),
                     T0 + 60_000),
             decoded("SD-O", "telemetry", m.smoke_status(3, T0 + 60_000, battery_pct=80,
                                                         heartbeat_s=600), T0 + 60_000)]
    # Received earlier by another ingest process whose flush commits later: older device
    # clocks, older receive time, last to be written.
    older = [decoded("SD-O", "event", m.event("tamper", 1, T0, state="removed"), T0 + 30_000),
             decoded("SD-O", "telemetry", m.smoke_status(4, T0, battery_pct=10, heartbeat_s=60),
                     T0 + 30_000)]
    _flush(db, *newer)
    _flush(db, *older)
    assert _conditions(db) == {
        ("SD-O", "tamper"): (False, at(T0 + 60_000), "restored"),
        ("SD-O", "low_battery"): (False, at(T0 + 60_000), "battery 80%"),
    }
    assert db.execute("SELECT last_seen, last_ts, status_ts, reported_heartbeat_s, battery_pct,"
                      " messages FROM device_status").fetchone() == (
        at(T0 + 60_000), at(T0 + 60_000), at(T0 + 60_000), 600, 80, 4)


def _gateway_batch(gateway_id: str, seq: int, received_ms: int, *entries: dict):
    return decoded(gateway_id, "gateway", m.gateway(seq, list(entries), received_ms),
                   received_ms)


def test_a_gateway_speaks_only_for_the_devices_registered_behind_it(db):
    add_device(db, "GW-1", "gateway", heartbeat_s=300, state="active")
    add_device(db, "GW-9", "gateway", heartbeat_s=300, state="active")
    add_device(db, "SD-1", state="active")                  # reports on its own topics
    add_device(db, "SD-2", state="active", gateway="GW-1")  # behind GW-1
    _flush(db, decoded("SD-1", "event", m.event("fault", 1, T0, code="E07"), T0),
           decoded("SD-1", "telemetry", m.smoke_status(2, T0, heartbeat_s=3600), T0),
           _gateway_batch("GW-1", 1, T0, {"device_id": "SD-2", **m.event("tamper", 1, T0,
                                                                          state="removed")}))
    before = db.execute("SELECT * FROM device_status WHERE device_id = 'SD-1'").fetchone()
    foreign = LIVENESS_FOREIGN_ENTRIES._value.get()

    later = T0 + 60_000
    result = _flush(db, _gateway_batch(
        "GW-9", 1, later,
        # GW-9 is nobody's gateway: none of this may touch SD-1 or SD-2.
        {"device_id": "SD-1", **m.event("self_test", 3, later, result="pass")},
        {"device_id": "SD-1", **m.smoke_status(4, later, heartbeat_s=604800)},
        {"device_id": "SD-2", **m.event("tamper", 2, later, state="restored")},
        # An id the registry does not know goes to the quarantine as before, and a
        # gateway's entry about itself is its own.
        {"device_id": "STRAY-9", **m.smoke_status(1, later)},
        {"device_id": "GW-9", **m.event("fault", 1, later, code="G1")}))

    assert result.foreign == 3
    assert LIVENESS_FOREIGN_ENTRIES._value.get() == foreign + 3
    assert db.execute("SELECT * FROM device_status WHERE device_id = 'SD-1'").fetchone() == before
    assert db.execute("SELECT reported_heartbeat_s FROM device_status WHERE device_id = 'SD-1'"
                      ).fetchone() == (3600,)
    assert _conditions(db) == {
        ("SD-1", "fault"): (True, at(T0), "E07"),
        ("SD-1", "low_battery"): (False, at(T0), "battery 87%"),
        ("SD-2", "tamper"): (True, at(T0), "removed"),
        ("GW-9", "fault"): (True, at(later), "G1"),
    }
    # The relaying gateway was heard all the same: one message, with its own entry.
    assert db.execute("SELECT device_id, last_seen, messages FROM device_status"
                      " WHERE device_id LIKE 'GW-%' ORDER BY 1").fetchall() == [
        ("GW-1", at(T0), 1), ("GW-9", at(later), 2)]
    assert db.execute("SELECT device_id, messages FROM quarantine").fetchall() == [("STRAY-9", 1)]

    # Its own gateway still speaks for SD-2, also in the flush where SD-2 is heard directly.
    result = _flush(db,
                    _gateway_batch("GW-1", 2, later, {"device_id": "SD-2",
                                                      **m.event("tamper", 2, later,
                                                                state="restored")}),
                    decoded("SD-2", "telemetry", m.smoke_status(3, later + 1000), later + 1000))
    assert result.foreign == 0
    assert _conditions(db)[("SD-2", "tamper")] == (False, at(later), "restored")
    assert db.execute("SELECT last_seen, last_ts, messages FROM device_status"
                      " WHERE device_id = 'SD-2'").fetchone() == (at(later + 1000),
                                                                  at(later + 1000), 3)


def test_conditions_record_when_the_server_received_the_report(db):
    add_device(db, "SD-C", state="active")
    slow = 10 * 60_000  # the detector's clock is ten minutes behind
    _flush(db, decoded("SD-C", "event", m.event("tamper", 1, T0 - slow, state="removed"), T0))
    # Redelivered later: the same device time, so the same report, and nothing changes.
    _flush(db, decoded("SD-C", "event", m.event("tamper", 1, T0 - slow, state="removed"),
                       T0 + 30_000))
    assert db.execute("SELECT changed_ts, reported_at FROM device_conditions").fetchall() == [
        (at(T0 - slow), at(T0))]
    _flush(db, decoded("SD-C", "event", m.event("tamper", 2, T0 + 60_000 - slow,
                                                state="opened"), T0 + 60_000))
    assert db.execute("SELECT changed_ts, reported_at, detail FROM device_conditions"
                      ).fetchall() == [(at(T0 + 60_000 - slow), at(T0 + 60_000), "opened")]


def test_a_failed_flush_keeps_its_state_for_the_next(db, db_url):
    add_device(db, "SD-R", state="active")
    tracker = LivenessTracker(DevicesSettings())
    tracker.observe([decoded("SD-R", "event", m.event("fault", 1, T0, code="E1"), T0 + 5000)])
    broken = psycopg.connect(db_url, autocommit=True)
    broken.close()
    failures = ingest_metrics.LIVENESS_FLUSH_FAILURES._value.get()
    with pytest.raises(psycopg.OperationalError):
        tracker.flush(broken)
    assert ingest_metrics.LIVENESS_FLUSH_FAILURES._value.get() == failures + 1
    tracker.observe([decoded("SD-R", "telemetry", m.smoke_status(2, T0 - 1000), T0 + 1000)])
    assert len(tracker) == 1
    tracker.flush(db)
    assert db.execute("SELECT last_seen, last_ts, messages FROM device_status").fetchone() == (
        at(T0 + 5000), at(T0), 2)
    assert _conditions(db) == {("SD-R", "fault"): (True, at(T0), "E1"),
                               ("SD-R", "low_battery"): (False, at(T0 - 1000), "battery 87%")}
    assert len(tracker) == 0


def test_memory_stays_bounded_while_flushes_fail():
    tracker = LivenessTracker(DevicesSettings(), flush_at=2, max_ids=3)
    dropped = ingest_metrics.LIVENESS_DROPPED._value.get()
    tracker.observe([decoded(f"SD-{i}", "telemetry", m.smoke_status(i, T0), T0)
                     for i in range(5)])
    assert len(tracker) == 3
    assert tracker.due.is_set()
    assert ingest_metrics.LIVENESS_DROPPED._value.get() == dropped + 2
