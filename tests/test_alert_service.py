"""The alert core as a service: real broker, real database, pages on the workers' topics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulators import messages as m
from tests.alert_live import Phones, ThreadedAlerts, alert_settings
from tests.alert_support import build_ward
from tests.helpers import Publisher, wait_for_count


@pytest.fixture
def live(db, make_settings, uid):
    build_ward(db, around=datetime.now(UTC))
    settings = alert_settings(make_settings, uid)
    phones = Phones(settings)
    core = ThreadedAlerts(settings).start()
    publisher = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    yield settings, phones, publisher
    publisher.close()
    core.stop()
    phones.close()


def send(publisher, settings, device, seq, kind="alarm", payload=None, **fields) -> bytes:
    payload = payload or m.encode(m.event(kind, seq, **fields))
    publisher.publish_all([(m.topic(device, "event", settings.mqtt.topic_prefix), payload)])
    return payload


def test_an_alarm_reaches_the_grid_worker_on_their_topic(live, db):
    settings, phones, publisher = live
    send(publisher, settings, "SD-1", 1, obscuration_db_m=1.2)
    got = dict(phones.take_n(2))            # the grid worker and the leader, at once
    assert sorted(got) == ["gl1", "gw1"]
    page = got["gw1"]
    incident_id = db.execute("SELECT id FROM incidents").fetchone()[0]
    assert page["key"] == f"incident-{incident_id}" and page["kind"] == "incident"
    assert page["building"]["id"] == "B1" and page["severity"] == "warning"
    assert page["step"] == 1 and "火警" in page["title"]
    # The phone can have it before the dispatcher's COMMIT marks it sent.
    sent = f"SELECT count(*) FROM pages WHERE id = {page['page_id']} AND status = 'sent'"
    assert wait_for_count(settings.database.url, sent, 1) == 1


def test_a_second_detector_pages_every_level_once(live, db):
    settings, phones, publisher = live
    send(publisher, settings, "SD-1", 1)
    assert sorted(w for w, _ in phones.take_n(2)) == ["gl1", "gw1"]
    second = send(publisher, settings, "SD-2", 1)
    got = phones.take_n(4)
    assert sorted(w for w, _ in got) == ["cd1", "gl1", "gw1", "sd1"]
    assert {p["severity"] for _, p in got} == {"confirmed"}
    send(publisher, settings, "SD-2", 1, payload=second)   # a resend: nothing new
    send(publisher, settings, "SD-2", 2)   # a repeat: the incident counts it, nobody paged
    assert wait_for_count(settings.database.url, "SELECT max(alert_count) FROM incidents", 3) == 3
    assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM pages").fetchone()[0] == 6
    assert phones.pages.empty()
