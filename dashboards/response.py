"""Response (响应时效): for duty officers and the street office, the weekly and monthly
review. How fast grid workers acknowledge, arrive and resolve, per grid and community
(p50/p90), how many alarms were false, how many went beyond the grid, and the trend.

The figures follow the weekly report (alerts/reports.py): an incident belongs to the range
in which it was opened; acknowledge, arrive and resolve count only when they happened before
the range's end; times are seconds from opened_at, percentiles by percentile_cont; the
false-alarm rate is (cooking_steam + dust_insects + device_fault) / (resolved - test_drill).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    ESCALATED,
    FALSE_ALARM_CAUSES,
    SCOPE_WHERE,
    TIME_ZONE,
    Sql,
    area_variables,
    base,
    scope,
    sized,
)

UID = "firegrid-response"


def _timers_cte(extra: str = "") -> str:
    return f"""
WITH x AS (
  SELECT c.id AS community_id, c.name AS community, g.id AS grid, i.cause{extra},
         i.resolved_at < $__timeTo() AS done,
         {ESCALATED} AS escalated,
         CASE WHEN i.acknowledged_at < $__timeTo()
              THEN extract(epoch FROM i.acknowledged_at - i.opened_at)::float8 END AS ack_s,
         CASE WHEN i.on_site_at < $__timeTo()
              THEN extract(epoch FROM i.on_site_at - i.opened_at)::float8 END AS arrive_s,
         CASE WHEN i.resolved_at < $__timeTo()
              THEN extract(epoch FROM i.resolved_at - i.opened_at)::float8 END AS resolve_s
  FROM incidents i
  {scope("i.building_id")}
  WHERE $__timeFilter(i.opened_at) AND {SCOPE_WHERE}
)"""


_PERCENTILES = f"""
       count(*) AS "事件 incidents",
       count(*) FILTER (WHERE done) AS "办结 resolved",
       count(*) FILTER (WHERE escalated) AS "越级 escalated",
       round((count(*) FILTER (WHERE done AND cause IN {FALSE_ALARM_CAUSES})::numeric
              / nullif(count(*) FILTER (WHERE done AND cause <> 'test_drill'), 0)), 3)
         AS "误报率 false-alarm rate",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_s) AS "响应 ack p50",
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_s) AS "响应 ack p90",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY arrive_s) AS "到场 arrive p50",
       percentile_cont(0.9) WITHIN GROUP (ORDER BY arrive_s) AS "到场 arrive p90",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_s) AS "办结 resolve p50",
       percentile_cont(0.9) WITHIN GROUP (ORDER BY resolve_s) AS "办结 resolve p90"
"""

BY_GRID = _timers_cte() + f"""
SELECT community AS "社区 community", grid AS "网格 grid",{_PERCENTILES}
FROM x
GROUP BY community, grid
ORDER BY "响应 ack p90" DESC NULLS LAST, grid
"""

BY_COMMUNITY = _timers_cte() + f"""
SELECT community AS "社区 community",{_PERCENTILES}
FROM x
GROUP BY community_id, community
ORDER BY community_id
"""

FALSE_ALARMS = f"""
SELECT round(count(*) FILTER (WHERE i.cause IN {FALSE_ALARM_CAUSES})::numeric
             / nullif(count(*) FILTER (WHERE i.cause <> 'test_drill'), 0), 3)
         AS "误报率 false-alarm rate",
       count(*) FILTER (WHERE i.cause IN {FALSE_ALARM_CAUSES}) AS "误报 false alarms",
       count(*) FILTER (WHERE i.cause = 'real_fire') AS "真实火情 real fires",
       count(*) FILTER (WHERE i.cause = 'test_drill') AS "测试演练 tests and drills"
FROM incidents i
{scope("i.building_id")}
WHERE $__timeFilter(i.opened_at) AND i.resolved_at < $__timeTo() AND {SCOPE_WHERE}
"""

CAUSES = f"""
SELECT i.cause AS "原因 cause", count(*) AS "事件 incidents"
FROM incidents i
{scope("i.building_id")}
WHERE $__timeFilter(i.opened_at) AND i.resolved_at < $__timeTo() AND {SCOPE_WHERE}
GROUP BY i.cause
ORDER BY 2 DESC
"""

ESCALATIONS = f"""
SELECT $__timeGroupAlias(i.opened_at, $__interval),
       count(*) AS "事件 incidents",
       count(*) FILTER (WHERE {ESCALATED}) AS "越级 escalated"
