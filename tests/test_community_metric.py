"""The monitor's per-community gauges (firegrid_community_devices and
firegrid_community_devices_online) against a real PostgreSQL: what they count, that they
agree with the offline tickets, and that a community leaving the registry loses its series.
The alerting rule built on them is tested with promtool (tests/test_prometheus_rules.py)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from devices.monitor import check
from ingest.liveness import LivenessTracker
from runtime.settings import DevicesSettings
from simulators import messages as m
from tests.fleet import add_building, add_device, at, decoded, retire, watching

SETTINGS = DevicesSettings()  # cameras 3 x 60 s, detectors 2 x period, grace 10 s
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
L = at(T0)


def _gauges(street: str, community: str) -> tuple[float | None, float | None]:
    labels = {"street": street, "community": community}
    return (REGISTRY.get_sample_value("firegrid_community_devices", labels),
            REGISTRY.get_sample_value("firegrid_community_devices_online", labels))


def _street(db) -> None:
    """Street S1: C1 with a camera and a detector, C2 with a camera, C3 with nothing watched
    (a provisioned detector, a retired one); street S2: C4 with a detector."""
    add_building(db, "B1", "G1", "C1", "S1")
    add_building(db, "B2", "G2", "C2", "S1")
    add_building(db, "B3", "G3", "C3", "S1")
    add_building(db, "B4", "G4", "C4", "S2")
    add_device(db, "CAM-1", "camera", heartbeat_s=60, state="active", building="B1")
    add_device(db, "SD-1", heartbeat_s=3600, state="active", building="B1")
    add_device(db, "CAM-2", "camera", heartbeat_s=60, state="maintenance", building="B2")
    add_device(db, "SD-NEW", state="provisioned", building="B3")
    add_device(db, "SD-OLD", state="active", building="B3")
    retire(db, "SD-OLD")
    add_device(db, "SD-4", heartbeat_s=3600, state="active", building="B4")
    tracker = LivenessTracker(SETTINGS)
    tracker.observe([decoded("CAM-1", "telemetry", m.camera_status(1, T0), T0),
                     decoded("SD-1", "telemetry", m.smoke_status(1, T0, heartbeat_s=3600), T0),
                     decoded("CAM-2", "telemetry", m.camera_status(1, T0), T0),
                     decoded("SD-4", "telemetry", m.smoke_status(1, T0, heartbeat_s=3600), T0)])
    tracker.flush(db)


def _offline_tickets(db) -> int:
    return db.execute("SELECT count(*) FROM maintenance_tickets WHERE condition = 'offline'"
                      " AND closed_at IS NULL").fetchone()[0]


def test_counts_watched_and_online_devices_per_community(db):
    _street(db)
    now = L + timedelta(minutes=1)
    watching(db, now)
    report = check(db, now, SETTINGS)
    assert report.communities == {("S1", "C1"): (2, 2), ("S1", "C2"): (1, 1),
                                  ("S1", "C3"): (0, 0), ("S2", "C4"): (1, 1)}
    assert _gauges("S1", "C1") == (2, 2)
    assert _gauges("S1", "C2") == (1, 1)
    assert _gauges("S1", "C3") == (0, 0)  # listed, so a dashboard shows it
    assert _gauges("S2", "C4") == (1, 1)


def test_online_follows_the_offline_rule_and_agrees_with_the_tickets(db):
    _street(db)
    camera_limit = L + timedelta(seconds=3 * 60 + SETTINGS.offline_grace_s)
    watching(db, camera_limit)
    check(db, camera_limit, SETTINGS)
    assert _gauges("S1", "C2") == (1, 1)  # at the limit, still online

    after = camera_limit + timedelta(seconds=1)
    watching(db, after)
    report = check(db, after, SETTINGS)
    # Both cameras are past 3 missed keepalives; the hourly detectors are not.
    assert _gauges("S1", "C1") == (2, 1)
    assert _gauges("S1", "C2") == (1, 0)  # gone silent
    assert _gauges("S2", "C4") == (1, 1)
    watched = sum(w for w, _ in report.communities.values())
    online = sum(o for _, o in report.communities.values())
    assert watched - online == _offline_tickets(db) == 2


def test_computed_while_offline_detection_is_paused(db):
    _street(db)
    later = L + timedelta(hours=3)  # every device past its limit; no ingest watching
    report = check(db, later, SETTINGS)
    assert report.offline_paused and _offline_tickets(db) == 0
    # The gauges say what the tables say; the alerting rule holds off while paused.
    assert _gauges("S1", "C1") == (2, 0)
    assert REGISTRY.get_sample_value("firegrid_monitor_offline_paused") == 1


def test_a_community_that_leaves_the_registry_loses_its_series(db):
    _street(db)
    now = L + timedelta(minutes=1)
    watching(db, now)
    check(db, now, SETTINGS)
    assert _gauges("S1", "C3") == (0, 0)
    db.execute("DELETE FROM devices WHERE building_id = 'B3'")
    db.execute("DELETE FROM buildings WHERE id = 'B3'")
    db.execute("DELETE FROM grids WHERE id = 'G3'")
    db.execute("DELETE FROM communities WHERE id = 'C3'")
    check(db, now, SETTINGS)
    assert _gauges("S1", "C3") == (None, None)
    assert _gauges("S1", "C1") == (2, 2)
