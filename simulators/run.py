"""`firegrid simulate`: a street of simulated devices against a real broker.

    run_simulation(settings, preset="small", scenarios=["fire"], speed=60, seed=1,
                   truth_path=Path("truth.jsonl"))

One asyncio loop drives everything (simulators.engine on a ScaledClock): it sleeps until the
next thing is due, or until a connection reports back, and steps the engine. Two modes:

    per-device    every device not behind a gateway has its own MQTT connection, client id
                  and username = its device id, password from the topology, so a broker
                  enforcing per-device ACLs is exercised for real (simulators.mqtt).
                  `source_addrs` spreads the connections over local addresses (127.0.0.2,
                  ...): one source address reaches one broker port ~28,000 times at most.
    multiplexed   the devices' messages over `connections` shared connections logged in
                  with the settings' MQTT account, pipelined (simulators.mux): raw load.

Either way each message comes from its device model with its own ts and seq, and the truth
file records it.

The simulated clock is started in the past by (span - span/speed), so a run compressed by
`speed` ends on the wall clock: device timestamps never lie in the future, which ingest
would refuse (future_timestamp). A run lasts the scenarios' span (or duration_s), then
gives in-flight messages a few seconds to be acknowledged, records in the truth file what
never was, and disconnects. stop_event or Ctrl-C ends it early the same way.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from runtime.settings import Settings
from simulators import scenarios as scenario_files
from simulators import timeline, topology
from simulators.clock import ScaledClock, start_for
from simulators.engine import Engine, LinkFactory, Stats
from simulators.errors import SimulatorError
from simulators.mqtt import LinkCounters, MqttLink
from simulators.mux import Mux, MuxConnection
from simulators.people import Crowd, PeopleConfig, enlist
from simulators.scenarios import Scenario
from simulators.topology import DeviceSpec
from simulators.truth import Truth

MODES = ("per-device", "multiplexed")


@dataclass
class Progress:
    elapsed_s: float
    sim_ms: int
    speed: float
    devices: int            # devices with their own connection
    connected: int
    published: int
    acked: int
    resent: int
    rate: float             # first publishes per real second, since the last report
    dropped: int
    connect_errors: int
    lost: int
    last_error: str
    connect_causes: dict[str, int] = field(default_factory=dict)   # connect_errors by cause

    def line(self) -> str:
        sim = time.strftime("%H:%M:%S", time.gmtime(self.sim_ms / 1000))
        return (f"sim {sim} UTC (x{self.speed:g}) | connected {self.connected}/{self.devices}"
                f" | {self.rate:7.1f} msg/s | published {self.published} acked {self.acked}"
                f" resent {self.resent} dropped {self.dropped}"
                f" | errors: connect {self.connect_errors} lost {self.lost}")


@dataclass
class Summary:
    scenario: str
    start_ms: int
    end_ms: int
    real_s: float
    stats: Stats
    counters: LinkCounters
    truth_path: Path | None
    interrupted: bool = False
    truth: Truth | None = field(default=None, repr=False)


def run_simulation(settings: Settings, *, preset: str = "small",
                   scenarios: Sequence[str | Path] = (), speed: float = 60.0, seed: int = 1,
                   truth_path: Path | None = None, mode: str = "per-device",
                   stop_event: threading.Event | None = None,
                   progress_cb: Callable[[Progress], None] | None = None,
                   duration_s: float | None = None, topology_dir: Path | None = None,
                   connect_concurrency: int = 200, drain_s: float = 5.0,
                   connections: int = 4, keepalive_s: int | None = None,
                   source_addrs: Sequence[str] = (), street: topology.Topology | None = None,
                   people_api: str | None = None) -> Summary:
    """Run the scenarios on a simulated street; see the module doc. Raises SimulatorError
    (ScenarioError, TopologyError) before connecting anything if the input is wrong.

    connections: shared connections in multiplexed mode. keepalive_s: the devices' MQTT
    keepalive (default mqtt.keepalive_s; NB-IoT devices use minutes, which also keeps the
    pings of 100,000 connections cheap). source_addrs: local addresses per-device
    connections are bound to, round robin. street: an already loaded topology (benchmarks
    that build one bigger than the presets). people_api: the HTTP API's base URL; with it
    and a scenario's [people] table, the registry's grid workers, leaders and duty officers
    answer their pages (simulators.people) in real time, whatever the speed, and what each
    did goes into the truth as `person` records."""
    if mode not in MODES:
        raise SimulatorError(f"mode {mode!r}: modes are {', '.join(MODES)}")
    if connections < 1:
        raise SimulatorError(f"connections must be >= 1, not {connections}")
    if speed <= 0:
        raise SimulatorError(f"speed must be > 0, not {speed}")
    if street is None and topology_dir is None and preset not in topology.PRESETS:
        raise SimulatorError(
            f"no preset {preset!r}; presets: {', '.join(sorted(topology.PRESETS))}")
    scenario = scenario_files.combine([scenario_files.load(s) for s in scenarios])
    if street is None:
        if topology_dir is None:
            # The seed makes the street, ids and passwords: `--preset small --seed 7` is the
            # street `firegrid demo` registers, so its devices can log in.
            with tempfile.TemporaryDirectory(prefix="fg-sim-") as tmp:
                topology.generate(Path(tmp), preset, seed)
                street = topology.load(Path(tmp))
        else:
            street = topology.load(topology_dir)
    span_ms = int((duration_s if duration_s is not None else scenario.span_s()) * 1000)
    truth = Truth(truth_path)
    state = _State()
    crowd = _people(settings, scenario.people, people_api, truth)
    try:
        asyncio.run(_run(settings, street, scenario, speed, seed, span_ms, truth, state,
                         stop_event, progress_cb, connect_concurrency, drain_s,
                         preset if topology_dir is None else str(topology_dir), mode,
                         _Wiring(connections, keepalive_s or settings.mqtt.keepalive_s,
                                 tuple(source_addrs))))
    except KeyboardInterrupt:
        state.interrupted = True
    finally:
        if state.engine is not None and not state.finished:
            state.engine.finish()
        if crowd is not None:
            crowd.stop()
            for action in crowd.actions:
                truth.write("person", **action)
        truth.close()
    engine = state.engine
    return Summary(scenario.name, engine.start_ms if engine else 0, state.end_ms,
                   time.monotonic() - state.t0, engine.stats if engine else Stats(),
                   state.counters, truth_path, state.interrupted,
                   truth if truth_path is None else None)


_CAUSES = {"fire": "real_fire", "cooking": "cooking_steam"}


def _people(settings: Settings, config: PeopleConfig | None, api_url: str | None,
            truth: Truth) -> Crowd | None:
    """The scenario's people, answering pages through the API, or None without both."""
    if config is None or api_url is None:
        return None
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        people = enlist(conn)
    if not people:
        raise SimulatorError("the scenario has [people] but the registry has nobody on a"
                             " ladder role: import workers.csv first")
    return Crowd(people, config, api=httpx.Client(base_url=api_url, timeout=30),
                 mqtt_host=settings.mqtt.host, mqtt_port=settings.mqtt.port,
                 page_prefix=settings.alerts.page_topic_prefix,
                 cause_of=lambda b: _CAUSES.get(truth.buildings.get(b, ""), "dust_insects"),
                 client_id=f"{settings.mqtt.client_id}-people").start()


