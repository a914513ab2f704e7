"""The tamper, battery, flapping and flood scenarios on the virtual clock: what each device
sends, when, and that the ground truth says so. No broker, no sleeping; every payload goes
through ingest's own decoder."""

from __future__ import annotations

import itertools
import json

import pytest

from protocol.decode import Decoder
from simulators import scenarios
from simulators.errors import ScenarioError
from simulators.scenarios import MAX_SPAN_S
from simulators.truth import expected_rows
from tests.test_sim_models import T0, simulate, street  # noqa: F401  (street is a fixture)


def sent_by(links, device_id: str) -> list[dict]:
    """Every message of one device as it left (directly or inside a gateway batch), decoded,
    in sending order; each with the `topic` it went out on."""
    out = []
    for link in links.values():
        for topic, payload in link.sent:
            msg = json.loads(payload)
            if topic.split("/")[-2] == device_id:
                out.append({**msg, "topic": topic})
            for entry in msg.get("entries", []):
                if entry.get("device_id") == device_id:
                    out.append({**entry, "topic": topic})
    return out


def incident(records, what: str, n: int = 1) -> dict:
    return [r for r in records if r["kind"] == "incident" and r["what"] == what][n - 1]


def incident_end(records, incident_id: str) -> dict:
    return next(r for r in records if r["kind"] == "incident_end" and r["id"] == incident_id)


def events(msgs: list[dict], *types: str) -> list[dict]:
    return sorted((m for m in msgs if m["type"] in types), key=lambda m: m["ts"])


# --- tamper ---------------------------------------------------------------------------------

def test_tamper_removes_and_restores_a_detector_and_covers_a_camera(street):
    engine, records, links = simulate(street, ["tamper"])
    tamper = incident(records, "tamper")
    states = [(e["state"], e["ts"]) for e in events(sent_by(links, tamper["device"]), "tamper")]
    assert states == [("removed", tamper["ts"]), ("restored", tamper["ends_ts"])]
    assert [e[1] for e in incident_end(records, tamper["id"])["events"]] == ["tamper", "tamper"]

    cover = incident(records, "occlusion")
    assert next(d for d in street.devices if d.id == cover["device"]).kind == "camera"
    active = [(e["active"], e["ts"]) for e in events(sent_by(links, cover["device"]), "occlusion")]
    assert active == [(True, cover["ts"]), (False, cover["ends_ts"])]
    # heartbeats go on throughout: the detector is off its base, not dead
    beats = [m["ts"] for m in sent_by(links, cover["device"]) if m["type"] == "camera_status"]
    assert any(cover["ts"] < ts < cover["ends_ts"] for ts in beats)


def test_an_occluded_camera_sees_no_fire(street):
    fire = scenarios.load("fire")
    building = next(d.building for d in street.devices if d.kind == "camera")
    camera = next(d.id for d in street.devices if d.kind == "camera" and d.building == building)
    blind = scenarios.parse({"fire": [fire.fire[0].model_dump() | {"building": building}],
                             "occlusion": [{"at": "1m", "device": camera, "duration": "1h"}]})
    _, records, links = simulate(street, blind)
    assert not events(sent_by(links, camera), "smoke_detected", "fire_detected")
    assert [a for a in incident_end(records, "fire-1")["alarms"] if a[0] == camera] == []


# --- battery --------------------------------------------------------------------------------

def test_battery_runs_down_to_low_battery_then_silence(street):
    engine, records, links = simulate(street, ["battery"])
    battery = incident(records, "battery")
    assert battery["ends_ts"] - battery["ts"] == 2 * 86_400_000
    assert scenarios.load("battery").span_s() <= MAX_SPAN_S
    msgs = sent_by(links, battery["device"])
    levels = [m["battery_pct"] for m in msgs if m["type"] == "smoke_status"
              and m["ts"] >= battery["ts"]]
    assert levels == sorted(levels, reverse=True) and levels[0] >= 28 and levels[-1] <= 1
    low = events(msgs, "low_battery")
    assert len(low) == 1 and low[0]["battery_pct"] <= 20
    assert battery["low_ts"] <= low[0]["ts"] < battery["low_ts"] + 2 * 3600_000
    # dead: nothing at or after the moment it is empty, and the truth says it died
    last = max(m["ts"] for m in msgs)
    assert last < battery["ends_ts"] and battery["ends_ts"] - last < 2 * 3600_000
    end = incident_end(records, battery["id"])
    assert end["dead"] and end["ts"] == battery["ends_ts"]
    assert end["events"] == [[battery["device"], "low_battery", low[0]["ts"]]]
    # everyone else goes on
    others = [r for r in records if r["kind"] == "published" and r["device"] != battery["device"]
              and r["ts"] > battery["ends_ts"]]
    assert others


def test_a_dead_device_with_its_own_connection_closes_it(street):
    own = next(d.id for d in street.devices if d.kind == "smoke_detector" and not d.gateway_id)
    sc = scenarios.parse({"battery": [{"at": 0, "device": own, "level": 25,
                                       "empty_after": "6h"}]})
    engine, records, links = simulate(street, sc)
    assert not links[own].open and engine.uplinks[own].state == "off"
    assert engine.stats.connected == len(engine.uplinks) - 1
    assert engine.stats.connect_failures == 0          # it never tries to come back
    assert max(r["ts"] for r in records if r["kind"] == "published"
               and r["device"] == own) < incident(records, "battery")["ends_ts"]


# --- flapping -------------------------------------------------------------------------------

