"""What an incident shows beyond the alarm itself (issue 19), in Debian's headless Chromium
with the fixtures of tests/test_console_browser.py: a camera's snapshot and clip, published
on the real broker, stored by the real ingest and linked from the incident the real alert
core opened; a camera whose link is not a web address is a dead letter, and raises nothing.
The building's contact, set through the API, is a call button on its incidents. With no
alert core running (stopped, or killed and its heartbeat stale), the console says 告警服务未运行
instead of 实时 and a countdown.
"""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import expect

from alerts import heartbeat
from api.auth import create_token
from simulators import messages as m
from tests.alert_live import send_alarm
from tests.helpers import ThreadedIngest, wait_for_count
from tests.test_console_browser import (
    DESK,
    PHONE,
    STEADY,
    axe_violations,
    cards,
    duty_console,
    incident_at,
    shoot,
    stayed,
)

SNAP = "https://nvr.example/snap/CAM-1/7.jpg"
CLIP = "https://nvr.example/clip/CAM-1/7.mp4?from=-30s"


def test_a_cameras_snapshot_and_clip_are_links_in_the_incident(db, make_settings, uid, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, rules) as c:
        ingest = ThreadedIngest(c.settings).start()
        try:
            worker = c.open(PHONE, "gw1")
            officer = c.open(DESK, "cd1")
            prefix = c.settings.mqtt.topic_prefix
            # The camera's analytics see flame and link a still and a recording; another
            # camera's firmware links a script, which must never become a link on a phone.
            c.publisher.publish_all([
                (m.topic("CAM-1", "event", prefix), m.encode(m.event(
                    "fire_detected", 7, confidence=0.93, snapshot_url=SNAP, clip_url=CLIP))),
                (m.topic("CAM-1", "event", prefix), m.encode(m.event(
                    "fire_detected", 8, confidence=0.95,
                    snapshot_url="javascript:fetch('/v1/console/logout')"))),
            ])
            wait_for_count(c.settings.database.url,
                           "SELECT count(*) FROM events WHERE device_id = 'CAM-1'", 1, 30)
            wait_for_count(c.settings.database.url,
                           "SELECT count(*) FROM dead_letters WHERE device_id = 'CAM-1'", 1, 30)

            expect(cards(officer)).to_have_count(1)
            cards(officer).first.locator(".open").click()
            alert = officer.locator('#alerts li[data-device="CAM-1"]')
            expect(alert).to_have_count(1)
            expect(alert).to_contain_text("摄像头识别明火 camera: fire")
            snapshot = alert.locator('a[data-media="snapshot"]')
            expect(snapshot).to_have_text("查看快照 View snapshot")
            expect(snapshot).to_have_attribute("href", SNAP)
            expect(snapshot).to_have_attribute("rel", "noopener noreferrer")
            clip = alert.locator('a[data-media="clip"]')
            expect(clip).to_have_text("查看录像 View clip")
            expect(clip).to_have_attribute("href", CLIP)
            expect(officer.locator("#people-box")).to_be_visible()
            shoot(officer, "officer-camera")
            assert axe_violations(officer) == []
            # The grid worker's phone, in English.
            cards(worker).first.locator(".open").click()
            worker.click("#lang")
            expect(worker.locator('#alerts a[data-media="snapshot"]')).to_have_text(
                "View snapshot")
            expect(worker.locator('#alerts a[data-media="clip"]')).to_have_attribute("href", CLIP)
            stayed(worker, officer)
        finally:
            ingest.stop()

    # Ingest stored the links with the event; the bad one is a dead letter naming its field.
    assert db.execute("SELECT seq, attrs FROM events WHERE device_id = 'CAM-1'").fetchall() == [
        (7, {"confidence": 0.93, "snapshot_url": SNAP, "clip_url": CLIP})]
    (reason, detail, payload), = db.execute(
        "SELECT reason, detail, payload FROM dead_letters WHERE device_id = 'CAM-1'").fetchall()
    assert reason == "schema" and "fire_detected.snapshot_url" in detail
    assert json.loads(bytes(payload))["seq"] == 8
    # The alert core took the good event only.
    assert db.execute("SELECT seq, detail->>'snapshot_url' FROM alerts WHERE device_id = 'CAM-1'"
                      ).fetchall() == [(7, SNAP)]