@dataclass(frozen=True)
class _Wiring:
    connections: int
    keepalive_s: int
    source_addrs: tuple[str, ...]


@dataclass
class _State:
    engine: Engine | None = None
    counters: LinkCounters = field(default_factory=LinkCounters)
    t0: float = field(default_factory=time.monotonic)
    end_ms: int = 0
    finished: bool = False
    interrupted: bool = False


async def _run(settings: Settings, street: topology.Topology, scenario: Scenario,
               speed: float, seed: int, span_ms: int, truth: Truth, state: _State,
               stop_event: threading.Event | None,
               progress_cb: Callable[[Progress], None] | None, concurrency: int,
               drain_s: float, street_name: str, mode: str, wiring: _Wiring) -> None:
    clock = ScaledClock(start_for(span_ms, speed), speed)
    slots = asyncio.Semaphore(concurrency)
    links: list[MqttLink] = []
    mq = settings.mqtt
    mux: Mux | None = None
    factory: LinkFactory
    if mode == "multiplexed":
        mux = Mux(wiring.connections, host=mq.host, port=mq.port,
                  client_prefix=f"fgsim-{os.getpid()}-{seed}", username=mq.username,
                  password=mq.password.get_secret_value() if mq.password else None,
                  keepalive_s=wiring.keepalive_s,
                  counters=state.counters)
        mux.start()
        factory = mux.link
    else:
        addrs = wiring.source_addrs

        def per_device(spec: DeviceSpec, on_lost: Callable[[], None]) -> MqttLink:
            link = MqttLink(spec, on_lost, host=mq.host, port=mq.port, slots=slots,
                            counters=state.counters, keepalive_s=wiring.keepalive_s,
                            source_addr=addrs[len(links) % len(addrs)] if addrs else None)
            links.append(link)
            return link

        factory = per_device

    engine = Engine(street, clock=clock, seed=seed, truth=truth, link_factory=factory,
                    prefix=mq.topic_prefix, models=scenario.devices, uplink=scenario.uplink)
    state.engine = engine
    wake = asyncio.Event()
    engine.kick = wake.set
    truth.write("run", seed=seed, street=street_name, scenario=scenario.name, speed=speed,
                mode=mode, topic_prefix=mq.topic_prefix, start_ts=engine.start_ms,
                span_ms=span_ms, devices=len(street.devices),
                connections=len(engine.uplinks) if mux is None else wiring.connections)
    timeline.plan(engine, scenario, seed)
    end_ms = engine.start_ms + span_ms
    state.end_ms = end_ms
    pinger = asyncio.get_running_loop().create_task(
        _ping(links if mux is None else mux.conns, wiring.keepalive_s))
    report = _Reporter(engine, state.counters, speed, progress_cb)

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    try:
        while not stopped():
            now = min(clock.now_ms(), end_ms)
            nxt = engine.step(now, budget=_STEP_BUDGET)
            report.maybe(now)
            if now >= end_ms and nxt > end_ms:
                break            # the end, and nothing due before it left undone
            # Wake for the next thing due, a link's news, or at least 5x/s for stop_event.
            await _nap(wake, min(clock.real_delay_s(min(nxt, end_ms)), 0.2))
        # Give what is in flight a moment to be acknowledged before counting it unacked.
        deadline = time.monotonic() + drain_s
        while not stopped() and time.monotonic() < deadline and _busy(engine):
            engine.step(end_ms, budget=_STEP_BUDGET)
            await _nap(wake, 0.05)
        report.maybe(end_ms, force=True)
    finally:
        pinger.cancel()
        engine.finish()
        if mux is not None:
            mux.close()
        state.finished = True
        await asyncio.sleep(0)   # let the closed connections' tasks end quietly


