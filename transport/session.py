"""The broker session for settings.mqtt.protocol (see the package's docstring)."""

from __future__ import annotations

from runtime.settings import MqttSettings
from transport.receiver import Receiver
from transport.window import Window


def consumer(settings: MqttSettings, window: Window, *, service: str,
             channels: tuple[str, ...] | None = None) -> Receiver:
    # Imported here so that a process loads only the client it uses.
    if settings.protocol == "5":
        from transport.mqtt import Consumer
        return Consumer(settings, window, service=service, channels=channels)
    from transport.paho import Consumer as Paho
    return Paho(settings, window, service=service, channels=channels)
