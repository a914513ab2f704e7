"""The batch writer's two paths (issue 18): COPY straight into readings while nothing is
a duplicate, the conflict-safe stage when a redelivered row is hit, and back to straight
COPY after a run of clean batches. Real database; the rows are what the decoder makes."""

from __future__ import annotations

import threading
import time

from ingest import metrics
from ingest import writer as w
from protocol.decode import Decoded, Reading

NOW = int(time.time() * 1000)


def _batch(seqs: range, device: str = "SD-1") -> list[Decoded]:
    now = NOW       # a redelivery is the same message: the same device time
    rows = [Reading(device, now - 1000 + s, s, "smoke", now, None, 0.05, 24.5, 87, 3.6, -95,
                    11.5, 3600, None, None, None) for s in seqs]
    return [Decoded(topic=f"fg/v1/{device}/telemetry", payload=b"{}", received_ms=now,
                    readings=rows)]


def test_a_redelivery_falls_back_to_the_stage_and_nothing_is_stored_twice(db, make_settings):
    settings = make_settings()
    writer = w.BatchWriter(settings.database, settings.ingest, threading.Event())
    fallbacks = metrics.COPY_FALLBACKS._value.get()
    try:
        first = writer.write(_batch(range(0, 100)))
        assert (first.readings_stored, first.readings_duplicate) == (100, 0)
        assert metrics.COPY_FALLBACKS._value.get() == fallbacks       # straight in
        again = writer.write(_batch(range(50, 150)))                   # half redelivered
        assert (again.readings_stored, again.readings_duplicate) == (50, 50)
        assert metrics.COPY_FALLBACKS._value.get() == fallbacks + 1
        for k in range(w._STAGED_AFTER_DUPLICATE + 1):                  # a clean run
            n = 150 + k * 10
            assert writer.write(_batch(range(n, n + 10))).readings_stored == 10
        assert writer._staged == 0                                      # straight again
    finally:
        writer.close()
    stored = db.execute("SELECT count(*), count(DISTINCT seq), min(ts) > '2020-01-01'"
                        " FROM readings").fetchone()
    total = 150 + (w._STAGED_AFTER_DUPLICATE + 1) * 10
    assert stored == (total, total, True)
