"""The dispatcher against the real broker and database: a page whose incident was resolved
before it went out is cancelled, on every channel, and never reaches a phone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from alerts import dispatch, loop
from alerts.publisher import PagePublisher
from alerts.rules import load_policy
from tests.alert_live import Phones, alert_settings
from tests.alert_support import alarm, build_ward, record


def test_pages_of_a_resolved_incident_are_cancelled_not_sent(db, db_url, make_settings, uid):
    now = datetime.now(UTC)
    build_ward(db, around=now, channels={"gw1": {"webhook": "http://127.0.0.1:9/hook"}})
    webhook = frozenset({"webhook"})
    # B1's fire is written first (its pages are due first), then B3's, a second later.
    resolved = record(db, [alarm("SD-1", 1, now)], now, channels=webhook).opened[0]
    later = now + timedelta(seconds=1)
    still_open = record(db, [alarm("SD-4", 1, later)], later, channels=webhook).opened[0]
    loop.resolve(db, resolved, "api:gw1", "cooking_steam", "steam from a pot", load_policy(),
                 now=later)

    settings = alert_settings(make_settings, uid)
    phones = Phones(settings)
    publisher = PagePublisher(settings.mqtt, settings.alerts)
    publisher.start()
    assert publisher.connected.wait(10)
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            dispatcher = dispatch.Dispatcher(conn, settings.alerts, publisher, {})
            try:
                dispatcher.pass_once(later + timedelta(seconds=1))
            finally:
                dispatcher.close()
        # Pages go out in the order they were due, and the broker keeps one publisher's
        # order: had B1's page been sent, it would arrive before B3's.
        worker, page = phones.take()
    finally:
        publisher.stop()
        phones.close()
    assert (worker, page["key"]) == ("gw2", f"incident-{still_open}")

    rows = db.execute("SELECT incident_id, channel, status, last_error FROM pages"
                      " ORDER BY incident_id, channel").fetchall()
    reason = "the incident was resolved before this page went out"
    assert rows == [(resolved, "mqtt", "cancelled", reason),      # gw1's and gl1's
                    (resolved, "mqtt", "cancelled", reason),
                    (resolved, "webhook", "cancelled", reason),
                    (still_open, "mqtt", "sent", None)]
