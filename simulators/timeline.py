"""A scenario turned into timed actions on an engine, with every choice the file left open
(which building burns, which detector cooks, who goes offline) made from the seed. Names the
file gives are checked against the street first: a typo is a ScenarioError, not a quiet run
with nothing happening."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from simulators import hostile, world
from simulators.devices import Camera, SmokeDetector
from simulators.engine import Action, Engine
from simulators.errors import ScenarioError
from simulators.scenarios import (
    Battery,
    Cooking,
    Fire,
    Flapping,
    Flood,
    Hostile,
    Occlusion,
    Outage,
    Scenario,
    Tamper,
)
from simulators.topology import DeviceSpec, Topology


def plan(engine: Engine, scenario: Scenario, seed: int) -> None:
    rng = random.Random(f"{seed}:scenario")
    topo, start = engine.topology, engine.start_ms
    # In this order, always: the planners draw from one rng, so the order is part of what
    # makes a run the same for a seed.
    planners = (("fire", _fire), ("cooking", _cooking), ("outage", _outage),
                ("hostile", _hostile), ("tamper", _tamper), ("occlusion", _occlusion),
                ("battery", _battery), ("flapping", _flapping), ("flood", _flood))
    for name, planner in planners:
        for n, spec in enumerate(getattr(scenario, name), start=1):
            planner(engine, topo, f"{name}-{n}", spec, start + _ms(spec.at), rng)
    for n, spec in enumerate(scenario.event, start=1):
        device = _device(topo, spec.device, f"event[{n - 1}].device")
        engine.devices[device.id].schedule(start + _ms(spec.at), spec.type, **spec.fields)
        engine.reschedule(engine.devices[device.id])


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _device(topo: Topology, device_id: str, where: str, kind: str | None = None) -> DeviceSpec:
    for d in topo.devices:
        if d.id == device_id:
            if kind and d.kind != kind:
                raise ScenarioError(f"{where}: {device_id!r} is a {d.kind}, not a {kind}")
            return d
    raise ScenarioError(f"{where}: no device {device_id!r} in this street")


def _detectors(topo: Topology, building: str) -> list[DeviceSpec]:
    return [d for d in topo.in_building(building) if d.kind == "smoke_detector"]


def fire_building(topo: Topology, seed: int) -> str:
    """The building the first [[fire]] of a scenario burns when the file names none, for
    `seed`: what `firegrid simulate --seed N --scenario fire` will set alight, known before
    it runs (the demo prints who is on duty there). The fire planner draws first from the
    scenario's rng, and the building is its first draw."""
    return _fire_building(topo, "fire-1", random.Random(f"{seed}:scenario"))


def _fire_building(topo: Topology, incident: str, rng: random.Random) -> str:
    # A building with detectors, preferably one a camera covers too.
    candidates = sorted({d.building for d in topo.devices if d.kind == "smoke_detector"})
    if not candidates:
        raise ScenarioError(f"{incident}: this street has no smoke detectors")
    covered = [b for b in candidates if any(d.kind == "camera" for d in topo.in_building(b))]
    return rng.choice(covered or candidates)


def _fire(engine: Engine, topo: Topology, incident: str, spec: Fire, t0: int,
          rng: random.Random) -> None:
    if spec.device:
        origin = _device(topo, spec.device, f"{incident}.device", "smoke_detector")
        building = origin.building
    else:
        if spec.building:
            if spec.building not in topo.buildings:
                raise ScenarioError(f"{incident}.building: no building {spec.building!r}")
            building = spec.building
        else:
            building = _fire_building(topo, incident, rng)
        detectors = _detectors(topo, building)
        if not detectors:
            raise ScenarioError(f"{incident}.building: {building!r} has no smoke detector")
        floors = sorted({d.floor for d in detectors})
        if spec.floor is not None and spec.floor not in floors:
            raise ScenarioError(f"{incident}.floor: no detector on floor {spec.floor} of "
                                f"{building!r} (floors with one: {floors})")
        # Where neighbours exist, start where they can notice: a floor with several.
        crowded = [f for f in floors if sum(d.floor == f for d in detectors) > 1]
        floor = spec.floor or rng.choice(crowded or floors)
        origin = rng.choice([d for d in detectors if d.floor == floor])
    end = t0 + _ms(spec.duration)
    placements = [world.Placement(d.id, d.floor) for d in _detectors(topo, building)]
    source = world.spread_fire(incident, world.Placement(origin.id, origin.floor), placements,
                               t0, end, rng)
    cameras = [d.id for d in topo.in_building(building) if d.kind == "camera"]

    def ignite(e: Engine, t: int) -> None:
        e.truth.write("incident", id=incident, what="fire", ts=t, building=building,
                      floor=origin.floor, origin=origin.id, ends_ts=end,
                      detectors=sorted(source.reach), cameras=cameras)
        for device_id in source.reach:
            detector = e.devices[device_id]
            assert isinstance(detector, SmokeDetector)
            detector.watch(source)
            e.reschedule(detector)
        for cam_id in cameras:
            cam = e.devices[cam_id]
            assert isinstance(cam, Camera)
            fire_at = t + _ms(spec.camera_fire_after)
            cam.see_fire(incident, t + _ms(spec.camera_smoke_after) + rng.randint(0, 20_000),
                         fire_at if fire_at < end else None)
            e.reschedule(cam)

    engine.at(t0, Action(f"{incident} starts in {building}", ignite))
    engine.at(end + 900_000, Action(f"{incident} over", _ender(incident)))


