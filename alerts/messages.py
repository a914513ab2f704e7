"""What a page says: the JSON every channel carries, with a title and body for people.

The app deduplicates on `page_id` (one per incident, step, person and channel) and groups
by `key` (one per incident or ticket); docs/alerts.md documents the fields. Text is
Simplified Chinese first, English second: the people paged read Chinese.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

_SEVERITY = {"warning": ("火警预警", "Fire warning"), "confirmed": ("确认火警", "Confirmed fire")}
_CONDITION = {
    "offline": ("设备离线", "device offline"), "low_battery": ("电量低", "low battery"),
    "tamper": ("设备被拆", "tampered"), "fault": ("设备故障", "device fault"),
    "occlusion": ("镜头遮挡", "camera occluded"), "video_loss": ("视频丢失", "video lost"),
    "false_alarms": ("频繁误报", "repeated false alarms"),
}


def page(row: Any, now: datetime, console_url: str | None) -> dict:
    """The page for one claimed outbox row (alerts.dispatch._CLAIM's columns)."""
    step = row.payload or {}
    building = {"id": row.building_id, "address": row.address, "lat": row.lat,
                "lon": row.lon, "grid_id": row.grid_id, "community_id": row.community_id}
    out: dict[str, Any] = {"v": 1, "page_id": row.page_id, "step": row.step,
                           "sent_at": now.isoformat(), "building": building}
    if row.incident_id is not None:
        severity = step.get("severity", "warning")
        zh, en = _SEVERITY[severity]
        out.update(kind="incident", key=f"incident-{row.incident_id}",
                   incident_id=row.incident_id, severity=severity, hazard="fire",
                   rung=step.get("rung"), roles=step.get("roles", []),
                   opened_at=row.opened_at.isoformat(), alert_count=row.alert_count,
                   title=f"{zh} {en}: {row.address}",
                   body=(f"{row.address}（网格 {row.grid_id}）{row.alert_count} 次报警，请立即确认"
                         f"并到场。{row.address} (grid {row.grid_id}): {row.alert_count} "
                         f"alert(s); acknowledge and go now."))
        if console_url:
            out["url"] = f"{console_url.rstrip('/')}/incidents/{row.incident_id}"
    else:
        zh, en = _CONDITION.get(row.condition, (row.condition, row.condition))
        out.update(kind="ticket", key=f"ticket-{row.ticket_id}", ticket_id=row.ticket_id,
                   condition=row.condition, device_id=row.device_id,
                   title=f"维修工单 {zh} / Maintenance: {en}",
                   body=f"{row.device_id} @ {row.address}: {row.ticket_detail}")
    return out


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
