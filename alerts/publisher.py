"""The MQTT push to the worker app: one paho client publishing pages at QoS 1.

Each worker's app subscribes to {alerts.page_topic_prefix}/{worker_id}/pages. A page counts
as sent when the broker has acknowledged it (PUBACK); the broker then delivers it to the
app, queueing it in the app's persistent session while the phone is offline.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.settings import AlertsSettings, MqttSettings

log = logging.getLogger(__name__)


class _ReconnectDelay(Protocol):
    # paho annotates the delays as int, yet only adds them to the clock and sleeps them, so
    # float seconds work; ours are floats (0.5 s by default) that int() would change.
    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None: ...


class PagePublisher:
    def __init__(self, mqtt_settings: MqttSettings, alerts: AlertsSettings) -> None:
        self._prefix = alerts.page_topic_prefix.rstrip("/")
        self._settings = mqtt_settings
        self.connected = threading.Event()
        v5 = mqtt_settings.protocol == "5"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"{alerts.client_id}-pages",
                                   protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if mqtt_settings.username:
            password = (mqtt_settings.password.get_secret_value()
                        if mqtt_settings.password else None)
            self._client.username_pw_set(mqtt_settings.username, password)
        # A storm's pages go out as one burst; paho's default of 20 in flight would make
        # the last wait for 50 round trips.
        self._client.max_inflight_messages_set(1000)
        cast(_ReconnectDelay, self._client).reconnect_delay_set(
            mqtt_settings.reconnect_min_s, mqtt_settings.reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def topic(self, worker_id: str) -> str:
        return f"{self._prefix}/{worker_id}/pages"

    def start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port,
                                   self._settings.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish_all(self, messages: list[tuple[str, bytes]], timeout_s: float) -> list[bool]:
        """Publish (topic, payload) pairs at QoS 1; for each, whether the broker
        acknowledged it within the timeout. Not connected: all False, at once."""
        if not self.connected.is_set():
            return [False] * len(messages)
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        done = []
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS and not info.is_published():
                done.append(False)
                continue
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # paho: not queued / connection gone
                pass
            done.append(info.is_published())
        return done

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("broker refused the page publisher: %s", reason)
            return
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object,
                       flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("page publisher lost the broker: %s; reconnecting", reason)
