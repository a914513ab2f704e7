"""The MQTT side of firegrid's services: one broker session with manual acknowledgement
after commit feeding a bounded buffer (window.Window). Used by ingest and by the alert core,
each under its own service name, which labels the metrics (metrics.py).

    session.consumer(settings, window, service=...)   for settings.mqtt.protocol:
        "5"      transport/mqtt.py, on the mqtt5 codec (the default, and the fast path)
        "3.1.1"  transport/paho.py, paho-mqtt for brokers without MQTT 5

Both are a receiver.Receiver: start(), stop(), ack(items), `subscribed`, `generation`.
Importing this package loads no MQTT client and registers no metric.
"""
