"""The duty console end to end in a real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; no browser is ever downloaded): a detector's alarm published on the
broker as a simulator would, the real alert core opening the incident, the real API under
uvicorn, a grid worker's phone showing it and acknowledging it, the community duty
officer's screen following without a reload, and a worker of the next grid seeing only
their own fire; then an incident resolved, looked back at in the Resolved view and reopened.

FIREGRID_SCREENSHOTS=1 saves the main screens to docs/console/*.png (for the docs; CI
leaves them alone)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import Browser, LocatorAssertions, Page, expect, sync_playwright

from api.auth import create_token
from devices import registry
from devices.broker import NoBrokerAuth
from devices.models import Building, NewDevice
from runtime.settings import ApiSettings, Settings
from simulators import messages as m
from tests.alert_live import ThreadedAlerts, alert_settings, send_alarm
from tests.alert_support import build_ward
from tests.helpers import Publisher, required_tool
from tests.test_alert_channels import Receiver
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


@dataclass
class Console:
    """Everything a test needs around the browsers: the API's address, one token per
    worker, the detector side (publisher, settings) and the browser."""
    url: str
    tokens: dict[str, str]
    publisher: Publisher
    settings: Settings
    browser: Browser
    server: LiveApi
    alert_core: ThreadedAlerts | None = None
    errors: list = field(default_factory=list)

    def page(self, device: dict) -> Page:
        """A new screen with its own cookies; an uncaught script error fails the test."""
        page = self.browser.new_context(**device).new_page()
        page.on("pageerror", lambda error: self.errors.append(error))
        return page

    def open(self, device: dict, worker: str) -> Page:
        """A new screen logged in with the worker's login link."""
        page = self.page(device)
        page.goto(f"{self.url}/console/#token={self.tokens[worker]}")
        expect(page.locator("#live")).to_have_attribute("data-live", "on")
        # No reload from here on: a reload would clear this marker (see stayed()).
        page.evaluate("window.stayed = true")
        return page


def stayed(*pages) -> None:
    for page in pages:
        assert page.evaluate("window.stayed") is True, "the page was reloaded"


# Ladders that do not climb while a test looks (the default's first rung is 30 s): the
# order on screen is then the order of arrival and severity alone.
STEADY = """
[[ladder.warning]]
roles = ["grid_worker", "grid_leader"]
ack_timeout_s = 3600
[[ladder.warning]]
roles = ["community_duty"]
ack_timeout_s = 3600
[[ladder.confirmed]]
roles = ["grid_worker", "grid_leader", "community_duty", "street_duty"]
ack_timeout_s = 3600
"""


@contextmanager
def duty_console(db, make_settings, uid, roles: dict[str, str],
                 rules: Path | None = None,
                 buildings: dict[str, tuple[str, ...]] | None = None,
                 core: bool = True, alerts: dict | None = None,
                 api_settings: dict | None = None) -> Iterator[Console]:
    """The ward of tests/alert_support.py, the real alert core on the broker, the real API,
    a token per worker in `roles` and Debian's Chromium; all stopped afterwards. `rules`:
    a rules file for the alert core instead of the default; `buildings`: more buildings
    of grid G1 (more_buildings); `core=False`: no alert core (nothing escalates); `alerts`:
    more alert-core settings; `api_settings`: the API's (the map)."""
    build_ward(db, around=datetime.now(UTC))
    if buildings:
        more_buildings(db, buildings)
    settings = alert_settings(make_settings, uid,
                              **({"rules_file": str(rules)} if rules else {}), **(alerts or {}))
    if api_settings:
        settings = settings.model_copy(update={"api": ApiSettings(**api_settings)})
    tokens = {w: create_token(db, f"{w}-phone", role, w) for w, role in roles.items()}
    expect.set_options(timeout=WAIT_MS)

    alert_core = ThreadedAlerts(settings).start() if core else None
    api = LiveApi(settings).start()
    publisher = Publisher(settings.mqtt.host, settings.mqtt.port, f"sim-{uid}")
    try:
        with sync_playwright() as p:
            chromium = required_tool(CHROMIUM, "apt-get install chromium (./dev test does)")
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                console = Console(api.url, tokens, publisher, settings, browser, api,
                                  alert_core)
                yield console
                assert not console.errors, console.errors
            finally:
                browser.close()
    finally:
        publisher.close()
        api.stop()
        if alert_core is not None and alert_core.thread.is_alive():   # a test may stop it
            alert_core.stop()


def resolve_on_phone(page, cause: str, note: str) -> None:
    """The worker resolves the (only) incident of their list from its card."""
    cards(page).first.locator('button[data-act="resolve"]').click()
    expect(page.locator("#resolve-form")).to_be_visible()
    page.select_option("#cause", cause)
    page.fill("#note", note)
    page.click("#resolve-form button[type=submit]")
    expect(page.locator("#board")).to_be_visible()


