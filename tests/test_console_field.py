"""The field team's screen (issue 19) beyond registering, in Debian's headless Chromium with
the fixtures of tests/test_console_browser.py: a technician replaces a detector by a new
unit, which takes its building, floor and room, names it in its history and publishes with
the password shown once; the old one is retired and says what replaced it. A detector's
and a camera's last readings and events, published on the broker and stored by the real
ingest, and a detector's open ticket, on the device's screen."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import expect

from simulators import messages as m
from tests.helpers import ThreadedIngest, wait_for_count
from tests.test_console_browser import PHONE, axe_violations, duty_console, shoot

HOUR_MS = 3_600_000


def publishes(settings, uid: str, username: str, password: str) -> None:
    """The device, configured with its credentials, publishes an event; QoS 1: the broker
    acknowledges. (The test broker does not enforce device accounts, NoBrokerAuth: this
    shows the screen's path, as the registration test does.)"""
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{username}-{uid}")
    device.username_pw_set(username, password)
    device.connect(settings.mqtt.host, settings.mqtt.port)
    device.loop_start()
    try:
        info = device.publish(m.topic(username, "event", settings.mqtt.topic_prefix),
                              m.encode(m.event("self_test", 1, result="pass")), qos=1)
        info.wait_for_publish(30)
        assert info.is_published()
    finally:
        device.disconnect()
        device.loop_stop()


def find(tech, device_id: str) -> None:
    tech.fill("#device-id", device_id)
    tech.click("#find-form button[type=submit]")
    expect(tech.locator("#device-facts dd").first).to_have_text(device_id)


def test_a_technician_replaces_a_device_and_the_new_unit_publishes(db, make_settings, uid):
    with duty_console(db, make_settings, uid, {"tech1": "field_technician"}, core=False) as c:
        db.execute("UPDATE devices SET location = '201 走廊 corridor', model = 'JTY-GD-01'"
                   " WHERE id = 'SD-3'")
        tech = c.open(PHONE, "tech1")
        tech.click('#views [data-view="devices"]')
        find(tech, "SD-3")
        expect(tech.locator("#replace-form")).to_be_visible()
        tech.fill("#replace-id", "SD-3B")
        tech.click("#replace-form button[type=submit]")

        expect(tech.locator("#replace-result")).to_have_text(
            "已更换：SD-3B 接替 SD-3，请把设备密码写入新设备")
        expect(tech.locator("#credentials")).to_be_visible()
        facts = tech.locator("#device-facts")
        expect(facts.locator("dd").first).to_have_text("SD-3B")
        expect(facts).to_contain_text("2 层")
        expect(facts).to_contain_text("201 走廊 corridor")
        expect(facts.locator('[data-find="SD-3"]')).to_have_text("SD-3")
        shoot(tech, "field-replaced")
        assert axe_violations(tech) == []
        username = tech.locator("#cred-username").text_content()
        password = tech.locator("#cred-password").text_content()
        assert username == "SD-3B" and password
        publishes(c.settings, uid, username, password)

        # The old unit: retired, says what replaced it, offers nothing more to do.
        facts.locator('[data-find="SD-3"]').click()
        expect(tech.locator("#device-view")).to_have_attribute("data-state", "retired")
        expect(tech.locator("#credentials")).to_be_hidden()
        expect(facts.locator('[data-find="SD-3B"]')).to_have_text("SD-3B")
        expect(tech.locator("#replace-form")).to_be_hidden()
        expect(tech.locator("#retire")).to_be_hidden()
        # Replacing it again is refused, in Chinese first (the API's 409).
        find(tech, "SD-3B")
        tech.fill("#replace-id", "SD-1")
        tech.click("#replace-form button[type=submit]")
        expect(tech.locator("#replace-result")).to_have_attribute("data-ok", "false")
        expect(tech.locator("#replace-result")).to_contain_text(
            "该编号已登记为另一台设备（id 'SD-1' already exists")

    rows = db.execute("SELECT id, building_id, floor, location, model, state, replaces"
                      " FROM devices WHERE id IN ('SD-3', 'SD-3B') ORDER BY id").fetchall()
    assert rows == [("SD-3", "B2", 2, "201 走廊 corridor", "JTY-GD-01", "retired", None),
                    ("SD-3B", "B2", 2, "201 走廊 corridor", "JTY-GD-01", "provisioned", "SD-3")]
    assert db.execute(
        "SELECT entity_id, action, new->>'replaces', new->>'state' FROM registry_history"
        " WHERE entity = 'devices' AND entity_id IN ('SD-3', 'SD-3B')"
        " AND actor = 'api:tech1-phone' ORDER BY id").fetchall() == [
        ("SD-3B", "insert", "SD-3", "provisioned"), ("SD-3", "update", None, "retired")]


def test_the_device_screen_shows_last_readings_events_and_open_tickets(db, make_settings, uid):
    with duty_console(db, make_settings, uid, {"tech1": "field_technician"}, core=False) as c:
        ingest = ThreadedIngest(c.settings).start()
        try:
            prefix, now = c.settings.mqtt.topic_prefix, m.now_ms()
            # SD-1's battery runs down over three hourly heartbeats, then it says so and
            # fails a self test; CAM-1's video drops.
            c.publisher.publish_all([
                *[(m.topic("SD-1", "telemetry", prefix), m.encode(m.smoke_status(
                    seq, now - (4 - seq) * HOUR_MS, battery_pct=pct, rsrp_dbm=-95)))
                  for seq, pct in ((1, 31), (2, 20), (3, 12))],
                (m.topic("SD-1", "event", prefix), m.encode(m.event(
                    "low_battery", 4, now - HOUR_MS + 1000, battery_pct=12))),
                (m.topic("SD-1", "event", prefix), m.encode(m.event(
                    "self_test", 5, now - HOUR_MS + 2000, result="fail"))),
                (m.topic("CAM-1", "telemetry", prefix), m.encode(m.camera_status(
                    1, now, stream_online=False, recording=False, storage_free_mb=900))),
            ])
            url = c.settings.database.url
            wait_for_count(url, "SELECT count(*) FROM readings", 4, 30)
            wait_for_count(url, "SELECT count(*) FROM events", 2, 30)
        finally:
            ingest.stop()
        # As the maintenance monitor opens it.
        db.execute("INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail)"
                   " VALUES ('SD-1', 'low_battery', now(), 'battery 12%')")

        tech = c.open(PHONE, "tech1")
        tech.click('#views [data-view="devices"]')
        find(tech, "SD-1")
        readings = tech.locator("#device-readings li")
        expect(readings).to_have_count(3)
        expect(readings.first).to_contain_text(
            "烟雾 0.02 dB/m · 温度 22.5°C · 电量 12% · 信号 -95 dBm")
        expect(readings.last).to_contain_text("电量 31%")
        events = tech.locator("#device-events li")
        expect(events).to_have_count(2)
        expect(events.first).to_contain_text("自检 self test · 未通过")
        expect(events.last).to_contain_text("电量低 low battery · 12%")
        ticket = tech.locator('#device-tickets li[data-condition="low_battery"]')
        expect(ticket).to_contain_text("电量低 · battery 12%")
        shoot(tech, "field-device")
        assert axe_violations(tech) == []

        find(tech, "CAM-1")
        expect(tech.locator("#device-readings li")).to_have_count(1)
        expect(tech.locator("#device-readings li").first).to_contain_text(
            "视频中断 · 温度 41.0°C · 未录像 · 存储剩余 900 MB")
        expect(tech.locator("#device-events")).to_have_text("尚无事件")
        expect(tech.locator("#device-tickets")).to_have_text("没有")
        tech.click("#lang")
        expect(tech.locator("#device-readings li").first).to_contain_text(
            "video down · 41.0 °C · not recording · 900 MB free")