def _ender(incident: str) -> Callable[[Engine, int], None]:
    def end(e: Engine, t: int) -> None:
        facts = e.incidents.setdefault(incident, {"alarms": []})
        facts["ended"] = True
        alarms = sorted(facts["alarms"], key=lambda a: a[2])
        e.truth.write("incident_end", id=incident, ts=t, alarms=alarms,
                      first_alarm=alarms[0] if alarms else None)
    return end


def _cooking(engine: Engine, topo: Topology, incident: str, spec: Cooking, t0: int,
             rng: random.Random) -> None:
    if spec.device:
        device = _device(topo, spec.device, f"{incident}.device", "smoke_detector")
    else:
        device = rng.choice([d for d in topo.devices if d.kind == "smoke_detector"])
    end = t0 + _ms(spec.duration)
    source = world.cooking(incident, device.id, t0, end, rng, mute_after_s=spec.mute_after)

    def start(e: Engine, t: int) -> None:
        e.truth.write("incident", id=incident, what="cooking", ts=t, building=device.building,
                      floor=device.floor, origin=device.id, ends_ts=end, false_alarm=True)
        detector = e.devices[device.id]
        assert isinstance(detector, SmokeDetector)
        detector.watch(source)
        e.reschedule(detector)

    engine.at(t0, Action(f"{incident} at {device.id}", start))
    engine.at(end + 300_000, Action(f"{incident} over", _ender(incident)))


def _outage(engine: Engine, topo: Topology, incident: str, spec: Outage, t0: int,
            rng: random.Random) -> None:
    for b in spec.buildings:
        if b not in topo.buildings:
            raise ScenarioError(f"{incident}.buildings: no building {b!r}")
    for d in spec.devices:
        _device(topo, d, f"{incident}.devices")
    connected = [d.id for d in topo.devices if d.gateway_id is None]
    chosen = set(spec.devices)
    chosen |= {d.id for d in topo.devices if d.building in spec.buildings
               or d.community == spec.community}
    if spec.fraction:
        chosen |= set(rng.sample(connected, max(1, round(spec.fraction * len(connected)))))
    ids = sorted(i for i in chosen if i in engine.uplinks)
    end = t0 + _ms(spec.duration)

    def down(e: Engine, t: int) -> None:
        e.truth.write("incident", id=incident, what="outage", ts=t, ends_ts=end, devices=ids)
        e.set_network(ids, False, t)

    def up(e: Engine, t: int) -> None:
        e.set_network(ids, True, t)
        e.truth.write("incident_end", id=incident, ts=t)
        e.incidents.setdefault(incident, {"alarms": []})["ended"] = True

    engine.at(t0, Action(f"{incident}: {len(ids)} devices offline", down))
    engine.at(end, Action(f"{incident}: back", up))


def _hostile(engine: Engine, topo: Topology, incident: str, spec: Hostile, t0: int,
             rng: random.Random) -> None:
    if spec.device:
        device = _device(topo, spec.device, f"{incident}.device")
        if device.gateway_id:
            raise ScenarioError(f"{incident}.device: {device.id!r} is behind a gateway; "
                                "pick a device with its own connection")
    else:
        device = rng.choice([d for d in topo.devices
                             if d.gateway_id is None and d.kind == "smoke_detector"])

    def burst(e: Engine, t: int) -> None:
        if incident not in e.incidents:
            e.incidents[incident] = {"alarms": [], "ended": True}
            e.truth.write("incident", id=incident, what="hostile", ts=t, device=device.id,
                          kinds=list(spec.kinds), rounds=spec.rounds)
        for kind in spec.kinds:
            e.send(device.id, hostile.misbehave(e.devices[device.id], kind, t, incident))

    for r in range(spec.rounds):
        engine.at(t0 + _ms(spec.every) * r, Action(f"{incident} round {r + 1}", burst))


