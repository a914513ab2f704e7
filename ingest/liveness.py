"""Liveness from ingest: last_seen, device conditions and the quarantine of unknown ids.

    ingest writer thread                       flusher thread (LivenessFlusher)
    --------------------                       --------------------------------
    commit, ack ─► tracker.observe(decoded)    every devices.liveness_flush_s, or early once
                   in memory, per device id    many ids are pending: tracker.flush(conn),
                                               one transaction on its own connection

Devices report every 60 s to 24 h, ingest takes thousands of messages a second: so the
database gets one row per device per flush, never one per message, and the ack path never
waits for it. The flush runs on its own thread because a flush waiting on a lock or a
reconnect must not hold up acknowledgements. A failed flush is logged and counted; its
state goes back into the tracker and is written by the next one.

A gateway speaks only for the devices registered behind it (devices.gateway_id) and for
itself. An entry it relays for any other registered device is stored by ingest as usual
(readings.gateway_id records who relayed it) but says nothing about that device here: no
last_seen, status or condition, counted in firegrid_liveness_foreign_entries_total. Relayed
entries for unregistered ids still go to the quarantine. Since only the flush can read the
registry, the tracker keeps relayed state apart per (device, gateway) until then.

Every write is order-independent, since several ingest processes on a shared subscription
flush the same device in any order: last_seen and last_ts only move forward, status fields
and conditions change only for a newer device timestamp, message counts add up.

What one flush writes:
    device_status      registered ids: last_seen (receive time), newest device clock, the
                       newest status report's fields, message count
    devices.state      provisioned -> active the first time a device is heard (actor ingest)
    device_conditions  tamper, fault, low_battery, occlusion, video_loss from events and
                       statuses (see _event and _status for what sets and clears each), with
                       the device clock of the report that set it and its receive time
    quarantine         ids not in the registry: their rows are stored as usual; this is the
                       list field teams claim them from (devices.quarantine.claim)
    ingest_heartbeats  "this ingest is subscribed and flushing", which the monitor needs
                       before it may call a silent device offline
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from ingest import metrics
from protocol.decode import Decoded, Event, Reading
from runtime.db import connect
from runtime.errors import UnavailableError, first_line
from runtime.settings import DevicesSettings, Settings

log = logging.getLogger(__name__)


_CONDITION_EVENTS = frozenset({"tamper", "fault", "self_test", "low_battery", "occlusion",
                               "video_loss"})
# A status report's fields: heartbeat_s, battery_pct, rsrp_dbm, stream_online.
_Status = tuple[int | None, int | None, int | None, bool | None]
_NO_STATUS: _Status = (None, None, None, None)
# A condition's newest report: device ts, active, detail, receive time.
_Condition = tuple[int, bool, str, int]


@dataclass(slots=True)
class _Seen:
    """What the pending flush knows about one device id."""
    first_ms: int                 # earliest receive time (for the quarantine's first_seen)
    last_ms: int                  # newest receive time: last_seen
    topic: str                    # topic of the newest message (the quarantine shows it)
    messages: int = 0
    ts_ms: int | None = None      # newest device clock of any message
    status_ms: int | None = None  # device clock of the newest status report
    status: _Status = _NO_STATUS
    # condition name -> its newest report; None until the first one, most ids have none
    conditions: dict[str, _Condition] | None = None

    def received(self, ms: int, topic: str) -> None:
        self.messages += 1
        if ms >= self.last_ms:
            self.last_ms, self.topic = ms, topic
        elif ms < self.first_ms:
            self.first_ms = ms

    def stamp(self, ts_ms: int) -> None:
        if self.ts_ms is None or ts_ms > self.ts_ms:
            self.ts_ms = ts_ms

    def report(self, ts_ms: int, status: _Status) -> None:
        if self.status_ms is None or ts_ms >= self.status_ms:
            self.status_ms, self.status = ts_ms, status

    def condition(self, name: str, ts_ms: int, active: bool, detail: str,
                  received_ms: int) -> None:
        if self.conditions is None:
            self.conditions = {}
        held = self.conditions.get(name)
        if held is None or ts_ms >= held[0]:  # same millisecond: the later arrival wins
            self.conditions[name] = (ts_ms, active, detail, received_ms)

    def absorb(self, older: _Seen) -> None:
        """Fold in the state of a flush that failed; self holds what arrived since."""
        self.messages += older.messages
        self.first_ms = min(self.first_ms, older.first_ms)
        if older.last_ms > self.last_ms:
            self.last_ms, self.topic = older.last_ms, older.topic
        if older.ts_ms is not None:
            self.stamp(older.ts_ms)
        if older.status_ms is not None and (self.status_ms is None
                                            or older.status_ms > self.status_ms):
            self.status_ms, self.status = older.status_ms, older.status
        for name, (ts_ms, active, detail, received_ms) in (older.conditions or {}).items():
            held = (self.conditions or {}).get(name)
            if held is None or ts_ms > held[0]:
                self.condition(name, ts_ms, active, detail, received_ms)

    def merged(self, other: _Seen) -> _Seen:
        """A new _Seen holding both; neither is changed (a failed flush restores them)."""
        out = replace(self, conditions=dict(self.conditions) if self.conditions else None)
        out.absorb(other)
        return out


@dataclass
class FlushResult:
    devices: int = 0        # device_status rows written (registered ids)
    activated: int = 0      # provisioned -> active
    quarantined: int = 0    # unknown ids written to the quarantine
    conditions: int = 0     # device_conditions rows that changed
    foreign: int = 0        # gateway entries ignored: device registered, not behind it
    foreign_pairs: list[tuple[str, str]] = field(default_factory=list)  # (device, gateway)


class LivenessTracker:
    """Per-device liveness in memory, written by flush(). observe() and flush() may run on
    different threads.

    Memory is bounded: past `flush_at` pending ids the flusher is woken early (`due`); past
    `max_ids` (flushes failing for a long time) new ids are not kept, only counted, while
    ids already pending still update. A registered device sends again within its period,
    so what is missed then is a message count, not a device."""

    def __init__(self, settings: DevicesSettings, *, flush_at: int = 50_000,
                 max_ids: int = 200_000) -> None:
        self._low = settings.low_battery_pct
        self._clear = settings.low_battery_clear_pct
        # A gap in an ingest's heartbeats longer than this starts a new run (see 0004).
        self._beat_gap_s = 2 * settings.liveness_flush_s + settings.offline_grace_s
        self._flush_at = flush_at
        self._max_ids = max_ids
        # Keyed by (device id, relaying gateway id or None): relayed state stays apart
        # until the flush has checked it against the registry.
        self._pending: dict[tuple[str, str | None], _Seen] = {}
        self._lock = threading.Lock()
        self.due = threading.Event()

    def __len__(self) -> int:
        return len(self._pending)

    # --- the writer thread --------------------------------------------------------------

    def observe(self, items: Iterable[Decoded]) -> None:
        """Take note of committed messages. Only stored rows count: a dead-lettered message
        proves no more than that something published under that id."""
        with self._lock:
            for item in items:
                gateway_id = None
                for row in item.readings:
                    seen = self._seen(row.device_id, row.gateway_id, row.received_ms,
                                      item.topic)
                    if seen is not None:
                        seen.stamp(row.ts_ms)
                        self._status(seen, row)
                    gateway_id = gateway_id or row.gateway_id
                for event in item.events:
                    seen = self._seen(event.device_id, event.gateway_id, event.received_ms,
                                      item.topic)
                    if seen is not None:
                        seen.stamp(event.ts_ms)
                        if event.type in _CONDITION_EVENTS:
                            self._event(seen, event)
                    gateway_id = gateway_id or event.gateway_id
                if gateway_id is not None:
                    # The relaying gateway is alive too: one message, whatever it carried
                    # and whoever its entries were for. Its own clock is in the envelope,
                    # which ingest does not keep.
                    self._seen(gateway_id, None, item.received_ms, item.topic)
            pending = len(self._pending)
        metrics.LIVENESS_PENDING.set(pending)
        if pending >= self._flush_at:
            self.due.set()

    def _seen(self, device_id: str, via: str | None, received_ms: int,
              topic: str) -> _Seen | None:
        # A gateway's entry about itself is its own word, as on its own topics.
        key = (device_id, None if via == device_id else via)
        seen = self._pending.get(key)
        if seen is None:
            if len(self._pending) >= self._max_ids:
                metrics.LIVENESS_DROPPED.inc()
                return None
            seen = self._pending[key] = _Seen(received_ms, received_ms, topic)
        seen.received(received_ms, topic)
        return seen

    def _status(self, seen: _Seen, row: Reading) -> None:
        ts, received = row.ts_ms, row.received_ms
        if row.kind == "smoke":
            battery = row.battery_pct
            assert battery is not None  # a smoke_status always has one (protocol.models)
            seen.report(ts, (row.heartbeat_s, battery, row.rsrp_dbm, None))
            # Hysteresis: between the two thresholds the condition stays as it was.
            if battery <= self._low:
                seen.condition("low_battery", ts, True, f"battery {battery}%", received)
            elif battery >= self._clear:
                seen.condition("low_battery", ts, False, f"battery {battery}%", received)
        else:
            seen.report(ts, (None, None, None, row.stream_online))
            if row.stream_online and row.recording:
                seen.condition("fault", ts, False, "streaming and recording", received)

    def _event(self, seen: _Seen, row: Event) -> None:
        kind, ts, received = row.type, row.ts_ms, row.received_ms
        attrs = json.loads(row.attrs)
        if kind == "tamper":
            seen.condition("tamper", ts, attrs["state"] != "restored", attrs["state"],
                           received)
        elif kind == "fault":
            detail = attrs["code"] + (f": {attrs['detail']}" if attrs.get("detail") else "")
            seen.condition("fault", ts, True, detail, received)
        elif kind == "self_test":
            # A failed self test is a fault a technician must see; a passing one clears it.
            failed = attrs["result"] == "fail"
            detail = "self_test " + attrs["result"] + (
                f": {attrs['detail']}" if attrs.get("detail") else "")
            seen.condition("fault", ts, failed, detail, received)
        elif kind == "low_battery":
            seen.condition("low_battery", ts, True, f"battery {attrs['battery_pct']}%",
                           received)
        else:  # occlusion, video_loss
            seen.condition(kind, ts, attrs["active"], "", received)

    # --- the flusher thread -------------------------------------------------------------

    def flush(self, conn: psycopg.Connection, *, source: str | None = None,
              now_ms: int | None = None) -> FlushResult:
        """Write everything pending in one transaction on `conn` (autocommit: the flush
        opens its own). `source`: the ingest's client id, given while it is subscribed to
        the broker, recorded as watching at `now_ms` (ingest's clock, like last_seen).
        On any error the state is kept for the next flush and the error re-raised."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self.due.clear()
        if not pending and source is None:
            return FlushResult()
        started = time.perf_counter()
        try:
            with conn.transaction():
                result = _write(conn, pending) if pending else FlushResult()
                if source is not None:
                    conn.execute(_BEAT, {"client": source, "gap": self._beat_gap_s,
                                         "now": now_ms if now_ms is not None
                                         else time.time_ns() // 1_000_000})
        except BaseException:
            metrics.LIVENESS_FLUSH_FAILURES.inc()
            self._restore(pending)
            raise
        metrics.LIVENESS_FLUSHES.inc()
        metrics.LIVENESS_FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.QUARANTINE_FLUSHED.inc(result.quarantined)
        metrics.LIVENESS_PENDING.set(len(self._pending))
        if result.foreign:
            # Counted once committed: a failed flush's entries come round again.
            metrics.LIVENESS_FOREIGN_ENTRIES.inc(result.foreign)
            shown = ", ".join(f"{d} via {g}" for d, g in result.foreign_pairs[:5])
            more = len(result.foreign_pairs) - 5
            log.warning("liveness: ignored %d gateway entries for registered devices not behind"
                        " the gateway that relayed them: %s%s", result.foreign, shown,
                        f" and {more} more" if more > 0 else "")
        return result

    def _restore(self, older: dict[tuple[str, str | None], _Seen]) -> None:
        with self._lock:
            newer = self._pending
            for key, seen in older.items():
                held = newer.get(key)
                if held is not None:
                    held.absorb(seen)
                elif len(newer) < self._max_ids:  # the bound holds through failed flushes
                    newer[key] = seen
                else:
                    metrics.LIVENESS_DROPPED.inc()


# --- SQL ---------------------------------------------------------------------------------

def _at(ms: str) -> str:
    return f"timestamptz 'epoch' + {ms} * interval '1 millisecond'"


_SEEN_COLS = ("device_id", "first_ms", "last_ms", "topic", "messages", "ts_ms", "status_ms",
              "heartbeat_s", "battery_pct", "rsrp_dbm", "stream_online")
_SEEN_TYPES = ("text", "int8", "int8", "text", "int8", "int8", "int8", "int4", "int2", "int2",
               "bool")
_COND_COLS = ("device_id", "condition", "active", "changed_ms", "detail", "reported_ms")
_COND_TYPES = ("text", "text", "bool", "int8", "text", "int8")


def _stage(name: str, cols: tuple[str, ...], types: tuple[str, ...]) -> str:
    return (f"CREATE TEMP TABLE IF NOT EXISTS {name} ("
            + ", ".join(f"{c} {t}" for c, t in zip(cols, types, strict=True))
            + ") ON COMMIT DELETE ROWS")


_STATUS_FIELDS = ("status_ts", "reported_heartbeat_s", "battery_pct", "rsrp_dbm",
                  "stream_online")
_NEWER_STATUS = "EXCLUDED.status_ts > coalesce(ds.status_ts, '-infinity')"

# ORDER BY device_id everywhere: two ingest processes flushing overlapping sets then lock
# rows in the same order and cannot deadlock on them.
_UPSERT_STATUS = (
    "INSERT INTO device_status AS ds (device_id, last_seen, last_ts, messages, "
    + ", ".join(_STATUS_FIELDS) + ")"
    f" SELECT s.device_id, {_at('s.last_ms')}, {_at('s.ts_ms')}, s.messages,"
    f" {_at('s.status_ms')}, s.heartbeat_s, s.battery_pct, s.rsrp_dbm, s.stream_online"
    " FROM liveness_seen s JOIN devices d ON d.id = s.device_id ORDER BY s.device_id"
    " ON CONFLICT (device_id) DO UPDATE SET"
    " last_seen = greatest(ds.last_seen, EXCLUDED.last_seen),"
    " last_ts = greatest(ds.last_ts, EXCLUDED.last_ts),"
    " messages = ds.messages + EXCLUDED.messages, "
    + ", ".join(f"{c} = CASE WHEN {_NEWER_STATUS} THEN EXCLUDED.{c} ELSE ds.{c} END"
                for c in _STATUS_FIELDS)
)
_ACTIVATE = (
    "UPDATE devices d SET state = 'active' FROM liveness_seen s"
    " WHERE d.id = s.device_id AND d.state = 'provisioned'"
)
_UPSERT_QUARANTINE = (
    "INSERT INTO quarantine AS q (device_id, first_seen, last_seen, messages, last_topic)"
    f" SELECT s.device_id, {_at('s.first_ms')}, {_at('s.last_ms')}, s.messages, s.topic"
    " FROM liveness_seen s WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = s.device_id)"
    " ORDER BY s.device_id"
    " ON CONFLICT (device_id) DO UPDATE SET"
    " first_seen = least(q.first_seen, EXCLUDED.first_seen),"
    " last_seen = greatest(q.last_seen, EXCLUDED.last_seen),"
    " messages = q.messages + EXCLUDED.messages,"
    " last_topic = CASE WHEN EXCLUDED.last_seen >= q.last_seen"
    "              THEN EXCLUDED.last_topic ELSE q.last_topic END"
)
_UPSERT_CONDITIONS = (
    "INSERT INTO device_conditions AS dc (device_id, condition, active, changed_ts, detail,"
    " reported_at)"
    f" SELECT c.device_id, c.condition, c.active, {_at('c.changed_ms')}, c.detail,"
    f" {_at('c.reported_ms')}"
    " FROM liveness_conditions c WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = c.device_id)"
    " ORDER BY c.device_id, c.condition"
    " ON CONFLICT (device_id, condition) DO UPDATE SET active = EXCLUDED.active,"
    " changed_ts = EXCLUDED.changed_ts, detail = EXCLUDED.detail,"
    " reported_at = EXCLUDED.reported_at"
    " WHERE EXCLUDED.changed_ts > dc.changed_ts"
)
_BEAT = (
    "INSERT INTO ingest_heartbeats AS h (client_id, since, flushed_at)"
    f" VALUES (%(client)s, {_at('%(now)s')}, {_at('%(now)s')})"
    " ON CONFLICT (client_id) DO UPDATE SET"
    " flushed_at = greatest(h.flushed_at, EXCLUDED.flushed_at),"
    " since = CASE WHEN EXCLUDED.flushed_at - h.flushed_at > %(gap)s * interval '1 second'"
    "         THEN EXCLUDED.since ELSE h.since END"
)


# Who is behind which gateway, for the registered ones among the ids gateways relayed.
_GATEWAY_OF = "SELECT id, gateway_id FROM devices WHERE id = ANY(%s)"


def _vouched(cur: psycopg.Cursor, pending: dict[tuple[str, str | None], _Seen],
             result: FlushResult) -> dict[str, _Seen]:
    """One _Seen per device id: its own messages, and what gateways relayed for it when the
    registry puts it behind that gateway (or does not know the id: the quarantine's).
    Relayed entries for any other registered device are left out and counted."""
    relayed = sorted({device_id for device_id, via in pending if via is not None})
    behind: dict[str, str | None] = (
        dict(cur.execute(_GATEWAY_OF, [relayed]).fetchall()) if relayed else {})
    out: dict[str, _Seen] = {}
    for (device_id, via), seen in pending.items():
        if via is not None and device_id in behind and behind[device_id] != via:
            result.foreign += seen.messages
            result.foreign_pairs.append((device_id, via))
            continue
        held = out.get(device_id)
        out[device_id] = seen if held is None else held.merged(seen)
    result.foreign_pairs.sort()
    return out


def _write(conn: psycopg.Connection, pending: dict[tuple[str, str | None], _Seen]
           ) -> FlushResult:
    result = FlushResult()
    with conn.cursor() as cur:
        vouched = _vouched(cur, pending, result)
        seen_rows: list[tuple[str, int, int, str, int, int | None, int | None, *_Status]] = []
        cond_rows: list[tuple[str, str, bool, int, str, int]] = []
        for device_id in sorted(vouched):
            s = vouched[device_id]
            seen_rows.append((device_id, s.first_ms, s.last_ms, s.topic, s.messages, s.ts_ms,
                              s.status_ms, *s.status))
            for name, (ts_ms, active, detail, received_ms) in (s.conditions or {}).items():
                cond_rows.append((device_id, name, active, ts_ms, detail, received_ms))
        if not seen_rows:
            return result
        # A history row for a device heard the first time names ingest as the actor.
        cur.execute("SELECT set_config('firegrid.actor', 'ingest', true)")
        cur.execute(_stage("liveness_seen", _SEEN_COLS, _SEEN_TYPES))
        cur.execute(_stage("liveness_conditions", _COND_COLS, _COND_TYPES))
        _copy(cur, "liveness_seen", _SEEN_COLS, _SEEN_TYPES, seen_rows)
        cur.execute(_UPSERT_STATUS)
        result.devices = cur.rowcount
        cur.execute(_ACTIVATE)
        result.activated = cur.rowcount
        cur.execute(_UPSERT_QUARANTINE)
        result.quarantined = cur.rowcount
        if cond_rows:
            _copy(cur, "liveness_conditions", _COND_COLS, _COND_TYPES, cond_rows)
            cur.execute(_UPSERT_CONDITIONS)
            result.conditions = cur.rowcount
    return result


def _copy(cur: psycopg.Cursor, table: str, cols: tuple[str, ...], types: tuple[str, ...],
          rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


# --- the flusher thread ------------------------------------------------------------------

class LivenessFlusher:
    """Runs tracker.flush every devices.liveness_flush_s (or early when the tracker says it
    is due) on its own thread and database connection; a last flush on stop()."""

    # A flush that waits longer than this on a lock (say, a registry import holding device
    # rows) gives up and is retried, rather than letting liveness go stale behind it.
    _LOCK_TIMEOUT = "5s"
    _STATEMENT_TIMEOUT = "60s"

    def __init__(self, tracker: LivenessTracker, settings: Settings,
                 watching: Callable[[], bool] = lambda: False) -> None:
        self.tracker = tracker
        self._db = settings.database
        self._interval = settings.devices.liveness_flush_s
        self._source = settings.mqtt.client_id
        self._watching = watching
        self._stopping = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="liveness-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush what is pending one last time and end the thread."""
        if not self._thread.is_alive():
            return
        self._stopping.set()
        self.tracker.due.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("liveness: last flush still running after %.0f s; leaving it", timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.tracker.due.wait(self._interval)  # the interval, or early when due
            if self._stopping.is_set():
                break
            if not self._flush_once():
                # However much is pending, give a database that just failed a full interval.
                self._stopping.wait(self._interval)
        self._flush_once(final=True)
        self._close()

    def _flush_once(self, final: bool = False) -> bool:
        try:
            conn = self._connection()
        except (psycopg.Error, OSError, UnavailableError) as exc:
            metrics.LIVENESS_FLUSH_FAILURES.inc()
            self._close()
            return self._failed(exc, final)
        source = None if final or not self._watching() else self._source
        try:
            self.tracker.flush(conn, source=source)  # counts its own failures
            return True
        except (psycopg.Error, OSError) as exc:
            self._close()
            return self._failed(exc, final)
        except Exception:
            # A bug must not end the thread: liveness would go stale while ingest runs on.
            log.exception("liveness flush failed")
            self._close()
            return False

    def _failed(self, exc: Exception, final: bool) -> bool:
        text = first_line(exc)
        log.warning("liveness flush failed (%s); %d device ids %s", text, len(self.tracker),
                    "not written (stopping)" if final else "kept for the next flush")
        return False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self._db, autocommit=True)
            conn.execute(f"SET lock_timeout = '{self._LOCK_TIMEOUT}'")
            conn.execute(f"SET statement_timeout = '{self._STATEMENT_TIMEOUT}'")
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
