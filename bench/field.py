#!/usr/bin/env python
"""The field outcome (issue 15): does every fire reach a person who acts within 60 s?

    .venv/bin/python bench/field.py                 # street preset, 20 fires + 20 cooking
                                                    # alarms, seeds 1 2 3: about 35 minutes
    .venv/bin/python bench/field.py --quick         # small preset, 5 + 5, one seed: ~6 min

A private, durable PostgreSQL and a private Mosquitto; the preset imported with `firegrid
devices import` (its generated roster: per grid one grid worker on shift and the leader,
two duty officers per community, two at the street); as child processes `firegrid
ingest`, `firegrid alerts run`, `firegrid api serve` and, unless --speed 0, `firegrid
simulate --mode multiplexed` at real speed (the street's telemetry and its random false
alarms in the background). A 119 receiver stands in for the fire service's hook.

The people are simulators.people: every grid worker, leader and duty officer with a token
of their own, getting pages on the page topics and acting through the HTTP API. Per seed
--silent of them never answer (drawn from the seed); the others look at a page after
5-50 s (field people) or 5-25 s (officers at a board), acknowledge unless somebody has,
go (30-120 s), confirm a fire they see (10-60 s) and resolve with the true cause;
officers at a board confirm a fire from the camera and leave it open for the people there.

Halfway through each seed's spread every grid worker on shift hands over to the grid's
other worker (issue 16; --no-shift-change to keep them): open incidents nobody has taken
page the incoming worker (alerts/handover.py), whose own silence is drawn like anyone's.

Per seed, in buildings of their own (never reused across seeds), spread over --spread s:
    fire     a detector alarms; with probability 1 - --one-detector another detector of the
             building alarms 30-150 s later (the devices confirm it); otherwise only a
             person can (人工确认)
    cooking  a detector alarms, a resident hushes it 10-90 s later (mute), it clears 30-120 s
             after that; no other device agrees
Printed per fire: first alarm -> first page on a phone, -> first acknowledgement by a
person, -> on site, -> confirmed, -> first page to a community officer, -> 119; and
confirmed -> the community officers' phones. Per cooking alarm: the highest level paged, and
whether that page was written after the detector was hushed or cleared. Times are seconds
from the first alarm's publish (wall clock of this one machine).

The last line printed is always
    RESULT fires=<n> fires_acked_60s=<n> ack_p50_s=<x> ack_p99_s=<x> ack_max_s=<x>
           confirmed_to_community_max_s=<x> cooking=<n> cooking_beyond_grid=<n>
           cooking_beyond_grid_after_clear=<n> duplicate_pages_shown=<n> redelivered=<n>
Percentiles are nearest-rank. Ctrl-C or `kill <pid>` stops it cleanly.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import random
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench.harness import Child, check_roster, child_env, pct, register, services  # noqa: E402
from runtime.localsvc import free_port  # noqa: E402
from simulators import messages as m  # noqa: E402
from simulators import topology  # noqa: E402
from simulators.people import Crowd, Habits, PeopleConfig, enlist  # noqa: E402

PAGES = "firegrid/v1/workers"    # alerts.page_topic_prefix, the shipped default
PREFIX = "fg/v1"                 # mqtt.topic_prefix
LEVELS = {"grid_worker": 0, "grid_leader": 0, "community_duty": 1, "street_duty": 2}
LEVEL_NAMES = ("grid", "community", "street")


@dataclass
class Case:
    """One fire or cooking alarm: what the devices do, and what came of it."""
    kind: str                                   # fire | cooking
    building: str
    script: list[tuple[float, str, str, dict]]  # offset s, device, event type, fields
    start: float = 0.0                          # wall clock of the first alarm's publish
    cleared: float | None = None                # wall clock of the hush (cooking)
    out: dict = field(default_factory=dict)


class FireService(http.server.ThreadingHTTPServer):
    """The 119 hook: remembers when each incident's call came."""

    def __init__(self) -> None:
        self.calls: dict[int, float] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls.setdefault(int(body.get("incident_id", -1)), time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/119"


class Devices:
    """The detectors' side: QoS 1 events on their own topics."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-field-devices")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 2_000_000

    def send(self, device: str, kind: str, fields: dict) -> float:
        self.seq += 1
        at = time.time()
        self.client.publish(m.topic(device, "event", PREFIX),
                            m.encode(m.event(kind, self.seq, **fields)), qos=1)
        return at

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def plan(a, detectors: dict[str, list[str]], used: set[str], rng: random.Random) -> list[Case]:
    free = sorted(b for b in detectors if b not in used)
    rng.shuffle(free)
    twos = [b for b in free if len(detectors[b]) >= 2]
    fires = twos[:a.fires]
    ones = [b for b in free if b not in fires][:a.cooking]
    if len(fires) < a.fires or len(ones) < a.cooking:
        raise SystemExit(f"the preset has too few unused buildings for {a.fires} fires and "
                         f"{a.cooking} cooking alarms; fewer seeds or a bigger preset")
    used.update(fires + ones)
    cases = []
    for b in fires:
        first, second = rng.sample(detectors[b], 2)
        script = [(0.0, first, "alarm", {"obscuration_db_m": 1.5})]
        if rng.random() >= a.one_detector:
            script.append((rng.uniform(30, 150), second, "alarm", {"obscuration_db_m": 2.0}))
        cases.append(Case("fire", b, script))
    for b in ones:
        d = rng.choice(detectors[b])
        hush = rng.uniform(10, 90)
        cases.append(Case("cooking", b, [
            (0.0, d, "alarm", {"obscuration_db_m": 0.6}),
            (hush, d, "mute", {"duration_s": 600}),
            (hush + rng.uniform(30, 120), d, "alarm_clear", {})]))
    offsets = {id(c): rng.uniform(0, a.spread) for c in cases}
    for c in cases:
        c.script = [(t + offsets[id(c)], d, k, f) for t, d, k, f in c.script]
    return cases


def play(cases: list[Case], devices: Devices) -> None:
    """Send every case's events at their offsets from now, in one timeline."""
    timeline = sorted((t, i, c, d, k, f) for i, c in enumerate(cases)
                      for t, d, k, f in c.script)
    begin = time.monotonic()
    for t, _, case, device, kind, fields in timeline:
        delay = begin + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = devices.send(device, kind, fields)
        if kind == "alarm" and not case.start:
            case.start = at
        if kind == "mute":
            case.cleared = at


# Every grid worker on shift hands over to the grid's other worker, now: the shift change
# of issue 16, in the middle of the fires (the generated roster has two grid workers per
# grid, -W1 and -W2, on alternate 12 h shifts).
_SHIFT_CHANGE = """
    WITH ending AS (
        UPDATE roster r SET ends_at = now() FROM workers w
        WHERE w.id = r.worker_id AND w.role = 'grid_worker'
          AND r.starts_at <= now() AND r.ends_at > now()
        RETURNING r.worker_id)
    INSERT INTO roster (worker_id, starts_at, ends_at)
    SELECT left(worker_id, -1) || CASE WHEN worker_id LIKE '%-W1' THEN '2' ELSE '1' END,
           now(), now() + interval '12 hours'
    FROM ending ON CONFLICT DO NOTHING"""


def shift_change(url: str, after_s: float, done: list[float]) -> threading.Timer:
    def change() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            n = conn.execute(_SHIFT_CHANGE).rowcount
        done.append(time.time())
        print(f"  shift change: {n} grid workers came on duty", flush=True)
    timer = threading.Timer(after_s, change)
    timer.start()
    return timer


def settle(conn: psycopg.Connection, cases: list[Case], timeout: float) -> None:
    """Wait until every case has played out: resolved, or 6 minutes old and, for a fire,
    acknowledged and confirmed (an officer at a board confirms a fire and leaves it open)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = conn.execute(
            "SELECT DISTINCT ON (building_id) building_id, state = 'resolved',"
            " acknowledged_at IS NOT NULL AND confirmed_at IS NOT NULL FROM incidents"
            " WHERE building_id = ANY(%s) ORDER BY building_id, id",
            [[c.building for c in cases]]).fetchall()
        done = {b: resolved or handled for b, resolved, handled in rows}
        old = {b: resolved for b, resolved, _ in rows}
        if all(old.get(c.building) or (time.time() - c.start > 360 and (
                c.kind == "cooking" or done.get(c.building))) for c in cases):
            return
        time.sleep(1)
    print("  (not settled in time: the unfinished ones are reported as they are)", flush=True)


def measure(conn: psycopg.Connection, cases: list[Case], crowd: Crowd, roles: dict[str, str],
            fire_service: FireService) -> None:
    for c in cases:
        row = conn.execute(
            "SELECT id, extract(epoch FROM acknowledged_at), extract(epoch FROM on_site_at),"
            " extract(epoch FROM confirmed_at), acknowledged_by, state, cause FROM incidents"
            " WHERE building_id = %s ORDER BY id LIMIT 1", [c.building]).fetchone()
        if row is None:
            c.out = {"incident": None}
            continue
        inc, ack, site, confirmed, by, state, cause = row
        paged = [(a["at"], a["worker"], a["severity"]) for a in crowd.actions
                 if a["action"] == "paged" and a["incident"] == inc]
        community = [at for at, w, _ in paged if roles.get(w) == "community_duty"]
        after_confirm = [at for at, w, sev in paged
                         if roles.get(w) == "community_duty" and sev == "confirmed"]
        levels = conn.execute(
            "SELECT w.role, extract(epoch FROM p.created_at) FROM pages p"
            " JOIN workers w ON w.id = p.worker_id WHERE p.incident_id = %s", [inc]).fetchall()
        top = max((LEVELS.get(r, 0) for r, _ in levels), default=0)
        beyond_after_clear = c.cleared is not None and any(
            LEVELS.get(r, 0) > 0 and float(t) >= c.cleared for r, t in levels)

        def rel(t, start: float = c.start) -> float:
            return float(t) - start if t is not None else math.nan
        c.out = {"incident": inc, "page": rel(min((p[0] for p in paged), default=None)),
                 "ack": rel(ack), "site": rel(site), "confirmed": rel(confirmed),
                 "community": rel(min(community, default=None)),
                 "to_community": (min(after_confirm) - float(confirmed)
                                  if after_confirm and confirmed else math.nan),
                 "119": rel(fire_service.calls.get(inc)), "by": by or "-", "state": state,
                 "cause": cause or "-", "level": LEVEL_NAMES[top],
                 "beyond_after_clear": beyond_after_clear}


def report_seed(seed: int, cases: list[Case]) -> None:
    def f(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.1f}"
    print(f"\nseed {seed}: fires (seconds from the first alarm)")
    print(f"  {'building':10} {'page':>6} {'ack':>6} {'site':>6} {'confirm':>7} "
          f"{'commun.':>7} {'119':>6} {'conf->c':>7}  by, cause")
    for c in (c for c in cases if c.kind == "fire"):
        o = c.out
        if o.get("incident") is None:
            print(f"  {c.building:10} no incident")
            continue
        late = "  LATE" if not o["ack"] <= 60 else ""
        print(f"  {c.building:10} {f(o['page']):>6} {f(o['ack']):>6} {f(o['site']):>6} "
              f"{f(o['confirmed']):>7} {f(o['community']):>7} {f(o['119']):>6} "
              f"{f(o['to_community']):>7}  {o['by']}, {o['cause']}{late}")
    print(f"seed {seed}: cooking alarms")
    for c in (c for c in cases if c.kind == "cooking"):
        o = c.out
        if o.get("incident") is None:
            print(f"  {c.building:10} no incident")
            continue
        hush = c.cleared - c.start if c.cleared else math.nan
        note = "  PAGED BEYOND THE GRID AFTER THE HUSH" if o["beyond_after_clear"] else ""
        print(f"  {c.building:10} hushed at {f(hush):>5} s, highest level paged: "
              f"{o['level']:9} ack {f(o['ack']):>5} {o['state']}, {o['cause']}{note}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small preset, 5 + 5, one seed")
    p.add_argument("--preset", default="street", choices=sorted(topology.PRESETS))
    p.add_argument("--fires", type=int, default=20)
    p.add_argument("--cooking", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--silent", type=float, default=0.3, help="share of people who never answer")
    p.add_argument("--one-detector", type=float, default=0.25,
                   help="share of fires only one detector sees")
    p.add_argument("--spread", type=float, default=240, help="seconds over which cases start")
    p.add_argument("--speed", type=float, default=1, help="background simulator speed (0: none)")
    p.add_argument("--rules", help="an alerts rules file instead of the shipped one")
    p.add_argument("--no-shift-change", dest="shift_change", action="store_false",
                   help="keep the grid workers on; by default every grid worker on shift "
                        "hands over to the grid's other worker halfway through the spread")
    p.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    a = p.parse_args(argv)
    if a.quick:
        a.preset, a.fires, a.cooking, a.seeds, a.spread = "small", 5, 5, [1], 60
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        return run(a, stack)


def run(a: argparse.Namespace, stack: ExitStack) -> int:
    work, _, mq, url, conn = services(stack, "field", a.keep)
    fire_service = FireService()
    stack.callback(fire_service.shutdown)
    api_port = free_port()
    env = child_env(mq, url, 0)
    env.update({"FIREGRID_ALERTS__FIRE_SERVICE_URL": fire_service.url,
                "FIREGRID_ALERTS__WEBHOOK_SECRET": "bench-secret",
                "FIREGRID_API__PORT": str(api_port)})
    if a.rules:
        env["FIREGRID_ALERTS__RULES_FILE"] = str(Path(a.rules).resolve())
    detectors = register(work, a.preset, env)
    hours = (len(a.seeds) * (a.spread + 900)) / 3600 + 0.5
    check_roster(conn, hours)
    children = [Child("ingest", ["ingest"], env, work, stack),
                Child("alerts", ["alerts", "run"], env, work, stack),
                Child("api", ["api", "serve"], env, work, stack)]
    if a.speed > 0:
        children.append(Child("simulate", [
            "simulate", "--preset", a.preset, "--speed", f"{a.speed:g}", "--mode",
            "multiplexed", "--seconds", str(int(a.speed * hours * 3600))], env, work, stack))
    api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}",
                                           timeout=30))
    people = enlist(conn)
    roles = {p.worker_id: p.role for p in people}
    wait_for_api(api, people[0].token)
    devices = Devices(mq.port)
    stack.callback(devices.close)
    used: set[str] = set()
    everything: list[Case] = []
    dupes = redelivered = 0
    try:
        for seed in a.seeds:
            cases = plan(a, detectors, used, random.Random(seed))
            habits = PeopleConfig(
                seed=seed,
                field=Habits(silent=a.silent, acknowledge_s=(5, 50), arrive_s=(30, 120),
                             confirm_s=(10, 60), resolve_s=(20, 60)),
                desk=Habits(silent=a.silent, acknowledge_s=(5, 25), arrive_s=(30, 120),
                            confirm_s=(10, 60), resolve_s=(20, 60)))
            truth = {c.building: ("real_fire" if c.kind == "fire" else "cooking_steam")
                     for c in cases}
            crowd = Crowd(people, habits, api=api, mqtt_host=mq.host, mqtt_port=mq.port,
                          page_prefix=PAGES, client_id=f"bench-people-{seed}",
                          cause_of=lambda b, t=truth: t.get(b, "dust_insects")).start()
            print(f"seed {seed}: {a.fires} fires and {a.cooking} cooking alarms over "
                  f"{a.spread:g} s; {len(crowd.silent)} of {len(people)} people silent",
                  flush=True)
            changed: list[float] = []
            timer = (shift_change(url, a.spread / 2, changed) if a.shift_change else None)
            try:
                play(cases, devices)
                settle(conn, cases, 1200)
            finally:
                if timer:
                    timer.cancel()
                crowd.stop()
            handed = conn.execute("SELECT count(*) FROM incident_log WHERE action ="
                                  " 'handed_over' AND incident_id IN (SELECT id FROM"
                                  " incidents WHERE building_id = ANY(%s))",
                                  [[c.building for c in cases]]).fetchone()[0]
            if changed:
                print(f"  incidents handed over at the shift change: {handed}", flush=True)
            for c in children:
                if c.proc.poll() is not None:
                    raise RuntimeError(f"{c.name} exited ({c.proc.returncode}); see {c.log}")
            measure(conn, cases, crowd, roles, fire_service)
            report_seed(seed, cases)
            redelivered += crowd.repeats
            everything += cases
    except BaseException:
        for c in children:
            print(f"--- {c.name} log, last lines:", file=sys.stderr)
            print("".join(c.log.read_text(errors="replace").splitlines(True)[-15:]),
                  file=sys.stderr)
        raise
    summary(everything, dupes, redelivered)
    return 0


def wait_for_api(api: httpx.Client, token: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if api.get("/v1/incidents", headers={"Authorization": f"Bearer {token}"}
                       ).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not answer in 60 s")


def summary(cases: list[Case], dupes: int, redelivered: int) -> None:
    fires = [c.out for c in cases if c.kind == "fire" and c.out.get("incident")]
    cooking = [c.out for c in cases if c.kind == "cooking" and c.out.get("incident")]
    acks = [o["ack"] for o in fires]
    ok = sum(1 for x in acks if x <= 60)
    to_c = [o["to_community"] for o in fires if not math.isnan(o["to_community"])]
    beyond = sum(1 for o in cooking if o["level"] != "grid")
    after = sum(1 for o in cooking if o["beyond_after_clear"])
    print(f"\nall seeds: {len(fires)} fires, {ok} acknowledged by a person within 60 s of "
          f"their first alarm; confirmed -> community officers' phones max "
          f"{max(to_c, default=math.nan):.2f} s; {len(cooking)} cooking alarms, {beyond} paged "
          f"beyond the grid ({after} of them after the hush)")
    print(f"RESULT fires={len(fires)} fires_acked_60s={ok} ack_p50_s={pct(acks, 50):.1f} "
          f"ack_p99_s={pct(acks, 99):.1f} ack_max_s={max(acks, default=math.nan):.1f} "
          f"confirmed_to_community_max_s={max(to_c, default=math.nan):.2f} "
          f"cooking={len(cooking)} cooking_beyond_grid={beyond} "
          f"cooking_beyond_grid_after_clear={after} duplicate_pages_shown={dupes} "
          f"redelivered={redelivered}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
