"""Daily, weekly and monthly reports per grid or community (日收集、快办理、周反馈、月通报).

    period_bounds   the local calendar day, ISO week (Mon-Sun) or month holding a date
    build_report    one Report from two aggregate queries (incidents, maintenance tickets)
    to_csv          one CSV row per area plus the total row
    to_text         a readable summary, Chinese labels first, English after

What the figures mean, where the issue leaves it open:
- An incident belongs to the period in which it was *opened* (local time, half-open
  [start, end)). Everything else is measured *as of the period end*: resolved means
  resolved before the end, the cause counts only then, and the acknowledge/arrive/resolve
  times include only what had happened by the end. So a report for a past period gives
  the same figures whenever it is run (a later reopening aside: the incidents row keeps only
  the current resolution), and resolved + open_at_end = opened.
- False-alarm rate = (cooking_steam + dust_insects + device_fault) / (resolved - test_drill).
  A test or drill is neither a false alarm nor a real one, so it is left out of both; the
  rate is None when nothing but drills (or nothing) was resolved.
- Escalated = the incident was confirmed (a confirmed fire goes to every level at once), or
  the warning ladder paged a rung >= 1 before the period end (an incident_log 'notified'
  row; 'skipped' rungs paged nobody and do not count). With the default ladder rung 1 is
  the grid leader, i.e. the first worker did not acknowledge in time.
- Times are seconds from opened_at; p50/p90/p99 by percentile_cont (interpolated), None
  when no incident of the area got that far.
- Areas are the building's current grid and community. An area gets a row when it had an
  incident or a maintenance ticket opened in the period (the weekly report goes to the same
  people); the total row covers the whole scope, its percentiles over all incidents.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import dict_row

from alerts.errors import Invalid, NotFound
from alerts.loop import CAUSES, FALSE_ALARM_CAUSES
from devices.monitor import CONDITIONS

Period = Literal["day", "week", "month"]
By = Literal["grid", "community"]

TIMERS = ("ack", "arrive", "resolve")


class Percentiles(NamedTuple):
    n: int                   # incidents measured
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class AreaRow:
    area_id: str | None      # None on the total row
    area_name: str | None
    community_id: str | None
    community_name: str | None
    opened: int
    confirmed: int
    resolved: int
    open_at_end: int
    causes: dict[str, int]   # every cause in CAUSES, resolved by the period end
    false_alarm_rate: float | None
    escalated: int
    times: dict[str, Percentiles]   # "ack", "arrive", "resolve"
    tickets: dict[str, int]  # maintenance tickets opened, every condition in CONDITIONS

    @property
    def false_alarms(self) -> int:
        return sum(self.causes[c] for c in FALSE_ALARM_CAUSES)


@dataclass(frozen=True)
class Report:
    period: Period
    start: datetime          # local, inclusive
    end: datetime            # local, exclusive
    by: By
    community_id: str | None
    street_id: str | None
    rows: list[AreaRow]      # by community id, then grid id
    total: AreaRow


# How far build_report is, for a progress display: (step, done, total, detail). One step,
# BUILDING, over its two aggregate queries; detail names the one running, Chinese first.
# Nothing is drawn here: the CLI draws it.
Progress = Callable[[str, int, int, str], None]

BUILDING = "生成报表 building the report"
_QUERIES = ("统计告警事件 counting incidents", "统计维保工单 counting maintenance tickets")


def _quiet(step: str, done: int, total: int, detail: str) -> None:
    pass


def period_bounds(period: Period, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The local calendar period holding `day`, as [start, end). Built from dates, never by
    adding hours to an aware datetime, so a day is a calendar day in any zone."""
    d = date(day.year, day.month, day.day)
    if period == "day":
        first, after = d, d + timedelta(days=1)
    elif period == "week":
        first = d - timedelta(days=d.weekday())
        after = first + timedelta(days=7)
    elif period == "month":
        first = d.replace(day=1)
        after = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    else:
        raise Invalid("period", f"must be day, week or month, not {period!r}")
    return (datetime(first.year, first.month, first.day, tzinfo=tz),
            datetime(after.year, after.month, after.day, tzinfo=tz))


# The grouping columns per `by`: area id and name, community id and name. Interpolated into
# the SQL, so never the caller's text.
_AREA = {"grid": ("g.id", "g.name", "g.community_id", "c.name"),
         "community": ("c.id", "c.name", "c.id", "c.name")}
_SCOPE = """
    JOIN grids g ON g.id = b.grid_id
    JOIN communities c ON c.id = g.community_id
    WHERE {at} >= %(start)s AND {at} < %(end)s
      AND (%(community)s::text IS NULL OR c.id = %(community)s)
      AND (%(street)s::text IS NULL OR c.street_id = %(street)s)
"""


def _select_area(by: str) -> str:
    names = ("area_id", "area_name", "community_id", "community_name")
    return ", ".join(f"{expr} AS {name}" for expr, name in zip(_AREA[by], names, strict=True))


