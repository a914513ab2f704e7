"""The alert core process: `firegrid alerts run`.

    MQTT session threads       evaluators                            escalator threads
    alarms: event, gateway ──► (calling thread) decode, RuleEngine,  claim_due -> ladder.fire
    telemetry              ──► ("telemetry")    store.record,        (alerts.escalators), sleep
                               COMMIT, then ack                      to the next timer
                                      │ wake, handed pages                  │ wake, handed pages
                                      ▼                                     ▼
                               dispatcher thread: handed pages, outbox -> MQTT push,
                               webhooks, chat, SMS
    listener thread: LISTEN firegrid_escalate / firegrid_pages, wakes the two above when
    another process (or the API) sets a timer or writes a page.

The alert core subscribes to the device topics itself, so an alarm is evaluated the moment
it arrives instead of waiting in ingest's bulk batch; ingest still stores every message. It
has two persistent sessions: one for events and gateway batches (alerts.client_id), one for
periodic telemetry (<client_id>-telemetry), each with its own queue on the broker and its
own evaluator. After an outage the broker holds a backlog of telemetry, hundreds of
thousands of status reports; in one queue, a new alarm would wait behind all of them (about
a second per 10,000). In its own queue it is evaluated at once. A message is acknowledged
only after its alerts are committed, so a crash redelivers it, and the alert key makes the
redelivery a no-op.
Messages ingest would dead-letter are acknowledged and ignored here: ingest keeps them.

All state is in PostgreSQL. Several alert-core processes can run side by side (partitions,
or a share group on EMQX): the database keeps one open incident per building, row locks
make each ladder rung fire once, and pages are claimed with SKIP LOCKED (or leased to the
process whose ladder wrote them, for a few seconds: alerts/dispatch.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import psycopg
from prometheus_client import start_http_server
from psycopg.rows import TupleRow

from alerts import dispatch, handover, heartbeat, ladder, metrics, ruleset, store
from alerts.channels import build_channels
from alerts.messages import OutboxRow
from alerts.publisher import PagePublisher
from alerts.rules import Candidate, Policy, RuleEngine, load_policy
from protocol.decode import Decoder
from runtime.db import classify, connect
from runtime.errors import ConfigError, UnavailableError, first_line
from runtime.retry import Backoff
from runtime.settings import MqttSettings, Settings
from transport.receiver import Receiver
from transport.session import consumer
from transport.window import Inbound, Window

log = logging.getLogger(__name__)

# A database error in the evaluator holds alarms back: retry soon. The other loops can wait.
_EVALUATOR_BACKOFF = Backoff(0.1, 5.0)
_LOOP_BACKOFF = Backoff(0.2, 10.0)
# How often the escalator looks for open incidents whose shift changed (alerts/handover.py).
_HANDOVER_EVERY_S = 5.0


class AlertService:
    def __init__(self, settings: Settings, policy: Policy | None = None) -> None:
        cfg = settings.alerts
        self._settings = settings
        self.policy = policy or load_policy(cfg.rules_file)
        # Rules saved through the API (alerts/ruleset.py) replace the file's, unless the
        # caller fixed a policy (tests that drive a ladder of their own).
        self._follow_rules = policy is None
        self.rules_version: int | None = None
        self.stopping = threading.Event()
        self._escalate = threading.Event()
        self._dispatch = threading.Event()
        # Clear while escalators are working through a burst of due timers (full batches):
        # the dispatcher then holds off, up to poll_s, so the rungs are written first.
        self._no_backlog = threading.Event()
        self._no_backlog.set()
        self.hand_off = dispatch.HandOff()
        mqtt = MqttSettings.model_validate(settings.mqtt.model_dump() | {
            "client_id": cfg.client_id, "share_group": cfg.share_group,
            "partitions": cfg.partitions, "partition": cfg.partition})

        def session(client_id: str, service: str,
                    channels: tuple[str, ...]) -> tuple[Window, Receiver]:
            window = Window(batch_max=cfg.batch_max, max_age_s=0,
                            max_messages=settings.ingest.inflight_window,
                            max_bytes=settings.ingest.window_max_bytes)
            return window, consumer(mqtt.model_copy(update={"client_id": client_id}), window,
                                    service=service, channels=channels)

        self.window, self.consumer = session(cfg.client_id, "alerts", ("event", "gateway"))
        self.telemetry_window, self.telemetry = session(
            f"{cfg.client_id}-telemetry", "alerts_telemetry", ("telemetry",))
        self.decoder = Decoder(prefix=mqtt.topic_prefix,
                               max_payload_bytes=settings.ingest.max_payload_bytes,
                               max_future_skew_s=settings.ingest.max_future_skew_s,
                               max_age_days=settings.ingest.max_age_days)
        self.engine = RuleEngine(self.policy)
        self._engine_lock = threading.Lock()   # rate-of-rise state, fed by both evaluators
        self.publisher = PagePublisher(settings.mqtt, cfg)
        self.channels = build_channels(cfg)
        # The channels a page may be written for: MQTT always, the rest when configured.
        self.channel_names = frozenset(self.channels)
        self._threads: list[threading.Thread] = []
        # The console's sign that something escalates (alerts/heartbeat.py).
        self.instance = heartbeat.instance_name(cfg.client_id)
        self.started_at = datetime.now(UTC)

    def stop(self) -> None:
        """Ask run() to return. Safe from signal handlers and other threads."""
        self.stopping.set()
        self.window.close()
        self.telemetry_window.close()
        self._escalate.set()
        self._dispatch.set()
        self._no_backlog.set()

    def run(self) -> None:
        cfg = self._settings.alerts
        if cfg.metrics_port:
            start_http_server(cfg.metrics_port, addr=self._settings.ingest.metrics_host)
        self.publisher.start()
        loops: list[tuple[str, Callable[[], None]]] = [
            (f"escalator-{i + 1}", partial(self._escalator, i == 0))
            for i in range(cfg.escalators)]
        def telemetry() -> None:
            self._evaluate_forever(self.telemetry_window, self.telemetry)

        for name, target in (*loops, ("dispatcher", self._dispatcher),
                             ("listener", self._listener), ("telemetry", telemetry)):
            thread = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.consumer.start()
        self.telemetry.start()
        log.info("alert core running: client %s, share group %r, partition %d of %d",
                 cfg.client_id, cfg.share_group, cfg.partition, cfg.partitions)
        try:
            self._evaluate_forever(self.window, self.consumer)
        finally:
            self.consumer.stop()
            self.telemetry.stop()
            self.stop()
            for thread in self._threads:
                thread.join(timeout=15)
            self.publisher.stop()
            self._beat_stopped()
            log.info("alert core stopped")

    # --- the evaluator: messages -> alerts -> incidents -> first pages --------------------

    def _evaluate_forever(self, window: Window, consumer: Receiver) -> None:
        conn: psycopg.Connection[TupleRow] | None = None
        try:
            while not self.stopping.is_set():
                batch = window.take()
                if batch:
                    conn = self._evaluate_batch(conn, batch, consumer)
        finally:
            if conn is not None:
                conn.close()

    def _evaluate_batch(self, conn: psycopg.Connection[TupleRow] | None, batch: list[Inbound],
                        consumer: Receiver) -> psycopg.Connection[TupleRow] | None:
        started = time.perf_counter()
        candidates: list[Candidate] = []
        alerting = 0    # messages with at least one alert
        for item in batch:
            decoded = self.decoder.decode(item.topic, item.payload, item.received_ms)
            before = len(candidates)
            if decoded.events or decoded.readings:
                with self._engine_lock:
                    candidates += self.engine.events(decoded.events)
                    candidates += self.engine.readings(decoded.readings)
            alerting += len(candidates) > before
        attempt = 0
        while candidates:
            # Nothing is acknowledged before this commits: a transient failure retries the
            # same batch; stopping meanwhile leaves it to the broker to redeliver.
            try:
                if conn is None or conn.closed:
                    conn = connect(self._settings.database)
                with conn.transaction():
                    out = store.record(conn, candidates, datetime.now(UTC), self.policy,
                                       self.channel_names, self._settings.alerts.hand_off_s)
                self._hand_off(out.handed, out.pages)
                metrics.EVALUATE_SECONDS.observe(time.perf_counter() - started)
                break
            except (psycopg.Error, UnavailableError) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                metrics.DB_ERRORS.labels("evaluator").inc()
                if isinstance(exc, psycopg.Error) and classify(exc) == "data":
                    # Some alert's values are refused: record the others one by one, so one
                    # bad message never holds back the real alarms batched with it.
                    self._record_each(candidates, exc)
                    break
                attempt += 1
                delay = _EVALUATOR_BACKOFF.delay(attempt)
                log.warning("evaluator: database unavailable (%s); retry in %.1fs",
                            first_line(exc), delay)
                if self.stopping.wait(delay):
                    return conn
        consumer.ack(batch)
        metrics.MESSAGES.labels("alert").inc(alerting)
        metrics.MESSAGES.labels("quiet").inc(len(batch) - alerting)
        return conn

    def _record_each(self, candidates: list[Candidate], first: psycopg.Error) -> None:
        log.warning("a batch of alerts was refused (%s); recording them one by one",
                    first_line(first))
        with connect(self._settings.database) as conn:
            for candidate in candidates:
                try:
                    with conn.transaction():
                        out = store.record(conn, [candidate], datetime.now(UTC), self.policy,
                                           self.channel_names)
                    if out.pages:
                        self._dispatch.set()
                except psycopg.Error as exc:
                    if classify(exc) != "data":
                        raise
                    metrics.DB_ERRORS.labels("evaluator").inc()
                    log.error("alert %s of %s (ts %s, seq %s) refused by the database: %s; "
                              "the message itself is in ingest's tables", candidate.rule,
                              candidate.device_id, candidate.ts_ms, candidate.seq,
                              first_line(exc))

    # --- the escalator: due timers -> next rung -------------------------------------------

    def _escalator(self, first: bool = True) -> None:
        self._loop("escalator", partial(self._escalate_loop, first=first))

    def _escalate_loop(self, conn: psycopg.Connection[TupleRow], first: bool = True) -> None:
        limit, poll = self._settings.alerts.escalation_batch, self._settings.alerts.poll_s
        # The first escalator also beats and hands over; every escalator of a process did,
        # and their beats (one row) queued behind each other's hand-over passes.
        handover_at = 0.0 if first else math.inf
        while not self.stopping.is_set():
            now = datetime.now(UTC)
            if time.monotonic() >= handover_at:
                # A shift changed under an open incident: page the incoming people. And the
                # heartbeat, from the loop whose timers the console counts down; committed
                # on its own, so nobody waits on its row while the hand-over looks.
                handover_at = time.monotonic() + min(_HANDOVER_EVERY_S, heartbeat.BEAT_S)
                with conn.transaction():
                    heartbeat.beat(conn, self.instance, self.started_at)
                with conn.transaction():
                    if handover.hand_over(conn, now, self.policy, self.channel_names):
                        self._dispatch.set()
            with conn.transaction():
                due = ladder.claim_due(conn, now, limit)
                # Every claimed timer is set (escalate_at <= now): the test only narrows it.
                late = [(now - inc.escalate_at).total_seconds() for inc in due
                        if inc.escalate_at is not None]
                fired = ladder.fire(conn, due, now, self.policy, self.channel_names,
                                    self._settings.alerts.hand_off_s)
            for seconds in late:
                metrics.TIMER_LATENESS.observe(seconds)
            self._hand_off(fired.handed, fired.pages)
            if len(due) == limit:
                self._no_backlog.clear()
                continue
            if not self._no_backlog.is_set():
                self._no_backlog.set()
                self._dispatch.set()       # the outbox pass it held off
            with conn.transaction():
                nxt = ladder.next_due(conn)
            wait = poll if nxt is None else (nxt - datetime.now(UTC)).total_seconds()
            wait = min(wait, poll, handover_at - time.monotonic())
            if wait > 0:
                self._escalate.wait(wait)
                self._escalate.clear()

    # --- the dispatcher: outbox -> channels --------------------------------------------------

    def _hand_off(self, handed: list[OutboxRow], pages: int) -> None:
        """After a COMMIT that wrote pages: give the dispatcher those leased to it (if it
        has room; else they wait out their lease in the outbox) and wake it."""
        if handed:
            outcome = "handed" if self.hand_off.put(handed) else "no_room"
            metrics.PAGES_HANDED.labels(outcome).inc(len(handed))
        if pages:
            self._dispatch.set()

    def _dispatcher(self) -> None:
        self._loop("dispatcher", self._dispatch_loop)

    def _dispatch_loop(self, conn: psycopg.Connection[TupleRow]) -> None:
        sender = dispatch.Dispatcher(conn, self._settings.alerts, self.publisher, self.channels)
        poll = self._settings.alerts.poll_s
        last_sweep = last_pass = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_sweep >= poll:
                    with conn.transaction():
                        dispatch.ticket_pages(conn, datetime.now(UTC))
                        metrics.PAGES_PENDING.set(dispatch.pending_count(conn))
                        for severity, n in dispatch.open_incidents(conn).items():
                            metrics.OPEN_INCIDENTS.labels(severity).set(n)
                    last_sweep = time.monotonic()
                # Handed pages go out at once and are marked sent a second or so later; the
                # outbox pass holds off (up to poll_s) while escalators work through a
                # burst, so that the rungs are written first.
                more = sender.send_handed(self.hand_off)
                mark_in = sender.mark_handed()
                if self._no_backlog.is_set() or time.monotonic() - last_pass >= poll:
                    more = sender.pass_once() or more
                    last_pass = time.monotonic()
                if more:
                    continue
                self._dispatch.wait(min(poll, mark_in))
                self._dispatch.clear()
        finally:
            sender.close()

    # --- wake-ups from other processes -----------------------------------------------------

    def _listener(self) -> None:
        self._loop("listener", self._listen, autocommit=True)

    def _listen(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute(f"LISTEN {ladder.ESCALATE_CHANNEL}")
        conn.execute(f"LISTEN {ladder.PAGES_CHANNEL}")
        conn.execute(f"LISTEN {ruleset.RULES_CHANNEL}")
        # A notification may have been missed while we were (re)connecting.
        self._reload_rules(conn)
        self._escalate.set()
        self._dispatch.set()
        while not self.stopping.is_set():
            for note in conn.notifies(timeout=1.0):
                if note.channel == ruleset.RULES_CHANNEL:
                    break        # the connection is busy until we leave the generator
                wake = self._escalate if note.channel == ladder.ESCALATE_CHANNEL else self._dispatch
                wake.set()
            else:
                continue
            self._reload_rules(conn)

    def _reload_rules(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Take the newest saved rules: the next rung of every open incident and every new
        alarm follow them (one reference swap; a pass under way finishes on the old ones)."""
        if not self._follow_rules:
            return
        try:
            version, policy = ruleset.current(conn, self._settings.alerts.rules_file)
        except ConfigError as exc:   # saved rules are validated; a newer firegrid may differ
            log.error("rules version not loaded, keeping version %s: %s",
                      self.rules_version, exc)
            return
        if version != self.rules_version:
            self.policy = policy
            self.engine.policy = policy
            self.rules_version = version
            log.info("rules version %s in force", version if version else "(the file)")

    # --- plumbing ----------------------------------------------------------------------

    def _beat_stopped(self) -> None:
        # Best effort: a core that cannot say so goes stale after heartbeat.STALE_S anyway.
        try:
            with connect(self._settings.database, autocommit=True) as conn:
                heartbeat.stopped(conn, self.instance)
        except (psycopg.Error, UnavailableError) as exc:
            log.warning("could not clear the heartbeat (%s): it goes stale by itself",
                        first_line(exc))

    def _loop(self, name: str, body: Callable[[psycopg.Connection[TupleRow]], None], *,
              autocommit: bool = False) -> None:
        """Run `body` with a database connection until stopping; on a database error log,
        back off with jitter, reconnect and run it again. State is all in the database, so
        starting over loses nothing."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                with connect(self._settings.database, autocommit=autocommit) as conn:
                    attempt = 0
                    body(conn)
            except (psycopg.Error, UnavailableError) as exc:
                metrics.DB_ERRORS.labels(name).inc()
                attempt += 1
                delay = _LOOP_BACKOFF.delay(attempt)
                log.warning("%s: database error (%s); again in %.1fs", name, first_line(exc),
                            delay)
                self.stopping.wait(delay)

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("%s crashed; stopping the alert core", name)
                self.stop()
        return run
