"""Ingest's Prometheus metrics. No device id is ever a label (unbounded cardinality)."""

from prometheus_client import Counter, Gauge, Histogram

# Counted in paho's thread as a plain int and read at scrape time: no lock per message.
# A gauge so it can be read that way; it only ever grows, and resets when the process does.
RECEIVED = Gauge("firegrid_ingest_messages_received", "MQTT messages received from the broker")
COMMITTED = Counter(
    "firegrid_ingest_messages_committed_total",
    "MQTT messages whose rows (or dead letters) are committed", )
ROWS = Counter("firegrid_ingest_rows_total", "Rows committed, by table and outcome",
               ["table", "outcome"])  # outcome: stored | duplicate
DEAD_LETTERS = Counter("firegrid_ingest_dead_letters_total", "Dead letters written, by reason",
                       ["reason"])
ACKED = Counter("firegrid_ingest_messages_acked_total", "PUBACKs sent after commit")
DB_RETRIES = Counter("firegrid_ingest_db_retries_total", "Batch writes retried after a transient error")
UNSTORABLE = Counter("firegrid_ingest_unstorable_total",
                     "Messages that could not even be dead-lettered (logged in full instead)")
SESSION_LOST = Counter("firegrid_ingest_broker_session_lost_total",
                       "Reconnects where the broker had not kept our persistent session")
BATCH_SIZE = Histogram("firegrid_ingest_batch_messages", "Messages per committed batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
WRITE_SECONDS = Histogram("firegrid_ingest_batch_write_seconds",
                          "Time to write and commit one batch, retries included",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
LAG_SECONDS = Histogram("firegrid_ingest_lag_seconds", "Arrival time minus device time",
                        buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400))
INFLIGHT = Gauge("firegrid_ingest_inflight_messages", "Messages received and not yet acknowledged")
BROKER_CONNECTED = Gauge("firegrid_ingest_broker_connected", "1 while connected to the broker and subscribed")
DB_CONNECTED = Gauge("firegrid_ingest_database_connected", "1 while the database connection is up")
