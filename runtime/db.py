"""Database access: connecting, and telling transient errors from permanent ones.

One classifier serves every writer, by SQLSTATE class (the rule Telegraf's PostgreSQL output
uses, with one refinement):

    transient  08 connection, 40 rollback, 53 resources, 57 operator intervention, or the
               socket itself failed: retry the same work later.
    data       22 data exception, 23 integrity violation, 54 program limit: the rows are at
               fault; isolate them and dead-letter them so the rest goes on.
    operator   anything else (42 undefined table or no permission, ...): no row is at
               fault and no retry by itself will help; keep the work, retry slowly and
               log an error, so a dropped table cannot turn every message into a dead letter.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from runtime.errors import UnavailableError
from runtime.settings import DatabaseSettings

# SQLSTATE classes retried with backoff:
#   08 connection exception, 40 transaction rollback (serialization, deadlock),
#   53 insufficient resources, 57 operator intervention (admin shutdown, crash recovery).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})


DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def classify(exc: BaseException) -> str:
    """'transient', 'data' or 'operator' (see the module docstring)."""
    if is_transient(exc):
        return "transient"
    state = getattr(exc, "sqlstate", None)
    if state and state[:2] in DATA_SQLSTATE_CLASSES:
        return "data"
    if isinstance(exc, psycopg.DataError):  # client-side, e.g. NUL in a text value
        return "data"
    return "operator"


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later can succeed."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # No SQLSTATE means the client lost the server (socket closed, timeout).
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, OSError)


def connect(settings: DatabaseSettings, *, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(
            settings.url, autocommit=autocommit, connect_timeout=settings.connect_timeout_s
        )
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"cannot connect to the database: {_first_line(exc)}") from exc


def ensure_database(settings: DatabaseSettings) -> bool:
    """Create the configured database if it does not exist. Returns True if created."""
    info = psycopg.conninfo.conninfo_to_dict(settings.url)
    name = str(info.get("dbname") or info.get("user") or "postgres")
    info["dbname"] = "postgres"
    # The same server's maintenance database, in libpq's key=value form: a copy, not a new
    # DatabaseSettings, whose URL check takes postgresql:// URLs only.
    maint = settings.model_copy(update={"url": psycopg.conninfo.make_conninfo("", **info)})
    with connect(maint, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
