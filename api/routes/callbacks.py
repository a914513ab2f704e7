"""Acknowledging without the app: a key pressed on a voice call, an SMS reply.

    POST /v1/voice/report?token=T   the voice provider's receipt push (Aliyun VoiceReport, a
                                    JSON list): `dtmf` containing 1 on a call whose `out_id`
                                    is a voice page acknowledges that page's incident
    POST /v1/sms/reply?token=T      the SMS provider's reply push (Aliyun SmsUp, a JSON list):
                                    "1", "收到", "确认" or "接警" from a worker's number
                                    acknowledges the newest unacknowledged incident paged to
                                    them in the last two hours

The providers sign nothing that we could check, so the URL carries a secret token
(alerts.voice_callback_token, compared in constant time); without one configured these
routes are not there (404). Both answer the provider's success shape at once, whatever the
entries say: a provider retries a non-success, and an entry we cannot use (an unknown page,
a resolved incident, a number of nobody) will not become usable by retrying. Each such
entry is kept in `callback_rejects` with its reason (and logged); entries that ask for
nothing (a call answered without pressing 1, a reply that is not a yes) are not kept.
The acknowledgement is the loop's (alerts/loop.py), logged with the actor `voice:<worker>`
or `sms:<worker>`.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import psycopg
from fastapi import APIRouter, Body, HTTPException, Query
from psycopg.types.json import Jsonb

from alerts import loop
from alerts.errors import Conflict, NotFound
from api.deps import AppSettings, Conn

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["callbacks"], include_in_schema=True)

_OK = {"code": 0, "msg": "成功"}
_YES = ("1", "收到", "确认", "接警")
Entries = list[dict[str, Any]]


def _check(settings: AppSettings, token: str) -> None:
    expected = settings.alerts.voice_callback_token
    if expected is None or not secrets.compare_digest(token.encode(),
                                                      expected.get_secret_value().encode()):
        raise HTTPException(404, "Not Found")


@router.post("/voice/report", summary="电话按1接警 The voice provider's receipts: key 1 "
                                      "acknowledges")
def voice_report(settings: AppSettings, conn: Conn, token: str = Query(max_length=200),
                 entries: Entries = Body(max_length=1000)) -> dict[str, Any]:
    _check(settings, token)
    for entry in entries:
        out_id, dtmf = str(entry.get("out_id") or ""), str(entry.get("dtmf") or "")
        if "1" not in dtmf:
            continue                          # answered without pressing 1, or not answered
        page = (conn.execute("SELECT incident_id, worker_id FROM pages WHERE id = %s"
                             " AND channel = 'voice'", [int(out_id)]).fetchone()
                if out_id.isdigit() and len(out_id) < 19 else None)
        if page is None:
            _reject(conn, "voice_report", entry, "no voice page has this out_id")
            continue
        _acknowledge(conn, "voice_report", entry, page[0], f"voice:{page[1]}",
                     "电话按1接警 pressed 1 on the call")
    return _OK


@router.post("/sms/reply", summary="短信回复接警 SMS replies: 1 or 收到 acknowledges")
def sms_reply(settings: AppSettings, conn: Conn, token: str = Query(max_length=200),
              entries: Entries = Body(max_length=1000)) -> dict[str, Any]:
    _check(settings, token)
    for entry in entries:
        content = str(entry.get("content") or "").strip()
        number = re.sub(r"\D", "", str(entry.get("phone_number") or ""))[-11:]
        if not content.startswith(_YES) or len(number) != 11:
            continue
        row = conn.execute("""
            SELECT p.incident_id, w.id FROM workers w
            JOIN pages p ON p.worker_id = w.id AND p.created_at > now() - interval '2 hours'
            JOIN incidents i ON i.id = p.incident_id AND i.state IN ('raised', 'notified')
            WHERE right(regexp_replace(coalesce(w.channels->>'sms', w.phone, ''), '\\D', '',
                                       'g'), 11) = %s
            ORDER BY p.created_at DESC LIMIT 1""", [number]).fetchone()
        if row is None:
            _reject(conn, "sms_reply", entry, "no worker with this number was paged for an"
                    " open, unacknowledged incident in the last two hours")
            continue
        _acknowledge(conn, "sms_reply", entry, row[0], f"sms:{row[1]}",
                     f"短信回复接警 replied {content[:20]!r}")
    return _OK


def _acknowledge(conn: Conn, source: str, entry: dict[str, Any], incident_id: int,
                 actor: str, note: str) -> None:
    try:
        loop.acknowledge(conn, incident_id, actor, note)
    except (Conflict, NotFound) as exc:     # resolved meanwhile: nothing left to take
        _reject(conn, source, entry, f"{actor}: incident {incident_id} not acknowledged: {exc}")


def _reject(conn: Conn, source: str, entry: dict[str, Any], reason: str) -> None:
    log.warning("%s entry not usable: %s", source, reason)
    insert = "INSERT INTO callback_rejects (source, reason, entry) VALUES (%s, %s, %s)"
    try:
        conn.execute(insert, [source, reason, Jsonb(entry)])
    except psycopg.DataError:   # jsonb refuses some JSON (a \u0000 in a string)
        conn.execute(insert, [source, reason, Jsonb({"unstorable": repr(entry)[:4000]})])
