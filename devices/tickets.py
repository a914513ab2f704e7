"""Closing a maintenance ticket by hand, after a technician's visit.

The monitor (devices/monitor.py) opens and closes tickets from what devices report. A
technician who fixed something closes the ticket with a note ('manual'). For a reported
condition (low battery, tamper, fault, ...) the close also marks the condition inactive, so
the registry says what the technician saw; the device's next report of it, being newer,
sets it again and the monitor opens a new ticket. The device clock of the last report
(changed_ts) and its receive time (reported_at) are left alone: the server's clock must not
outrank a device's, and the monitor compares closed_at only with reported_at, a server time
(a detector whose clock runs behind still gets its new ticket). An offline ticket is only
closed: the device's next message is what shows it is back.
"""

from __future__ import annotations

import psycopg

from devices.errors import Conflict, NotFound
from devices.registry import changes


def close_ticket(conn: psycopg.Connection, ticket_id: int, actor: str, note: str) -> None:
    with changes(conn, actor):
        row = conn.execute(
            "UPDATE maintenance_tickets SET closed_at = now(), close_reason = 'manual',"
            " closed_by = %s, close_note = %s WHERE id = %s AND closed_at IS NULL"
            " RETURNING device_id, condition", [actor, note, ticket_id]).fetchone()
        if row is None:
            if conn.execute("SELECT 1 FROM maintenance_tickets WHERE id = %s",
                            [ticket_id]).fetchone() is None:
                raise NotFound("ticket", str(ticket_id))
            raise Conflict(f"ticket {ticket_id} is already closed")
        device_id, condition = row
        if condition != "offline":
            conn.execute("UPDATE device_conditions SET active = false"
                         " WHERE device_id = %s AND condition = %s", [device_id, condition])
