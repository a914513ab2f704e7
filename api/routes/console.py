"""The duty console (docs/console.md): its login, who is logged in, and the live feed.

    POST /v1/console/login     {"token": "fg_..."} -> session cookie (HttpOnly, SameSite=Strict)
    POST /v1/console/logout    ends the session, clears the cookie
    GET  /v1/console/me        who you are, your area, whether you may act
    GET  /v1/console/pages     your pages (the MQTT push's page_id) of open incidents
    GET  /v1/console/alert-core   whether an alert core runs (alerts/heartbeat.py)
    GET  /v1/console/incidents/{id}/people   where to go, whom to call (on duty for the
                               building now), who was paged and who answered
    GET  /v1/incidents/events  server-sent events: incidents of your area as they change,
                               and your pages
    /console/                  the page itself (static files, api/console/)

Login and logout take no token, so they are left out of the OpenAPI document, whose every
operation must declare its roles (tests/test_api_permissions.py); so is the event stream
(below). The page acts through the
ordinary /v1/incidents routes, with the cookie in place of the bearer token (auth.py).

The event stream is bounded (STREAM_MAX_S): the browser's EventSource reconnects by itself,
which re-reads the caller's token, role and area, and lets a stopping server finish its
streams instead of waiting on them forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, SecurityScopes
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope as AsgiScope

from alerts import heartbeat, loop, queries
from alerts.errors import NotFound
from alerts.queries import Scope
from api import sessions
from api.auth import (
    CONSOLE_HEADER,
    PERMISSIONS,
    SESSION_COOKIE,
    Actor,
    _bearer,
    allow,
    area_scope,
    authenticate,
)
from api.deps import AppSettings, Conn
from api.live import Hub, PageUpdate, Update, read_pages
from api.routes.incidents import IncidentSummary
from api.schemas import RowId
from devices import geo

STATIC = Path(__file__).resolve().parent.parent / "console"

STREAM_MAX_S = 60.0       # then the browser reconnects (and is authenticated again)
RETRY_MS = 2000           # how long EventSource waits before reconnecting


class ConsoleFiles(StaticFiles):
    """The page, its script and styles, with headers that keep them to themselves: no
    script but our own file, no framing (the buttons act), no referrer. Images may also come
    from the map's tile server (api.map_tiles), and from nowhere else."""

    def __init__(self, *, directory: Path, html: bool, tiles: str | None = None) -> None:
        super().__init__(directory=directory, html=html)
        images = " ".join(filter(None, ("'self' data:", tiles)))
        self.HEADERS = {**self.HEADERS, "Content-Security-Policy": (
            f"default-src 'self'; img-src {images}; frame-ancestors 'none'; base-uri 'none';"
            " form-action 'self'")}

    HEADERS = {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                   "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    async def get_response(self, path: str, scope: AsgiScope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.HEADERS)
        return response


def console_files(tiles: str | None = None) -> ConsoleFiles:
    """`tiles`: the map tile server's origin (ApiSettings.map_origin), allowed for images."""
    return ConsoleFiles(directory=STATIC, html=True, tiles=tiles)


def _serialize(row: dict[str, Any]) -> str:
    return IncidentSummary.model_validate(row).model_dump_json()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    hub = Hub(settings.database.url, app.state.pool, settings.database.connect_timeout_s,
              _serialize)
    app.state.console_hub = hub
    try:
        yield
    finally:
        await asyncio.to_thread(hub.close)


router = APIRouter(tags=["console"], lifespan=_lifespan)


# --- login --------------------------------------------------------------------------------

class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


def _secure(request: Request) -> bool:
    # Behind the HTTPS proxy uvicorn sees https (X-Forwarded-Proto from a trusted proxy);
    # plain http only on a developer's machine, where a Secure cookie would not be kept.
    return request.url.scheme == "https"


@router.post("/v1/console/login", include_in_schema=False)
def login(body: LoginBody, request: Request, response: Response,
          conn: Conn) -> dict[str, Any]:
    # A cross-site form cannot set the header: nobody can log a browser in to their session.
    _require_console_header(request)
    session = sessions.start(conn, body.token)
    response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="strict",
                        secure=_secure(request), path="/",
                        max_age=int(sessions.SESSION_TTL.total_seconds()))
    return _me(conn, session.actor) | {"expires_at": session.expires_at}


@router.post("/v1/console/logout", include_in_schema=False, status_code=204)
def logout(request: Request, conn: Conn) -> Response:
    _require_console_header(request)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        sessions.end(conn, session)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))
    return response


def _require_console_header(request: Request) -> None:
    if request.headers.get(CONSOLE_HEADER) != "1":
        raise HTTPException(403, f"the console sends the header {CONSOLE_HEADER}: 1")


# --- who am I -----------------------------------------------------------------------------

