"""Voice calls through Aliyun's voice service (语音服务, dyvmsapi 2017-05-25): IvrCall.

A page on the `voice` channel is a phone call to the worker's `voice` number: a text-to-
speech template (alerts.voice_tts_code, approved in the provider's console, with the
variables `address` and `level`) played up to three times, and key 1 mapped in MenuKeyMap.
The page id travels as OutId; when the person presses 1 the provider pushes a receipt
(VoiceReport with `dtmf` and `out_id`) to POST /v1/voice/report, and the API acknowledges
the incident for them (api/routes/callbacks.py). The ladder writes voice pages due
[voice] after_s after the rung; the dispatcher drops those whose incident somebody
acknowledged meanwhile, so only the person who has not answered is called.

Requests are the provider's RPC style: form parameters plus the common ones, signed with
HMAC-SHA1 over the canonical query (the provider's "signature version 1.0"). The answer's
Code is "OK" on success; throttling and server errors are worth retrying, the rest (a bad
number, an unapproved template, a wrong key) are not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from alerts.channels.base import ChannelError, Outbound

_PHONE = re.compile(r"\+?86?1\d{10}")
# Codes the provider answers for a busy or throttled account: try again later.
_TRANSIENT = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling", "ServiceUnavailable",
              "InternalError", "isp.SYSTEM_ERROR")


def percent(value: str) -> str:
    """The provider's percent-encoding: RFC 3986 unreserved characters kept."""
    return quote(value, safe="-_.~")


def signature(params: dict[str, str], secret: str, method: str = "POST") -> str:
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent('/')}&{percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunVoiceChannel:
    def __init__(self, name: str, *, url: str, key_id: str, secret: str, show_number: str,
                 tts_code: str, timeout_s: float) -> None:
        self.name = name
        self._url, self._key_id, self._secret = url, key_id, secret
        self._show_number, self._tts_code = show_number, tts_code
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def send(self, page: Outbound) -> None:
        number = re.sub(r"[\s\-()]", "", page.target)
        if not _PHONE.fullmatch(number):
            raise ChannelError(f"{self.name}: {page.target!r} is not a mainland mobile number",
                               permanent=True)
        building = page.payload.get("building") or {}
        level = "确认火警" if page.payload.get("severity") == "confirmed" else "火警预警"
        params = {
            "Action": "IvrCall", "Version": "2017-05-25", "Format": "JSON",
            "AccessKeyId": self._key_id, "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0", "SignatureNonce": secrets.token_hex(16),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "CalledNumber": number.removeprefix("+86").removeprefix("86"),
            "CalledShowNumber": self._show_number, "StartCode": self._tts_code,
            "StartTtsParams": json.dumps({"address": str(building.get("address", "")),
                                          "level": level}, ensure_ascii=False),
            "MenuKeyMap.1.Key": "1", "MenuKeyMap.1.Code": self._tts_code,
            "PlayTimes": "3", "Timeout": "10000", "OutId": str(page.page_id),
        }
        params["Signature"] = signature(params, self._secret)
        try:
            answer = self._client.post(self._url, data=params)
        except httpx.HTTPError as exc:
            raise ChannelError(f"{self.name}: {type(exc).__name__}", permanent=False) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        code = str(body.get("Code", ""))
        if answer.status_code == 200 and code == "OK":
            return
        transient = answer.status_code >= 500 or code in _TRANSIENT
        raise ChannelError(f"{self.name}: HTTP {answer.status_code} {code or '(no code)'} "
                           f"{str(body.get('Message', ''))[:200]}", permanent=not transient)

    def close(self) -> None:
        self._client.close()
