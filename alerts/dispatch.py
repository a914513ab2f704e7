"""The dispatcher: pages from the outbox (the `pages` table) to the channels.

    Dispatcher.pass_once()   send what is due; returns True when there may be more
    Dispatcher.send_handed() send the MQTT pages this process's ladder just wrote (HandOff)
    ticket_pages(conn, now)  write pages for newly opened maintenance tickets

MQTT pages are sent while their rows are locked, in one transaction per pass: claim a chunk
(SELECT ... FOR UPDATE SKIP LOCKED), put it on the wire, claim the next while the broker
takes the first, up to MQTT_BATCH; then wait for all their PUBACKs, mark the acknowledged
ones sent in one UPDATE, COMMIT. A burst of 10,000 pages is one pass: a few dozen database
round trips and one COMMIT instead of a transaction per 500 with the wire idle between them
(issue 18: pages drained at ~3,000 a second). A process killed at any point before the
COMMIT leaves its pages pending and unlocked, so the next pass of any process sends them;
only a kill between the PUBACKs and the COMMIT can send pages twice, and then with the same
page_id and key, which the app drops. (So can a broker that takes longer than the PUBACK
timeout, or a connection lost after the PUBLISH left: the page is published again.)
Nothing is ever lost. A page whose incident is resolved by the time it is claimed is not
sent but 'cancelled' (_cancel_stale).

The pages this process's own ladder writes skip the claim (send_handed): they are written
leased to it (alerts.ladder, hand_off_s) and handed over in memory after their COMMIT, so
a burst of rungs goes out while the escalators are still firing. Nobody else claims them
before the lease ends, so they go out unlocked, at once (those with less than half their
lease left are left to the outbox), and are marked sent a fifth of the lease later
(mark_handed). Locking them and marking them in the sending transaction cost the database
~35 us a page while the rungs were still being written (issue 18). A process that dies
before marking them leaves them pending: sent again after the lease, same page_id.

Other channels (webhooks, chat robots, SMS) may take seconds, so a page is leased instead:
attempts + 1 and due_at pushed past the HTTP timeout in one short transaction, then sent
on a worker thread, and its outcome written back: sent; a transient error -> due again
after an exponential backoff; a permanent one, or alerts.max_attempts used up -> 'failed'
with the error kept in last_error, counted in firegrid_pages_total{outcome="failed"}. A
process that dies mid-send leaves the lease to expire, and the page is tried again.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import RowMaker, TupleRow

from alerts import messages, metrics
from alerts.channels import Channel, ChannelError, Outbound
from alerts.messages import OutboxRow
from alerts.publisher import PagePublisher, Sending
from runtime.errors import first_line
from runtime.retry import Backoff
from runtime.settings import AlertsSettings

log = logging.getLogger(__name__)

BATCH = 500            # leased pages (webhooks, chat, SMS) claimed at once
CHUNK = 500            # MQTT pages claimed and put on the wire at once ...
MQTT_BATCH = 10000     # ... and in one transaction, their PUBACKs awaited together
_PUBACK_TIMEOUT_S = 10.0

# Its columns are OutboxRow's fields, by name.
_CLAIM = """
    SELECT p.id AS page_id, p.incident_id, p.ticket_id, p.step, p.worker_id, p.channel,
           p.payload, p.attempts, p.created_at, w.channels AS worker_channels,
           i.state AS incident_state, i.opened_at, i.alert_count, t.condition, t.device_id,
           t.detail AS ticket_detail, b.id AS building_id, b.address, b.lat, b.lon,
           b.grid_id, g.community_id
    FROM pages p
    LEFT JOIN workers w ON w.id = p.worker_id
    LEFT JOIN incidents i ON i.id = p.incident_id
    LEFT JOIN maintenance_tickets t ON t.id = p.ticket_id
    LEFT JOIN devices td ON td.id = t.device_id
    JOIN buildings b ON b.id = coalesce(i.building_id, td.building_id)
    JOIN grids g ON g.id = b.grid_id
    WHERE p.status = 'pending' AND p.due_at <= %s AND (p.channel = 'mqtt') = %s
      AND p.id NOT IN (SELECT unnest(%s::bigint[]))      -- hashed: once per query
    ORDER BY p.due_at LIMIT %s
    FOR UPDATE OF p SKIP LOCKED"""


class _Outcome(NamedTuple):
    """How one send ended, passed from a worker thread back to the dispatcher's."""
    page_id: int
    channel: str
    attempt: int
    error: ChannelError | None      # None: sent
    created_at: datetime


