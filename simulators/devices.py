"""Device models as pure logic: a smoke detector, a camera channel and a gateway.

A model knows its own schedule and nothing of MQTT: the engine asks `next_ms`, calls
`advance(now_ms)` and gets the protocol-v1 messages (Outgoing) the device produced up to then,
each stamped with the simulated time it was produced at and the device's next seq. The
engine hands them to the device's Uplink (or, behind a gateway, to the gateway).

    SmokeDetector  NB-IoT/4G: heartbeat every heartbeat_s with jitter, battery drain, signal
                   quality; samples the smoke (simulators.world) every sample_s while a
                   source is near; alarm at the threshold, alarm_clear when it falls back
                   below half of it (hysteresis, as real detectors do); low_battery once when
                   the battery crosses its threshold; fault/tamper/self_test/mute when a
                   scenario schedules them; a battery a scenario drains to empty
                   (drain_to_empty), after which the device is dead and sends nothing.
    Camera         a channel's keepalive every 60 s (GB/T 28181), stream and recording state,
                   smoke_detected/fire_detected with confidence, occlusion and video_loss.
    Gateway        collects its devices' messages and relays them in one `gateway` batch
                   every batch_s, at once when an entry is critical. Entries keep their own
                   device's ts and seq.

Any device can be made to flood (`flood`): a valid status message every few ms for a while.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from simulators import messages as m
from simulators.topology import DeviceSpec
from simulators.uplink import Outgoing
from simulators.world import SmokeSource

NEVER = 2**63 - 1
DAY_MS = 86_400_000
CRITICAL = frozenset({"alarm", "alarm_clear", "smoke_detected", "fire_detected"})


class ModelConfig(BaseModel):
    """How the models behave; a scenario's [devices] table overrides these."""
    model_config = ConfigDict(extra="forbid")

    smoke_heartbeat_s: int | None = Field(None, ge=10, le=604800,
                                          description="override the topology's heartbeat")
    heartbeat_jitter: float = Field(0.05, ge=0, le=0.5, description="± fraction per period")
    sample_s: float = Field(10, gt=0, le=300, description="smoke sampling while smoke is near")
    alarm_db_m: float = Field(0.15, gt=0, le=100, description="alarm threshold")
    battery_drain_pct_day: float = Field(0.03, ge=0, le=100)
    low_battery_pct: int = Field(20, ge=0, le=100)
    camera_keepalive_s: int = Field(60, ge=10, le=3600)
    gateway_batch_s: float = Field(5, gt=0, le=3600)
    gateway_max_entries: int = Field(200, ge=1, le=1000)


