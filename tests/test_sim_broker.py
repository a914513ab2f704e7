"""The simulators against the real services: what a subscriber on the real broker receives
is exactly the ground truth, the hostile device's messages each reach dead_letters with
ingest's reason without stopping it, and the database holds what the truth says was sent
(nothing missing, nothing invented). Waits are on the broker or the database, with deadlines."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from simulators.run import run_simulation
from simulators.truth import expected_rows, maybe_rows, read
from tests.helpers import Publisher, ThreadedIngest, await_subscribed, wait_for_count


class Subscriber:
    """Everything published under a prefix, QoS 1, as (topic, payload)."""

    def __init__(self, host: str, port: int, prefix: str, client_id: str,
                 auth: tuple[str, str] | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{prefix}/#", qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.received.append((message.topic, message.payload))

    def keys(self) -> set[tuple[str, int | None, int | None]]:
        with self.lock:
            return {(t, *_ts_seq(p)) for t, p in self.received}

    def wait_for(self, want: set, timeout: float, keep=lambda key: True) -> set:
        """The (topic, ts, seq) keys received that `keep` accepts, once they include all of
        `want` or the deadline passes (the test's assertions then say what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            got = {k for k in self.keys() if keep(k)}
            if want <= got or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _ts_seq(payload: bytes) -> tuple[int | None, int | None]:
    try:
        msg = json.loads(payload)
        return msg.get("ts"), msg.get("seq")
    except ValueError:
        return None, None


def _published_keys(records: list[dict]) -> set[tuple]:
    return {(r["topic"], r["ts"], r["seq"]) for r in records if r["kind"] == "published"}


def _unacked_keys(records: list[dict]) -> set[tuple]:
    """Sent but never acknowledged: the broker may or may not have delivered them."""
    return {(r["topic"], r["ts"], r["seq"]) for r in records
            if r["kind"] == "unacked" and r["sent"]}


def test_truth_is_what_the_broker_delivered(broker, make_settings, uid, tmp_path):
    settings = make_settings()
    sub = Subscriber(broker.host, broker.port, settings.mqtt.topic_prefix, f"sub-{uid}")
    truth_path = tmp_path / "truth.jsonl"
    try:
        # Fire, a burnt pan and a quarter of the street offline for an hour: 75 simulated
        # minutes in about 2.5 s, with reconnects and a burst of buffered messages.
        summary = run_simulation(settings, preset="tiny", scenarios=["fire", "cooking", "outage"],
                                 speed=2000, seed=4, truth_path=truth_path)
        records = read(truth_path)
        sent = _published_keys(records)
        maybe = _unacked_keys(records)
        got = sub.wait_for(sent - maybe, 15)
    finally:
        sub.close()
    # The outage cut its devices: live connections lost, or, when the 75 simulated minutes
    # outran the fleet's first connections (a busy CI machine), connects refused during it.
    # Either way what they measured meanwhile is buffered and sent after (asserted below).
    cut = summary.stats.connections_lost + summary.stats.connect_failures
    assert cut > 0 and summary.counters.connect_errors == 0
    assert sum(r["kind"] == "incident" for r in records) == 3
    assert got <= sent, f"invented: {sorted(got - sent)[:5]}"
    assert sent - maybe <= got, f"missing: {sorted(sent - maybe - got)[:5]}"
    outage = next(r for r in records if r["kind"] == "incident" and r["what"] == "outage")
    buffered = [r for r in records if r["kind"] == "published" and r["device"] in outage["devices"]
                and outage["ts"] <= r["ts"] < outage["ends_ts"]]
    assert buffered and all(r["sent_at"] >= outage["ends_ts"] for r in buffered)


def _stored(url: str) -> set[tuple[str, int, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, seq FROM readings"
            " UNION ALL SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, seq"
            " FROM events WHERE device_id <> 'PROBE'").fetchall()
    return {tuple(r) for r in rows}


def test_hostile_device_is_dead_lettered_and_the_rest_stored(make_settings, db_url, tmp_path):
    settings = make_settings()
    prefix = settings.mqtt.topic_prefix
    ingest = ThreadedIngest(settings).start()
    probe = Publisher(settings.mqtt.host, settings.mqtt.port, f"probe-{prefix}")
    try:
        await_subscribed(probe, prefix, db_url)
        truth_path = tmp_path / "truth.jsonl"
        run_simulation(settings, preset="tiny", scenarios=["hostile", "cooking"], speed=400,
                       seed=2, truth_path=truth_path)
        records = read(truth_path)
        bad = [r for r in records if r["kind"] == "published" and r["expect"] == "dead_letter"]
        want = expected_rows(records)
        assert len(bad) == 5 and want
        assert wait_for_count(db_url, "SELECT count(*) FROM dead_letters", len(bad), 30) == len(bad)
        stored_q = ("SELECT (SELECT count(*) FROM readings)"
                    " + (SELECT count(*) FROM events WHERE device_id <> 'PROBE')")
        wait_for_count(db_url, stored_q, len(want - maybe_rows(records)), 30)
        stored = _stored(db_url)
        with psycopg.connect(db_url, autocommit=True) as conn:
            reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM dead_letters"))
    finally:
        probe.close()
        ingest.stop()   # raises if ingest died on the way
    assert reasons == sorted(r["reason"] for r in bad)
    assert stored <= want, f"invented: {sorted(stored - want)[:5]}"
    assert want - maybe_rows(records) <= stored, f"missing: {sorted(want - stored)[:5]}"
    # the false alarm arrived, through a gateway or not
    assert any(r.get("incident") == "cooking-1" for r in records if r["kind"] == "published")


def test_stop_event_ends_a_run_cleanly(make_settings, tmp_path):
    settings = make_settings()
    stop = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.connected == p.devices:
            stop.set()

    started = time.monotonic()
    run_simulation(settings, preset="tiny", speed=1, duration_s=86400, seed=1,
                             truth_path=tmp_path / "truth.jsonl", stop_event=stop,
                             progress_cb=progress)
    assert time.monotonic() - started < 10
    records = read(tmp_path / "truth.jsonl")
    assert records[0]["kind"] == "run" and records[-1]["kind"] == "end"
    assert seen and "connected" in seen[-1].line()
