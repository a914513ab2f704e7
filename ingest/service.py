"""The ingest service: broker -> Window -> BatchWriter -> commit -> ack.

    MQTT network thread                    writer (the calling thread)
    -------------------                    ---------------------------
    arrived    -> Window.put  ──────────►  Window.take (size or age)
                                           Decoder.decode each message (pydantic)
                                           BatchWriter.write (COPY, one transaction)
    PUBACK written  ◄──────────────────────  Consumer.ack (only after COMMIT)

After each commit and ack the writer hands the batch to the liveness tracker (in memory);
its own thread writes last_seen, conditions and the quarantine every few seconds
(ingest/liveness.py), so the ack path never waits for that.

Stop (SIGTERM/SIGINT or stop()): the writer keeps committing and acknowledging what is
buffered until the window is empty or ingest.drain_timeout_s passes, then disconnects.
Anything not committed by then is simply not acknowledged: the broker keeps it in our
persistent session and redelivers it to the next run. Nothing is lost either way.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import start_http_server

from ingest import liveness, metrics
from ingest.errors import Abandoned
from ingest.writer import BatchWriter
from protocol.decode import Decoder
from runtime.settings import Settings
from transport.session import consumer
from transport.window import Inbound, Window

log = logging.getLogger(__name__)


class IngestService:
    def __init__(self, settings: Settings) -> None:
        cfg = settings.ingest
        self._settings = settings
        self._stopping = threading.Event()
        self.window = Window(batch_max=cfg.batch_max_rows, max_age_s=cfg.batch_max_age_ms / 1000,
                             max_messages=cfg.inflight_window, max_bytes=cfg.window_max_bytes)
        self.decoder = Decoder(
            prefix=settings.mqtt.topic_prefix, max_payload_bytes=cfg.max_payload_bytes,
            max_future_skew_s=cfg.max_future_skew_s, max_age_days=cfg.max_age_days,
        )
        self.writer = BatchWriter(settings.database, cfg, self._stopping)
        self.consumer = consumer(settings.mqtt, self.window, service="ingest")
        self.liveness = liveness.LivenessFlusher(
            liveness.LivenessTracker(settings.devices), settings,
            watching=self.consumer.subscribed.is_set)
        self.committed = 0  # messages committed (and acknowledged) by this process
        metrics.INFLIGHT.set_function(lambda: self.consumer.received - self.committed)

    def stop(self) -> None:
        """Ask run() to drain and return. Safe from signal handlers and other threads."""
        self._stopping.set()
        self.window.close()

    def run(self) -> None:
        cfg = self._settings.ingest
        if cfg.metrics_port:
            start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
        self.writer.open()
        self.consumer.start()
        self.liveness.start()
        log.info("ingest running: window %d, batch %d rows / %d ms", cfg.inflight_window,
                 cfg.batch_max_rows, cfg.batch_max_age_ms)
        try:
            while not self._stopping.is_set():
                batch = self.window.take()
                if batch:
                    self._commit(batch)
            self._drain()
        finally:
            self.consumer.stop()
            self.writer.close()
            self.liveness.stop(timeout=cfg.drain_timeout_s)
            log.info("ingest stopped; %d messages committed and acknowledged", self.committed)

    def _drain(self) -> None:
        # Drain what was buffered when the stop came. Every ack frees a slot the broker
        # refills, so "until empty" could run to the deadline under load; later arrivals
        # stay unacknowledged and come back to the next run.
        self.writer.begin_drain()
        deadline = time.monotonic() + self._settings.ingest.drain_timeout_s
        remaining = len(self.window)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                batch = self.window.take_now()
                if not batch:
                    return
                remaining -= len(batch)
                self._commit(batch)
        except Abandoned as exc:
            log.warning("drain stopped: %s; %d buffered messages left unacknowledged for "
                        "redelivery", exc, len(self.window))

    def _commit(self, batch: list[Inbound]) -> None:
        started = time.perf_counter()
        decoded = [self.decoder.decode(m.topic, m.payload, m.received_ms) for m in batch]
        result = self.writer.write(decoded)
        acked = self.consumer.ack(batch)
        self.liveness.tracker.observe(decoded)
        elapsed = time.perf_counter() - started
        n = len(batch)
        self.committed += n
        metrics.COMMITTED.inc(n)
        metrics.ACKED.inc(acked)
        metrics.BATCH_SIZE.observe(n)
        metrics.WRITE_SECONDS.observe(elapsed)
        for name, stored, dup in (("readings", result.readings_stored, result.readings_duplicate),
                                  ("events", result.events_stored, result.events_duplicate)):
            if stored:
                metrics.ROWS.labels(name, "stored").inc(stored)
            if dup:
                metrics.ROWS.labels(name, "duplicate").inc(dup)
        metrics.LAG_SECONDS.observe_many([lag for item in decoded for lag in item.lag_ms])