def test_a_fire_on_the_workers_phone_acknowledged_and_followed_by_the_officer(
        db, make_settings, uid):
    roles = {"gw1": "grid_worker", "gw2": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles) as c:
        worker = c.page(PHONE)
        neighbour = c.page(PHONE)
        officer = c.page(DESK)

        # The worker opens the login link the admin sent; the token leaves the
        # address bar at once.
        worker.goto(f"{c.url}/console/#token={c.tokens['gw1']}")
        expect(worker.locator("#who")).to_contain_text("gw1（网格员）· 网格 Grid 1")
        assert "token" not in worker.url
        # The officer types the token into the form.
        officer.goto(f"{c.url}/console/")
        expect(officer.locator("#login")).to_be_visible()
        shoot(officer, "login")
        officer.fill("#token", c.tokens["cd1"])
        officer.click("#login-form button[type=submit]")
        expect(officer.locator("#who")).to_contain_text("社区值班")
        neighbour.goto(f"{c.url}/console/#token={c.tokens['gw2']}")
        for page in (worker, officer, neighbour):
            expect(page.locator("#live")).to_have_attribute("data-live", "on")
            expect(page.locator("#empty")).to_be_visible()
        # No reload from here on: a reload would clear this marker.
        for page in (worker, officer, neighbour):
            page.evaluate("window.stayed = true")

        # Fire: a detector in B1 (grid G1), then one in B3 (grid G2), as simulators
        # publish them.
        send_alarm(c.publisher, c.settings, "SD-1")
        mine = cards(worker)
        expect(mine).to_have_count(1)
        expect(mine.first).to_contain_text("B1 Shuiwei Rd")
        expect(mine.first).to_have_attribute("data-state", "notified")
        expect(mine.first.locator(".badge.state")).to_have_text("已通知")
        expect(mine.first.locator(".escalation")).to_contain_text("第 1 级：网格员")
        send_alarm(c.publisher, c.settings, "SD-4")
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
        # Who has it: the person (the ward's workers are named as their ids), not the
        # token "gw1-phone".
        expect(b1.locator(".who-has")).to_have_text("gw1")
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
        stayed(worker, officer, neighbour)

        # Logging out ends the session: back to the login form.
        worker.click("#logout")
        expect(worker.locator("#login")).to_be_visible()

    row = db.execute("SELECT state, cause, acknowledged_by, on_site_by, resolved_by"
                     " FROM incidents i WHERE building_id = 'B1'").fetchone()
    assert row == ("resolved", "cooking_steam", "api:gw1-phone", "api:gw1-phone",
                   "api:gw1-phone")
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (2,)


