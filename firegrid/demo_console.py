"""The demo's API and duty console: `firegrid api serve` in a thread, and login links for
two people who will see the demo's fire warnings, a grid worker and their community's duty
officer (docs/console.md).

The links are issued again at every start, under the same names (`demo-<worker>`): the
tokens printed last time are revoked first, so a second `./dev up` on a kept registry
neither fails on the taken name nor leaves old links working."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import uvicorn

from api.app import create_app
from api.auth import issue_token, revoke_token
from runtime.localsvc import free_port, reachable
from runtime.settings import Settings

# The grid worker of a device's grid, and the duty officer of that grid's community.
_PEOPLE = """
    SELECT w.id, w.role FROM devices d
    JOIN building_cover v ON v.building_id = d.building_id AND v.level <> 'street'
    JOIN workers w ON w.id = v.worker_id AND w.active
    WHERE d.id = %s AND w.role IN ('grid_worker', 'community_duty')
    ORDER BY w.role DESC, w.id"""


def demo_token(conn: psycopg.Connection, worker: str, role: str) -> str:
    """A fresh token named demo-<worker>; the live one of that name, from an earlier run,
    is revoked first."""
    name = f"demo-{worker}"
    for (token_id,) in conn.execute("SELECT id FROM api_tokens WHERE name = %s"
                                    " AND revoked_at IS NULL", [name]).fetchall():
        revoke_token(conn, token_id, actor="demo")
    return issue_token(conn, name, role, worker, actor="demo")[1]


def start_console(settings: Settings, device_id: str) -> tuple[Callable[[], None], list[str]]:
    """Serve the API on api.host:api.port (another free port when that one is taken);
    return a function that stops it and the login lines to print."""
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
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        people: dict[str, str] = {}   # role -> worker id
        for worker, role in conn.execute(_PEOPLE, [device_id]).fetchall():
            people.setdefault(role, worker)
        for role, worker in people.items():
            token = demo_token(conn, worker, role)
            lines.append(f"          {role} {worker}: http://{host}:{port}/console/#token={token}")
    return stop, lines
