"""Bearer tokens and the permission table: who may call what.

A token is 256 random bits shown once when it is created; `api_tokens` keeps only its
SHA-256 (a fast hash is enough: nobody can guess 256 bits, so a stolen table is useless).
Each token carries one role. A route states what it needs with one of the permissions in
PERMISSIONS, and that is the only place roles are listed:

    actor: Annotated[Actor, allow("devices:write")]

`allow` is a FastAPI Security dependency, so the roles also appear in the OpenAPI document
as the security requirement of the operation (OpenAPI 3.1 lets a bearer scheme list role
names there); tests/test_api_permissions.py walks that document to prove no route is
unguarded.

The duty console's browser sessions (api/console.py) are accepted here too: a
person logs in once with their token, and the HttpOnly cookie SESSION_COOKIE then stands
for that token, with its role, worker and area, for as long as both the session and the
token live. A bearer header, when present, takes precedence over the cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from alerts.queries import Scope
from api.deps import Conn
from devices import registry
from devices.errors import Invalid, NotFound

ROLES = ("admin", "field_technician", "street_duty", "community_duty", "grid_leader",
         "grid_worker")

_READERS = ("admin", "field_technician", "street_duty", "community_duty")

# The permission table. Grid workers and leaders appear nowhere: their screen is the duty
# console (alerts issue), not the registry.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    # devices, tickets, quarantine, device history and the hierarchy
    "registry:read": _READERS,
    # register, move, maintenance/active, rotate, retire, claim quarantined ids, close tickets
    "devices:write": ("admin", "field_technician"),
    # streets, communities, grids, buildings
    "hierarchy:write": ("admin",),
    # workers with their areas, and the roster: phone numbers are for those who dispatch.
    # Grid leaders keep their grid covered (leave, swaps): they read their own area's
    # people only (api/routes/people.py).
    "people:read": ("admin", "street_duty", "community_duty", "grid_leader"),
    "people:write": ("admin",),
    # leave, substitutes and shift swaps of the workers in the caller's area: the officers
    # and grid leaders who keep a grid covered through the week
    "roster:change": ("admin", "street_duty", "community_duty", "grid_leader"),
    # the alert rules and ladders in force (/v1/rules): the street command centre's call
    "rules:write": ("admin", "street_duty"),
    "tokens:manage": ("admin",),
    # fire incidents in the caller's area (area_scope), and the silences there; field
    # technicians read the incidents of their grids (they fix the devices) but do not act
    "incidents:read": ROLES,
    # acknowledge, arrive, resolve, reopen
    "incidents:act": ("admin", "street_duty", "community_duty", "grid_leader", "grid_worker"),
    # mute pages for a device, building or grid in the caller's area (a technician puts a
    # device in test mode; a leader silences a drill)
    "silences:write": ("admin", "field_technician", "street_duty", "community_duty",
                       "grid_leader"),
}

# Tokens look like fg_<43 characters>: the prefix lets secret scanners and people spot one.
_PREFIX = "fg_"

# Roles whose every permission is scoped to the areas of the worker the token belongs to
# (incidents and silences, through area_scope): without a worker such a token can neither
# log in to the console nor see anything, so issuing one is refused rather than handing out
# a token that fails later. Duty officers and technicians also read the registry, which
# needs no worker.
NEEDS_WORKER = ("grid_worker", "grid_leader")


@dataclass(frozen=True)
class Actor:
    name: str               # the token's name
    role: str
    worker_id: str | None

    @property
    def history_name(self) -> str:
        """How registry_history records changes made with this token."""
        return f"api:{self.name}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue_token(conn: psycopg.Connection, name: str, role: str, worker_id: str | None = None,
                *, actor: str | None = None) -> tuple[int, str]:
    """Create a token; return (id, token). The token exists nowhere else afterwards."""
    if role not in ROLES:
        raise Invalid("role", f"must be one of {', '.join(ROLES)}")
    if not name.strip():
        raise Invalid("name", "must not be empty")
    require_worker(role, worker_id)
    token = _PREFIX + secrets.token_urlsafe(32)
    with registry.changes(conn, actor or "cli"):
        row = conn.execute(
            "INSERT INTO api_tokens (name, role, worker_id, token_sha256)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            [name.strip(), role, worker_id, _digest(token)]).fetchone()
    assert row is not None  # an INSERT ... RETURNING answers its row or raises
    token_id: int = row[0]
    return token_id, token


def require_worker(role: str, worker_id: str | None, field: str = "worker_id") -> None:
    """Invalid, naming `field`, for a token of a NEEDS_WORKER role without its worker."""
    if role in NEEDS_WORKER and not worker_id:
        raise Invalid(field, f"{role} 令牌必须属于一名人员，否则无法登录值班台，也看不到任何事件 / "
                             f"a {role} token must belong to a worker, or it can neither log in "
                             "to the duty console nor see any incident")


def create_token(conn: psycopg.Connection, name: str, role: str, worker_id: str | None = None,
                 *, actor: str | None = None) -> str:
    """Create a token for `firegrid api token create`; returns it, the only time it is shown."""
    return issue_token(conn, name, role, worker_id, actor=actor)[1]


def revoke_token(conn: psycopg.Connection, token_id: int, *, actor: str | None = None) -> None:
    """Refuse the token from now on. Revoking a revoked token changes nothing."""
    with registry.changes(conn, actor or "cli"):
        found = conn.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
                             " WHERE id = %s RETURNING id", [token_id]).fetchone()
    if found is None:
        raise NotFound("token", str(token_id))


_bearer = HTTPBearer(auto_error=False, description="a token from `firegrid api token create`"
                                                   " or POST /v1/tokens")


# The console's session cookie, and the header its script adds to every request that
# changes something: a cross-site form or link cannot set a header (SameSite=Strict already
# keeps the cookie off cross-site requests; this also covers same-site sibling hosts).
SESSION_COOKIE = "fg_console"
CONSOLE_HEADER = "X-Firegrid-Console"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# One row per live session: the token's holder, as for the bearer lookup below.
_SESSION_ACTOR = (
    "SELECT t.name, t.role, t.worker_id FROM console_sessions s"
    " JOIN api_tokens t ON t.id = s.token_id LEFT JOIN workers w ON w.id = t.worker_id"
    " WHERE s.session_sha256 = %s AND s.expires_at > now() AND t.revoked_at IS NULL"
    " AND coalesce(w.active, true)")


def _authorize(scopes: SecurityScopes, request: Request, conn: Conn,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
               ) -> Actor:
    return authenticate(conn, request, credentials, scopes.scopes)


def authenticate(conn: psycopg.Connection, request: Request,
                 credentials: HTTPAuthorizationCredentials | None,
                 roles: list[str]) -> Actor:
    """The caller, from the bearer token or else the console's session cookie; 401 when
    neither names a live one, 403 when its role is not among `roles`."""
    session = request.cookies.get(SESSION_COOKIE)
    if credentials is None and session:
        row = conn.execute(_SESSION_ACTOR, [_digest(session)]).fetchone()
        if row is None:
            raise HTTPException(401, "console session expired or ended; log in again",
                                headers={"WWW-Authenticate": "Bearer"})
        if request.method not in _SAFE_METHODS and request.headers.get(CONSOLE_HEADER) != "1":
            raise HTTPException(403, f"a request made with the console's session cookie must "
                                     f"carry the header {CONSOLE_HEADER}: 1")
        return _admit(Actor(*row), roles)
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    # A token whose worker has been deactivated stops working with them.
    row = conn.execute(
        "SELECT t.name, t.role, t.worker_id FROM api_tokens t"
        " LEFT JOIN workers w ON w.id = t.worker_id"
        " WHERE t.token_sha256 = %s AND t.revoked_at IS NULL AND coalesce(w.active, true)",
        [_digest(credentials.credentials)]).fetchone()
    if row is None:
        raise HTTPException(401, "unknown or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    return _admit(Actor(*row), roles)


def _admit(actor: Actor, roles: list[str]) -> Actor:
    if actor.role not in roles:
        raise HTTPException(403, f"role {actor.role!r} may not do this; allowed: "
                                 f"{', '.join(roles)}")
    return actor


def allow(permission: str) -> Any:
    """The dependency that admits the roles PERMISSIONS gives `permission`."""
    return Security(_authorize, scopes=list(PERMISSIONS[permission]))


def area_scope(conn: psycopg.Connection, actor: Actor) -> Scope:
    """Where the caller may see and act on incidents and silences: everything for an admin,
    else the grids, communities and streets their worker covers (worker_areas). A token
    that belongs to no worker covers nothing, which is a 403 rather than an empty list, so
    the admin who issued it learns what is missing."""
    if actor.role == "admin":
        return Scope.all()
    if actor.worker_id is None:
        raise HTTPException(403, f"token {actor.name!r} belongs to no worker, so it covers no "
                                 "area; issue it with a worker_id")
    rows = conn.execute("SELECT grid_id, community_id, street_id FROM worker_areas"
                        " WHERE worker_id = %s", [actor.worker_id]).fetchall()
    return Scope(grids=tuple(r[0] for r in rows if r[0]),
                 communities=tuple(r[1] for r in rows if r[1]),
                 streets=tuple(r[2] for r in rows if r[2]))
