"""The simulation engine: devices, their uplinks and the scenario's actions, on one clock.

Pure, like the models: it never sleeps and never touches a socket. A driver calls
`step(now_ms)`, which does everything due up to now in time order, and gets back when it is
next needed. The virtual driver (`run_virtual`, for tests) jumps the clock straight there;
simulators.run sleeps on a ScaledClock and wakes early when a connection reports back.

    heap of (time, what): scenario actions, device wakeups, uplink timers
        │ device.advance(t) ─► messages ─► its Uplink (or its gateway, which batches)
        ▼
    uplinks ready to work: connect (unless their network is down), publish, resend
        │ Link.publish(topic, payload, qos=1, on_ack)      Truth: first publish of each
        ▼
    links report connected / lost / acked back into the uplinks
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulators import messages as m
from simulators.clock import Clock, VirtualClock
from simulators.devices import NEVER, Device, Gateway, ModelConfig, build
from simulators.topology import DeviceSpec, Topology
from simulators.truth import Truth
from simulators.uplink import Link, Outgoing, Uplink, UplinkConfig

LinkFactory = Callable[[DeviceSpec, Callable[[], None]], Link]   # (spec, on_lost) -> Link


@dataclass(frozen=True, slots=True)
class Action:
    label: str
    apply: Callable[[Engine, int], None]


@dataclass
class Stats:
    published: int = 0       # first publishes
    resent: int = 0          # resends of unacknowledged critical messages, and re-publishes
    acked: int = 0           #   after a reconnect
    dropped: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    connected: int = 0
    bad: int = 0             # messages meant to be dead-lettered
    by_type: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(self, topology: Topology, *, clock: Clock, seed: int, truth: Truth,
                 link_factory: LinkFactory, prefix: str = "fg/v1",
                 models: ModelConfig | None = None, uplink: UplinkConfig | None = None) -> None:
        self.topology = topology
        self.clock = clock
        self.seed = seed
        self.truth = truth
        self.prefix = prefix
        self.stats = Stats()
        start = clock.now_ms()
        self.start_ms = start
        models = models or ModelConfig()
        uplink = uplink or UplinkConfig()
        self.devices: dict[str, Device] = {s.id: build(s, models, seed, start)
                                           for s in topology.devices}
        # Devices behind a gateway talk to it, not to the broker: no uplink, no connection.
        self.uplinks: dict[str, Uplink] = {
            s.id: Uplink(s.id, uplink, random.Random(f"{seed}:uplink:{s.id}"))
            for s in topology.devices if s.gateway_id is None}
        self.links: dict[str, Link] = {
            i: link_factory(self.devices[i].spec, self._lost_callback(i)) for i in self.uplinks}
        self.network_down: set[str] = set()
        self.incidents: dict[str, dict[str, Any]] = {}   # id -> facts gathered for incident_end
        # (t, tiebreak, tag, item): tag 0 an Action, 1 a device id's wakeup, 2 its uplink's
        # timer. The item stays Any: step() tells them apart by tag, not isinstance, on its
        # hottest path.
        self._heap: list[tuple[int, int, int, Any]] = []
        self._count = itertools.count()
        self._device_at: dict[str, int] = {}
        self._uplink_at: dict[str, int] = {}
        # Uplinks with work to do, as a dict used as an ordered set: set.pop() on a big set that
        # keeps refilling scans its emptied slots (most of the engine's time at street size).
        self._ready: dict[str, None] = dict.fromkeys(self.uplinks)   # everyone connects first
        # Called when a link's callback has made work (a driver waiting on a timer wakes).
        self.kick: Callable[[], None] = lambda: None
        for d in self.devices.values():
            self.reschedule(d)

    # --- scheduling ---

    def at(self, t_ms: int, action: Action) -> None:
        heapq.heappush(self._heap, (t_ms, next(self._count), 0, action))

    def reschedule(self, device: Device) -> None:
        t = device.next_ms
        if t < self._device_at.get(device.id, NEVER):
            self._device_at[device.id] = t
            heapq.heappush(self._heap, (t, next(self._count), 1, device.id))

    def _wake_uplink(self, device_id: str, t: int) -> None:
        if t < self._uplink_at.get(device_id, NEVER):
            self._uplink_at[device_id] = t
            heapq.heappush(self._heap, (t, next(self._count), 2, device_id))

    def next_ms(self) -> int:
        if self._ready:
            return self.clock.now_ms()
        return self._heap[0][0] if self._heap else NEVER

    # --- the loop ---

    def step(self, now_ms: int, budget: int | None = None) -> int:
        """Do what is due up to now_ms; with a budget, at most that many scheduled things,
        so a driver that has fallen behind still gets to its sockets in between (the next
        time returned is then already due)."""
        left = budget if budget is not None else -1
        while self._heap and self._heap[0][0] <= now_ms:
            if left == 0:
                now_ms = self._heap[0][0]   # send what is ready as of where we stopped
                break
            left -= 1
            t, _, tag, item = heapq.heappop(self._heap)
            if tag == 0:
                self._service_ready(t)   # what was due before the action goes out first
                item.apply(self, t)
            elif tag == 1:
                if self._device_at.get(item) != t:
                    continue             # superseded by an earlier wakeup
                del self._device_at[item]
                device = self.devices[item]
                for msg in device.advance(t):
                    self._route(device, msg)
                self.reschedule(device)
            else:
                if self._uplink_at.get(item) == t:
                    del self._uplink_at[item]
                    self._ready[item] = None
        self._service_ready(now_ms)
        return self.next_ms()

    def _route(self, device: Device, msg: Outgoing) -> None:
        self.stats.by_type[msg.type] = self.stats.by_type.get(msg.type, 0) + 1
        if msg.incident:
            self._observe(msg.incident, msg)
        gateway_id = device.spec.gateway_id
        if gateway_id is not None:
            gw = self.devices[gateway_id]
            assert isinstance(gw, Gateway)
            gw.collect(msg)
            self.reschedule(gw)
            return
        self.uplinks[device.id].queue(msg)
        self._ready[device.id] = None

    def send(self, device_id: str, msg: Outgoing) -> None:
        """A message made outside the device's own schedule (a hostile burst)."""
        self._route(self.devices[device_id], msg)

    def _service_ready(self, now: int) -> None:
        # Link callbacks may add to _ready while we work (a loopback acks at once).
        while self._ready:
            device_id = self._ready.popitem()[0]
            self._service(device_id, now)

    def _service(self, device_id: str, now: int) -> None:
        up, link = self.uplinks[device_id], self.links[device_id]
        if up.wants_connect(now):
            if device_id in self.network_down:
                self.stats.connect_failures += 1
                up.connect_failed(now)
            else:
                up.state = "connecting"
                link.connect(self._connect_callback(device_id))
        for msg in up.take(now):
            if msg.attempts == 1:
                self.stats.published += 1
                self.stats.bad += msg.expect is not None
                self.truth.published(msg, m.topic(msg.device_id, msg.channel, self.prefix), now)
            else:
                self.stats.resent += 1
            link.publish(m.topic(msg.device_id, msg.channel, self.prefix), msg.payload, 1,
                         self._ack_callback(up, msg))
        for msg in up.dropped:
            self.stats.dropped += 1
            self.truth.dropped(msg, now)
        up.dropped.clear()
        due = up.next_due_ms(now)
        if due is not None:
            if due > now:
                self._wake_uplink(device_id, due)
            elif up.buffer and len(up.inflight) < up.config.max_inflight:
                self._ready[device_id] = None   # acks came back while we sent: more to send

    # --- what links report (possibly from another task, at the clock's now) ---

    def _connect_callback(self, device_id: str) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            up, now = self.uplinks[device_id], self.clock.now_ms()
            if up.state != "connecting":
                return          # the network went down while we were connecting
            if ok and device_id not in self.network_down:
                up.connected(now)
                self.stats.connected += 1
            else:
                if ok:
                    self.links[device_id].close()
                self.stats.connect_failures += 1
                up.connect_failed(now)
            self._ready[device_id] = None
            self.kick()
        return done

    def _lost_callback(self, device_id: str) -> Callable[[], None]:
        def lost() -> None:
            self._drop(device_id, self.clock.now_ms())
            self.kick()
        return lost

    def _drop(self, device_id: str, now: int) -> None:
        up = self.uplinks[device_id]
        if up.state == "online":
            self.stats.connected -= 1
            self.stats.connections_lost += 1
        up.lost(now)
        self._ready[device_id] = None

    def _ack_callback(self, up: Uplink, msg: Outgoing) -> Callable[[], None]:
        def acked() -> None:
            if not msg.acked:
                self.stats.acked += 1
            up.acked(msg)
            if up.buffer:
                self._ready[up.device_id] = None   # room in the window: send the next
                self.kick()
        return acked

    # --- what scenario actions use ---

    def set_network(self, device_ids: list[str], up: bool, now: int) -> None:
        for device_id in device_ids:
            if device_id not in self.uplinks:
                continue        # behind a gateway: its gateway's network is what counts
            if up:
                self.network_down.discard(device_id)
            else:
                self.network_down.add(device_id)
                if self.uplinks[device_id].state not in ("offline", "off"):
                    self.links[device_id].close()
                    self._drop(device_id, now)
            self._ready[device_id] = None

    def power_off(self, device_id: str, now: int) -> None:
        """The device is dead (its battery ran out): it produces nothing more, its connection
        closes and it never reconnects. What it had not sent stays unsent (`unacked`)."""
        self.devices[device_id].dead = True
        up = self.uplinks.get(device_id)
        if up is not None:
            if up.state != "offline":
                self.links[device_id].close()
            if up.state == "online":
                self.stats.connected -= 1
            up.power_off()

    def _observe(self, incident: str, msg: Outgoing) -> None:
        facts = self.incidents.setdefault(incident, {"alarms": []})
        if msg.type in ("alarm", "smoke_detected", "fire_detected"):
            facts["alarms"].append([msg.device_id, msg.type, msg.ts])
        if msg.channel == "event":
            facts.setdefault("events", []).append([msg.device_id, msg.type, msg.ts])
        else:
            facts["messages"] = facts.get("messages", 0) + 1

    def finish(self) -> None:
        """End of run: record what never got acknowledged, close every connection."""
        for incident, facts in self.incidents.items():
            if not facts.get("ended"):
                self.truth.write("incident_end", id=incident, ts=None, alarms=facts["alarms"],
                                 note="still going when the run stopped")
        for device_id, up in self.uplinks.items():
            for msg in up.pending():
                self.truth.unacked(msg, m.topic(msg.device_id, msg.channel, self.prefix))
            self.links[device_id].close()
        for device in self.devices.values():
            if isinstance(device, Gateway):
                for msg in device.pending:
                    self.truth.unacked(msg, m.topic(msg.device_id, msg.channel, self.prefix))


# --- a virtual run, for tests ------------------------------------------------------------------

class LoopbackLink:
    """A link that connects and acknowledges at once; `hold` keeps acks back (a broker that
    takes messages but never answers)."""

    def __init__(self, spec: DeviceSpec, on_lost: Callable[[], None]) -> None:
        self.spec = spec
        self.on_lost = on_lost
        self.sent: list[tuple[str, bytes]] = []
        self.hold = False
        self.open = False

    def connect(self, done: Callable[[bool], None]) -> None:
        self.open = True
        done(True)

    def publish(self, topic: str, payload: bytes, qos: int, on_ack: Callable[[], None]) -> None:
        assert self.open, "publish on a closed link"
        self.sent.append((topic, payload))
        if not self.hold:
            on_ack()

    def close(self) -> None:
        self.open = False


def run_virtual(engine: Engine, clock: VirtualClock, until_ms: int) -> None:
    """Run the engine to until_ms, jumping the clock from one wakeup to the next."""
    while True:
        nxt = engine.step(clock.now_ms())
        if nxt > until_ms:
            clock.advance_to(until_ms)
            engine.step(until_ms)
            return
        clock.advance_to(nxt)