def test_the_building_contact_set_through_the_api_is_a_call_button(db, make_settings, uid):
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, core=False) as c:
        admin = {"Authorization": f"Bearer {create_token(db, 'admin-desk', 'admin', None)}"}
        b1 = httpx.get(f"{c.url}/v1/buildings/B1", headers=admin).json()
        assert (b1["contact_name"], b1["contact_phone"]) == (None, None)
        answer = httpx.put(f"{c.url}/v1/buildings/B1", headers=admin, json={
            **{k: v for k, v in b1.items() if k != "id"},
            "contact_name": "陈伯 房东", "contact_phone": "+86 138 0000 0457"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["contact_phone"] == "+86 138 0000 0457"
        refused = httpx.put(f"{c.url}/v1/buildings/B1", headers=admin, json={
            **{k: v for k, v in b1.items() if k != "id"}, "contact_phone": "javascript:1"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"][-1] == "contact_phone"

        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        incident_at(db, "B1", "warning", [("SD-1", "smoke_alarm")], 3600)
        incident_at(db, "B3", "warning", [("SD-4", "smoke_alarm")], 3600)
        expect(cards(worker)).to_have_count(1)
        cards(worker).first.locator(".open").click()
        contact = worker.locator("#contact")
        expect(contact).to_contain_text("楼栋联系人：陈伯 房东")
        call = contact.locator("a.tel")
        expect(call).to_have_text("致电楼栋联系人 +86 138 0000 0457")
        expect(call).to_have_attribute("href", "tel:+8613800000457")
        shoot(worker, "worker-contact")
        # B3 has nobody on file: said so, and no button.
        expect(cards(officer)).to_have_count(2)
        officer.locator("#incidents article.card", has_text="B3 Shuiwei Rd").locator(
            ".open").click()
        expect(officer.locator("#contact")).to_have_text("楼栋联系人：未登记")
        expect(officer.locator("#contact a")).to_have_count(0)
        stayed(worker, officer)
    assert db.execute("SELECT actor, new->>'contact_phone' FROM registry_history"
                      " WHERE entity = 'buildings' AND entity_id = 'B1' AND action = 'update'"
                      ).fetchall() == [("api:admin-desk", "+86 138 0000 0457")]


def test_with_no_alert_core_running_the_console_says_so_instead_of_counting_down(
        db, make_settings, uid, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, rules) as c:
        admin = {"Authorization": f"Bearer {create_token(db, 'admin-desk', 'admin', None)}"}

        def core() -> dict:
            return httpx.get(f"{c.url}/v1/console/alert-core", headers=admin).json()

        officer = c.open(DESK, "cd1")
        live = officer.locator("#live")
        expect(live).to_have_attribute("data-service", "up")
        expect(live).to_have_text("实时")
        assert (core()["running"], core()["instances"]) == (True, 1)
        send_alarm(c.publisher, c.settings, "SD-1")
        timer = cards(officer).first.locator(".escalation .timer")
        expect(timer).to_have_attribute("data-countdown", "running")
        expect(timer).to_contain_text("后升级")

        # The alert core stops (deploy, crash-loop, someone's Ctrl-C): nothing escalates.
        assert c.alert_core is not None
        c.alert_core.stop()
        assert db.execute("SELECT count(*) FROM alert_core_beats").fetchone() == (0,)
        expect(live).to_have_attribute("data-core", "down")
        expect(live).to_have_text("告警服务未运行")
        expect(timer).to_have_attribute("data-countdown", "nocore")
        expect(timer).to_contain_text("告警服务未运行：不会自动升级")
        expect(cards(officer).first).not_to_contain_text("后升级")
        assert core()["running"] is False
        shoot(officer, "officer-no-core")
        officer.click("#lang")
        expect(live).to_have_text("Alert core not running")
        officer.click("#lang")

        # One killed with kill -9 leaves its row: running while its beat is fresh, not
        # running once it is older than heartbeat.STALE_S.
        db.execute("INSERT INTO alert_core_beats (instance, started_at, beat_at)"
                   " VALUES ('killed@host:1', now(), now())")
        expect(live).to_have_text("实时")
        expect(timer).to_have_attribute("data-countdown", "running")
        db.execute("UPDATE alert_core_beats SET beat_at = now() - make_interval(secs => %s)",
                   [heartbeat.STALE_S + 1])
        expect(live).to_have_text("告警服务未运行")
        assert core() == {"running": False, "instances": 0, "stale_after_s": heartbeat.STALE_S,
                          "last_beat_at": core()["last_beat_at"]}
        stayed(officer)