def test_a_resolved_incident_looked_back_at_and_reopened(db, make_settings, uid):
    """The closed loop's feedback read back and corrected. gw1 resolves B1's alarm as
    cooking steam; the street officer, watching the Resolved view, sees it arrive; the
    community officer opens it there (cause, note, who) and reopens it: refused with the
    API's 409 while a new alarm holds the building, done once that one is closed. gw1's
    phone lists it again and the street officer's Resolved view drops it; nobody reloads."""
    roles = {"gw1": "grid_worker", "cd1": "community_duty", "sd1": "street_duty"}
    steam = "厨房炒菜油烟，已开窗通风 kitchen smoke, window opened"
    why = "住户说二楼仍有焦味，需复查 the tenant still smells burning on floor 2"
    with duty_console(db, make_settings, uid, roles) as c:
        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        street = c.open(DESK, "sd1")
        street.click('#views [data-view="resolved"]')
        expect(street.locator("#empty")).to_have_text("近 24 小时没有已处置的警情")

        # An alarm, resolved on the phone: it appears in the Resolved view as it happens.
        send_alarm(c.publisher, c.settings, "SD-1")
        expect(cards(worker)).to_have_count(1)
        expect(officer.locator("#open-count")).to_have_text("1")
        resolve_on_phone(worker, "cooking_steam", steam)
        expect(worker.locator("#empty")).to_have_text("没有未处置的警情")
        expect(cards(street)).to_have_count(1)
        first = cards(street).first
        expect(first).to_have_attribute("data-state", "resolved")
        expect(first).to_contain_text("B1 Shuiwei Rd")
        expect(first.locator(".cause")).to_have_text("烹饪油烟 / 水汽 Cooking smoke / steam")
        expect(first.locator(".resolved-by")).to_have_text("gw1")
        expect(officer.locator("#open-count")).to_have_text("0")

        # The community officer looks back.
        officer.click('#views [data-view="resolved"]')
        expect(officer.locator('#views [data-view="resolved"]')).to_have_attribute(
            "aria-selected", "true")
        looked_back = cards(officer)
        expect(looked_back).to_have_count(1)
        expect(looked_back.first.locator(".cause")).to_have_text(
            "烹饪油烟 / 水汽 Cooking smoke / steam")
        expect(looked_back.first.locator(".resolved-by")).to_have_text("gw1")
        expect(officer.locator("#summary")).to_be_hidden()

        # Another detector of B1 alarms: a new incident holds the building.
        send_alarm(c.publisher, c.settings, "SD-2")
        expect(cards(worker)).to_have_count(1)
        expect(officer.locator("#open-count")).to_have_text("1")
        expect(looked_back).to_have_count(1)

        # The resolved one in detail: the feedback, and the form to reopen it.
        looked_back.first.locator(".open").click()
        detail = officer.locator("#detail-card")
        expect(detail.locator(".cause")).to_have_text("烹饪油烟 / 水汽 Cooking smoke / steam")
        expect(detail.locator(".note")).to_have_text(steam)
        expect(detail.locator(".resolved-by")).to_have_text("gw1")
        expect(officer.locator("#resolve-form")).to_be_hidden()
        officer.fill("#reopen-note", why)
        officer.click("#reopen-form button[type=submit]")
        # The API's refusal, in Chinese first, then its own words naming the incident.
        expect(officer.locator("#reopen-error")).to_contain_text(
            "操作失败：同一建筑已有另一起未处置的警情，请先处置该警情")
        expect(officer.locator("#reopen-error")).to_contain_text(
            "is open for the same building and hazard")
        expect(detail.locator("article")).to_have_attribute("data-state", "resolved")
        shoot(officer, "officer-reopen")

        # gw1 closes the new one; now the first can be reopened.
        resolve_on_phone(worker, "dust_insects", "探测器积灰 dust on the detector")
        expect(cards(street)).to_have_count(2)
        shoot(street, "officer-resolved")
        officer.click("#reopen-form button[type=submit]")
        expect(officer.locator("#board")).to_be_visible()
        expect(officer.locator('#views [data-view="open"]')).to_have_attribute(
            "aria-selected", "true")
        expect(cards(officer)).to_have_count(1)
        expect(cards(officer).first).to_have_attribute("data-state", re.compile("raised|notified"))

        # Live elsewhere: back on gw1's open list, gone from the street's Resolved view.
        expect(cards(worker)).to_have_count(1)
        expect(cards(worker).first).to_contain_text("B1 Shuiwei Rd")
        expect(cards(street)).to_have_count(1)
        expect(cards(street).first.locator(".cause")).to_have_text("灰尘 / 虫子 Dust / insects")
        # Read afresh (not from events), gw1's own Resolved view agrees.
        worker.click('#views [data-view="resolved"]')
        expect(cards(worker)).to_have_count(1)
        expect(cards(worker).first.locator(".cause")).to_have_text("灰尘 / 虫子 Dust / insects")
        street.click("#lang")
        expect(street.locator('#views [data-view="resolved"]')).to_have_text("Resolved (24 h)")
        expect(cards(street).first.locator(".cause")).to_have_text("Dust / insects")
        stayed(worker, officer, street)

    first_id, second_id = (r[0] for r in db.execute(
        "SELECT id FROM incidents WHERE building_id = 'B1' ORDER BY id").fetchall())
    row = db.execute("SELECT state, cause, resolved_by, reopened FROM incidents WHERE id = %s",
                     [first_id]).fetchone()
    assert row[0] != "resolved" and row[1:] == (None, None, 1)
    assert db.execute("SELECT actor, detail->>'note' FROM incident_log"
                      " WHERE incident_id = %s AND action = 'reopened'",
                      [first_id]).fetchall() == [("api:cd1-phone", why)]
    assert db.execute("SELECT state, cause FROM incidents WHERE id = %s",
                      [second_id]).fetchone() == ("resolved", "dust_insects")


def more_buildings(db, buildings: dict[str, tuple[str, ...]]) -> None:
    """Buildings of grid G1 beyond the ward's, each with its smoke detectors."""
    with registry.changes(db, "test-setup"):
        registry.upsert(db, "buildings", [
            Building(id=b, grid_id="G1", address=f"{b} Shuiwei Rd", lat=22.52, lon=114.05,
                     floors=7, use="rental") for b in buildings])
    registry.provision(db, NoBrokerAuth(), [
        NewDevice(id=d, kind="smoke_detector", building_id=b, floor=3)
        for b, devices in buildings.items() for d in devices], "test-setup", 1)


def severities(page) -> list[str]:
    return cards(page).evaluate_all("cs => cs.map(c => c.dataset.severity)")


def addresses(page) -> list[str]:
    return cards(page).locator("h2").all_text_contents()


def test_confirmed_fires_are_listed_first_on_the_phone_and_the_board(
        db, make_settings, uid, tmp_path):
    """Two confirmed fires and three warnings arrive mixed; the phone and the officer's
    board both show the fires first, then the warnings oldest first."""
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    more = {"B4": ("SD-41", "SD-42"), "B5": ("SD-51", "SD-52"), "B6": ("SD-61",)}
    with duty_console(db, make_settings, uid, roles, rules, more) as c:
        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        # Arrival order: warning B1, fire B4, warning B2, fire B5, warning B6. Each waits
        # for the screen, so the incidents' opening order is the order above.
        arrivals = (("B1", ("SD-1",)), ("B4", ("SD-41", "SD-42")), ("B2", ("SD-3",)),
                    ("B5", ("SD-51", "SD-52")), ("B6", ("SD-61",)))
        for n, (building, devices) in enumerate(arrivals, 1):
            for device in devices:
                send_alarm(c.publisher, c.settings, device)
            card_ = worker.locator("article.card", has_text=f"{building} Shuiwei Rd")
            expect(card_).to_have_attribute(
                "data-severity", "confirmed" if len(devices) == 2 else "warning")
            expect(cards(worker)).to_have_count(n)
        for page in (worker, officer):
            expect(cards(page)).to_have_count(5)
            expect(page.locator("article.card[data-severity=confirmed]")).to_have_count(2)
            assert severities(page) == ["confirmed"] * 2 + ["warning"] * 3
            shown = addresses(page)
            assert set(shown[:2]) == {"B4 Shuiwei Rd", "B5 Shuiwei Rd"}
            assert shown[2:] == ["B1 Shuiwei Rd", "B2 Shuiwei Rd", "B6 Shuiwei Rd"]
        assert addresses(worker) == addresses(officer)
        shoot(worker, "worker-worst-first")

        # A fire someone has taken stays above the warnings; the one nobody has comes
        # first.
        cards(worker).first.locator('button[data-act="acknowledge"]').click()
        expect(cards(worker).first).to_have_attribute("data-state", "notified")
        expect(cards(worker).nth(1)).to_have_attribute("data-state", "acknowledged")
        expect(cards(officer).nth(1)).to_have_attribute("data-state", "acknowledged")
        assert severities(worker) == ["confirmed"] * 2 + ["warning"] * 3
        assert addresses(worker) == addresses(officer)
        stayed(worker, officer)


