"""The duty console end to end in a real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; no browser is ever downloaded): a detector's alarm published on the
broker as a simulator would, the real alert core opening the incident, the real API under
uvicorn, a grid worker's phone showing it and acknowledging it, the community duty
officer's screen following without a reload, and a worker of the next grid seeing only
their own fire.

FIREGRID_SCREENSHOTS=1 saves the main screens to docs/console/*.png (for the docs; CI
leaves them alone)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from devices.api import create_token
from tests.alert_live import ThreadedAlerts, alert_settings, send_alarm
from tests.alert_support import build_ward
from tests.helpers import Publisher, required_tool
from tests.test_console_api import LiveApi

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True, "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}
DESK = {"viewport": {"width": 1280, "height": 800}, "locale": "zh-CN",
        "timezone_id": "Asia/Shanghai"}
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
WAIT_MS = 30_000

def shoot(page, name: str) -> None:
    if os.environ.get("FIREGRID_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def cards(page):
    return page.locator("#incidents article.card")


def test_a_fire_on_the_workers_phone_acknowledged_and_followed_by_the_officer(
        db, make_settings, uid):
    build_ward(db, around=datetime.now(UTC))
    settings = alert_settings(make_settings, uid)
    tokens = {w: create_token(db, f"{w}-phone", role, w) for w, role in
              (("gw1", "grid_worker"), ("gw2", "grid_worker"), ("cd1", "community_duty"))}
    expect.set_options(timeout=WAIT_MS)

    core = ThreadedAlerts(settings).start()
    api = LiveApi(settings).start()
    publisher = Publisher(settings.mqtt.host, settings.mqtt.port, f"sim-{uid}")
    try:
        with sync_playwright() as p:
            chromium = required_tool(CHROMIUM, "apt-get install chromium (./dev test does)")
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                worker = browser.new_context(**PHONE).new_page()
                neighbour = browser.new_context(**PHONE).new_page()
                officer = browser.new_context(**DESK).new_page()

                # The worker opens the login link the admin sent; the token leaves the
                # address bar at once.
                worker.goto(f"{api.url}/console/#token={tokens['gw1']}")
                expect(worker.locator("#who")).to_contain_text("gw1（网格员）· 网格 Grid 1")
                assert "token" not in worker.url
                # The officer types the token into the form.
                officer.goto(f"{api.url}/console/")
                expect(officer.locator("#login")).to_be_visible()
                shoot(officer, "login")
                officer.fill("#token", tokens["cd1"])
                officer.click("#login-form button[type=submit]")
                expect(officer.locator("#who")).to_contain_text("社区值班")
                neighbour.goto(f"{api.url}/console/#token={tokens['gw2']}")
                for page in (worker, officer, neighbour):
                    expect(page.locator("#live")).to_have_attribute("data-live", "on")
                    expect(page.locator("#empty")).to_be_visible()
                # No reload from here on: a reload would clear this marker.
                for page in (worker, officer, neighbour):
                    page.evaluate("window.stayed = true")

                # Fire: a detector in B1 (grid G1), then one in B3 (grid G2), as simulators
                # publish them.
                send_alarm(publisher, settings, "SD-1")
                mine = cards(worker)
                expect(mine).to_have_count(1)
                expect(mine.first).to_contain_text("B1 Shuiwei Rd")
                expect(mine.first).to_have_attribute("data-state", "notified")
                expect(mine.first.locator(".badge.state")).to_have_text("已通知")
                expect(mine.first.locator(".escalation")).to_contain_text("第 1 级：网格员")
                send_alarm(publisher, settings, "SD-4")
                expect(cards(officer)).to_have_count(2)
                expect(cards(neighbour)).to_have_count(1)
                expect(cards(neighbour).first).to_contain_text("B3 Shuiwei Rd")
                expect(officer.locator('[data-count="unacked_n"] b')).to_have_text("2")
                b1 = officer.locator("article.card", has_text="B1 Shuiwei Rd")
                expect(b1).to_have_attribute("data-state", "notified")
                shoot(worker, "worker-list")

                # The worker acknowledges on the phone.
                mine.first.locator('button[data-act="acknowledge"]').click()
                expect(mine.first).to_have_attribute("data-state", "acknowledged")
                expect(mine.first.locator(".escalation")).to_contain_text("已停止升级")
                # The officer's screen follows by itself.
                expect(b1).to_have_attribute("data-state", "acknowledged")
                expect(b1.locator(".who-has")).to_have_text("gw1-phone")
                expect(b1.locator(".t-ack")).not_to_contain_text("等待")
                expect(officer.locator('[data-count="unacked_n"] b')).to_have_text("1")
                shoot(officer, "officer-overview")
                # The grid next door never saw B1.
                expect(cards(neighbour)).to_have_count(1)
                expect(neighbour.locator("#incidents")).not_to_contain_text("B1 Shuiwei Rd")

                # On site, then resolved with a cause and a note.
                mine.first.locator('button[data-act="arrive"]').click()
                expect(b1).to_have_attribute("data-state", "on_site")
                mine.first.locator('button[data-act="resolve"]').click()
                expect(worker.locator("#resolve-form")).to_be_visible()
                worker.select_option("#cause", "cooking_steam")
                worker.fill("#note", "厨房炒菜油烟，已开窗通风 kitchen smoke, window opened")
                expect(worker.locator("#log")).to_contain_text("到场")
                shoot(worker, "worker-resolve")
                worker.click("#resolve-form button[type=submit]")
                expect(worker.locator("#board")).to_be_visible()
                expect(worker.locator("#empty")).to_be_visible()
                expect(cards(officer)).to_have_count(1)
                expect(b1).to_have_count(0)

                # English second: the switch changes the words, not the data.
                officer.click("#lang")
                expect(officer.locator("h1")).to_have_text("firegrid duty console")
                expect(cards(officer).first.locator(".badge.state")).to_have_text("notified")
                shoot(officer, "officer-overview-en")
                for page in (worker, officer, neighbour):
                    assert page.evaluate("window.stayed") is True

                # Logging out ends the session: back to the login form.
                worker.click("#logout")
                expect(worker.locator("#login")).to_be_visible()
            finally:
                browser.close()
    finally:
        publisher.close()
        api.stop()
        core.stop()

    row = db.execute("SELECT state, cause, acknowledged_by, on_site_by, resolved_by"
                     " FROM incidents i WHERE building_id = 'B1'").fetchone()
    assert row == ("resolved", "cooking_steam", "api:gw1-phone", "api:gw1-phone",
                   "api:gw1-phone")
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (2,)