def _incidents_sql(by: str) -> str:
    causes = ",\n".join(f"count(*) FILTER (WHERE done AND cause = '{c}') AS {c}" for c in CAUSES)
    timers = ",\n".join(
        f"""percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY {t}_s)
                FILTER (WHERE {t}_s IS NOT NULL) AS {t}_p,
            count({t}_s) AS {t}_n"""
        for t in TIMERS)
    return f"""
    WITH x AS (
        SELECT {_select_area(by)}, i.severity, i.cause,
               i.resolved_at < %(end)s AS done,
               i.severity = 'confirmed' OR EXISTS (
                   SELECT 1 FROM incident_log l
                   WHERE l.incident_id = i.id AND l.action = 'notified' AND l.at < %(end)s
                     AND l.detail->>'ladder' = 'warning'
                     AND (l.detail->>'rung')::int >= 1) AS escalated,
               CASE WHEN i.acknowledged_at < %(end)s
                    THEN extract(epoch FROM i.acknowledged_at - i.opened_at)::float8 END AS ack_s,
               CASE WHEN i.on_site_at < %(end)s
                    THEN extract(epoch FROM i.on_site_at - i.opened_at)::float8 END AS arrive_s,
               CASE WHEN i.resolved_at < %(end)s
                    THEN extract(epoch FROM i.resolved_at - i.opened_at)::float8 END AS resolve_s
        FROM incidents i
        JOIN buildings b ON b.id = i.building_id
        {_SCOPE.format(at="i.opened_at")}
    )
    SELECT area_id, area_name, community_id, community_name,
           count(*) AS opened,
           count(*) FILTER (WHERE severity = 'confirmed') AS confirmed,
           count(*) FILTER (WHERE done) AS resolved,
           count(*) FILTER (WHERE escalated) AS escalated,
           {causes},
           {timers}
    FROM x
    GROUP BY GROUPING SETS ((area_id, area_name, community_id, community_name), ())
    """


def _tickets_sql(by: str) -> str:
    counts = ",\n".join(f"count(*) FILTER (WHERE t.condition = '{c}') AS {c}" for c in CONDITIONS)
    return f"""
    SELECT {_select_area(by)}, {counts}
    FROM maintenance_tickets t
    JOIN devices d ON d.id = t.device_id
    JOIN buildings b ON b.id = d.building_id
    {_SCOPE.format(at="t.opened_at")}
    GROUP BY GROUPING SETS (({', '.join(_AREA[by])}), ())
    """


def build_report(conn: psycopg.Connection[Any], period: Period, day: date, *, by: By = "grid",
                 tz: str | ZoneInfo = "Asia/Shanghai", community_id: str | None = None,
                 street_id: str | None = None, progress: Progress = _quiet) -> Report:
    """The report of the period holding `day`, per grid or community, optionally limited to
    one community or street (NotFound when it does not exist). `progress` hears each of
    the two queries start, and their end (see Progress)."""
    if by not in _AREA:
        raise Invalid("by", f"must be grid or community, not {by!r}")
    if isinstance(tz, str):
        try:
            tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise Invalid("tz", f"unknown time zone {tz!r}") from exc
    start, end = period_bounds(period, day, tz)
    for table, ident in (("communities", community_id), ("street_offices", street_id)):
        if ident is not None and conn.execute(
                f"SELECT 1 FROM {table} WHERE id = %s", [ident]).fetchone() is None:
            raise NotFound("community" if table == "communities" else "street", ident)
    params = {"start": start, "end": end, "community": community_id, "street": street_id}
    with conn.cursor(row_factory=dict_row) as cur:
        progress(BUILDING, 0, 2, _QUERIES[0])
        incidents = cur.execute(_incidents_sql(by), params).fetchall()
        progress(BUILDING, 1, 2, _QUERIES[1])
        tickets = cur.execute(_tickets_sql(by), params).fetchall()
        progress(BUILDING, 2, 2, _QUERIES[1])

    areas: dict[str | None, dict[str, Any]] = {}
    for row in incidents:
        areas[row["area_id"]] = {"names": row, "incidents": row}
    for row in tickets:
        areas.setdefault(row["area_id"], {"names": row})["tickets"] = row
    areas.setdefault(None, {"names": {}})  # an empty scope still has its (zero) total
    rows = sorted((_area_row(a) for key, a in areas.items() if key is not None),
                  key=lambda r: (r.community_id or "", r.area_id or ""))
    return Report(period=period, start=start, end=end, by=by, community_id=community_id,
                  street_id=street_id, rows=rows, total=_area_row(areas[None]))


def _area_row(area: Mapping[str, Any]) -> AreaRow:
    names, inc, tic = area["names"], area.get("incidents") or {}, area.get("tickets") or {}
    causes = {c: inc.get(c, 0) for c in CAUSES}
    resolved = inc.get("resolved", 0)
    judged = resolved - causes["test_drill"]
    false_alarms = sum(causes[c] for c in FALSE_ALARM_CAUSES)
    times = {}
    for t in TIMERS:
        p = inc.get(f"{t}_p") or [None, None, None]
        times[t] = Percentiles(inc.get(f"{t}_n", 0), *p)
    return AreaRow(
        area_id=names.get("area_id"), area_name=names.get("area_name"),
        community_id=names.get("community_id"), community_name=names.get("community_name"),
        opened=inc.get("opened", 0), confirmed=inc.get("confirmed", 0), resolved=resolved,
        open_at_end=inc.get("opened", 0) - resolved, causes=causes,
        false_alarm_rate=false_alarms / judged if judged else None,
        escalated=inc.get("escalated", 0), times=times,
        tickets={c: tic.get(c, 0) for c in CONDITIONS})


