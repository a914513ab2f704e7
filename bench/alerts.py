#!/usr/bin/env python
"""The alert core's benchmark (issue 5 item 11, issue 18): time to page, an alarm storm,
escalation timers, how fast pages drain, duplicate pages.

    .venv/bin/python bench/alerts.py             # about 2 minutes on 2 cores
    .venv/bin/python bench/alerts.py --quick     # smoke run: small preset, fewer samples

A private, durable PostgreSQL (fsync on) and a private Mosquitto (runtime.localsvc, shipped
conf.d) on 127.0.0.1; the street preset imported with `firegrid devices import`; then as
child processes with FIREGRID_* settings (shipped defaults otherwise): `firegrid ingest`,
`firegrid alerts run` and `firegrid simulate --preset street --speed 10 --mode multiplexed`
(the background load, on for every part). In this process: a publisher of alarm events; the
workers' phone is mosquitto_sub on {alerts.page_topic_prefix}/+/pages, which stamps each
page as it arrives. One clock, the wall clock, times the publish and the page's arrival.

    single   --samples alarms, one at a time, each from a detector in a building of its own
             with no open incident, 100-250 ms apart after the previous page: publish ->
             the first page of that building's incident on the grid worker's topic.
    storm    --storm-buildings x --storm-per-building detectors alarm within
             --storm-seconds, each building's alarms spread over the whole span: incidents
             opened (one per building), and each building's first publish -> first page.
    timers   --timers synthetic buildings (their own street, 100 buildings per grid, 10
             grids per community; a grid worker and leader per grid and a duty officer per
             community, on shift) with an incident each, inserted with SQL as notified at
             rung 0 of the warning ladder (its pages to the grid team already sent), all
             due at one instant a few seconds ahead. Rung 1 pages the community officer:
             one page per incident. Lateness = incident_log.at of the rung-1 firing - due;
             due -> each incident's page on the phone (issue 18: p99 <= 1 s, was 4.8 s).
    drain    the dispatcher alone: one more page per timers incident written pending in
             one transaction, with nothing else due: COMMIT -> on the phone, and pages a
             second = pages / the last one's time (issue 18: >= 10,000/s, was ~3,000/s).
    dupes    (page key, step, worker) triples the phone received more than once, all parts.

CPU per page (each process's CPU over the part / its pages) is printed for timers and drain:
unlike the times, it does not depend on what else the machine is doing.

The last line printed is always
    RESULT page_p50_ms=<x> page_p99_ms=<x> storm_incidents=<n> storm_page_p99_ms=<x>
           timer_late_p99_ms=<x> duplicate_pages=<n> timer_page_p99_ms=<x>
           drain_pages_per_s=<x> timer_page_vs_issue18=<x> drain_vs_issue18=<x>  (one line)
the last two: value / issue 18's baseline (4.8 s; 3,000 pages/s). Percentiles are
nearest-rank. Ctrl-C or `kill <pid>` stops it cleanly: children, services and temporary
directories are removed (--keep keeps the directory with every log).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.harness import (  # noqa: E402
    Child,
    CpuMeter,
    check_roster,
    child_env,
    pct,
    postmaster,
    register,
    services,
)
from runtime.localsvc import free_port  # noqa: E402
from simulators import messages as m  # noqa: E402
from simulators import topology  # noqa: E402

PAGES = "firegrid/v1/workers"    # alerts.page_topic_prefix, the shipped default
# Issue 18's measurement (main at d307ebe): 10,000 escalations due at once reached the phones
# p99 4.8 s after due; pages drained at ~3,000 a second.
BASELINE = {"timer_page_ms": 4800.0, "drain_per_s": 3000.0}
PREFIX = "fg/v1"                 # mqtt.topic_prefix


class Phone:
    """Every worker's page topic, through mosquitto_sub: the C client stamps each page with
    the wall clock as it arrives (-F %U), so an arrival time does not depend on this
    process keeping up. (A paho subscriber here took ~70 us of Python per page: at the
    10,000 pages a second issue 18 asks for, most of a core, on the same two cores as the
    alert core.) Remembers each page and the first page per building.

    The phone is the instrument, not the system measured: in the field it is somebody's
    handset. So this process only collects mosquitto_sub's lines while pages arrive, a
    read() of whatever is there, and parses them when `got`, `first` or `triples` is
    asked for (under `cond`): parsing each line as it came cost ~22 us of Python a page on
    the two cores the alert core needs during a burst of timers."""

    PROBE = f"{PAGES}/bench-probe/pages"

    def __init__(self, port: int) -> None:
        self.cond = threading.Condition()
        self._got: list[tuple[float, str, dict]] = []   # wall, worker, page
        self._first: dict[str, tuple[float, str, dict]] = {}   # building -> wall, worker, page
        self._triples: Counter = Counter()
        self._lines: list[bytes] = []    # read, not parsed yet
        self.lines = 0                   # read so far, parsed or not
        self.probes = 0
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", "bench-phone",
             "-q", "1", "-t", f"{PAGES}/+/pages", "-F", "%U %t %p"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:    # room for a burst while this process parses (Linux: F_SETPIPE_SZ)
            fcntl.fcntl(self.proc.stdout.fileno(), 1031, 1 << 20)
        except OSError:
            pass
        threading.Thread(target=self._read, name="phone", daemon=True).start()
        # mosquitto_sub says nothing when subscribed: a probe page it prints tells.
        probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-phone-probe")
        probe.connect("127.0.0.1", port)
        probe.loop_start()
        try:
            for _ in range(50):
                probe.publish(self.PROBE, b"{}", qos=1).wait_for_publish(5)
                if self.wait(lambda: self.probed, 0.2):
                    break
            else:
                raise RuntimeError("the phone did not subscribe")
        finally:
            probe.disconnect()
            probe.loop_stop()

    def _read(self) -> None:
        fd, tail = self.proc.stdout.fileno(), b""
        while chunk := os.read(fd, 1 << 20):
            *lines, tail = (tail + chunk).split(b"\n")
            with self.cond:
                self._lines.extend(lines)
                self.lines += len(lines)
                self.cond.notify_all()

    def _parse(self) -> None:
        """The lines read so far into pages (the caller holds cond)."""
        lines, self._lines = self._lines, []
        for line in lines:
            wall, topic, payload = line.split(b" ", 2)
            worker = topic.split(b"/")[-2].decode()
            if worker == "bench-probe":
                self.probes += 1
                continue
            page = json.loads(payload)
            self._got.append((float(wall), worker, page))
            self._triples[(page["key"], page["step"], worker)] += 1
            self._first.setdefault(page["building"]["id"], (float(wall), worker, page))

    @property
    def probed(self) -> bool:
        self._parse()
        return self.probes > 0

    @property
    def got(self) -> list[tuple[float, str, dict]]:
        self._parse()
        return self._got

    @property
    def first(self) -> dict[str, tuple[float, str, dict]]:
        self._parse()
        return self._first

    @property
    def triples(self) -> Counter:
        self._parse()
        return self._triples

    def wait_lines(self, n: int, timeout: float) -> bool:
        """Until n lines have come, without parsing any: how a part waits on a burst, where
        polling the database for 10,000 incidents every fraction of a second took
        PostgreSQL and this process ~15 % of a core from the two being measured."""
        with self.cond:
            return self.cond.wait_for(lambda: self.lines >= n, timeout)

    def wait(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Alarms:
    """The detectors' side: QoS 1 alarm events, timed (wall clock, as the phone) just before
    the publish call."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alarms")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 1_000_000

    def send(self, device: str) -> float:
        self.seq += 1
        topic = m.topic(device, "event", PREFIX)
        payload = m.encode(m.event("alarm", self.seq, obscuration_db_m=1.2))
        started = time.time()
        self.client.publish(topic, payload, qos=1)
        return started

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def synthetic_street(conn: psycopg.Connection, n: int) -> list[str]:
    """n buildings in a street of their own, 100 per grid and 10 grids per community; each
    grid with a grid worker and a grid leader, each community with a duty officer, all on
    shift now. The warning ladder's second rung (community duty) pages one person per
    building: n escalations, n pages."""
    grids = -(-n // 100)
    communities = -(-grids // 10)
    now = datetime.now(UTC)
    shift = (now - timedelta(hours=1), now + timedelta(hours=12))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO street_offices VALUES ('BS', 'bench street')")
        cur.executemany("INSERT INTO communities VALUES (%s, 'BS', 'bench community')",
                        [(f"BC{c:02d}",) for c in range(communities)])
        cur.executemany("INSERT INTO grids (id, community_id, name) VALUES (%s, %s, 'grid')",
                        [(f"BG{g:03d}", f"BC{g // 10:02d}") for g in range(grids)])
        people = [(f"BG{g:03d}-{r[0].upper()}", r, f"BG{g:03d}") for g in range(grids)
                  for r in ("worker", "leader")]
        officers = [(f"BC{c:02d}-D", f"BC{c:02d}") for c in range(communities)]
        cur.executemany("INSERT INTO workers (id, name, role) VALUES (%s, %s, %s)",
                        [(w, w, f"grid_{r}") for w, r, _ in people]
                        + [(w, w, "community_duty") for w, _ in officers])
        cur.executemany("INSERT INTO worker_areas (worker_id, grid_id) VALUES (%s, %s)",
                        [(w, g) for w, _, g in people])
        cur.executemany("INSERT INTO worker_areas (worker_id, community_id) VALUES (%s, %s)",
                        officers)
        cur.executemany("INSERT INTO roster (worker_id, starts_at, ends_at) VALUES (%s, %s, %s)",
                        [(w, *shift) for w in [p[0] for p in people] + [o[0] for o in officers]])
        ids = [f"BX{i:05d}" for i in range(n)]
        with cur.copy("COPY buildings (id, grid_id, address, lat, lon, floors, use)"
                      " FROM STDIN") as copy:
            for i, b in enumerate(ids):
                copy.write_row((b, f"BG{i // 100:03d}", f"bench {b}", 22.5, 114.1, 6, "rental"))
    return ids


def settle(conn: psycopg.Connection, phone: Phone, ids: list[int], timeout: float,
           step: int = 0, meter: CpuMeter | None = None) -> tuple[int, dict[str, float]]:
    """Wait until every MQTT page of these incidents (from this step on) is sent and on the
    phone; the number still missing when the time is up, and the meter's reading (CPU %
    per process since its start) when the outbox first said every page was sent, before
    the phone parses what it collected."""
    cpu: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute("SELECT 'incident-' || incident_id, step, worker_id, status"
                            " FROM pages WHERE incident_id = ANY(%s) AND channel = 'mqtt'"
                            " AND status <> 'muted' AND step >= %s", [ids, step]).fetchall()
        # The phone is asked (and parses what it collected) once the outbox says sent.
        missing = sum(1 for *_, st in rows if st != "sent")
        if not missing:
            if meter and not cpu:
                cpu = meter.read()
            with phone.cond:
                missing = sum(1 for k, s, w, _ in rows if (k, s, w) not in phone.triples)
        if not missing or time.monotonic() > deadline:
            return missing, cpu or (meter.read() if meter else {})
        time.sleep(0.2)


def part_single(conn, phone: Phone, alarms: Alarms, buildings: list[tuple[str, str]],
                rng: random.Random) -> dict:
    sent: dict[str, float] = {}
    for building, device in buildings:
        sent[building] = alarms.send(device)
        phone.wait(lambda b=building: b in phone.first, 10)
        time.sleep(rng.uniform(0.10, 0.25))
    ms = [(phone.first[b][0] - t) * 1000 for b, t in sent.items() if b in phone.first]
    # The first page goes to the grid team on duty for the building's grid.
    wrong = sum(1 for b in sent if b in phone.first
                and not phone.first[b][1].startswith(phone.first[b][2]["building"]["grid_id"]
                                                     + "-"))
    ids = [r[0] for r in conn.execute("SELECT id FROM incidents WHERE building_id = ANY(%s)",
                                      [list(sent)])]
    return {"ms": ms, "lost": len(sent) - len(ms), "wrong_worker": wrong, "incidents": len(ids)}


def part_storm(a, conn, phone: Phone, alarms: Alarms, plan: list[tuple[str, list[str]]]
               ) -> dict:
    n, k = len(plan), a.storm_per_building
    gap = a.storm_seconds / (n * k)
    # Round k sends the k-th detector of every building: each building's alarms are spread
    # over the whole span, and the first of every building is out in the first 1/k of it.
    order = [(r * n + j, b, ds[r]) for r in range(k) for j, (b, ds) in enumerate(plan)]
    first: dict[str, float] = {}
    start = time.perf_counter()
    for slot, building, device in order:
        delay = start + slot * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        first.setdefault(building, alarms.send(device))
    span = time.perf_counter() - start
    phone.wait(lambda: all(b in phone.first for b in first), 60)
    # The last alarms went out just now: count the incidents once every alert is recorded.
    deadline = time.monotonic() + 30
    while conn.execute("SELECT count(*) FROM alerts WHERE building_id = ANY(%s)",
                       [list(first)]).fetchone()[0] < len(order) and time.monotonic() < deadline:
        time.sleep(0.1)
    ms = [(phone.first[b][0] - t) * 1000 for b, t in first.items() if b in phone.first]
    rows = conn.execute("SELECT id, alert_count, severity FROM incidents"
                        " WHERE building_id = ANY(%s)", [list(first)]).fetchall()
    ids = [r[0] for r in rows]
    missing, _ = settle(conn, phone, ids, 60)
    pages = conn.execute("SELECT count(*) FROM pages WHERE incident_id = ANY(%s)"
                         " AND channel = 'mqtt'", [ids]).fetchone()[0]
    return {"ms": ms, "lost": len(first) - len(ms), "incidents": len(rows),
            "alerts": sum(r[1] for r in rows), "span_s": span, "pages": pages,
            "confirmed": sum(r[2] == "confirmed" for r in rows), "missing": missing}


def part_timers(a, conn, phone: Phone, buildings: list[str], meter: CpuMeter) -> dict:
    due = datetime.now(UTC) + timedelta(seconds=a.timer_lead_s)
    with conn.transaction():
        ids = [r[0] for r in conn.execute(
            "INSERT INTO incidents (building_id, hazard, severity, state, opened_at,"
            " last_alert_at, alert_count, notified_at, ladder, rung, step, escalate_at)"
            " SELECT b, 'fire', 'warning', 'notified', %(t)s, %(t)s, 1, %(t)s, 'warning', 0, 1,"
            " %(due)s FROM unnest(%(b)s::text[]) AS b RETURNING id",
            {"b": buildings, "t": due - timedelta(minutes=1), "due": due})]
        # Rung 0's pages, sent when it fired: the grid team heard of it, so the hand-over
        # (alerts/handover.py) finds nobody to page, and rung 1 pages the community desk.
        conn.execute(
            "INSERT INTO pages (incident_id, step, worker_id, channel, status, created_at,"
            " due_at, sent_at, attempts, payload)"
            " SELECT i.id, 1, b.grid_id || r.suffix, 'mqtt', 'sent', %(t)s, %(t)s, %(t)s, 1,"
            " '{}' FROM incidents i JOIN buildings b ON b.id = i.building_id"
            " CROSS JOIN (VALUES ('-W'), ('-L')) AS r(suffix) WHERE i.id = ANY(%(ids)s)",
            {"ids": ids, "t": due - timedelta(minutes=1)})
        conn.execute("SELECT pg_notify('firegrid_escalate', '')")
    ahead = (due - datetime.now(UTC)).total_seconds()
    print(f"  {len(ids):,} incidents committed {ahead:.1f} s before they are due", flush=True)
    if ahead <= 0:
        raise SystemExit("the insert took longer than --timer-lead-s: raise it")
    keys = {f"incident-{i}" for i in ids}
    lines = phone.lines
    time.sleep(ahead)
    meter.start()
    phone.wait_lines(lines + len(ids), 120)     # one page per incident; then the database
    deadline = time.monotonic() + 120
    fired: dict[int, datetime] = {}
    while len(fired) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
        fired = dict(conn.execute(
            "SELECT incident_id, min(at) FROM incident_log WHERE incident_id = ANY(%s)"
            " AND action IN ('notified', 'skipped', 'exhausted') GROUP BY 1", [ids]).fetchall())
    late = [(at - due).total_seconds() * 1000 for at in fired.values()]
    # One escalator transaction stamps its whole batch with one `at`: the batches' spacing.
    batches = sorted(set(fired.values()))
    gap_ms = ((batches[-1] - batches[0]).total_seconds() * 1000 / (len(batches) - 1)
              if len(batches) > 1 else math.nan)
    # From due until every page is sent (and, but for the last 0.2 s, on the phone).
    missing, cpu = settle(conn, phone, ids, 120, step=2, meter=meter)
    elapsed = meter.elapsed
    first: dict[str, float] = {}
    with phone.cond:
        for wall, _, page in phone.got:
            if page["key"] in keys and page["step"] == 2:
                first.setdefault(page["key"], wall)
    # `at` is stamped when the escalator claims a batch, before its pages are written and
    # committed: due -> page on the phone is what a worker waits.
    paged = [(wall - due.timestamp()) * 1000 for wall in first.values()]
    acked = conn.execute("SELECT max(sent_at), count(*) FROM pages WHERE incident_id = ANY(%s)"
                         " AND step = 2 AND status = 'sent'", [ids]).fetchone()
    return {"late_ms": late, "fired": len(fired), "count": len(ids), "missing": missing,
            "paged_ms": paged, "batches": len(batches), "ids": ids,
            "gap_ms": gap_ms, "pages_sent": acked[1], "cpu": cpu,
            "cpu_us": per_page(cpu, elapsed, acked[1]),
            "broker_all_s": (acked[0] - due).total_seconds() if acked[0] else math.nan}


# Rung 1's page details, as alerts.ladder.payload_of writes them.
_RUNG1 = ('{"severity":"warning","ladder":"warning","rung":1,"roles":["community_duty"],'
          '"muted":false}')
DRAIN_STEP = 1000


def part_drain(conn, phone: Phone, ids: list[int], meter: CpuMeter) -> dict:
    """The dispatcher alone: one page per timers incident (to its community officer, a step
    of their own) written pending in one transaction, as a burst of rungs leaves them; from
    the COMMIT to each page on the phone. The incidents' timers are stopped first, so no
    escalation runs beside it."""
    conn.execute("UPDATE incidents SET escalate_at = NULL WHERE id = ANY(%s)", [ids])
    with conn.transaction():
        n = conn.execute(
            "INSERT INTO pages (incident_id, step, worker_id, channel, status, created_at,"
            " due_at, payload) SELECT i.id, %s, g.community_id || '-D', 'mqtt', 'pending',"
            " now(), now(), %s FROM incidents i JOIN buildings b ON b.id = i.building_id"
            " JOIN grids g ON g.id = b.grid_id WHERE i.id = ANY(%s)",
            [DRAIN_STEP, _RUNG1, ids]).rowcount
        conn.execute("SELECT pg_notify('firegrid_pages', '')")
        lines = phone.lines
    t0 = time.time()
    meter.start()
    phone.wait_lines(lines + n, 120)
    missing, cpu = settle(conn, phone, ids, 120, step=DRAIN_STEP, meter=meter)
    elapsed = meter.elapsed
    with phone.cond:
        ms = [(wall - t0) * 1000 for wall, _, page in phone.got if page["step"] == DRAIN_STEP]
    last_s = max(ms, default=math.nan) / 1000
    return {"count": n, "ms": ms, "missing": missing, "per_s": len(ms) / last_s,
            "cpu": cpu, "cpu_us": per_page(cpu, elapsed, n)}


def per_page(cpu: dict[str, float], elapsed_s: float, pages: int) -> dict[str, float]:
    """CPU microseconds per page of each process, from CpuMeter's % of one core: what the
    figures cost whatever else the machine was doing meanwhile."""
    return {k: v / 100 * elapsed_s / pages * 1e6 for k, v in cpu.items()} if pages else {}


def core_means(port: int) -> dict[str, tuple[float, float]]:
    """Count and mean (ms) of the alert core's latency histograms, from its /metrics."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        if family.type != "histogram":
            continue
        found = {(s.name, s.labels.get("channel")): s.value for s in family.samples}
        for channel in {c for _, c in found}:
            count = found.get((family.name + "_count", channel), 0)
            if count:
                label = family.name.removeprefix("firegrid_") + (f"[{channel}]" if channel else "")
                out[label] = (count, found[(family.name + "_sum", channel)] / count * 1000)
    return out


def pick(detectors: dict[str, list[str]], a, rng: random.Random):
    """Storm buildings (enough detectors), single-alarm buildings and warm-ups, disjoint."""
    names = sorted(detectors)
    rng.shuffle(names)
    storm = [b for b in names if len(detectors[b]) >= a.storm_per_building][:a.storm_buildings]
    rest = [b for b in names if b not in set(storm)]
    need = a.samples + a.warmup
    if len(storm) < a.storm_buildings or len(rest) < need:
        raise SystemExit(f"the preset has too few buildings with detectors for "
                         f"{a.storm_buildings} storm and {need} single-alarm buildings")
    single = [(b, rng.choice(detectors[b])) for b in rest[:need]]
    plan = [(b, rng.sample(detectors[b], a.storm_per_building)) for b in storm]
    return single[:a.warmup], single[a.warmup:], plan


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small preset, 10 samples, storm 10x5, 1,000 timers")
    p.add_argument("--preset", default="street", choices=sorted(topology.PRESETS))
    p.add_argument("--speed", type=float, default=10, help="background simulator speed "
                   "(0: no background load)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warmup", type=int, default=3, help="alarms before the samples, uncounted")
    p.add_argument("--storm-buildings", type=int, default=200)
    p.add_argument("--storm-per-building", type=int, default=5)
    p.add_argument("--storm-seconds", type=float, default=10)
    p.add_argument("--timers", type=int, default=10_000)
    p.add_argument("--timer-lead-s", type=float, default=5)
    p.add_argument("--settle-s", type=float, default=20,
                   help="background load alone before the first sample")
    p.add_argument("--alert-cores", type=int, default=1, metavar="N",
                   help="run N alert-core processes side by side (default 1)")
    p.add_argument("--timers-muted", action="store_true",
                   help="analysis: silence the timers' grids, so their pages are written "
                        "muted and never sent: the escalator without the dispatcher beside it")
    p.add_argument("--py-spy", metavar="FILE", help="py-spy record the alert core for the "
                   "whole run into FILE (raw collapsed stacks per thread, idle included)")
    p.add_argument("--tree", metavar="DIR",
                   help="run the alert core from another checkout (e.g. `git worktree add "
                   "/tmp/old <commit>`, same migrations), with this checkout's instrument "
                   "and background, for a before/after comparison")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    a = p.parse_args(argv)
    if a.quick:
        a.preset, a.samples, a.storm_buildings, a.timers = "small", 10, 10, 1000
    # `kill <pid>` unwinds like Ctrl-C: the ExitStack stops and removes everything it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        return run(a, stack)


def run(a: argparse.Namespace, stack: ExitStack) -> int:
    rng = random.Random(a.seed)
    work, pg, mq, url, conn = services(stack, "alerts", a.keep)
    metrics_port = free_port()
    env = child_env(mq, url, metrics_port)
    detectors = register(work, a.preset, env)
    check_roster(conn, 2)
    warm, single, plan = pick(detectors, a, rng)
    synthetic = synthetic_street(conn, a.timers)
    if a.timers_muted:
        conn.execute("INSERT INTO silences (grid_id, starts_at, ends_at, reason, created_by)"
                     " SELECT id, now(), now() + interval '1 day', 'bench', 'bench'"
                     " FROM grids g JOIN communities c ON c.id = g.community_id"
                     " WHERE c.street_id = 'BS'")

    phone = Phone(mq.port)
    stack.callback(phone.close)
    alarms = Alarms(mq.port)
    stack.callback(alarms.close)
    tree = Path(a.tree).resolve() if a.tree else REPO
    children = [Child("ingest", ["ingest"], env, work, stack),
                Child("alerts", ["alerts", "run"], env, work, stack, tree)]
    for i in range(2, a.alert_cores + 1):   # more alert-core processes on the same group
        children.append(Child(f"alerts{i}", ["alerts", "run"], {
            **env, "FIREGRID_ALERTS__CLIENT_ID": f"bench-alerts-{i}",
            "FIREGRID_ALERTS__METRICS_PORT": "0"}, work, stack, tree))
    if a.py_spy:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                "--pid", str(children[1].proc.pid), "--threads", "--idle",
                                "--format", "raw", "--output", a.py_spy, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (spy.send_signal(signal.SIGINT), spy.wait(30)))
    if a.speed > 0:
        children.append(Child("simulate", [
            "simulate", "--preset", a.preset, "--speed", f"{a.speed:g}", "--mode",
            "multiplexed", "--seconds", str(int(a.speed * 3600))], env, work, stack))
    try:
        for building, device in warm:
            # Sent again until it pages: the alert core is subscribed and paging then.
            for _ in range(30):
                alarms.send(device)
                if phone.wait(lambda b=building: b in phone.first, 2):
                    break
            else:
                raise RuntimeError(f"no page for the warm-up alarm in {building}")
        print(f"alert core paging; background load alone for {a.settle_s:g} s", flush=True)
        time.sleep(a.settle_s)

        pids = {c.name: c.proc.pid for c in children}
        pids.update(mosquitto=mq.proc.pid, postgres=postmaster(pg), bench=os.getpid())
        meter = CpuMeter(pids)
        rows0 = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        meter.start()
        print(f"single: {len(single)} alarms", flush=True)
        one = part_single(conn, phone, alarms, single, rng)
        elapsed = time.monotonic() - meter.t0
        background = {"readings_per_s": (conn.execute("SELECT count(*) FROM readings")
                                         .fetchone()[0] - rows0) / elapsed,
                      "cpu": meter.read()}
        print(f"storm: {a.storm_buildings} buildings x {a.storm_per_building} detectors in "
              f"{a.storm_seconds:g} s", flush=True)
        storm = part_storm(a, conn, phone, alarms, plan)
        print(f"timers: {a.timers:,} incidents due at once", flush=True)
        timers = part_timers(a, conn, phone, synthetic, meter)
        print(f"drain: {len(timers['ids']):,} pages written at once", flush=True)
        drain = part_drain(conn, phone, timers["ids"], meter)
        for c in children:
            if c.proc.poll() is not None:
                raise RuntimeError(f"{c.name} exited ({c.proc.returncode}); see {c.log}")
        background["means"] = core_means(metrics_port)
        time.sleep(2)   # a late duplicate would arrive now
    except BaseException:
        for c in children:
            print(f"--- {c.name} log, last lines:\n" + _tail(c.log), file=sys.stderr)
        raise
    with phone.cond:
        dupes = sum(1 for n in phone.triples.values() if n > 1)
        background["received"] = len(phone.got)
    background["sent"] = conn.execute("SELECT count(*) FROM pages WHERE channel = 'mqtt'"
                                      " AND status = 'sent'").fetchone()[0]
    result = {"page_p50_ms": pct(one["ms"], 50), "page_p99_ms": pct(one["ms"], 99),
              "storm_incidents": storm["incidents"], "storm_page_p99_ms": pct(storm["ms"], 99),
              "timer_late_p99_ms": pct(timers["late_ms"], 99), "duplicate_pages": dupes,
              "timer_page_p99_ms": pct(timers["paged_ms"], 99),
              "drain_pages_per_s": drain["per_s"]}
    result["timer_page_vs_issue18"] = result["timer_page_p99_ms"] / BASELINE["timer_page_ms"]
    result["drain_vs_issue18"] = result["drain_pages_per_s"] / BASELINE["drain_per_s"]
    stack.close()    # stop everything before the figures, so they come last
    report(a, one, storm, timers, drain, result, background)
    return 0


def report(a, one: dict, storm: dict, timers: dict, drain: dict, result: dict,
           bg: dict) -> None:
    late, paged = timers["late_ms"], timers["paged_ms"]
    print(f"\nbackground during the single alarms: {bg['readings_per_s']:,.0f} readings/s "
          "stored by ingest; CPU % of one core: "
          + ", ".join(f"{k} {v:.0f}" for k, v in bg["cpu"].items()))
    print(f"single: {one['incidents']} incidents opened, {len(one['ms'])} paged, "
          f"{one['lost']} never; first page not to the "
          f"building's grid worker: {one['wrong_worker']}; p90 {pct(one['ms'], 90):.1f} ms, "
          f"max {max(one['ms'], default=math.nan):.1f} ms")
    print(f"storm: published in {storm['span_s']:.1f} s; {storm['incidents']} incidents, "
          f"{storm['alerts']} alerts grouped into them, {storm['confirmed']} confirmed; "
          f"{storm['pages']} MQTT pages, {storm['missing']} never on the phone; p50 "
          f"{pct(storm['ms'], 50):.0f} ms, max {max(storm['ms'], default=math.nan):.0f} ms")
    print(f"timers: {timers['fired']:,} of {timers['count']:,} fired in {timers['batches']} "
          f"batch(es) {timers['gap_ms']:.0f} ms apart; late p50 {pct(late, 50):.0f} ms, max "
          f"{max(late, default=math.nan):.0f} ms; due -> page on the phone p50 "
          f"{pct(paged, 50):.0f} ms, max {max(paged, default=math.nan):.0f} ms; "
          f"{timers['pages_sent']:,} pages, the last acknowledged by the broker "
          f"{timers['broker_all_s']:.1f} s after due, {timers['missing']} never on the phone; "
          "CPU % of one core from due to the last page: "
          + ", ".join(f"{k} {v:.0f}" for k, v in timers["cpu"].items())
          + "; CPU us per page (the rung's work included): "
          + ", ".join(f"{k} {v:.0f}" for k, v in timers["cpu_us"].items()))
    print(f"drain: {drain['count']:,} pages written pending in one transaction; COMMIT -> "
          f"page on the phone p50 {pct(drain['ms'], 50):.0f} ms, p99 "
          f"{pct(drain['ms'], 99):.0f} ms, last {max(drain['ms'], default=math.nan):.0f} ms "
          f"({drain['per_s']:,.0f} pages/s); {drain['missing']} never on the phone; CPU us "
          "per page: " + ", ".join(f"{k} {v:.0f}" for k, v in drain["cpu_us"].items()))
    print(f"phone: {bg['received']:,} pages received; {bg['sent']:,} MQTT pages marked sent; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    if bg["means"]:
        print("alert core histograms (count x mean): " + ", ".join(
            f"{k} {n:.0f} x {ms:.1f} ms" for k, (n, ms) in bg["means"].items()))
    sim = f"{a.preset} x{a.speed:g} in the background" if a.speed > 0 else "no background"
    # (figure, value, target, unit, issue 18's baseline); unit "=" equal, "/s" at least.
    rows = [(f"single alarm -> first page, p50 ({sim})", result["page_p50_ms"], None, "ms",
             None),
            (f"single alarm -> first page, p99 ({sim})", result["page_p99_ms"], 50, "ms",
             None),
            (f"storm: incidents ({a.storm_buildings * a.storm_per_building} detectors, "
             f"{a.storm_buildings} buildings, {a.storm_seconds:g} s)",
             result["storm_incidents"], a.storm_buildings, "=", None),
            ("storm: first alarm -> first page, p99", result["storm_page_p99_ms"], 1000, "ms",
             None),
            (f"timers: {a.timers:,} due at once, lateness (incident_log.at - due), p99"
             + (" MUTED" if a.timers_muted else ""),
             result["timer_late_p99_ms"], 1000, "ms", None),
            (f"timers: {a.timers:,} due at once, due -> page on the phone, p99",
             pct(paged, 99), 1000, "ms", BASELINE["timer_page_ms"]),
            (f"drain: {drain['count']:,} pages written at once, pages/s to the phone",
             drain["per_s"], 10_000, "/s", BASELINE["drain_per_s"]),
            ("duplicate pages: (key, step, worker) received twice or more",
             result["duplicate_pages"], 0, "", None)]
    print(f"\n| {'figure':<70} | {'value':>10} | {'target':>11} | {'value/target':>12} "
          f"| {'issue 18':>10} | {'value/issue 18':>14} |")
    print(f"|{'-' * 72}|{'-' * 11}:|{'-' * 12}:|{'-' * 13}:|{'-' * 11}:|{'-' * 15}:|")
    for name, value, target, unit, base in rows:
        shown = (f"{value:.1f} ms" if unit == "ms" else f"{value:,.0f}/s" if unit == "/s"
                 else f"{value}")
        goal = ("" if target is None else f"= {target}" if unit == "=" else
                f">= {target:,}/s" if unit == "/s" else f"<= {target} {unit}".strip())
        ratio = ("" if target is None else f"{value / target:.2f}" if target else
                 "0" if value == 0 else "inf")
        was = ("" if base is None else f"{base:,.0f} ms" if unit == "ms" else f"{base:,.0f}/s")
        than = "" if base is None else f"{value / base:.2f}"
        print(f"| {name:<70} | {shown:>10} | {goal:>11} | {ratio:>12} | {was:>10} "
              f"| {than:>14} |")
    print("RESULT " + " ".join(
        f"{k}={v:.2f}" if k.endswith("_vs_issue18") else f"{k}={v:.1f}"
        if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
