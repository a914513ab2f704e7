"""The bounded buffer between the MQTT network loop and the batch writer.

A message is held from its arrival (put) until the writer has committed and acknowledged it
(release): that is what the broker has out to us unacknowledged. firegrid bounds it itself,
in messages and in bytes, whatever the broker does (Mosquitto 2.0 does not enforce its
max_inflight_messages for MQTT 3.1.1 clients draining a backlog: 100,000 unacknowledged were
measured against a window of 4,000). When the window is full, put() waits in paho's network
thread: the socket is not read, TCP pushes back, and the broker keeps the rest queued in our
persistent session, where it costs firegrid nothing. The writer never waits for put(), and
its acknowledgements free space before they are written, so the two cannot deadlock.

One message larger than the byte bound is let in when the window is empty, or it could never
be taken.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
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
    def __init__(self, *, batch_max: int, max_age_s: float, max_messages: int,
                 max_bytes: int) -> None:
        self._items: deque[Inbound] = deque()
        lock = threading.Lock()
        self._ready = threading.Condition(lock)   # the writer waits for a batch
        self._space = threading.Condition(lock)   # the network thread waits for room
        self._batch_max = batch_max
        self._max_age = max_age_s
        self.max_messages = max_messages
        self._max_bytes = max_bytes
        self._closed = False
        # Held = put and not yet released. Each counter has one writer (put: the network
        # thread; release: the writer, under the lock), so put() reads them without the lock
        # and takes it only to wait: a stale read only sends it to the careful path.
        self._in = self._in_bytes = 0
        self._out = self._out_bytes = 0
        self.peak = 0          # the most held at once, since start
        self.peak_bytes = 0
        self.waits = 0         # times put() had to wait for room

    @property
    def held(self) -> int:
        return self._in - self._out

    @property
    def held_bytes(self) -> int:
        return self._in_bytes - self._out_bytes

    def __len__(self) -> int:
        """Messages waiting to be taken (held ones already taken are not counted)."""
        return len(self._items)

    def put(self, item: Inbound) -> None:
        """Called from paho's network thread. Waits while the window is full (not once the
        window is closed: a stopping service leaves what it has unacknowledged)."""
        size = len(item.payload)
        if self._full(size):
            with self._space:
                self.waits += 1
                while self._full(size) and not self._closed:
                    self._space.wait()
        self._in += 1
        self._in_bytes += size
        held = self._in - self._out
        if held > self.peak:
            self.peak = held
        if self._in_bytes - self._out_bytes > self.peak_bytes:
            self.peak_bytes = self._in_bytes - self._out_bytes
        # deque.append is atomic; the lock is taken only to wake the writer (first item or a
        # full batch), and the writer checks and waits under it, so no wake-up is missed.
        self._items.append(item)
        n = len(self._items)
        if n == 1 or n == self._batch_max:
            with self._ready:
                self._ready.notify()

    def _full(self, size: int) -> bool:
        held = self._in - self._out
        return held > 0 and (held >= self.max_messages
                             or self._in_bytes - self._out_bytes + size > self._max_bytes)

    def release(self, items: Sequence[Inbound]) -> None:
        """The writer is done with these (committed and acknowledged, or acknowledged in
        vain on a connection since lost): their room goes back to the network thread."""
        if not items:
            return
        with self._space:
            self._out += len(items)
            self._out_bytes += sum(len(i.payload) for i in items)
            self._space.notify()

    def take(self) -> list[Inbound]:
        """Block until a batch is full, the oldest message is max_age old, or close();
        return up to batch_max messages (possibly none after close)."""
        with self._ready:
            while not self._closed:
                if len(self._items) >= self._batch_max:
                    break
                if self._items:
                    wait = self._items[0].received_mono + self._max_age - time.monotonic()
                    if wait <= 0:
                        break
                    self._ready.wait(wait)
                else:
                    self._ready.wait()
            n = min(len(self._items), self._batch_max)
            return [self._items.popleft() for _ in range(n)]

    def take_now(self) -> list[Inbound]:
        """Whatever is buffered, up to one batch, without waiting (used while draining)."""
        with self._ready:
            n = min(len(self._items), self._batch_max)
            return [self._items.popleft() for _ in range(n)]

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            self._space.notify_all()