# Scheduled things per engine step before the loop gets back to its sockets: when the engine
# falls behind the clock it would otherwise build a whole backlog before writing any of it.
_STEP_BUDGET = 2000


def _busy(engine: Engine) -> bool:
    # A connection still being opened counts: a device back from a drop just before the end
    # (a flapping one, a slow login on a loaded broker) is about to resend what it holds.
    return any((up.state == "online" and (up.inflight or up.buffer)) or up.state == "connecting"
               for up in engine.uplinks.values())


async def _nap(wake: asyncio.Event, seconds: float) -> None:
    wake.clear()
    try:
        await asyncio.wait_for(wake.wait(), max(seconds, 0.001))
    except TimeoutError:
        pass


async def _ping(links: Sequence[MqttLink | MuxConnection], keepalive_s: int) -> None:
    # One task pings every idle-or-not connection at half the keepalive: simpler than
    # tracking each connection's last packet, and a PINGREQ is two bytes.
    while True:
        await asyncio.sleep(keepalive_s / 2)
        for link in links:
            link.ping()


class _Reporter:
    def __init__(self, engine: Engine, counters: LinkCounters, speed: float,
                 cb: Callable[[Progress], None] | None) -> None:
        self.engine, self.counters, self.speed, self.cb = engine, counters, speed, cb
        self.t0 = self.last_t = time.monotonic()
        self.last_published = 0

    def maybe(self, sim_ms: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.cb is None or (now - self.last_t < 1.0 and not force):
            return
        s = self.engine.stats
        rate = (s.published - self.last_published) / max(now - self.last_t, 1e-6)
        self.last_t, self.last_published = now, s.published
        self.cb(Progress(now - self.t0, sim_ms, self.speed, len(self.engine.uplinks),
                         s.connected, s.published, s.acked, s.resent, rate, s.dropped,
                         self.counters.connect_errors, self.counters.lost,
                         self.counters.last_error, dict(self.counters.connect_causes)))
