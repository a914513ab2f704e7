"""Device health (设备健康): for field technicians and whoever plans their rounds. Batteries,
signal, devices offline or never heard, open maintenance tickets, and the buildings that
need a visit most. Current state from device_status; trends from readings_daily (one row
per day, grid and kind, filled by the monitor from the readings_hourly continuous aggregate:
devices/rollup.py), never from raw readings."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    DEVICE_STATUS,
    FALSE_ALARM_CAUSES,
    SCOPE_WHERE,
    Sql,
    area_variables,
    base,
    scope,
    sized,
)

UID = "firegrid-device-health"

LOW_BATTERY_PCT = 20      # the detectors' own low_battery threshold (docs/protocol.md)
WEAK_RSRP_DBM = -110      # NB-IoT coverage below this is poor: retries, drained batteries

SUMMARY = f"""
SELECT count(*) FILTER (WHERE s.battery_pct <= {LOW_BATTERY_PCT}) AS "低电量 low battery",
       count(*) FILTER (WHERE s.rsrp_dbm < {WEAK_RSRP_DBM}) AS "弱信号 weak signal",
       count(*) FILTER (WHERE {DEVICE_STATUS} = 'offline') AS "离线 offline",
       count(*) FILTER (WHERE {DEVICE_STATUS} = 'never_heard') AS "未上线 never heard",
       (SELECT count(*) FROM maintenance_tickets t JOIN devices td ON td.id = t.device_id
        {scope("td.building_id")}
        WHERE t.closed_at IS NULL AND {SCOPE_WHERE}) AS "未结工单 open tickets"
FROM devices d
LEFT JOIN device_status s ON s.device_id = d.id
{scope("d.building_id")}
WHERE d.state <> 'retired' AND {SCOPE_WHERE}
"""

_DEVICE_COLUMNS = """d.id AS "设备 device", d.kind AS "类型 kind", g.id AS "网格 grid",
       b.address AS "地址 address", d.floor AS "楼层 floor", d.location AS "位置 location\""""



def _worst(column: str, label: str) -> str:
    """The 100 devices with the lowest `column` of their latest status."""
    return f"""
SELECT {_DEVICE_COLUMNS}, s.{column} AS "{label}", s.last_seen AS "最后上报 last seen"
FROM devices d
JOIN device_status s ON s.device_id = d.id
{scope("d.building_id")}
WHERE d.state <> 'retired' AND s.{column} IS NOT NULL AND {SCOPE_WHERE}
ORDER BY s.{column}, d.id
LIMIT 100
"""


LOWEST_BATTERIES = _worst("battery_pct", "电量 battery %")
WEAKEST_SIGNAL = _worst("rsrp_dbm", "信号 RSRP dBm")

OFFLINE = f"""
SELECT {_DEVICE_COLUMNS}, x.status AS "状态 status", d.state AS "登记 registry state",
       coalesce(s.last_seen, d.installed_at) AS "最后上报 last seen (or installed)",
       round(extract(epoch FROM now() - coalesce(s.last_seen, d.installed_at)))::bigint
         AS "静默 silent"
FROM devices d
LEFT JOIN device_status s ON s.device_id = d.id
CROSS JOIN LATERAL (SELECT {DEVICE_STATUS} AS status) x
{scope("d.building_id")}
WHERE d.state <> 'retired' AND x.status <> 'online' AND {SCOPE_WHERE}
ORDER BY coalesce(s.last_seen, d.installed_at), d.id
LIMIT 500
"""

OPEN_TICKETS = f"""
SELECT t.id AS "工单 ticket", t.condition AS "类型 condition", {_DEVICE_COLUMNS},
       t.opened_at AS "开单 opened", t.assigned_to AS "维保 technician",
       round(extract(epoch FROM now() - t.opened_at))::bigint AS "已开 open for",
       t.detail AS "详情 detail"
FROM maintenance_tickets t
JOIN devices d ON d.id = t.device_id
{scope("d.building_id")}
WHERE t.closed_at IS NULL AND {SCOPE_WHERE}
ORDER BY t.opened_at
LIMIT 500
"""

TICKETS_OPENED = f"""
SELECT $__timeGroupAlias(t.opened_at, $__interval), t.condition AS metric, count(*) AS tickets
FROM maintenance_tickets t
JOIN devices d ON d.id = t.device_id
{scope("d.building_id")}
WHERE $__timeFilter(t.opened_at) AND {SCOPE_WHERE}
GROUP BY 1, 2
ORDER BY 1
"""

# readings_daily has one row per day (00:00 Asia/Shanghai), grid and device kind: a year of
# the street is ~140,000 rows. Each day that overlaps the range is one point at the day's
# start, so the points follow the street's calendar ($__timeGroup's 1d buckets would start at
# UTC midnight, 08:00 here). The means combine the rows weighted by what each row averaged.
BATTERY_SIGNAL_TREND = f"""
SELECT r.day AS "time",
       min(r.min_battery_pct) AS "最低电量 lowest battery %",
       sum(r.avg_battery_pct * r.battery_devices) / nullif(sum(r.battery_devices), 0)
         AS "平均电量 mean battery %",
       sum(r.avg_rsrp_dbm * r.rsrp_samples) / nullif(sum(r.rsrp_samples), 0)
         AS "平均信号 mean RSRP dBm"
FROM readings_daily r
JOIN grids g ON g.id = r.grid_id
JOIN communities c ON c.id = g.community_id
WHERE r.day > $__timeFrom()::timestamptz - interval '1 day' AND r.day < $__timeTo()
  AND {SCOPE_WHERE}
GROUP BY r.day
ORDER BY 1
"""

