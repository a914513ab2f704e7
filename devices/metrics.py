"""Liveness and maintenance metrics. No device id is ever a label (unbounded cardinality).

The liveness ones live in every ingest process and are served by ingest's metrics port; the
monitor's ones by whatever process runs the monitor.
"""

from prometheus_client import Counter, Gauge, Histogram

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

QUARANTINE_UNCLAIMED = Gauge("firegrid_quarantine_unclaimed_ids",
                             "Unknown device ids in the quarantine that nobody has claimed")
OPEN_TICKETS = Gauge("firegrid_maintenance_open_tickets", "Open maintenance tickets",
                     ["condition"])
TICKETS_OPENED = Counter("firegrid_maintenance_tickets_opened_total",
                         "Maintenance tickets opened by the monitor", ["condition"])
TICKETS_CLOSED = Counter("firegrid_maintenance_tickets_closed_total",
                         "Maintenance tickets closed by the monitor", ["reason"])
MONITOR_RUNS = Counter("firegrid_monitor_runs_total", "Maintenance checks committed")
MONITOR_FAILURES = Counter("firegrid_monitor_failures_total",
                           "Maintenance checks that failed (retried next tick)")
OFFLINE_PAUSED = Gauge(
    "firegrid_monitor_offline_paused",
    "1 while no ingest reports itself connected and flushing: offline detection waits")

# Per community, from the monitor's check. `street` and `community` are registry ids: a
# street has tens of communities, a city a few thousand, so the label set stays bounded
# (never a grid, building or device id). A community removed from the registry loses its
# series at the next check.
COMMUNITY_DEVICES = Gauge(
    "firegrid_community_devices",
    "Devices watched for liveness (state active or maintenance), per community",
    ["street", "community"])
COMMUNITY_ONLINE = Gauge(
    "firegrid_community_devices_online",
    "Watched devices heard within their offline limit (the monitor's offline rule), per"
    " community", ["street", "community"])

# The daily readings rollup (devices/rollup.py), run by the monitor.
ROLLUP_RUNS = Counter("firegrid_rollup_runs_total",
                      "Daily readings rollups completed (readings_daily brought up to date)")
ROLLUP_FAILURES = Counter("firegrid_rollup_failures_total",
                          "Daily readings rollups that failed (retried next interval)")
ROLLUP_SECONDS = Histogram(
    "firegrid_rollup_seconds", "Time for one rollup run, backfill included",
    buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
ROLLUP_DAYS = Counter(
    "firegrid_rollup_days_total",
    "Days recomputed by the rollup, by phase: backfill (history never computed), settle (the"
    " daily pass over days late readings can change), live (yesterday and today)", ["phase"])
