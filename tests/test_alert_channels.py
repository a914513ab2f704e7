"""Webhook and Apprise channels against a real HTTP server on 127.0.0.1 that records what
arrives and answers scripted statuses. Nothing here reaches beyond this machine."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apprise
import pytest

from alerts.channels import (
    AppriseChannel,
    ChannelError,
    Outbound,
    SmsChannel,
    WebhookChannel,
    build_channels,
    verify_signature,
)
from alerts.channels.webhook import retry_after_s, signature_header
from runtime.settings import AlertsSettings

SECRET = "s3cret-for-tests"
PAYLOAD = {"title": "火警：3号楼", "body": "烟感报警，请立即处理 / smoke alarm, building 3",
           "incident_id": 42, "severity": "fire"}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next scripted Reply (200 when the script is empty)."""

    def __init__(self) -> None:
        self.script: queue.Queue[Reply] = queue.Queue()
        self.seen: queue.Queue[Seen] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.seen.put(Seen(self.path, dict(self.headers), body))
                try:
                    reply = receiver.script.get_nowait()
                except queue.Empty:
                    reply = Reply()
                if reply.hold is not None:
                    reply.hold.wait(10)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 64  # the default 5 drops concurrent SYNs: false timeouts

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, *replies: Reply) -> None:
        for reply in replies:
            self.script.put(reply)

    def next(self) -> Seen:
        return self.seen.get(timeout=10)

    def count(self) -> int:
        return self.seen.qsize()


