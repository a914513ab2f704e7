"""Reads of incidents for people: the duty console, the CLI and the API.

    Scope           the area a caller may see (everything, or grids, communities, streets)
    list_incidents  incidents in a scope, newest first, with their escalation state
    by_ids          the same rows for given ids, whatever their area (the console's feed
                    filters them per person)
    incident        one incident with its alerts, audit log and pages
    in_scope        whether an incident exists and lies in a scope (before acting on it)

An incident outside the caller's scope reads exactly like one that does not exist: a grid
worker learns nothing about the grid next door.

Timers count from the incident's opening: time to acknowledge, to arrive and to resolve
are each measured from opened_at, so they add up the way people read them ("on site 4
minutes after the alarm"). A reopened incident keeps its first acknowledgement and
arrival, so the timers keep measuring the first response.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.abc import Params
from psycopg.rows import dict_row

Row = dict[str, Any]

# Alerts shown with one incident: a storm can put thousands on one building, and the first
# ones say where it started; alert_count gives the total.
ALERTS_SHOWN = 500


@dataclass(frozen=True)
class Scope:
    """Where a caller may look. `everything` for admins and the CLI; otherwise the union
    of the grids, communities and street offices their worker_areas name."""
    grids: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()
    streets: tuple[str, ...] = ()
    everything: bool = False

    @classmethod
    def all(cls) -> Scope:
        return cls(everything=True)

    def condition(self) -> tuple[str, dict[str, Any]]:
        """SQL over the aliases g (grid) and co (community), with named parameters."""
        if self.everything:
            return "true", {}
        return ("(g.id = ANY(%(scope_grids)s) OR g.community_id = ANY(%(scope_communities)s)"
                " OR co.street_id = ANY(%(scope_streets)s))",
                {"scope_grids": list(self.grids), "scope_communities": list(self.communities),
                 "scope_streets": list(self.streets)})


_PLACE = """
    JOIN buildings b ON b.id = i.building_id
    JOIN grids g ON g.id = b.grid_id
    JOIN communities co ON co.id = g.community_id
"""

# The escalation state: the last rung that paged someone (the escalator writes 'notified'
# rows with detail {ladder, rung, step, roles, workers}), and whether the ladder ran out
# since the last (re)opening.
_INCIDENT = f"""
    SELECT i.id, i.building_id, b.address, b.grid_id, g.name AS grid_name,
           g.community_id, co.name AS community_name, co.street_id,
           i.hazard, i.severity, i.state, i.opened_at, i.last_alert_at, i.alert_count,
           i.muted, i.confirmed_at, i.notified_at, i.acknowledged_at, i.acknowledged_by,
           i.on_site_at, i.on_site_by, i.resolved_at, i.resolved_by, i.cause, i.note,
           i.reopened,
           extract(epoch FROM i.acknowledged_at - i.opened_at)::float8 AS ack_s,
           extract(epoch FROM i.on_site_at - i.opened_at)::float8 AS arrive_s,
           extract(epoch FROM i.resolved_at - i.opened_at)::float8 AS resolve_s,
           i.ladder AS esc_ladder, i.rung AS esc_rung, i.escalate_at AS esc_escalate_at,
           coalesce(last_step.action = 'exhausted', false) AS esc_exhausted,
           notified.at AS esc_last_notified_at,
           (notified.detail ->> 'rung')::int AS esc_last_notified_rung,
           coalesce(notified.detail -> 'roles', '[]') AS esc_roles,
           coalesce(notified.detail -> 'workers', '[]') AS esc_workers,
           array(SELECT DISTINCT a.device_id FROM alerts a WHERE a.incident_id = i.id
                 ORDER BY 1) AS devices
    FROM incidents i
    {_PLACE}
    LEFT JOIN LATERAL (
        SELECT l.at, l.detail FROM incident_log l
        WHERE l.incident_id = i.id AND l.action = 'notified'
        ORDER BY l.id DESC LIMIT 1) notified ON true
    LEFT JOIN LATERAL (
        SELECT l.action FROM incident_log l
        WHERE l.incident_id = i.id AND l.action IN ('notified', 'exhausted', 'reopened')
        ORDER BY l.id DESC LIMIT 1) last_step ON true
