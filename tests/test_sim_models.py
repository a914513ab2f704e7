"""The simulators' pure logic on a virtual clock: no broker, no database, no sleeping.
Every payload a run publishes is put through ingest's own decoder, so "the models speak
protocol v1" and "each hostile message gets its reason" are checked against the real rules."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from protocol.decode import Decoder
from simulators import scenarios, timeline, topology
from simulators.clock import ScaledClock, VirtualClock, start_for
from simulators.engine import Engine, LoopbackLink, run_virtual
from simulators.errors import ScenarioError
from simulators.truth import Truth, expected_rows
from simulators.uplink import Outgoing, Uplink, UplinkConfig

T0 = 1_750_000_000_000


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> topology.Topology:
    out = tmp_path_factory.mktemp("tiny")
    topology.generate(out, "tiny", seed=1)
    return topology.load(out)


def simulate(street, names_or_scenario, seed=3, hold=False):
    sc = (names_or_scenario if isinstance(names_or_scenario, scenarios.Scenario)
          else scenarios.combine([scenarios.load(n) for n in names_or_scenario]))
    clock = VirtualClock(T0)
    links: dict[str, LoopbackLink] = {}

    def factory(spec, on_lost):
        links[spec.id] = LoopbackLink(spec, on_lost)
        links[spec.id].hold = hold
        return links[spec.id]

    truth = Truth()
    engine = Engine(street, clock=clock, seed=seed, truth=truth, link_factory=factory,
                    models=sc.devices, uplink=sc.uplink)
    timeline.plan(engine, sc, seed)
    run_virtual(engine, clock, T0 + int(sc.span_s() * 1000))
    engine.finish()
    truth.close()
    return engine, truth.records, links


def alarms_of(records, incident):
    end = next(r for r in records if r["kind"] == "incident_end" and r["id"] == incident)
    return end["alarms"]


# --- the clock ---

def test_scaled_clock_runs_speed_times_real_time():
    now = [100.0]
    clock = ScaledClock(T0, speed=60, monotonic=lambda: now[0])
    now[0] += 1.5
    assert clock.now_ms() == T0 + 90_000          # 1.5 real s = 90 simulated s
    assert clock.real_delay_s(T0 + 150_000) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ScaledClock(T0, speed=0)


def test_a_fast_run_never_stamps_the_future():
    # 1 h at speed 60 takes 60 real s: it starts 59 min in the past and ends on the wall time.
    assert start_for(3_600_000, 60, wall_ms=T0) == T0 - 3_600_000 + 60_000


# --- determinism and the protocol ---

def test_same_seed_same_run_to_the_millisecond(street):
    _, first, _ = simulate(street, ["fire", "cooking", "hostile"], seed=11)
    _, again, _ = simulate(street, ["fire", "cooking", "hostile"], seed=11)
    _, other, _ = simulate(street, ["fire", "cooking", "hostile"], seed=12)
    assert first == again
    assert first != other


def test_every_message_decodes_as_ingest_expects(street):
    engine, records, links = simulate(street, ["fire", "cooking", "outage", "hostile"])
    decoder = Decoder(prefix="fg/v1", max_payload_bytes=64 * 1024, max_future_skew_s=300,
                      max_age_days=30)
    published = {(r["topic"], r["ts"], r["seq"]): r for r in records if r["kind"] == "published"}
    reasons, stored = [], set()
    for link in links.values():
        for topic, payload in link.sent:
            out = decoder.decode(topic, payload, received_ms=engine.clock.now_ms())
            stored |= {(row.device_id, row.ts_ms, row.seq) for row in out.readings + out.events}
            reasons += [d.reason for d in out.dead]
    assert stored == expected_rows(records)
    expected = sorted(r["reason"] for r in published.values() if r["expect"] == "dead_letter")
    assert sorted(reasons) == expected == sorted(
        ["invalid_json", "schema", "oversized", "bad_device_id", "future_timestamp"])


# --- the scenarios' physics ---

def test_fire_alarms_room_first_then_floor_then_building(street):
    engine, records, _ = simulate(street, ["fire"], seed=5)
    fire = next(r for r in records if r["kind"] == "incident" and r["what"] == "fire")
    floor_of = {d.id: d.floor for d in street.devices}
    alarms = [a for a in alarms_of(records, "fire-1") if a[1] == "alarm"]
    assert alarms[0][0] == fire["origin"]
    # Smoke fills the building floor by floor; floors far below may stay clear until it is out.
    assert len({a[0] for a in alarms}) > len(fire["detectors"]) // 2
    same = [a[2] for a in alarms[1:] if floor_of[a[0]] == fire["floor"]]
    other = [a[2] for a in alarms if floor_of[a[0]] != fire["floor"]]
    assert other and max(same, default=alarms[0][2]) < min(other)
    # within minutes, not seconds or hours
    assert 60_000 < max(a[2] for a in alarms) - fire["ts"] < 3_600_000
    seen = [a for a in alarms_of(records, "fire-1") if a[1] == "smoke_detected"]
    assert [a[0] for a in seen] == fire["cameras"] and seen[0][2] > alarms[0][2]
    # the smoke clears after the fire is out, and every alarm with it
    clears = [r for r in records if r["kind"] == "published"
              and "alarm_clear" in {e[3] for e in r.get("entries", [])} | {r["type"]}]
    assert clears


@pytest.mark.parametrize("seed", range(6))
def test_fire_order_holds_for_any_seed(street, seed):
    _, records, _ = simulate(street, ["fire"], seed=seed)
    fire = next(r for r in records if r["kind"] == "incident")
    floor_of = {d.id: d.floor for d in street.devices}
    alarms = [a for a in alarms_of(records, "fire-1") if a[1] == "alarm"]
    assert alarms[0][0] == fire["origin"]
    ranks = [0 if a[0] == fire["origin"] else 1 if floor_of[a[0]] == fire["floor"] else 2
             for a in alarms]
    assert ranks == sorted(ranks)


def test_cooking_alarms_one_detector_and_clears(street):
    engine, records, _ = simulate(street, ["cooking"])
    incident = next(r for r in records if r["kind"] == "incident")
    events = [(r["device"], r["type"]) for r in records
              if r["kind"] == "published" and r["type"] not in ("smoke_status", "camera_status",
                                                                "gateway")]
    for r in records:
        if r["kind"] == "published" and r["type"] == "gateway":
            events += [(e[0], e[3]) for e in r["entries"] if e[3] != "smoke_status"]
    assert events == [(incident["origin"], "alarm"), (incident["origin"], "mute"),
                      (incident["origin"], "alarm_clear")]


def test_outage_buffers_then_flushes_in_a_burst(street):
    engine, records, _ = simulate(street, ["outage"])
    outage = next(r for r in records if r["kind"] == "incident")
    offline = set(outage["devices"])
    late = [r for r in records if r["kind"] == "published" and r["device"] in offline
            and outage["ts"] <= r["ts"] < outage["ends_ts"]]
    assert late, "the offline devices produced nothing during the outage"
    assert all(r["sent_at"] >= outage["ends_ts"] for r in late)
    # back within the backoff cap of the network's return
    assert max(r["sent_at"] for r in late) < outage["ends_ts"] + 300_000 + 60_000
    assert engine.stats.dropped == 0 and engine.stats.connect_failures > 0
    assert not [r for r in records if r["kind"] == "unacked"]


# --- the uplink ---

def msg(kind="smoke_status", channel="telemetry", critical=False, ts=T0) -> Outgoing:
    return Outgoing("SD1", channel, kind, ts, ts % 1000, b"{}", {}, critical=critical)


def test_a_full_buffer_drops_old_telemetry_never_alarms():
    up = Uplink("SD1", UplinkConfig(buffer_max=3), random.Random(1))
    alarm = msg("alarm", "event", critical=True)
    for m in [msg(ts=T0 + i) for i in range(3)] + [alarm, msg(ts=T0 + 9)]:
        up.queue(m)
    assert [m.ts for m in up.buffer] == [T0 + 2, T0, T0 + 9]
    assert alarm in up.buffer and [m.ts for m in up.dropped] == [T0, T0 + 1]


def test_unacknowledged_alarm_is_resent_with_the_same_bytes(street):
    engine, records, links = simulate(street, ["cooking"], hold=True)
    incident = next(r for r in records if r["kind"] == "incident")
    device = incident["origin"]
    via = next(d.gateway_id for d in street.devices if d.id == device) or device
    sent = [p for t, p in links[via].sent if b'"alarm"' in p]
    assert len(sent) > 3 and len(set(sent)) == 1       # resent every 30 s, byte for byte
    assert engine.stats.resent >= len(sent) - 1
    unacked = [r for r in records if r["kind"] == "unacked"]
    assert unacked and all(r["sent"] for r in unacked)
    # Described as `published` lines are, so a test can tell which deliveries are uncertain.
    published = {(r["topic"], r["ts"], r["seq"]) for r in records if r["kind"] == "published"}
    assert {(r["topic"], r["ts"], r["seq"]) for r in unacked} <= published


def test_lost_connection_requeues_in_order_and_backs_off():
    up = Uplink("SD1", UplinkConfig(backoff_min_s=2, backoff_max_s=60), random.Random(1))
    up.connected(T0)
    for i in range(3):
        up.queue(msg(ts=T0 + i))
    taken = up.take(T0)
    up.acked(taken[0])
    up.lost(T0 + 1000)
    assert [m.ts for m in up.buffer] == [T0 + 1, T0 + 2]
    waits = []
    now = T0 + 1000
    for _ in range(8):
        waits.append(up.next_attempt_ms - now)
        now = up.next_attempt_ms
        up.connect_failed(now)
    assert waits[0] >= 1000 and max(waits) <= 60_000 and waits[-1] >= 30_000


# --- the format ---

def test_scenario_errors_name_the_file_and_field(tmp_path: Path, street):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[fire]]\nat = "10 minutes"\n[[outage]]\nat = 1\nduration = 5\n')
    with pytest.raises(ScenarioError) as err:
        scenarios.load(bad)
    assert "bad.toml: fire[0].at:" in str(err.value)
    assert "bad.toml: outage[0]:" in str(err.value) and "who goes offline" in str(err.value)
    with pytest.raises(ScenarioError, match="built-in ones are battery, cooking, fire, flapping, "
                                            "flood, hostile, outage, tamper"):
        scenarios.load("no-such")
    typo = scenarios.parse({"fire": [{"at": 1, "building": "B99999"}]})
    with pytest.raises(ScenarioError, match="fire-1.building: no building 'B99999'"):
        simulate(street, typo)
    with pytest.raises(ScenarioError, match=r"unexpected|Extra inputs"):
        scenarios.parse({"fire": [{"at": 1, "bulding": "B00001"}]})


def test_scenarios_combine(street):
    both = scenarios.combine([scenarios.load("fire"), scenarios.load("outage")])
    assert len(both.fire) == 1 and len(both.outage) == 1
    assert both.devices.smoke_heartbeat_s == 300 and both.name == "fire+outage"
    assert both.span_s() >= scenarios.load("outage").span_s()
