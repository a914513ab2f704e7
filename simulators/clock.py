"""Simulated time. Every device timestamp (`ts`) comes from a clock here, never from the wall.

    ScaledClock   simulated = start + speed x elapsed real time (speed 60: one simulated
                  minute per real second), for runs against a real broker.
    VirtualClock  moves only when told (advance/advance_to), for tests: no sleeping, and the
                  same seed gives the same run to the millisecond.

Both count in Unix epoch milliseconds, the protocol's unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class ScaledClock:
    def __init__(self, start_ms: int, speed: float = 1.0, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        self.start_ms = start_ms
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((self._monotonic() - self._t0) * 1000 * self.speed)

    def real_delay_s(self, sim_ms: int) -> float:
        """Real seconds until the simulated time sim_ms (0 if it has passed)."""
        return max(0.0, (sim_ms - self.now_ms()) / 1000 / self.speed)


class VirtualClock:
    def __init__(self, start_ms: int) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> int:
        self._now += int(seconds * 1000)
        return self._now

    def advance_to(self, ms: int) -> int:
        # Time never goes backwards: a wakeup in the past means "now".
        self._now = max(self._now, ms)
        return self._now


def start_for(duration_ms: int, speed: float, wall_ms: int | None = None) -> int:
    """A start time for a ScaledClock such that a run of duration_ms simulated time ends at
    the real time it finishes, never later. Faster than real time, a run that started "now"
    would stamp its messages in the future, and ingest refuses those (future_timestamp)."""
    wall = time.time_ns() // 1_000_000 if wall_ms is None else wall_ms
    return wall - duration_ms + int(duration_ms / speed)
