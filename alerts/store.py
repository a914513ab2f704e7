"""Alerts into incidents, in one transaction per batch of messages.

    record(conn, candidates, now, policy, channels) -> Recorded

1. Each candidate is inserted into `alerts` keyed by the message identity and rule; a
   redelivered message inserts nothing and changes nothing further.
2. New alerts of known devices are grouped by building into the one open fire incident of
   that building: INSERT ... ON CONFLICT on the partial unique index, in building order so
   two processes never deadlock. The database, not this process, decides "one open
   incident per building", so a storm across several alert-core processes still opens one.
3. Confirmation: when the incident's unmuted alerts within policy.confirm.window_s come
   from two detectors, or a detector and a camera, the severity becomes 'confirmed' and the
   incident moves to the confirmed ladder, whose first rung pages every level at once.
4. New and newly confirmed incidents fire their first rung here (alerts.ladder), so the
   first page is in the outbox at the same COMMIT as the alert.

An alert is muted when its device is in maintenance (test mode) or under a silence of the
device, its building or its grid: it is recorded like any other, but an incident whose
alerts are all muted writes its pages as 'muted', and muted alerts never confirm a fire.
Alerts of unknown devices are kept with no building or incident (the ids are in ingest's
quarantine list; `firegrid devices` claims them), and so are alarms a gateway relays for a
device not registered behind it (detail.refused says so): they page nobody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import TupleRow

from alerts import ladder, metrics
from alerts.ladder import Incident
from alerts.messages import OutboxRow
from alerts.rules import Candidate, Policy

HAZARD = "fire"

# An alert's identity: the message's (device, ts_ms, seq) and the rule, the alerts key.
_Key = tuple[str, int, int, str]


class _Device(NamedTuple):
    """What routing needs of a registered, unretired device."""
    kind: str
    building_id: str
    muted: bool                 # in maintenance or under a silence now
    gateway_id: str | None      # the gateway it is registered behind


class _Touched(NamedTuple):
    incident: Incident
    created: bool
    unmuted: bool               # was muted and got its first unmuted alert now


@dataclass
class _Tally:
    """A building's new alerts in this batch."""
    alerts: int = 0
    muted: bool = True          # all of them muted


@dataclass
class Recorded:
    alerts: int = 0                 # new alerts (redeliveries excluded)
    unroutable: int = 0
    opened: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    pages: int = 0                  # pages written for sending
    handed: list[OutboxRow] = field(default_factory=list)   # of them, leased to the caller


def record(conn: psycopg.Connection[TupleRow], candidates: list[Candidate], now: datetime,
           policy: Policy, channels: frozenset[str], hand_off_s: float = 0.0) -> Recorded:
    """Record `candidates` (inside the caller's transaction). `hand_off_s`: as ladder.fire,
    the MQTT pages leased to the caller are in Recorded.handed, for after COMMIT."""
    out = Recorded()
    if not candidates:
        return out
    # One message can reach us twice in a batch (a redelivery behind the original).
    candidates = list({(c.device_id, c.ts_ms, c.seq, c.rule): c for c in candidates}.values())
    devices = _devices(conn, sorted({c.device_id for c in candidates}), now)
    # A gateway speaks only for the devices registered behind it (as in liveness): an alarm
    # it relays for any other id is kept, unrouted, and never pages anyone.
    candidates = [c if c.gateway_id is None or c.device_id not in devices
                  or devices[c.device_id].gateway_id == c.gateway_id
                  else replace(c, detail={
                      **c.detail, "refused": f"gateway {c.gateway_id} does not serve it"})
                  for c in candidates]
    foreign = {(c.device_id, c.ts_ms, c.seq, c.rule) for c in candidates
               if "refused" in c.detail}
    new = _insert_alerts(conn, candidates, devices, foreign)
    out.alerts = len(new)
    for c in new:
        metrics.ALERTS.labels(c.rule).inc()
    routable = [c for c in new if c.device_id in devices
                and (c.device_id, c.ts_ms, c.seq, c.rule) not in foreign]
    out.unroutable = len(new) - len(routable)
    metrics.UNROUTABLE.inc(out.unroutable)
    if not routable:
        return out
    touched = _upsert_incidents(conn, routable, devices, now)
    fire_now = {inc.id: inc for inc, created, unmuted in touched if created or unmuted}
    out.opened = [inc.id for inc, created, _ in touched if created]
    for inc, created, unmuted in touched:
        if created:
            _log(conn, inc.id, now, "raised", None, "raised", {"muted": inc.muted})
        elif unmuted and inc.state in ("raised", "notified"):
            inc.rung = -1   # muted until now: start the ladder again, for real this time
    confirmed = _confirm(conn, [inc for inc, _, _ in touched], now, policy)
    out.confirmed = [inc.id for inc in confirmed]
    fire_now.update((inc.id, inc) for inc in confirmed)
    metrics.INCIDENTS_OPENED.inc(len(out.opened))
    metrics.INCIDENTS_CONFIRMED.inc(len(confirmed))
    # A muted incident that got its first unmuted alert but is already acknowledged has
    # someone on it: it pages nobody again.
    firing = [inc for inc in fire_now.values()
              if inc.state in ("raised", "notified") or inc.id in out.confirmed]
    out.pages, out.handed = ladder.fire(conn, firing, now, policy, channels, hand_off_s)
    return out


