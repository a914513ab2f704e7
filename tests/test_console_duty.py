"""The duty console's steering and roster (issue 16) in Debian's headless Chromium, with the
fixtures of tests/test_console_browser.py: the real API under uvicorn, the real alert core on
the real broker and database. A community officer escalates an incident now from its detail
and the next rung is paged (the pages table), is refused a level the ladder does not have,
adds a responder, who is paged, and reassigns it; on the 值班安排 duty screen the officer
puts a worker on leave with a substitute (the leave row), sees the coverage warning of a
leave without one, cancels it, and swaps two shifts (the roster rows); a grid leader, who
may change leave but not read the roster, is told so. axe-core passes on the new screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from devices import registry
from devices.models import Shift
from tests.alert_live import send_alarm
from tests.helpers import wait_for_count
from tests.test_console_browser import (
    DESK,
    PHONE,
    STEADY,
    axe_violations,
    cards,
    duty_console,
    shoot,
    stayed,
)


def _count(url: str, query: str, expected: int) -> int:
    return wait_for_count(url, query, expected, timeout=30)


def test_the_officer_escalates_now_and_adds_a_responder(db, make_settings, uid, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(STEADY)          # rung 1 grid, rung 2 community, an hour apart
    roles = {"gw1": "grid_worker", "cd1": "community_duty"}
    with duty_console(db, make_settings, uid, roles, rules) as c:
        worker = c.open(PHONE, "gw1")
        officer = c.open(DESK, "cd1")
        send_alarm(c.publisher, c.settings, "SD-1")
        expect(cards(worker)).to_have_count(1)
        b1 = officer.locator("article.card", has_text="B1 Shuiwei Rd")
        expect(b1.locator(".escalation")).to_contain_text("第 1 级：网格员")
        (incident,) = db.execute("SELECT id FROM incidents").fetchone()
        url = c.settings.database.url

        # The card's 升级/派人… opens the incident at the escalate form.
        b1.locator('button[data-act="steer"]').click()
        expect(officer.locator("#escalate-form")).to_be_visible()
        expect(officer.locator("#responder-form")).to_be_visible()

        # A level the ladder does not reach: refused, Chinese first, then the API's words.
        officer.select_option("#escalate-to", "street")
        officer.click("#escalate-form button[type=submit]")
        result = officer.locator("#escalate-result")
        expect(result).to_have_attribute("data-ok", "false")
        expect(result).to_contain_text("没有更高一级可以升级（")
        expect(result).to_contain_text("no later rung")

        # The next rung, now: the alert core pages the community officer at once.
        officer.select_option("#escalate-to", "")
        officer.fill("#escalate-note", "视频里看到浓烟")
        officer.click("#escalate-form button[type=submit]")
        expect(result).to_have_attribute("data-ok", "true")
        expect(result).to_contain_text("已立即升级，下一级正在通知 · Escalated now")
        assert _count(url, f"SELECT count(*) FROM pages WHERE incident_id = {incident}"
                           " AND worker_id = 'cd1'", 1) >= 1
        row = db.execute("SELECT actor, detail->>'note' FROM incident_log"
                         " WHERE incident_id = %s AND action = 'escalated'", [incident]).fetchone()
        assert row == ("api:cd1-phone", "视频里看到浓烟")
        expect(officer.locator("#detail-card .escalation")).to_contain_text("第 2 级：社区值班")
        expect(officer.locator("#log")).to_contain_text("立即升级 · cd1")
        shoot(officer, "officer-escalate")

        # Add a responder from the next grid: paged at once, named in the answer.
        expect(officer.locator("#responder-options option[value=gw2]")).to_have_count(1)
        officer.fill("#responder-id", "gw2")
        officer.click("#responder-form button[type=submit]")
        line = officer.locator("#responder-result")
        expect(line).to_have_attribute("data-ok", "true")
        expect(line).to_contain_text("已加派 gw2")
        assert _count(url, f"SELECT count(*) FROM pages WHERE incident_id = {incident}"
                           " AND worker_id = 'gw2'", 1) >= 1
        # Nobody by that id: refused in the officer's words.
        officer.fill("#responder-id", "NOBODY")
        officer.click("#responder-form button[type=submit]")
        expect(line).to_have_attribute("data-ok", "false")
        expect(line).to_contain_text("人员不存在")

        # gw1 acknowledges on the phone; the officer hands the incident to the grid leader:
        # it waits for gl1's acknowledgement again.
        cards(worker).first.locator('button[data-act="acknowledge"]').click()
        card = officer.locator("#detail-card article.card")
        expect(card).to_have_attribute("data-state", "acknowledged")
        officer.fill("#responder-id", "gl1")
        officer.check("#responder-reassign")
        officer.click("#responder-form button[type=submit]")
        expect(line).to_contain_text("已转派给 gl1，已通知，等待其接警 · Reassigned to gl1")
        expect(card).to_have_attribute("data-state", "notified")
        assert db.execute("SELECT i.state, l.actor FROM incidents i JOIN incident_log l"
                          " ON l.incident_id = i.id AND l.action = 'reassigned'"
                          " WHERE i.id = %s", [incident]).fetchone() == ("notified",
                                                                        "api:cd1-phone")

        # The grid worker on the ladder has the same forms on the phone.
        cards(worker).first.locator(".open").click()
        expect(worker.locator("#escalate-form")).to_be_visible()
        assert axe_violations(officer) == []
        stayed(worker, officer)


def test_the_officer_puts_a_worker_on_leave_with_a_substitute_and_swaps_shifts(
        db, make_settings, uid):
    roles = {"cd1": "community_duty", "gw1": "grid_worker", "gl1": "grid_leader"}
    with duty_console(db, make_settings, uid, roles, core=False) as c:
        # The day after tomorrow gw1 works the day and gw2 the night: two grid workers'
        # shifts to swap.
        day = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        night = day + timedelta(hours=12)
        with registry.changes(db, "test-setup"):
            registry.add_shifts(db, [
                Shift(worker_id="gw1", starts_at=day, ends_at=night),
                Shift(worker_id="gw2", starts_at=night, ends_at=night + timedelta(hours=12))])
        worker = c.open(PHONE, "gw1")
        expect(worker.locator('#views [data-view="duty"]')).to_be_hidden()
        officer = c.open(DESK, "cd1")
        officer.click('#views [data-view="duty"]')
        expect(officer.locator("#duty")).to_have_attribute("data-loaded", "true")
        expect(officer.locator("#incidents")).to_be_hidden()
        roster = officer.locator("#roster li[data-shift]")
        # The community's people (grid workers, leader, technician, the officer), not the
        # street's officer.
        expect(roster).to_have_count(7)
        assert officer.locator("#roster li[data-worker=sd1]").count() == 0

        # gw1 on leave for a day with gw2 as the substitute.
        officer.fill("#leave-worker", "gw1")
        officer.fill("#leave-sub", "gw2")
        officer.fill("#leave-reason", "病假")
        officer.click("#leave-form button[type=submit]")
        saved = officer.locator("#leave-error")
        expect(saved).to_have_attribute("data-ok", "true")
        expect(saved).to_contain_text("已登记请假")
        expect(officer.locator("#leave-warnings li")).to_have_count(0)
        rows = db.execute("SELECT worker_id, substitute_id, reason, created_by, cancelled_at"
                          " FROM leave").fetchall()
        assert rows == [("gw1", "gw2", "病假", "api:cd1-phone", None)]
        expect(officer.locator("#roster li[data-worker=gw1]").first).to_contain_text(
            "请假 · 替班：gw2")
        expect(officer.locator("#leaves li[data-leave]")).to_have_count(1)

        # gw2 on leave with nobody instead: saved, with the API's coverage warning.
        officer.fill("#leave-worker", "gw2")
        officer.click("#leave-form button[type=submit]")
        warnings = officer.locator('#leave-warnings li[data-warning="gap"]')
        expect(warnings).to_have_count(1)
        expect(warnings.first).to_contain_text("网格 G2")
        expect(warnings.first).to_contain_text("grid G2 has nobody else")
        shoot(officer, "officer-duty")
        assert axe_violations(officer) == []

        # ... and cancelled: the row stays, with cancelled_at.
        (leave_id,) = db.execute("SELECT id FROM leave WHERE worker_id = 'gw2'").fetchone()
        officer.click(f'#leaves li[data-leave="{leave_id}"] button[data-act="cancel-leave"]')
        expect(officer.locator("#swap-result")).to_contain_text("已取消请假")
        assert db.execute("SELECT cancelled_at IS NOT NULL FROM leave WHERE id = %s",
                          [leave_id]).fetchone() == (True,)
        expect(officer.locator('#leaves li[data-cancelled="true"]')).to_have_count(1)

        # gw1 and gw2 swap the day and the night.
        (day_id,) = db.execute("SELECT id FROM roster WHERE starts_at = %s", [day]).fetchone()
        (night_id,) = db.execute("SELECT id FROM roster WHERE starts_at = %s",
                                 [night]).fetchone()
        expect(officer.locator("#swap")).to_be_disabled()
        officer.check(f"#shift-{day_id}")
        officer.check(f"#shift-{night_id}")
        officer.click("#swap")
        expect(officer.locator("#swap-result")).to_contain_text("已换班 · Shifts swapped")
        owners = dict(db.execute("SELECT id, worker_id FROM roster WHERE id = ANY(%s)",
                                 [[day_id, night_id]]).fetchall())
        assert owners == {day_id: "gw2", night_id: "gw1"}
        expect(officer.locator(f"#roster li[data-shift='{day_id}']")).to_contain_text("gw2")

        # The grid leader reads the people and shifts of their own grid only, and its leave
        # (gw1's; gw2 is G2's): the night gw1 now works is there, the day gw2 took is not.
        leader = c.open(PHONE, "gl1")
        leader.click('#views [data-view="duty"]')
        expect(leader.locator("#duty")).to_have_attribute("data-loaded", "true")
        expect(leader.locator("#duty-note")).to_have_text("")
        expect(leader.locator(f"#roster li[data-shift='{night_id}']")).to_contain_text("gw1")
        expect(leader.locator(f"#roster li[data-shift='{day_id}']")).to_have_count(0)
        expect(leader.locator("#leaves li[data-leave]")).to_have_count(1)

        # The dark scheme, and English.
        officer.emulate_media(color_scheme="dark")
        assert axe_violations(officer) == []
        officer.click("#lang")
        expect(officer.locator('#views [data-view="duty"]')).to_have_text("Duty")
        expect(officer.locator("#roster li[data-worker=gw1]").first).to_contain_text(
            "on leave")
        stayed(officer, worker, leader)
