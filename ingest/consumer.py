"""The MQTT side of ingest: a paho-mqtt 2 client with manual acknowledgement.

- QoS 1, a stable client id and a persistent session (MQTT 5 clean_start=False with a
  Session Expiry Interval, or 3.1.1 clean_session=False), so the broker queues for us while
  we are away and redelivers whatever we did not acknowledge.
- manual_ack=True: paho sends no PUBACK by itself; the writer calls ack() after commit.
- Receive Maximum = the in-flight window, so the broker stops sending when we are behind.
- on_message only appends to the Window: the network loop never waits for the database.
- Every (re)connect or disconnect bumps `generation`. An ack is sent only for messages of
  the current connection; older ones are redelivered by the broker and deduplicated.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest import metrics
from ingest.window import Inbound, Window
from runtime.settings import MqttSettings

log = logging.getLogger(__name__)

def subscriptions(settings: MqttSettings) -> list[str]:
    # The whole prefix, not just the known channels: a device publishing to a wrong topic
    # must end up as an unknown_topic dead letter, not vanish unrouted in the broker.
    share = f"$share/{settings.share_group}/" if settings.share_group else ""
    return [f"{share}{settings.topic_prefix}/#"]


class Consumer:
    def __init__(self, settings: MqttSettings, window: Window, *, inflight_window: int) -> None:
        self._settings = settings
        self._window = window
        self._inflight = inflight_window
        self._lock = threading.Lock()
        self.generation = 0
        self.received = 0  # messages handed to the window by this process
        self._connected_once = False
        # Set once the broker has granted our subscriptions: ready to receive.
        self.subscribed = threading.Event()
        v5 = settings.protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        # Bounds what paho itself keeps of our own (rare) outgoing QoS>0 packets.
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._jitter_reconnect()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        props = None
        if self._settings.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = self._inflight
            props.SessionExpiryInterval = self._settings.session_expiry_s
        self._client.connect_async(
            self._settings.host, self._settings.port, self._settings.keepalive_s,
            clean_start=False if self._settings.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect after every queued PUBACK has been written, then stop the loop."""
        self._client.disconnect()
        self._client.loop_stop()
        metrics.BROKER_CONNECTED.set(0)

    # --- acknowledgement ---------------------------------------------------------------

    def ack(self, items: Iterable[Inbound]) -> int:
        """Acknowledge committed messages of the current connection; returns how many."""
        sent = 0
        with self._lock:
            generation = self.generation
            for item in items:
                if item.qos and item.generation == generation:
                    self._client.ack(item.mid, item.qos)
                    sent += 1
        return sent

    # --- paho callbacks (network thread) -------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        metrics.RECEIVED.inc()
        self._window.put(Inbound(
            msg.topic, msg.payload, msg.mid, msg.qos, self.generation,
            time.time_ns() // 1_000_000, time.monotonic(),
        ))

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: mqtt.ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.warning("broker refused connection: %s", reason)
            return
        with self._lock:
            self.generation += 1
        if self._connected_once and not flags.session_present:
            # Our queue on the broker is gone (expired or the broker lost its store).
            log.warning("broker did not resume our session: messages queued meanwhile are lost")
            metrics.SESSION_LOST.inc()
        self._connected_once = True
        client.subscribe([(topic, 1) for topic in subscriptions(self._settings)])
        log.info("connected to broker %s:%s (session present: %s)", self._settings.host,
                 self._settings.port, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[mqtt.ReasonCode], properties: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", subscriptions(self._settings), refused)
            return
        metrics.BROKER_CONNECTED.set(1)
        self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        log.warning("cannot reach broker %s:%s, retrying", self._settings.host, self._settings.port)
        self._jitter_reconnect()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason: mqtt.ReasonCode, properties: Properties | None) -> None:
        with self._lock:
            self.generation += 1
        self.subscribed.clear()
        metrics.BROKER_CONNECTED.set(0)
        if reason.is_failure:
            log.warning("lost broker connection: %s; reconnecting", reason)
        self._jitter_reconnect()

    def _jitter_reconnect(self) -> None:
        # paho doubles its delay from min to max without jitter; re-drawing both bounds on
        # every disconnect spreads many processes reconnecting after one broker restart.
        lo, hi = self._settings.reconnect_min_s, self._settings.reconnect_max_s
        self._client.reconnect_delay_set(
            min_delay=random.uniform(0.5 * lo, 1.5 * lo),  # type: ignore[arg-type]
            max_delay=random.uniform(0.75 * hi, hi),  # type: ignore[arg-type]
        )
