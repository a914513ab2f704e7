"""A simulated fire end to end: simulator -> broker -> ingest and alert core -> the grid
worker's page topic -> acknowledged, on site and resolved through the API -> the weekly
report. Everything real: Mosquitto, PostgreSQL, the device simulators on their own
connections."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg

from alerts import reports
from api.app import create_app
from api.auth import create_token
from devices.broker import NoBrokerAuth
from devices.importer import run_import
from simulators import topology
from simulators.run import run_simulation
from simulators.truth import read
from tests.alert_live import Phones, ThreadedAlerts, alert_settings
from tests.api_support import TestClient
from tests.helpers import Publisher, ThreadedIngest, await_subscribed


def test_a_simulated_fire_reaches_the_right_worker_and_closes_with_feedback(
        make_settings, uid, db_url, db, tmp_path):
    settings = alert_settings(make_settings, uid)
    files = topology.generate(tmp_path / "street", "tiny", seed=3)
    run_import(db, NoBrokerAuth(), [files[k] for k in ("hierarchy", "workers", "roster",
                                                       "devices")], actor="test", iterations=1)
    phones = Phones(settings)
    ingest = ThreadedIngest(settings).start()
    core = ThreadedAlerts(settings).start()
    probe = Publisher(settings.mqtt.host, settings.mqtt.port, f"probe-{uid}")
    try:
        await_subscribed(probe, settings.mqtt.topic_prefix, db_url)
        truth = tmp_path / "truth.jsonl"
        # The fire starts 2 simulated minutes in; 4 minutes at 60x take 4 s.
        run_simulation(settings, preset="tiny", scenarios=["fire"], speed=60, seed=3,
                       truth_path=truth, duration_s=240, street=topology.load(tmp_path / "street"))
        fire = next(r for r in read(truth) if r["kind"] == "incident" and r["what"] == "fire")
        worker, page = phones.take(30)
    finally:
        probe.close()
        core.stop()
        ingest.stop()
        phones.close()

    # The right person: a grid worker of the burning building's grid, on shift now.
    building = fire["building"]
    assert page["building"]["id"] == building
    expected = {r[0] for r in db.execute(
        "SELECT w.id FROM workers w JOIN worker_areas a ON a.worker_id = w.id"
        " JOIN buildings b ON b.grid_id = a.grid_id JOIN roster r ON r.worker_id = w.id"
        " WHERE b.id = %s AND w.role = 'grid_worker' AND r.starts_at <= now()"
        " AND r.ends_at > now()", [building])}
    assert worker in expected
    incident_id = page["incident_id"]
    assert db.execute("SELECT building_id, state FROM incidents WHERE id = %s",
                      [incident_id]).fetchone() == (building, "notified")
    # ingest stored the same alarms the alert core acted on
    assert db.execute("SELECT count(*) FROM events e JOIN alerts a ON a.device_id = e.device_id"
                      " AND a.ts = e.ts AND a.seq = e.seq WHERE a.incident_id = %s",
                      [incident_id]).fetchone()[0] >= 1

    token = create_token(db, f"phone-{worker}", "grid_worker", worker)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        base = f"/v1/incidents/{incident_id}"
        assert client.post(f"{base}/acknowledge", json={"note": "收到 on my way"},
                           headers=headers).status_code == 200
        assert client.post(f"{base}/arrive", json={}, headers=headers).status_code == 200
        done = client.post(f"{base}/resolve", headers=headers,
                           json={"cause": "real_fire", "note": "kitchen fire, put out"})
        assert done.status_code == 200, done.text
    state, ack, by = db.execute("SELECT state, acknowledged_at, acknowledged_by FROM incidents"
                                " WHERE id = %s", [incident_id]).fetchone()
    assert (state, by) == ("resolved", f"api:phone-{worker}") and ack is not None
    assert [a for (a,) in db.execute("SELECT action FROM incident_log WHERE incident_id = %s"
                                     " AND actor LIKE 'api:%%' ORDER BY id", [incident_id])] == [
        "acknowledged", "on_site", "resolved"]

    with psycopg.connect(db_url, autocommit=True) as conn:
        weekly = reports.build_report(conn, "week", datetime.now(ZoneInfo("Asia/Shanghai")).date())
    grid = db.execute("SELECT grid_id FROM buildings WHERE id = %s", [building]).fetchone()[0]
    row = next(r for r in weekly.rows if r.area_id == grid)
    assert row.opened >= 1 and row.resolved >= 1 and row.causes["real_fire"] >= 1
