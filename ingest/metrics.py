"""Ingest's Prometheus metrics. No device id is ever a label (unbounded cardinality).
The broker session's own (connected, received, session lost) are transport/metrics.py's."""

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class BatchHistogram(Collector):
    """A histogram observed a batch at a time. Histogram.observe takes a lock and walks the
    buckets for every value: for lag, once per reading, on ingest's hot path (issue 18).
    Here a batch costs one lock and a bisect per value; the exposition is the same."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 scale: float = 1.0) -> None:
        self._name, self._doc = name, documentation
        self._bounds = list(buckets)
        self._scaled = [b * scale for b in buckets]   # bounds in the unit values come in
        self._scale = scale
        self._counts = [0] * (len(buckets) + 1)       # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts = [0] * len(self._counts)
        total = 0.0
        bounds = self._scaled
        for value in values:
            counts[bisect_left(bounds, value)] += 1   # le: the first bound >= value
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total / self._scale

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(floatToGoString, self._bounds), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self._name, self._doc, buckets=cumulative,
                                    sum_value=total)


COMMITTED = Counter(
    "firegrid_ingest_messages_committed_total",
    "MQTT messages whose rows (or dead letters) are committed", )
ROWS = Counter("firegrid_ingest_rows_total", "Rows committed, by table and outcome",
               ["table", "outcome"])  # outcome: stored | duplicate
DEAD_LETTERS = Counter("firegrid_ingest_dead_letters_total", "Dead letters written, by reason",
                       ["reason"])
ACKED = Counter("firegrid_ingest_messages_acked_total", "PUBACKs sent after commit")
DB_RETRIES = Counter("firegrid_ingest_db_retries_total",
                     "Batch writes retried after a transient error")
COPY_FALLBACKS = Counter("firegrid_ingest_copy_fallbacks_total",
                         "Batches whose straight COPY into readings hit a row already stored"
                         " (a redelivery) and went the conflict-safe way")
UNSTORABLE = Counter("firegrid_ingest_unstorable_total",
                     "Messages that could not even be dead-lettered (logged in full instead)")
BATCH_SIZE = Histogram("firegrid_ingest_batch_messages", "Messages per committed batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
WRITE_SECONDS = Histogram("firegrid_ingest_batch_write_seconds",
                          "Time to write and commit one batch, retries included",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
# Observed in milliseconds, a batch at a time, exposed in seconds.
LAG_SECONDS = BatchHistogram(
    "firegrid_ingest_lag_seconds", "Arrival time minus device time",
    buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400), scale=1000)
INFLIGHT = Gauge("firegrid_ingest_inflight_messages", "Messages received and not yet acknowledged")
DB_CONNECTED = Gauge("firegrid_ingest_database_connected", "1 while the database connection is up")

# Liveness (ingest/liveness.py): each ingest process flushes what it has heard.
LIVENESS_FLUSHES = Counter("firegrid_liveness_flushes_total",
                           "Liveness flushes committed (last_seen, conditions, quarantine)")
LIVENESS_FLUSH_FAILURES = Counter(
    "firegrid_liveness_flush_failures_total",
    "Liveness flushes that failed; their state is kept and merged into the next flush")
LIVENESS_FLUSH_SECONDS = Histogram(
    "firegrid_liveness_flush_seconds", "Time to write and commit one liveness flush",
    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
LIVENESS_PENDING = Gauge("firegrid_liveness_pending_devices",
                         "Device ids observed and not yet flushed")
LIVENESS_DROPPED = Counter(
    "firegrid_liveness_dropped_total",
    "Observations of new ids not kept because the pending set was full (flushes failing)")
LIVENESS_FOREIGN_ENTRIES = Counter(
    "firegrid_liveness_foreign_entries_total",
    "Gateway entries ignored for liveness: the device is registered, but not behind the"
    " gateway that relayed them (stored by ingest all the same)")
QUARANTINE_FLUSHED = Counter(
    "firegrid_liveness_quarantine_writes_total",
    "Quarantine rows written by flushes: unknown ids heard (each flush counts its own)")