class Area(BaseModel):
    level: str = Field(description="grid, community or street")
    id: str
    name: str


class Me(BaseModel):
    name: str = Field(description="the token's name")
    role: str
    worker_id: str | None
    worker_name: str | None
    areas: list[Area] = Field(description="what you see; empty for an admin, who sees all")
    can_act: bool = Field(description="your role may acknowledge, arrive, resolve, reopen")
    can_field: bool = Field(description="your role registers, moves and retires devices")
    causes: list[str] = Field(description="the causes an incident is resolved with")
    now: datetime = Field(description="the server's clock, for the page's timers")


def _me(conn: psycopg.Connection, actor: Actor) -> dict[str, Any]:
    name = None
    areas: list[dict[str, str]] = []
    if actor.worker_id is not None:
        row = conn.execute("SELECT name FROM workers WHERE id = %s", [actor.worker_id]).fetchone()
        name = row[0] if row else None
        areas = [{"level": level, "id": id_, "name": label} for level, id_, label in conn.execute(
            "SELECT 'grid', g.id, g.name FROM worker_areas a JOIN grids g ON g.id = a.grid_id"
            " WHERE a.worker_id = %(w)s"
            " UNION ALL SELECT 'community', c.id, c.name FROM worker_areas a"
            " JOIN communities c ON c.id = a.community_id WHERE a.worker_id = %(w)s"
            " UNION ALL SELECT 'street', s.id, s.name FROM worker_areas a"
            " JOIN street_offices s ON s.id = a.street_id WHERE a.worker_id = %(w)s"
            " ORDER BY 1, 2", {"w": actor.worker_id})]
    return {"name": actor.name, "role": actor.role, "worker_id": actor.worker_id,
            "worker_name": name, "areas": areas,
            "can_act": actor.role in PERMISSIONS["incidents:act"],
            "can_field": actor.role in PERMISSIONS["devices:write"], "causes": list(loop.CAUSES),
            "now": datetime.now(UTC)}


@router.get("/v1/console/me", response_model=Me,
            summary="Who you are, the area you see, and whether you may act")
def me(actor: Annotated[Actor, allow("incidents:read")], conn: Conn) -> dict[str, Any]:
    return _me(conn, actor)


# --- pages -------------------------------------------------------------------------------

class Building(BaseModel):
    id: str
    address: str


class ConsolePage(BaseModel):
    v: int = Field(description="format version, 1")
    page_id: int = Field(description="the MQTT push's page_id: show and sound it once")
    kind: str = Field(description="incident")
    key: str = Field(description="incident-<id>: one card per key")
    incident_id: int
    step: int
    severity: str | None
    rung: int | None
    roles: list[str]
    created_at: datetime
    incident_state: str = Field(description="the incident's state when this was read")
    building: Building


@router.get("/v1/console/pages", response_model=list[ConsolePage],
            summary="Your pages of the open incidents of your area, oldest first")
def pages(actor: Annotated[Actor, allow("incidents:read")], conn: Conn) -> list[Any]:
    """What the console rings for after (re)connecting: the pages sent to you (the MQTT
    push's rows, with their page_id) for incidents still open. A console that saw a page
    on its live stream already drops it by page_id."""
    if actor.worker_id is None:
        return []
    scope = area_scope(conn, actor)
    ids = [i for (i,) in conn.execute(
        "SELECT DISTINCT p.incident_id FROM pages p JOIN incidents i ON i.id = p.incident_id"
        " WHERE p.worker_id = %s AND p.channel = 'mqtt' AND i.state <> 'resolved'",
        [actor.worker_id]) if queries.in_scope(conn, i, scope)]
    return [json.loads(p.json) for p in read_pages(conn, ids, actor.worker_id)] if ids else []


# --- people -----------------------------------------------------------------------------

LADDER_ORDER = ("grid_worker", "grid_leader", "community_duty", "street_duty")


class OnDuty(BaseModel):
    worker_id: str
    name: str
    role: str
    phone: str | None
    level: str = Field(description="what of theirs covers the building: grid, community, street")


class PagedPerson(BaseModel):
    worker_id: str
    name: str
    role: str
    phone: str | None
    first_paged_at: datetime
    first_step: int
    channels: list[str] = Field(description="the channels they were paged on")
    delivered: bool = Field(description="at least one page to them has been sent")


class Answer(BaseModel):
    at: datetime
    action: str = Field(description="acknowledged, on_site, confirmed, resolved or reopened")
    actor: str = Field(description="as the incident's log names it: api:<token name>, cli:...")
    worker_id: str | None = Field(description="the person the token belongs to")
    name: str | None
    phone: str | None


