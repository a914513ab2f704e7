"""A device's side of its connection to the broker, as pure logic.

    device model ──► Outgoing ──► Uplink (bounded buffer ─► in flight) ──► Link.publish
                                     ▲ acked / connected / lost / connect failed │
                                     └────────────── reported by the Link ◄──────┘

What real NB-IoT/4G firmware does, and so what this does:
- Messages wait in a bounded buffer while the device is offline. When it is full the oldest
  telemetry goes first; alarms and other events are never dropped.
- On a live connection a QoS 1 message is in flight until its PUBACK. Critical messages
  (alarms, clears, video fire detections) not acknowledged within resend_s are sent again,
  with the same bytes, so the same (ts, seq): ingest stores them once (docs/protocol.md).
- A lost connection puts everything unacknowledged back at the front of the buffer, in order.
- Reconnects back off exponentially with jitter, so a village coming back after a power cut
  does not reconnect in one instant.

The Link is the seam to MQTT: anything that can connect, publish (topic, payload, qos) and
later call back. Tests use a loopback link on a virtual clock; simulators.run uses asyncio
MQTT connections.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from runtime.retry import Backoff


class Link(Protocol):
    """One device's connection. Calls back: connect(done) -> done(ok: bool) once;
    publish(..., on_ack) -> on_ack() at the PUBACK; on_lost (given at creation) if an open
    connection drops. Callbacks may come at once, from inside the call."""

    def connect(self, done: Callable[[bool], None]) -> None: ...
    def publish(self, topic: str, payload: bytes, qos: int, on_ack: Callable[[], None]) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class Outgoing:
    """One message a device (or a gateway for its devices) sends. ts and seq are stamped once,
    at creation, and kept on every resend."""
    device_id: str          # whose topic it goes to
    channel: str            # telemetry | event | gateway
    type: str               # message type; "gateway" for a batch; what a bad message claims
    ts: int | None
    seq: int | None
    payload: bytes
    message: dict[str, Any] | None = None   # decoded (None for deliberately bad bytes)
    critical: bool = False           # resent until acknowledged, never dropped
    expect: str | None = None        # the dead-letter reason ingest should give; None = stored
    incident: str | None = None      # the scenario incident that caused it
    # A gateway batch: ((device_id, ts, seq, type), ...), each as its device stamped it.
    entries: tuple[tuple[str, int | None, int | None, str], ...] = ()
    sent_ms: int | None = None       # last send attempt (simulated time)
    attempts: int = 0
    acked: bool = False


class UplinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    buffer_max: int = Field(500, ge=1, description="messages kept while offline")
    max_inflight: int = Field(10, ge=1, description="unacknowledged publishes at once")
    resend_s: float = Field(30, gt=0, description="resend critical messages after this")
    backoff_min_s: float = Field(2, gt=0)
    backoff_max_s: float = Field(300, gt=0)


@dataclass(slots=True)
class Uplink:
    device_id: str
    config: UplinkConfig
    rng: random.Random
    state: str = "offline"               # offline | connecting | online | off (dead)
    next_attempt_ms: int = 0
    failures: int = 0   # connection attempts failed or dropped since the last success
    buffer: deque[Outgoing] = field(default_factory=deque)
    inflight: list[Outgoing] = field(default_factory=list)
    dropped: list[Outgoing] = field(default_factory=list)   # drained by the engine into the truth
    acked_count: int = 0

    def queue(self, msg: Outgoing) -> None:
        self.buffer.append(msg)
        if len(self.buffer) > self.config.buffer_max:
            self._drop_one()

    def _drop_one(self) -> None:
        for rank in ("telemetry", "event"):
            for i, m in enumerate(self.buffer):
                if not m.critical and (rank == "event" or m.channel == "telemetry"):
                    del self.buffer[i]
                    self.dropped.append(m)
                    return
        # Only critical messages left: keep them all (the bound is soft for alarms).

    # --- what the link reports ---

    def connected(self, now_ms: int) -> None:
        self.state = "online"
        self.failures = 0

    def connect_failed(self, now_ms: int) -> None:
        self.state = "offline"
        self._schedule_retry(now_ms)

    def power_off(self) -> None:
        """The device died: no more sends, no reconnects; what is unsent stays unsent."""
        for m in reversed(self.inflight):
            if not m.acked:
                self.buffer.appendleft(m)
        self.inflight.clear()
        self.state = "off"

    def lost(self, now_ms: int) -> None:
        """The connection dropped: what was not acknowledged goes back to be sent again."""
        if self.state in ("offline", "off"):
            return
        self.state = "offline"
        for m in reversed(self.inflight):
            if not m.acked:
                self.buffer.appendleft(m)
        self.inflight.clear()
        self._schedule_retry(now_ms)

    def acked(self, msg: Outgoing) -> None:
        if msg.acked:
            return  # a resend's PUBACK after the first one's
        msg.acked = True
        self.acked_count += 1
        try:
            self.inflight.remove(msg)
        except ValueError:
            pass  # acknowledged after the connection dropped: it is back in the buffer
        if msg in self.buffer:
            self.buffer.remove(msg)

    def _schedule_retry(self, now_ms: int) -> None:
        c = self.config
        # Jitter on the upper half: spread, but never sooner than half the backoff.
        wait = Backoff(c.backoff_min_s, c.backoff_max_s).delay(self.failures, self.rng)
        self.failures += 1
        self.next_attempt_ms = now_ms + int(wait * 1000)

    # --- what the engine asks ---

    def wants_connect(self, now_ms: int) -> bool:
        return self.state == "offline" and now_ms >= self.next_attempt_ms

    def take(self, now_ms: int) -> list[Outgoing]:
        """Messages to publish now: overdue critical resends, then new ones up to the window."""
        if self.state != "online":
            return []
        out = []
        resend_ms = int(self.config.resend_s * 1000)
        # Everything in flight has a sent_ms (set below); the check is for the type only.
        for m in self.inflight:
            if (m.critical and not m.acked and m.sent_ms is not None
                    and now_ms - m.sent_ms >= resend_ms):
                out.append(m)
        while self.buffer and len(self.inflight) < self.config.max_inflight:
            m = self.buffer.popleft()
            self.inflight.append(m)
            out.append(m)
        for m in out:
            m.sent_ms = now_ms
            m.attempts += 1
        return out

    def next_due_ms(self, now_ms: int) -> int | None:
        """When this uplink next needs the engine, if nothing else happens before."""
        if self.state == "offline":
            return max(now_ms, self.next_attempt_ms)
        if self.state == "online":
            if self.buffer and len(self.inflight) < self.config.max_inflight:
                return now_ms
            due = [m.sent_ms + int(self.config.resend_s * 1000)
                   for m in self.inflight
                   if m.critical and not m.acked and m.sent_ms is not None]
            return min(due) if due else None
        return None

    def pending(self) -> list[Outgoing]:
        """Everything not yet acknowledged (for the truth file at the end of a run)."""
        return [m for m in self.inflight if not m.acked] + list(self.buffer)
