"""The closed loop: people acknowledge, arrive at, resolve and reopen incidents.

    raised ─┬─> notified ─┬─> acknowledged ──> on_site ──> resolved ──(reopen)──> raised
            └─────────────┴──────────────────────────────────^
    (raised -> notified is the escalator's, alerts/ladder.py; the rest are people's)

    acknowledge(conn, id, actor, note=None, now=None)
    arrive(conn, id, actor, note=None, now=None)
    resolve(conn, id, actor, cause, note, policy, now=None)
    reopen(conn, id, actor, note, now=None)
    confirm(conn, id, actor, note=None, now=None)      a person confirms the fire (人工确认)
    escalate(conn, id, actor, policy, to=None, ...)    send it up now (next rung, or a level)
    add_responder(conn, id, actor, worker, policy, channels, reassign=False, ...)
                                                       page one more person, or hand it over

Each call is one transaction: lock the incident row (SELECT ... FOR UPDATE, so a second
click, a retrying phone or an escalation firing at that moment waits and then sees the new
state), change it, and append its rows to incident_log. Each returns the incident row.

- Acknowledging or arriving stops the ladder (escalate_at = NULL): someone has it.
- Repeating an acknowledgement, or acknowledging after arrival, returns the incident as it
  is: phones retry, and two workers may press at once; neither is an error, and the log
  keeps one row. Arriving twice likewise.
- Arriving implies acknowledging: from raised or notified both rows are logged.
- Resolving needs a cause and a note (the loop's feedback). It fills acknowledged_at if
  nobody acknowledged, so time to acknowledge is never longer than time to resolve.
- Confirming (a worker on site, or an officer who sees it on video) makes a warning a
  confirmed fire: the confirmed ladder starts at once from its first rung (every level, and
  the 119 hook where configured), whatever the state, so people who already acknowledged
  still see every level paged; a rung after an acknowledgement informs and sets no timer.
  An incident already confirmed (by its devices or a person) stays as it is: the 119 hook
  fires once. "Not a fire" is resolve() with its cause, which ends the escalation.
- Resolving the building's last open incident releases the maintenance pages held back
  during it (alerts/dispatch.py ticket_pages: a detector offline because it burned is not a
  technician's job while the fire is on): they go out, or are cancelled if their ticket
  closed meanwhile.
- Escalating now (a person on the ladder or a duty officer) moves the ladder so that its
  next rung, or the first later rung paging the chosen level, fires at once; a warning a
  person sent up is never held in the grid again. Adding a responder pages one person at
  a new step; reassigning also puts an acknowledged incident back to notified with the
  rung's timer, so the ladder goes on if the new person does not take it. Both are logged.
- Reopening starts the ladder again from its first rung at once (rung -1, escalate_at now,
  a NOTIFY wakes the escalators at COMMIT); the first acknowledgement and arrival stay, since
  reports measure the first response.

False-alarm feedback (on resolve with cooking_steam, dust_insects or device_fault): each
registered, unretired device that raised an unmuted alert in the incident is checked; when
it was in at least policy.feedback.false_alarms such incidents resolved within
policy.feedback.window_days, it gets a 'false_alarms' maintenance ticket, assigned like the
monitor's tickets (devices/monitor.py): a field technician of the grid, else the community,
else the street. Muted alerts do not count: a device under test or in a building under
renovation was expected to alarm. The ticket ids are kept in the 'resolved' log row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import Jsonb

from alerts import ladder
from alerts.errors import Conflict, Invalid, NotFound
from alerts.ladder import ESCALATE_CHANNEL, PAGES_CHANNEL
from alerts.rules import Policy
from devices.monitor import TECHNICIAN

CAUSES = ("real_fire", "cooking_steam", "dust_insects", "device_fault", "test_drill")
FALSE_ALARM_CAUSES = ("cooking_steam", "dust_insects", "device_fault")
NOTE_MAX = 2000
# The levels a person can send an incident up to, by the ladder roles that page them.
LEVELS = {"grid": ("grid_worker", "grid_leader"), "community": ("community_duty",),
          "street": ("street_duty",)}

Row = dict[str, Any]


def acknowledge(conn: psycopg.Connection[Any], incident_id: int, actor: str,
                note: str | None = None, now: datetime | None = None) -> Row:
    note = _optional_note(note)
    with _open_incident(conn, incident_id, now, "is resolved; reopen it first") as (row, now):
        before = row["state"]
        if before in ("acknowledged", "on_site"):
            return row
        row = _update(conn, incident_id, """
            state = 'acknowledged', escalate_at = NULL,
            acknowledged_at = coalesce(acknowledged_at, %(now)s),
            acknowledged_by = coalesce(acknowledged_by, %(actor)s)""", now, actor)
        _log(conn, incident_id, now, actor, "acknowledged", before, "acknowledged",
             {"note": note})
        return row


def arrive(conn: psycopg.Connection[Any], incident_id: int, actor: str,
           note: str | None = None, now: datetime | None = None) -> Row:
    note = _optional_note(note)
    with _open_incident(conn, incident_id, now, "is resolved; reopen it first") as (row, now):
        before = row["state"]
        if before == "on_site":
            return row
        row = _update(conn, incident_id, """
            state = 'on_site', escalate_at = NULL,
            acknowledged_at = coalesce(acknowledged_at, %(now)s),
            acknowledged_by = coalesce(acknowledged_by, %(actor)s),
            on_site_at = coalesce(on_site_at, %(now)s),
            on_site_by = coalesce(on_site_by, %(actor)s)""", now, actor)
        if before in ("raised", "notified"):
            _log(conn, incident_id, now, actor, "acknowledged", before, "acknowledged",
                 {"note": note})
        _log(conn, incident_id, now, actor, "on_site", "acknowledged", "on_site",
             {"note": note})
        return row


def resolve(conn: psycopg.Connection[TupleRow], incident_id: int, actor: str, cause: str, note: str,
            policy: Policy, now: datetime | None = None) -> Row:
    if cause not in CAUSES:
        raise Invalid("cause", f"must be one of {', '.join(CAUSES)}")
    note = _required_note(note)
    with _open_incident(conn, incident_id, now, "is already resolved") as (row, now):
        before = row["state"]
        row = _update(conn, incident_id, """
            state = 'resolved', escalate_at = NULL, resolved_at = %(now)s,
            resolved_by = %(actor)s, cause = %(cause)s, note = %(note)s,
            acknowledged_at = coalesce(acknowledged_at, %(now)s),
            acknowledged_by = coalesce(acknowledged_by, %(actor)s)""", now, actor,
            cause=cause, note=note)
        tickets = (_false_alarm_tickets(conn, incident_id, now, policy)
                   if cause in FALSE_ALARM_CAUSES else [])
        detail: dict[str, Any] = {"note": note, "cause": cause}
        if tickets:
            detail["tickets"] = tickets
        _log(conn, incident_id, now, actor, "resolved", before, "resolved", detail)
        _release_held(conn, row["building_id"], now)
        return row


def confirm(conn: psycopg.Connection[Any], incident_id: int, actor: str,
            note: str | None = None, now: datetime | None = None) -> Row:
    note = _optional_note(note)
    with _open_incident(conn, incident_id, now, "is resolved; reopen it first") as (row, now):
        if row["severity"] == "confirmed":
            return row
        state = row["state"]
        row = _update(conn, incident_id, """
            severity = 'confirmed', ladder = 'confirmed', confirmed_at = %(now)s,
            rung = -1, escalate_at = %(now)s""", now, actor)
        _log(conn, incident_id, now, actor, "confirmed", state, state,
             {"by": "person", "note": note})
        # Delivered at COMMIT: escalators wake and fire the confirmed ladder's first rung.
        conn.execute("SELECT pg_notify(%s, '')", [ESCALATE_CHANNEL])
        return row


def escalate(conn: psycopg.Connection[TupleRow], incident_id: int, actor: str, policy: Policy,
             to: str | None = None, note: str | None = None,
             now: datetime | None = None) -> Row:
    """Send it up now: the next rung fires at once, or the first later rung that pages the
    level `to` (grid, community, street). The escalator fires it (NOTIFY at COMMIT)."""
    note = _optional_note(note)
    if to is not None and to not in LEVELS:
        raise Invalid("to", f"must be one of {', '.join(LEVELS)}")
    with _open_incident(conn, incident_id, now, "is resolved; reopen it first") as (row, now):
        rungs = policy.ladder[row["ladder"]]
        current = row["rung"]
        later = [i for i, r in enumerate(rungs) if i > current
                 and (to is None or set(r.roles) & set(LEVELS[to]))]
        if not later:
            raise Conflict(f"incident {incident_id}: no later rung of its ladder pages "
                           + (f"the {to} level" if to else "anybody"))
        row = _update(conn, incident_id, "rung = %(rung)s, escalate_at = %(now)s", now, actor,
                      rung=later[0] - 1)
        _log(conn, incident_id, now, actor, "escalated", row["state"], row["state"],
             {"to": to or "next", "rung": later[0], "note": note})
        conn.execute("SELECT pg_notify(%s, '')", [ESCALATE_CHANNEL])
        return row


def add_responder(conn: psycopg.Connection[TupleRow], incident_id: int, actor: str,
                  worker_id: str, policy: Policy, channels: frozenset[str], *,
                  reassign: bool = False, note: str | None = None,
                  now: datetime | None = None) -> Row:
    """Page one more person now. Reassigning also hands the incident over: if it was
    acknowledged (not yet on site), it is open again for the new person to acknowledge,
    with the current rung's timer running, so the ladder goes on if they do not."""
    note = _optional_note(note)
    with _open_incident(conn, incident_id, now, "is resolved; reopen it first") as (row, now):
        worker = conn.execute("SELECT role, channels FROM workers WHERE id = %s AND active",
                              [worker_id]).fetchone()
        if worker is None:
            raise NotFound("worker", worker_id)
        role, worker_channels = worker
        before = row["state"]
        assignments = "step = step + 1"
        rungs = policy.ladder[row["ladder"]]
        wait = rungs[max(0, min(row["rung"], len(rungs) - 1))].ack_timeout_s
        if reassign and before == "acknowledged":
            assignments += (", state = 'notified',"
                            " escalate_at = %(now)s + make_interval(secs => %(wait)s)")
        row = _update(conn, incident_id, assignments, now, actor, wait=wait)
        batch = ladder.Batch()
        ladder.page_worker(batch, incident_id, row["step"], worker_id, worker_channels,
                           "pending", ladder.payload_of(row["severity"], row["ladder"],
                                                        row["rung"], (role,), False), channels,
                          policy.voice.after_s)
        batch.timers = int(row["escalate_at"] is not None)
        ladder.write_batch(conn, now, actor, batch)
        _log(conn, incident_id, now, actor, "reassigned" if reassign else "responder_added",
             before, row["state"], {"worker": worker_id, "step": row["step"], "note": note,
                                    "from": row["acknowledged_by"]})
        return row


