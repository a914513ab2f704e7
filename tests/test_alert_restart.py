"""kill -9 of the alert core mid-escalation, then a restart: every open incident still
escalates, no alarm is lost, and nobody gets the same page twice for the same step."""

from __future__ import annotations

import collections
import queue
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.alert_live import (
    AlertsProcess,
    Phones,
    alert_settings,
    fast_ladder,
    pages_sent,
    send_alarm,
)
from tests.alert_support import build_ward
from tests.helpers import Publisher, wait_for_count

RUNG_S = 3


@pytest.fixture
def setup(db, make_settings, uid, tmp_path):
    build_ward(db, around=datetime.now(UTC))
    rules = tmp_path / "rules.toml"
    rules.write_text(fast_ladder(RUNG_S))
    settings = alert_settings(make_settings, uid, rules_file=str(rules))
    phones = Phones(settings)
    publisher = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    procs: list[AlertsProcess] = []

    def start() -> AlertsProcess:
        proc = AlertsProcess(settings, tmp_path / "alerts.log").start()
        procs.append(proc)
        return proc

    yield settings, phones, publisher, start
    for proc in procs:
        proc.kill()
    publisher.close()
    phones.close()


def test_kill_9_mid_escalation_loses_nothing_and_pages_nobody_twice(setup, db):
    settings, phones, publisher, start = setup
    core = start()
    # The core's first run creates its persistent session; an alarm sent before its
    # subscription exists has no queue to wait in. The first page proves it is up (repeats
    # of SD-1's alarm only count on the same incident).
    deadline = time.monotonic() + 30
    while True:
        send_alarm(publisher, settings, "SD-1")
        try:
            assert phones.take(0.5)[0] == "gw1"
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "the alert core never paged"
    send_alarm(publisher, settings, "SD-3")
    assert pages_sent(settings, 2) == 2            # both first pages committed as sent
    core.kill()                              # kill -9 while both ladders are running

    send_alarm(publisher, settings, "SD-4")       # arrives while no alert core runs
    time.sleep(RUNG_S)                       # the downtime itself: timers fall due meanwhile
    restarts = [datetime.now(UTC)]
    core = start()
    # SD-4's alarm waited in the core's session; the overdue rungs fire at restart:
    # B1 and B2 page their grid leader, B3 its grid worker.
    assert pages_sent(settings, 5) == 5
    core.kill()                              # and once more, in the middle of the ladder
    restarts.append(datetime.now(UTC))
    core = start()
    # Every ladder runs to its end: 4 rungs x 3 incidents, one page each, but for B3's
    # grid G2, which has no grid leader: that rung is skipped.
    assert wait_for_count(settings.database.url, "SELECT count(*) FROM incident_log"
                          " WHERE action = 'exhausted'", 3, timeout=90) == 3
    assert pages_sent(settings, 11) == 11
    got = phones.take_n(11 - 1, timeout=30)  # the first page was taken above

    received = collections.Counter((p["key"], p["step"], w) for w, p in phones.seen)
    assert len(received) == 11 and set(received.values()) == {1}, received
    assert db.execute("SELECT count(*) FROM pages WHERE status <> 'sent'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] == 3
    assert sorted({w for w, _ in got} | {"gw1"}) == ["cd1", "gl1", "gw1", "gw2", "sd1"]
    # On time: no rung fired early, and none later than its due time (or the restart that
    # came after it) plus a margin for a loaded CI machine.
    rows = db.execute("""
        SELECT l.incident_id, l.at, i.opened_at FROM incident_log l
        JOIN incidents i ON i.id = l.incident_id
        WHERE l.action = 'notified' ORDER BY l.incident_id, l.id""").fetchall()
    assert len(rows) == 11
    previous: dict[int, datetime] = {}
    for incident_id, fired, opened in rows:
        due = previous[incident_id] + timedelta(seconds=RUNG_S) if incident_id in previous \
            else opened
        assert fired >= due - timedelta(milliseconds=5), (fired, due)
        # due while the core was down: it fires when the next process is up
        restarted = max((r for r in restarts if r <= fired), default=due)
        assert fired <= max(due, restarted) + timedelta(seconds=8), (fired, due, restarts)
        previous[incident_id] = fired