# Headless Chromium never puts a tab in the background by itself: the test does, the way
# the browser tells a page (document.visibilityState and a visibilitychange event).
BACKGROUND = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState",
                        { get: () => (hidden ? "hidden" : "visible"), configurable: true });
  Object.defineProperty(Document.prototype, "hidden", { get: () => hidden, configurable: true });
  window.toBackground = (h) => {
    hidden = h;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""
# The console's CSP forbids eval, so no page.wait_for_function (Playwright evals its
# predicate in the page); expect() polls through the injected script instead.
def tone(page: Page) -> LocatorAssertions:
    return expect(page.locator("#tone"))


def test_a_page_rings_once_until_acknowledged_with_sound_and_a_notification(
        db, make_settings, uid, tmp_path):
    """gw1's phone: sound off until tapped; a page arriving in the background raises a
    notification and plays the tone on a loop; the same page delivered again (a change of
    its incident, a reload) rings no more; acknowledging stops the tone."""
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    with duty_console(db, make_settings, uid, {"gw1": "grid_worker"}, rules) as c:
        worker = c.page(PHONE)
        worker.context.grant_permissions(["notifications"], origin=c.url)
        worker.add_init_script(BACKGROUND)
        # A login link opened from a chat app: no tap yet, so the browser keeps it silent,
        # and the page says so. (Nothing may touch the page until it has tried to play:
        # Chromium counts Playwright's own evaluations as a user's tap. The page opens its
        # event stream after trying.)
        with worker.expect_request(lambda r: "/v1/incidents/events" in r.url):
            worker.goto(f"{c.url}/console/#token={c.tokens['gw1']}")
        expect(worker.locator("#live")).to_have_attribute("data-live", "on")
        body = worker.locator("body")
        expect(body).to_have_attribute("data-sound", "off")
        expect(worker.locator("#sound-off")).to_have_text(
            "声音已关闭，点此开启 · sound is off: tap to enable")
        shoot(worker, "worker-sound-off")
        worker.click("#sound-off")
        expect(body).to_have_attribute("data-sound", "on")
        expect(worker.locator("#sound-off")).to_be_hidden()
        expect(body).to_have_attribute("data-alarm", "quiet")

        # The phone goes into a pocket; the alarm comes.
        worker.evaluate("toBackground(true)")
        send_alarm(c.publisher, c.settings, "SD-1")
        expect(cards(worker)).to_have_count(1)
        expect(body).to_have_attribute("data-alarm", "ringing")
        expect(body).to_have_attribute("data-rings", "1")
        expect(body).to_have_attribute("data-notified", "1")
        tone(worker).to_have_js_property("paused", False)
        assert worker.evaluate("document.getElementById('tone').loop") is True
        (page_id,) = db.execute("SELECT id FROM pages WHERE worker_id = 'gw1'"
                                " AND channel = 'mqtt'").fetchone()
        worker.evaluate("toBackground(false)")
        expect(worker.locator("#ring .ring-title")).to_have_text("火警预警：B1 Shuiwei Rd")
        shoot(worker, "worker-ringing")

        # The same page again, as every later change of the incident brings it (here a
        # repeat alarm counted by another writer): heard twice, rung once.
        expect(body).to_have_attribute("data-heard", "1")
        db.execute("UPDATE incidents SET alert_count = alert_count + 1 WHERE building_id = 'B1'")
        expect(body).to_have_attribute("data-heard", "2")
        expect(body).to_have_attribute("data-rings", "1")
        expect(body).to_have_attribute("data-notified", "1")

        # A reload (or a phone whose page was closed): the page comes back from
        # GET /v1/console/pages; it is not a new ring, but the fire still waits, so the
        # alarm goes on.
        worker.reload()
        expect(worker.locator("#live")).to_have_attribute("data-live", "on")
        expect(body).to_have_attribute("data-heard", "1")
        expect(body).to_have_attribute("data-alarm", "ringing")
        expect(body).to_have_attribute("data-rings", "0")
        seen = worker.evaluate("JSON.parse(localStorage.getItem('fg-pages:gw1'))")
        assert [p for p, _ in seen] == [page_id]
        # (Chromium remembers the tap across a reload of the same site.)
        expect(body).to_have_attribute("data-sound", "on")
        tone(worker).to_have_js_property("paused", False)

        # 接警 on the banner stops it.
        worker.locator('#ring button[data-act="acknowledge"]').click()
        expect(body).to_have_attribute("data-alarm", "quiet")
        tone(worker).to_have_js_property("paused", True)
        expect(worker.locator("#ring")).to_be_hidden()
        expect(cards(worker).first).to_have_attribute("data-state", "acknowledged")
        # And nothing brings it back.
        db.execute("UPDATE incidents SET alert_count = alert_count + 1 WHERE building_id = 'B1'")
        expect(cards(worker).first).to_contain_text("3 次报警")
        expect(body).to_have_attribute("data-alarm", "quiet")
    assert db.execute("SELECT state, acknowledged_by FROM incidents WHERE building_id = 'B1'"
                      ).fetchone() == ("acknowledged", "api:gw1-phone")


def incident_at(db, building: str, severity: str, alerts: list[tuple[str, str]],
                escalate_in_s: int) -> int:
    """An incident as the alert core leaves it after its first rung, written directly (no
    alert core runs): paged, its next rung due in `escalate_in_s` (negative: overdue)."""
    (incident,) = db.execute(
        "INSERT INTO incidents (building_id, hazard, severity, state, opened_at, last_alert_at,"
        " alert_count, ladder, rung, step, escalate_at, notified_at)"
        " VALUES (%s, 'fire', %s, 'notified', now() - interval '2 minutes', now(), %s, %s, 0,"
        " 1, now() + make_interval(secs => %s), now() - interval '2 minutes') RETURNING id",
        [building, severity, len(alerts), severity, escalate_in_s]).fetchone()
    for seq, (device, rule) in enumerate(alerts):
        db.execute("INSERT INTO alerts (device_id, ts, seq, rule, device_kind, building_id,"
                   " incident_id, received_at, muted) VALUES (%s, now(), %s, %s, 'x', %s, %s,"
                   " now(), false)", [device, seq, rule, building, incident])
    db.execute("INSERT INTO incident_log (incident_id, at, actor, action, from_state, to_state,"
               " detail) VALUES (%s, now(), 'escalator', 'notified', 'raised', 'notified',"
               " %s)", [incident, json.dumps({"ladder": severity, "rung": 0, "step": 1,
                                             "roles": ["grid_worker"], "workers": ["gw1"]})])
    return incident


def test_words_acknowledge_and_confirmed_fire_rules_in_chinese_and_no_false_live(
        db, make_settings, uid):
    """接警 (acknowledge) and 确认火警 (confirmed fire) are different words; rule names read
    in Chinese with English second; with an alert core that beats but does not escalate
    (hung), the screen stops saying 实时 and shows the overdue rung instead of a countdown
    stuck at 0:00; cut off from the server, it shows no countdown at all. (No alert core at
    all: tests/test_console_incident.py.)"""
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, core=False) as c:
        # An alert core that beats but whose escalator does not fire (hung): its heartbeat
        # kept fresh for the test (alerts/heartbeat.py).
        db.execute("INSERT INTO alert_core_beats (instance, started_at, beat_at)"
                   " VALUES ('hung@test:1', now(), now() + interval '1 hour')")
        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        fire = incident_at(db, "B1", "confirmed",
                           [("SD-1", "smoke_alarm"), ("CAM-1", "camera_fire")], 3600)
        mine = cards(worker)
        expect(mine).to_have_count(1)
        expect(mine.first.locator(".badge.sev-confirmed")).to_have_text("确认火警")
        expect(mine.first.locator('button[data-act="acknowledge"]')).to_have_text("接警")
        expect(mine.first.locator(".timer[data-countdown]")).to_have_attribute(
            "data-countdown", "running")
        expect(worker.locator("#live")).to_have_text("实时")
        mine.first.locator('button[data-act="acknowledge"]').click()
        expect(mine.first.locator(".badge.state")).to_have_text("已接警")
        expect(mine.first.locator("dt").nth(1)).to_have_text("接警")
        # SD-1 has since cleared (as ingest stores the detector's alarm_clear); the camera
        # still sees fire.
        db.execute("INSERT INTO events (device_id, ts, seq, type, received_at)"
                   " VALUES ('SD-1', now() + interval '1 second', 9, 'alarm_clear', now())")
        mine.first.locator(".open").click()
        expect(worker.locator('#alerts li[data-device="SD-1"] [data-since]')).to_have_attribute(
            "data-since", "cleared")
        expect(worker.locator('#alerts li[data-device="SD-1"]')).to_contain_text("已复位")
        expect(worker.locator('#alerts li[data-device="CAM-1"] [data-since]')).to_have_count(0)
        expect(worker.locator("#all-quiet")).to_be_hidden()
        expect(worker.locator("#alerts")).to_contain_text("烟感报警 smoke alarm")
        expect(worker.locator("#alerts")).to_contain_text("摄像头识别明火 camera: fire")
        expect(worker.locator("#log")).to_contain_text("接警 · gw1")
        worker.click("#back")

        # A warning whose next rung is a minute overdue: nothing is escalating.
        incident_at(db, "B3", "warning", [("SD-4", "smoke_alarm")], -60)
        expect(cards(officer)).to_have_count(2)
        late = officer.locator("#incidents article.card", has_text="B3 Shuiwei Rd")
        expect(late.locator(".escalation .timer")).to_have_attribute("data-countdown", "overdue")
        expect(late.locator(".escalation")).to_contain_text("升级已逾期")
        expect(late.locator(".escalation")).not_to_contain_text("后升级")
        live = officer.locator("#live")
        expect(live).to_have_attribute("data-core", "stalled")
        expect(live).to_have_text("告警服务无响应")
        shoot(officer, "officer-stalled")
        # B3's only detector was hushed by a resident: the incident says so.
        db.execute("INSERT INTO events (device_id, ts, seq, type, received_at)"
                   " VALUES ('SD-4', now() + interval '1 second', 9, 'mute', now())")
        late.locator(".open").click()
        expect(officer.locator('#alerts li[data-device="SD-4"]')).to_contain_text("已消音")
        expect(officer.locator("#all-quiet")).to_be_visible()
        officer.click("#back")
        # gw1 sees only B1, acknowledged: nothing overdue there.
        expect(worker.locator("#live")).to_have_text("实时")

        # The feed loses the database (the API's listener stops, as when PostgreSQL is
        # away): no countdown claims to run.
        c.server.hub.close()
        expect(live).to_have_attribute("data-live", "off")
        expect(live).to_have_text("重连中")
        expect(late.locator(".escalation .timer")).to_have_attribute("data-countdown", "unknown")
        expect(late.locator(".escalation")).to_contain_text("未连接，升级时间未知")
    assert db.execute("SELECT state FROM incidents WHERE id = %s", [fire]).fetchone() == (
        "acknowledged",)


