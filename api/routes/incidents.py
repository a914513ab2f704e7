"""/v1/incidents: the duty console. Workers list the fire incidents of their area and
acknowledge, arrive at, resolve and reopen them; duty officers see every incident of their
community or street with its escalation state (alerts/loop.py says what each step does).

Every route is confined to the caller's area (auth.area_scope): an incident outside it is
a 404, exactly like one that does not exist. Field technicians read the incidents of their
grids, since they fix the devices, but do not act on them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerts import loop, queries, ruleset
from alerts.channels import build_channels
from alerts.errors import NotFound
from alerts.queries import Row, Scope
from alerts.rules import Policy, parse_policy
from api.auth import Actor, allow, area_scope
from api.deps import AppSettings, Conn
from api.schemas import Limit, Offset, Page, Paged, QueryId, RowId, page
from devices.models import EARLIEST, LATEST, Ident
from runtime.settings import Settings

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

Reader = Annotated[Actor, allow("incidents:read")]
Responder = Annotated[Actor, allow("incidents:act")]

Note = Annotated[str, Field(min_length=1, max_length=loop.NOTE_MAX)]


# --- requests -----------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NoteBody(_Body):
    note: Note | None = Field(None, description="what you saw or did (optional)")


class ResolveBody(_Body):
    cause: Literal[loop.CAUSES] = Field(  # type: ignore[valid-type]
        description="what it was; cooking_steam, dust_insects and device_fault count as "
                    "false alarms (repeated ones open a maintenance ticket for the device)")
    note: Note = Field(description="what was found and done: the closed loop's feedback")


class ReopenBody(_Body):
    note: Note = Field(description="why it is not over")


class EscalateBody(_Body):
    to: Literal["grid", "community", "street"] | None = Field(
        None, description="the level to page now; none: the ladder's next rung")
    note: Note | None = Field(None, description="why (optional)")


class ResponderBody(_Body):
    worker_id: Ident = Field(description="the person to page now")
    reassign: bool = Field(False, description="hand it over: an acknowledged incident is open"
                                              " again until this person acknowledges it")
    note: Note | None = Field(None, description="why (optional)")


# --- answers ------------------------------------------------------------------------------

class Escalation(BaseModel):
    ladder: str = Field(description="the ladder it climbs: warning or confirmed")
    rung: int = Field(description="the last rung fired; -1 before the first")
    escalate_at: datetime | None = Field(description="when the next rung fires unless "
                                                     "acknowledged; null: no timer")
    exhausted: bool = Field(description="the ladder ran out with nobody acknowledging")
    last_notified_at: datetime | None
    last_notified_rung: int | None
    roles: list[str] = Field(description="roles the last paging rung reached")
    workers: list[Any] = Field(description="workers the last paging rung reached")


class IncidentSummary(BaseModel):
    id: int
    building_id: str
    address: str
    grid_id: str
    grid_name: str
    community_id: str
    community_name: str
    street_id: str
    hazard: str
    severity: str
    state: str
    opened_at: datetime
    last_alert_at: datetime
    alert_count: int
    muted: bool = Field(description="every alert so far came in a silence: nobody was paged")
    confirmed_at: datetime | None
    notified_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    on_site_at: datetime | None
    on_site_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    cause: str | None
    note: str | None
    reopened: int
    ack_s: float | None = Field(description="seconds from opening to acknowledgement")
    arrive_s: float | None = Field(description="seconds from opening to arrival on site")
    resolve_s: float | None = Field(description="seconds from opening to resolution")
    escalation: Escalation
    devices: list[str] = Field(description="devices that raised its alerts")


class AlertOut(BaseModel):
    device_id: str
    device_kind: str | None
    rule: str
    ts: datetime
    received_at: datetime
    muted: bool
    detail: dict[str, Any]
    floor: int | None
    location: str | None


class LogEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class PageOut(BaseModel):
    id: int
    step: int
    channel: str
    worker_id: str | None
    worker_name: str | None
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None


class IncidentDetail(IncidentSummary):
    alerts: list[AlertOut] = Field(description=f"the first {queries.ALERTS_SHOWN} alerts")
    log: list[LogEntry] = Field(description="every transition and ladder step, in order")
    pages: list[PageOut] = Field(description="who was paged on which channel, and how it went")


# --- routes -------------------------------------------------------------------------------

def _policy(conn: psycopg.Connection, settings: Settings) -> Policy:
    """The rules in force: the newest saved version, else the file (alerts/ruleset.py).
    Resolving (the false-alarm feedback), escalating and adding people need them."""
    return _parsed(*ruleset.text(conn, settings.alerts.rules_file))


@lru_cache(maxsize=8)
def _parsed(version: int | None, body: str) -> Policy:
    return parse_policy(body, f"rules version {version}" if version else "the rules file")


def _channels(settings: Settings) -> frozenset[str]:
    """The extra channels the alert core sends on (its settings are ours): a person added
    by hand is paged on them too."""
    return frozenset(build_channels(settings.alerts))


def _scope_for(conn: psycopg.Connection, actor: Actor, incident_id: int) -> Scope:
    """The caller's scope, once the incident is known to lie in it."""
    scope = area_scope(conn, actor)
    if not queries.in_scope(conn, incident_id, scope):
        raise NotFound("incident", str(incident_id))
    return scope