def _claim(conn: psycopg.Connection[Any], now: datetime, mqtt: bool,
           limit: int) -> list[OutboxRow]:
    with conn.cursor(row_factory=_outbox_rows) as cur:
        return cur.execute(_CLAIM, [now, mqtt, [], limit]).fetchall()


def _claim_chunks(conn: psycopg.Connection[Any], now: datetime, limit: int,
                  chunk: int) -> Iterator[list[OutboxRow]]:
    """Up to `limit` due MQTT pages, oldest first, `chunk` at a time; the caller puts each
    chunk on the wire before asking for the next, so the broker works while the database
    does. The first chunk is one plain query (a single alarm's page costs one round trip);
    after a full one, the rest come through a server-side cursor, whose rows are locked as
    they are fetched. It leaves out the first chunk's pages: locked by this transaction,
    they are still pending here and would not be skipped. Ends after a short chunk."""
    first = _claim(conn, now, True, chunk)
    yield first
    if len(first) < chunk:
        return
    with conn.cursor(name="firegrid_mqtt_claim", row_factory=_outbox_rows) as cur:
        cur.execute(_CLAIM, [now, True, [r.page_id for r in first], limit - chunk])
        while rows := cur.fetchmany(chunk):
            yield rows
            if len(rows) < chunk:
                return


def _outbox_rows(cursor: psycopg.Cursor[Any]) -> RowMaker[OutboxRow]:
    """OutboxRow from the claim's columns, matched by name once per query and then built
    positionally: psycopg's class_row passes each row's 22 fields by keyword, ~16 us a
    row, a fifth of the dispatcher's time per page in a burst."""
    names = [c.name for c in cursor.description or ()]
    order = [names.index(name) for name in OutboxRow._fields]
    if order == list(range(len(names))):
        return lambda values: OutboxRow(*values)
    return lambda values: OutboxRow(*[values[i] for i in order])


