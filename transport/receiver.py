"""What every broker session of firegrid does with what it receives, whatever client speaks
the wire (transport/mqtt.py for MQTT 5, transport/paho.py for 3.1.1):

- QoS 1 messages go into the bounded Window and are acknowledged by ack() only after the
  caller committed them; the Window waits while it is full, so the socket is not read.
- Every (re)connect or loss bumps `generation`. An ack is sent only for messages of the
  current connection; older ones are redelivered by the broker and deduplicated downstream.
- A packet id reused while unacknowledged (a broker past 65,535 in flight) drops the
  connection rather than let one ack release two messages.
- With `partitions` > 1 a process keeps only its devices' messages and acknowledges the
  others at once (their owner keeps its own copy from its own session).

A client subclass calls `_connected`, `_arrived` and `_lost` from its network thread and
implements `_send_acks` (from the caller's thread, under `_lock`) and `_drop`.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Sequence

from runtime.settings import MqttSettings
from transport import metrics
from transport.window import Inbound, Window

log = logging.getLogger(__name__)


def subscriptions(settings: MqttSettings,
                  channels: tuple[str, ...] | None = None) -> list[str]:
    """Ingest takes the whole prefix, not just the known channels: a device publishing to a
    wrong topic must end up as an unknown_topic dead letter, not vanish unrouted in the
    broker. The alert core names its channels (an alarm's session apart from telemetry's)."""
    share = f"$share/{settings.share_group}/" if settings.share_group else ""
    if channels is None:
        return [f"{share}{settings.topic_prefix}/#"]
    return [f"{share}{settings.topic_prefix}/+/{channel}" for channel in channels]


class Receiver:
    def __init__(self, settings: MqttSettings, window: Window, *, service: str,
                 channels: tuple[str, ...] | None = None) -> None:
        self._settings = settings
        self._topics = subscriptions(settings, channels)
        self._window = window
        self._lock = threading.Lock()
        self.generation = 0
        self.received = 0  # messages taken from the broker by this process
        self.others = 0    # ... of them other partitions' (acknowledged, not kept)
        metrics.RECEIVED.labels(service).set_function(lambda: self.received)
        metrics.OTHERS.labels(service).set_function(lambda: self.others)
        self._partitions, self._partition = settings.partitions, settings.partition
        self._id_at = len(settings.topic_prefix.strip("/").split("/"))
        metrics.WINDOW_MESSAGES.labels(service).set_function(lambda: window.held)
        metrics.WINDOW_BYTES.labels(service).set_function(lambda: window.held_bytes)
        metrics.WINDOW_WAITS.labels(service).set_function(lambda: window.waits)
        self._mid_reused = metrics.MID_REUSED.labels(service)
        # QoS 1 packet ids of this connection not yet acknowledged.
        self._pending: set[int] = set()
        self._tainted = False   # a packet id was reused: this connection acks nothing more
        self._connected_gauge = metrics.CONNECTED.labels(service)
        self._session_lost = metrics.SESSION_LOST.labels(service)
        self._connected_once = False
        # Set once the broker has granted our subscriptions: ready to receive.
        self.subscribed = threading.Event()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # --- acknowledgement (the caller's thread) ----------------------------------------

    def ack(self, items: Sequence[Inbound]) -> int:
        """Acknowledge committed messages of the current connection and free their room in
        the window; returns how many were acknowledged."""
        try:
            with self._lock:
                generation = self.generation
                mids = [item.mid for item in items
                        if item.qos == 1 and item.generation == generation]
                if not mids:
                    return 0
                self._pending.difference_update(mids)
                self._send_acks(mids)
            return len(mids)
        finally:
            self._window.release(items)

    def _send_acks(self, mids: list[int]) -> None:
        """Write PUBACKs for these packet ids (ack() calls it under _lock)."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Break the connection; the network thread notices and reconnects."""
        raise NotImplementedError

    # --- from the network thread ------------------------------------------------------

    def _connected(self, session_present: bool) -> None:
        with self._lock:
            self._next_generation(tainted=False)
        if self._connected_once and not session_present:
            # Our queue on the broker is gone (expired or the broker lost its store).
            log.warning("broker did not resume our session: messages queued meanwhile are lost")
            self._session_lost.inc()
        self._connected_once = True
        log.info("connected to broker %s:%s (session present: %s)", self._settings.host,
                 self._settings.port, session_present)

    def _granted(self, refused: list[str]) -> None:
        if refused:
            log.error("broker refused subscriptions %s: %s", self._topics, refused)
            return
        self._connected_gauge.set(1)
        self.subscribed.set()

    def _lost(self) -> None:
        with self._lock:
            self._next_generation(tainted=False)
        self.subscribed.clear()
        self._connected_gauge.set(0)

    def _arrived(self, topic: str, payload: bytes, mid: int, qos: int) -> int:
        """Take one message. Returns a packet id to acknowledge at once (another
        partition's message), or 0."""
        self.received += 1  # exported at scrape time (metrics.RECEIVED), no lock per message
        if self._partitions > 1 and not self._owns(topic):
            self.others += 1
            return mid if qos == 1 else 0
        if qos == 1:
            # No lock: only this thread adds, and set operations are atomic; ack() removes
            # under the lock, and connect/disconnect (this thread too) clear.
            if self._tainted:
                return 0  # left unacknowledged: redelivered after the reconnect
            if mid in self._pending:
                with self._lock:
                    self._taint(mid)
                return 0
            self._pending.add(mid)
        self._window.put(Inbound(topic, payload, mid, qos, self.generation,
                                 time.time_ns() // 1_000_000, time.monotonic()))
        return 0

    def _owns(self, topic: str) -> bool:
        """This process's share of the work: the device (or gateway) id in the topic, hashed.
        One device's messages always go to one process, in order."""
        parts = topic.split("/", self._id_at + 1)
        key = parts[self._id_at] if len(parts) > self._id_at else topic
        return zlib.crc32(key.encode()) % self._partitions == self._partition

    def _taint(self, mid: int) -> None:
        """The broker sent a message with the packet id of one we have not acknowledged.
        Acknowledging either would release both, one maybe not yet committed. So this
        connection acknowledges nothing more (a new generation), and is dropped: the broker
        redelivers every unacknowledged message on the next one. Called under the lock."""
        log.error("broker reused packet id %d while a message with it is unacknowledged;"
                  " reconnecting so that no acknowledgement releases the wrong message", mid)
        self._mid_reused.inc()
        self._next_generation(tainted=True)
        self._drop()

    def _next_generation(self, *, tainted: bool) -> None:
        """From now on nothing received before is acknowledged on this session's socket
        (ack() compares generations); `tainted`: nor anything received after, until the
        reconnect. Called under the lock."""
        self.generation += 1
        self._pending.clear()
        self._tainted = tainted
