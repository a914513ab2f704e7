"""The alert core's metrics. Labels are bounded sets (rule, channel, outcome), never a
device, building or worker id."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)

MESSAGES = Counter("firegrid_alerts_messages_total",
                   "Device messages the alert core evaluated", ["outcome"])
ALERTS = Counter("firegrid_alerts_total", "Alerts recorded, by rule (redeliveries excluded)",
                 ["rule"])
UNROUTABLE = Counter("firegrid_alerts_unroutable_total",
                     "Alerts from devices the registry does not know (kept, not routed)")
INCIDENTS_OPENED = Counter("firegrid_incidents_opened_total", "Incidents opened")
INCIDENTS_CONFIRMED = Counter("firegrid_incidents_confirmed_total",
                              "Incidents whose fire was confirmed by a second source")
ESCALATIONS = Counter("firegrid_escalations_total",
                      "Ladder rungs fired, skipped (nobody on duty), held in the grid (its"
                      " only device cleared) or exhausted", ["outcome"])
TIMER_LATENESS = Histogram("firegrid_escalation_lateness_seconds",
                           "How late an escalation timer fired after it was due",
                           buckets=_LATENCY)
EVALUATE_SECONDS = Histogram("firegrid_alerts_evaluate_seconds",
                             "Time from receiving a batch with alerts to its commit",
                             buckets=_LATENCY)
PAGES = Counter("firegrid_pages_total", "Page attempts by channel and outcome",
                ["channel", "outcome"])
PAGE_SECONDS = Histogram("firegrid_page_latency_seconds",
                         "From the page being written to the channel accepting it",
                         ["channel"], buckets=_LATENCY)
PAGES_PENDING = Gauge("firegrid_pages_pending", "Pages waiting to be sent (all processes)")
PAGES_HANDED = Counter("firegrid_pages_handed_total",
                       "MQTT pages handed to this process's dispatcher (handed), or left in "
                       "the outbox until their lease ends because it had no room (no_room)",
                       ["outcome"])
OPEN_INCIDENTS = Gauge("firegrid_incidents_open", "Open incidents (all processes)",
                       ["severity"])
DB_ERRORS = Counter("firegrid_alerts_db_errors_total",
                    "Database errors in the alert core, by loop", ["loop"])
