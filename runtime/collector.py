"""CPython's cyclic garbage collector, set for a service that works in batches (ingest).

The collector makes a young-generation pass every 700 net allocations of container objects,
and every tenth pass an older one that walks whatever survived. Ingest allocates several
containers per message (the decoded message, its row, their lists) and keeps thousands
alive at once (the window, the batch being written, liveness' pending devices), so the
passes came every ~100 messages and kept walking the same survivors: measured, nearly half
of decoding's CPU (a batch of 1,000 status reports decoded as ingest holds them, 3.4 µs a
message with the defaults, 1.8 µs with the settings below; one ingest process 78,000 →
105,000 msg/s in bench/ingest.py, docs/benchmarks.md).

Nothing on that path makes reference cycles (a batch's objects die by reference counting
when it is acknowledged), so collecting less often frees the same memory, later: what a
cycle somewhere else holds waits up to ~50,000 allocations for the young pass, and a full
collection still runs every 10 million or so.
"""

from __future__ import annotations

import gc

# (young pass every N net allocations, older pass every N young ones, full every N older)
THRESHOLDS = (50_000, 20, 10)


def tune_for_batches() -> None:
    """Call once the service is built, before it serves: what exists now (modules,
    settings, the service's objects) moves to a permanent generation no collection walks
    again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
