"""人工确认 (issue 15, item 5): a grid worker on site confirms a fire that one detector
raised. The incident becomes a confirmed fire, every level is paged at once (people who
already acknowledged too), the fire service's 119 hook is called once, and a second
confirmation, by the community's duty officer, changes nothing. Real broker, database and
alert core; the people act through the HTTP API with their own tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from api.app import create_app
from api.auth import create_token
from devices.broker import NoBrokerAuth
from tests.alert_live import Phones, ThreadedAlerts, alert_settings, send_alarm
from tests.alert_support import build_ward
from tests.api_support import TestClient
from tests.helpers import Publisher
from tests.test_alert_channels import Receiver


def test_a_person_confirms_a_fire_every_level_is_paged_and_119_called_once(
        make_settings, uid, db, tmp_path):
    build_ward(db, around=datetime.now(UTC))
    fire_service = Receiver()
    settings = alert_settings(make_settings, uid, fire_service_url=f"{fire_service.url}/119",
                              webhook_secret="s3cret")
    phones = Phones(settings)
    core = ThreadedAlerts(settings).start()
    publisher = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    try:
        send_alarm(publisher, settings, "SD-1")        # one detector: a warning, not a fire
        first = phones.take_n(2)           # the grid team: worker and leader at once
        assert sorted((w, p["severity"]) for w, p in first) == [("gl1", "warning"),
                                                                 ("gw1", "warning")]
        incident = first[0][1]["incident_id"]
        headers = {name: {"Authorization": f"Bearer {create_token(db, name, role, who)}"}
                   for name, role, who in (("gw1-phone", "grid_worker", "gw1"),
                                           ("cd1-desk", "community_duty", "cd1"))}
        with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
            base = f"/v1/incidents/{incident}"
            assert client.post(f"{base}/arrive", json={},
                               headers=headers["gw1-phone"]).status_code == 200
            done = client.post(f"{base}/confirm", json={"note": "看到明火 flames in the kitchen"},
                               headers=headers["gw1-phone"])
            assert done.status_code == 200, done.text
            assert done.json()["severity"] == "confirmed"
            # Every level at once, the worker who is already there included.
            pages = phones.take_n(4)
            assert sorted(w for w, _ in pages) == ["cd1", "gl1", "gw1", "sd1"]
            assert {p["severity"] for _, p in pages} == {"confirmed"}
            call = fire_service.next()
            assert call.path == "/119"
            again = client.post(f"{base}/confirm", json={}, headers=headers["cd1-desk"])
            assert again.status_code == 200 and again.json()["severity"] == "confirmed"
    finally:
        publisher.close()
        core.stop()
        phones.close()
        fire_service.server.shutdown()
    state, severity, confirmed_at = db.execute(
        "SELECT state, severity, confirmed_at FROM incidents WHERE id = %s",
        [incident]).fetchone()
    assert (state, severity) == ("on_site", "confirmed") and confirmed_at is not None
    # One confirmation in the audit log, the person's; one page to the fire service.
    confirmations = db.execute(
        "SELECT actor, detail->>'by', detail->>'note' FROM incident_log"
        " WHERE incident_id = %s AND action = 'confirmed'", [incident]).fetchall()
    assert confirmations == [("api:gw1-phone", "person", "看到明火 flames in the kitchen")]
    assert db.execute("SELECT count(*), min(status) FROM pages WHERE incident_id = %s"
                      " AND channel = 'fire_service'", [incident]).fetchone() == (1, "sent")
    # Arrived before confirming: the confirmation informs, it starts no timer.
    assert db.execute("SELECT escalate_at FROM incidents WHERE id = %s",
                      [incident]).fetchone() == (None,)
