"""The escalation ladder: who is paged, when, and what is recorded.

    fire(conn, incidents, now, ...)   fire the next rung of each incident, set-based
    claim_due(conn, now, limit)       lock incidents whose timer is due (SKIP LOCKED)
    next_due(conn)                    the earliest running timer, for the escalator's sleep

An incident is on a ladder (its severity's: policy.ladder[ladder]) at a rung (-1 before the
first). Firing moves to the next rung: everyone on duty for the building in the rung's
roles gets a page on each of their channels, the pages written in the caller's transaction
(the outbox), and the timer set to now + ack_timeout_s. A rung with nobody on duty is
skipped at once and the skip recorded. Past the last rung an incident nobody has
acknowledged starts again from the first rung after policy.repeat.every_s (logged
`repeating`); otherwise, or with the repeat switched off, the ladder is exhausted.

Small matters stay in the grid: a fire warning whose next rung would leave the grid (the
community's or the street's duty) is held instead, when one device alone raised it and that
device has since cleared its alarm or been hushed by a resident (its alarm_clear or mute
event, as ingest stored it, is later than its every alert). The hold is logged and looked at
again after the current rung's timeout; a new alarm from the device, a second device, or a
confirmation lets the ladder climb. A device that merely went silent or faulted holds
nothing: a burning detector does both.

Everything happens in the caller's transaction on rows the caller has locked, so firing is
exactly-once per rung whatever the number of alert-core processes: the evaluator fires new
incidents from the upsert that locked them, the escalator those it claimed. The pages'
unique key (incident, step, worker, channel) backs that up.

The alert core hands its own MQTT pages to its dispatcher (`hand_off_s`): they are written
due that many seconds later, so no other dispatcher claims them meanwhile, and returned
ready to send (Fired.handed); the caller passes them on after its COMMIT. Reading them back
from the outbox cost the dispatcher ~50 us a page, half of it Python building rows it had
just written (issue 18). Should the process die first, they are due a few seconds later and
any dispatcher sends them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec
import psycopg
from psycopg.rows import TupleRow

from alerts import metrics
from alerts.messages import OutboxRow
from alerts.rules import Policy, Severity

ACTOR = "alerts"
# PostgreSQL notification channels: a timer was set (escalators recompute their sleep), a
# page was written (dispatchers look). Delivered at COMMIT, to every alert-core process.
ESCALATE_CHANNEL = "firegrid_escalate"
PAGES_CHANNEL = "firegrid_pages"
# Channels a worker's `channels` map may name, beside the MQTT push everybody gets.
_EXTRA_CHANNELS = ("webhook", "sms", "wecom", "dingtalk", "feishu", "email")
_GRID_ROLES = frozenset({"grid_worker", "grid_leader"})


@dataclass(slots=True)
class Incident:
    """The ladder's view of one locked incident row."""
    id: int
    building_id: str
    severity: Severity
    state: str
    ladder: Severity
    rung: int
    step: int
    muted: bool
    escalate_at: datetime | None = None


COLUMNS = "id, building_id, severity, state, ladder, rung, step, muted, escalate_at"


class _OnDuty(NamedTuple):
    """A worker on shift for a building, with the addresses of their extra channels."""
    worker_id: str
    channels: dict[str, str]     # channel -> address (workers.channels)


class _Page(NamedTuple):
    """A page to write; fields in the order of fire()'s unnest() over the batch."""
    incident_id: int
    step: int
    worker_id: str | None       # None for the fire-service (119) hook
    channel: str
    status: str                 # 'pending' or 'muted'
    payload: str                # JSON text (payload_of)
    delay_s: float = 0.0        # due this long after it is written (a voice call's wait)


class LogRow(NamedTuple):
    """An incident_log row to write; fields in the order of fire()'s unnest()."""
    incident_id: int
    action: str
    from_state: str
    to_state: str
    detail: str                 # JSON text


class Fired(NamedTuple):
    """What fire() wrote: pages for sending (muted ones excluded), and of those the MQTT
    pages leased to the caller's dispatcher (only with hand_off_s), to pass on after
    COMMIT."""
    pages: int
    handed: list[OutboxRow]


