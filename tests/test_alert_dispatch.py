"""The dispatcher against the real broker and database: a page whose incident was resolved
before it went out is cancelled, on every channel, and never reaches a phone; a burst of
pages goes out in chunks, each page once, also with two dispatchers side by side; pages the
broker did not acknowledge wait for a retry; the publisher comes back with the broker."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from alerts import dispatch, loop
from alerts.publisher import PagePublisher
from alerts.rules import load_policy
from runtime.localsvc import Mosquitto, make_state_dir, wait_until
from tests.alert_live import Phones, alert_settings, dispatcher_on, page_publisher
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
    publisher = page_publisher(settings)
    try:
        with dispatcher_on(settings, db_url, publisher) as dispatcher:
            dispatcher.pass_once(later + timedelta(seconds=1))
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


# --- a burst of MQTT pages (issue 18) ------------------------------------------------------

def _burst(db, n: int) -> tuple[int, set[int]]:
    """An incident in B1 and n more pending MQTT pages of it to gw1, each its own step, all
    due now: more than one chunk of dispatch.CHUNK. Returns the incident and every MQTT
    page id to send (the first rung's included)."""
    now = datetime.now(UTC)
    incident = record(db, [alarm("SD-1", 1, now)], now).opened[0]
    db.execute("INSERT INTO pages (incident_id, step, worker_id, channel, status, created_at,"
               " due_at, payload) SELECT %s, s, 'gw1', 'mqtt', 'pending', now(), now(),"
               " '{\"rung\": 0, \"roles\": [\"grid_worker\"]}'"
               " FROM generate_series(100, 99 + %s) s", [incident, n])
    ids = {r[0] for r in db.execute("SELECT id FROM pages WHERE channel = 'mqtt'"
                                    " AND status = 'pending'")}
    return incident, ids


def test_a_burst_goes_out_in_one_pass_and_each_page_once(db, db_url, make_settings, uid):
    build_ward(db, around=datetime.now(UTC))
    _, ids = _burst(db, 2 * dispatch.CHUNK + 300)
    settings = alert_settings(make_settings, uid)
    phones = Phones(settings)
    publisher = page_publisher(settings)
    try:
        with dispatcher_on(settings, db_url, publisher) as dispatcher:
            assert dispatcher.pass_once(datetime.now(UTC)) is False   # nothing left
        got = [page["page_id"] for _, page in phones.take_n(len(ids))]
    finally:
        publisher.stop()
        phones.close()
    assert sorted(got) == sorted(ids)                  # every page, none twice
    # Each published once, acknowledged, recorded in the pass that sent it.
    assert db.execute("SELECT status, attempts, count(*) FROM pages WHERE id = ANY(%s)"
                      " GROUP BY 1, 2", [list(ids)]).fetchall() == [("sent", 1, len(ids))]


def test_two_dispatchers_split_a_burst_without_sending_a_page_twice(db, db_url, make_settings,
                                                                     uid):
    build_ward(db, around=datetime.now(UTC))
    _, ids = _burst(db, 3 * dispatch.CHUNK)
    settings = alert_settings(make_settings, uid)
    phones = Phones(settings)
    publishers = [page_publisher(settings, f"alerts-{uid}-{i}") for i in (1, 2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def dispatch_once(publisher: PagePublisher) -> None:
        try:
            with dispatcher_on(settings, db_url, publisher) as dispatcher:
                start.wait(10)
                dispatcher.pass_once(datetime.now(UTC))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dispatch_once, args=(p,)) for p in publishers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        got = [page["page_id"] for _, page in phones.take_n(len(ids))]
    finally:
        for p in publishers:
            p.stop()
        phones.close()
    assert sorted(got) == sorted(ids)
    assert db.execute("SELECT status, attempts, count(*) FROM pages WHERE id = ANY(%s)"
                      " GROUP BY 1, 2", [list(ids)]).fetchall() == [("sent", 1, len(ids))]


def test_pages_the_broker_did_not_acknowledge_wait_for_a_retry(db, db_url, make_settings, uid):
    build_ward(db, around=datetime.now(UTC))
    _, ids = _burst(db, dispatch.CHUNK + 1)
    settings = alert_settings(make_settings, uid)
    phones = Phones(settings)
    publisher = PagePublisher(settings.mqtt, settings.alerts)     # not started: no broker
    try:
        with dispatcher_on(settings, db_url, publisher) as dispatcher:
            dispatcher.pass_once(datetime.now(UTC))
            rows = db.execute(
                "SELECT status, attempts, last_error, due_at > now(), count(*) FROM pages"
                " WHERE id = ANY(%s) GROUP BY 1, 2, 3, 4", [list(ids)]).fetchall()
            assert rows == [("pending", 1, "broker did not acknowledge", True, len(ids))]
            # The broker is back: the next pass after the retry delay sends them all.
            publisher.start()
            assert publisher.connected.wait(10)
            dispatcher.pass_once(datetime.now(UTC) + timedelta(seconds=6))
        got = [page["page_id"] for _, page in phones.take_n(len(ids))]
    finally:
        publisher.stop()
        phones.close()
    assert sorted(got) == sorted(ids)
    assert db.execute("SELECT status, attempts, count(*) FROM pages WHERE id = ANY(%s)"
                      " GROUP BY 1, 2", [list(ids)]).fetchall() == [("sent", 2, len(ids))]


def test_the_publisher_comes_back_with_the_broker(make_settings, uid):
    server = Mosquitto(make_state_dir("fg-test-mq-pages-")).start()
    try:
        settings = make_settings(mqtt={"host": server.host, "port": server.port,
                                       "reconnect_min_s": 0.1, "reconnect_max_s": 0.5})
        publisher = page_publisher(settings)
        try:
            topic = publisher.topic("gw1")
            assert publisher.publish_all([(topic, b"{}")] * 3, 10) == [True] * 3
            server.stop()
            wait_until(lambda: not publisher.connected.is_set(), 10, "the publisher to see")
            # Away: nothing is taken for delivered, and nobody waits for the timeout.
            started = time.monotonic()
            assert publisher.publish_all([(topic, b"{}")], 10) == [False]
            assert time.monotonic() - started < 1
            server.start()
            assert publisher.connected.wait(10)
            assert publisher.publish_all([(topic, b"{}")] * 3, 10) == [True] * 3
        finally:
            publisher.stop()
    finally:
        server.destroy()


def test_a_page_the_broker_refuses_is_not_taken_for_sent(make_settings, uid, tmp_path):
    # MQTT 5 gives the publisher the PUBACK's reason: a topic the broker's ACL denies comes
    # back "not authorized" (3.1.1 would acknowledge it as if delivered).
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite pages/#\n")
    server = Mosquitto(make_state_dir("fg-test-mq-acl-"), extra_conf=f"acl_file {acl}\n").start()
    try:
        settings = make_settings(mqtt={"host": server.host, "port": server.port})
        publisher = page_publisher(settings)
        try:
            assert publisher.publish_all([("pages/gw1/pages", b"{}"),
                                          ("elsewhere/gw1/pages", b"{}")], 10) == [True, False]
        finally:
            publisher.stop()
    finally:
        server.destroy()