class Place(BaseModel):
    id: str
    address: str
    lat: float = Field(description="WGS-84, as registered")
    lon: float = Field(description="WGS-84, as registered")
    floors: int
    use: str
    contact_name: str | None = Field(description="the building's own contact (landlord, "
                                                 "manager), from the registry")
    contact_phone: str | None


class DeviceSince(BaseModel):
    device_id: str
    last_alert_at: datetime = Field(description="its latest alert in this incident")
    cleared_at: datetime | None = Field(description="its latest alarm_clear since then")
    hushed_at: datetime | None = Field(description="its latest mute (a resident's hush) since then")


class MapView(BaseModel):
    tiles: str = Field(description="the tile URL template (api.map_tiles)")
    zoom: int
    datum: str = Field(description="what the tiles are drawn in: wgs84 or gcj02")
    lat: float = Field(description="the building, converted to `datum`")
    lon: float


class People(BaseModel):
    building: Place = Field(description="where to go")
    map: MapView | None = Field(description="the building on the configured map tiles; "
                                            "null: no tile source configured")
    devices: list[DeviceSince] = Field(description="the incident's devices: whether each has "
                                                   "cleared or been hushed since its alert")
    on_duty: list[OnDuty] = Field(description="the ladder for the building now, lowest rung "
                                              "first: whom to call")
    paged: list[PagedPerson] = Field(description="who was paged for it, first paged first")
    answered: list[Answer] = Field(description="what people did, in order")


_ON_DUTY = """
    SELECT DISTINCT ON (w.id) w.id AS worker_id, w.name, w.role, w.phone, v.level
    FROM incidents i
    JOIN building_cover v ON v.building_id = i.building_id
    JOIN workers w ON w.id = v.worker_id AND w.active AND w.role = ANY(%(roles)s)
    WHERE i.id = %(id)s AND EXISTS (SELECT 1 FROM roster r WHERE r.worker_id = w.id
                                    AND r.starts_at <= now() AND r.ends_at > now())
    ORDER BY w.id, v.distance"""

_PAGED = """
    SELECT p.worker_id, w.name, w.role, w.phone, min(p.created_at) AS first_paged_at,
           min(p.step) AS first_step, array_agg(DISTINCT p.channel ORDER BY p.channel) AS channels,
           bool_or(p.status = 'sent') AS delivered
    FROM pages p JOIN workers w ON w.id = p.worker_id
    WHERE p.incident_id = %(id)s AND p.status IN ('pending', 'sent', 'failed')
    GROUP BY p.worker_id, w.name, w.role, w.phone
    ORDER BY first_paged_at, w.name"""

# A detector's own all-clear or a resident's hush after its latest alert: what the alert
# core's hold looks at (cooking stays in the grid), shown to the people deciding.
_DEVICES = """
    SELECT a.device_id, max(a.ts) AS last_alert_at,
           (SELECT max(e.ts) FROM events e WHERE e.device_id = a.device_id
            AND e.type = 'alarm_clear' AND e.ts >= max(a.ts)) AS cleared_at,
           (SELECT max(e.ts) FROM events e WHERE e.device_id = a.device_id
            AND e.type = 'mute' AND e.ts >= max(a.ts)) AS hushed_at
    FROM alerts a WHERE a.incident_id = %(id)s
    GROUP BY a.device_id ORDER BY a.device_id
    LIMIT 500"""

# The log names a person by their token (api:<name>); live token names are unique, and a
# revoked token's name may have been given again: the live one first, then the newest.
# Acknowledging by pressing 1 on a voice call or by an SMS reply names the worker itself
# (voice:<worker id>, sms:<worker id>: api/routes/callbacks.py).
_ANSWERED = """
    SELECT l.at, l.action, l.actor, w.id AS worker_id, w.name, w.phone
    FROM incident_log l
    LEFT JOIN LATERAL (
        SELECT t.worker_id FROM api_tokens t WHERE 'api:' || t.name = l.actor
        ORDER BY t.revoked_at IS NULL DESC, t.id DESC LIMIT 1) t ON true
    LEFT JOIN workers w ON w.id = coalesce(t.worker_id, CASE
        WHEN l.actor LIKE 'voice:%%' OR l.actor LIKE 'sms:%%'
        THEN split_part(l.actor, ':', 2) END)
    WHERE l.incident_id = %(id)s
      AND l.action IN ('acknowledged', 'on_site', 'confirmed', 'resolved', 'reopened')
      AND split_part(l.actor, ':', 1) IN ('api', 'cli', 'voice', 'sms')
    ORDER BY l.at, l.id"""


@router.get("/v1/console/incidents/{incident_id}/people", response_model=People,
            summary="Where to go for an incident, whom to call, who was paged and who answered")