@dataclass
class Batch:
    """What one pass writes: pages, log rows, and how many timers it set."""
    pages: list[_Page] = field(default_factory=list)
    log: list[LogRow] = field(default_factory=list)
    timers: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)   # fired / skipped / held / ...


def claim_due(conn: psycopg.Connection[TupleRow], now: datetime,
              limit: int) -> list[Incident]:
    """Lock up to `limit` incidents whose timer is due, oldest first. Rows another
    escalator holds are skipped, not waited for."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM incidents WHERE escalate_at <= %s"
        " ORDER BY escalate_at LIMIT %s FOR UPDATE SKIP LOCKED", [now, limit]).fetchall()
    return [Incident(*row) for row in rows]


def next_due(conn: psycopg.Connection[TupleRow]) -> datetime | None:
    row = conn.execute("SELECT min(escalate_at) FROM incidents").fetchone()
    due: datetime | None = row[0] if row else None   # an aggregate always has its row
    return due


def fire(conn: psycopg.Connection[TupleRow], incidents: list[Incident], now: datetime,
         policy: Policy, channels: frozenset[str], hand_off_s: float = 0.0) -> Fired:
    """Fire the next rung of each incident (rows locked by the caller). `channels` are the
    extra channels configured in this process (alerts.channels); the MQTT push is always
    on. With `hand_off_s`, the MQTT pages are leased to the caller (see the module's
    docstring)."""
    if not incidents:
        return Fired(0, [])
    buildings = sorted({i.building_id for i in incidents})
    # Only the roles of the rungs these incidents may still reach in this pass (the next,
    # or a later one past skipped rungs): a warning at the grid asks for the desks, not
    # for the grid team again.
    ahead = {role for i in incidents for rung in policy.ladder[i.ladder][i.rung + 1:]
             for role in rung.roles}
    silenced, on_duty = lookups(conn, buildings, now, policy, sorted(ahead))
    held = _held(conn, incidents, policy)
    batch = Batch()
    updates = []
    for inc in incidents:
        if inc.id in held:
            _hold(inc, now, policy, batch)
        else:
            muted = inc.muted or inc.building_id in silenced
            _advance(inc, on_duty.get(inc.building_id, {}), muted, now, policy, channels,
                     batch)
        updates.append((inc.id, inc.state, inc.rung, inc.step, inc.escalate_at))
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE incidents i SET state = u.state, rung = u.rung, step = u.step,"
            " escalate_at = u.escalate_at,"
            " notified_at = CASE WHEN u.state = 'notified' THEN coalesce(i.notified_at, %s)"
            "                    ELSE i.notified_at END"
            " FROM unnest(%b::bigint[], %b::text[], %b::int[], %b::int[], %b::timestamptz[])"
            "   AS u(id, state, rung, step, escalate_at) WHERE i.id = u.id",
            [now, *map(list, zip(*updates, strict=True))])
    sent, leased = _write(conn, now, ACTOR, batch, hand_off_s)
    for outcome, n in batch.outcomes.items():
        metrics.ESCALATIONS.labels(outcome).inc(n)
    handed = _handed_rows(conn, now, leased, batch, incidents, on_duty) if leased else []
    return Fired(sent, handed)


def write_batch(conn: psycopg.Connection[TupleRow], now: datetime, actor: str,
                batch: Batch) -> int:
    """Write a batch's log rows and pages, and wake the dispatchers and escalators (at the
    caller's COMMIT). Returns the number of pages written for sending."""
    return _write(conn, now, actor, batch, 0.0)[0]


