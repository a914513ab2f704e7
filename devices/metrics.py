"""Maintenance metrics: the monitor's tickets, the quarantine and the daily rollup, served by
whatever process runs the monitor. No device id is ever a label (unbounded cardinality).
The liveness ones live with ingest (ingest/metrics.py), which runs the liveness tracker.
"""

from prometheus_client import Counter, Gauge, Histogram

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

# TimescaleDB's background jobs (compression, retention, the aggregate's refresh), read by the
# monitor's check from timescaledb_information; no series on plain PostgreSQL. `job_name` (not
# `job`: Prometheus's own target label) is the job's procedure and table
# (policy_retention/readings): a handful, bounded.
TIMESCALE_JOB_LAST_SUCCESS = Gauge(
    "firegrid_timescale_job_last_success_timestamp_seconds",
    "Unix time of the TimescaleDB job's last successful run (0: never)", ["job_name"])
TIMESCALE_JOB_FAILURES = Gauge(
    "firegrid_timescale_job_consecutive_failures",
    "Runs of the TimescaleDB job that failed since its last success (job_errors)", ["job_name"])
