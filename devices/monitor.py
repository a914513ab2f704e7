"""The maintenance monitor: offline detection, and the tickets field technicians work from.

Every devices.monitor_interval_s, one transaction of set-based statements (check()):

    close  tickets of retired devices ('retired'); offline tickets of devices heard again
           and condition tickets whose condition has cleared ('cleared')
    open   'offline' for active/maintenance devices silent for longer than
               missed(kind) x period + offline_grace_s
           (period: the heartbeat_s a detector reports, else the registered one; missed:
           cameras 3, smoke detectors 2, gateways 3), and a ticket per active condition
           (tamper, fault, low_battery, occlusion, video_loss) from device_conditions.

Rules the statements keep:
- At most one open ticket per device and condition: the partial unique index decides, so
  concurrent monitors cannot duplicate one (INSERT ... ON CONFLICT DO NOTHING); a
  transaction-level advisory lock makes a second monitor wait rather than redo the work.
- No ticket for a retired device, nor for a provisioned one (installed, never heard: it
  becomes active with its first message). An active device never heard at all counts as
  silent since it was installed.
- A ticket closed by hand ('manual') is not reopened for the same episode: offline opens
  again only after the device was heard after the close and fell silent again, a condition
  only when the device reports it again after the close. "After" compares server times
  only: closed_at with last_seen, or with the receive time of the report that set the
  condition (device_conditions.reported_at), never with a device clock, which may be
  minutes behind.
- No new offline tickets while no ingest says it is subscribed and flushing
  (ingest_heartbeats): when ingest, the broker or the flush is down, every device looks
  silent, and 3,000 camera tickets would help nobody. Closing goes on meanwhile.
- A ticket goes to a field technician covering the building's grid, else its community,
  else its street (lowest id first), or to nobody when there is none.

On TimescaleDB each check also exports its background jobs' health (last success,
consecutive failures: runtime.timescale.job_metrics), which nothing else watches: a job that
fails keeps failing quietly, with backoff, and compression, retention or the aggregate's
refresh stop.

run_monitor() also keeps the daily readings rollup (devices/rollup.py) up to date every
devices.rollup_interval_s, in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Counter

from devices import metrics, rollup
from runtime import timescale
from runtime.db import classify, connect
from runtime.errors import UnavailableError, first_line
from runtime.settings import DevicesSettings, Settings

log = logging.getLogger(__name__)

_LOCK_KEY = 0x66676D6E  # "fgmn"
# Who a device's ticket goes to: a field technician covering its building (building_cover)
# through its grid, else its community, else its street (lowest id first). A LEFT JOIN
# LATERAL over a query that has the device `d`; gives `tech.id`, NULL when nobody covers
# it. The alert core's false-alarm feedback (alerts.loop) assigns its tickets the same way.
TECHNICIAN = (
    "LEFT JOIN LATERAL ("
    " SELECT w.id FROM building_cover v JOIN workers w ON w.id = v.worker_id"
    " WHERE v.building_id = d.building_id AND w.role = 'field_technician' AND w.active"
    " ORDER BY v.distance, w.id LIMIT 1) tech ON true"
)
# Every ticket condition; 'false_alarms' tickets are opened by the alert core's feedback
# (alerts.loop), not here, and closed by hand after a visit.
CONDITIONS = ("offline", "low_battery", "tamper", "fault", "occlusion", "video_loss",
              "false_alarms")


@dataclass
class MonitorReport:
    opened: dict[str, int] = field(default_factory=dict)        # by condition
    closed: dict[str, int] = field(default_factory=dict)        # by reason: cleared, retired
    open_tickets: dict[str, int] = field(default_factory=dict)  # by condition, after the check
    offline_paused: bool = False  # no ingest watching: no offline tickets opened
    # (street, community) -> (watched devices, online); computed even while offline
    # detection is paused (then nearly nothing is online: the alerting rule waits instead)
    communities: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


# The newest sign of life: last_seen, or for an active device never heard, its installation.
_HEARD = "coalesce(s.last_seen, d.installed_at)"
_PERIOD = "coalesce(s.reported_heartbeat_s, d.heartbeat_s)"
_LIMIT = ("make_interval(secs => CASE d.kind WHEN 'camera' THEN %(camera_missed)s"
          " WHEN 'gateway' THEN %(gateway_missed)s ELSE %(smoke_missed)s END"
          f" * {_PERIOD} + %(grace)s)")
_CLOSE = "closed_at = %(now)s, close_reason = '{}', closed_by = 'monitor'"

_WATCHING = (
    "SELECT EXISTS (SELECT 1 FROM ingest_heartbeats"
    " WHERE flushed_at >= %(now)s - %(window)s * interval '1 second'"
    " AND since <= %(now)s - %(window)s * interval '1 second')"
)
_CLOSE_RETIRED = (
    f"WITH closed AS (UPDATE maintenance_tickets t SET {_CLOSE.format('retired')}"
    " FROM devices d WHERE d.id = t.device_id AND d.state = 'retired' AND t.closed_at IS NULL"
    " RETURNING 1) SELECT count(*) FROM closed"
)
_CLOSE_HEARD = (
    f"WITH closed AS (UPDATE maintenance_tickets t SET {_CLOSE.format('cleared')}"
    " FROM devices d LEFT JOIN device_status s ON s.device_id = d.id"
    " WHERE d.id = t.device_id AND t.condition = 'offline' AND t.closed_at IS NULL"
    f" AND {_HEARD} >= %(now)s - {_LIMIT}"
    " RETURNING 1) SELECT count(*) FROM closed"
)
_CLOSE_CLEARED = (
    f"WITH closed AS (UPDATE maintenance_tickets t SET {_CLOSE.format('cleared')}"
    " FROM device_conditions c WHERE c.device_id = t.device_id AND c.condition = t.condition"
    " AND NOT c.active AND t.closed_at IS NULL"
    " RETURNING 1) SELECT count(*) FROM closed"
)
_OPEN = (
    # heard: server time of the evidence (last_seen or installation; a condition's report
    # receive time), to compare with a manual close's closed_at
    "WITH due (device_id, condition, heard, detail) AS ("
    # silent devices (skipped wholesale while no ingest is watching)
    f"  SELECT d.id, 'offline', {_HEARD},"
    f"   'silent since ' || to_char({_HEARD} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    f"   || ' UTC; reports every ' || {_PERIOD} || ' s'"
    "  FROM devices d LEFT JOIN device_status s ON s.device_id = d.id"
    "  WHERE %(watching)s AND d.state IN ('active', 'maintenance')"
    f"  AND {_HEARD} < %(now)s - {_LIMIT}"
    " UNION ALL"
    # conditions the devices report
    "  SELECT c.device_id, c.condition, c.reported_at, c.detail"
    "  FROM device_conditions c JOIN devices d ON d.id = c.device_id"
    "  WHERE c.active AND d.state IN ('active', 'maintenance')"
    "), fresh AS ("
    "  SELECT due.* FROM due WHERE NOT EXISTS ("
    "   SELECT 1 FROM maintenance_tickets t"
    "   WHERE t.device_id = due.device_id AND t.condition = due.condition"
    "   AND (t.closed_at IS NULL OR (t.close_reason = 'manual' AND t.closed_at >= due.heard)))"
    "), opened AS ("
    "  INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail, assigned_to)"
    "  SELECT f.device_id, f.condition, %(now)s, f.detail, tech.id"
    "  FROM fresh f JOIN devices d ON d.id = f.device_id"
    f"  {TECHNICIAN}"
    "  ORDER BY f.device_id, f.condition"
    "  ON CONFLICT (device_id, condition) WHERE closed_at IS NULL DO NOTHING"
    "  RETURNING condition"
    ") SELECT condition, count(*) FROM opened GROUP BY condition"
)
_OPEN_NOW = ("SELECT condition, count(*) FROM maintenance_tickets WHERE closed_at IS NULL"
             " GROUP BY condition")
_UNCLAIMED = "SELECT count(*) FROM quarantine WHERE claimed_at IS NULL"
# Watched devices per community, and how many are within their offline limit: the same rule
# that opens offline tickets, so "online" here and an offline ticket never disagree.
# Communities without devices are listed too (0 and 0), so a dashboard shows them.
_COMMUNITIES = (
    "SELECT co.street_id, co.id, count(d.id),"
    f" count(d.id) FILTER (WHERE {_HEARD} >= %(now)s - {_LIMIT})"
    " FROM communities co"
    " LEFT JOIN grids g ON g.community_id = co.id"
    " LEFT JOIN buildings b ON b.grid_id = g.id"
    " LEFT JOIN devices d ON d.building_id = b.id AND d.state IN ('active', 'maintenance')"
    " LEFT JOIN device_status s ON s.device_id = d.id"
    " GROUP BY co.street_id, co.id"
)


def check(conn: psycopg.Connection, now: datetime, settings: DevicesSettings) -> MonitorReport:
    """One maintenance check as of `now` (timezone-aware), in one transaction on `conn`
    (autocommit: the check opens its own)."""
    if now.tzinfo is None:
        raise ValueError("check() needs a timezone-aware time")
    # An ingest is watching when it flushed within this window and has done so for at
    # least as long: one missed flush is no outage, and a backlog replayed after one gets
    # time to land before anything is called silent.
    window = 2 * settings.liveness_flush_s + settings.offline_grace_s
    params = {"now": now, "window": window, "grace": settings.offline_grace_s,
              "camera_missed": settings.camera_missed, "smoke_missed": settings.smoke_missed,
              "gateway_missed": settings.gateway_missed}
    report = MonitorReport()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        params["watching"] = _value(cur, _WATCHING, params)
        report.offline_paused = not params["watching"]
        report.closed["retired"] = _value(cur, _CLOSE_RETIRED, params)
        report.closed["cleared"] = (_value(cur, _CLOSE_HEARD, params)
                                    + _value(cur, _CLOSE_CLEARED, params))
        report.opened = dict(cur.execute(_OPEN, params).fetchall())
        report.open_tickets = dict(cur.execute(_OPEN_NOW).fetchall())
        unclaimed = _value(cur, _UNCLAIMED)
        report.communities = {(street, community): (watched, online) for
                              street, community, watched, online in
                              cur.execute(_COMMUNITIES, params).fetchall()}
    report.closed = {reason: n for reason, n in report.closed.items() if n}
    for condition in CONDITIONS:
        metrics.OPEN_TICKETS.labels(condition).set(report.open_tickets.get(condition, 0))
    for condition, n in report.opened.items():
        metrics.TICKETS_OPENED.labels(condition).inc(n)
    for reason, n in report.closed.items():
        metrics.TICKETS_CLOSED.labels(reason).inc(n)
    metrics.QUARANTINE_UNCLAIMED.set(unclaimed)
    _export_communities(report.communities)
    metrics.OFFLINE_PAUSED.set(int(report.offline_paused))
    metrics.MONITOR_RUNS.inc()
    try:
        _export_jobs(timescale.job_metrics(conn))
    except psycopg.Error as exc:
        # The tickets are committed: a role that may not read job_errors, say, must not
        # make the check count as failed (FiregridMonitorNotChecking). The job series go
        # stale; the log says why. A lost connection is the next check's failure.
        if conn.closed or isinstance(exc, psycopg.OperationalError):
            raise
        log.warning("TimescaleDB job health not read: %s", str(exc).strip().splitlines()[0])
    return report


def _value(cur: psycopg.Cursor, query: str, params: dict[str, object] | None = None) -> Any:
    row = cur.execute(query, params).fetchone()
    assert row is not None  # EXISTS and count(*) answer one row
    return row[0]


# The (street, community) label pairs exported by the last check, to remove the series of
# communities that left the registry (set first, then remove: a scrape in between sees
# every community that still exists).
_exported: set[tuple[str, str]] = set()
_exported_lock = threading.Lock()


def _export_communities(communities: dict[tuple[str, str], tuple[int, int]]) -> None:
    with _exported_lock:
        for labels, (watched, online) in communities.items():
            metrics.COMMUNITY_DEVICES.labels(*labels).set(watched)
            metrics.COMMUNITY_ONLINE.labels(*labels).set(online)
        for labels in _exported - communities.keys():
            metrics.COMMUNITY_DEVICES.remove(*labels)
            metrics.COMMUNITY_ONLINE.remove(*labels)
        _exported.clear()
        _exported.update(communities)


_exported_jobs: set[str] = set()


def _export_jobs(jobs: list[timescale.JobHealth]) -> None:
    """As _export_communities: a job that is gone (a policy replaced or removed) loses its
    series."""
    with _exported_lock:
        for job in jobs:
            metrics.TIMESCALE_JOB_LAST_SUCCESS.labels(job.job).set(job.last_success)
            metrics.TIMESCALE_JOB_FAILURES.labels(job.job).set(job.consecutive_failures)
        names = {job.job for job in jobs}
        for name in _exported_jobs - names:
            metrics.TIMESCALE_JOB_LAST_SUCCESS.remove(name)
            metrics.TIMESCALE_JOB_FAILURES.remove(name)
        _exported_jobs.clear()
        _exported_jobs.update(names)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_monitor(settings: Settings, stop: threading.Event,
                clock: Callable[[], datetime] = _utcnow) -> None:
    """check() every devices.monitor_interval_s until `stop` is set. A failed check (the
    database down, a lock timeout) is logged, counted and tried again at the next tick."""
    interval = settings.devices.monitor_interval_s
    paused = False
    log.info("maintenance monitor running: every %.0f s", interval)
    rollup_thread = None
    if settings.devices.rollup_interval_s > 0:
        # Its own thread and connection: a first backfill over a year of history takes
        # minutes, and offline checks must not wait for it.
        rollup_thread = threading.Thread(target=run_rollup, args=(settings, stop, clock),
                                         name="readings-rollup", daemon=True)
        rollup_thread.start()

    def step(conn: psycopg.Connection) -> None:
        nonlocal paused
        report = check(conn, clock(), settings.devices)
        if report.offline_paused != paused:
            paused = report.offline_paused
            if paused:
                log.warning("no ingest is subscribed and flushing liveness: offline "
                            "detection paused")
            else:
                log.info("an ingest is watching again: offline detection resumed")
        if report.opened or report.closed:
            log.info("maintenance tickets opened %s, closed %s; open now %s",
                     report.opened, report.closed, report.open_tickets)

    try:
        _every(settings, stop, interval, "maintenance check", metrics.MONITOR_FAILURES, step)
    finally:
        if rollup_thread is not None:
            rollup_thread.join()


def run_rollup(settings: Settings, stop: threading.Event,
               clock: Callable[[], datetime] = _utcnow) -> None:
    """rollup.refresh() now and every devices.rollup_interval_s until `stop` is set; a
    failure is logged, counted and tried again at the next interval."""
    interval = settings.devices.rollup_interval_s
    log.info("daily readings rollup running: every %.0f s", interval)

    def step(conn: psycopg.Connection) -> None:
        report = rollup.refresh(conn, clock(), late_days=settings.ingest.max_age_days,
                                future_s=settings.ingest.max_future_skew_s, stop=stop)
        backfilled = report.days.get("backfill", [])
        if backfilled:
            log.info("readings rollup: backfilled %d days (%s to %s) in %.1f s%s",
                     len(backfilled), backfilled[0], backfilled[-1], report.seconds,
                     "; interrupted, carries on next start" if report.interrupted else "")

    _every(settings, stop, interval, "readings rollup", metrics.ROLLUP_FAILURES, step)


def _every(settings: Settings, stop: threading.Event, interval: float, what: str,
           failures: Counter, step: Callable[[psycopg.Connection], None]) -> None:
    """step(conn) now and every `interval` s until `stop`. A database failure is logged as
    its kind, counted in `failures`, and tried again at the next interval on a new
    connection: the work is idempotent, so starting over loses nothing."""
    conn: psycopg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(settings.database, autocommit=True)
                step(conn)
            except (psycopg.Error, OSError, UnavailableError) as exc:
                failures.inc()
                kind = "transient" if isinstance(exc, UnavailableError | OSError) else classify(exc)
                text = first_line(exc)
                log.log(logging.ERROR if kind == "operator" else logging.WARNING,
                        "%s failed (%s: %s); next try in %.0f s", what, kind, text, interval)
                if conn is not None:
                    conn.close()
                    conn = None
            stop.wait(interval)
    finally:
        if conn is not None:
            conn.close()