def _write(conn: psycopg.Connection[TupleRow], now: datetime, actor: str, batch: Batch,
           lease_s: float) -> tuple[int, list[tuple[int, int, str]]]:
    """write_batch; with `lease_s`, the MQTT pages to send are due that much later and
    returned as (page id, incident id, worker id), for the caller's dispatcher."""
    sent = 0
    leased: list[tuple[int, int, str]] = []
    with conn.cursor() as cur:
        if batch.log:
            cur.execute(
                "INSERT INTO incident_log (incident_id, at, actor, action, from_state, to_state,"
                " detail) SELECT id, %s, %s, action, from_state, to_state, detail::jsonb"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[])"
                "   AS l(id, action, from_state, to_state, detail)",
                [now, actor, *map(list, zip(*batch.log, strict=True))])
        if batch.pages:
            pages = batch.pages
            if lease_s:
                pages = [p._replace(delay_s=lease_s) if _leased(p) else p for p in pages]
            cur.execute(
                "INSERT INTO pages (incident_id, step, worker_id, channel, status, created_at,"
                " due_at, payload) SELECT id, step, worker, channel, status, %s,"
                " %s + make_interval(secs => delay), payload::jsonb"
                " FROM unnest(%b::bigint[], %b::int[], %b::text[], %b::text[], %b::text[],"
                " %b::text[], %b::float8[]) AS p(id, step, worker, channel, status, payload,"
                " delay) ON CONFLICT DO NOTHING"
                + (" RETURNING id, incident_id, worker_id, channel, status" if lease_s else ""),
                [now, now, *map(list, zip(*pages, strict=True))], binary=bool(lease_s))
            sent = sum(1 for p in pages if p.status == "pending")
            if lease_s:
                leased = [(page_id, incident, worker)
                          for page_id, incident, worker, channel, status in cur.fetchall()
                          if channel == "mqtt" and status == "pending"]
            # Pages another dispatcher may send now (all of them, unless leased to ours).
            if any(p.status == "pending" and not (lease_s and _leased(p)) for p in pages):
                cur.execute("SELECT pg_notify(%s, '')", [PAGES_CHANNEL])
        if batch.timers:
            # Escalators in every process recompute their sleep at our COMMIT.
            cur.execute("SELECT pg_notify(%s, '')", [ESCALATE_CHANNEL])
    return sent, leased


def _leased(page: _Page) -> bool:
    return page.channel == "mqtt" and page.status == "pending"


# What a page's message needs beside the page and the ladder's view of the incident.
_HANDED = """
    SELECT i.id, i.opened_at, i.alert_count, b.address, b.lat, b.lon, b.grid_id, g.community_id
    FROM incidents i JOIN buildings b ON b.id = i.building_id JOIN grids g ON g.id = b.grid_id
    WHERE i.id = ANY(%b)"""


def _handed_rows(conn: psycopg.Connection[TupleRow], now: datetime,
                 leased: list[tuple[int, int, str]], batch: Batch, incidents: list[Incident],
                 on_duty: dict[str, dict[str, list[_OnDuty]]]) -> list[OutboxRow]:
    """The leased pages as the dispatcher's claim would read them (alerts.dispatch._CLAIM),
    built from what this pass already holds plus one query per pass; a differential test
    (tests/test_hand_off.py) holds the two to the same message."""
    by_id = {inc.id: inc for inc in incidents}
    info = {row[0]: row[1:] for row in conn.execute(
        _HANDED, [sorted({incident for _, incident, _ in leased})], binary=True)}
    payloads = {(p.incident_id, p.worker_id): p for p in batch.pages if _leased(p)}
    channels = {w.worker_id: w.channels for roles in on_duty.values()
                for people in roles.values() for w in people}
    rows = []
    for page_id, incident, worker in leased:
        inc, page = by_id[incident], payloads[(incident, worker)]
        opened_at, alert_count, address, lat, lon, grid, community = info[incident]
        # Positional, in OutboxRow's order: by keyword it is twice the cost, per page.
        rows.append(OutboxRow(
            page_id, incident, None, page.step, worker, "mqtt", _parsed(page.payload), 0,
            now, channels.get(worker), inc.state, opened_at, alert_count, None, None, None,
            inc.building_id, address, lat, lon, grid, community))
    return rows


def _json(obj: Any) -> str:
    """A log row's detail as JSON text: msgspec, ~0.6 us against json.dumps's ~4 us, for
    each of the 10,000 rungs of a burst (jsonb stores it alike)."""
    return _ENCODE(obj).decode()


_ENCODE = msgspec.json.Encoder().encode


