"""The batch sink: decoded messages -> one PostgreSQL transaction -> committed.

The common batch (status reports only, no duplicate run going on) is one COPY (binary)
straight into readings on an autocommit connection: the statement is its own transaction,
two round trips in all. Anything else, or a batch that COPY refused, goes the careful way,
per batch in one transaction:
    COPY (binary) readings rows straight into readings, under a savepoint; if a row is
    already there (a redelivery: rare, but every batch after a restart) the savepoint is
    rolled back and the batch goes the conflict-safe way: COPY into a temp stage table,
    INSERT INTO readings ... ON CONFLICT DO NOTHING (a redelivered message never makes a
    second row), and the next _STAGED_AFTER_DUPLICATE batches go that way at once, since
    duplicates come in runs. Events always go through their stage (fewer, and jsonb).
    Upsert dead letters; COMMIT. Only then does the caller acknowledge the messages.

Errors (runtime.db.classify decides):
    transient  -> roll back, reconnect with jittered backoff, retry the same batch; the
                  messages stay unacknowledged, so the window fills and the broker holds
                  the rest. Nothing is dropped while the database is away.
    data       -> bisect the batch under savepoints until the offending messages are
                  isolated; those become db_rejected dead letters, the rest commit.
    operator   -> (missing table, no permission) retried like transient, logged as errors.
Any other exception while writing (a value the driver cannot encode raises OverflowError,
not a psycopg.Error) is a data error too: one message must never stop ingest, and since it
was never acknowledged it would come back at every restart.

A message whose identity (device_id, ts, seq) is already stored with a different body (a
device reusing a sequence number, or a bug in its firmware) is not stored again; it is kept
as a conflicting_resend dead letter, so the difference can be inspected. Redeliveries with
the same body are the normal case and are only counted as duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format

from ingest import metrics
from ingest.errors import Abandoned
from protocol.decode import DeadLetter, Decoded, Event, Reading
from runtime.db import classify, connect
from runtime.errors import UnavailableError, first_line
from runtime.retry import Backoff
from runtime.settings import DatabaseSettings, IngestSettings

log = logging.getLogger(__name__)

_READING_COLS = Reading._fields  # the stage tables follow the records, field by field
_READING_TYPES = (
    "text", "int8", "int8", "text", "int8", "text", "float4", "float4", "int2", "float4",
    "int2", "float4", "int4", "bool", "bool", "int8",
)
# Straight into readings: the same values, the two millisecond stamps as timestamptz
# (_MillisTz does the conversion in the driver, without a datetime per value).
_DIRECT_TYPES = tuple("timestamptz" if c in ("ts_ms", "received_ms") else t
                      for c, t in zip(_READING_COLS, _READING_TYPES, strict=True))
_COPY_DIRECT = ("COPY readings (device_id, ts, seq, kind, received_at, gateway_id,"
                " obscuration_db_m, temperature_c, battery_pct, battery_v, rsrp_dbm, sinr_db,"
                " heartbeat_s, stream_online, recording, storage_free_mb)"
                " FROM STDIN (FORMAT BINARY)")
_STAGED_AFTER_DUPLICATE = 20
_EVENT_COLS = Event._fields
_EVENT_TYPES = ("text", "int8", "int8", "text", "int8", "text", "text")

_EPOCH = "timestamptz 'epoch' + {} * interval '1 millisecond'"
_SETUP = [
    "CREATE TEMP TABLE IF NOT EXISTS stage_readings ("
    + ", ".join(f"{c} {t}" for c, t in zip(_READING_COLS, _READING_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_events ("
    + ", ".join(f"{c} {t}" for c, t in zip(_EVENT_COLS, _EVENT_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS",
]
_INSERT_READINGS = (
    "INSERT INTO readings (device_id, ts, seq, kind, received_at, gateway_id, obscuration_db_m,"
    " temperature_c, battery_pct, battery_v, rsrp_dbm, sinr_db, heartbeat_s, stream_online,"
    " recording, storage_free_mb) SELECT device_id, " + _EPOCH.format("ts_ms") + ", seq, kind, "
    + _EPOCH.format("received_ms") + ", gateway_id, obscuration_db_m, temperature_c,"
    " battery_pct, battery_v, rsrp_dbm, sinr_db, heartbeat_s, stream_online, recording,"
    " storage_free_mb FROM stage_readings ON CONFLICT DO NOTHING"
)
_INSERT_EVENTS = (
    "INSERT INTO events (device_id, ts, seq, type, received_at, gateway_id, attrs)"
    " SELECT device_id, " + _EPOCH.format("ts_ms") + ", seq, type, "
    + _EPOCH.format("received_ms") + ", gateway_id, attrs::jsonb FROM stage_events"
    " ON CONFLICT DO NOTHING"
)
# The stored rows with the identities of the staged ones; asked only when an insert stored
# fewer rows than it was given (duplicates are rare, so the common batch pays nothing).
_STORED_READINGS = (
    # real -> float8 is exact, and float8's text is the shortest that reads back the same:
    # the values compare equal to the message's own, rounded as a real (_f4).
    "SELECT r.device_id, s.ts_ms, r.seq, r.kind, r.obscuration_db_m::float8,"
    " r.temperature_c::float8, r.battery_pct, r.battery_v::float8, r.rsrp_dbm,"
    " r.sinr_db::float8, r.heartbeat_s, r.stream_online, r.recording, r.storage_free_mb"
    " FROM (SELECT DISTINCT device_id, ts_ms, seq FROM stage_readings) s JOIN readings r"
    " ON r.device_id = s.device_id AND r.seq = s.seq AND r.ts = " + _EPOCH.format("s.ts_ms")
)
_STORED_EVENTS = (
    "SELECT r.device_id, s.ts_ms, r.seq, r.type, r.attrs"
    " FROM (SELECT DISTINCT device_id, ts_ms, seq FROM stage_events) s JOIN events r"
    " ON r.device_id = s.device_id AND r.seq = s.seq AND r.ts = " + _EPOCH.format("s.ts_ms")
)
_F4 = struct.Struct("f")
_UPSERT_DEAD = (
    "INSERT INTO dead_letters (topic, payload, payload_size, payload_sha256, reason, detail,"
    " device_id, first_received_at, last_received_at, seen_count)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, " + _EPOCH.format("%s") + ", "
    + _EPOCH.format("%s") + ", %s)"
    " ON CONFLICT (topic, payload_sha256) DO UPDATE SET"
    " seen_count = dead_letters.seen_count + EXCLUDED.seen_count,"
    " last_received_at = greatest(dead_letters.last_received_at, EXCLUDED.last_received_at),"
    " reason = EXCLUDED.reason, detail = EXCLUDED.detail"
)


class _Millis(int):
    """Never made: the Python side of _MillisTz's registration, which is by oid."""


