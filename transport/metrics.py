"""The MQTT transport's metrics, one series per service (`service` label: ingest, alerts), so
two services in one process (the demo) never overwrite each other's figures."""

from prometheus_client import Counter, Gauge

# Counted in the network thread as a plain int and read at scrape time: no lock per message.
# A gauge so it can be read that way; it only ever grows, and resets when the process does.
RECEIVED = Gauge("firegrid_mqtt_messages_received", "MQTT messages received from the broker",
                 ["service"])
CONNECTED = Gauge("firegrid_mqtt_connected", "1 while connected to the broker and subscribed",
                  ["service"])
SESSION_LOST = Counter("firegrid_mqtt_session_lost_total",
                       "Reconnects where the broker had not kept our persistent session",
                       ["service"])
