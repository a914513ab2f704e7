"""Rules changed at run time (issue 16): the street command centre saves new rules through
the API, validated like the rules file and versioned, and the running alert core follows
them from the next rung of an open incident, without a restart. Real broker, database,
alert core and API."""

from __future__ import annotations

from datetime import UTC, datetime

from api.app import create_app
from api.auth import create_token
from devices.broker import NoBrokerAuth
from tests.alert_live import ThreadedAlerts, alert_settings, send_alarm, shipped_rules
from tests.alert_support import build_ward
from tests.api_support import TestClient
from tests.helpers import Publisher, wait_for_count


def _auth(db, who: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, f'{who}-token', role, who)}"}


def test_rules_are_validated_versioned_and_only_the_street_changes_them(make_settings, uid,
                                                                       db, tmp_path):
    build_ward(db)
    settings = alert_settings(make_settings, uid)
    street, worker = _auth(db, "sd1", "street_duty"), _auth(db, "gw1", "grid_worker")
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        shipped = client.get("/v1/rules", headers=street).json()
        assert shipped["version"] is None and "[[ladder.warning]]" in shipped["body"]
        typo = shipped["body"].replace("ack_timeout_s = 30", "ack_timeout = 30", 1)
        refused = client.put("/v1/rules", json={"body": typo}, headers=street)
        assert refused.status_code == 422
        assert "ack_timeout" in str(refused.json()["detail"])
        assert client.put("/v1/rules", json={"body": shipped["body"]},
                          headers=worker).status_code == 403
        saved = client.put("/v1/rules", json={"body": shipped["body"], "note": "same again"},
                           headers=street)
        assert saved.status_code == 200 and saved.json()["version"] == 1
        history = client.get("/v1/rules/history", headers=street).json()
        assert [(v["version"], v["created_by"], v["note"]) for v in history] == [
            (1, "api:sd1-token", "same again")]


def test_a_ladder_changed_through_the_api_applies_to_the_next_rung(make_settings, uid, db,
                                                                  tmp_path):
    build_ward(db, around=datetime.now(UTC))
    rules = shipped_rules(tmp_path, 5)
    settings = alert_settings(make_settings, uid, rules_file=rules)
    street = _auth(db, "sd1", "street_duty")
    core = ThreadedAlerts(settings).start()
    device = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    url = settings.database.url
    try:
        with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
            send_alarm(device, settings, "SD-1")        # nobody will answer
            wait_for_count(url, "SELECT count(*) FROM pages WHERE step = 1", 2)
            # The street takes the community out of the warning ladder: straight to itself.
            body = client.get("/v1/rules", headers=street).json()["body"]
            changed = body.replace('roles = ["community_duty"]', 'roles = ["street_duty"]', 1)
            assert changed != body
            assert client.put("/v1/rules", json={"body": changed, "note": "社区值班台停用"},
                              headers=street).status_code == 200
            wait_for_count(url, "SELECT count(*) FROM pages WHERE step = 2", 1)
    finally:
        device.close()
        core.stop()
    assert db.execute("SELECT worker_id FROM pages WHERE step = 2").fetchall() == [("sd1",)]
