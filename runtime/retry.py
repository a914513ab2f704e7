"""One backoff for every retry loop: the database writer, the alert core's loops, the page
dispatcher, the ingest supervisor and the simulated devices' reconnects.

Exponential with jitter: attempt n (from 0) waits min(cap_s, base_s * 2**n) times a factor
drawn from [floor, 1]. The jitter spreads processes that failed together (a database or
broker restart) so they do not all come back in the same instant; the floor keeps a retry
from coming much sooner than the backoff intends. floor=1 means no jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float
    cap_s: float
    floor: float = 0.5

    def __post_init__(self) -> None:
        if not (self.base_s >= 0 and self.cap_s >= 0 and 0 <= self.floor <= 1):
            raise ValueError(f"invalid backoff {self}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first). A seeded `rng`
        makes the delays reproducible (the simulators)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 0), 64))
        return ceiling * (rng or random).uniform(self.floor, 1.0)
