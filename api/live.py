"""The duty console's live feed: one LISTEN connection per API process, fanned out to every
connected console, each receiving only the incidents in its area.

    hub = Hub(url, pool, connect_timeout_s)
    sub = hub.subscribe(scope)          # in the event loop; starts the listener once
    event = await sub.queue.get()       # ("incident", Update) | ("page", PageUpdate)
                                        # | ("resync", None)
                                        # | ("status", {"live": bool, "core": bool | None})
    hub.unsubscribe(sub); hub.close()

The migration 0007_console.sql NOTIFYs 'firegrid_console' with incident ids (comma-separated,
up to 500 a notification) at the COMMIT of anything that changes the incident or its log,
whoever writes it. The listener thread
gathers a burst of ids, reads those incidents once through the API's pool (the same query
as GET /v1/incidents), and hands each subscriber the ones its scope covers. Per-client cost
is a scope test and a queue put, never a query.

Pages ride along: the ladder writes an incident's pages in the same transaction as the
log row that NOTIFYs, so with each burst the listener also reads the MQTT pages of those
incidents (pending or sent) and hands each one, after its incident, to the consoles of the
worker it is for. A page goes out again with every later change of its incident: the
console shows and sounds it once per page_id (docs/alerts.md#the-mqtt-push), as the app
does with the broker's redeliveries.

Whether an alert core runs (alerts/heartbeat.py) is read on the same connection every
CORE_CHECK_S; a change goes to every console as "status", with "live". Without a core
nothing escalates, and a console must not count down to a rung that will never fire.

Notifications sent while the listener is not connected are lost (PostgreSQL keeps them
only for listening sessions), so every (re)connection sends "resync": consoles read the
list again. So does a subscriber whose queue overflowed (a stalled browser).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerts import heartbeat, queries
from alerts.queries import Scope

log = logging.getLogger(__name__)

CHANNEL = "firegrid_console"
QUEUE_MAX = 256           # events waiting for one slow console before it must resync
WAIT_S = 1.0              # how often the listener looks at its stop flag
BURST_S = 0.05            # after a notification, gather others this long: one query per burst
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0
CORE_CHECK_S = 2.0        # how often the listener reads the alert core's heartbeat

Event = tuple[str, Any]


@dataclass(frozen=True)
class PageUpdate:
    """One page to one worker, sent to that worker's consoles after its incident."""
    incident_id: int
    worker_id: str
    json: str

# The pages a console rings for: the MQTT push's rows (the app's page_id), not yet cancelled
# or muted. The page JSON is the app's fields that the console needs (docs/console.md).
PAGES_SQL = """
    SELECT p.id AS page_id, p.incident_id, p.worker_id, p.step, p.created_at,
           p.payload ->> 'severity' AS severity, (p.payload ->> 'rung')::int AS rung,
           coalesce(p.payload -> 'roles', '[]') AS roles, i.state AS incident_state,
           i.building_id, b.address
    FROM pages p
    JOIN incidents i ON i.id = p.incident_id
    JOIN buildings b ON b.id = i.building_id
    WHERE p.incident_id = ANY(%(ids)s) AND p.channel = 'mqtt' AND p.worker_id IS NOT NULL
      AND p.status IN ('pending', 'sent') {worker}
    ORDER BY p.id"""


def read_pages(conn: psycopg.Connection[Any], incident_ids: list[int],
               worker_id: str | None = None) -> list[PageUpdate]:
    """The console's pages of these incidents (of one worker, when given), oldest first."""
    where = "AND p.worker_id = %(worker)s" if worker_id is not None else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(PAGES_SQL.format(worker=where),
                           {"ids": incident_ids, "worker": worker_id}).fetchall()
    return [PageUpdate(r["incident_id"], r["worker_id"], page_json(r)) for r in rows]