# Worst buildings: a score a technician can sort by. False alarms weigh most (each one sends
# a grid worker running), then open tickets, then offline devices and low batteries.
WORST_BUILDINGS = f"""
WITH inc AS (
  SELECT building_id, count(*) AS incidents,
         count(*) FILTER (WHERE cause IN {FALSE_ALARM_CAUSES}) AS false_alarms
  FROM incidents
  WHERE $__timeFilter(opened_at)
  GROUP BY building_id
), dev AS (
  SELECT d.building_id, count(*) AS devices,
         count(*) FILTER (WHERE {DEVICE_STATUS} <> 'online') AS offline,
         count(*) FILTER (WHERE s.battery_pct <= {LOW_BATTERY_PCT}) AS low_battery,
         min(s.battery_pct) AS min_battery
  FROM devices d
  LEFT JOIN device_status s ON s.device_id = d.id
  WHERE d.state <> 'retired'
  GROUP BY d.building_id
), tic AS (
  SELECT d.building_id, count(*) AS open_tickets
  FROM maintenance_tickets t JOIN devices d ON d.id = t.device_id
  WHERE t.closed_at IS NULL
  GROUP BY d.building_id
), scored AS (
  SELECT b.id, b.address, g.id AS grid, c.name AS community,
         coalesce(inc.incidents, 0) AS incidents, coalesce(inc.false_alarms, 0) AS false_alarms,
         coalesce(tic.open_tickets, 0) AS open_tickets, coalesce(dev.offline, 0) AS offline,
         coalesce(dev.low_battery, 0) AS low_battery, dev.min_battery, dev.devices
  FROM buildings b
  JOIN grids g ON g.id = b.grid_id
  JOIN communities c ON c.id = g.community_id
  LEFT JOIN inc ON inc.building_id = b.id
  LEFT JOIN dev ON dev.building_id = b.id
  LEFT JOIN tic ON tic.building_id = b.id
  WHERE {SCOPE_WHERE}
)
SELECT id AS "楼栋 building", address AS "地址 address", grid AS "网格 grid",
       community AS "社区 community",
       3 * false_alarms + 2 * open_tickets + offline + low_battery + incidents AS "评分 score",
       false_alarms AS "误报 false alarms", incidents AS "事件 incidents",
       open_tickets AS "未结工单 open tickets", offline AS "离线 offline or never heard",
       low_battery AS "低电量 low battery", min_battery AS "最低电量 lowest battery %",
       devices AS "设备 devices"
FROM scored
WHERE 3 * false_alarms + 2 * open_tickets + offline + low_battery + incidents > 0
ORDER BY "评分 score" DESC, id
LIMIT 50
"""

_SECONDS = [dm.DynamicConfigValue(id_val="unit", value="s")]


def build() -> dash.Dashboard:
    d = base(UID, "firegrid · 设备健康 Device health",
             "Batteries, signal, devices offline or never heard, open maintenance tickets "
             "and the buildings that need a visit most. For field technicians.",
             "now-7d", "1m", ["devices", "maintenance"])
    d.variables(area_variables())
    d.with_panel(sized(
        stat.Panel().title("设备健康 Device health now").with_target(Sql(SUMMARY))
        .graph_mode(cm.BigValueGraphMode.NONE).color_mode(cm.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)),
        24, 4, f"Unretired devices in the area with battery at or below {LOW_BATTERY_PCT} %, "
        f"RSRP below {WEAK_RSRP_DBM} dBm, offline, never heard; open maintenance tickets."))
    d.with_panel(sized(
        timeseries.Panel().title("电量与信号趋势 Battery and signal")
        .with_target(Sql(BATTERY_SIGNAL_TREND, "time_series")).interval("1d")
        .override_by_name("平均信号 mean RSRP dBm", [
            dm.DynamicConfigValue(id_val="unit", value="dBm"),
            dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]),
        12, 8, "Per day (Asia/Shanghai), from the daily summary (readings_daily, brought up "
        "to date every 5 minutes by the maintenance monitor): the lowest battery in the area, the "
        "mean of each device's lowest battery that day, and the mean RSRP."))
    d.with_panel(sized(
        timeseries.Panel().title("新开工单 Tickets opened")
        .with_target(Sql(TICKETS_OPENED, "time_series")).interval("1h")
        .draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)),
        12, 8, "Maintenance tickets opened per interval by condition (offline, low battery, "
        "tamper, fault, occlusion, video loss, false alarms)."))
    d.with_panel(sized(
        table.Panel().title("离线与未上线设备 Offline and never heard").with_target(Sql(OFFLINE))
        .override_by_name("静默 silent", _SECONDS),
        24, 9, "Devices not online now, the longest silent first: offline (silent past "
        "their heartbeat allowance) and never heard since registration."))
    d.with_panel(sized(
        table.Panel().title("未结维保工单 Open maintenance tickets").with_target(Sql(OPEN_TICKETS))
        .override_by_name("已开 open for", _SECONDS),
        24, 9, "Every open ticket, oldest first, with the technician it is assigned to."))
    d.with_panel(sized(
        table.Panel().title("电量最低 Lowest batteries").with_target(Sql(LOWEST_BATTERIES)),
        12, 9, "The 100 lowest battery levels last reported."))
    d.with_panel(sized(
        table.Panel().title("信号最弱 Weakest signal").with_target(Sql(WEAKEST_SIGNAL)),
        12, 9, "The 100 weakest NB-IoT signals (RSRP) last reported."))
    d.with_panel(sized(
        table.Panel().title("重点楼栋 Worst buildings").with_target(Sql(WORST_BUILDINGS)),
        24, 10, "Buildings ranked by 3 x false alarms (incidents in the range) + 2 x open "
        "tickets + devices offline or never heard + low batteries + incidents."))
    return d