def reopen(conn: psycopg.Connection[TupleRow], incident_id: int, actor: str, note: str,
           now: datetime | None = None) -> Row:
    note = _required_note(note)
    try:
        with conn.transaction():
            row, now = _lock(conn, incident_id, now)
            if row["state"] != "resolved":
                raise Conflict(f"incident {incident_id} is open ({row['state']}); only a "
                               "resolved incident can be reopened")
            row = _update(conn, incident_id, """
                state = 'raised', reopened = reopened + 1, resolved_at = NULL,
                resolved_by = NULL, cause = NULL, note = NULL, ladder = severity,
                rung = -1, escalate_at = %(now)s""", now, actor)
            _log(conn, incident_id, now, actor, "reopened", "resolved", "raised",
                 {"note": note})
            # Delivered at COMMIT: escalators wake and fire the first rung at once.
            conn.execute("SELECT pg_notify(%s, '')", [ESCALATE_CHANNEL])
            return row
    except psycopg.errors.UniqueViolation as exc:
        if (exc.diag.constraint_name or "") != "incidents_one_open":
            raise
    # Rolled back: another open incident holds the building and hazard.
    holder = conn.execute(
        "SELECT o.id FROM incidents i JOIN incidents o ON o.building_id = i.building_id"
        " AND o.hazard = i.hazard AND o.state <> 'resolved' AND o.id <> i.id"
        " WHERE i.id = %s", [incident_id]).fetchone()
    which = f"incident {holder[0]}" if holder else "another incident"
    raise Conflict(f"{which} is open for the same building and hazard; incident "
                   f"{incident_id} cannot be reopened while it is", field="id")