def test_flapping_connection_drops_and_comes_back_every_few_minutes(street):
    engine, records, links = simulate(street, ["flapping"])
    flap = incident(records, "flapping", 1)
    assert flap["connection"] and not flap["alarm"]
    drops = flap["flaps"]
    assert len(drops) >= 4
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(drops)]
    assert all(60_000 <= g <= 5 * 60_000 for g in gaps)             # every few minutes
    assert all(5_000 <= end - begin <= 30_000 for begin, end in drops)
    assert engine.stats.connections_lost == len(drops)
    assert incident_end(records, flap["id"])["flaps"] == len(drops)
    sent = [r for r in records if r["kind"] == "published" and r["device"] == flap["device"]]
    assert sent
    for begin, end in drops:
        # nothing goes out while it is cut off; what it made meanwhile goes out after
        assert not [r for r in sent if begin <= r["sent_at"] < end]
        assert all(r["sent_at"] >= end for r in sent if begin <= r["ts"] < end)
    assert not [r for r in records if r["kind"] in ("unacked", "dropped")]


def test_flapping_alarm_alternates_alarm_and_clear(street):
    _, records, links = simulate(street, ["flapping"])
    flap = incident(records, "flapping", 2)
    assert flap["alarm"] and not flap["connection"]
    got = [(e["type"], e["ts"]) for e in events(sent_by(links, flap["device"]),
                                                "alarm", "alarm_clear")]
    want = [x for begin, end in flap["flaps"] for x in (("alarm", begin), ("alarm_clear", end))]
    assert got == want and len(flap["flaps"]) >= 2
    end = incident_end(records, flap["id"])
    assert [a[2] for a in end["alarms"]] == [b for b, _ in flap["flaps"]]


# --- flood ----------------------------------------------------------------------------------

def test_flood_publishes_valid_messages_far_above_the_normal_rate(street):
    engine, records, links = simulate(street, ["flood"])
    flood = incident(records, "flood")
    mine = [r for r in records if r["kind"] == "published" and r.get("incident") == flood["id"]]
    assert len(mine) == flood["messages"] == 2400
    assert incident_end(records, flood["id"])["messages"] == 2400
    assert {r["device"] for r in mine} == {flood["device"]}
    assert all(r["expect"] == "stored" and r["type"] == "smoke_status" for r in mine)
    ts = [r["ts"] for r in mine]
    assert ts == sorted(ts) and set(b - a for a, b in itertools.pairwise(ts)) == {50}
    assert flood["ts"] <= ts[0] and ts[-1] < flood["ends_ts"]
    seqs = [r["seq"] for r in mine]
    assert len(set(seqs)) == len(seqs)                    # every one a distinct row
    # the device's own heartbeat goes on beside it: once an hour, not 20 times a second
    normal = [r for r in records if r["kind"] == "published" and r["device"] == flood["device"]
              and "incident" not in r]
    assert len(normal) <= 2


# --- all of them ----------------------------------------------------------------------------

NEW = ["tamper", "battery", "flapping", "flood"]


def test_new_scenarios_speak_protocol_v1_and_are_stored_as_the_truth_says(street):
    engine, records, links = simulate(street, NEW)
    decoder = Decoder(prefix="fg/v1", max_payload_bytes=64 * 1024, max_future_skew_s=300,
                      max_age_days=30)
    stored, dead = set(), []
    for link in links.values():
        for topic, payload in link.sent:
            out = decoder.decode(topic, payload, received_ms=engine.clock.now_ms())
            stored |= {(row.device_id, row.ts_ms, row.seq) for row in out.readings + out.events}
            dead += out.dead
    assert not dead and stored == expected_rows(records)
    kinds = {r["what"] for r in records if r["kind"] == "incident"}
    assert kinds == {"tamper", "occlusion", "battery", "flapping", "flood"}
    ended = {r["id"] for r in records if r["kind"] == "incident_end"}
    assert ended == {r["id"] for r in records if r["kind"] == "incident"}


@pytest.mark.parametrize("name", NEW)
def test_new_scenarios_are_deterministic_per_seed(street, name):
    _, first, _ = simulate(street, [name], seed=21)
    _, again, _ = simulate(street, [name], seed=21)
    _, other, _ = simulate(street, [name], seed=22)
    assert first == again
    assert first != other


def test_new_tables_are_checked_before_a_run(street):
    with pytest.raises(ScenarioError, match="flapping\\[0\\]: .*say what flaps"):
        scenarios.parse({"flapping": [{"at": 1, "connection": False}]}, "f.toml")
    with pytest.raises(ScenarioError, match="battery\\[0\\].empty_after"):
        scenarios.parse({"battery": [{"at": 1, "empty_after": "8d"}]}, "b.toml")
    with pytest.raises(ScenarioError, match="tamper\\[0\\].state"):
        scenarios.parse({"tamper": [{"at": 1, "state": "stolen"}]}, "t.toml")
    camera = next(d.id for d in street.devices if d.kind == "camera")
    gateway = next(d.id for d in street.devices if d.kind == "gateway")
    behind = next(d.id for d in street.devices if d.gateway_id)
    for table, error in [({"battery": [{"at": 1, "device": camera}]}, "is a camera"),
                         ({"occlusion": [{"at": 1, "device": behind}]}, "not a camera"),
                         ({"flood": [{"at": 1, "device": behind}]}, "behind a gateway"),
                         ({"flood": [{"at": 1, "device": gateway}]}, "is a gateway"),
                         ({"flapping": [{"at": 1, "device": behind}]}, "behind a gateway"),
                         ({"flapping": [{"at": 1, "device": camera, "connection": False,
                                         "alarm": True}]}, "is a camera")]:
        with pytest.raises(ScenarioError, match=error):
            simulate(street, scenarios.parse(table))