class _MillisTz(Dumper):
    """Unix milliseconds (an int) -> binary timestamptz, microseconds since 2000-01-01.
    Registered on the writer's own connection only, for COPY's set_types by oid; every
    other query there still passes datetimes, which dump by their class."""
    format = Format.BINARY
    oid = postgres.types["timestamptz"].oid     # a built-in type: the same on every server

    def dump(self, obj: Any) -> bytes:
        return _I8.pack((int(obj) - _PG_EPOCH_MS) * 1000)


_I8 = struct.Struct("!q")
_PG_EPOCH_MS = 946_684_800_000   # 2000-01-01T00:00:00Z in Unix milliseconds


@dataclass
class WriteResult:
    readings_stored: int = 0
    readings_duplicate: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    dead_letters: int = 0


class BatchWriter:
    def __init__(self, db: DatabaseSettings, ingest: IngestSettings,
                 stopping: threading.Event) -> None:
        self._db = db
        self._ingest = ingest
        self._backoff = Backoff(ingest.retry_min_s, ingest.retry_max_s)
        self._stopping = stopping
        self._conn: psycopg.Connection | None = None
        self._drain_deadline: float | None = None
        self._staged = 0      # batches still to take the conflict-safe way (a duplicate run)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        metrics.DB_CONNECTED.set(0)

    def open(self) -> None:
        """Connect ahead of the first batch, so firegrid_ingest_database_connected tells
        whether the database is reachable on an idle ingest too (health checks and the
        readiness probe read it). A failure is only logged: the first write retries."""
        try:
            self._connection()
        except (psycopg.Error, OSError, UnavailableError) as exc:
            log.warning("database not reachable yet (%s); the first batch will retry",
                        first_line(exc))

    def begin_drain(self) -> None:
        self._drain_deadline = time.monotonic() + self._ingest.drain_timeout_s

    def write(self, batch: list[Decoded]) -> WriteResult:
        """Commit the batch. Retries transient errors until it succeeds, or raises Abandoned
        when draining runs past its deadline (the batch stays unacknowledged)."""
        attempt = 0
        while True:
            try:
                conn = self._connection()
                alone = self._copy_alone(conn, batch)
                if alone is not None:
                    return alone
                result = WriteResult()
                with conn.transaction():
                    self._write_bisecting(conn, batch, result)
                return result
            except (psycopg.Error, OSError, UnavailableError) as exc:
                kind = "transient" if isinstance(exc, UnavailableError) else classify(exc)
                self.close()
                attempt += 1
                metrics.DB_RETRIES.inc()
                delay = self._backoff.delay(attempt)
                text = first_line(exc)
                level = logging.ERROR if kind == "operator" else logging.WARNING
                log.log(level, "batch write failed (%s: %s); retry %d in %.1fs",
                        kind, text, attempt, delay)
                if self._stopping.is_set() and self._drain_deadline is None:
                    self.begin_drain()
                if self._drain_deadline is not None:
                    if time.monotonic() + delay > self._drain_deadline:
                        raise Abandoned("database unavailable while draining") from exc
                    time.sleep(delay)
                else:
                    self._stopping.wait(delay)

    # --- one transaction ----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self._db)
            conn.autocommit = True
            for statement in _SETUP:
                conn.execute(statement)
            conn.adapters.register_dumper(_Millis, _MillisTz)
            # Autocommit: a lone COPY is its own transaction (_copy_alone); everything else
            # runs inside conn.transaction().
            self._conn = conn
            metrics.DB_CONNECTED.set(1)
        return self._conn

    def _copy_alone(self, conn: psycopg.Connection, batch: list[Decoded]) -> WriteResult | None:
        """The common batch, status reports only and none stored yet: one COPY straight into
        readings, committed by itself (autocommit), two round trips in all. None when the
        batch needs more (events, dead letters, a duplicate run) or the COPY was refused:
        nothing of it was stored, and the transaction below takes it the careful way."""
        if self._staged > 0 or any(item.events or item.dead for item in batch):
            return None
        readings = [row for item in batch for row in item.readings]
        if not readings:
            return None
        try:
            with conn.cursor() as cur:
                _copy_straight(cur, readings)
        except psycopg.errors.UniqueViolation:
            self._duplicate_run()
            return None
        except Exception as exc:
            if not _refused_for_its_data(exc):
                raise
            return None     # the transaction below narrows it down to the message
        return WriteResult(readings_stored=len(readings))

    def _write_bisecting(self, conn: psycopg.Connection, batch: list[Decoded],
                         result: WriteResult) -> None:
        try:
            with conn.transaction():  # a savepoint inside the batch transaction
                self._write_rows(conn, batch, result)
        except Exception as exc:
            if not _refused_for_its_data(exc):
                raise
            if len(batch) > 1:
                mid = len(batch) // 2
                self._write_bisecting(conn, batch[:mid], result)
                self._write_bisecting(conn, batch[mid:], result)
                return
            self._reject(conn, batch[0], exc, result)

    def _write_rows(self, conn: psycopg.Connection, batch: list[Decoded],
                    result: WriteResult) -> None:
        readings = [row for item in batch for row in item.readings]
        events = [row for item in batch for row in item.events]
        dead = [d for item in batch for d in item.dead]
        with conn.cursor() as cur:
            if readings:
                stored = self._copy_direct(conn, cur, readings)
                if stored is None:
                    stored = _copy_insert(cur, "stage_readings", _READING_COLS,
                                          _READING_TYPES, readings, _INSERT_READINGS)
                result.readings_stored += stored
                result.readings_duplicate += len(readings) - stored
                if stored < len(readings):
                    dead += _conflicts(cur, _STORED_READINGS, batch, "readings")
            if events:
                stored = _copy_insert(cur, "stage_events", _EVENT_COLS, _EVENT_TYPES,
                                      events, _INSERT_EVENTS)
                result.events_stored += stored
                result.events_duplicate += len(events) - stored
                if stored < len(events):
                    dead += _conflicts(cur, _STORED_EVENTS, batch, "events")
            if dead:
                _upsert_dead(cur, dead)
                result.dead_letters += len(dead)
                for d in dead:
                    metrics.DEAD_LETTERS.labels(d.reason).inc()

    def _copy_direct(self, conn: psycopg.Connection, cur: psycopg.Cursor[Any],
                     readings: list[Reading]) -> int | None:
        """COPY the rows straight into readings; None when one was already there (the
        savepoint is rolled back, and the caller takes the conflict-safe way)."""
        if self._staged > 0:
            self._staged -= 1
            return None
        try:
            with conn.transaction():
                _copy_straight(cur, readings)
        except psycopg.errors.UniqueViolation:
            self._duplicate_run()
            return None
        return len(readings)

    def _duplicate_run(self) -> None:
        """A row was already stored: duplicates come in runs (a redelivery), so this batch
        and the next _STAGED_AFTER_DUPLICATE take the conflict-safe way."""
        self._staged = _STAGED_AFTER_DUPLICATE
        metrics.COPY_FALLBACKS.inc()

    def _reject(self, conn: psycopg.Connection, item: Decoded, exc: Exception,
                result: WriteResult) -> None:
        if isinstance(exc, psycopg.Error):
            detail = f"SQLSTATE {exc.sqlstate}: {str(exc).strip()}"
        else:
            detail = f"not storable ({type(exc).__name__}): {exc}"
        letter = DeadLetter(
            topic=item.topic, payload=item.payload[: self._ingest.max_payload_bytes],
            payload_size=len(item.payload), reason="db_rejected", detail=detail[:1000],
            device_id=None, received_ms=item.received_ms,
        )
        log.warning("database rejected a message on %s: %s", item.topic, detail)
        try:
            with conn.transaction():
                self._write_rows(conn, [Decoded(topic=item.topic, payload=item.payload,
                                                received_ms=item.received_ms, dead=[letter])],
                                 result)
        except psycopg.Error as again:
            if classify(again) != "data":
                raise
            # Not even the dead-letter table takes it: keep it in the log, whole.
            metrics.UNSTORABLE.inc()
            log.error("unstorable message on %r (%s): payload base64=%s", item.topic, again,
                      base64.b64encode(item.payload).decode())


