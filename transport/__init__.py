"""The MQTT side of firegrid's services: one broker session with manual acknowledgement
after commit (mqtt.Consumer) feeding a bounded buffer (window.Window). Used by ingest and by
the alert core, each under its own service name, which labels the metrics (metrics.py).
Importing this package loads no MQTT client and registers no metric."""