def _detail(conn: psycopg.Connection, incident_id: int, scope: Scope) -> Row:
    row = queries.incident(conn, incident_id, scope)
    if row is None:
        raise NotFound("incident", str(incident_id))
    return row


Since = Annotated[AwareDatetime | None, Query(ge=EARLIEST, le=LATEST,
                                              description="opened at or after this")]
ResolvedSince = Annotated[AwareDatetime | None, Query(
    ge=EARLIEST, le=LATEST, description="resolved at or after this (only resolved ones)")]


@router.get("", response_model=Page[IncidentSummary],
            summary="Incidents in your area, newest first, with their escalation state")
def list_incidents(actor: Reader, conn: Conn,
                   state: Literal["open", "resolved", "all"] = "open",
                   grid_id: QueryId = None, community_id: QueryId = None,
                   building_id: QueryId = None, since: Since = None,
                   resolved_since: ResolvedSince = None,
                   limit: Limit = 100, offset: Offset = 0) -> Paged[Row]:
    rows = queries.list_incidents(conn, scope=area_scope(conn, actor), state=state,
                                  grid_id=grid_id, community_id=community_id,
                                  building_id=building_id, since=since,
                                  resolved_since=resolved_since, limit=limit + 1,
                                  offset=offset)
    return page(rows, limit, offset)


@router.get("/{incident_id}", response_model=IncidentDetail,
            summary="One incident with its alerts, audit log and pages")
def get_incident(incident_id: RowId, actor: Reader, conn: Conn) -> Row:
    return _detail(conn, incident_id, area_scope(conn, actor))


def _act(conn: psycopg.Connection, actor: Actor, incident_id: int,
         action: Callable[[psycopg.Connection[Any], int, str, str | None], Row],
         body: NoteBody | None) -> Row:
    """One of the loop's actions that take an optional note, in the caller's area."""
    scope = _scope_for(conn, actor, incident_id)
    action(conn, incident_id, actor.history_name, body.note if body else None)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail,
             summary="I have it: stops the escalation; repeating it changes nothing")
def acknowledge(incident_id: RowId, actor: Responder, conn: Conn,
                body: NoteBody | None = None) -> Row:
    return _act(conn, actor, incident_id, loop.acknowledge, body)


@router.post("/{incident_id}/arrive", response_model=IncidentDetail,
             summary="I am on site (acknowledges too, if nobody had)")
def arrive(incident_id: RowId, actor: Responder, conn: Conn,
           body: NoteBody | None = None) -> Row:
    return _act(conn, actor, incident_id, loop.arrive, body)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail,
             summary="Close the incident with its cause and a note of what was done")
def resolve(incident_id: RowId, body: ResolveBody, actor: Responder, conn: Conn,
            settings: AppSettings) -> Row:
    scope = _scope_for(conn, actor, incident_id)
    loop.resolve(conn, incident_id, actor.history_name, body.cause, body.note,
                 _policy(conn, settings))
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/confirm", response_model=IncidentDetail,
             summary="人工确认 It is a fire: page every level and the fire service (119) now")
def confirm(incident_id: RowId, actor: Responder, conn: Conn,
            body: NoteBody | None = None) -> Row:
    return _act(conn, actor, incident_id, loop.confirm, body)


@router.post("/{incident_id}/escalate", response_model=IncidentDetail,
             summary="立即升级 Escalate now: page the next rung (or a chosen level) at once")
def escalate(incident_id: RowId, actor: Responder, conn: Conn, settings: AppSettings,
             body: EscalateBody | None = None) -> Row:
    body = body or EscalateBody()
    scope = _scope_for(conn, actor, incident_id)
    loop.escalate(conn, incident_id, actor.history_name, _policy(conn, settings),
                  body.to, body.note)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/responders", response_model=IncidentDetail,
             summary="加派/转派 Add a responder, or reassign: the person is paged at once")
def add_responder(incident_id: RowId, body: ResponderBody, actor: Responder, conn: Conn,
                  settings: AppSettings) -> Row:
    scope = _scope_for(conn, actor, incident_id)
    loop.add_responder(conn, incident_id, actor.history_name, body.worker_id,
                       _policy(conn, settings), _channels(settings),
                       reassign=body.reassign, note=body.note)
    return _detail(conn, incident_id, scope)


@router.post("/{incident_id}/reopen", response_model=IncidentDetail,
             summary="Reopen a resolved incident: the escalation starts again at once")
def reopen(incident_id: RowId, body: ReopenBody, actor: Responder, conn: Conn) -> Row:
    scope = _scope_for(conn, actor, incident_id)
    loop.reopen(conn, incident_id, actor.history_name, body.note)
    return _detail(conn, incident_id, scope)