def _refused_for_its_data(exc: Exception) -> bool:
    """True when a batch failed because of what some message in it holds (narrow it down to
    that message); False when the database is away or misconfigured (retry it whole)."""
    if isinstance(exc, psycopg.Error):
        return classify(exc) == "data"
    # Connection trouble below psycopg, or our own "database unavailable": retry. Anything
    # else came from encoding a message's values (OverflowError, ValueError, ...).
    return not isinstance(exc, (OSError, UnavailableError))


def _f4(value: float | None) -> float | None:
    """The value as a `real` column gives it back."""
    return None if value is None else float(_F4.unpack(_F4.pack(value))[0])


def _body(row: Reading | Event) -> tuple[Any, ...]:
    """What a message says, as the database gives it back (without identity, arrival time
    and gateway, which a resend may change)."""
    if isinstance(row, Event):
        return (row.type, json.loads(row.attrs))
    return (row.kind, _f4(row.obscuration_db_m), _f4(row.temperature_c), row.battery_pct,
            _f4(row.battery_v), row.rsrp_dbm, _f4(row.sinr_db), row.heartbeat_s,
            row.stream_online, row.recording, row.storage_free_mb)


def _conflicts(cur: psycopg.Cursor[Any], query: str, batch: list[Decoded],
               table: str) -> list[DeadLetter]:
    """conflicting_resend dead letters for this batch's messages whose rows in `table` are
    stored under the same identity with another body. A redelivery says the same thing
    again and is only a duplicate."""
    cur.execute(query)
    stored = {(r[0], r[1], r[2]): tuple(r[3:]) for r in cur.fetchall()}
    letters = []
    for item in batch:
        rows: Sequence[Reading | Event] = item.readings if table == "readings" else item.events
        for row in rows:
            held = stored.get((row.device_id, row.ts_ms, row.seq))
            if held is not None and held != _body(row):
                letters.append(DeadLetter(
                    topic=item.topic, payload=item.payload, payload_size=len(item.payload),
                    reason="conflicting_resend",
                    detail=f"{table} already holds device {row.device_id} ts {row.ts_ms} seq"
                           f" {row.seq} with another body; the stored one is kept",
                    device_id=row.device_id, received_ms=item.received_ms))
    return letters


