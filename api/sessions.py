"""The duty console's browser sessions: a token is exchanged once for a session id, which
the browser keeps in an HttpOnly cookie (auth.SESSION_COOKIE) and auth.authenticate accepts
in place of the token.

    start(conn, token, ttl) -> Session     401 / 403 as HTTPException when the token is no good
    end(conn, session_id)                  logging out; ending an ended session is no error

Why a session rather than the token in the cookie: the session expires (SESSION_TTL) and
logging out ends it on the server, while the token, which the admin issued and may have
printed as a QR code, stays valid for the next login. The table keeps only the SHA-256 of
the session id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from fastapi import HTTPException

from api.auth import Actor, _digest

# A week: a worker logs in on their phone at the start of the week and is not asked for the
# token at 3 a.m. when the alarm goes. Revoking the token (lost phone) ends the session at
# once, whatever is left of it.
SESSION_TTL = timedelta(days=7)


@dataclass(frozen=True)
class Session:
    id: str               # the cookie's value, shown only here
    actor: Actor
    expires_at: datetime


def start(conn: psycopg.Connection, token: str, ttl: timedelta = SESSION_TTL) -> Session:
    row = conn.execute(
        "SELECT t.id, t.name, t.role, t.worker_id FROM api_tokens t"
        " LEFT JOIN workers w ON w.id = t.worker_id"
        " WHERE t.token_sha256 = %s AND t.revoked_at IS NULL AND coalesce(w.active, true)",
        [_digest(token.strip())]).fetchone()
    if row is None:
        raise HTTPException(401, "unknown or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    token_id, *person = row
    actor = Actor(*person)
    if actor.role != "admin" and actor.worker_id is None:
        # Such a token sees no incident (auth.area_scope): say so now, not on every screen.
        raise HTTPException(403, f"token {actor.name!r} belongs to no worker, so it covers no "
                                 "area; ask an admin for a token issued with a worker_id")
    session_id = secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("DELETE FROM console_sessions WHERE expires_at <= now()")
        row = conn.execute(
            "INSERT INTO console_sessions (session_sha256, token_id, expires_at)"
            " VALUES (%s, %s, now() + %s) RETURNING expires_at",
            [_digest(session_id), token_id, ttl]).fetchone()
    assert row is not None  # an INSERT ... RETURNING answers its row or raises
    return Session(session_id, actor, row[0])


def end(conn: psycopg.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE session_sha256 = %s",
                 [_digest(session_id)])