def _pick(topo: Topology, device_id: str | None, where: str, rng: random.Random, *,
          kind: str | None = None, own_connection: bool = False) -> DeviceSpec:
    """The device a table names (checked), or one chosen from the seed."""
    if device_id:
        device = _device(topo, device_id, where, kind)
        if own_connection and device.gateway_id:
            raise ScenarioError(f"{where}: {device.id!r} is behind a gateway; "
                                "pick a device with its own connection")
        return device
    fits = [d for d in topo.devices if (kind is None or d.kind == kind)
            and not (own_connection and d.gateway_id)]
    if not fits:
        own = " with its own connection" if own_connection else ""
        raise ScenarioError(f"{where}: this street has no {kind or 'device'}{own}")
    return rng.choice(fits)


def _ender_with_events(incident: str, **extra: Any) -> Callable[[Engine, int], None]:
    """incident_end for incidents whose story is the events they caused (tamper, battery...)."""
    def end(e: Engine, t: int) -> None:
        facts = e.incidents.setdefault(incident, {"alarms": []})
        facts["ended"] = True
        e.truth.write("incident_end", id=incident, ts=t, alarms=facts["alarms"],
                      events=facts.get("events", []), **extra)
    return end


def _scripted(engine: Engine, device_id: str, t: int, kind: str, **fields: Any) -> None:
    device = engine.devices[device_id]
    device.schedule(t, kind, **fields)
    engine.reschedule(device)


def _tamper(engine: Engine, topo: Topology, incident: str, spec: Tamper, t0: int,
            rng: random.Random) -> None:
    """Taken off its base (or its housing opened) at t0, put back `duration` later."""
    device = _pick(topo, spec.device, f"{incident}.device", rng,
                   kind=None if spec.device else "smoke_detector")
    if device.kind == "gateway":
        raise ScenarioError(f"{incident}.device: {device.id!r} is a gateway; tamper is sent "
                            "by smoke detectors and cameras")
    end = t0 + _ms(spec.duration) if spec.duration is not None else None
    _scripted(engine, device.id, t0, "tamper", state=spec.state, incident=incident)
    if end is not None:
        _scripted(engine, device.id, end, "tamper", state="restored", incident=incident)

    def start(e: Engine, t: int) -> None:
        e.incidents.setdefault(incident, {"alarms": []})
        e.truth.write("incident", id=incident, what="tamper", ts=t, device=device.id,
                      building=device.building, floor=device.floor, state=spec.state,
                      ends_ts=end)

    engine.at(t0, Action(f"{incident}: {device.id} {spec.state}", start))
    if end is not None:
        engine.at(end + 1, Action(f"{incident}: {device.id} restored",
                                  _ender_with_events(incident)))


def _occlusion(engine: Engine, topo: Topology, incident: str, spec: Occlusion, t0: int,
               rng: random.Random) -> None:
    """A camera's lens blocked (or its video lost) at t0, clear again `duration` later."""
    camera = _pick(topo, spec.device, f"{incident}.device", rng, kind="camera")
    end = t0 + _ms(spec.duration) if spec.duration is not None else None
    _scripted(engine, camera.id, t0, spec.kind, active=True, incident=incident)
    if end is not None:
        _scripted(engine, camera.id, end, spec.kind, active=False, incident=incident)

    def start(e: Engine, t: int) -> None:
        e.incidents.setdefault(incident, {"alarms": []})
        e.truth.write("incident", id=incident, what=spec.kind, ts=t, device=camera.id,
                      building=camera.building, ends_ts=end)

    engine.at(t0, Action(f"{incident}: {camera.id} {spec.kind}", start))
    if end is not None:
        engine.at(end + 1, Action(f"{incident}: {camera.id} clear", _ender_with_events(incident)))