def test_whom_to_call_who_was_paged_and_who_answered(db, make_settings, uid, tmp_path):
    """The officer's screen names the person who has the incident, with a call button, not
    their token; the incident lists the people on duty for the building, lowest rung first,
    each with a tel: link, and who was paged on what and whether they answered."""
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, rules) as c:
        for worker_id, name, phone in (("gw1", "李明", "+86 138 0013 8001"),
                                       ("gl1", "王芳", "+86 139-0013-9002"),
                                       ("cd1", "陈静", "+86 755 8888 0001"),
                                       ("sd1", "赵强", None)):
            db.execute("UPDATE workers SET name = %s, phone = %s WHERE id = %s",
                       [name, phone, worker_id])
        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        send_alarm(c.publisher, c.settings, "SD-1")
        expect(cards(worker)).to_have_count(1)
        cards(worker).first.locator('button[data-act="acknowledge"]').click()

        b1 = officer.locator("article.card", has_text="B1 Shuiwei Rd")
        expect(b1).to_have_attribute("data-state", "acknowledged")
        expect(b1.locator(".who-has")).to_contain_text("李明")
        expect(b1.locator(".who-has a.tel")).to_have_attribute("href", "tel:+8613800138001")

        b1.locator(".open").click()
        # Where to go: the phone's map app and the Chinese map apps, in WGS-84.
        expect(officer.locator("#place")).to_contain_text("B1 Shuiwei Rd · B1 · 7 层楼")
        expect(officer.locator('#place a[data-nav="nav_geo"]')).to_have_attribute(
            "href", "geo:22.52,114.05?q=22.52,114.05(B1%20Shuiwei%20Rd)")
        expect(officer.locator('#place a[data-nav="nav_amap"]')).to_have_attribute(
            "href", re.compile(r"^https://uri\.amap\.com/marker\?position=114\.05,22\.52&.*"
                               r"coordinate=wgs84"))
        on_duty = officer.locator("#on-duty li")
        expect(on_duty).to_have_count(4)
        assert on_duty.evaluate_all("ls => ls.map(l => l.dataset.worker)") == [
            "gw1", "gl1", "cd1", "sd1"]
        expect(on_duty.nth(1)).to_contain_text("王芳 · 网格长")
        expect(on_duty.nth(1).locator("a.tel")).to_have_attribute("href", "tel:+8613900139002")
        expect(on_duty.nth(3)).to_contain_text("无电话")
        paged = officer.locator("#paged li")
        expect(paged).to_have_count(2)
        expect(officer.locator("#paged li[data-worker=gw1]")).to_contain_text("已响应")
        expect(officer.locator("#paged li[data-worker=gw1]")).to_contain_text("App")
        expect(officer.locator("#paged li[data-worker=gl1]")).not_to_contain_text("已响应")
        expect(officer.locator("#log")).to_contain_text("接警 · 李明")
        shoot(officer, "officer-people")
        stayed(worker, officer)


