"""The provisioning API: the FastAPI app and how to run it.

    create_app(settings, broker)   the app; the lifespan opens a pool of autocommit
                                   connections and, unless one is given, the broker seam
    serve(settings)                uvicorn on settings.api.host:port (`firegrid api serve`)

Routes are sync functions (psycopg is sync here), so Starlette runs each in its thread
pool; the connection pool bounds how many touch the database at once. OpenAPI is at
/openapi.json, /docs (Swagger UI) and /redoc; docs/api.md is the guide for field
technicians and admins. The docs pages load their scripts and styles from this server
(/docs-assets/, fastapi-offline's copy), never from a public CDN: a street office's
intranet has no way out, and FastAPI's default /docs is a blank page there.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from psycopg_pool import ConnectionPool

from api import errors
from api.routes import (
    callbacks,
    console,
    devices,
    hierarchy,
    incidents,
    people,
    quarantine,
    rules,
    silences,
    tickets,
    tokens,
)
from devices.broker import BrokerAuth, broker_auth
from runtime.settings import Settings

# Connections the API holds at most. Requests are short; more threads than this wait for
# a connection (up to the database connect timeout, then 503) instead of piling onto it.
POOL_MAX = 10


def create_app(settings: Settings, broker: BrokerAuth | None = None) -> FastAPI:
    """The app. `broker` defaults to devices.broker.broker_auth(settings), which the app
    then also closes; a broker passed in belongs to the caller."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            settings.database.url, min_size=1, max_size=POOL_MAX, open=False,
            timeout=settings.database.connect_timeout_s, name="firegrid-api",
            kwargs={"autocommit": True, "connect_timeout": settings.database.connect_timeout_s},
            # A connection the database dropped (restart) is replaced, not handed out.
            check=ConnectionPool.check_connection)
        # Without waiting: the API starts while the database is down and /healthz says so.
        pool.open(wait=False)
        own = broker is None
        app.state.settings = settings
        app.state.pool = pool
        # Routes run on many threads: implementations are thread-safe (MosquittoDynsec
        # holds one exchange at a time).
        app.state.broker = broker_auth(settings) if own else broker
        try:
            yield
        finally:
            pool.close()
            if own:
                app.state.broker.close()

    # FastAPI's documented recipe for self-hosted docs assets, packaged (fastapi-offline).
    app = FastAPIOffline(
        static_url="/docs-assets", title="firegrid provisioning API", version="1",
        description="Register, move, replace and retire devices; manage the grid hierarchy, "
                    "people and roster. Guide: docs/api.md. Every call but /healthz needs "
                    "`Authorization: Bearer <token>`; each operation lists the roles it admits.",
        lifespan=lifespan)
    errors.install(app)
    # console before incidents: its /v1/incidents/events must not be taken for an incident id
    for module in (devices, hierarchy, people, tickets, quarantine, tokens, console, incidents,
                   silences, rules, callbacks):
        app.include_router(module.router)
    # The duty console's page (docs/console.md).
    app.mount("/console", console.console_files(settings.api.map_origin), name="console")
    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["health"],
                      summary="200 when the database answers (no token needed)")
    _roles_in_descriptions(app)
    return app


def _healthz(request: Request) -> JSONResponse:
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:  # PoolTimeout included: no connection within 2 s
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def serve(settings: Settings) -> None:
    """Run the API in this (main) thread; return after SIGTERM or Ctrl-C once uvicorn has
    finished the requests in progress."""
    # uvicorn hands the stop signal on to the handler it found once it has shut down: the
    # default SIGTERM handler would kill the process then, and the CLI promises exit 0.
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        # Console event streams stay open (60 s each); on SIGTERM close them after 5 s
        # instead of waiting for them, the browsers reconnect to the next process.
        uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port,
                    log_level=settings.log_level.lower(), timeout_graceful_shutdown=5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _roles_in_descriptions(app: FastAPI) -> None:
    """Show each operation's roles in /docs too: Swagger UI does not display the role
    names of a bearer security requirement."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = build()  # which keeps it as app.openapi_schema
            for operations in schema["paths"].values():
                for op in operations.values():
                    for requirement in op.get("security", []):
                        for roles in requirement.values():
                            op["description"] = (f"Roles: {', '.join(roles)}.\n\n"
                                                 + op.get("description", ""))
        return schema

    # FastAPI's documented way to extend the schema; mypy sees a method overwritten.
    app.openapi = openapi  # type: ignore[method-assign]