class Device:
    kind = "device"

    def __init__(self, spec: DeviceSpec, config: ModelConfig, rng: random.Random,
                 start_ms: int) -> None:
        self.spec = spec
        self.id = spec.id
        self.config = config
        self.rng = rng
        self.start_ms = start_ms
        self.seq = 0
        # (ms, order, type, fields)
        self.scripted: list[tuple[int, int, str, dict[str, Any]]] = []
        self._order = 0
        self.dead = False                 # battery empty: sends nothing any more
        # A flood (simulators.timeline): a status message every flood_every ms until flood_end.
        self.flood_next = NEVER
        self.flood_end = NEVER
        self.flood_every = 0
        self.flood_incident: str | None = None

    def next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 2**32
        return seq

    def schedule(self, t_ms: int, kind: str, **fields: Any) -> None:
        """A scenario's event (fault, tamper, occlusion...) at simulated time t_ms."""
        self._order += 1
        heapq.heappush(self.scripted, (t_ms, self._order, kind, fields))

    @property
    def next_ms(self) -> int:
        return NEVER if self.dead else min(self._next_ms(), self.flood_next)

    def _next_ms(self) -> int:
        return self.scripted[0][0] if self.scripted else NEVER

    def advance(self, now_ms: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        while (t := self.next_ms) <= now_ms:
            if t == self.flood_next:
                self._flood(t, out)
            else:
                self._step(t, out)
        return out

    def flood(self, start_ms: int, end_ms: int, every_ms: int, incident: str) -> None:
        """Publish a valid status message every every_ms from start_ms to end_ms (a firmware
        stuck in its send loop)."""
        self.flood_next, self.flood_end = start_ms, end_ms
        self.flood_every, self.flood_incident = max(1, every_ms), incident

    def _flood(self, t: int, out: list[Outgoing]) -> None:
        msg = self.status(t)
        msg.incident = self.flood_incident
        out.append(msg)
        nxt = t + self.flood_every
        self.flood_next = nxt if nxt < self.flood_end else NEVER

    def status(self, t: int) -> Outgoing:
        """The device's status message (its heartbeat's content) as of t."""
        raise NotImplementedError(f"a {self.kind} has no status message of its own")

    def _step(self, t: int, out: list[Outgoing]) -> None:
        if self.scripted and self.scripted[0][0] == t:
            _, _, kind, fields = heapq.heappop(self.scripted)
            incident = fields.pop("incident", None)
            out.append(self.event(t, kind, incident=incident, **fields))

    def event(self, t: int, kind: str, *, incident: str | None = None,
              **fields: Any) -> Outgoing:
        msg = m.event(kind, self.next_seq(), t, **fields)
        return Outgoing(self.id, "event", kind, t, msg["seq"], m.encode(msg), msg,
                        critical=kind in CRITICAL, incident=incident)

    def telemetry(self, msg: m.Message) -> Outgoing:
        return Outgoing(self.id, "telemetry", msg["type"], msg["ts"], msg["seq"],
                        m.encode(msg), msg)

    def _jittered_ms(self, period_s: float) -> int:
        j = self.config.heartbeat_jitter
        return int(period_s * 1000 * (1 + self.rng.uniform(-j, j)))


class SmokeDetector(Device):
    kind = "smoke_detector"

    def __init__(self, spec: DeviceSpec, config: ModelConfig, rng: random.Random,
                 start_ms: int) -> None:
        super().__init__(spec, config, rng, start_ms)
        self.heartbeat_s = config.smoke_heartbeat_s or spec.heartbeat_s
        # A fleet powered on long ago: heartbeats at random phases, not all at t=0.
        self.next_heartbeat = start_ms + int(rng.random() * self.heartbeat_s * 1000)
        self.battery0 = rng.uniform(35, 100)
        self.drain = config.battery_drain_pct_day * rng.uniform(0.7, 1.3)
        self.low_battery_sent = self.battery0 <= config.low_battery_pct
        self.rsrp0 = rng.randint(-118, -75)
        self.ambient = rng.uniform(18, 31)
        self.sources: list[SmokeSource] = []
        self.next_sample = NEVER
        self.sample_phase = rng.randrange(int(config.sample_s * 1000))
        self.alarm: SmokeSource | None = None     # the source that set the alarm off
        self.alarm_ts: int | None = None
        self.drain_from: tuple[int, float, int] | None = None   # (t, pct, empty at t)
        self.battery_incident: str | None = None

    def _next_ms(self) -> int:
        return min(self.next_heartbeat, self.next_sample, super()._next_ms())

    def drain_to_empty(self, t_ms: int, level_pct: float, empty_ms: int,
                       incident: str | None = None) -> None:
        """From t_ms the battery holds level_pct and runs down linearly to 0 at empty_ms
        (a battery at the end of its life, weeks compressed into a scenario's days)."""
        self.drain_from = (t_ms, level_pct, empty_ms)
        self.low_battery_sent = level_pct <= self.config.low_battery_pct
        self.battery_incident = incident

    def watch(self, source: SmokeSource) -> None:
        """Smoke from this source will reach us: sample from its arrival on."""
        self.sources.append(source)
        arrival = source.reach[self.id].arrival_ms
        self.next_sample = min(self.next_sample, self._sample_after(arrival))

    def _sample_after(self, t: int) -> int:
        period = int(self.config.sample_s * 1000)
        k = -(-(t - self.sample_phase) // period)
        return k * period + self.sample_phase

    def battery_pct(self, t: int) -> float:
        if self.drain_from is not None and t >= self.drain_from[0]:
            t0, level, empty = self.drain_from
            return max(0.0, level * (empty - t) / max(1, empty - t0))
        return max(0.0, self.battery0 - self.drain * (t - self.start_ms) / DAY_MS)

    def obscuration(self, t: int) -> float:
        return min(100.0, sum(s.obscuration(self.id, t) for s in self.sources))

    def _step(self, t: int, out: list[Outgoing]) -> None:
        if t == self.next_sample:
            self._sample(t, out)
        elif t == self.next_heartbeat:
            self._heartbeat(t, out)
        else:
            super()._step(t, out)

    def status(self, t: int) -> Outgoing:
        pct = self.battery_pct(t)
        obs = self.obscuration(t)
        rsrp = max(-140, min(-44, self.rsrp0 + self.rng.randint(-4, 4)))
        return self.telemetry(m.smoke_status(
            self.next_seq(), t, obscuration_db_m=round(obs, 3),
            temperature_c=round(self.ambient + 12 * obs + self.rng.uniform(-0.3, 0.3), 1),
            battery_pct=int(pct), battery_v=round(2.6 + 0.45 * pct / 100, 2),
            rsrp_dbm=rsrp, sinr_db=round((rsrp + 125) / 3 + self.rng.uniform(-2, 2), 1),
            heartbeat_s=self.heartbeat_s))

    def _heartbeat(self, t: int, out: list[Outgoing]) -> None:
        out.append(self.status(t))
        pct = self.battery_pct(t)
        if not self.low_battery_sent and pct <= self.config.low_battery_pct:
            self.low_battery_sent = True
            out.append(self.event(t, "low_battery", incident=self.battery_incident,
                                  battery_pct=int(pct),
                                  battery_v=round(2.6 + 0.45 * pct / 100, 2)))
        self.next_heartbeat = t + self._jittered_ms(self.heartbeat_s)

    def _sample(self, t: int, out: list[Outgoing]) -> None:
        obs = self.obscuration(t)
        threshold = self.config.alarm_db_m
        if self.alarm is None and obs >= threshold:
            self.alarm = max(self.sources, key=lambda s: s.obscuration(self.id, t))
            self.alarm_ts = t
            out.append(self.event(t, "alarm", incident=self.alarm.incident,
                                  obscuration_db_m=round(obs, 3),
                                  temperature_c=round(self.ambient + 12 * obs, 1)))
            if self.alarm.mute_after_s is not None:
                self.schedule(t + int(self.alarm.mute_after_s * 1000), "mute",
                              duration_s=600, incident=self.alarm.incident)
        elif self.alarm is not None and obs < threshold / 2:
            out.append(self.event(t, "alarm_clear", incident=self.alarm.incident))
            self.alarm = None
        # Keep sampling while any source may still matter; then sleep until the next one.
        live = [s for s in self.sources if t < s.settled_ms(self.id, threshold / 4)]
        self.sources = live
        if live or self.alarm is not None:
            self.next_sample = t + int(self.config.sample_s * 1000)
        else:
            self.next_sample = NEVER


class Camera(Device):
    kind = "camera"

    def __init__(self, spec: DeviceSpec, config: ModelConfig, rng: random.Random,
                 start_ms: int) -> None:
        super().__init__(spec, config, rng, start_ms)
        self.next_keepalive = start_ms + int(rng.random() * config.camera_keepalive_s * 1000)
        self.storage_free_mb = rng.randint(20_000, 200_000)
        self.temperature = rng.uniform(35, 48)
        self.video_loss = False
        self.occluded = False

    def _next_ms(self) -> int:
        return min(self.next_keepalive, super()._next_ms())

    def status(self, t: int) -> Outgoing:
        online = not self.video_loss
        self.storage_free_mb = max(0, self.storage_free_mb - self.rng.randint(0, 3))
        return self.telemetry(m.camera_status(
            self.next_seq(), t, stream_online=online,
            recording=online and self.storage_free_mb > 0,
            storage_free_mb=self.storage_free_mb,
            temperature_c=round(self.temperature + self.rng.uniform(-0.5, 0.5), 1)))

    def see_fire(self, incident: str, smoke_ms: int, fire_ms: int | None) -> None:
        """Video analytics will see smoke at smoke_ms and flame at fire_ms."""
        self.schedule(smoke_ms, "smoke_detected", incident=incident,
                      confidence=round(self.rng.uniform(0.62, 0.9), 2))
        if fire_ms is not None:
            self.schedule(fire_ms, "fire_detected", incident=incident,
                          confidence=round(self.rng.uniform(0.7, 0.97), 2))

    def _step(self, t: int, out: list[Outgoing]) -> None:
        if t == self.next_keepalive and not (self.scripted and self.scripted[0][0] == t):
            out.append(self.status(t))
            self.next_keepalive = t + self._jittered_ms(self.config.camera_keepalive_s)
            return
        kind, fields = self.scripted[0][2], self.scripted[0][3]
        if kind == "video_loss":
            self.video_loss = fields["active"]
        elif kind == "occlusion":
            self.occluded = fields["active"]
        elif kind in ("smoke_detected", "fire_detected") and (self.video_loss or self.occluded):
            heapq.heappop(self.scripted)   # a blind camera sees nothing
            return
        super()._step(t, out)


class Gateway(Device):
    kind = "gateway"

    def __init__(self, spec: DeviceSpec, config: ModelConfig, rng: random.Random,
                 start_ms: int) -> None:
        super().__init__(spec, config, rng, start_ms)
        self.pending: list[Outgoing] = []
        self.flush_at = NEVER

    def collect(self, msg: Outgoing) -> None:
        """A message from a device behind this gateway (over LoRa or RS-485)."""
        # Only a device's own well-formed messages come this way (hostile and flood ones need
        # a connection of their own: simulators.timeline), so ts and message are always set.
        assert msg.ts is not None and msg.message is not None
        self.pending.append(msg)
        at = msg.ts if msg.critical else msg.ts + int(self.config.gateway_batch_s * 1000)
        self.flush_at = min(self.flush_at, at)

    def _next_ms(self) -> int:
        return min(self.flush_at, super()._next_ms())

    def _step(self, t: int, out: list[Outgoing]) -> None:
        if t != self.flush_at:
            super()._step(t, out)
            return
        while self.pending:
            batch = self.pending[: self.config.gateway_max_entries]
            del self.pending[: len(batch)]
            # collect() checked each message is there.
            entries = [{"device_id": e.device_id, **cast(m.Message, e.message)} for e in batch]
            msg = m.gateway(self.next_seq(), entries, t)
            out.append(Outgoing(
                self.id, "gateway", "gateway", t, msg["seq"], m.encode(msg), msg,
                critical=any(e.critical for e in batch),
                incident=next((e.incident for e in batch if e.incident), None),
                entries=tuple((e.device_id, e.ts, e.seq, e.type) for e in batch)))
        self.flush_at = NEVER


MODELS = {"smoke_detector": SmokeDetector, "camera": Camera, "gateway": Gateway}


def build(spec: DeviceSpec, config: ModelConfig, seed: int, start_ms: int) -> Device:
    # One generator per device, seeded by (seed, id): adding a device or a scenario does not
    # change what the others do.
    rng = random.Random(f"{seed}:{spec.id}")
    return MODELS[spec.kind](spec, config, rng, start_ms)
