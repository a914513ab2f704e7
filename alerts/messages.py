"""What a page says: the JSON every channel carries, with a title and body for people.

The app deduplicates on `page_id` (one per incident, step, person and channel) and groups
by `key` (one per incident or ticket); docs/alerts.md documents the fields. Text is
Simplified Chinese first, English second: the people paged read Chinese.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict

import msgspec

_SEVERITY = {"warning": ("火警预警", "Fire warning"), "confirmed": ("确认火警", "Confirmed fire")}
_CONDITION = {
    "offline": ("设备离线", "device offline"), "low_battery": ("电量低", "low battery"),
    "tamper": ("设备被拆", "tampered"), "fault": ("设备故障", "device fault"),
    "occlusion": ("镜头遮挡", "camera occluded"), "video_loss": ("视频丢失", "video lost"),
    "false_alarms": ("频繁误报", "repeated false alarms"),
}


class OutboxRow(NamedTuple):
    """One claimed page with what its message needs: alerts.dispatch._CLAIM's columns, by
    name. A page is an incident's or a ticket's (pages.incident_id or ticket_id), and the
    other one's columns are None: they come through LEFT JOINs. A tuple: made in 0.3 us
    against a frozen dataclass's 2.4 us, for every page of a burst (issue 18)."""
    page_id: int
    incident_id: int | None
    ticket_id: int | None
    step: int
    worker_id: str | None           # None for the fire-service hook
    channel: str
    payload: dict[str, Any]         # the ladder's rung details (ladder.payload_of)
    attempts: int
    created_at: datetime
    worker_channels: dict[str, str] | None   # channel -> address (workers.channels)
    incident_state: str | None
    opened_at: datetime | None
    alert_count: int | None
    condition: str | None
    device_id: str | None
    ticket_detail: str | None
    building_id: str
    address: str
    lat: float
    lon: float
    grid_id: str
    community_id: str


class Building(TypedDict):
    id: str
    address: str
    lat: float
    lon: float
    grid_id: str
    community_id: str


class Page(TypedDict):
    """The JSON every channel carries (docs/alerts.md): the fields of every page, then an
    incident's or a ticket's, in the order they are written."""
    v: int
    page_id: int
    step: int
    sent_at: str
    building: Building
    kind: Literal["incident", "ticket"]
    key: str
    incident_id: NotRequired[int]
    severity: NotRequired[str]
    hazard: NotRequired[str]
    rung: NotRequired[int | None]
    roles: NotRequired[list[str]]
    opened_at: NotRequired[str]
    alert_count: NotRequired[int]
    ticket_id: NotRequired[int]
    condition: NotRequired[str]
    device_id: NotRequired[str]
    title: str
    body: str
    url: NotRequired[str]


def page(row: OutboxRow, now: datetime, console_url: str | None) -> Page:
    """The page for one claimed outbox row."""
    step = row.payload or {}
    building = Building(id=row.building_id, address=row.address, lat=row.lat, lon=row.lon,
                        grid_id=row.grid_id, community_id=row.community_id)
    sent_at = now.isoformat()
    if row.incident_id is not None:
        # NOT NULL in incidents, which an incident's page always joins.
        assert row.opened_at is not None and row.alert_count is not None
        severity = step.get("severity", "warning")
        zh, en = _SEVERITY[severity]
        out = Page(v=1, page_id=row.page_id, step=row.step, sent_at=sent_at, building=building,
                   kind="incident", key=f"incident-{row.incident_id}",
                   incident_id=row.incident_id, severity=severity, hazard="fire",
                   rung=step.get("rung"), roles=step.get("roles", []),
                   opened_at=row.opened_at.isoformat(), alert_count=row.alert_count,
                   title=f"{zh} {en}: {row.address}",
                   body=(f"{row.address}（网格 {row.grid_id}）{row.alert_count} 次报警，请立即确认"
                         f"并到场。{row.address} (grid {row.grid_id}): {row.alert_count} "
                         f"alert(s); acknowledge and go now."))
        if console_url:
            out["url"] = f"{console_url.rstrip('/')}/incidents/{row.incident_id}"
        return out
    # NOT NULL in maintenance_tickets, which a ticket's page always joins.
    assert (row.ticket_id is not None and row.condition is not None
            and row.device_id is not None)
    zh, en = _CONDITION.get(row.condition, (row.condition, row.condition))
    return Page(v=1, page_id=row.page_id, step=row.step, sent_at=sent_at, building=building,
                kind="ticket", key=f"ticket-{row.ticket_id}", ticket_id=row.ticket_id,
                condition=row.condition, device_id=row.device_id,
                title=f"维修工单 {zh} / Maintenance: {en}",
                body=f"{row.device_id} @ {row.address}: {row.ticket_detail}")


# The same bytes as json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
# (keys in insertion order, UTF-8 unescaped; tests/test_messages.py holds the two together)
# in ~0.8 us instead of ~6.9 us a page: 10,000 pages of a timer burst are 60 ms of one core.
_ENCODER = msgspec.json.Encoder()


def encode(message: Page) -> bytes:
    return _ENCODER.encode(message)
