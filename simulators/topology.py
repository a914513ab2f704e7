"""A deterministic street: hierarchy, buildings, devices, workers and a roster, written as the
CSV files `firegrid devices import` reads (docs/field-guide.md).

The same seed gives the same street, ids and passwords, so tests, benchmarks and demos can
regenerate it instead of committing 20,000-row files. Presets:

    street  one street office's real deployment: 3 urban villages, 18,064 smoke detectors
            in 3,441 buildings and 3,673 camera channels in 3,537 buildings (mostly the
            same buildings), grids of 300-500 households, their workers and a week's roster.
    small   one village with a handful of grids, for demos and tests.
    tiny    four buildings, 40 detectors (one building's behind a gateway), 3 cameras: the
            simulator tests' street, small enough to connect every device in a second.

`load(dir)` reads the files back (as the simulators need them: id, kind, building, floor,
community, heartbeat, password, gateway), so a street registered from CSVs that were not
generated here can be simulated too.

Passwords generated here are for simulated devices only: they come from the seed.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from simulators.errors import TopologyError


@dataclass(frozen=True)
class Preset:
    communities: int
    smoke_buildings: int
    smoke_detectors: int
    camera_buildings: int
    cameras: int
    both_buildings: int       # buildings with detectors and cameras
    households_per_grid: tuple[int, int] = (300, 500)
    gateways: int = 0         # buildings whose detectors report through a gateway


PRESETS = {
    # Union = 3,441 + 3,537 - 3,078 = 3,900 buildings.
    "street": Preset(communities=3, smoke_buildings=3441, smoke_detectors=18064,
                     camera_buildings=3537, cameras=3673, both_buildings=3078),
    "small": Preset(communities=1, smoke_buildings=40, smoke_detectors=200,
                    camera_buildings=30, cameras=36, both_buildings=25),
    "tiny": Preset(communities=1, smoke_buildings=4, smoke_detectors=40,
                   camera_buildings=3, cameras=3, both_buildings=3, gateways=1),
}
USES = ["rental"] * 6 + ["residential"] * 2 + ["shop", "mixed", "workshop"]
ZONE = ZoneInfo("Asia/Shanghai")

# A generated building: (community index, building_id, floors, households, use, lat, lon).
_BuildingRow = tuple[int, str, int, int, str, float, float]


def generate(out: Path, preset: str = "street", seed: int = 1, week_of: datetime | None = None,
             *, id_prefix: str = "") -> dict[str, Path]:
    """Write hierarchy.csv, workers.csv, roster.csv and devices.csv into `out`.

    id_prefix goes in front of every device id (`t42-SD000001`), so several streets can share
    one broker's accounts (tests on one broker, two sites' demos); the rest of the street,
    passwords included, is the same as without it."""
    p = PRESETS[preset]
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    total = p.smoke_buildings + p.camera_buildings - p.both_buildings
    # Which buildings get what: the first smoke_buildings have detectors, the last
    # camera_buildings have cameras; the overlap is the middle.
    has_smoke = [i < p.smoke_buildings for i in range(total)]
    has_camera = [i >= total - p.camera_buildings for i in range(total)]

    buildings: list[_BuildingRow] = []
    per_community = math.ceil(total / p.communities)
    for i in range(total):
        c = i // per_community
        floors = rng.choice([4, 5, 6, 6, 7, 7, 8, 9])
        # Urban-village "handshake buildings": a few flats per floor, lat/lon around Futian.
        buildings.append((c, f"B{i + 1:05d}", floors, floors * rng.randint(2, 5),
                          rng.choice(USES), 22.52 + c * 0.01 + rng.random() * 0.008,
                          114.05 + rng.random() * 0.008))

    files = {name: out / f"{name}.csv" for name in ("hierarchy", "workers", "roster", "devices")}
    grids = _write_hierarchy(files["hierarchy"], buildings, p, rng)
    _write_people(files["workers"], files["roster"], grids, p.communities, week_of)
    _write_devices(files["devices"], buildings, has_smoke, has_camera, p, rng, id_prefix)
    return files


def _write_hierarchy(path: Path, buildings: list[_BuildingRow], p: Preset,
                     rng: random.Random) -> dict[str, list[str]]:
    """Cut each community's buildings into grids of 300-500 households."""
    grids: dict[str, list[str]] = {}   # community id -> grid ids
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["street_id", "street_name", "community_id", "community_name", "grid_id",
                    "grid_name", "grid_households", "building_id", "address", "lat", "lon",
                    "floors", "households", "use"])
        rows, current, households, target = [], [], 0, rng.randint(*p.households_per_grid)
        for index, b in enumerate(buildings):
            current.append(b)
            households += b[3]
            last = index + 1 == len(buildings) or buildings[index + 1][0] != b[0]
            if households >= target or last:
                community = f"C{b[0] + 1}"
                grid = f"{community}-G{len(grids.setdefault(community, [])) + 1:02d}"
                grids[community].append(grid)
                rows += [(community, grid, households, x) for x in current]
                current, households, target = [], 0, rng.randint(*p.households_per_grid)
        for community, grid, grid_households, (c, bid, floors, hh, use, lat, lon) in rows:
            w.writerow(["S1", "福田街道", community, f"第{c + 1}城中村社区", grid,
                        f"{grid}网格", grid_households, bid, f"{community}村{bid[1:]}号楼",
                        f"{lat:.6f}", f"{lon:.6f}", floors, hh, use])
    return grids