"""

_STATES = {"open": "i.state <> 'resolved'", "resolved": "i.state = 'resolved'", "all": "true"}


def _rows(conn: psycopg.Connection[Any], query: str, params: Params | None = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _incidents(conn: psycopg.Connection[Any], query: str, params: Params) -> list[Row]:
    """Rows of _INCIDENT with the esc_ columns gathered into one `escalation` dict."""
    rows = _rows(conn, query, params)
    for row in rows:
        row["escalation"] = {k[4:]: row.pop(k) for k in list(row) if k.startswith("esc_")}
    return rows


def list_incidents(conn: psycopg.Connection[Any], *, scope: Scope, state: str = "open",
                   grid_id: str | None = None, community_id: str | None = None,
                   building_id: str | None = None, since: datetime | None = None,
                   resolved_since: datetime | None = None,
                   limit: int = 100, offset: int = 0) -> list[Row]:
    """Incidents in `scope`, newest first; state is open, resolved or all; `since` keeps
    those opened at or after it, `resolved_since` those resolved at or after it (the
    console's look back: a fire opened yesterday and put out an hour ago belongs there)."""
    where, params = scope.condition()
    parts = [_STATES[state], where]
    for name, sql, value in (("grid_id", "g.id", grid_id),
                             ("community_id", "g.community_id", community_id),
                             ("building_id", "i.building_id", building_id)):
        if value is not None:
            parts.append(f"{sql} = %({name})s")
            params[name] = value
    for name, sql, at in (("since", "i.opened_at", since),
                          ("resolved_since", "i.resolved_at", resolved_since)):
        if at is not None:
            parts.append(f"{sql} >= %({name})s")
            params[name] = at
    return _incidents(conn, f"{_INCIDENT} WHERE {' AND '.join(parts)}"
                      " ORDER BY i.opened_at DESC, i.id DESC"
                      " LIMIT %(limit)s OFFSET %(offset)s",
                      {**params, "limit": limit, "offset": offset})


def by_ids(conn: psycopg.Connection[Any], ids: list[int]) -> list[Row]:
    """Incidents as list_incidents shows them, for these ids, in no scope: the caller
    decides who may see each (api/live.py sends each console only its area)."""
    return _incidents(conn, f"{_INCIDENT} WHERE i.id = ANY(%(ids)s)", {"ids": ids})


def in_scope(conn: psycopg.Connection[Any], incident_id: int, scope: Scope) -> bool:
    where, params = scope.condition()
    return conn.execute(f"SELECT 1 FROM incidents i {_PLACE} WHERE i.id = %(id)s AND {where}",
                        {**params, "id": incident_id}).fetchone() is not None


def incident(conn: psycopg.Connection[Any], incident_id: int, scope: Scope) -> Row | None:
    """One incident as list_incidents shows it, plus its first alerts, its whole audit log
    and its pages (never their payloads); None when absent or outside `scope`."""
    where, params = scope.condition()
    rows = _incidents(conn, f"{_INCIDENT} WHERE i.id = %(id)s AND {where}",
                      {**params, "id": incident_id})
    if not rows:
        return None
    row = rows[0]
    row["alerts"] = _rows(conn, """
        SELECT a.device_id, a.device_kind, a.rule, a.ts, a.received_at, a.muted, a.detail,
               d.floor, d.location
        FROM alerts a LEFT JOIN devices d ON d.id = a.device_id
        WHERE a.incident_id = %s ORDER BY a.received_at, a.device_id, a.ts, a.seq, a.rule
        LIMIT %s""", [incident_id, ALERTS_SHOWN])
    row["log"] = _rows(conn, """
        SELECT at, actor, action, from_state, to_state, detail FROM incident_log
        WHERE incident_id = %s ORDER BY at, id""", [incident_id])
    row["pages"] = _rows(conn, """
        SELECT p.id, p.step, p.channel, p.worker_id, w.name AS worker_name, p.status,
               p.attempts, p.created_at, p.sent_at, p.last_error
        FROM pages p LEFT JOIN workers w ON w.id = p.worker_id
        WHERE p.incident_id = %s ORDER BY p.step, p.id""", [incident_id])
    return row
