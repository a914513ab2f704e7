"""What an incident shows beyond the alarm itself (issue 19), in Debian's headless Chromium
with the fixtures of tests/test_console_browser.py: a camera's snapshot and clip, published
on the real broker, stored by the real ingest and linked from the incident the real alert
core opened; a camera whose link is not a web address is a dead letter, and raises nothing.
The building's contact, set through the API, is a call button on its incidents. With no
alert core running (stopped, or killed and its heartbeat stale), the console says 告警服务未运行
instead of 实时 and a countdown. With a tile source configured, the incident shows the
building on the map, in the tiles' datum, or the plain building line when the tiles cannot
be loaded.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from playwright.sync_api import expect

from alerts import heartbeat
from api.auth import create_token
from devices.geo import wgs84_to_gcj02
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


# A 1 × 1 grey PNG: what each tile is (the test reads page state, not pixels).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCB"
                       "d81ytgAAAABJRU5ErkJggg==")


class TileServer:
    """A tile server on a free port that records the paths asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tile_of(lat: float, lon: float, zoom: int) -> tuple[int, int]:
    """Web Mercator, as the tiles are cut (and as map.js computes it)."""
    n = 2 ** zoom
    rad = math.radians(lat)
    return (int((lon + 180) / 360 * n),
            int((1 - math.log(math.tan(rad) + 1 / math.cos(rad)) / math.pi) / 2 * n))


def test_the_building_on_the_map_in_the_tiles_datum_or_a_plain_line(db, make_settings, uid):
    tiles = TileServer()
    template = f"{tiles.url}/tiles/{{z}}/{{x}}/{{y}}.png"
    try:
        with duty_console(db, make_settings, uid, {"gw1": "grid_worker"}, core=False,
                          api_settings={"map_tiles": template, "map_datum": "gcj02",
                                        "map_zoom": 17}) as c:
            db.execute("INSERT INTO alert_core_beats (instance, started_at, beat_at)"
                       " VALUES ('core@test:1', now(), now() + interval '1 hour')")
            csp = httpx.get(f"{c.url}/console/").headers["content-security-policy"]
            assert f"img-src 'self' data: {tiles.url};" in csp
            # B2 stands elsewhere, in a street whose tiles nobody has asked for.
            db.execute("UPDATE buildings SET lat = 22.5301, lon = 114.0702 WHERE id = 'B2'")
            worker = c.open(PHONE, "gw1")
            incident_at(db, "B1", "warning", [("SD-1", "smoke_alarm")], 3600)
            expect(cards(worker)).to_have_count(1)
            cards(worker).first.locator(".open").click()
            shown = worker.locator("#map-box .map")
            expect(shown).to_have_attribute("data-state", "shown")
            # The centre tile is the GCJ-02 position's (Amap's datum), not the WGS-84 one's:
            # ~500 m apart here, three tiles at zoom 17.
            x, y = tile_of(*wgs84_to_gcj02(22.52, 114.05), 17)
            assert (x, y) != tile_of(22.52, 114.05, 17)
            expect(shown).to_have_attribute("data-tile", f"17/{x}/{y}")
            assert f"/tiles/17/{x}/{y}.png" in tiles.paths
            assert len({p for p in tiles.paths if p.startswith("/tiles/17/")}) == 9
            shoot(worker, "worker-map")
            assert axe_violations(worker) == []
            worker.click("#back")

            # The tile server goes away: B2's incident shows the plain building line.
            tiles.close()
            incident_at(db, "B2", "warning", [("SD-3", "smoke_alarm")], 3600)
            expect(cards(worker)).to_have_count(2)
            worker.locator("#incidents article.card", has_text="B2 Shuiwei Rd").locator(
                ".open").click()
            plain = worker.locator("#map-box .map-fallback")
            expect(plain).to_contain_text("地图无法加载")
            expect(plain.locator("li[data-building=B2]")).to_contain_text(
                "B2 Shuiwei Rd · B2 · 22.5301, 114.0702 (WGS-84)")
            expect(worker.locator("#map-box .map")).to_have_count(0)
            # The navigation links still lead there.
            expect(worker.locator('#place a[data-nav="nav_amap"]')).to_be_visible()
            stayed(worker)
    finally:
        tiles.close()