def test_the_officer_confirms_a_fire_every_level_is_paged_and_119_called(
        db, make_settings, uid, tmp_path):
    """人工确认 from the officer's board: one detector's warning, seen on video, confirmed
    with a note; the incident turns into a confirmed fire, every level is paged, the 119 hook
    is called once and the incident shows the hand-off."""
    fire_service = Receiver()
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY + 'fire_service = true\n')
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    try:
        with duty_console(db, make_settings, uid, roles, rules,
                          alerts={"fire_service_url": f"{fire_service.url}/119",
                                  "webhook_secret": "s3cret"}) as c:
            worker = c.open(PHONE, "gw1")
            officer = c.open(DESK, "cd1")
            send_alarm(c.publisher, c.settings, "SD-1")
            b1 = officer.locator("article.card", has_text="B1 Shuiwei Rd")
            expect(b1).to_have_attribute("data-severity", "warning")
            b1.locator('button[data-act="confirm"]').click()
            expect(officer.locator("#confirm-form")).to_be_visible()
            expect(officer.locator("#handoff")).to_be_hidden()
            officer.fill("#confirm-note", "监控看到二楼明火 flames on floor 2 on camera")
            officer.click("#confirm-form button[type=submit]")
            detail = officer.locator("#detail-card article")
            expect(detail).to_have_attribute("data-severity", "confirmed")
            expect(officer.locator("#confirm-form")).to_be_hidden()
            expect(officer.locator("#handoff")).to_have_attribute("data-status", "sent")
            expect(officer.locator("#handoff")).to_contain_text("已转 119")
            expect(officer.locator("#handoff")).to_contain_text("已送达")
            expect(officer.locator("#log")).to_contain_text("确认火警 · cd1")
            shoot(officer, "officer-confirmed")
            # The worker's phone follows: a confirmed fire now, without the button.
            mine = cards(worker).first
            expect(mine).to_have_attribute("data-severity", "confirmed")
            expect(mine.locator('button[data-act="confirm"]')).to_have_count(0)
            call = fire_service.next()
            assert call.path == "/119"
            stayed(worker, officer)
    finally:
        fire_service.server.shutdown()
    (incident,) = db.execute("SELECT id FROM incidents WHERE building_id = 'B1'").fetchone()
    paged = db.execute("SELECT DISTINCT worker_id FROM pages WHERE incident_id = %s"
                       " AND channel = 'mqtt' AND step = 2 ORDER BY 1", [incident]).fetchall()
    assert [w for (w,) in paged] == ["cd1", "gl1", "gw1", "sd1"]
    assert db.execute("SELECT count(*) FROM pages WHERE incident_id = %s"
                      " AND channel = 'fire_service'", [incident]).fetchone() == (1,)
    assert db.execute("SELECT actor, detail->>'note' FROM incident_log WHERE incident_id = %s"
                      " AND action = 'confirmed'", [incident]).fetchall() == [
        ("api:cd1-phone", "监控看到二楼明火 flames on floor 2 on camera")]


