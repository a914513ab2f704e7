"""The alert core's own pages go straight to its dispatcher (issue 18; alerts/ladder.py
hand_off_s): written leased, returned ready to send, sent after COMMIT without reading them
back. Real broker and database: the handed rows say what the outbox claim would have said,
page for page; they are sent once, marked sent; a page whose incident was resolved before
the dispatcher got to it is cancelled; a page another dispatcher sent when the lease ran
out is not sent again; and pages whose process never sent them are due when the lease ends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from alerts import dispatch, ladder, loop, messages
from alerts.publisher import PagePublisher
from alerts.rules import load_policy
from tests.alert_live import Phones, alert_settings, dispatcher_on, page_publisher
from tests.alert_support import NO_CHANNELS, alarm, build_ward, record

LEASE_S = 5.0


def _record(db, device: str, now: datetime):
    return record(db, [alarm(device, 1, now)], now, hand_off_s=LEASE_S)


def _claimed(db, at: datetime) -> dict[int, messages.OutboxRow]:
    """What the outbox claim reads at `at`, in a transaction rolled back."""
    with db.transaction(force_rollback=True):
        return {r.page_id: r for r in dispatch._claim(db, at, True, 1000)}


def test_handed_pages_say_what_the_outbox_would_have_said(db):
    now = datetime.now(UTC)
    build_ward(db, around=now)
    first = _record(db, "SD-1", now)            # the evaluator: the first rung
    assert first.pages == len(first.handed) == 2
    # Leased: no dispatcher claims them until the lease ends.
    assert _claimed(db, now + timedelta(seconds=LEASE_S - 1)) == {}
    with db.transaction():                     # the escalator: the next rung, later
        later = now + timedelta(minutes=5)
        fired = ladder.fire(db, ladder.claim_due(db, later, 100), later, load_policy(),
                            NO_CHANNELS, hand_off_s=LEASE_S)
    assert fired.pages == len(fired.handed) > 0
    handed = {r.page_id: r for r in [*first.handed, *fired.handed]}
    assert set(_claimed(db, later + timedelta(seconds=LEASE_S - 1))) == {
        r.page_id for r in first.handed}
    # Then any dispatcher would, and read exactly the rows the ladder handed over.
    claimed = _claimed(db, later + timedelta(seconds=LEASE_S + 1))
    assert claimed == handed
    for page_id, row in handed.items():     # and so the same message, to the letter
        assert messages.page(row, later, "https://c") == messages.page(
            claimed[page_id], later, "https://c")


def _until_marker(phones: Phones, publisher: PagePublisher) -> list[tuple[str, dict]]:
    """Every page the phones got before a marker sent last on the same publisher (the
    broker keeps one publisher's order): all that was sent, with no waiting for silence."""
    deadline = time.monotonic() + 10
    assert publisher.wait(publisher.send([(publisher.topic("gw1"), b'{"marker": true}')],
                                         deadline), deadline) == [True]
    got = []
    while "marker" not in (page := phones.take())[1]:
        got.append(page)
    return got


def _sent(settings, db_url: str, act) -> list[int]:
    """Run act(dispatcher) against the real broker; the page ids the phones got."""
    phones = Phones(settings)
    publisher = page_publisher(settings)
    try:
        with dispatcher_on(settings, db_url, publisher) as dispatcher:
            act(dispatcher)
        return sorted(p["page_id"] for _, p in _until_marker(phones, publisher))
    finally:
        publisher.stop()
        phones.close()


def test_handed_pages_go_out_once_and_a_resolved_fire_is_not_paged(db, db_url,
                                                                  make_settings, uid):
    now = datetime.now(UTC)
    build_ward(db, around=now)
    kept = _record(db, "SD-1", now)
    gone = _record(db, "SD-4", now)
    loop.resolve(db, gone.opened[0], "api:gw2", "cooking_steam", "steam", load_policy(),
                 now=now)
    hand_off = dispatch.HandOff()
    assert hand_off.put(kept.handed) and hand_off.put(gone.handed)

    def act(dispatcher: dispatch.Dispatcher) -> None:
        assert dispatcher.send_handed(hand_off) is False
        dispatcher.mark_handed(force=True)
        # Due after the lease, the outbox has nothing more to send.
        assert dispatcher.pass_once(now + timedelta(seconds=LEASE_S + 1)) is False

    got = _sent(alert_settings(make_settings, uid), db_url, act)
    assert got == sorted(r.page_id for r in kept.handed)
    rows = db.execute("SELECT incident_id, status, attempts, count(*) FROM pages"
                      " GROUP BY 1, 2, 3 ORDER BY 1").fetchall()
    assert rows == [(kept.opened[0], "sent", 1, 2), (gone.opened[0], "cancelled", 0, 1)]


def test_a_page_sent_by_another_dispatcher_after_the_lease_is_not_sent_again(
        db, db_url, make_settings, uid):
    now = datetime.now(UTC)
    build_ward(db, around=now)
    out = _record(db, "SD-1", now)
    hand_off = dispatch.HandOff()
    assert hand_off.put(out.handed)

    def act(dispatcher: dispatch.Dispatcher) -> None:
        # Our process was slow: the lease ran out, and a dispatcher took them ...
        later = now + timedelta(seconds=LEASE_S + 1)
        assert dispatcher.pass_once(later) is False
        # ... so the hand-off leaves them to the outbox, and sends nothing.
        assert dispatcher.send_handed(hand_off, later) is False
        dispatcher.mark_handed(force=True)

    got = _sent(alert_settings(make_settings, uid), db_url, act)
    assert got == sorted(r.page_id for r in out.handed)
    assert db.execute("SELECT status, attempts, count(*) FROM pages GROUP BY 1, 2"
                      ).fetchall() == [("sent", 1, 2)]


def test_handed_pages_are_marked_sent_after_the_burst_and_sent_again_if_never_marked(
        db, db_url, make_settings, uid):
    """On the wire at once, in the outbox still pending until mark_handed: forced, or a
    fifth of the lease on. A dispatcher that loses its database in between leaves them to
    the outbox after the lease: the phone gets them again, with the same page_id."""
    now = datetime.now(UTC)
    build_ward(db, around=now)
    out = _record(db, "SD-1", now)
    ids = sorted(r.page_id for r in out.handed)
    hand_off = dispatch.HandOff()
    assert hand_off.put(out.handed)

    def status() -> list[tuple[str, int]]:
        return db.execute("SELECT status, attempts FROM pages ORDER BY id").fetchall()

    def send_and_lose_the_database(dispatcher: dispatch.Dispatcher) -> None:
        assert dispatcher.send_handed(hand_off) is False
        dispatcher.mark_handed()                   # too soon: nothing is written
        assert status() == [("pending", 0)] * len(ids)
        # The database goes (a restart, a failover) before the marks: closing the
        # dispatcher cannot write them, and says so rather than raising.
        db.execute("SELECT pg_terminate_backend(%s)", [dispatcher._conn.info.backend_pid])

    settings = alert_settings(make_settings, uid)
    assert _sent(settings, db_url, send_and_lose_the_database) == ids
    assert status() == [("pending", 0)] * len(ids)

    def outbox(dispatcher: dispatch.Dispatcher) -> None:
        assert dispatcher.pass_once(now + timedelta(seconds=LEASE_S + 1)) is False

    assert _sent(settings, db_url, outbox) == ids      # again, the same pages
    assert status() == [("sent", 1)] * len(ids)

    db.execute("UPDATE pages SET status = 'pending', attempts = 0")
    assert hand_off.put(out.handed)

    def send_and_mark(dispatcher: dispatch.Dispatcher) -> None:
        assert dispatcher.send_handed(hand_off) is False
        dispatcher.mark_handed(force=True)
        assert status() == [("sent", 1)] * len(ids)

    assert _sent(settings, db_url, send_and_mark) == ids


def test_a_full_hand_off_takes_nothing_more_and_gives_in_order():
    """Pure logic: past its bound a hand-off refuses a whole pass (its pages wait out their
    lease in the outbox); what it holds comes out first in, first out."""
    hand_off = dispatch.HandOff(max_rows=3)
    assert hand_off.put(["a", "b"]) is True
    assert hand_off.put(["c", "d"]) is False
    assert hand_off.put(["c"]) is True
    assert (hand_off.take(2), hand_off.take(5), len(hand_off)) == (["a", "b"], ["c"], 0)