# --- inside the transaction -----------------------------------------------------------------

@contextmanager
def _open_incident(conn: psycopg.Connection[Any], incident_id: int, now: datetime | None,
                   if_resolved: str) -> Iterator[tuple[Row, datetime]]:
    """In one transaction: the incident's row locked, and a Conflict if it is resolved."""
    with conn.transaction():
        row, now = _lock(conn, incident_id, now)
        if row["state"] == "resolved":
            raise Conflict(f"incident {incident_id} {if_resolved}")
        yield row, now


def _lock(conn: psycopg.Connection[Any], incident_id: int,
          now: datetime | None) -> tuple[Row, datetime]:
    """The incident row, locked until COMMIT, and the time of the change (the database's
    clock unless the caller gives one: the escalator compares escalate_at with it too)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT i.*, now() AS db_now FROM incidents i WHERE i.id = %s"
                          " FOR UPDATE", [incident_id]).fetchone()
    if row is None:
        raise NotFound("incident", str(incident_id))
    db_now = row.pop("db_now")
    return row, now or db_now


def _update(conn: psycopg.Connection[Any], incident_id: int, assignments: str, now: datetime,
            actor: str, **values: Any) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"UPDATE incidents SET {assignments} WHERE id = %(id)s RETURNING *",
                          {"id": incident_id, "now": now, "actor": actor, **values}).fetchone()
    if row is None:     # never: the caller holds the row's lock (_lock)
        raise NotFound("incident", str(incident_id))
    return row


def _log(conn: psycopg.Connection[Any], incident_id: int, now: datetime, actor: str, action: str,
         from_state: str, to_state: str, detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO incident_log (incident_id, at, actor, action, from_state,"
                 " to_state, detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 [incident_id, now, actor, action, from_state, to_state, Jsonb(detail)])


def _required_note(note: str | None) -> str:
    note = _optional_note(note)
    if note is None:
        raise Invalid("note", "must not be empty: say what was found and done")
    return note


def _optional_note(note: str | None) -> str | None:
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise Invalid("note", f"at most {NOTE_MAX} characters")
    return note or None


_FEEDBACK = f"""
    WITH suspects AS (
        SELECT DISTINCT a.device_id FROM alerts a
        JOIN devices d ON d.id = a.device_id AND d.state <> 'retired'
        WHERE a.incident_id = %(incident)s AND NOT a.muted
    ), counted AS (
        SELECT s.device_id, count(DISTINCT i.id) AS n, min(i.opened_at) AS since,
               string_agg(DISTINCT i.id::text, ', ') AS ids
        FROM suspects s
        JOIN alerts a ON a.device_id = s.device_id AND NOT a.muted
        JOIN incidents i ON i.id = a.incident_id
        WHERE i.state = 'resolved' AND i.cause = ANY(%(causes)s)
          AND i.resolved_at >= %(now)s - make_interval(days => %(days)s)
        GROUP BY s.device_id
    )
    INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail, assigned_to)
    SELECT c.device_id, 'false_alarms', %(now)s,
           c.n || ' false alarms in ' || %(days)s || ' days (cooking/steam, dust/insects or'
           || ' device fault), the first opened '
           || to_char(c.since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC; incidents '
           || c.ids,
           tech.id
    FROM counted c JOIN devices d ON d.id = c.device_id
    {TECHNICIAN}
    WHERE c.n >= %(threshold)s
    ORDER BY c.device_id
    ON CONFLICT (device_id, condition) WHERE closed_at IS NULL DO NOTHING
    RETURNING id
"""


def _false_alarm_tickets(conn: psycopg.Connection[TupleRow], incident_id: int, now: datetime,
                         policy: Policy) -> list[int]:
    """Open the feedback tickets this resolution calls for; their ids (new ones only)."""
    rows = conn.execute(_FEEDBACK, {
        "incident": incident_id, "causes": list(FALSE_ALARM_CAUSES), "now": now,
        "days": policy.feedback.window_days,
        "threshold": policy.feedback.false_alarms}).fetchall()
    return [r[0] for r in rows]


def _release_held(conn: psycopg.Connection[Any], building_id: str, now: datetime) -> None:
    """The building's fire incidents are all resolved: its held ticket pages go out now,
    those of tickets closed meanwhile are cancelled. Called in the resolving transaction."""
    conn.execute(
        "UPDATE pages p SET status = CASE WHEN t.closed_at IS NULL THEN 'pending'"
        "                                ELSE 'cancelled' END,"
        " due_at = %(now)s,"
        " last_error = CASE WHEN t.closed_at IS NULL THEN NULL"
        "                   ELSE 'the ticket closed while the fire incident was open' END"
        " FROM maintenance_tickets t JOIN devices d ON d.id = t.device_id"
        " WHERE p.ticket_id = t.id AND p.status = 'held' AND d.building_id = %(b)s"
        " AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.building_id = %(b)s"
        "                 AND i.state <> 'resolved')",
        {"now": now, "b": building_id})
    conn.execute("SELECT pg_notify(%s, '')", [PAGES_CHANNEL])
