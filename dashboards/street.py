"""Street overview (街道总览): for the street command centre and community duty officers, on
the wall screen. Which devices are up, what alarmed today, where the open incidents are, and
which ones have gone beyond the grid."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from dashboards.common import (
    DEVICE_STATUS,
    ESCALATED,
    SCOPE_WHERE,
    TIME_ZONE,
    Sql,
    area_variables,
    base,
    scope,
    sized,
)

UID = "firegrid-street"

DEVICES_NOW = f"""
SELECT count(*) FILTER (WHERE status = 'online') AS "在线 online",
       count(*) FILTER (WHERE status = 'offline') AS "离线 offline",
       count(*) FILTER (WHERE status = 'never_heard') AS "未上线 never heard"
FROM (
  SELECT {DEVICE_STATUS} AS status
  FROM devices d
  LEFT JOIN device_status s ON s.device_id = d.id
  {scope("d.building_id")}
  WHERE d.state <> 'retired' AND {SCOPE_WHERE}
) x
"""

DEVICES_BY_AREA = f"""
SELECT c.name AS "社区 community", g.id AS "网格 grid",
       count(*) FILTER (WHERE x.status = 'online') AS "在线 online",
       count(*) FILTER (WHERE x.status = 'offline') AS "离线 offline",
       count(*) FILTER (WHERE x.status = 'never_heard') AS "未上线 never heard",
       round(100.0 * count(*) FILTER (WHERE x.status = 'online') / count(*), 1) AS "在线率 online %"
FROM (
  SELECT d.building_id, {DEVICE_STATUS} AS status
  FROM devices d
  LEFT JOIN device_status s ON s.device_id = d.id
  WHERE d.state <> 'retired'
) x
{scope("x.building_id")}
WHERE {SCOPE_WHERE}
GROUP BY c.name, g.id
ORDER BY "在线率 online %", g.id
"""

# "Today" is the street's calendar day, whatever the dashboard's time range.
TODAY = f"date_trunc('day', now() AT TIME ZONE '{TIME_ZONE}') AT TIME ZONE '{TIME_ZONE}'"

TODAY_COUNTS = f"""
SELECT (SELECT count(*) FROM alerts a {scope("a.building_id")}
        WHERE a.received_at >= {TODAY} AND {SCOPE_WHERE}) AS "今日报警 alarms today",
       (SELECT count(*) FROM incidents i {scope("i.building_id")}
        WHERE i.opened_at >= {TODAY} AND {SCOPE_WHERE}) AS "今日事件 incidents today",
       (SELECT count(*) FROM incidents i {scope("i.building_id")}
        WHERE i.state <> 'resolved' AND {SCOPE_WHERE}) AS "未办结 open incidents"
"""

ALARMS_OVER_TIME = f"""
SELECT $__timeGroupAlias(a.received_at, $__interval), a.rule AS metric, count(*) AS alarms
FROM alerts a
{scope("a.building_id")}
WHERE $__timeFilter(a.received_at) AND {SCOPE_WHERE}
GROUP BY 1, 2
ORDER BY 1
"""

OPEN_INCIDENTS_MAP = f"""
SELECT i.id AS incident, b.lat AS latitude, b.lon AS longitude, b.address,
       g.id AS grid, i.severity, i.state, i.alert_count,
       round(extract(epoch FROM now() - i.opened_at))::bigint AS open_s,
       CASE WHEN {ESCALATED} THEN 1 ELSE 0 END AS escalated
FROM incidents i
{scope("i.building_id")}
WHERE i.state <> 'resolved' AND {SCOPE_WHERE}
ORDER BY i.opened_at
"""

ESCALATED_INCIDENTS = f"""
SELECT i.id AS "事件 incident", i.opened_at AS "发生 opened", c.name AS "社区 community",
       g.id AS "网格 grid", b.address AS "地址 address", i.severity AS "级别 severity",
       i.state AS "状态 state", i.rung AS "梯级 rung",
       i.acknowledged_by AS "响应人 acknowledged by",
       round(extract(epoch FROM coalesce(i.resolved_at, now()) - i.opened_at))::bigint
         AS "历时 duration"
FROM incidents i
{scope("i.building_id")}
WHERE $__timeFilter(i.opened_at) AND {SCOPE_WHERE} AND {ESCALATED}
ORDER BY i.state = 'resolved', i.opened_at DESC
LIMIT 200
"""


def build() -> dash.Dashboard:
    d = base(UID, "firegrid · 街道总览 Street overview",
             "Devices up and down, today's alarms, open incidents on the map, incidents "
             "escalated beyond the grid. For the street command centre and community duty.",
             "now-24h", "30s", ["street"])
    d.variables(area_variables())
    d.with_panel(sized(
        stat.Panel().title("设备状态 Devices now").with_target(Sql(DEVICES_NOW))
        .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)),
        12, 5, "Registered, unretired devices in the chosen area: online (heard within "
        "its heartbeat allowance), offline (silent longer, as the maintenance monitor "
        "judges it) and never heard since registration."))
    d.with_panel(sized(
        stat.Panel().title("今日 Today").with_target(Sql(TODAY_COUNTS))
        .color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)),
        12, 5, f"Fire alerts and incidents since midnight ({TIME_ZONE}), and incidents "
        "open now, in the chosen area."))
    d.with_panel(sized(
        geomap.Panel().title("未办结事件地图 Open incidents").with_target(Sql(OPEN_INCIDENTS_MAP))
        .view(geomap.MapViewConfig().id("fit").lat(0).lon(0).zoom(15).max_zoom(19))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True)
                  .show_scale(True))
        .basemap(cb.MapLayerOptions().type("default").name("Basemap"))
        .layers([cb.MapLayerOptions().type("markers").name("Open incidents")
                 .location(cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS)
                           .latitude("latitude").longitude("longitude"))
                 .config({"showLegend": True,
                          "style": {"color": {"field": "escalated", "fixed": "orange"},
                                    "size": {"fixed": 10}, "symbol": {"fixed":
                                    "img/icons/marker/circle.svg", "mode": "fixed"},
                                    "text": {"field": "address", "mode": "field"}}})])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .thresholds(dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([
            dm.Threshold(value=None, color="orange"),
            dm.Threshold(value=1, color="red")])),
        14, 14, "Every open incident at its building (buildings.lat/lon); red once it has "
        "escalated beyond the grid. Hover for severity, state and how long it has been open."))
    d.with_panel(sized(
        timeseries.Panel().title("报警 Alarms").with_target(Sql(ALARMS_OVER_TIME, "time_series"))
        .interval("1m").unit("short").draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)),
        10, 14, "Fire alerts recorded by the alert core per interval, by rule, in the "
        "chosen area (redeliveries are counted once)."))
    d.with_panel(sized(
        table.Panel().title("越级上报事件 Incidents escalated beyond the grid")
        .with_target(Sql(ESCALATED_INCIDENTS)).unit("none")
        .override_by_name("历时 duration", [dm.DynamicConfigValue(id_val="unit", value="s")]),
        24, 9, "Incidents opened in the time range that went past grid level: confirmed "
        "fires (every level at once) and warnings whose ladder paged rung 1 or higher. "
        "Open ones first."))
    return d