def _devices(conn: psycopg.Connection[TupleRow], ids: list[str],
             now: datetime) -> dict[str, _Device]:
    """Registered devices by id."""
    rows = conn.execute("""
        SELECT d.id, d.kind, d.building_id,
               d.state = 'maintenance' OR EXISTS (
                   SELECT 1 FROM silences s WHERE s.starts_at <= %(now)s AND s.ends_at > %(now)s
                   AND (s.device_id = d.id OR s.building_id = d.building_id
                        OR s.grid_id = b.grid_id)),
               d.gateway_id
        FROM devices d JOIN buildings b ON b.id = d.building_id
        WHERE d.id = ANY(%(ids)s) AND d.state <> 'retired'""", {"ids": ids, "now": now})
    return {row[0]: _Device(*row[1:]) for row in rows}


def _insert_alerts(conn: psycopg.Connection[TupleRow], candidates: list[Candidate],
                   devices: dict[str, _Device], foreign: set[_Key]) -> list[Candidate]:
    cols: list[list[Any]] = [[] for _ in range(9)]
    for c in candidates:
        device = devices.get(c.device_id)
        kind, building, muted = ((device.kind, device.building_id, device.muted) if device
                                 else (None, None, False))
        if (c.device_id, c.ts_ms, c.seq, c.rule) in foreign:
            building = None
        for col, value in zip(cols, (c.device_id, c.ts_ms, c.seq, c.rule, kind, building,
                                     c.received_ms, muted, json.dumps(c.detail)), strict=True):
            col.append(value)
    rows = conn.execute(
        "INSERT INTO alerts (device_id, ts, seq, rule, device_kind, building_id, received_at,"
        " muted, detail)"
        " SELECT d, timestamptz 'epoch' + t * interval '1 ms', s, r, k, b,"
        "        timestamptz 'epoch' + rc * interval '1 ms', m, dt::jsonb"
        " FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::text[], %b::text[], %b::text[],"
        "             %b::int8[], %b::bool[], %b::text[]) AS u(d, t, s, r, k, b, rc, m, dt)"
        " ON CONFLICT DO NOTHING"
        " RETURNING device_id, (extract(epoch FROM ts) * 1000)::int8, seq, rule",
        cols).fetchall()
    fresh = {tuple(row) for row in rows}
    return [c for c in candidates if (c.device_id, c.ts_ms, c.seq, c.rule) in fresh]


