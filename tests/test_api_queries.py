"""devices.queries.on_duty: who is on shift for a building, nearest level first. The
alerts issue routes with it, so its edges (shift boundaries, inactive workers, levels) are
pinned here against the real tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devices import queries, registry
from devices.models import Shift, Worker
from tests.api_support import grid  # noqa: F401 (fixture)

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _staff(db) -> None:
    people = [("W-GW", "grid_worker", ["G1"]), ("W-GL", "grid_leader", ["G1"]),
              ("W-FT", "field_technician", ["G1"]), ("W-CD", "community_duty", ["C1"]),
              ("W-SD", "street_duty", ["S1"]), ("W-G2", "grid_worker", ["G2"]),
              ("W-LATE", "grid_worker", ["G1"]), ("W-GONE", "grid_worker", ["G1"])]
    with registry.changes(db, "test-setup"):
        registry.upsert_workers(db, [
            Worker(id=w, name=w.title(), role=role, areas=areas, active=w != "W-GONE",
                   channels={"sms": "+8613800000000"}) for w, role, areas in people])
        registry.add_shifts(db, [
            Shift(worker_id=w, starts_at=NOW - timedelta(hours=4), ends_at=NOW + timedelta(hours=8))
            for w, _, _ in people if w != "W-LATE"]
            + [Shift(worker_id="W-LATE", starts_at=NOW + timedelta(hours=8),
                     ends_at=NOW + timedelta(hours=20))])


def test_on_duty_climbs_from_the_grid_to_the_street(grid, db):
    _staff(db)
    found = queries.on_duty(db, "B1", NOW)
    assert [(o.worker_id, o.level) for o in found] == [
        ("W-GW", "grid"), ("W-FT", "grid"), ("W-GL", "grid"), ("W-CD", "community"),
        ("W-SD", "street")]
    assert found[0].channels == {"sms": "+8613800000000"}
    assert found[0].shift_ends_at == NOW + timedelta(hours=8)

    alerting = ("grid_worker", "grid_leader", "community_duty", "street_duty")
    assert [o.worker_id for o in queries.on_duty(db, "B3", NOW, roles=alerting)] == [
        "W-G2", "W-CD", "W-SD"]


def test_on_duty_respects_shift_edges_and_unknown_buildings(grid, db):
    _staff(db)
    handover = NOW + timedelta(hours=8)  # the day shift ends, W-LATE starts
    assert [o.worker_id for o in queries.on_duty(db, "B1", handover)] == ["W-LATE"]
    assert queries.on_duty(db, "B1", NOW - timedelta(hours=5)) == []
    assert queries.on_duty(db, "NO-SUCH-B", NOW) == []
