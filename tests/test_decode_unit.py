"""Pure logic, no services: the decoder's edge cases, the error classifier, the window."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from protocol.decode import Decoder, _route
from runtime.db import classify
from simulators import messages as m
from transport.window import Inbound, Window

NOW = 1_795_000_000_000
decoder = Decoder(prefix="fg/v1", max_payload_bytes=1024, max_future_skew_s=300, max_age_days=30)


def reasons(topic: str, payload: bytes) -> list[str]:
    return [d.reason for d in decoder.decode(topic, payload, NOW).dead]


def test_command_topics_are_ignored_not_dead_lettered():
    out = decoder.decode("fg/v1/SD-1/cmd", b"reboot", NOW)
    assert (out.readings, out.events, out.dead) == ([], [], [])
    assert reasons("fg/v1/SD-1/cmd/reboot", b"{}") == []


def test_device_id_with_trailing_newline_is_refused():
    good = m.encode(m.smoke_status(1, NOW))
    assert reasons("fg/v1/SD-1\n/telemetry", good) == ["bad_device_id"]


def test_a_topic_decodes_the_same_every_time_and_long_ones_stay_out_of_the_cache():
    """Topics are classified once and cached (issue 18); the second message on a topic
    must be judged as the first, and a client sending long topics must not fill memory."""
    good = m.encode(m.smoke_status(1, NOW))
    for _ in range(2):
        assert reasons("fg/v1/SD-1/telemetry", good) == []
        assert reasons("fg/v1/SD 1/telemetry", good) == ["bad_device_id"]
        assert reasons("fg/v2/SD-1/telemetry", good) == ["unknown_topic"]
        assert reasons("fg/v1/SD-1/cmd", good) == []
    cached = _route.cache_info().currsize
    long_id = "SD-" + "1" * 300
    assert reasons(f"fg/v1/{long_id}/telemetry", good) == ["bad_device_id"]
    assert reasons("fg/v1/" + "x/" * 200 + "telemetry", good) == ["unknown_topic"]
    assert _route.cache_info().currsize == cached


def test_loose_types_are_schema_errors_like_in_the_published_schemas():
    loose_ts = {**m.smoke_status(1, NOW), "ts": str(NOW)}
    assert reasons("fg/v1/SD-1/telemetry", m.encode(loose_ts)) == ["schema"]
    loose_bool = m.event("occlusion", 1, NOW, active="yes")
    assert reasons("fg/v1/CAM-1/event", m.encode(loose_bool)) == ["schema"]


def test_clock_limits_are_inclusive_of_the_allowed_skew():
    at_limit = m.encode(m.smoke_status(1, NOW + 300_000))
    beyond = m.encode(m.smoke_status(1, NOW + 300_001))
    assert reasons("fg/v1/SD-1/telemetry", at_limit) == []
    assert reasons("fg/v1/SD-1/telemetry", beyond) == ["future_timestamp"]


def test_nul_in_topic_or_detail_is_escaped_for_text_columns():
    dead = decoder.decode("fg/v1/SD\x00/telemetry", b"{}", NOW).dead[0]
    assert "\x00" not in dead.topic and "\x00" not in dead.detail


@pytest.mark.parametrize(("sqlstate", "kind"), [
    ("08006", "transient"), ("40001", "transient"), ("53300", "transient"), ("57P01", "transient"),
    ("22P05", "data"), ("23505", "data"), ("54000", "data"),
    ("42P01", "operator"), ("42501", "operator"), ("XX000", "operator"),
])
def test_sqlstate_classes(sqlstate, kind):
    exc = psycopg.errors.lookup(sqlstate)("x")
    assert classify(exc) == kind


def test_lost_connection_without_sqlstate_is_transient():
    assert classify(psycopg.OperationalError("server closed the connection")) == "transient"
    assert classify(ConnectionResetError()) == "transient"


def _item(i: int, mono: float) -> Inbound:
    return Inbound("t", b"", i, 1, 1, 0, mono)


def test_window_releases_a_full_batch_at_once_and_a_partial_one_on_age():
    window = Window(batch_max=3, max_age_s=0.05, max_messages=100_000,
                    max_bytes=2**30)
    now = time.monotonic()
    for i in range(4):
        window.put(_item(i, now))
    assert [x.mid for x in window.take()] == [0, 1, 2]
    started = time.monotonic()
    assert [x.mid for x in window.take()] == [3]  # released by age, not by size
    assert time.monotonic() - started < 1


def test_window_close_wakes_a_waiting_writer():
    window = Window(batch_max=10, max_age_s=60, max_messages=100_000,
                    max_bytes=2**30)
    got: list = []
    t = threading.Thread(target=lambda: got.append(window.take()))
    t.start()
    window.close()
    t.join(5)
    assert got == [[]]



@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "file:///etc/passwd", "rtsp://nvr/ch1", "/snap/1.jpg", "http://",
    "https://nvr/a b.jpg", "https://nvr/\x00.jpg", "HTTPS://nvr/1.jpg"])
@pytest.mark.parametrize("name", ["snapshot_url", "clip_url"])
def test_a_camera_link_that_is_not_http_is_a_schema_dead_letter_naming_it(url, name):
    # The console shows these as links on a worker's phone: http(s) with a host, or nothing.
    out = decoder.decode("fg/v1/CAM-1/event", m.encode(
        m.event("fire_detected", 1, NOW, confidence=0.9, **{name: url})), NOW)
    assert out.events == []
    assert [(d.reason, d.device_id) for d in out.dead] == [("schema", "CAM-1")]
    assert f"fire_detected.{name}" in out.dead[0].detail


def test_camera_links_are_kept_with_the_event():
    links = {"snapshot_url": "https://nvr.example:8443/snap/1.jpg?ch=3&t=1",
             "clip_url": "http://10.0.0.7/clip/1.mp4"}
    out = decoder.decode("fg/v1/CAM-1/event", m.encode(
        m.event("smoke_detected", 1, NOW, confidence=0.8, **links)), NOW)
    assert out.dead == []
    assert json.loads(out.events[0].attrs) == {"confidence": 0.8, **links}