@lru_cache(maxsize=4096)
def _parsed(text: str) -> dict[str, Any]:
    """A JSON object, parsed once per distinct text: a rung's payload (payload_of), a
    worker's channels (the on-duty lookup returns one row per building). Shared: readers
    only read it."""
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def page_worker(batch: Batch, incident_id: int, step: int, worker: str,
                worker_channels: dict[str, str], status: str, payload: str,
                channels: frozenset[str], voice_after_s: float) -> None:
    """One person's pages for a step: the MQTT push, and each extra channel that this
    process has configured and the person has an address for; a voice call is due
    `voice_after_s` later (the dispatcher drops it if somebody acknowledged by then)."""
    batch.pages.append(_Page(incident_id, step, worker, "mqtt", status, payload))
    for name in _EXTRA_CHANNELS:
        if name in channels and worker_channels.get(name):
            batch.pages.append(_Page(incident_id, step, worker, name, status, payload))
    if "voice" in channels and worker_channels.get("voice"):
        batch.pages.append(_Page(incident_id, step, worker, "voice", status, payload,
                                 float(voice_after_s)))   # one type per column for COPY


@lru_cache(maxsize=256)
def payload_of(severity: str, ladder: str, rung: int, roles: tuple[str, ...], muted: bool) -> str:
    """The page's rung details; the same for every incident on the same rung, so built
    once (10,000 timers due at once share a handful)."""
    return json.dumps({"severity": severity, "ladder": ladder, "rung": rung,
                       "roles": list(roles), "muted": muted}, separators=(",", ":"))


# Who is on duty for each building now, by role: an active worker covering the building
# (the building_cover view: its grid, community or street) with a roster shift around now,
# unless on leave; a substitute named on the leave stands in (the absent worker's role and
# areas, the substitute's own phone and channels).
ON_DUTY = """
    SELECT DISTINCT ON (v.building_id, w.role, x.id) v.building_id, w.role, x.id,
           x.channels::text
    FROM building_cover v
    JOIN workers w ON w.id = v.worker_id AND w.active AND w.role = ANY(%(roles)s)
    LEFT JOIN LATERAL (
        SELECT true AS on_leave, l.substitute_id FROM leave l WHERE l.worker_id = w.id
          AND l.cancelled_at IS NULL AND l.starts_at <= %(now)s AND l.ends_at > %(now)s
        ORDER BY l.substitute_id NULLS LAST LIMIT 1) away ON true
    JOIN workers x ON x.id = coalesce(away.substitute_id, w.id) AND x.active
    WHERE v.building_id = ANY(%(b)s)
      AND EXISTS (SELECT 1 FROM roster r WHERE r.worker_id = w.id
                  AND r.starts_at <= %(now)s AND r.ends_at > %(now)s)
      AND NOT coalesce(away.on_leave AND away.substitute_id IS NULL, false)
    ORDER BY 1, 2, 3"""


def lookups(conn: psycopg.Connection[TupleRow], buildings: list[str], now: datetime,
            policy: Policy, roles: list[str] | None = None,
            ) -> tuple[set[str], dict[str, dict[str, list[_OnDuty]]]]:
    """Which buildings are silenced now, and who is on duty there by role (`roles`, or
    every role a ladder pages): an active worker covering the building (the building_cover
    view: through its grid, community or street) with a roster shift around `now`."""
    silenced = {row[0] for row in conn.execute(
        "SELECT b.id FROM buildings b WHERE b.id = ANY(%(b)s) AND EXISTS ("
        " SELECT 1 FROM silences s WHERE s.starts_at <= %(now)s AND s.ends_at > %(now)s"
        " AND (s.building_id = b.id OR s.grid_id = b.grid_id))",
        {"b": buildings, "now": now})}
    if roles is None:
        roles = list(policy.ladder_roles)
    rows = conn.execute(ON_DUTY, {"b": buildings, "now": now, "roles": roles}).fetchall()
    on_duty: dict[str, dict[str, list[_OnDuty]]] = defaultdict(lambda: defaultdict(list))
    for building, role, worker, worker_channels in rows:
        on_duty[building][role].append(_OnDuty(worker, _parsed(worker_channels)))
    return silenced, on_duty


