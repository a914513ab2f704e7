"""firegrid's own MQTT sessions over TLS (settings.mqtt.tls), against a private Mosquitto
with a TLS listener that asks every client for a certificate. The devices publish on its
plain listener, as the tests' devices always do; firegrid reads, acknowledges and pages on
the TLS one.

The certificates come from runtime.localsvc.make_tls_files (openssl, as deploy/compose/up
makes a site's): a CA, the broker's certificate for 127.0.0.1, a client certificate for
firegrid, and a second CA that signed nothing the broker shows.
"""

from __future__ import annotations

import queue
import ssl
import subprocess

import mqtt5
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from alerts.publisher import PagePublisher
from runtime.localsvc import (
    Mosquitto,
    TlsFiles,
    free_port,
    make_state_dir,
    make_tls_files,
    tls_listener,
)
from runtime.settings import AlertsSettings, MqttSettings, load_settings
from simulators import messages as m
from tests.helpers import Publisher, ThreadedIngest, required_tool, wait_for_count
from transport import link


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TlsFiles:
    required_tool("openssl", "apt-get install openssl (./dev test does)")
    return make_tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(certs):
    """(broker, TLS port): plain listener on broker.port, TLS with client certificates on
    the other."""
    port = free_port()
    server = Mosquitto(make_state_dir("fg-test-mq-tls-"),
                       extra_conf=tls_listener(port, certs)).start()
    yield server, port
    server.destroy()


def _tls(certs: TlsFiles, port: int, **over: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "tls": True, "tls_ca_file": certs.ca,
            "tls_cert_file": certs.client_cert, "tls_key_file": certs.client_key, **over}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_ingest_over_tls_stores_and_acknowledges(make_settings, tls_broker, certs, db_url,
                                                 uid, protocol):
    broker, port = tls_broker
    # A window of 20: the broker sends the 21st message only after a PUBACK came back over
    # TLS, written by the writer thread while the network thread reads the same connection.
    settings = make_settings(mqtt=_tls(certs, port, protocol=protocol),
                             ingest={"inflight_window": 20, "batch_max_rows": 7})
    prefix = settings.mqtt.topic_prefix
    ts = m.now_ms() - 60_000
    ingest = ThreadedIngest(settings).start()
    devices = Publisher(broker.host, broker.port, f"pub-{uid}")
    try:
        devices.publish_all([(m.topic(f"SD-{i % 13}", "telemetry", prefix),
                              m.encode(m.smoke_status(i, ts + i))) for i in range(300)])
        assert wait_for_count(db_url, "SELECT count(*) FROM readings", 300) == 300
        # On one connection: a stream the broker found corrupt ("bad record mac") would
        # have been dropped, and the redelivery after the reconnect would hide it.
        assert ingest.service.consumer.generation == 1
    finally:
        devices.close()
        ingest.stop()


def test_pages_go_out_over_tls(tls_broker, certs, uid):
    broker, port = tls_broker
    alerts = AlertsSettings(page_topic_prefix=f"fg/{uid}/workers", client_id=f"alerts-{uid}")
    publisher = PagePublisher(MqttSettings(**_tls(certs, port)), alerts)
    phone = _Phone(broker.host, broker.port, f"fg/{uid}/workers/+/pages")
    publisher.start()
    try:
        assert publisher.connected.wait(20)
        pages = [(publisher.topic(f"W{i}"), f"page {i}".encode()) for i in range(500)]
        assert publisher.publish_all(pages, timeout_s=20) == [True] * 500
        got = {phone.next() for _ in range(500)}
        assert got == set(pages)
    finally:
        publisher.stop()
        phone.close()


def test_a_broker_certificate_from_another_ca_is_refused(tls_broker, certs, uid):
    _, port = tls_broker
    settings = MqttSettings(**_tls(certs, port, tls_ca_file=certs.other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        link.connect(settings, mqtt5.ConnectPacket(f"refused-{uid}"))


def test_a_broker_certificate_for_another_name_is_refused(tls_broker, certs, uid):
    _, port = tls_broker    # its certificate names IP:127.0.0.1, not localhost
    settings = MqttSettings(**_tls(certs, port, host="localhost"))
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        link.connect(settings, mqtt5.ConnectPacket(f"misnamed-{uid}"))


def test_without_a_client_certificate_the_broker_refuses(tls_broker, certs, uid):
    _, port = tls_broker
    settings = MqttSettings(**_tls(certs, port, tls_cert_file=None, tls_key_file=None))
    # The broker's alert (certificate required), or its reset when it closed before our
    # handshake read the alert; never a refused or timed-out TCP connect.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        link.connect(settings, mqtt5.ConnectPacket(f"no-cert-{uid}"))


def test_tls_settings_are_checked_before_any_connection(certs, tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="tls is false"):
        MqttSettings(tls_ca_file=certs.ca)
    with pytest.raises(ValidationError, match="go together"):
        MqttSettings(tls=True, tls_cert_file=certs.client_cert)
    with pytest.raises(ValidationError, match="no such file"):
        MqttSettings(tls=True, tls_ca_file=tmp_path / "missing.crt")
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    with pytest.raises(ValidationError, match="cannot be used"):
        MqttSettings(tls=True, tls_ca_file=tmp_path / "not-a-cert.pem")
    with pytest.raises(ValidationError, match="cannot be used"):   # key of another cert
        MqttSettings(tls=True, tls_cert_file=certs.client_cert,
                     tls_key_file=certs.server_key)
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs.client_key), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True)
    with pytest.raises(ValidationError, match="encrypted with a passphrase"):
        MqttSettings(tls=True, tls_cert_file=certs.client_cert, tls_key_file=encrypted)
    # The env examples show the file settings empty: that is "not set".
    monkeypatch.setenv("FIREGRID_MQTT__TLS_CA_FILE", "")
    assert load_settings(None).mqtt.tls_ca_file is None


class _Phone:
    """A plain subscriber: what reached the workers' topics."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self._got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = queue.Queue[int]()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = lambda c, u, msg: self._got.put((msg.topic, msg.payload))
        self._client.on_subscribe = lambda *a: subscribed.put(1)
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.connect(host, port)
        self._client.loop_start()
        subscribed.get(timeout=20)

    def next(self) -> tuple[str, bytes]:
        return self._got.get(timeout=20)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