def _battery(engine: Engine, topo: Topology, incident: str, spec: Battery, t0: int,
             rng: random.Random) -> None:
    """A detector's battery at `level` % from t0, empty `empty_after` later: low_battery when
    it crosses the threshold (at a heartbeat), then silence: a dead device sends nothing."""
    device = _pick(topo, spec.device, f"{incident}.device", rng, kind="smoke_detector")
    empty = t0 + _ms(spec.empty_after)
    detector = engine.devices[device.id]
    assert isinstance(detector, SmokeDetector)
    threshold = detector.config.low_battery_pct
    # When the heartbeats' battery level crosses the threshold (linear drain).
    low_ts = t0 if spec.level <= threshold else int(
        t0 + (empty - t0) * (1 - threshold / spec.level))

    def start(e: Engine, t: int) -> None:
        e.incidents.setdefault(incident, {"alarms": []})
        e.truth.write("incident", id=incident, what="battery", ts=t, device=device.id,
                      building=device.building, level=spec.level, low_pct=threshold,
                      low_ts=low_ts, ends_ts=empty)
        detector.drain_to_empty(t, spec.level, empty, incident)
        e.reschedule(detector)

    def dies(e: Engine, t: int) -> None:
        e.power_off(device.id, t)
        _ender_with_events(incident, dead=True)(e, t)

    engine.at(t0, Action(f"{incident}: {device.id} at {spec.level:g} %", start))
    engine.at(empty, Action(f"{incident}: {device.id} dead", dies))


def _flapping(engine: Engine, topo: Topology, incident: str, spec: Flapping, t0: int,
              rng: random.Random) -> None:
    """Every `up` (±50 %) the connection drops and/or the alarm goes off, for `down` (±50 %)."""
    device = _pick(topo, spec.device, f"{incident}.device", rng,
                   kind="smoke_detector" if spec.alarm or not spec.device else None,
                   own_connection=spec.connection)
    if spec.alarm and device.kind != "smoke_detector":
        raise ScenarioError(f"{incident}.device: {device.id!r} is a {device.kind}; only a "
                            "smoke detector's alarm can flap")
    end = t0 + _ms(spec.duration)
    flaps: list[list[int]] = []
    t = t0
    while True:
        begin = t + int(_ms(spec.up) * rng.uniform(0.5, 1.5))
        if begin >= end:
            break
        t = min(end, begin + max(1000, int(_ms(spec.down) * rng.uniform(0.5, 1.5))))
        flaps.append([begin, t])
    detector = engine.devices[device.id]
    if spec.alarm:
        threshold = detector.config.alarm_db_m
        for begin, finish in flaps:
            detector.schedule(begin, "alarm", incident=incident,
                              obscuration_db_m=round(threshold * rng.uniform(1.0, 1.3), 3))
            detector.schedule(finish, "alarm_clear", incident=incident)
        engine.reschedule(detector)

    def start(e: Engine, t: int) -> None:
        e.incidents.setdefault(incident, {"alarms": []})
        e.truth.write("incident", id=incident, what="flapping", ts=t, device=device.id,
                      building=device.building, connection=spec.connection, alarm=spec.alarm,
                      flaps=flaps, ends_ts=end)

    def drop(e: Engine, t: int) -> None:
        e.set_network([device.id], False, t)

    def back(e: Engine, t: int) -> None:
        e.set_network([device.id], True, t)

    engine.at(t0, Action(f"{incident}: {device.id} starts flapping", start))
    if spec.connection:
        for begin, finish in flaps:
            engine.at(begin, Action(f"{incident}: {device.id} drops", drop))
            engine.at(finish, Action(f"{incident}: {device.id} back", back))
    engine.at(end + 1, Action(f"{incident} over", _ender_with_events(incident, flaps=len(flaps))))


def _flood(engine: Engine, topo: Topology, incident: str, spec: Flood, t0: int,
           rng: random.Random) -> None:
    """Valid status messages at `rate` per simulated second from one device (a firmware stuck
    in its send loop): stored by ingest, and a load the broker and ingest must shrug off."""
    device = _pick(topo, spec.device, f"{incident}.device", rng,
                   kind=None if spec.device else "smoke_detector", own_connection=True)
    if device.kind == "gateway":
        raise ScenarioError(f"{incident}.device: {device.id!r} is a gateway; pick a smoke "
                            "detector or a camera")
    end = t0 + _ms(spec.duration)
    every = max(1, int(1000 / spec.rate))

    def start(e: Engine, t: int) -> None:
        e.incidents.setdefault(incident, {"alarms": []})
        e.truth.write("incident", id=incident, what="flood", ts=t, device=device.id,
                      rate=spec.rate, ends_ts=end, messages=-(-(end - t) // every))
        flooder = e.devices[device.id]
        flooder.flood(t, end, every, incident)
        e.reschedule(flooder)

    def over(e: Engine, t: int) -> None:
        facts = e.incidents.setdefault(incident, {"alarms": []})
        facts["ended"] = True
        e.truth.write("incident_end", id=incident, ts=t, messages=facts.get("messages", 0))

    engine.at(t0, Action(f"{incident}: {device.id} floods", start))
    engine.at(end + 1, Action(f"{incident} over", over))