def _held(conn: psycopg.Connection[TupleRow], incidents: list[Incident],
          policy: Policy) -> set[int]:
    """The warnings to hold in the grid (see the module's docstring)."""
    leaving = []
    for inc in incidents:
        rungs = policy.ladder[inc.ladder]
        nxt = inc.rung + 1
        if (inc.severity == "warning" and inc.rung >= 0 and nxt < len(rungs)
                and not set(rungs[nxt].roles) <= _GRID_ROLES):
            leaving.append(inc.id)
    if not leaving:
        return set()
    return {row[0] for row in conn.execute(
        "SELECT a.incident_id FROM alerts a WHERE a.incident_id = ANY(%s) AND NOT a.muted"
        # a person who sent it up (escalate now) has seen more than the devices say
        " AND NOT EXISTS (SELECT 1 FROM incident_log l WHERE l.incident_id = a.incident_id"
        "   AND l.action = 'escalated')"
        " GROUP BY a.incident_id HAVING count(DISTINCT a.device_id) = 1"
        " AND bool_and(EXISTS (SELECT 1 FROM events e WHERE e.device_id = a.device_id"
        "   AND e.type IN ('alarm_clear', 'mute') AND e.ts >= a.ts))", [leaving])}


def _hold(inc: Incident, now: datetime, policy: Policy, batch: Batch) -> None:
    rung = policy.ladder[inc.ladder][inc.rung]
    batch.log.append(LogRow(inc.id, "held", inc.state, inc.state, _json(
        {"ladder": inc.ladder, "rung": inc.rung,
         "reason": "its only device cleared or was hushed; kept in the grid"})))
    batch.outcomes["held"] += 1
    inc.escalate_at = now + timedelta(seconds=rung.ack_timeout_s)
    batch.timers += 1


def _advance(inc: Incident, on_duty: dict[str, list[_OnDuty]], muted: bool,
             now: datetime, policy: Policy, channels: frozenset[str], batch: Batch) -> None:
    rungs = policy.ladder[inc.ladder]
    while True:
        inc.rung += 1
        if inc.rung >= len(rungs):
            again = policy.repeat.every_s
            if again and inc.state in ("raised", "notified") and not muted:
                # Nobody has it: climb again from the first rung after a pause.
                batch.log.append(LogRow(inc.id, "repeating", inc.state, inc.state,
                                         _json({"ladder": inc.ladder, "after_s": again})))
                batch.outcomes["repeating"] += 1
                inc.rung = -1
                inc.escalate_at = now + timedelta(seconds=again)
                batch.timers += 1
                return
            batch.log.append(LogRow(inc.id, "exhausted", inc.state, inc.state,
                                     _json({"ladder": inc.ladder})))
            batch.outcomes["exhausted"] += 1
            inc.escalate_at = None
            return
        rung = rungs[inc.rung]
        people = [(role, w, c) for role in rung.roles for w, c in on_duty.get(role, ())]
        forward = rung.fire_service and "fire_service" in channels
        if not people and not forward:
            batch.log.append(LogRow(inc.id, "skipped", inc.state, inc.state, _json(
                {"ladder": inc.ladder, "rung": inc.rung, "roles": rung.roles,
                 "reason": "nobody on duty"})))
            batch.outcomes["skipped"] += 1
            continue
        break
    inc.step += 1
    status = "muted" if muted else "pending"
    payload = payload_of(inc.severity, inc.ladder, inc.rung, tuple(rung.roles), muted)
    workers = []
    for _role, worker, worker_channels in people:
        workers.append(worker)
        page_worker(batch, inc.id, inc.step, worker, worker_channels, status, payload, channels,
                    policy.voice.after_s)
    if forward:
        batch.pages.append(_Page(inc.id, inc.step, None, "fire_service", status, payload))
        batch.log.append(LogRow(inc.id, "forwarded", inc.state, inc.state,
                                 _json({"step": inc.step, "muted": muted})))
    before = inc.state
    if inc.state == "raised" and not muted:
        inc.state = "notified"
    batch.log.append(LogRow(inc.id, "notified", before, inc.state, _json(
        {"ladder": inc.ladder, "rung": inc.rung, "step": inc.step, "roles": rung.roles,
         "workers": workers, "missing_roles": [r for r in rung.roles if not on_duty.get(r)],
         "muted": muted})))
    batch.outcomes["fired"] += 1
    # Once someone has acknowledged, a rung (a confirmation's all-levels page) informs; it
    # does not start a timer again.
    if inc.state in ("raised", "notified"):
        inc.escalate_at = now + timedelta(seconds=rung.ack_timeout_s)
        batch.timers += 1
    else:
        inc.escalate_at = None
