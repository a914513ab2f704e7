"""The MQTT transport's metrics, one series per service (`service` label: ingest, alerts), so
two services in one process (the demo) never overwrite each other's figures."""

from prometheus_client import Counter, Gauge

# Counted in the network thread as a plain int and read at scrape time: no lock per message.
# A gauge so it can be read that way; it only ever grows, and resets when the process does.
RECEIVED = Gauge("firegrid_mqtt_messages_received", "MQTT messages received from the broker",
                 ["service"])
CONNECTED = Gauge("firegrid_mqtt_connected", "1 while connected to the broker and subscribed",
                  ["service"])
# The window (transport/window.py): held = received and not yet acknowledged; waits = times
# the network thread stopped reading because the window was full (grows).
OTHERS = Gauge("firegrid_mqtt_messages_others",
               "Messages of other partitions, acknowledged at once and not kept (grows)",
               ["service"])
WINDOW_MESSAGES = Gauge("firegrid_mqtt_window_messages",
                        "Messages received and not yet acknowledged (bounded by firegrid)",
                        ["service"])
WINDOW_BYTES = Gauge("firegrid_mqtt_window_bytes", "Payload bytes of those messages",
                     ["service"])
WINDOW_WAITS = Gauge("firegrid_mqtt_window_waits",
                     "Times reading from the broker paused because the window was full",
                     ["service"])
MID_REUSED = Counter("firegrid_mqtt_packet_id_reused_total",
                     "Messages that arrived with the packet id of one still unacknowledged:"
                     " the connection was dropped so that no ack can release the wrong one",
                     ["service"])
SESSION_LOST = Counter("firegrid_mqtt_session_lost_total",
                       "Reconnects where the broker had not kept our persistent session",
                       ["service"])