def _write_people(workers_path: Path, roster_path: Path, grids: dict[str, list[str]],
                  communities: int, week_of: datetime | None) -> None:
    """Two grid workers and a leader per grid, a technician per ten grids, two duty officers
    per community and two at the street; a week of shifts."""
    people: list[tuple[str, str, str, str]] = []  # id, name, role, areas
    all_grids = [g for gs in grids.values() for g in gs]
    for g in all_grids:
        people += [(f"{g}-W1", f"网格员{g}-1", "grid_worker", g),
                   (f"{g}-W2", f"网格员{g}-2", "grid_worker", g),
                   (f"{g}-L", f"网格长{g}", "grid_leader", g)]
    for i in range(0, len(all_grids), 10):
        people.append((f"T{i // 10 + 1:03d}", f"维保{i // 10 + 1}", "field_technician",
                       ";".join(all_grids[i:i + 10])))
    for c in range(1, communities + 1):
        people += [(f"C{c}-D{k}", f"社区值班{c}-{k}", "community_duty", f"C{c}") for k in (1, 2)]
    people += [(f"S1-D{k}", f"街道指挥{k}", "street_duty", "S1") for k in (1, 2)]
    with workers_path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["worker_id", "name", "role", "phone", "areas", "sms"])
        for n, (wid, name, role, areas) in enumerate(people):
            phone = f"+86139{n:08d}"
            w.writerow([wid, name, role, phone, areas, phone])

    start = (week_of or datetime.now(ZONE)).astimezone(ZONE)
    start = start.replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with roster_path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["worker_id", "starts_at", "ends_at"])
        for day in range(8):
            day_start = start + timedelta(days=day)
            for wid, _, role, _ in people:
                if role == "field_technician":
                    continue
                # Grid workers take alternate 12 h shifts; everyone else covers 24 h.
                if wid.endswith("-W1") or wid.endswith("-W2"):
                    first = (wid.endswith("-W1")) == (day % 2 == 0)
                    begin = day_start + (timedelta(0) if first else timedelta(hours=12))
                    end = begin + timedelta(hours=12)
                else:
                    begin, end = day_start, day_start + timedelta(days=1)
                w.writerow([wid, begin.isoformat(), end.isoformat()])


