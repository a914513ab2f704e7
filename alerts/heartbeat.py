"""The alert core's heartbeat: whether anything is escalating, for the duty console.

An escalator of each running alert core upserts its row of `alert_core_beats` every BEAT_S
(alerts/service.py, with its hand-over check), and the core deletes the row when it stops.
Readers (the console's live feed, api/live.py) count a core as running while its beat is
younger than STALE_S: a stopped core is seen at the next read, a killed or hung one (no
more beats) within STALE_S. The beat is written in the escalator's own loop, so it proves
the part the console's countdowns depend on runs and reaches the database.

All times are the database's now(): several hosts' clocks never disagree about staleness.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

BEAT_S = 5.0
STALE_S = 20.0      # four beats missed: not a slow transaction, nothing is escalating
KEEP_S = 86_400     # rows of cores that died without deleting theirs are dropped after this


def instance_name(client_id: str) -> str:
    return f"{client_id}@{socket.gethostname()}:{os.getpid()}"


def beat(conn: psycopg.Connection[Any], instance: str, started_at: datetime) -> None:
    """This core is alive now (call inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO alert_core_beats (instance, started_at, beat_at) VALUES (%s, %s, now())"
        " ON CONFLICT (instance) DO UPDATE SET beat_at = now()", [instance, started_at])
    conn.execute("DELETE FROM alert_core_beats WHERE beat_at < now() - make_interval(secs => %s)",
                 [KEEP_S])


def stopped(conn: psycopg.Connection[Any], instance: str) -> None:
    """This core is stopping: readers see it at once rather than after STALE_S."""
    conn.execute("DELETE FROM alert_core_beats WHERE instance = %s", [instance])


@dataclass(frozen=True)
class CoreStatus:
    running: int                     # alert cores that beat within STALE_S
    last_beat_at: datetime | None    # the latest beat of any, even a stale one

    @property
    def alive(self) -> bool:
        return self.running > 0


def status(conn: psycopg.Connection[Any]) -> CoreStatus:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE beat_at > now() - make_interval(secs => %s)),"
        " max(beat_at) FROM alert_core_beats", [STALE_S]).fetchone()
    assert row is not None
    return CoreStatus(int(row[0]), row[1])
