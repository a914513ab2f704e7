"""Voice calls and SMS replies acknowledge (issue 16): a person whose page nobody has
acknowledged is called after the rules' [voice] after_s through a double of Aliyun's voice
API (it checks the request's signature as the provider documents it); pressing 1 comes back
on the provider's receipt push and acknowledges the incident. A call not yet due when
somebody acknowledges is never placed. An SMS reply "收到" acknowledges too. Real broker,
database, alert core and API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import queue
import threading
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import pytest

from alerts import loop
from api.app import create_app
from devices.broker import NoBrokerAuth
from tests.alert_live import ThreadedAlerts, alert_settings, send_alarm, shipped_rules
from tests.alert_support import alarm, build_ward, record
from tests.api_support import TestClient
from tests.helpers import Publisher, wait_for_count

KEY, SECRET, TOKEN = "LTAI-test", "s3cret-key", "cb-token-123"
NUMBERS = {"gw1": "+86 138 0000 0001", "gl1": "+86 138 0000 0002"}


class AliyunVoice(http.server.ThreadingHTTPServer):
    """Speaks dyvmsapi's RPC: a form POST signed with HMAC-SHA1 over the canonical query
    (signature version 1.0); answers {"Code": "OK", "CallId": ...} or the provider's
    SignatureDoesNotMatch."""

    def __init__(self) -> None:
        self.calls: queue.Queue[dict[str, str]] = queue.Queue()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"]))
                                      .decode(), keep_blank_values=True))
                ok = form.pop("Signature", "") == _sign(form) and form["AccessKeyId"] == KEY
                answer = ({"Code": "OK", "CallId": f"call-{form['OutId']}", "RequestId": "r"}
                          if ok else {"Code": "SignatureDoesNotMatch", "Message": "bad"})
                if ok:
                    server.calls.put(form)
                body = json.dumps(answer).encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def _sign(form: dict[str, str]) -> str:
    enc = lambda s: quote(s, safe="-_.~")  # noqa: E731 (the provider's percent-encoding)
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(form.items()))
    to_sign = f"POST&%2F&{enc(query)}"
    return base64.b64encode(hmac.new(f"{SECRET}&".encode(), to_sign.encode(),
                                     hashlib.sha1).digest()).decode()


@pytest.fixture
def voice(make_settings, uid, db, tmp_path):
    provider = AliyunVoice()
    build_ward(db, around=datetime.now(UTC),
               channels={w: {"voice": n, "sms": n} for w, n in NUMBERS.items()})

    def settings(after_s: int):
        return alert_settings(make_settings, uid, rules_file=shipped_rules(tmp_path, 600, after_s),
                              voice_url=provider.url, voice_access_key_id=KEY,
                              voice_access_key_secret=SECRET, voice_show_number="057100001",
                              voice_tts_code="TTS_100001", voice_callback_token=TOKEN)
    yield provider, settings
    provider.shutdown()


def test_an_unanswered_page_is_called_and_pressing_1_acknowledges(voice, uid, db):
    provider, make = voice
    settings = make(after_s=1)
    core = ThreadedAlerts(settings).start()
    device = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    try:
        send_alarm(device, settings, "SD-1")
        calls = {provider.calls.get(timeout=30)["CalledNumber"]: None for _ in range(2)}
    finally:
        device.close()
        core.stop()
    assert sorted(calls) == ["13800000001", "13800000002"]
    page = db.execute("SELECT id FROM pages WHERE channel = 'voice' AND worker_id = 'gw1'"
                      ).fetchone()[0]
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        receipt = [{"call_id": f"call-{page}", "out_id": str(page), "dtmf": "1",
                    "status_code": "200000", "status_msg": "用户接听"}]
        assert client.post("/v1/voice/report?token=wrong", json=receipt).status_code == 404
        got = client.post(f"/v1/voice/report?token={TOKEN}", json=receipt)
        assert got.status_code == 200 and got.json() == {"code": 0, "msg": "成功"}
        # A receipt for no page of ours, one with a NUL jsonb cannot hold: kept, still 成功.
        stray = [{"out_id": "999999", "dtmf": "1"}, {"out_id": "x\u0000", "dtmf": "1"}]
        got = client.post(f"/v1/voice/report?token={TOKEN}", json=stray)
        assert got.status_code == 200 and got.json() == {"code": 0, "msg": "成功"}
    assert db.execute("SELECT state, acknowledged_by FROM incidents").fetchone() == (
        "acknowledged", "voice:gw1")
    assert db.execute("SELECT source, reason, entry->>'out_id' FROM callback_rejects"
                      " ORDER BY id").fetchall() == [
        ("voice_report", "no voice page has this out_id", "999999"),
        ("voice_report", "no voice page has this out_id", None)]


def test_a_call_not_yet_due_when_somebody_acknowledges_is_never_placed(voice, uid, db):
    provider, make = voice
    settings = make(after_s=3)
    core = ThreadedAlerts(settings).start()
    device = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    url = settings.database.url
    try:
        send_alarm(device, settings, "SD-1")
        assert wait_for_count(url, "SELECT count(*) FROM pages WHERE channel = 'voice'", 2) == 2
        incident = db.execute("SELECT id FROM incidents").fetchone()[0]
        loop.acknowledge(db, incident, "api:gw1-phone")
        assert wait_for_count(url, "SELECT count(*) FROM pages WHERE channel = 'voice'"
                                   " AND status = 'cancelled'", 2) == 2
    finally:
        device.close()
        core.stop()
    assert provider.calls.empty()
    assert {r[0] for r in db.execute("SELECT last_error FROM pages WHERE channel = 'voice'")} \
        == {"somebody acknowledged the incident before the call was due"}


def test_an_sms_reply_acknowledges_the_newest_open_incident(voice, db):
    _, make = voice
    settings = make(after_s=45)
    now = datetime.now(UTC)
    incident = record(db, [alarm("SD-1", 1, now)], now).opened[0]
    with TestClient(create_app(settings, broker=NoBrokerAuth())) as client:
        got = client.post(f"/v1/sms/reply?token={TOKEN}", json=[
            {"phone_number": "13800000009", "content": "收到"},       # nobody's number
            {"phone_number": "13800000001", "content": "收到，马上到"}])
        assert got.status_code == 200
    assert db.execute("SELECT state, acknowledged_by FROM incidents WHERE id = %s",
                      [incident]).fetchone() == ("acknowledged", "sms:gw1")
    # The reply from nobody's number is kept with its reason, not just logged.
    assert db.execute("SELECT source, entry->>'phone_number', reason LIKE 'no worker%%'"
                      " FROM callback_rejects").fetchall() == [
        ("sms_reply", "13800000009", True)]
