"""The quarantine: device ids that sent valid messages but are not registered.

Ingest stores their readings as usual and the liveness flush lists them here (first and
last seen, message count, last topic). Field teams find a device in this list, register it,
and claim the entry, so the next team does not go looking for the same box.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from devices.errors import Conflict, NotFound


@dataclass(frozen=True)
class QuarantineEntry:
    device_id: str
    first_seen: datetime
    last_seen: datetime
    messages: int
    last_topic: str
    claimed_at: datetime | None
    claimed_by: str | None


_COLS = "device_id, first_seen, last_seen, messages, last_topic, claimed_at, claimed_by"


def claim(conn: psycopg.Connection, device_id: str, actor: str) -> QuarantineEntry:
    """Mark the entry claimed by `actor`. Claiming again as the same actor changes nothing
    (a retried request); an entry claimed by someone else is a Conflict, an id that is not
    in the quarantine NotFound."""
    with conn.transaction():
        row = conn.execute(
            f"UPDATE quarantine SET claimed_at = now(), claimed_by = %s"
            f" WHERE device_id = %s AND claimed_at IS NULL RETURNING {_COLS}",
            [actor, device_id]).fetchone()
        if row is None:
            row = conn.execute(f"SELECT {_COLS} FROM quarantine WHERE device_id = %s",
                               [device_id]).fetchone()
            if row is None:
                raise NotFound("quarantined device", device_id)
            if row[6] != actor:
                raise Conflict(f"quarantined device {device_id!r} was already claimed by "
                               f"{row[6]} at {row[5]:%Y-%m-%d %H:%M:%S%z}", field="device_id")
    return QuarantineEntry(*row)

