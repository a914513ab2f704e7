"""The physical world the detectors sample: smoke sources and how smoke reaches each detector.

A SmokeSource is a fire or a burnt pan. Each detector it reaches has an arrival delay and a
peak obscuration; after arrival the obscuration rises towards the peak (time constant
growth_s), and after the source ends it decays (decay_s). Detectors sample it every few
seconds and alarm when it crosses their threshold, so alarm times follow from physics and
sampling, not from a script.

Spread in a handshake building (the urban-village kind: a narrow stairwell, a few flats per
floor), the defaults of `spread_fire`:
- the room's own detector first (5-20 s),
- the other detectors on the fire floor within 30-120 s (corridor),
- then the floors above, one every ~3 min (smoke climbs the stairwell), and the floors
  below more slowly (~5 min each). Peak falls off with distance but stays above the alarm
  threshold: an uncontrolled fire fills the building.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Reach:
    arrival_ms: int      # absolute simulated time the smoke arrives at the detector
    peak_db_m: float


@dataclass(slots=True)
class SmokeSource:
    incident: str        # "fire-1", "cooking-1": what the truth file calls it
    start_ms: int
    end_ms: int          # the fire is out / the pan is off
    growth_s: float
    decay_s: float
    reach: dict[str, Reach] = field(default_factory=dict)   # device id -> reach
    mute_after_s: float | None = None                        # someone presses "mute"

    def obscuration(self, device_id: str, t_ms: int) -> float:
        r = self.reach.get(device_id)
        if r is None or t_ms < r.arrival_ms:
            return 0.0
        end = max(self.end_ms, r.arrival_ms)
        rising_s = (min(t_ms, end) - r.arrival_ms) / 1000
        level = r.peak_db_m * (1 - math.exp(-rising_s / self.growth_s))
        if t_ms > end:
            level *= math.exp(-(t_ms - end) / 1000 / self.decay_s)
        return level

    def settled_ms(self, device_id: str, below: float) -> int:
        """When the smoke at this detector has decayed below `below` dB/m for good."""
        r = self.reach[device_id]
        end = max(self.end_ms, r.arrival_ms)
        if r.peak_db_m <= below:
            return end
        return end + int(self.decay_s * math.log(r.peak_db_m / below) * 1000) + 1000


@dataclass(frozen=True, slots=True)
class Placement:
    device_id: str
    floor: int


def spread_fire(incident: str, origin: Placement, same_building: list[Placement],
                start_ms: int, end_ms: int, rng: random.Random, *, peak_db_m: float = 2.0,
                up_s: float = 180, down_s: float = 300) -> SmokeSource:
    """Smoke from a fire in the room of `origin` through its building (see module doc)."""
    src = SmokeSource(incident, start_ms, end_ms, growth_s=60, decay_s=120)
    src.reach[origin.device_id] = Reach(start_ms + rng.randint(5_000, 20_000), peak_db_m)
    same = [p for p in same_building if p.floor == origin.floor and p != origin]
    for i, p in enumerate(same):
        # Neighbours on the floor share one corridor: all within 30-120 s, spread evenly.
        delay = 30 + 90 * (i + 1) / (len(same) + 1) + rng.uniform(-5, 5)
        src.reach[p.device_id] = Reach(start_ms + int(delay * 1000), peak_db_m * 0.9)
    for p in same_building:
        if p.floor == origin.floor:
            continue
        floors = abs(p.floor - origin.floor)
        per = up_s if p.floor > origin.floor else down_s
        delay = per * floors + rng.uniform(0, 30)
        src.reach[p.device_id] = Reach(start_ms + int(delay * 1000),
                                       peak_db_m * 0.85 ** floors)
    return src


def cooking(incident: str, device_id: str, start_ms: int, end_ms: int, rng: random.Random, *,
            mute_after_s: float | None) -> SmokeSource:
    """A burnt pan under one detector: enough smoke to alarm, nowhere else."""
    src = SmokeSource(incident, start_ms, end_ms, growth_s=40, decay_s=45,
                      mute_after_s=mute_after_s)
    src.reach[device_id] = Reach(start_ms + rng.randint(10_000, 40_000),
                                 round(rng.uniform(0.3, 0.5), 2))
    return src
