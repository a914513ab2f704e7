"""Load modes against the real broker: the multiplexed mode delivers exactly the ground truth
to a real subscriber (nothing missing, nothing invented, no duplicate among first
publishes), and per-device connections spread over several loopback source addresses all
connect. The long runs (100,000 connections, publish rates) are bench/simulators.py's."""

from __future__ import annotations

import threading
from collections import Counter

from simulators.run import run_simulation
from simulators.truth import read
from tests.test_sim_broker import Subscriber, _ts_seq, _unacked_keys


def test_multiplexed_delivers_exactly_the_truth(broker, make_settings, uid, tmp_path):
    settings = make_settings()
    sub = Subscriber(broker.host, broker.port, settings.mqtt.topic_prefix, f"sub-{uid}")
    truth_path = tmp_path / "truth.jsonl"
    try:
        # The small street (236 devices) over 3 connections: a fire, a burnt pan and an
        # outage, 75 simulated minutes in about 2 s.
        summary = run_simulation(settings, preset="small", mode="multiplexed", connections=3,
                                 scenarios=["fire", "cooking", "outage"], speed=3000, seed=5,
                                 truth_path=truth_path)
        records = read(truth_path)
        published = [(r["topic"], r["ts"], r["seq"]) for r in records if r["kind"] == "published"]
        sent = set(published)
        maybe = _unacked_keys(records)
        got = sub.wait_for(sent - maybe, 15)
        with sub.lock:
            received = [(t, *_ts_seq(p)) for t, p in sub.received]
    finally:
        sub.close()
    assert records[0]["mode"] == "multiplexed" and records[0]["connections"] == 3
    assert len(published) == len(sent), "a message recorded as first-published twice"
    assert summary.counters.connect_errors == 0
    # The outage hit devices, online (lost) or still connecting (refused by their network).
    assert summary.stats.connections_lost + summary.stats.connect_failures > 0
    assert got <= sent, f"invented: {sorted(got - sent)[:5]}"
    assert sent - maybe <= got, f"missing: {sorted(sent - maybe - got)[:5]}"
    # Resends of unacknowledged alarms may arrive twice; nothing else may.
    dup = [k for k, n in Counter(received).items() if n > 1]
    assert not dup or summary.stats.resent, f"duplicates without resends: {dup[:5]}"
    # Each device's seq counts up by one per message, across its topics.
    seqs: dict[str, list[int]] = {}
    for r in records:
        if r["kind"] == "published" and r["channel"] != "gateway":
            seqs.setdefault(r["device"], []).append(r["seq"])
    for device, s in seqs.items():
        assert sorted(s) == list(range(min(s), min(s) + len(s))), device


def test_per_device_connections_spread_over_source_addresses(broker, make_settings, tmp_path):
    settings = make_settings()
    stop = threading.Event()

    def progress(p):
        if p.connected == p.devices:
            stop.set()

    addrs = [f"127.0.0.{i}" for i in range(2, 6)]
    summary = run_simulation(settings, preset="small", speed=1, duration_s=3600, seed=3,
                             truth_path=tmp_path / "truth.jsonl", stop_event=stop,
                             progress_cb=progress, source_addrs=addrs, keepalive_s=600)
    assert stop.is_set(), "not every device connected"
    assert summary.counters.connect_errors == 0
    assert summary.stats.connected == 236
    # The broker saw them come from every address (its log names each new client's peer).
    log = (broker.base / "mosquitto.log").read_text(errors="replace")
    for addr in addrs:
        assert f"from {addr}:" in log, addr
