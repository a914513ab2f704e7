"""What every firegrid dashboard shares: the two datasources (fixed UIDs, the same ones the
provisioning file gives them), a PostgreSQL query target (the SDK has none for Grafana's
core SQL datasource), the community and grid template variables, the SQL fragments the
panels reuse, and small panel helpers so each dashboard module reads as a list of panels.

Panel SQL rules (tests/test_dashboards.py checks the first three against a real database):
- Grafana's macros only with simple arguments: Grafana's macro regex stops an argument list
  at the first ')', so `$__timeFilter(date_trunc('day', x))` would break.
- Scope every query with `c.id IN ($community) AND g.id IN ($grid)`: both variables are
  multi-value with "All", which Grafana expands to a quoted list.
- Plain PostgreSQL only, no TimescaleDB functions: the same JSON runs on both. Readings
  over a time range come from `readings_daily` (per day, grid and kind, kept up to date by
  the monitor from the `readings_hourly` continuous aggregate: devices/rollup.py), never
  from `readings`, and from `readings_hourly` only for short ranges: it has a row per
  device and hour, as many as the readings.
"""

from __future__ import annotations

import typing

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

POSTGRES = dm.DataSourceRef(type_val="grafana-postgresql-datasource", uid="firegrid-postgres")
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="firegrid-prometheus")

# Calendar weeks and months, and "today", in the street's own time zone (the reports use the
# same zone, alerts/reports.py). Change here and regenerate for a street elsewhere.
TIME_ZONE = "Asia/Shanghai"

# Offline, as the maintenance monitor decides it with the shipped settings
# (devices.smoke_missed = 2, camera_missed = gateway_missed = 3, offline_grace_s = 10):
# silent for longer than missed x period + grace, the period being the heartbeat the device
# reports, else the registered one. The monitor's settings are not in the database, so a
# site that changes them should change these numbers too.
DEVICE_STATUS = """CASE
    WHEN s.last_seen IS NULL THEN 'never_heard'
    WHEN s.last_seen >= now() - make_interval(secs =>
         CASE d.kind WHEN 'smoke_detector' THEN 2 ELSE 3 END
         * coalesce(s.reported_heartbeat_s, d.heartbeat_s) + 10) THEN 'online'
    ELSE 'offline' END"""

# From a building `b` to its grid `g` and community `c`, limited to the variables' scope.
SCOPE_JOIN = """JOIN buildings b ON b.id = {building}
JOIN grids g ON g.id = b.grid_id
JOIN communities c ON c.id = g.community_id"""
SCOPE_WHERE = "c.id IN ($community) AND g.id IN ($grid)"

FALSE_ALARM_CAUSES = "('cooking_steam', 'dust_insects', 'device_fault')"

# Escalated beyond grid level, as the weekly report counts it (alerts/reports.py): a
# confirmed fire goes to every level at once, and a warning counts once its ladder paged
# rung 1 or higher (the grid leader and up with the default ladder).
ESCALATED = """(i.severity = 'confirmed' OR EXISTS (
    SELECT 1 FROM incident_log l
    WHERE l.incident_id = i.id AND l.action = 'notified'
      AND l.detail->>'ladder' = 'warning' AND (l.detail->>'rung')::int >= 1))"""


def scope(building: str) -> str:
    return SCOPE_JOIN.format(building=building)


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's core PostgreSQL datasource, in the shape its query
    editor saves in code mode."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self.ref_id, self.raw_sql, self.fmt = ref_id, raw_sql, fmt

    def to_json(self) -> dict[str, object]:
        return {"datasource": POSTGRES, "editorMode": "code", "format": self.fmt,
                "rawQuery": True, "rawSql": self.raw_sql, "refId": self.ref_id}


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, fmt: typing.Literal["table", "time_series"] = "table",
                 ref_id: str = "A") -> None:
        self._query = SqlQuery(ref_id, _tidy(raw_sql), fmt)

    def build(self) -> SqlQuery:
        return self._query


def _tidy(sql: str) -> str:
    """Dedented, without trailing blanks: what someone opening the panel editor reads."""
    import textwrap
    return textwrap.dedent(sql).strip()


def promql(expr: str, legend: str = "__auto", ref_id: str = "A") -> prom.Dataquery:
    return (prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
            .datasource(PROMETHEUS).editor_mode(pm.QueryEditorMode.CODE).range())


def area_variables() -> list[dash.QueryVariable]:
    """Community, then grid (its options follow the communities chosen). Multi-value with
    All and no custom all value, so Grafana expands All to the quoted list of options."""
    def area(name: str, label: str, table_where: str) -> dash.QueryVariable:
        return (dash.QueryVariable(name).label(label)
                .datasource(POSTGRES)
                .query(f"SELECT id AS __value, name || ' (' || id || ')' AS __text"
                       f" FROM {table_where} ORDER BY id")
                .multi(True).include_all(True).refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
                .sort(dm.VariableSort.DISABLED)
                .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))

    return [area("community", "社区 Community", "communities"),
            area("grid", "网格 Grid", "grids WHERE community_id IN ($community)")]


def base(uid: str, title: str, description: str, time_from: str, refresh: str,
         tags: list[str]) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description)
            .tags(["firegrid", *tags]).time(time_from, "now").refresh(refresh)
            .timezone("browser").editable().tooltip(dm.DashboardCursorSync.CROSSHAIR))


def sized(panel, w: int, h: int, description: str):
    """Width and height in grid units (24 columns), and what the panel is for."""
    return panel.span(w).height(h).description(description)
