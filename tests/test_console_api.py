"""The duty console's server side: logging in for a session cookie that reads and acts like
the token, with the same area; the live event stream fed by the NOTIFY trigger, confined to
each caller's area; bad, expired and revoked credentials; disconnects and a database
restart. The stream tests run the real API under uvicorn: an event stream never ends, which
the in-process TestClient cannot read."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.auth import CONSOLE_HEADER, SESSION_COOKIE, create_token
from devices.broker import NoBrokerAuth
from runtime.settings import Settings
from tests.api_support import TestClient, api, grid, settings  # noqa: F401 (fixtures)
from tests.test_alert_loop import open_incident, place  # noqa: F401 (fixture)
from tests.test_api_incidents import fires, people  # noqa: F401 (fixtures)

ACT = {CONSOLE_HEADER: "1"}


def until(check: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    """For state with no event to wait on (a server thread's counters)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class LiveApi:
    """The real API (create_app) under uvicorn in a thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, broker=NoBrokerAuth())
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveApi:
        self.thread.start()
        until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn")
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def hub(self):
        return self.app.state.console_hub

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def live(settings):
    server = LiveApi(settings).start()
    yield server
    server.stop()


class Stream:
    """GET /v1/incidents/events on a socket of its own, read in a thread; `take` returns the
    next event of a kind. close() shuts the socket as a closed browser tab does."""

    def __init__(self, base: str, *, token: str | None = None, session: str | None = None):
        host, port = base.removeprefix("http://").split(":")
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if session:
            headers["Cookie"] = f"{SESSION_COOKIE}={session}"
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.request("GET", "/v1/incidents/events", headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.events: queue.Queue = queue.Queue()
        if self.status == 200:
            self.conn.sock.settimeout(None)
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = json.loads(self.response.read())

    def _read(self) -> None:
        kind, data = "message", []
        try:
            while line := self.response.readline():
                line = line.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line:
                    if data:
                        self.events.put((kind, json.loads("\n".join(data))))
                    kind, data = "message", []
        except Exception:   # closed under it, in whatever way http.client says
            pass
        self.events.put(("closed", None))

    def take(self, kind: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            got, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if got == kind:
                return data
            assert got != "closed", f"stream closed while waiting for {kind}"

    def incidents(self, timeout: float = 15) -> dict:
        return self.take("incident", timeout)

    def close(self) -> None:
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def login(client, token: str) -> httpx.Response:
    return client.post("/v1/console/login", json={"token": token}, headers=ACT)


def with_cookie(client, session: str):
    """The client as a browser holding this session cookie (and no other)."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, session)
    return client


def cookie_of(response: httpx.Response) -> SimpleCookie:
    jar = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


# --- login and the cookie ---------------------------------------------------------------------

def test_login_gives_a_session_cookie_that_reads_and_acts_as_the_token(people, fires, db):
    g1, g2 = fires
    client = people.client
    r = login(client, people.tokens["wang"])
    assert r.status_code == 200, r.text
    me = r.json()
    assert (me["name"], me["role"], me["worker_id"], me["can_act"]) == (
        "wang", "grid_worker", "W-G1", True)
    assert me["areas"] == [{"level": "grid", "id": "G1", "name": "Grid 1"}]
    assert "real_fire" in me["causes"]
    morsel = cookie_of(r)[SESSION_COOKIE]
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
    assert int(morsel["max-age"]) == 7 * 24 * 3600
    session = morsel.value
    assert people.tokens["wang"] not in r.headers["set-cookie"]
    # Only the session's digest is stored.
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (1,)

    assert client.get("/v1/console/me").json()["worker_id"] == "W-G1"
    assert [i["id"] for i in client.get("/v1/incidents").json()["items"]] == [g1]
    # A cookie alone does not change anything: the page adds its header.
    r = client.post(f"/v1/incidents/{g1}/acknowledge", json={"note": "收到"})
    assert r.status_code == 403 and CONSOLE_HEADER in r.json()["detail"]
    r = client.post(f"/v1/incidents/{g1}/acknowledge", json={"note": "收到"}, headers=ACT)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("acknowledged", "api:wang")
    # The grid next door does not exist for this cookie either.
    assert client.get(f"/v1/incidents/{g2}").status_code == 404
    assert client.post(f"/v1/incidents/{g2}/acknowledge", headers=ACT).status_code == 404
    assert db.execute("SELECT state FROM incidents WHERE id = %s", [g2]).fetchone() \
        == ("notified",)

    r = client.post("/v1/console/logout", headers=ACT)
    assert r.status_code == 204
    assert cookie_of(r)[SESSION_COOKIE].value == ""
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (0,)
    r = with_cookie(client, session).get("/v1/incidents")
    assert r.status_code == 401 and "log in again" in r.json()["detail"]


def test_bad_expired_and_revoked_credentials_are_refused_clearly(people, fires, db):
    client = people.client
    for token in ("fg_not-a-real-token", " "):
        r = login(client, token)
        assert r.status_code in (401, 422), r.text
    assert login(client, "fg_not-a-real-token").json() == {"detail": "unknown or revoked token"}
    # No header: a cross-site form cannot log a browser in.
    r = client.post("/v1/console/login", json={"token": people.tokens["wang"]})
    assert r.status_code == 403
    # A token bound to no worker covers no area: refused at login, with the reason.
    r = login(client, people.tokens["grid_worker"])
    assert r.status_code == 403 and "belongs to no worker" in r.json()["detail"]
    assert login(client, people.tokens["admin"]).status_code == 200

    def session_for(name: str) -> str:
        r = login(client, people.tokens[name])
        assert r.status_code == 200, r.text
        client.cookies.clear()
        return cookie_of(r)[SESSION_COOKIE].value

    def status(session: str, **headers) -> int:
        return with_cookie(client, session).get("/v1/incidents", headers=headers).status_code

    expired = session_for("wang")
    assert status(expired) == 200
    db.execute("UPDATE console_sessions SET created_at = now() - interval '8 days',"
               " expires_at = now() - interval '1 day'")
    assert status(expired) == 401
    # Revoking the token ends its live sessions at once.
    live = session_for("liu")
    assert status(live) == 200
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'liu'")
    assert status(live) == 401
    assert login(client, people.tokens["liu"]).status_code == 401
    # So does setting the worker inactive.
    sun = session_for("sun")
    db.execute("UPDATE workers SET active = false WHERE id = 'D-C1'")
    assert status(sun) == 401
    # A bearer header wins over the cookie, and a bad one is not rescued by it.
    good = session_for("zhou")
    assert status(good, Authorization="Bearer fg_not-a-real-token") == 401
    # The field technician reads but does not act.
    tech = session_for("gao")
    r = with_cookie(client, tech).post(f"/v1/incidents/{fires[0]}/acknowledge", headers=ACT)
    assert r.status_code == 403


def test_the_service_worker_keeps_every_file_of_the_page():
    """Offline, the page loads only what the service worker cached at install: a module
    left out of its list breaks the whole page (an import that fails stops every script)."""
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "api" / "console"
    listed = re.search(r"const SHELL = \[(.*?)\];", (folder / "sw.js").read_text(), re.S)
    assert listed, "sw.js has no SHELL list"
    shell = set(re.findall(r'"([^"]+)"', listed.group(1)))
    assert shell == {"./"} | {f.name for f in folder.iterdir() if f.name != "sw.js"}


def test_the_console_has_words_for_everything_the_alert_core_writes():
    """Every log action, page channel, rule, cause, role and device state that the database
    allows has its words in both languages, so the console never shows a raw key such as
    `a_handed_over` when the alert core learns a new step (the last migration that sets a
    CHECK list wins)."""
    import re
    from pathlib import Path

    from alerts import loop
    from alerts.rules import RULES
    from devices.models import DEVICE_STATES, WORKER_ROLES

    root = Path(__file__).resolve().parent.parent
    sql = "\n".join(p.read_text() for p in sorted((root / "runtime/migrations").glob("*.sql")))

    def last_list(column: str) -> list[str]:
        found = re.findall(rf"CHECK \({column} IN \(([^)]*)\)\)", sql)
        return re.findall(r"'([a-z_0-9]+)'", found[-1])

    i18n = (root / "api/console/i18n.js").read_text()
    zh, en = i18n.split("\n  en: {", 1)
    wanted = ([f"a_{a}" for a in last_list("action")]
              + [f"ch_{c}" for c in last_list("channel") if c != "fire_service"]
              + [f"rule_{r}" for r in RULES] + list(loop.CAUSES) + list(WORKER_ROLES)
              + [f"ds_{d}" for d in DEVICE_STATES])
    for words, name in ((zh, "zh"), (en, "en")):
        missing = [k for k in wanted if not re.search(rf"\b{k}: ", words)]
        assert not missing, f"{name} has no words for {missing}"


def test_the_page_is_served_with_its_security_headers(api):
    r = api.client.get("/console/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    for asset in ("console.js", "console.css"):
        assert api.client.get(f"/console/{asset}").status_code == 200


# --- the live stream --------------------------------------------------------------------------

def test_the_stream_carries_every_writers_changes_only_within_each_area(
        live, people, fires, db):
    g1, g2 = fires
    tokens = people.tokens
    with httpx.Client(base_url=live.url) as client:
        wang_session = cookie_of(login(client, tokens["wang"]))[SESSION_COOKIE].value
    wang = Stream(live.url, session=wang_session)     # grid G1, by cookie as the page does
    liu = Stream(live.url, token=tokens["liu"])       # grid G2
    sun = Stream(live.url, token=tokens["sun"])       # community C1: both grids
    streams = (wang, liu, sun)
    try:
        for s in streams:
            assert s.status == 200
            assert s.response.getheader("content-type").startswith("text/event-stream")
            s.take("hello")
        # The first console starts the listener; once it listens, every change is heard.
        until(lambda: live.hub.live, what="the listener")

        # The API writes (wang acknowledges G1's incident).
        r = httpx.post(f"{live.url}/v1/incidents/{g1}/acknowledge",
                       headers={"Authorization": f"Bearer {tokens['wang']}"})
        assert r.status_code == 200, r.text
        for s in (wang, sun):
            event = s.incidents()
            assert (event["id"], event["state"], event["acknowledged_by"]) == (
                g1, "acknowledged", "api:wang")
            assert event["escalation"]["escalate_at"] is None and event["grid_id"] == "G1"

        # Any other writer (the alert core, the CLI, psql) is heard the same way: another
        # alarm in G2's incident, then a new incident in G1.
        db.execute("UPDATE incidents SET alert_count = alert_count + 1, last_alert_at = now()"
                   " WHERE id = %s", [g2])
        for s in (liu, sun):
            event = s.incidents()
            assert (event["id"], event["alert_count"]) == (g2, 2)
        g1b = open_incident(db, "B2", devices=("SD-2",))
        for s in (wang, sun):
            assert s.incidents()["id"] == g1b
        # wang's stream went from g1 straight to g1b: G2's change never reached it; and liu
        # (G2) heard nothing of G1. A last change in G2 proves liu's queue held nothing else.
        db.execute("UPDATE incidents SET alert_count = alert_count + 1 WHERE id = %s", [g2])
        assert liu.incidents()["alert_count"] == 3
        assert sun.incidents()["id"] == g2
        for s in (wang, liu):
            assert all(kind != "incident" for kind, _ in list(s.events.queue))

        # Resolving sends the incident once more, resolved: the console drops it.
        r = httpx.post(f"{live.url}/v1/incidents/{g2}/resolve",
                       json={"cause": "cooking_steam", "note": "厨房油烟 kitchen steam"},
                       headers={"Authorization": f"Bearer {tokens['liu']}"})
        assert r.status_code == 200, r.text
        event = liu.incidents()
        assert (event["id"], event["state"], event["cause"]) == (g2, "resolved",
                                                                  "cooking_steam")
    finally:
        for s in streams:
            s.close()
    # A console that goes away is dropped from the hub at once.
    until(lambda: live.hub.subscribers == 0, what="the streams to be dropped")


def test_the_stream_refuses_what_the_api_refuses(live, people, fires, db):
    tokens = people.tokens
    for kwargs, status in (({}, 401), ({"token": "fg_not-a-real-token"}, 401),
                           ({"session": "not-a-session"}, 401),
                           ({"token": tokens["grid_worker"]}, 403)):   # bound to no worker
        s = Stream(live.url, **kwargs)
        try:
            assert s.status == status, (kwargs, s.body)
        finally:
            s.close()
    assert live.hub.subscribers == 0


def test_the_stream_survives_a_database_restart(live, people, fires, db_url, pg_server):
    import psycopg

    g1, _ = fires
    sun = Stream(live.url, token=people.tokens["sun"])
    try:
        sun.take("hello")
        sun.take("resync")   # the first console: the listener starts and says so
        pg_server.restart()
        # No alert core runs in this test: `core` says so all along.
        assert sun.take("status", 30) == {"live": False, "core": False}
        # Back: the console is told to read the list again, since changes were not heard.
        assert sun.take("status", 60) == {"live": True, "core": False}
        sun.take("resync")
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE incidents SET alert_count = 7 WHERE id = %s", [g1])
        assert sun.incidents()["alert_count"] == 7
    finally:
        sun.close()


def test_a_new_token_for_the_same_worker_logs_in_too(people, db, fires):
    """An admin replaces a lost phone's token: the old sessions end, the new token logs in."""
    client = people.client
    old = cookie_of(login(client, people.tokens["wang"]))[SESSION_COOKIE].value
    client.cookies.clear()
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'wang'")
    new = create_token(db, "wang-new-phone", "grid_worker", "W-G1")
    assert with_cookie(client, old).get("/v1/incidents").status_code == 401
    r = login(client, new)
    assert r.status_code == 200 and r.json()["name"] == "wang-new-phone"
    assert [i["id"] for i in client.get("/v1/incidents").json()["items"]] == [fires[0]]


# --- pages ------------------------------------------------------------------------------------

def page_rung(db, incident: int, step: int, workers: dict[str, str], severity="warning") -> dict:
    """A rung as the ladder writes it: a page per worker and channel, and the log row (whose
    trigger tells the consoles), in one transaction. Returns worker -> MQTT page id."""
    ids = {}
    with db.transaction():
        for worker, status in workers.items():
            for channel in ("mqtt", "sms"):
                (page_id,) = db.execute(
                    "INSERT INTO pages (incident_id, step, worker_id, channel, status,"
                    " created_at, due_at, payload) VALUES (%s, %s, %s, %s, %s, now(), now(), %s)"
                    " RETURNING id",
                    [incident, step, worker, channel, status,
                     json.dumps({"severity": severity, "ladder": severity, "rung": step - 1,
                                 "roles": ["grid_worker"], "muted": False})]).fetchone()
                if channel == "mqtt":
                    ids[worker] = page_id
        db.execute("INSERT INTO incident_log (incident_id, at, actor, action, detail)"
                   " VALUES (%s, now(), 'escalator', 'notified', '{}')", [incident])
    return ids


def next_change(stream: Stream) -> tuple[str, dict]:
    """The next incident or page event (hello, resync and status are about the stream)."""
    while True:
        kind, data = stream.events.get(timeout=15)
        if kind in ("incident", "page", "closed"):
            return kind, data


def test_the_stream_carries_each_workers_own_pages_after_their_incident(
        live, people, fires, db):
    """A page reaches the consoles of the worker it is for, with the MQTT push's page_id,
    right after its incident; it comes again with later changes of the incident (the
    console drops it by page_id); GET /v1/console/pages gives it back after a reconnect.
    Cancelled pages, other channels and other people's pages are not sent."""
    g1, g2 = fires
    tokens = people.tokens
    wang = Stream(live.url, token=tokens["wang"])      # grid worker, G1
    zhou = Stream(live.url, token=tokens["zhou"])      # grid leader, G1: page cancelled
    sun = Stream(live.url, token=tokens["sun"])        # community C1: sees both, paged for g2
    streams = (wang, zhou, sun)
    try:
        for s in streams:
            s.take("hello")
        until(lambda: live.hub.live, what="the listener")
        pages = page_rung(db, g1, 1, {"W-G1": "pending", "L-G1": "cancelled"})
        for s in streams:
            kind, incident = next_change(s)
            assert (kind, incident["id"]) == ("incident", g1)
        kind, page = next_change(wang)
        assert page == {
            "v": 1, "page_id": pages["W-G1"], "kind": "incident", "key": f"incident-{g1}",
            "incident_id": g1, "step": 1, "severity": "warning", "rung": 0,
            "roles": ["grid_worker"], "created_at": page["created_at"],
            "incident_state": "notified", "building": {"id": "B1", "address": "B1 Shuiwei Rd"}}

        # The officer is paged for G2's incident: only the officer's stream has that page.
        sun_pages = page_rung(db, g2, 1, {"D-C1": "sent"}, severity="confirmed")
        assert next_change(sun)[1]["id"] == g2
        kind, page = next_change(sun)
        assert (kind, page["page_id"], page["severity"]) == ("page", sun_pages["D-C1"],
                                                              "confirmed")

        # A later change of g1 (a repeat alarm) sends wang the same page again.
        db.execute("UPDATE incidents SET alert_count = alert_count + 1 WHERE id = %s", [g1])
        kind, incident = next_change(wang)
        assert (kind, incident["alert_count"]) == ("incident", 2)
        kind, page = next_change(wang)
        assert (kind, page["page_id"]) == ("page", pages["W-G1"])
        for s in (zhou, sun):          # g1's change, and no page of it
            assert next_change(s)[1]["id"] == g1
        # A last change in G2, to sun only: what sun and zhou had queued was only that.
        db.execute("UPDATE incidents SET alert_count = alert_count + 1 WHERE id = %s", [g2])
        assert [next_change(sun)[0], next_change(sun)[1]["page_id"]] == ["incident",
                                                                        sun_pages["D-C1"]]
        assert all(kind not in ("incident", "page") for kind, _ in list(zhou.events.queue))
    finally:
        for s in streams:
            s.close()

    # After a reconnect: the worker's pages of open incidents, by the same page_id.
    for name, expected in (("wang", [pages["W-G1"]]), ("zhou", []),
                           ("sun", [sun_pages["D-C1"]]), ("admin", [])):
        r = httpx.get(f"{live.url}/v1/console/pages",
                      headers={"Authorization": f"Bearer {tokens[name]}"})
        assert r.status_code == 200, r.text
        assert [p["page_id"] for p in r.json()] == expected, name
    # A resolved incident's pages ring no more.
    r = httpx.post(f"{live.url}/v1/incidents/{g1}/resolve",
                   json={"cause": "cooking_steam", "note": "厨房油烟 kitchen steam"},
                   headers={"Authorization": f"Bearer {tokens['wang']}"})
    assert r.status_code == 200, r.text
    r = httpx.get(f"{live.url}/v1/console/pages",
                  headers={"Authorization": f"Bearer {tokens['wang']}"})
    assert r.json() == []


def test_people_of_an_incident_name_the_person_behind_the_token(people, fires, db):
    """Whom to call, who was paged, who answered: in the caller's area only, by the name and
    phone of the worker whose token acted."""
    g1, g2 = fires
    db.execute("UPDATE workers SET name = '王伟', phone = '+86 138 0000 0001' WHERE id = 'W-G1'")
    db.execute("INSERT INTO roster (worker_id, starts_at, ends_at)"
               " SELECT id, now() - interval '1 hour', now() + interval '1 hour' FROM workers")
    page_rung(db, g1, 1, {"W-G1": "sent", "L-G1": "pending"})
    wang = people.as_("wang")
    assert wang.post(f"/v1/incidents/{g1}/acknowledge", json={}).status_code == 200
    r = wang.get(f"/v1/console/incidents/{g1}/people")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["building"]["id"], got["building"]["address"]) == ("B1", "B1 Shuiwei Rd")
    assert [(p["worker_id"], p["role"], p["level"]) for p in got["on_duty"]] == [
        ("W-G1", "grid_worker", "grid"), ("L-G1", "grid_leader", "grid"),
        ("D-C1", "community_duty", "community"), ("D-S1", "street_duty", "street")]
    assert {p["worker_id"]: (p["channels"], p["delivered"]) for p in got["paged"]} == {
        "W-G1": (["mqtt", "sms"], True), "L-G1": (["mqtt", "sms"], False)}
    assert [(a["action"], a["actor"], a["name"], a["phone"]) for a in got["answered"]] == [
        ("acknowledged", "api:wang", "王伟", "+86 138 0000 0001")]
    # The leader pressed 1 on a voice call (api/routes/callbacks.py logs voice:<worker>).
    db.execute("INSERT INTO incident_log (incident_id, at, actor, action, detail)"
               " VALUES (%s, now() + interval '1 second', 'voice:L-G1', 'on_site', '{}')", [g1])
    answered = wang.get(f"/v1/console/incidents/{g1}/people").json()["answered"]
    assert [(a["actor"], a["worker_id"]) for a in answered] == [("api:wang", "W-G1"),
                                                                ("voice:L-G1", "L-G1")]
    # The grid next door's incident does not exist for wang.
    assert wang.get(f"/v1/console/incidents/{g2}/people").status_code == 404