def _upsert_incidents(conn: psycopg.Connection[TupleRow], alerts: list[Candidate],
                      devices: dict[str, _Device], now: datetime) -> list[_Touched]:
    """The open incident of each building, created or updated. Alerts get their incident
    id."""
    per_building: dict[str, _Tally] = {}
    for c in alerts:
        device = devices[c.device_id]
        tally = per_building.setdefault(device.building_id, _Tally())
        tally.alerts += 1
        tally.muted = tally.muted and device.muted
    buildings = sorted(per_building)
    rows = conn.execute(f"""
        WITH prior AS (
            SELECT building_id, muted FROM incidents
            WHERE building_id = ANY(%(b)s) AND hazard = '{HAZARD}' AND state <> 'resolved'),
        up AS (
            INSERT INTO incidents (building_id, hazard, severity, state, opened_at,
                                   last_alert_at, alert_count, muted, ladder)
            SELECT b, '{HAZARD}', 'warning', 'raised', %(now)s, %(now)s, n, m, 'warning'
            FROM unnest(%(b)s::text[], %(n)s::int[], %(m)s::bool[]) AS u(b, n, m)
            ORDER BY b
            ON CONFLICT (building_id, hazard) WHERE state <> 'resolved' DO UPDATE SET
                last_alert_at = greatest(incidents.last_alert_at, EXCLUDED.last_alert_at),
                alert_count = incidents.alert_count + EXCLUDED.alert_count,
                muted = incidents.muted AND EXCLUDED.muted
            RETURNING {ladder.COLUMNS}, xmax = 0 AS created)
        SELECT up.*, coalesce(prior.muted, false) AND NOT up.muted
        FROM up LEFT JOIN prior USING (building_id)""",
        {"b": buildings, "n": [per_building[b].alerts for b in buildings],
         "m": [per_building[b].muted for b in buildings], "now": now}).fetchall()
    touched = [_Touched(Incident(*row[:9]), row[9], row[10]) for row in rows]
    by_building = {inc.building_id: inc.id for inc, _, _ in touched}
    conn.execute(
        "UPDATE alerts a SET incident_id = u.i FROM unnest(%s::text[], %s::int8[], %s::int8[],"
        " %s::text[], %s::int8[]) AS u(d, t, s, r, i)"
        " WHERE a.device_id = u.d AND a.ts = timestamptz 'epoch' + u.t * interval '1 ms'"
        " AND a.seq = u.s AND a.rule = u.r",
        [[c.device_id for c in alerts], [c.ts_ms for c in alerts], [c.seq for c in alerts],
         [c.rule for c in alerts],
         [by_building[devices[c.device_id].building_id] for c in alerts]])
    return touched


def _confirm(conn: psycopg.Connection[TupleRow], incidents: list[Incident], now: datetime,
             policy: Policy) -> list[Incident]:
    rules = policy.confirm
    warning = {inc.id: inc for inc in incidents if inc.severity == "warning"}
    if not warning:
        return []
    rows = conn.execute(
        "SELECT incident_id,"
        " count(DISTINCT device_id) FILTER (WHERE device_kind = 'smoke_detector'),"
        " count(DISTINCT device_id) FILTER (WHERE device_kind = 'camera')"
        " FROM alerts WHERE incident_id = ANY(%s) AND NOT muted AND received_at > %s"
        " GROUP BY incident_id",
        [list(warning), now - timedelta(seconds=rules.window_s)]).fetchall()
    confirmed = []
    for incident_id, detectors, cameras in rows:
        if detectors >= rules.detectors or (
                rules.detector_and_camera and detectors >= 1 and cameras >= 1):
            inc = warning[incident_id]
            inc.severity, inc.ladder, inc.rung = "confirmed", "confirmed", -1
            confirmed.append(inc)
            _log(conn, inc.id, now, "confirmed", inc.state, inc.state,
                 {"detectors": detectors, "cameras": cameras, "window_s": rules.window_s})
    if confirmed:
        conn.execute("UPDATE incidents SET severity = 'confirmed', ladder = 'confirmed',"
                     " confirmed_at = %s WHERE id = ANY(%s)",
                     [now, [inc.id for inc in confirmed]])
    return confirmed


def _log(conn: psycopg.Connection[Any], incident_id: int, now: datetime, action: str,
         from_state: str | None, to_state: str | None, detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO incident_log (incident_id, at, actor, action, from_state,"
                 " to_state, detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 [incident_id, now, ladder.ACTOR, action, from_state, to_state,
                  json.dumps(detail)])