def axe_violations(page) -> list[str]:
    """axe-core (shipped inside the axe-playwright-python wheel) on the page as it is now:
    the serious and critical violations, one line each with the nodes they hit."""
    import axe_playwright_python

    source = Path(axe_playwright_python.__file__).with_name("axe.min.js").read_text("utf-8")
    page.evaluate(source)           # evaluated by the browser itself: not subject to the CSP
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:8]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_every_screen_passes_axe(db, make_settings, uid, tmp_path):
    """axe-core on each screen, in Chinese and English, phone and desk: the login form, the
    worker's list ringing with the sound-off bar, the officer's board, an incident with its
    people and forms, the Resolved view. No serious or critical violation (the issue counted
    33 colour-contrast nodes)."""
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, rules) as c:
        screens = {}
        login = c.page(PHONE)
        login.goto(f"{c.url}/console/")
        expect(login.locator("#login")).to_be_visible()
        screens["login"] = axe_violations(login)
        # Not c.open(): Playwright's evaluations count as a user's tap, and the worker's
        # screen should show the sound-off bar as a login link leaves it (see the test
        # above: nothing touches the page until it has tried to play).
        worker = c.page(PHONE)
        with worker.expect_request(lambda r: "/v1/incidents/events" in r.url):
            worker.goto(f"{c.url}/console/#token={c.tokens['gw1']}")
        officer = c.open(DESK, "cd1")
        send_alarm(c.publisher, c.settings, "SD-1")
        send_alarm(c.publisher, c.settings, "SD-4")
        expect(cards(officer)).to_have_count(2)
        expect(worker.locator("#ring")).to_be_visible()
        expect(worker.locator("#sound-off")).to_be_visible()
        screens["worker list, ringing"] = axe_violations(worker)
        screens["officer board"] = axe_violations(officer)
        cards(worker).first.locator(".open").click()
        expect(worker.locator("#people-box")).to_be_visible()
        screens["incident"] = axe_violations(worker)
        worker.select_option("#cause", "cooking_steam")
        worker.fill("#note", "厨房油烟 kitchen steam")
        worker.click("#resolve-form button[type=submit]")
        worker.click('#views [data-view="resolved"]')
        expect(cards(worker)).to_have_count(1)
        screens["resolved"] = axe_violations(worker)
        officer.click("#lang")
        expect(officer.locator("h1")).to_have_text("firegrid duty console")
        screens["officer board, English"] = axe_violations(officer)
        # The dark colour scheme (phones at night): an incident, with its timers and links.
        send_alarm(c.publisher, c.settings, "SD-2")
        expect(cards(officer)).to_have_count(2)
        officer.emulate_media(color_scheme="dark")
        screens["officer board, dark"] = axe_violations(officer)
        cards(officer).first.locator(".open").click()
        expect(officer.locator("#people-box")).to_be_visible()
        screens["incident, dark"] = axe_violations(officer)
    assert {name: found for name, found in screens.items() if found} == {}


