"""Grafana's expansion of a PostgreSQL panel's rawSql, done the way Grafana 11 does it, so the
tests and bench/dashboards.py run exactly the SQL Grafana would send.

The three steps, in Grafana's order:
1. The browser (SqlDatasource.applyTemplateVariables -> templateSrv.replace with
   interpolateVariable): template variables ($var, ${var}, [[var]]) and the built-ins
   $__interval / $__interval_ms. A multi-value or include-All variable becomes its values
   quoted as SQL literals and joined with ','; "All" without a custom all value is every
   option's value; a single-value variable is only escaped (' -> ''), not quoted.
2. The backend's global substitutions (pkg/tsdb/sqleng, Interpolate): $__interval_ms,
   $__interval, $__unixEpochFrom(), $__unixEpochTo().
3. The PostgreSQL macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go): the
   regex \\$(\\w+)\\(([^)]*)\\) and its macros; $__timeGroup followed directly by ',' becomes
   $__timeGroupAlias (pre-5.3 compatibility); an unknown macro is an error.

The panel's interval follows the frontend (rangeutil.calculateInterval): the range divided
by max data points, rounded by roundInterval, raised to the panel's or datasource's minimum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class MacroError(ValueError):
    """What Grafana would refuse: an unknown macro, a missing argument, a bad interval."""


@dataclass(frozen=True)
class Variable:
    """A template variable's state. values: the selected values (["$__all"] for All);
    options: every option's value (what All expands to)."""
    name: str
    values: Sequence[str]
    options: Sequence[str] = ()
    multi: bool = True
    include_all: bool = True
    all_value: str | None = None


# --- time -----------------------------------------------------------------------------------

def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, none when zero."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return text + "Z"


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
_DAY = 86400.0
_YEAR = _DAY * 365.25
_DATE_UNITS = {"d": _DAY, "w": 7 * _DAY, "M": _YEAR / 12, "y": _YEAR}


def parse_interval(text: str) -> float:
    """Seconds, as gtime.ParseInterval reads them: '<n>d|w|M|y', else a Go duration."""
    m = re.fullmatch(r"(\d+)([dwMy])", text)
    if m:
        return int(m.group(1)) * _DATE_UNITS[m.group(2)]
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise MacroError(f"error parsing interval {text}")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def go_float(value: float) -> str:
    """Go's %v of a float64 for the values an interval can take (shortest form, no '.0')."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


# rangeutil.roundInterval: (upper bound exclusive, rounded) in milliseconds.
_ROUND = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
          (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
          (45000, 30000), (90000, 60000), (150000, 120000), (450000, 300000),
          (750000, 600000), (1050000, 900000), (1500000, 1200000), (2700000, 1800000),
          (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
          (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
          (1814400000, 604800000), (3628800000, 2592000000)]


def round_interval_ms(ms: float) -> int:
    for bound, rounded in _ROUND:
        if ms < bound:
            return rounded
    return 31536000000


def seconds_to_hms(seconds: float) -> str:
    """rangeutil.secondsToHms: the interval's text ($__interval): its largest whole unit."""
    rest = seconds % 31536000
    for n, unit in ((seconds // 31536000, "y"), (rest // 86400, "d"),
                    (rest % 86400 // 3600, "h"), (rest % 3600 // 60, "m"), (rest % 60 // 1, "s"),
                    (seconds * 1000 // 1, "ms")):
        if int(n):
            return f"{int(n)}{unit}"
    return "less than a millisecond"


def panel_interval(time_from: datetime, time_to: datetime, *, max_data_points: int = 1000,
                   min_interval: str = "1m") -> float:
    """The interval in seconds Grafana's frontend picks for a panel."""
    span_ms = (time_to - time_from).total_seconds() * 1000
    ms = max(round_interval_ms(span_ms / max_data_points), parse_interval(min_interval) * 1000)
    return ms / 1000


# --- step 1: template variables -------------------------------------------------------------

_VAR = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(var: Variable) -> str:
    values = list(var.values)
    if values == ["$__all"] or values == "$__all":
        if var.all_value is not None:
            return var.all_value        # a custom all value goes in unformatted
        values = list(var.options)
        if not values:
            raise MacroError(f"variable {var.name}: All selected but no options")
        return ",".join(_quote(v) for v in values)
    if len(values) == 1 and not (var.multi or var.include_all):
        return values[0].replace("'", "''")
    if len(values) == 1:
        return _quote(values[0])
    return ",".join(_quote(v) for v in values)


def replace_variables(sql: str, variables: Mapping[str, Variable], interval_s: float) -> str:
    builtins = {"__interval": seconds_to_hms(interval_s),
                "__interval_ms": str(int(round(interval_s * 1000)))}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        if m.group(3) or m.group(5) or m.group(6):
            raise MacroError(f"variable formats and fields are not used here: {m.group(0)}")
        if name in builtins:
            return builtins[name]
        if name in variables:
            return _format(variables[name])
        return m.group(0)               # not a variable: left for the backend's macros

    return _VAR.sub(sub, sql)


# --- steps 2 and 3: the backend -------------------------------------------------------------

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def _time_group(args: list[str], timescaledb: bool) -> str:
    if len(args) < 2:
        raise MacroError("macro __timeGroup needs time column and interval and optional fill value")
    seconds = parse_interval(args[1].strip("'"))
    if len(args) == 3 and args[2] not in ("NULL", "previous"):
        try:
            float(args[2])
        except ValueError:
            raise MacroError(f"error parsing fill value {args[2]}") from None
    if timescaledb:
        return f"time_bucket('{seconds:.3f}s',{args[0]})"
    return f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"


def _evaluate(name: str, args: list[str], time_from: datetime, time_to: datetime,
              timescaledb: bool) -> str:
    f, t = rfc3339nano(time_from), rfc3339nano(time_to)
    need_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter"}
    if name in need_column and (not args or args == [""]):
        raise MacroError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{f}' AND '{t}'"
    if name == "__timeFrom":
        return f"'{f}'"
    if name == "__timeTo":
        return f"'{t}'"
    if name == "__timeGroup":
        return _time_group(args, timescaledb)
    if name == "__timeGroupAlias":
        return _time_group(args, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        a, b = int(time_from.timestamp()), int(time_to.timestamp())
        return f"{args[0]} >= {a} AND {args[0]} <= {b}"
    raise MacroError(f'unknown macro "{name}"')


def expand(sql: str, *, time_from: datetime, time_to: datetime,
           variables: Mapping[str, Variable] | None = None, interval_s: float | None = None,
           timescaledb: bool = False) -> str:
    """rawSql as Grafana's PostgreSQL datasource runs it. interval_s defaults to what the
    frontend picks for 1,000 data points with the datasource's 1m minimum."""
    if interval_s is None:
        interval_s = panel_interval(time_from, time_to)
    sql = replace_variables(sql, variables or {}, interval_s)
    # sqleng.Interpolate (the browser has already replaced $__interval; harmless again)
    sql = sql.replace("$__interval_ms", str(int(round(interval_s * 1000))))
    sql = sql.replace("$__interval", seconds_to_hms(interval_s))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_from.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_to.timestamp())))
    original = sql

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "__timeGroup":
            at = original.find(m.group(0))
            end = at + len(m.group(0))
            if at >= 0 and len(original) > end and original[end] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return _evaluate(name, args, time_from, time_to, timescaledb)

    return _MACRO.sub(sub, sql)


def relative(time_to: datetime, text: str) -> datetime:
    """A panel's relative time override ("182d", "7d", "24h") back from time_to."""
    return time_to - timedelta(seconds=parse_interval(text))