def ticket_pages(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Page the technician a maintenance ticket is assigned to, once per ticket, on the
    MQTT push (maintenance goes to field technicians, never to fire responders).

    Inhibited during a fire: a ticket opened while its device's building has an open
    incident (the detector went offline or faulted because it is burning) gets its page
    written as 'held', with the incident named; loop.resolve releases it (_release_held)."""
    cur = conn.execute(
        "INSERT INTO pages (ticket_id, step, worker_id, channel, status, created_at, due_at,"
        " payload, last_error)"
        " SELECT t.id, 0, t.assigned_to, 'mqtt',"
        "        CASE WHEN fire.id IS NULL THEN 'pending' ELSE 'held' END, %(now)s, %(now)s,"
        "        jsonb_build_object('condition', t.condition),"
        "        CASE WHEN fire.id IS NOT NULL THEN 'held back: incident ' || fire.id"
        "             || ' is open in the building' END"
        " FROM maintenance_tickets t JOIN devices d ON d.id = t.device_id"
        " LEFT JOIN LATERAL (SELECT i.id FROM incidents i WHERE i.building_id = d.building_id"
        "   AND i.state <> 'resolved' AND i.opened_at <= t.opened_at LIMIT 1) fire ON TRUE"
        " WHERE t.closed_at IS NULL AND t.assigned_to IS NOT NULL"
        " AND t.opened_at > %(now)s - interval '1 day'"
        " AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.ticket_id = t.id)"
        " ON CONFLICT DO NOTHING", {"now": now})
    return cur.rowcount



_RESOLVED = "the incident was resolved before this page went out"
_TAKEN = "somebody acknowledged the incident before the call was due"


def _stale(row: OutboxRow) -> str | None:
    """Why a claimed page should not go out any more, or None."""
    if row.incident_state == "resolved":
        return _RESOLVED
    if row.channel == "voice" and row.incident_state in ("acknowledged", "on_site"):
        return _TAKEN
    return None


def _cancel_stale(conn: psycopg.Connection[Any], rows: list[OutboxRow]) -> list[OutboxRow]:
    """Drop the claimed pages whose incident is resolved, marking them 'cancelled' with the
    reason: a worker paged about a fire already dealt with would go there for nothing (a
    page waiting for a retry, or written a moment before the resolve). A voice call is
    dropped as soon as somebody acknowledged: it is for the person who has not answered. A
    reopened incident pages afresh from its new ladder. Returns the pages still to send."""
    stale = [(r, why) for r in rows if (why := _stale(r))]
    if not stale:
        return rows
    for why in {w for _, w in stale}:
        conn.execute("UPDATE pages SET status = 'cancelled', last_error = %s"
                     " WHERE id = ANY(%s)", [why, [r.page_id for r, w in stale if w == why]])
    for r, _ in stale:
        metrics.PAGES.labels(r.channel, "cancelled").inc()
    gone = {r.page_id for r, _ in stale}
    return [r for r in rows if r.page_id not in gone]


def _resolved(conn: psycopg.Connection[Any], rows: list[OutboxRow]) -> list[OutboxRow]:
    """The handed rows with their incident's state now, for _cancel_stale: the ladder
    handed them over with the state it wrote, and a resolve may have come since. Read
    without locks (the pages are leased, and nothing else in the page depends on it)."""
    resolved = {row[0] for row in conn.execute(
        "SELECT id FROM incidents WHERE id = ANY(%b) AND state = 'resolved'",
        [sorted({r.incident_id for r in rows if r.incident_id is not None})], binary=True)}
    if not resolved:
        return rows
    return [r._replace(incident_state="resolved") if r.incident_id in resolved else r
            for r in rows]


class HandOff:
    """Pages this process just wrote and leased to its own dispatcher (alerts.ladder's
    hand_off_s), passed on after their COMMIT. Bounded: past `max_rows` waiting, more are
    not taken; they are in the outbox, due when their lease ends, and sent then."""

    def __init__(self, max_rows: int = 4 * MQTT_BATCH) -> None:
        self._rows: deque[OutboxRow] = deque()
        self._lock = threading.Lock()
        self._max = max_rows

    def put(self, rows: list[OutboxRow]) -> bool:
        with self._lock:
            if len(self._rows) + len(rows) > self._max:
                return False
            self._rows.extend(rows)
            return True

    def take(self, limit: int) -> list[OutboxRow]:
        with self._lock:
            return [self._rows.popleft() for _ in range(min(limit, len(self._rows)))]

    def __len__(self) -> int:
        return len(self._rows)


class Dispatcher:
    def __init__(self, conn: psycopg.Connection[Any], settings: AlertsSettings,
                 publisher: PagePublisher, channels: dict[str, Channel]) -> None:
        self._conn = conn
        self._settings = settings
        self._publisher = publisher
        self._channels = channels
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="page-send")
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._in_flight = 0
        # Handed pages on the wire, not yet marked sent (send_handed -> mark_handed).
        self._unmarked: list[tuple[list[OutboxRow], Sending]] = []
        self._unmarked_since = 0.0

    def close(self) -> None:
        unmarked = sum(len(rows) for rows, _ in self._unmarked)
        try:
            self.mark_handed(force=True)
        except psycopg.Error as exc:     # the database is why we close: sent again later
            log.warning("could not mark %d handed pages sent (%s); they are sent again when"
                        " their lease ends", unmarked, first_line(exc))
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._write_outcomes()
        for channel in self._channels.values():
            channel.close()

    def pass_once(self, now: datetime | None = None) -> bool:
        """One round: MQTT pages, then the slower channels. True if a full batch was
        taken (call again at once)."""
        now = now or datetime.now(UTC)
        self._write_outcomes()
        full = self._mqtt(now)
        if self._in_flight < BATCH:
            full = self._lease(now) or full
        return full

    # --- MQTT: claimed pages locked while sending, handed ones leased --------------------

    def send_handed(self, hand_off: HandOff, now: datetime | None = None) -> bool:
        """Send the pages this process's escalators and evaluators handed over (written
        leased to us, see alerts.ladder). No other dispatcher claims a page before its
        lease ends, so they are not locked: those with at least half their lease left are
        sent at once, unless their incident was resolved meanwhile; the others are left to
        the outbox, which sends them when due. Marking them sent waits (mark_handed).
        True if there may be more."""
        rows = hand_off.take(MQTT_BATCH)
        if not rows:
            return False
        now = now or datetime.now(UTC)
        fresh = now - timedelta(seconds=self._settings.hand_off_s / 2)
        rows = [r for r in rows if r.created_at > fresh]
        if rows:
            with self._conn.transaction():
                rows = _cancel_stale(self._conn, _resolved(self._conn, rows))
            deadline = time.monotonic() + _PUBACK_TIMEOUT_S
            self._unmarked.extend(self._put_on_wire(rows[i:i + CHUNK], now, deadline)
                                  for i in range(0, len(rows), CHUNK))
            self._unmarked_since = self._unmarked_since or time.monotonic()
        return len(hand_off) > 0

    def mark_handed(self, force: bool = False) -> float:
        """Record the handed pages the broker acknowledged as sent, the others as due again
        soon (one UPDATE each, one COMMIT), once the oldest has waited a fifth of the lease
        (or when `force`d): long before any other dispatcher may take them, and in a burst
        of rungs after most of it is fired, so that the database's time goes to the rungs
        and the phones get them sooner. The page is on the phone already; only sent_at and
        the metrics wait. A process that dies first leaves them pending: sent again after
        their lease, with the same page_id, which the app drops. Returns the seconds until
        the next call has something to do (inf: nothing waits)."""
        if not self._unmarked:
            return math.inf
        left = self._unmarked_since + self._settings.hand_off_s / 5 - time.monotonic()
        if left > 0 and not force:
            return left
        out, self._unmarked, self._unmarked_since = self._unmarked, [], 0.0
        with self._conn.transaction():
            self._mark(out, time.monotonic() + _PUBACK_TIMEOUT_S)
        return math.inf

    def _mqtt(self, now: datetime) -> bool:
        """One transaction: claim a chunk, put it on the wire, claim the next while the
        broker works on it, up to MQTT_BATCH pages; then wait for every PUBACK at once,
        mark the acknowledged pages sent in one UPDATE and COMMIT. A page is on its way to
        the phone as soon as its chunk is claimed; the COMMIT only records it."""
        conn = self._conn
        deadline = time.monotonic() + _PUBACK_TIMEOUT_S
        out: list[tuple[list[OutboxRow], Sending]] = []
        taken = 0
        with conn.transaction():
            for claimed in _claim_chunks(conn, now, MQTT_BATCH, CHUNK):
                taken += len(claimed)
                rows = _cancel_stale(conn, claimed)
                if rows:
                    out.append(self._put_on_wire(rows, now, deadline))
            self._mark(out, deadline)
        return taken == MQTT_BATCH

    def _put_on_wire(self, rows: list[OutboxRow], now: datetime,
                     deadline: float) -> tuple[list[OutboxRow], Sending]:
        publisher, console_url = self._publisher, self._settings.console_url
        wire = []
        for r in rows:
            # The push goes to people only: the ladder and ticket_pages write it for a
            # worker; the one page without one (the 119 hook) is a webhook.
            assert r.worker_id is not None
            wire.append((publisher.topic(r.worker_id),
                         messages.encode(messages.page(r, now, console_url))))
        return rows, publisher.send(wire, deadline)

    def _mark(self, out: list[tuple[list[OutboxRow], Sending]], deadline: float) -> None:
        """Wait for the PUBACKs of what _put_on_wire sent; in the caller's transaction,
        mark the acknowledged pages sent and the others due again soon."""
        if not out:
            return
        conn, publisher = self._conn, self._publisher
        sent: list[tuple[OutboxRow, datetime]] = []   # and when the broker had it
        late: list[OutboxRow] = []
        for rows, sending in out:
            acked = publisher.wait(sending, deadline)
            at = datetime.fromtimestamp(sending.done_at or time.time(), UTC)
            for r, ok in zip(rows, acked, strict=True):
                if ok:
                    sent.append((r, at))
                else:
                    late.append(r)
        done_at = datetime.now(UTC)
        if sent:
            # Binary arrays (%b): psycopg's text array dumper is Python, per element. Still
            # pending: a handed page is not locked (one taken after its lease is skipped).
            conn.execute("UPDATE pages p SET status = 'sent', sent_at = s.at,"
                         " attempts = p.attempts + 1"
                         " FROM unnest(%b::bigint[], %b::timestamptz[]) AS s(id, at)"
                         " WHERE p.id = s.id AND p.status = 'pending'",
                         [[r.page_id for r, _ in sent], [at for _, at in sent]])
        if late:    # the broker is away or slow: retry soon, never give up on the app
            conn.execute("UPDATE pages SET attempts = attempts + 1, due_at = %s"
                         " + make_interval(secs => least(5.0, 0.5 * 2 ^ attempts)),"
                         " last_error = 'broker did not acknowledge'"
                         " WHERE id = ANY(%b::bigint[]) AND status = 'pending'",
                         [done_at, [r.page_id for r in late]])
        metrics.PAGES.labels("mqtt", "sent").inc(len(sent))
        metrics.PAGES.labels("mqtt", "retry").inc(len(late))
        latency = metrics.PAGE_SECONDS.labels("mqtt")     # one lookup for the batch
        for r, at in sent:
            latency.observe((at - r.created_at).total_seconds())

    # --- other channels: leased, sent on worker threads ----------------------------------

    def _lease(self, now: datetime) -> bool:
        conn = self._conn
        lease = timedelta(seconds=2 * self._settings.http_timeout_s + 5)
        with conn.transaction():
            claimed = _claim(conn, now, False, BATCH - self._in_flight)
            rows = _cancel_stale(conn, claimed)
            if rows:
                conn.execute("UPDATE pages SET attempts = attempts + 1, due_at = %s"
                             " WHERE id = ANY(%s)", [now + lease, [r.page_id for r in rows]])
        for r in rows:
            self._in_flight += 1
            self._pool.submit(self._send, r, r.attempts + 1, now)
        return len(claimed) == BATCH

    def _send(self, row: OutboxRow, attempt: int, now: datetime) -> None:
        page_id, channel_name = row.page_id, row.channel
        try:
            channel = self._channels.get(channel_name)
            if channel is None:
                raise ChannelError(f"channel {channel_name!r} is not configured here",
                                   permanent=True)
            target = self._target(row)
            payload = messages.page(row, now, self._settings.console_url)
            channel.send(Outbound(page_id=page_id, key=payload["key"], channel=channel_name,
                                  target=target, payload=payload))
            self._outcomes.put(_Outcome(page_id, channel_name, attempt, None, row.created_at))
        except ChannelError as exc:
            self._outcomes.put(_Outcome(page_id, channel_name, attempt, exc, row.created_at))
        except Exception as exc:  # a channel bug must not kill the dispatcher
            log.exception("channel %s crashed on page %s", channel_name, page_id)
            self._outcomes.put(_Outcome(page_id, channel_name, attempt,
                                        ChannelError(f"internal error: {exc!r}", permanent=False),
                                        row.created_at))

    def _target(self, row: OutboxRow) -> str:
        channel, worker_channels = row.channel, row.worker_channels or {}
        if channel == "fire_service":
            return self._settings.fire_service_url or ""
        if channel not in worker_channels:
            raise ChannelError(f"worker {row.worker_id} has no {channel} address any more",
                               permanent=True)
        return worker_channels[channel]

    def _write_outcomes(self) -> None:
        results: list[_Outcome] = []
        while True:
            try:
                results.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        if not results:
            return
        self._in_flight -= len(results)
        cfg = self._settings
        done_at = datetime.now(UTC)
        with self._conn.transaction():
            for page_id, channel, attempt, exc, created_at in results:
                if exc is None:
                    outcome = "sent"
                    self._conn.execute("UPDATE pages SET status = 'sent', sent_at = %s,"
                                       " last_error = NULL WHERE id = %s", [done_at, page_id])
                    metrics.PAGE_SECONDS.labels(channel).observe(
                        (done_at - created_at).total_seconds())
                elif exc.permanent or attempt >= cfg.max_attempts:
                    outcome = "failed"
                    log.warning("page %s on %s failed for good after %d attempt(s): %s",
                                page_id, channel, attempt, exc)
                    self._conn.execute("UPDATE pages SET status = 'failed', last_error = %s"
                                       " WHERE id = %s", [str(exc)[:1000], page_id])
                else:
                    outcome = "retry"
                    delay = Backoff(cfg.retry_min_s, cfg.retry_max_s, floor=0.75).delay(
                        attempt - 1)
                    delay = max(delay, exc.retry_after_s or 0)
                    self._conn.execute("UPDATE pages SET due_at = %s, last_error = %s"
                                       " WHERE id = %s",
                                       [done_at + timedelta(seconds=delay), str(exc)[:1000],
                                        page_id])
                metrics.PAGES.labels(channel, outcome).inc()


def pending_count(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute("SELECT count(*) FROM pages WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0    # an aggregate always has its row


def open_incidents(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    counts = dict.fromkeys(("warning", "confirmed"), 0)
    for severity, n in conn.execute("SELECT severity, count(*) FROM incidents"
                                    " WHERE state <> 'resolved' GROUP BY severity"):
        counts[severity] = n
    return counts