# --- output ---------------------------------------------------------------------------

CSV_HEADER = (
    ["period", "period_start", "period_end", "level", "area_id", "area_name", "community_id",
     "community_name", "opened", "confirmed", "resolved", "open_at_end"]
    + [f"cause_{c}" for c in CAUSES]
    + ["false_alarm_rate", "escalated"]
    + [f"{t}_{p}_s" for t in TIMERS for p in ("p50", "p90", "p99")]
    + [f"tickets_{c}" for c in CONDITIONS])


def to_csv(report: Report, out: TextIO) -> None:
    """One row per area, then the total row (level 'total', no area). Seconds to the
    millisecond, the rate to four places; empty where there is no value."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for level, row in [(report.by, r) for r in report.rows] + [("total", report.total)]:
        writer.writerow(
            [report.period, report.start.isoformat(), report.end.isoformat(), level,
             row.area_id or "", row.area_name or "", row.community_id or "",
             row.community_name or "", row.opened, row.confirmed, row.resolved,
             row.open_at_end]
            + [row.causes[c] for c in CAUSES]
            + [_num(row.false_alarm_rate, 4), row.escalated]
            + [_num(getattr(row.times[t], p), 3) for t in TIMERS for p in ("p50", "p90", "p99")]
            + [row.tickets[c] for c in CONDITIONS])


def _num(value: float | None, places: int) -> str:
    if value is None:
        return ""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


_PERIOD_LABEL = {"day": "日报 daily report", "week": "周报 weekly report",
                 "month": "月报 monthly report"}
_LEVEL_LABEL = {"grid": "网格 grid", "community": "社区 community"}
_CAUSE_LABEL = {"real_fire": "真实火情 real fire", "cooking_steam": "油烟蒸汽 cooking/steam",
                "dust_insects": "粉尘虫害 dust/insects", "device_fault": "设备故障 device fault",
                "test_drill": "测试演练 test/drill"}
_TIMER_LABEL = {"ack": "响应用时 time to acknowledge", "arrive": "到场用时 time to arrive",
                "resolve": "办结用时 time to resolve"}
_CONDITION_LABEL = {"offline": "离线 offline", "low_battery": "低电量 low battery",
                    "tamper": "防拆 tamper", "fault": "故障 fault", "occlusion": "遮挡 occlusion",
                    "video_loss": "视频丢失 video loss", "false_alarms": "频繁误报 false alarms"}


def to_text(report: Report) -> str:
    """The summary for people: one block per area, then the total."""
    last = (report.end - timedelta(days=1)).date()
    lines = [f"{_PERIOD_LABEL[report.period]} · {report.start.date()} – {last}"
             f" ({report.start.tzinfo}) · 按{_LEVEL_LABEL[report.by]}"]
    if report.street_id or report.community_id:
        scope = [f"街道 street {report.street_id}"] if report.street_id else []
        scope += [f"社区 community {report.community_id}"] if report.community_id else []
        lines.append("范围 scope: " + " · ".join(scope))
    if not report.rows:
        lines.append("本期无告警事件或维保工单 no incidents or maintenance tickets in this period")
    for row in report.rows:
        title = f"{_LEVEL_LABEL[report.by]} {row.area_id} {row.area_name}"
        if report.by == "grid":
            title += f" · 社区 community {row.community_id} {row.community_name}"
        lines += ["", title, *_block(row)]
    lines += ["", "合计 total", *_block(report.total)]
    return "\n".join(lines) + "\n"


def _block(row: AreaRow) -> list[str]:
    judged = row.resolved - row.causes["test_drill"]
    rate = "—" if row.false_alarm_rate is None else (
        f"{row.false_alarm_rate:.1%} ({row.false_alarms}/{judged})")
    lines = [
        f"  告警事件 incidents {row.opened} · 确认火情 confirmed {row.confirmed} · "
        f"已办结 resolved {row.resolved} · 期末未结 open at period end {row.open_at_end} · "
        f"越级上报 escalated {row.escalated}",
        "  办结原因 causes: " + " · ".join(f"{_CAUSE_LABEL[c]} {row.causes[c]}" for c in CAUSES),
        f"  误报率 false-alarm rate {rate}",
    ]
    for t in TIMERS:
        p = row.times[t]
        lines.append(f"  {_TIMER_LABEL[t]} (n={p.n}): p50 {_duration(p.p50)} · "
                     f"p90 {_duration(p.p90)} · p99 {_duration(p.p99)}")
    opened = [f"{_CONDITION_LABEL[c]} {n}" for c, n in row.tickets.items() if n]
    lines.append(f"  维保工单 maintenance tickets {sum(row.tickets.values())}"
                 + (": " + " · ".join(opened) if opened else ""))
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