def _copy_straight(cur: psycopg.Cursor[Any], readings: list[Reading]) -> None:
    """COPY (binary) the rows straight into readings."""
    with cur.copy(_COPY_DIRECT) as copy:
        copy.set_types(list(_DIRECT_TYPES))
        for row in readings:
            copy.write_row(row)


def _copy_insert(cur: psycopg.Cursor, stage: str, cols: tuple[str, ...], types: tuple[str, ...],
                 rows: Sequence[tuple[Any, ...]], insert: str) -> int:
    with cur.copy(f"COPY {stage} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
    cur.execute(insert)
    # The stage empties at COMMIT (ON COMMIT DELETE ROWS). Within a bisected batch a later
    # sub-write offers these rows again; ON CONFLICT makes that a no-op, and rowcount counts
    # only rows really inserted, so the counts stay right without a DELETE per batch.
    return cur.rowcount


def _upsert_dead(cur: psycopg.Cursor, dead: list[DeadLetter]) -> None:
    # Collapse repeats within the batch first: one statement may not touch a row twice.
    # (topic, sha256) -> the first letter, earliest and latest receive time, count
    merged: dict[tuple[str, bytes], tuple[DeadLetter, int, int, int]] = {}
    for d in dead:
        key = (d.topic, hashlib.sha256(d.payload).digest())
        held = merged.get(key)
        if held is None:
            merged[key] = (d, d.received_ms, d.received_ms, 1)
        else:
            first, first_ms, last_ms, count = held
            merged[key] = (first, min(first_ms, d.received_ms), max(last_ms, d.received_ms),
                           count + 1)
    cur.executemany(_UPSERT_DEAD, [
        (d.topic, d.payload, d.payload_size, digest, d.reason, d.detail, d.device_id,
         first_ms, last_ms, count)
        for (_, digest), (d, first_ms, last_ms, count) in merged.items()
    ])