def _write_devices(path: Path, buildings: list[_BuildingRow], has_smoke: list[bool],
                   has_camera: list[bool], p: Preset, rng: random.Random, prefix: str = ""
                   ) -> None:
    smoke_at = [b for b, s in zip(buildings, has_smoke, strict=True) if s]
    camera_at = [b for b, c in zip(buildings, has_camera, strict=True) if c]
    # The last `gateways` smoke buildings report through a gateway (an older installation
    # on RS-485). Presets without gateways keep the column set they always had.
    gateway_of = {b[1]: f"{prefix}GW{i + 1:06d}"
                  for i, b in enumerate(smoke_at[len(smoke_at) - p.gateways:])
                  } if p.gateways else {}
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        header = ["device_id", "kind", "building_id", "floor", "location", "model",
                  "firmware", "heartbeat_s", "password"]
        w.writerow(header + (["gateway_id"] if gateway_of else []))
        extra = [""] if gateway_of else []
        for n, (b, floor) in enumerate(_spread(smoke_at, p.smoke_detectors, rng)):
            via = [gateway_of.get(b[1], "")] if gateway_of else []
            w.writerow([f"{prefix}SD{n + 1:06d}", "smoke_detector", b[1], floor, f"{floor}F 楼道",
                        "JTY-GD-NB01", "2.3.1", 3600, _password(rng)] + via)
        for n, (b, _) in enumerate(_spread(camera_at, p.cameras, rng)):   # at the entrance
            w.writerow([f"{prefix}CAM{n + 1:06d}", "camera", b[1], 1, "一楼出入口", "DS-2CD3T47",
                        "5.7.3", 60, _password(rng)] + extra)
        for building, gw in gateway_of.items():
            w.writerow([gw, "gateway", building, 1, "1F 弱电间", "GW-485-8", "1.4.0", 300,
                        _password(rng), ""])


def _spread(buildings: list[_BuildingRow], count: int, rng: random.Random
            ) -> Iterator[tuple[_BuildingRow, int]]:
    """At least one device per building, the rest spread over random buildings, one floor
    each (corridor detectors go floor by floor)."""
    extra = [rng.randrange(len(buildings)) for _ in range(count - len(buildings))]
    per = [1] * len(buildings)
    for i in extra:
        per[i] += 1
    for b, k in zip(buildings, per, strict=True):
        for j in range(k):
            yield b, 1 + j % b[2]


def _password(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                   for _ in range(22))


# --- reading a street back ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    kind: str                 # smoke_detector | camera | gateway
    building: str
    floor: int
    community: str
    heartbeat_s: int
    password: str | None = None
    gateway_id: str | None = None


@dataclass(frozen=True, slots=True)
class Building:
    id: str
    community: str
    grid: str
    floors: int


@dataclass(frozen=True)
class Topology:
    buildings: dict[str, Building]
    devices: list[DeviceSpec]

    def in_building(self, building: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.building == building]


_DEFAULT_HEARTBEAT = {"smoke_detector": 3600, "camera": 60, "gateway": 300}


def load(directory: Path) -> Topology:
    """Read hierarchy.csv and devices.csv (as written by generate, or by a field team)."""
    try:
        with (directory / "hierarchy.csv").open(newline="", encoding="utf-8-sig") as f:
            buildings = {r["building_id"]: Building(r["building_id"], r["community_id"],
                                                    r["grid_id"], int(r["floors"]))
                         for r in csv.DictReader(f) if r.get("building_id")}
        devices = []
        with (directory / "devices.csv").open(newline="", encoding="utf-8-sig") as f:
            for line, r in enumerate(csv.DictReader(f), start=2):
                b = buildings.get(r["building_id"])
                if b is None:
                    raise TopologyError(
                        f"devices.csv:{line}: unknown building {r['building_id']!r}")
                kind = r["kind"]
                if kind not in _DEFAULT_HEARTBEAT:
                    raise TopologyError(f"devices.csv:{line}: unknown kind {kind!r}")
                devices.append(DeviceSpec(
                    r["device_id"], kind, b.id, int(r.get("floor") or 1), b.community,
                    int(r.get("heartbeat_s") or _DEFAULT_HEARTBEAT[kind]),
                    r.get("password") or None, r.get("gateway_id") or None))
    except (OSError, KeyError, ValueError) as exc:
        raise TopologyError(f"cannot read the street in {directory}: {exc}") from exc
    return Topology(buildings, devices)