def people(incident_id: RowId, actor: Annotated[Actor, allow("incidents:read")],
           conn: Conn, settings: AppSettings) -> dict[str, Any]:
    """For the incident's detail view: the people on duty for its building now (the
    ladder's roles, with phones: the call buttons), who was paged on which channels, and
    who acknowledged, went, confirmed, resolved or reopened it, by name rather than token."""
    if not queries.in_scope(conn, incident_id, area_scope(conn, actor)):
        raise NotFound("incident", str(incident_id))
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"id": incident_id, "roles": list(LADDER_ORDER)}
        on_duty = cur.execute(_ON_DUTY, params).fetchall()
        paged = cur.execute(_PAGED, params).fetchall()
        answered = cur.execute(_ANSWERED, params).fetchall()
        devices = cur.execute(_DEVICES, params).fetchall()
        building = cur.execute(
            "SELECT b.id, b.address, b.lat, b.lon, b.floors, b.use, b.contact_name,"
            " b.contact_phone FROM incidents i"
            " JOIN buildings b ON b.id = i.building_id WHERE i.id = %(id)s", params).fetchone()
    on_duty.sort(key=lambda p: (LADDER_ORDER.index(p["role"]), p["name"], p["worker_id"]))
    view = settings.api
    place = None
    if view.map_tiles and building is not None:
        lat, lon = geo.to_datum(building["lat"], building["lon"], view.map_datum)
        place = {"tiles": view.map_tiles, "zoom": view.map_zoom, "datum": view.map_datum,
                 "lat": lat, "lon": lon}
    return {"building": building, "map": place, "devices": devices, "on_duty": on_duty,
            "paged": paged, "answered": answered}


# --- the alert core ---------------------------------------------------------------------

class AlertCore(BaseModel):
    running: bool = Field(description="an alert core beat within stale_after_s: incidents "
                                      "escalate; false: nothing escalates, nobody is paged")
    instances: int = Field(description="alert cores beating now")
    last_beat_at: datetime | None = Field(description="the latest beat, even a stale one")
    stale_after_s: float


@router.get("/v1/console/alert-core", response_model=AlertCore,
            summary="Whether an alert core is running (escalating and paging)")
def alert_core(_: Annotated[Actor, allow("incidents:read")], conn: Conn) -> dict[str, Any]:
    """What the console's badge says (告警服务未运行 when not); the live feed sends the same
    as `core` in its `hello` and `status` events."""
    found = heartbeat.status(conn)
    return {"running": found.alive, "instances": found.running,
            "last_beat_at": found.last_beat_at, "stale_after_s": heartbeat.STALE_S}


# --- live events --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Watch:
    actor: Actor
    scope: Scope


def _watcher(scopes: SecurityScopes, request: Request,
             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
             ) -> _Watch:
    # Not the Conn dependency: that one would hold a pooled connection for the whole life
    # of the stream. Authenticate and read the area, then give the connection back.
    with request.app.state.pool.connection() as conn:
        actor = authenticate(conn, request, credentials, scopes.scopes)
        return _Watch(actor, area_scope(conn, actor))


Watcher = Annotated[_Watch, Security(_watcher, scopes=list(PERMISSIONS["incidents:read"]))]


# Left out of the OpenAPI document like login: tools that walk it (tests/test_api_fuzz.py
# reads every GET) would wait on a stream that does not end. Its guard is the same.
@router.get(
    "/v1/incidents/events", response_class=EventSourceResponse, include_in_schema=False,
    summary="Server-sent events: the incidents of your area as they change",
    description="Events: `hello` (connected: read GET /v1/incidents now), `incident` (one "
                "incident as GET /v1/incidents lists it, after any change, including being "
                "resolved), `page` (a page to you, after its incident: show and sound it "
                "once per page_id; it is sent again with later changes), `resync` (changes "
                "may have been missed: read the list again), "
                "`status` (`{\"live\": false}` while the database is out of reach; `core`: "
                "whether an alert core runs, also in `hello`). Comments "
                "every 15 s keep proxies from closing the connection; the stream ends after "
                f"{STREAM_MAX_S:.0f} s and EventSource reconnects.")
async def events(request: Request, watch: Watcher) -> AsyncIterator[ServerSentEvent]:
    hub: Hub = request.app.state.console_hub
    sub = hub.subscribe(watch.scope, watch.actor.worker_id)
    try:
        yield ServerSentEvent(event="hello", retry=RETRY_MS,
                              data={"now": datetime.now(UTC), "live": hub.live,
                                    "core": hub.core})
        deadline = asyncio.get_running_loop().time() + STREAM_MAX_S
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            try:
                kind, data = await asyncio.wait_for(sub.queue.get(), left)
            except TimeoutError:
                return
            if isinstance(data, Update | PageUpdate):
                yield ServerSentEvent(event=kind, raw_data=data.json)
            else:
                yield ServerSentEvent(event=kind, data=data or {})
    finally:
        hub.unsubscribe(sub)
