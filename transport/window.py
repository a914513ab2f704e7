"""The bounded buffer between the MQTT network loop and the batch writer.

Its bound is enforced upstream: the broker never has more than `inflight_window` unacked
messages out to us (MQTT 5 Receive Maximum, or Mosquitto's max_inflight_messages for 3.1.1),
and a message leaves the window only when the writer acknowledges it after commit. So put()
never blocks paho's network thread, and memory stays bounded by the window.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int   # the broker connection it came on; acks go only to the same one
    received_ms: int  # wall clock, stored as received_at
    received_mono: float


class Window:
    def __init__(self, *, batch_max: int, max_age_s: float) -> None:
        self._items: deque[Inbound] = deque()
        self._cond = threading.Condition()
        self._batch_max = batch_max
        self._max_age = max_age_s
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> None:
        """Called from paho's network thread: O(1), never blocks on I/O. deque.append is
        atomic, so the lock is taken only to wake the writer (first item or a full batch);
        the writer checks and waits under the lock, so no wake-up is missed."""
        self._items.append(item)
        n = len(self._items)
        if n == 1 or n == self._batch_max:
            with self._cond:
                self._cond.notify()

    def take(self) -> list[Inbound]:
        """Block until a batch is full, the oldest message is max_age old, or close();
        return up to batch_max messages (possibly none after close)."""
        with self._cond:
            while not self._closed:
                if len(self._items) >= self._batch_max:
                    break
                if self._items:
                    wait = self._items[0].received_mono + self._max_age - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            n = min(len(self._items), self._batch_max)
            return [self._items.popleft() for _ in range(n)]

    def take_now(self) -> list[Inbound]:
        """Whatever is buffered, up to one batch, without waiting (used while draining)."""
        with self._cond:
            n = min(len(self._items), self._batch_max)
            return [self._items.popleft() for _ in range(n)]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