FROM incidents i
{scope("i.building_id")}
WHERE $__timeFilter(i.opened_at) AND {SCOPE_WHERE}
GROUP BY 1
ORDER BY 1
"""


def _trend(unit: str) -> tuple[str, str]:
    """Counts and response times per calendar week or month of the street's time zone."""
    bucket = (f"date_trunc('{unit}', i.opened_at AT TIME ZONE '{TIME_ZONE}')"
              f" AT TIME ZONE '{TIME_ZONE}'")
    source = f"""
FROM incidents i
{scope("i.building_id")}
WHERE $__timeFilter(i.opened_at) AND {SCOPE_WHERE}
GROUP BY 1
ORDER BY 1"""
    counts = f"""
SELECT {bucket} AS time,
       count(*) AS "事件 incidents",
       count(*) FILTER (WHERE i.cause IN {FALSE_ALARM_CAUSES}) AS "误报 false alarms",
       count(*) FILTER (WHERE {ESCALATED}) AS "越级 escalated"{source}
"""
    ack = "extract(epoch FROM i.acknowledged_at - i.opened_at)"
    times = f"""
SELECT {bucket} AS time,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY {ack})
         AS "响应 ack p50",
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {ack})
         AS "响应 ack p90",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.on_site_at - i.opened_at))
         AS "到场 arrive p50",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.resolved_at - i.opened_at))
         AS "办结 resolve p50"{source}
"""
    return counts, times


WEEKLY_COUNTS, WEEKLY_TIMES = _trend("week")
MONTHLY_COUNTS, MONTHLY_TIMES = _trend("month")

_SECONDS = [dm.DynamicConfigValue(id_val="unit", value="s")]
_RATE = [dm.DynamicConfigValue(id_val="unit", value="percentunit")]


def _area_table(title: str, sql: str, description: str) -> table.Panel:
    panel = table.Panel().title(title).with_target(Sql(sql)).unit("none")
    panel.override_by_regexp(".*p[59]0$", _SECONDS)
    panel.override_by_name("误报率 false-alarm rate", _RATE)
    return sized(panel, 24, 9, description)


def _trend_panel(title: str, sql: str, time_from: str, unit: str, description: str):
    return sized(
        timeseries.Panel().title(title).with_target(Sql(sql, "time_series"))
        .time_from(time_from).unit(unit).draw_style(cm.GraphDrawStyle.LINE)
        .point_size(6).show_points(cm.VisibilityMode.ALWAYS).span_nulls(True),
        12, 8, description)


def build() -> dash.Dashboard:
    d = base(UID, "firegrid · 响应时效 Response",
             "Time to acknowledge, arrive and resolve per grid and community (p50/p90), the "
             "false-alarm rate, escalations and the weekly and monthly trend. Figures as in "
             "the weekly report.", "now-30d", "5m", ["response"])
    d.variables(area_variables())
    d.with_panel(_area_table(
        "网格响应时效 Response by grid", BY_GRID,
        "Incidents opened in the time range, per grid: time to acknowledge, arrive on site "
        "and resolve (seconds from opening; only what happened before the range's end), "
        "p50 and p90; the slowest grids first."))
    d.with_panel(_area_table(
        "社区响应时效 Response by community", BY_COMMUNITY,
        "The same per community."))
    d.with_panel(sized(
        stat.Panel().title("误报 False alarms").with_target(Sql(FALSE_ALARMS))
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .override_by_name("误报率 false-alarm rate", _RATE),
        8, 6, "Of the incidents opened and resolved in the range: the false-alarm rate "
        "(cooking/steam, dust/insects, device fault over everything but tests and drills) "
        "and the counts behind it."))
    d.with_panel(sized(
        table.Panel().title("办结原因 Causes").with_target(Sql(CAUSES)),
        6, 6, "Resolved incidents by the cause the worker recorded."))
    d.with_panel(sized(
        timeseries.Panel().title("越级上报 Escalations")
        .with_target(Sql(ESCALATIONS, "time_series"))
        .interval("1h").draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60),
        10, 6, "Incidents opened per interval, and those that went beyond the grid "
        "(confirmed fires, and warnings that paged rung 1 or higher)."))
    d.with_panel(_trend_panel(
        "周趋势 Weekly trend", WEEKLY_COUNTS, "182d", "short",
        f"Per calendar week ({TIME_ZONE}) over the last 26 weeks: incidents, false alarms, "
        "escalations."))
    d.with_panel(_trend_panel(
        "周响应时效 Weekly response times", WEEKLY_TIMES, "182d", "s",
        "Per calendar week: p50/p90 time to acknowledge, p50 to arrive and to resolve."))
    d.with_panel(_trend_panel(
        "月趋势 Monthly trend", MONTHLY_COUNTS, "365d", "short",
        f"Per calendar month ({TIME_ZONE}) over the last year: incidents, false alarms, "
        "escalations."))
    d.with_panel(_trend_panel(
        "月响应时效 Monthly response times", MONTHLY_TIMES, "365d", "s",
        "Per calendar month: p50/p90 time to acknowledge, p50 to arrive and to resolve."))
    return d
