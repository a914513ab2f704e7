"""Inhibition (issue 16): a burning building's detector-offline ticket does not page its
technician while the fire incident is open; its page waits as 'held', naming the incident,
and goes out when the incident is resolved (or is cancelled if the ticket closed meanwhile).
Tickets elsewhere are paged as before. Real database; times on a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts import dispatch, loop
from alerts.rules import load_policy
from tests.alert_support import T0, alarm, build_ward, record


@pytest.fixture
def ward(db):
    build_ward(db)
    return db


def _ticket(conn, device: str, at) -> int:
    return conn.execute(
        "INSERT INTO maintenance_tickets (device_id, condition, opened_at, assigned_to)"
        " VALUES (%s, 'offline', %s, 'tech1') RETURNING id", [device, at]).fetchone()[0]


def _page(conn, ticket: int) -> tuple:
    return conn.execute("SELECT status, last_error FROM pages WHERE ticket_id = %s",
                        [ticket]).fetchone()


def test_a_burning_buildings_offline_detector_is_not_paged_until_the_fire_is_over(ward):
    incident = record(ward, [alarm("SD-1", 1, T0)], T0).opened[0]        # fire in B1
    burning = _ticket(ward, "SD-2", T0 + timedelta(minutes=3))            # B1
    closed = _ticket(ward, "CAM-1", T0 + timedelta(minutes=3))            # B1, back later
    elsewhere = _ticket(ward, "SD-3", T0 + timedelta(minutes=3))          # B2
    assert dispatch.ticket_pages(ward, T0 + timedelta(minutes=4)) == 3
    assert _page(ward, burning) == ("held", f"held back: incident {incident} is open in the"
                                            " building")
    assert _page(ward, elsewhere) == ("pending", None)
    ward.execute("UPDATE maintenance_tickets SET closed_at = %s, close_reason = 'cleared'"
                 " WHERE id = %s", [T0 + timedelta(minutes=5), closed])

    loop.resolve(ward, incident, "api:gw1-phone", "real_fire", "kitchen fire, put out",
                 load_policy(), now=T0 + timedelta(minutes=20))
    assert _page(ward, burning) == ("pending", None)            # the technician now
    assert _page(ward, closed) == ("cancelled",
                                   "the ticket closed while the fire incident was open")


def test_a_ticket_opened_before_the_fire_is_paged_as_usual(ward):
    before = _ticket(ward, "SD-2", T0 - timedelta(minutes=10))
    record(ward, [alarm("SD-1", 1, T0)], T0)
    dispatch.ticket_pages(ward, T0 + timedelta(minutes=1))
    assert _page(ward, before) == ("pending", None)
