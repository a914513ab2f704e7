"""Hand-over: a shift changes while an incident is open and nobody has acknowledged it.

    hand_over(conn, now, policy, channels)   page who came on duty for open incidents' rungs

A warning raised at 19:59 paged the outgoing grid worker; at 20:00 the incoming one is on
duty. The escalator calls this every few seconds: for each open, unacknowledged incident on
a rung, whoever is now on duty in the roles of the rungs fired so far and was never paged
for it is paged at the current step (the same page a rung gives), and a `handed_over` log
row says from whom to whom. The rung's timer runs on: restarting it for the newcomer would
push the next rung past the minute a fire warning has (bench/field.py's shift change).
The outgoing people keep their pages and their view (the console shows the area's
incidents, not the shift's) until somebody acknowledges. Leave and substitutes count as
the ladder counts them (ladder.ON_DUTY).

The incidents to hand over are locked with SKIP LOCKED in the caller's transaction, and the
pages' unique key (incident, step, worker, channel) makes a second alert-core process's
pass a no-op.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import NamedTuple

import psycopg
from psycopg.rows import TupleRow

from alerts import ladder, metrics
from alerts.rules import Policy

# The incidents a shift change can concern: someone should have it and nobody does yet.
_OPEN = (f"SELECT {ladder.COLUMNS} FROM incidents WHERE state IN ('raised', 'notified')"
         " AND rung >= 0 AND escalate_at IS NOT NULL")
# ... of those, the ones the unlocked look found someone new for, locked.
_LOCK = _OPEN + " AND id = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED"


class _Hand(NamedTuple):
    inc: ladder.Incident
    incoming: list[str]
    outgoing: list[str]
    people: dict[str, dict[str, str]]       # worker -> their channels
    muted: bool


def hand_over(conn: psycopg.Connection[TupleRow], now: datetime, policy: Policy,
              channels: frozenset[str]) -> int:
    """Page the people who came on duty for open incidents' current rungs; returns how
    many incidents were handed over.

    A first look takes no locks: usually nobody new came on duty, and locking every open
    incident for the whole look (10,000 after a storm, a few hundred ms) made the
    escalators skip their due timers (SKIP LOCKED) until it committed. Only the incidents
    it found someone for are then locked and looked at again."""
    seen = _plan(conn, [ladder.Incident(*row) for row in conn.execute(_OPEN).fetchall()],
                 now, policy)
    if not seen:
        return 0
    locked = [ladder.Incident(*row) for row in
              conn.execute(_LOCK, [[h.inc.id for h in seen]]).fetchall()]
    hands = _plan(conn, locked, now, policy)
    if not hands:
        return 0
    batch = ladder.Batch()
    for inc, incoming, outgoing, people, muted in hands:
        rung = policy.ladder[inc.ladder][inc.rung]
        payload = ladder.payload_of(inc.severity, inc.ladder, inc.rung, tuple(rung.roles),
                                    muted)
        for worker in incoming:
            ladder.page_worker(batch, inc.id, inc.step, worker, people[worker],
                               "muted" if muted else "pending", payload, channels,
                               policy.voice.after_s)
        batch.log.append(ladder.LogRow(inc.id, "handed_over", inc.state, inc.state, json.dumps(
            {"from": outgoing, "to": incoming, "rung": inc.rung, "step": inc.step})))
    ladder.write_batch(conn, now, ladder.ACTOR, batch)
    metrics.ESCALATIONS.labels("handed_over").inc(len(hands))
    return len(hands)


def _plan(conn: psycopg.Connection[TupleRow], incidents: list[ladder.Incident],
          now: datetime, policy: Policy) -> list[_Hand]:
    """Who is to be paged for each incident: on duty now in the roles of the rungs fired
    so far, and never paged for it."""
    incidents = [i for i in incidents if i.rung < len(policy.ladder[i.ladder])]
    if not incidents:
        return []
    silenced, on_duty = ladder.lookups(conn, sorted({i.building_id for i in incidents}),
                                       now, policy)
    paged: dict[int, set[str]] = defaultdict(set)
    for incident_id, worker in conn.execute(
            "SELECT DISTINCT incident_id, worker_id FROM pages"
            " WHERE incident_id = ANY(%s) AND worker_id IS NOT NULL",
            [[i.id for i in incidents]]).fetchall():
        paged[incident_id].add(worker)
    hands = []
    for inc in incidents:
        rungs = policy.ladder[inc.ladder]
        duty = on_duty.get(inc.building_id, {})
        # Everyone the ladder has reached so far, had they been on duty: a fresh grid
        # worker hears of the unanswered fire in their grid even once it is at the desk.
        roles = {role for r in rungs[:inc.rung + 1] for role in r.roles}
        people = {w: c for role in sorted(roles) for w, c in duty.get(role, ())}
        incoming = sorted(set(people) - paged[inc.id])
        if incoming:
            hands.append(_Hand(inc, incoming, sorted(paged[inc.id] - set(people)), people,
                               inc.muted or inc.building_id in silenced))
    return hands
