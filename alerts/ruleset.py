"""Rules changed at run time: versions in the database over the rules file.

    current(conn, rules_file)            -> (version or None, Policy)  what applies now
    text(conn, rules_file)               -> (version or None, TOML)    to read and edit
    save(conn, body, actor, note)        -> version                    validated, then saved
    history(conn, limit)                 -> the saved versions, newest first

The rules file (alerts.rules_file, or the shipped default) is the base; each save stores a
whole rules file as a new version, validated exactly as the file is (a typo is an error,
not a default), and the newest version applies. Saving notifies RULES_CHANNEL at COMMIT:
every alert-core process reloads, so new incidents and the next rung of open ones follow
it without a restart (a timer already running keeps its end). The API reads it per request.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from alerts.errors import Invalid
from alerts.rules import Policy, load_policy, parse_policy, rules_text
from runtime.errors import ConfigError

RULES_CHANNEL = "firegrid_rules"
_LATEST = "SELECT version, body FROM rule_sets ORDER BY version DESC LIMIT 1"


def current(conn: psycopg.Connection[Any], rules_file: str | None) -> tuple[int | None, Policy]:
    version, body = text(conn, rules_file)
    if version is None:
        return None, load_policy(rules_file)
    return version, parse_policy(body, f"rules version {version}")


def text(conn: psycopg.Connection[Any], rules_file: str | None) -> tuple[int | None, str]:
    row = conn.execute(_LATEST).fetchone()
    if row is not None:
        return row[0], row[1]
    return None, rules_text(rules_file)[0]


def save(conn: psycopg.Connection[Any], body: str, actor: str, note: str | None) -> int:
    try:
        parse_policy(body, "the rules")
    except ConfigError as exc:
        raise Invalid("body", str(exc)) from None
    with conn.transaction():
        row = conn.execute("INSERT INTO rule_sets (body, note, created_by) VALUES (%s, %s, %s)"
                           " RETURNING version", [body, note, actor]).fetchone()
        conn.execute("SELECT pg_notify(%s, '')", [RULES_CHANNEL])
    assert row is not None    # INSERT ... RETURNING answers its row or raises
    version: int = row[0]
    return version


def history(conn: psycopg.Connection[Any], limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT version, note, created_by, created_at FROM rule_sets"
                           " ORDER BY version DESC LIMIT %s", [limit]).fetchall()