@pytest.fixture
def rx():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def refused_port():
    """A port bound but not listening: connecting to it is refused, and nobody else can
    take it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def page(target: str, channel: str = "webhook", page_id: int = 7, **payload) -> Outbound:
    return Outbound(page_id=page_id, key="incident-42", channel=channel, target=target,
                    payload=payload or PAYLOAD)


@pytest.fixture
def webhook():
    channel = WebhookChannel("webhook", secret=SECRET, timeout_s=0.5)
    yield channel
    channel.close()


def fails(channel, outbound: Outbound) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        channel.send(outbound)
    return caught.value


# --- webhooks ------------------------------------------------------------------------------

def test_webhook_arrives_signed_compact_utf8_with_keys(rx, webhook):
    webhook.send(page(f"{rx.url}/hook"))
    seen = rx.next()
    assert seen.path == "/hook"
    assert seen.body == json.dumps(PAYLOAD, ensure_ascii=False, separators=(",", ":")).encode()
    assert "火警".encode() in seen.body
    assert json.loads(seen.body) == PAYLOAD
    assert seen.headers["Content-Type"] == "application/json; charset=utf-8"
    assert seen.headers["X-Firegrid-Page-Id"] == "7"
    assert seen.headers["X-Firegrid-Key"] == "incident-42"
    assert seen.headers["Idempotency-Key"] == "page-7"

    signature = seen.headers["X-Firegrid-Signature"]
    assert verify_signature(SECRET, signature, seen.body)
    tampered = seen.body.replace("3号楼".encode(), "4号楼".encode())
    assert tampered != seen.body
    assert not verify_signature(SECRET, signature, tampered)
    assert not verify_signature("another-secret", signature, seen.body)


def test_signature_timestamp_tolerance():
    body = b'{"a":1}'
    header = signature_header(SECRET, body, 1_000_000)
    assert verify_signature(SECRET, header, body, now=1_000_299)
    assert not verify_signature(SECRET, header, body, now=1_000_301)
    assert not verify_signature(SECRET, "v1=" + header.split("v1=")[1], body, now=1_000_000)
    assert not verify_signature(SECRET, "garbage", body)
    # A rotated secret: the receiver accepts either of two signatures.
    both = header + "," + signature_header("old", body, 1_000_000).split(",")[1]
    assert verify_signature("old", both, body, now=1_000_000)


def test_webhook_without_secret_is_permanent_and_sends_nothing(rx):
    channel = WebhookChannel("webhook", secret=None, timeout_s=0.5)
    error = fails(channel, page(f"{rx.url}/hook"))
    assert error.permanent and "alerts.webhook_secret" in str(error)
    channel.close()
    rx.answer(Reply(200))
    WebhookChannel("probe", secret=SECRET, timeout_s=0.5).send(page(f"{rx.url}/probe"))
    assert rx.next().path == "/probe"  # the first request this server ever saw


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
def test_webhook_transient_statuses(rx, webhook, status):
    rx.answer(Reply(status))
    error = fails(webhook, page(f"{rx.url}/hook"))
    assert not error.permanent and str(status) in str(error)
    assert error.retry_after_s is None


def test_webhook_429_honours_retry_after(rx, webhook):
    rx.answer(Reply(429, {"Retry-After": "7"}))
    error = fails(webhook, page(f"{rx.url}/hook"))
    assert not error.permanent and error.retry_after_s == 7


def test_retry_after_as_http_date():
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < retry_after_s(later) <= 120
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_webhook_permanent_statuses(rx, webhook, status):
    rx.answer(Reply(status))
    error = fails(webhook, page(f"{rx.url}/hook"))
    assert error.permanent and str(status) in str(error)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_webhook_redirect_is_permanent_and_not_followed(rx, webhook, status):
    rx.answer(Reply(status, {"Location": f"{rx.url}/elsewhere"}))
    error = fails(webhook, page(f"{rx.url}/hook"))
    assert error.permanent and "not followed" in str(error)
    assert rx.next().path == "/hook"
    rx.answer(Reply(200))
    webhook.send(page(f"{rx.url}/after"))
    assert rx.next().path == "/after"  # nothing went to /elsewhere in between


def test_webhook_read_timeout_is_transient(rx):
    release = threading.Event()
    rx.answer(Reply(200, hold=release))
    channel = WebhookChannel("webhook", secret=SECRET, timeout_s=0.3)
    try:
        error = fails(channel, page(f"{rx.url}/slow"))
        assert not error.permanent and "timed out" in str(error)
    finally:
        release.set()
        channel.close()


def test_webhook_connection_refused_is_transient(webhook, refused_port):
    error = fails(webhook, page(f"http://127.0.0.1:{refused_port}/hook"))
    assert not error.permanent and "ConnectError" in str(error)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "not a url", "http://", "",
                                 "http://[::1/hook"])
def test_webhook_bad_url_is_permanent(webhook, url):
    assert fails(webhook, page(url)).permanent


def test_webhook_concurrent_sends_from_threads(rx, webhook):
    pages = [page(f"{rx.url}/hook", page_id=i) for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(webhook.send, pages))
    seen = [rx.next() for _ in pages]
    assert sorted(int(s.headers["X-Firegrid-Page-Id"]) for s in seen) == list(range(20))
    assert all(verify_signature(SECRET, s.headers["X-Firegrid-Signature"], s.body)
               for s in seen)


# --- Apprise: chat robots, e-mail, SMS -----------------------------------------------------

def json_url(rx: Receiver, path: str) -> str:
    return f"json://127.0.0.1:{rx.port}{path}"


def test_apprise_delivers_title_and_body(rx):
    channel = AppriseChannel("wecom", timeout_s=2)
    channel.send(page(json_url(rx, "/robot"), channel="wecom"))
    seen = rx.next()
    assert seen.path == "/robot"
    message = json.loads(seen.body)
    assert message["title"] == PAYLOAD["title"]
    assert message["message"] == PAYLOAD["body"]


def test_apprise_server_error_is_transient_with_the_reason(rx):
    rx.answer(Reply(500))
    error = fails(AppriseChannel("dingtalk", timeout_s=2),
                  page(json_url(rx, "/robot"), channel="dingtalk"))
    assert not error.permanent and "500" in str(error)


def test_apprise_connection_refused_is_transient(refused_port):
    error = fails(AppriseChannel("feishu", timeout_s=2),
                  page(f"json://127.0.0.1:{refused_port}/x", channel="feishu"))
    assert not error.permanent


def test_apprise_timeout_is_transient(rx):
    release = threading.Event()
    rx.answer(Reply(200, hold=release))
    try:
        started = time.monotonic()
        error = fails(AppriseChannel("feishu", timeout_s=0.5),
                      page(json_url(rx, "/slow"), channel="feishu"))
        assert not error.permanent
        assert time.monotonic() - started < 5
    finally:
        release.set()


@pytest.mark.parametrize("url", ["nonsense://x", "not a url", "dingtalk://", "", "json://"])
def test_apprise_unparsable_url_is_permanent(url):
    channel = AppriseChannel("dingtalk", timeout_s=2)
    assert not channel.accepts(url)
    error = fails(channel, page(url, channel="dingtalk"))
    assert error.permanent


def test_apprise_page_without_text_is_permanent(rx):
    error = fails(AppriseChannel("wecom", timeout_s=2),
                  Outbound(page_id=1, key="incident-1", channel="wecom",
                           target=json_url(rx, "/x"), payload={"incident_id": 1}))
    assert error.permanent


@pytest.mark.parametrize("url", [
    "wecombot://0123456789abcdef-robot-key",
    "dingtalk://0123456789abcdef0123456789abcdef/",
    "feishu://0123456789abcdef-token",
    "mailto://alerts:password@example.com?to=duty@example.com",
])
def test_chat_and_email_urls_are_parsed(url):
    assert AppriseChannel("chat", timeout_s=2).accepts(url)
    assert apprise.Apprise().add(url)  # and by apprise's own defaults too


def test_sms_fills_the_phone_into_the_provider_url(rx):
    channel = SmsChannel("sms", url_template=json_url(rx, "/sms/{phone}"), timeout_s=2)
    channel.send(page("+86 138-0013-8000", channel="sms"))
    assert rx.next().path == "/sms/+8613800138000"


@pytest.mark.parametrize("phone", ["", "12", "138/../../admin", "x@evil.example", "1380013800O"])
def test_sms_rejects_what_is_not_a_phone_number(rx, phone):
    channel = SmsChannel("sms", url_template=json_url(rx, "/sms/{phone}"), timeout_s=2)
    assert fails(channel, page(phone, channel="sms")).permanent
    assert rx.count() == 0


# --- wiring --------------------------------------------------------------------------------

def test_build_channels_from_settings(rx):
    bare = build_channels(AlertsSettings())
    assert set(bare) == {"webhook", "wecom", "dingtalk", "feishu", "email"}
    assert fails(bare["webhook"], page(f"{rx.url}/hook")).permanent  # no secret

    full = build_channels(AlertsSettings(
        webhook_secret=SECRET, fire_service_url=f"{rx.url}/119",
        sms_url=json_url(rx, "/sms/{phone}"), http_timeout_s=2))
    assert set(full) == {"webhook", "fire_service", "sms", "wecom", "dingtalk", "feishu",
                         "email"}
    # The fire-service hook always goes to the configured address.
    full["fire_service"].send(page("http://127.0.0.1:1/ignored", channel="fire_service"))
    seen = rx.next()
    assert seen.path == "/119"
    assert verify_signature(SECRET, seen.headers["X-Firegrid-Signature"], seen.body)
    full["sms"].send(page("13800138000", channel="sms"))
    assert rx.next().path == "/sms/13800138000"
    for channel in [*bare.values(), *full.values()]:
        channel.close()