def test_installable_with_an_offline_shell_that_comes_back_by_itself(
        db, make_settings, uid):
    """The console is an installable web app (manifest, icon, service worker); with the
    network gone it still opens, says it cannot reach the server, and once the network is
    back it logs in again and goes live by itself."""
    with duty_console(db, make_settings, uid, {"gw1": "grid_worker"}, core=False) as c:
        worker = c.open(PHONE, "gw1")
        manifest = worker.evaluate(
            "fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json())")
        assert (manifest["start_url"], manifest["scope"], manifest["display"]) == (
            "/console/", "/console/", "standalone")
        assert manifest["icons"] and manifest["name"].startswith("消防网格值守台")
        # The worker takes control once its install (which fills the cache) is done.
        assert worker.evaluate("""() => navigator.serviceWorker.controller !== null
            || new Promise(done => navigator.serviceWorker.addEventListener(
                'controllerchange', () => done(true), {once: true}))""")
        assert worker.evaluate("() => caches.has('fg-console-4')")

        worker.context.set_offline(True)
        worker.reload()
        expect(worker.locator("body")).to_have_attribute("data-offline", "true")
        expect(worker.locator("#offline")).to_contain_text("无法连接服务器")
        expect(worker.locator("#login")).to_be_hidden()
        expect(worker.locator("#live")).to_have_text("重连中")
        shoot(worker, "worker-offline")

        worker.context.set_offline(False)
        expect(worker.locator("#board")).to_be_visible()
        expect(worker.locator("#live")).to_have_attribute("data-live", "on")
        expect(worker.locator("body")).not_to_have_attribute("data-offline", "true")


def test_a_technician_registers_a_device_by_typed_id_and_it_publishes(db, make_settings, uid):
    """The field team's screen: tech1 types a new detector's id, finds it unregistered,
    registers it to B2, floor 3, a room; the password shown once lets the detector publish
    on the broker; then it is moved a floor up and retired, with two taps."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    with duty_console(db, make_settings, uid, {"tech1": "field_technician"}, core=False) as c:
        tech = c.open(PHONE, "tech1")
        tech.click('#views [data-view="devices"]')
        expect(tech.locator("#find-form")).to_be_visible()
        expect(tech.locator("#quarantine")).to_contain_text("没有")
        tech.fill("#device-id", "SD-NEW-1")
        tech.click("#find-form button[type=submit]")
        expect(tech.locator("#register-form")).to_be_visible()
        expect(tech.locator("#register-id")).to_have_text("SD-NEW-1")
        tech.select_option("#register-kind", "smoke_detector")
        tech.fill("#register-building", "B2")
        tech.fill("#register-floor", "3")
        tech.fill("#register-location", "301 厨房 kitchen")
        tech.click("#register-form button[type=submit]")
        expect(tech.locator("#credentials")).to_be_visible()
        expect(tech.locator("#device-view")).to_have_attribute("data-state", "provisioned")
        expect(tech.locator("#device-facts")).to_contain_text("301 厨房 kitchen")
        expect(tech.locator("#sound-off")).to_be_hidden()     # no pages for technicians
        shoot(tech, "field-registered")
        assert axe_violations(tech) == []
        username = tech.locator("#cred-username").text_content()
        password = tech.locator("#cred-password").text_content()
        assert username == "SD-NEW-1" and password

        # The detector, configured with them, publishes (QoS 1: the broker acknowledges).
        detector = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"SD-NEW-1-{uid}")
        detector.username_pw_set(username, password)
        detector.connect(c.settings.mqtt.host, c.settings.mqtt.port)
        detector.loop_start()
        try:
            info = detector.publish(m.topic("SD-NEW-1", "event", c.settings.mqtt.topic_prefix),
                                    m.encode(m.event("test", 1)), qos=1)
            info.wait_for_publish(30)
            assert info.is_published()
        finally:
            detector.disconnect()
            detector.loop_stop()

        # A floor up, then retired (the first tap only asks).
        tech.fill("#move-floor", "4")
        tech.click("#move-form button[type=submit]")
        expect(tech.locator("#move-error")).to_have_text("位置已保存")
        expect(tech.locator("#device-facts")).to_contain_text("4 层")
        tech.click("#retire")
        expect(tech.locator("#retire")).to_have_text("确认停用（设备密码将被删除）")
        tech.click("#retire")
        expect(tech.locator("#device-view")).to_have_attribute("data-state", "retired")
        expect(tech.locator("#retire")).to_be_hidden()
    row = db.execute("SELECT building_id, floor, location, state FROM devices"
                     " WHERE id = 'SD-NEW-1'").fetchone()
    assert row == ("B2", 4, "301 厨房 kitchen", "retired")
    assert {a for (a,) in db.execute(
        "SELECT DISTINCT actor FROM registry_history WHERE entity_id = 'SD-NEW-1'"
    ).fetchall()} == {"api:tech1-phone"}
