"""A page's bytes (alerts/messages.py) are msgspec's, and must stay what json.dumps made
them before: the app parses them. Byte for byte for every string and every coordinate on
Earth; a float far outside them may be spelled differently (1e16 for json's 1e+16), the
same number to every JSON parser. Hand-made pages for the characters people type into
addresses, then drawn ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import messages
from alerts.messages import OutboxRow

NOW = datetime(2026, 12, 5, 8, 30, 1, 123456, tzinfo=UTC)
RUNG = {"severity": "warning", "ladder": "warning", "rung": 1, "roles": ["community_duty"],
        "muted": False}


def _row(address: str = "石厦村 3 巷 12 号", *, lat: float = 22.52, lon: float = 114.05,
         ticket: bool = False, detail: str = "电量 8%", alert_count: int = 3) -> OutboxRow:
    return OutboxRow(
        page_id=123456, incident_id=None if ticket else 98765, ticket_id=77 if ticket else None,
        step=2, worker_id="BC01-D", channel="mqtt", payload={} if ticket else RUNG,
        attempts=0, created_at=NOW, worker_channels={}, incident_state="notified",
        opened_at=NOW - timedelta(minutes=3), alert_count=alert_count,
        condition="low_battery" if ticket else None, device_id="SD-0001" if ticket else None,
        ticket_detail=detail if ticket else None, building_id="B-0042", address=address,
        lat=lat, lon=lon, grid_id="G-07", community_id="C-01")


def _same(row: OutboxRow, console_url: str | None = None) -> None:
    page = messages.page(row, NOW, console_url)
    assert json.loads(messages.encode(page)) == page
    if all(c == 0 or 1e-4 <= abs(c) <= 180 for c in (row.lat, row.lon)):
        assert messages.encode(page) == json.dumps(page, separators=(",", ":"),
                                                   ensure_ascii=False).encode()


def test_an_incident_page_and_a_ticket_page() -> None:
    _same(_row())
    _same(_row(), "https://duty.example.cn/console/")
    _same(_row(ticket=True))


def test_what_people_type_into_an_address() -> None:
    for address in ['3 巷 "老屋" 12 号', "back\\slash", "tab\there", "new\nline",
                    "\x00\x1f\x7f", "\u2028\u2029", "emoji 🔥🚒", "ｆｕｌｌ ｗｉｄｔｈ", "",
                    "'single'", "</script>"]:
        _same(_row(address))
        _same(_row(ticket=True, detail=address))


def test_coordinates_and_counts_at_their_edges() -> None:
    for lat, lon in [(0.0, -0.0), (-90.0, 180.0), (22.123456789012345, 114.1), (1e-4, 0.1),
                     (1e-7, 1e16), (5e-324, 1.7976931348623157e308)]:
        _same(_row(lat=lat, lon=lon))
    for count in (0, 1, 2**31 - 1, 2**63 - 1):
        _same(_row(alert_count=count))


@settings(max_examples=500, deadline=None)
@given(address=st.text(max_size=80), detail=st.text(max_size=40),
       lat=st.floats(allow_nan=False, allow_infinity=False) | st.floats(-90, 90),
       lon=st.floats(allow_nan=False, allow_infinity=False) | st.floats(-180, 180),
       count=st.integers(min_value=0, max_value=2**63 - 1), ticket=st.booleans())
def test_drawn_pages(address: str, detail: str, lat: float, lon: float, count: int,
                     ticket: bool) -> None:
    _same(_row(address, lat=lat, lon=lon, ticket=ticket, detail=detail, alert_count=count))