def page_json(row: dict[str, Any]) -> str:
    """A page as the console's stream and GET /v1/console/pages carry it: the MQTT push's
    identifying fields (page_id, key, step, severity, rung, roles), with the incident's
    state when it was read, so that a page of a closed incident is not rung."""
    return json.dumps({
        "v": 1, "page_id": row["page_id"], "kind": "incident",
        "key": f"incident-{row['incident_id']}", "incident_id": row["incident_id"],
        "step": row["step"], "severity": row["severity"], "rung": row["rung"],
        "roles": row["roles"], "created_at": row["created_at"].isoformat(),
        "incident_state": row["incident_state"],
        "building": {"id": row["building_id"], "address": row["address"]},
    }, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Update:
    """One incident as the console shows it: the JSON is made once for all subscribers."""
    incident_id: int
    grid_id: str
    community_id: str
    street_id: str
    json: str
    pages: tuple[PageUpdate, ...] = ()


@dataclass(eq=False)
class Subscriber:
    scope: Scope
    worker_id: str | None = None     # whose pages it is sent
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))

    def covers(self, update: Update) -> bool:
        s = self.scope
        return (s.everything or update.grid_id in s.grids
                or update.community_id in s.communities or update.street_id in s.streets)

    def offer(self, event: Event) -> None:
        if self.queue.full():
            # Too far behind to replay: drop the backlog and have it read the list again.
            while not self.queue.empty():
                self.queue.get_nowait()
            event = ("resync", None)
        self.queue.put_nowait(event)


class Hub:
    def __init__(self, url: str, pool: ConnectionPool, connect_timeout_s: int,
                 serialize: Callable[[dict[str, Any]], str]) -> None:
        """`serialize(row) -> str` turns a list_incidents row into the JSON sent."""
        self._url = url
        self._pool = pool
        self._timeout = connect_timeout_s
        self._serialize = serialize
        self._subscribers: set[Subscriber] = set()   # touched only in the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.live = False          # the listener is connected and listening
        self.core: bool | None = None   # an alert core beats; None: not read yet

    # --- in the event loop -------------------------------------------------------------------

    def subscribe(self, scope: Scope, worker_id: str | None = None) -> Subscriber:
        self._loop = asyncio.get_running_loop()
        sub = Subscriber(scope, worker_id)
        self._subscribers.add(sub)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="console-listener",
                                            daemon=True)
            self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT_S + self._timeout + 5)

    def _deliver(self, updates: list[Update] | None, event: Event | None) -> None:
        for sub in list(self._subscribers):
            if event is not None:
                sub.offer(event)
            for update in updates or ():
                if sub.covers(update):
                    sub.offer(("incident", update))
                    for page in update.pages:
                        if page.worker_id == sub.worker_id:
                            sub.offer(("page", page))

    # --- in the listener thread --------------------------------------------------------------

    def _send(self, updates: list[Update] | None = None, event: Event | None = None) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, updates, event)
        except RuntimeError:  # the loop has closed: the app is shutting down
            self._stop.set()

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self._send(event=("status", {"live": live, "core": self.core}))

    def _check_core(self, conn: psycopg.Connection[Any]) -> None:
        core = heartbeat.status(conn).alive
        if core != self.core:
            self.core = core
            self._send(event=("status", {"live": self.live, "core": core}))

    def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True,
                                     connect_timeout=self._timeout) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._check_core(conn)
                    self._set_live(True)
                    # Whatever changed before this LISTEN was not heard.
                    self._send(event=("resync", None))
                    delay = RECONNECT_MIN_S
                    checked = time.monotonic()
                    while not self._stop.is_set():
                        ids = {n.payload for n in conn.notifies(timeout=WAIT_S, stop_after=1)}
                        if ids:
                            ids |= {n.payload for n in conn.notifies(timeout=BURST_S)}
                            self._publish(ids)
                        if time.monotonic() - checked >= CORE_CHECK_S:
                            self._check_core(conn)
                            checked = time.monotonic()
            except psycopg.Error as exc:  # the database restarted, or refused the read
                log.warning("console listener: %s; reconnecting in %.1f s", exc, delay)
            self._set_live(False)
            self._stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _publish(self, payloads: set[str]) -> None:
        # Each payload is a comma-separated list of incident ids (0007_console.sql).
        ids = sorted({int(i) for p in payloads for i in p.split(",") if i.isdigit()})
        if not ids:
            return
        with self._pool.connection(timeout=self._timeout) as conn:
            rows = queries.by_ids(conn, ids)
            pages: dict[int, list[PageUpdate]] = {}
            for p in read_pages(conn, ids):
                pages.setdefault(p.incident_id, []).append(p)
        self._send([Update(r["id"], r["grid_id"], r["community_id"], r["street_id"],
                           self._serialize(r), tuple(pages.get(r["id"], ())))
                    for r in rows])
