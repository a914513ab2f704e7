"""MQTT 3.1.1 sessions, for brokers that do not speak MQTT 5: paho-mqtt 2 with manual
acknowledgement, through its public API only.

The `mqtt5` codec behind transport/mqtt.py parses MQTT 5 alone, so this is the slower path
(paho reads one packet per select() wake-up and sends one PUBACK per call: about 0.5x the
MQTT 5 path's rate, docs/benchmarks.md) kept for compatibility, with the same guarantees:
clean_session=False (the broker keeps our queue), acknowledgement after commit, the window
bound. Mosquitto 2.0 does not apply max_inflight_messages to 3.1.1 clients draining a
backlog, so the window is firegrid's own bound there (transport/window.py). Nor does it
answer a PINGREQ before the backlog queued ahead of it: paho then drops the connection once
a keepalive into a long drain, and reconnects; the broker redelivers what was unacknowledged.
"""

from __future__ import annotations

import logging
import random
import socket

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.settings import MqttSettings
from transport.receiver import Receiver
from transport.window import Window

log = logging.getLogger(__name__)


class Consumer(Receiver):
    def __init__(self, settings: MqttSettings, window: Window, *, service: str,
                 channels: tuple[str, ...] | None = None) -> None:
        super().__init__(settings, window, service=service, channels=channels)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                   protocol=mqtt.MQTTv311, clean_session=False,
                                   manual_ack=True)
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        ctx = settings.ssl_context()
        if ctx is not None:
            self._client.tls_set_context(ctx)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._jitter_reconnect()

    def start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port,
                                   self._settings.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect after every queued PUBACK has been written, then stop the loop."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected_gauge.set(0)

    def _send_acks(self, mids: list[int]) -> None:
        for mid in mids:
            self._client.ack(mid, 1)

    def _drop(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):   # paho sees the loss and reconnects
            sock.shutdown(socket.SHUT_RDWR)

    # --- paho callbacks (network thread) -------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload   # paho types it bytes | bytearray; a received one is bytes
        mid = self._arrived(msg.topic, payload if type(payload) is bytes else bytes(payload),
                            msg.mid, msg.qos)
        if mid:
            client.ack(mid, 1)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("broker refused connection: %s", reason)
            return
        self._connected(flags.session_present)
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        self._granted([str(r) for r in reasons if r.is_failure])

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        log.warning("cannot reach broker %s:%s, retrying", self._settings.host, self._settings.port)
        self._jitter_reconnect()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._lost()
        if reason.is_failure:
            log.warning("lost broker connection: %s; reconnecting", reason)
        self._jitter_reconnect()

    def _jitter_reconnect(self) -> None:
        # paho doubles its delay from min to max without jitter; re-drawing both bounds on
        # every disconnect spreads many processes reconnecting after one broker restart.
        lo, hi = self._settings.reconnect_min_s, self._settings.reconnect_max_s
        self._client.reconnect_delay_set(
            # paho annotates the delays as int but computes with floats.
            min_delay=random.uniform(0.5 * lo, 1.5 * lo),  # type: ignore[arg-type]
            max_delay=random.uniform(0.75 * hi, hi),  # type: ignore[arg-type]
        )
