"""The demo's API and duty console: `firegrid api serve` in a thread, and login links for
two people who will see the README's fire: the grid worker on duty now in the building it
burns, and their community's duty officer on duty now (docs/console.md).

The links are issued again at every start, under the same names (`demo-<worker>`): the
tokens printed last time are revoked first, so a second `./dev up` on a kept registry
neither fails on the taken name nor leaves old links working."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import uvicorn

from api.app import create_app
from api.auth import issue_token, revoke_token
from devices import queries
from runtime.localsvc import free_port, reachable
from runtime.settings import Settings

ROLES = ("grid_worker", "community_duty")

# Whoever covers the building at all, when nobody is on shift there (a registry whose
# roster has run out): the links still open the console, marked off duty.
_COVERING = """
    SELECT DISTINCT ON (w.role) w.id, w.role FROM building_cover v
    JOIN workers w ON w.id = v.worker_id AND w.active
    WHERE v.building_id = %s AND w.role = ANY(%s) AND v.level <> 'street'
    ORDER BY w.role, v.distance, w.id"""


def people_for(conn: psycopg.Connection, building_id: str, at: datetime
               ) -> list[tuple[str, str, bool]]:
    """(role, worker id, on duty) for each of ROLES: the first on shift at `at` covering
    the building, nearest level first, or else the first covering it off shift."""
    found: dict[str, tuple[str, str, bool]] = {}
    for person in queries.on_duty(conn, building_id, at, roles=ROLES):
        found.setdefault(person.role, (person.role, person.worker_id, True))
    for worker, role in conn.execute(_COVERING, [building_id, list(ROLES)]).fetchall():
        found.setdefault(role, (role, worker, False))
    return [found[role] for role in ROLES if role in found]


def demo_token(conn: psycopg.Connection, worker: str, role: str) -> str:
    """A fresh token named demo-<worker>; the live one of that name, from an earlier run,
    is revoked first."""
    name = f"demo-{worker}"
    for (token_id,) in conn.execute("SELECT id FROM api_tokens WHERE name = %s"
                                    " AND revoked_at IS NULL", [name]).fetchall():
        revoke_token(conn, token_id, actor="demo")
    return issue_token(conn, name, role, worker, actor="demo")[1]


def start_console(settings: Settings, building_id: str | None
                  ) -> tuple[Callable[[], None], list[str]]:
    """Serve the API on api.host:api.port (another free port when that one is taken);
    return a function that stops it and the lines to print: the console's address and a
    login link per person (none when `building_id` is None or nobody covers it)."""
    host = settings.api.host
    port = settings.api.port if not reachable(host, settings.api.port) else free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    lines = [f"console:  http://{host}:{port}/console/  (API docs: http://{host}:{port}/docs)"]
    if building_id is None:
        return stop, lines
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        row = conn.execute("SELECT grid_id FROM buildings WHERE id = %s",
                           [building_id]).fetchone()
        people = people_for(conn, building_id, datetime.now(UTC)) if row else []
        if people:
            lines.append(f"          the README's fire (seed 7) burns {building_id} in grid "
                         f"{row[0] if row else '?'}; log in as the people it pages:")
        for role, worker, on_duty in people:
            token = demo_token(conn, worker, role)
            duty = "on duty now" if on_duty else "NOT on duty now: the roster has no shift"
            lines.append(f"          {role} {worker} ({duty}):"
                         f" http://{host}:{port}/console/#token={token}")
    return stop, lines
