"""A scenario turned into timed actions on an engine, with every choice the file left open
(which building burns, which detector cooks, who goes offline) made from the seed. Names the
file gives are checked against the street first: a typo is a ScenarioError, not a quiet run
with nothing happening."""

from __future__ import annotations

import random

from simulators import hostile, world
from simulators.devices import Camera, SmokeDetector
from simulators.engine import Action, Engine
from simulators.errors import ScenarioError
from simulators.scenarios import Scenario
from simulators.topology import DeviceSpec, Topology


def plan(engine: Engine, scenario: Scenario, seed: int) -> None:
    rng = random.Random(f"{seed}:scenario")
    topo, start = engine.topology, engine.start_ms
    for n, spec in enumerate(scenario.fire, start=1):
        _fire(engine, topo, f"fire-{n}", spec, start + _ms(spec.at), rng)
    for n, spec in enumerate(scenario.cooking, start=1):
        _cooking(engine, topo, f"cooking-{n}", spec, start + _ms(spec.at), rng)
    for n, spec in enumerate(scenario.outage, start=1):
        _outage(engine, topo, f"outage-{n}", spec, start + _ms(spec.at), rng)
    for n, spec in enumerate(scenario.hostile, start=1):
        _hostile(engine, topo, f"hostile-{n}", spec, start + _ms(spec.at), rng)
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


def _fire(engine: Engine, topo: Topology, incident: str, spec, t0: int, rng: random.Random) -> None:
    if spec.device:
        origin = _device(topo, spec.device, f"{incident}.device", "smoke_detector")
        building = origin.building
    else:
        if spec.building:
            if spec.building not in topo.buildings:
                raise ScenarioError(f"{incident}.building: no building {spec.building!r}")
            building = spec.building
        else:
            # A building with detectors, preferably one a camera covers too.
            candidates = sorted({d.building for d in topo.devices if d.kind == "smoke_detector"})
            if not candidates:
                raise ScenarioError(f"{incident}: this street has no smoke detectors")
            covered = [b for b in candidates
                       if any(d.kind == "camera" for d in topo.in_building(b))]
            building = rng.choice(covered or candidates)
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


def _ender(incident: str):
    def end(e: Engine, t: int) -> None:
        facts = e.incidents.setdefault(incident, {"alarms": []})
        facts["ended"] = True
        alarms = sorted(facts["alarms"], key=lambda a: a[2])
        e.truth.write("incident_end", id=incident, ts=t, alarms=alarms,
                      first_alarm=alarms[0] if alarms else None)
    return end


def _cooking(engine: Engine, topo: Topology, incident: str, spec, t0: int,
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


def _outage(engine: Engine, topo: Topology, incident: str, spec, t0: int,
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


def _hostile(engine: Engine, topo: Topology, incident: str, spec, t0: int,
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
