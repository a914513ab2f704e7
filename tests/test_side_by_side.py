"""Processes side by side (issue 7, item 3): two ingest processes splitting the stream by
device (partitions 0 and 1 of 2) and two alert-core processes splitting theirs, one of each
killed with SIGKILL in the middle of a run. Nothing is lost, nothing is stored twice, nobody
is paged twice.

Each process has a plain subscription and its own persistent session, so Mosquitto keeps
queueing a killed process's messages (its devices' included) until that client id connects
again; the survivor acknowledges them unstored, they are not its devices. So a killed
process must come back under its own client id, as systemd's Restart= or a StatefulSet's
stable names bring it back (docs/operations.md). Meanwhile the survivors carry on: the
surviving alert core's escalator fires the open incidents' rungs on time, because every
timer is in the database."""

from __future__ import annotations

import collections
import threading
from datetime import UTC, datetime, timedelta

import psycopg

from runtime.localsvc import free_ports, wait_until
from runtime.settings import Settings
from simulators import messages as m
from tests.alert_live import (
    AlertsProcess,
    Phones,
    alert_settings,
    fast_ladder,
    pages_sent,
    send_alarm,
)
from tests.alert_support import build_ward
from tests.helpers import IngestProcess, Publisher, scrape, wait_for_count

RUNG_S = 3
CONNECTED = 'firegrid_mqtt_connected{service="ingest"}'
ALERTS_CONNECTED = 'firegrid_mqtt_connected{service="alerts"}'
RECEIVED = 'firegrid_mqtt_messages_received{service="ingest"}'
OTHERS = 'firegrid_mqtt_messages_others{service="ingest"}'


def readings(prefix: str, start: int, count: int) -> list[tuple[str, bytes]]:
    ts = m.now_ms()
    return [(m.topic(f"SD-{i % 40:04d}", "telemetry", prefix), m.encode(m.smoke_status(i, ts)))
            for i in range(start, start + count)]


class Pair:
    """Two processes of one kind on one share group, each with its own client id and
    metrics port; `a` is the one that gets killed and restarted."""

    def __init__(self, kind: type[IngestProcess], settings: list[Settings], log) -> None:
        self._kind, self._settings, self._log = kind, settings, log
        self.procs = [kind(s, log).start() for s in settings]

    def restart_first(self) -> None:
        self.procs[0] = self._kind(self._settings[0], self._log).start()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()


def test_two_of_each_one_of_each_killed_nothing_lost_nothing_doubled(db, db_url, make_settings,
                                                                     uid, tmp_path):
    build_ward(db, around=datetime.now(UTC))
    rules = tmp_path / "rules.toml"
    rules.write_text(fast_ladder(RUNG_S))
    first = free_ports(4)          # four consecutive free ports
    ports = [first + i for i in range(4)]
    base = alert_settings(make_settings, uid, rules_file=str(rules))
    ingest = [base.model_copy(update={
        "mqtt": base.mqtt.model_copy(update={"client_id": f"ingest-{uid}-{n}",
                                             "partitions": 2, "partition": i}),
        "ingest": base.ingest.model_copy(update={"metrics_port": ports[i],
                                                 "batch_max_rows": 200})})
        for i, n in enumerate("ab")]
    alerts = [base.model_copy(update={
        "alerts": base.alerts.model_copy(update={"client_id": f"alerts-{uid}-{n}",
                                                 "metrics_port": ports[2 + i],
                                                 "partitions": 2, "partition": i})})
        for i, n in enumerate("ab")]
    phones = Phones(base)
    publisher = Publisher(base.mqtt.host, base.mqtt.port, f"dev-{uid}")
    ingesters = Pair(IngestProcess, ingest, tmp_path / "ingest.log")
    cores = Pair(AlertsProcess, alerts, tmp_path / "alerts.log")
    prefix = base.mqtt.topic_prefix
    try:
        # All four in their groups before anything is sent, so the broker splits the stream.
        wait_until(lambda: all(scrape(p, CONNECTED) == 1 for p in ports[:2])
                   and all(scrape(p, ALERTS_CONNECTED) == 1 for p in ports[2:]), 60,
                   "all four processes subscribed")

        publisher.publish_all(readings(prefix, 0, 2000))
        send_alarm(publisher, base, "SD-1")          # B1, grid G1
        send_alarm(publisher, base, "SD-4")          # B3, grid G2 (no grid leader)
        assert pages_sent(base, 2) == 2               # both grid workers paged, nothing pending
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 2000) == 2000
        # The two ingest processes split the stream: each kept part, acknowledged the rest.
        took = [scrape(p, RECEIVED) - scrape(p, OTHERS) for p in ports[:2]]
        assert all(0 < n < 2000 for n in took) and sum(took) == 2002, took  # and 2 alarms

        # kill -9 one of each while the next 4,000 readings stream in: the killed ingest
        # process dies with messages received and not yet committed.
        stream = threading.Thread(target=publisher.publish_all,
                                  args=(readings(prefix, 2000, 4000),), daemon=True)
        stream.start()
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 2400) >= 2400
        ingesters.procs[0].kill()
        cores.procs[0].kill()
        killed_at = datetime.now(UTC)
        stream.join(60)
        assert not stream.is_alive()
        send_alarm(publisher, base, "SD-3")          # B2: may wait in the dead core's session

        # The survivor alone climbs the open ladders: B1's grid leader is paged on time.
        with psycopg.connect(db_url, autocommit=True) as conn:
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM pages WHERE worker_id = 'gl1' AND status = 'sent'"
            ).fetchone()[0] >= 1, 30, "the surviving alert core escalated B1")
            fired = conn.execute(
                "SELECT l.at, i.opened_at FROM incident_log l JOIN incidents i"
                " ON i.id = l.incident_id WHERE i.building_id = 'B1'"
                " AND l.action = 'notified' ORDER BY l.id").fetchall()
        # ... by the survivor (the other core is dead), on time: one rung after the first,
        # give or take a loaded machine.
        gap = fired[1][0] - fired[0][0]
        assert timedelta(seconds=RUNG_S) - timedelta(milliseconds=5) <= gap \
            <= timedelta(seconds=RUNG_S + 8), gap
        assert fired[1][0] > killed_at

        ingesters.restart_first()                     # back under their own client ids
        cores.restart_first()
        publisher.publish_all(readings(prefix, 6000, 2000))

        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 8000, 90) == 8000
        # Every ladder runs to its end: B1 and B2 4 rungs each, B3 3 (G2 has no leader).
        assert wait_for_count(db_url, "SELECT count(*) FROM incident_log"
                              " WHERE action = 'exhausted'", 3, timeout=90) == 3
        assert pages_sent(base, 11) == 11
        phones.take_n(11, timeout=30)
    finally:
        ingesters.stop()
        cores.stop()
        publisher.close()
        phones.close()

    # Nothing lost, nothing stored twice.
    assert db.execute("SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings"
                      ).fetchone() == (8000, 8000)
    # One incident per building, every page sent once and received once.
    assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM pages WHERE status <> 'sent'").fetchone()[0] == 0
    received = collections.Counter((p["key"], p["step"], w) for w, p in phones.seen)
    assert len(received) == 11 and set(received.values()) == {1}, received
