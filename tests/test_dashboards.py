"""The dashboards against real data: the generated JSON is what is committed; every SQL panel,
expanded as Grafana expands it (dashboards/macros.py), runs on a database filled by a real
simulator run (tiny street, through Mosquitto, ingest and the alert core, incidents taken
through the closed loop, then the daily readings rollup) and returns rows; every metric a
PromQL target uses is exported.

One simulator run per module: the SQL tests only read."""

from __future__ import annotations

import csv
import os
import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts import loop
from alerts.rules import load_policy
from dashboards import generate, macros, panels
from dashboards.macros import MacroError, Variable
from devices import monitor, rollup
from devices.broker import NoBrokerAuth
from devices.importer import run_import
from runtime.settings import load_settings
from simulators import topology
from simulators.run import run_simulation
from tests.alert_live import ThreadedAlerts
from tests.helpers import Publisher, ThreadedIngest, await_subscribed, wait_for_count
from tests.metric_names import MODULES, exported

SQL_TARGETS = [t for t in panels.targets() if t.kind == "sql"]
PROM_TARGETS = [t for t in panels.targets() if t.kind == "promql"]

SCENARIO = """
name = "dashboards"
description = "Two fires, a burnt pan and a detector taken off its base, all in the first minute."

[[fire]]
at = "1m"
building = "B00001"
duration = "20m"
camera_smoke_after = "150s"
camera_fire_after = "7m"

[[fire]]
at = "1m"
building = "B00002"
duration = "20m"
camera_smoke_after = "150s"
camera_fire_after = "7m"

[[cooking]]
at = "1m"
device = "{cooking}"
duration = "3m"
mute_after = "30s"

[[tamper]]
at = "1m"
device = "{tamper}"
state = "removed"
duration = "20m"
"""


# --- the data: one simulator run, then the closed loop ----------------------------------------

@pytest.fixture(scope="module")
def street(pg_server, broker, tmp_path_factory):
    """A database after the tiny street's run: three incidents (a fire resolved as real, a
    burnt pan resolved as a false alarm, a fire acknowledged and still open), a tamper
    ticket from the monitor, and one registered detector that never reported."""
    tmp = tmp_path_factory.mktemp("dash")
    uid = f"dash{os.getpid()}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {uid} TEMPLATE fg_template")
    url = pg_server.url(uid)
    settings = load_settings(
        None,
        mqtt={"host": broker.host, "port": broker.port, "client_id": f"ingest-{uid}",
              "topic_prefix": f"fg/{uid}",
              "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        database={"url": url},
        ingest={"metrics_port": 0, "batch_max_age_ms": 20, "retry_min_s": 0.05,
                "retry_max_s": 0.5},
        alerts={"client_id": f"alerts-{uid}",
                "page_topic_prefix": f"pages/{uid}", "metrics_port": 0, "poll_s": 0.2})

    files = topology.generate(tmp / "street", "tiny", seed=3)
    street = topology.load(tmp / "street")      # what the simulator runs: without the extra
    rows = list(csv.DictReader(files["devices"].open(encoding="utf-8-sig")))
    in_b3 = [r["device_id"] for r in rows if r["building_id"] == "B00003"
             and r["kind"] == "smoke_detector"]
    silent = dict(rows[0], device_id="SD-SILENT", building_id="B00003", location="储藏室")
    with files["devices"].open("a", newline="", encoding="utf-8") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow(silent)
    scenario = tmp / "dashboards.toml"
    scenario.write_text(SCENARIO.format(cooking=in_b3[0], tamper=in_b3[1]), encoding="utf-8")

    with psycopg.connect(url, autocommit=True) as db:
        run_import(db, NoBrokerAuth(), [files[k] for k in ("hierarchy", "workers", "roster",
                                                           "devices")],
                   actor="test", iterations=1)
        ingest = ThreadedIngest(settings).start()
        core = ThreadedAlerts(settings).start()
        probe = Publisher(settings.mqtt.host, settings.mqtt.port, f"probe-{uid}")
        try:
            await_subscribed(probe, settings.mqtt.topic_prefix, url)
            # 5 simulated minutes at 60x: the fires and the pan start at minute 1.
            run_simulation(settings, preset="tiny", scenarios=[scenario], speed=60, seed=3,
                           duration_s=300, street=street)
            assert wait_for_count(url, "SELECT count(*) FROM incidents WHERE notified_at"
                                  " IS NOT NULL", 3, timeout=60) >= 3
        finally:
            probe.close()
            core.stop()
            ingest.stop()

        incidents = {b: i for i, b in db.execute("SELECT id, building_id FROM incidents")}
        worker = "C1-G01-W1"
        policy = load_policy()
        fire1, fire2, pan = incidents["B00001"], incidents["B00002"], incidents["B00003"]
        for incident in (fire1, pan):
            loop.acknowledge(db, incident, worker, note="收到 on my way")
            loop.arrive(db, incident, worker)
        loop.resolve(db, fire1, worker, "real_fire", "kitchen fire, put out", policy)
        loop.resolve(db, pan, worker, "cooking_steam", "burnt pan", policy)
        loop.acknowledge(db, fire2, worker)
        monitor.check(db, datetime.now(UTC), settings.devices)
        # What the monitor's rollup thread does every devices.rollup_interval_s.
        rollup.refresh(db, datetime.now(UTC), late_days=settings.ingest.max_age_days,
                       future_s=settings.ingest.max_future_skew_s)
    yield url
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {uid} WITH (FORCE)")


@pytest.fixture(scope="module")
def conn(street):
    with psycopg.connect(street, autocommit=True) as c:
        yield c


def test_the_run_left_what_the_panels_show(conn):
    """The fixture's own facts, so a panel returning rows means something."""
    states = dict(conn.execute("SELECT building_id, state FROM incidents").fetchall())
    assert states == {"B00001": "resolved", "B00002": "acknowledged", "B00003": "resolved"}
    assert conn.execute("SELECT count(*) FROM incidents WHERE severity = 'confirmed'"
                        ).fetchone()[0] >= 1
    assert conn.execute("SELECT count(*) FROM maintenance_tickets WHERE condition = 'tamper'"
                        " AND closed_at IS NULL").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM readings_hourly").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM readings_daily WHERE min_battery_pct IS NOT NULL"
                        " AND avg_rsrp_dbm IS NOT NULL").fetchone()[0] > 0


# --- (a) the committed JSON is the generator's output ----------------------------------------

def test_committed_json_is_what_the_generator_makes():
    for name, text in generate.rendered().items():
        path = generate.JSON_DIR / name
        assert path.exists(), f"{name} not committed: run .venv/bin/python -m dashboards.generate"
        assert path.read_text(encoding="utf-8") == text, (
            f"{name} is stale: run .venv/bin/python -m dashboards.generate")
    assert sorted(p.name for p in generate.JSON_DIR.glob("*.json")) == sorted(generate.DASHBOARDS)


def test_every_panel_has_a_unique_id_and_a_provisioned_datasource():
    uids = {"firegrid-postgres", "firegrid-prometheus"}
    provisioning = (generate.JSON_DIR.parent / "provisioning" / "datasources"
                    / "firegrid.yaml").read_text(encoding="utf-8")
    for uid in uids:
        assert f"uid: {uid}" in provisioning
    for name, model in panels.load().items():
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in model["panels"]:
            if p["type"] != "row":
                assert p["datasource"]["uid"] in uids, (name, p["title"])


# --- (b) every SQL panel against the database --------------------------------------------------

def _variables(conn, time_from, time_to, community="$__all", grid="$__all") -> dict:
    """The variables as Grafana resolves them: the variable queries run (expanded the same
    way), their options are what All expands to."""
    queries = panels.variable_queries()
    expand = lambda sql, v: macros.expand(sql, time_from=time_from, time_to=time_to, variables=v)  # noqa: E731
    communities = [r[0] for r in conn.execute(expand(queries["community"], {}))]
    variables = {"community": Variable("community", [community], communities)}
    grids = [r[0] for r in conn.execute(expand(queries["grid"], variables))]
    variables["grid"] = Variable("grid", [grid], grids)
    assert communities and grids
    return variables


def _range(target: panels.Target) -> tuple[datetime, datetime]:
    # The simulator's devices keep their own clock, 60x fast: their readings lie up to the
    # run's length in the future, so "now" is an hour ahead (as if the dashboard were opened
    # an hour later). A panel's relative time override ("182d") applies as in Grafana.
    time_to = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    time_from = (macros.relative(time_to, target.time_from) if target.time_from
                 else time_to - timedelta(days=1))
    return time_from, time_to


def _run(conn, target: panels.Target, variables: dict, time_from, time_to) -> list:
    interval = macros.panel_interval(time_from, time_to,
                                     min_interval=target.min_interval or "1m")
    sql = macros.expand(target.text, time_from=time_from, time_to=time_to,
                        variables=variables, interval_s=interval)
    assert not re.search(r"\$\w", sql), f"unexpanded in {target.name}:\n{sql}"
    cur = conn.execute(sql)
    columns = [c.name for c in cur.description]
    rows = cur.fetchall()
    if target.fmt == "time_series":
        assert "time" in columns, f"{target.name}: a time series needs a time column"
    return rows


@pytest.mark.parametrize("target", SQL_TARGETS, ids=[t.name for t in SQL_TARGETS])
def test_sql_panel_returns_rows_with_all_selected(conn, target):
    time_from, time_to = _range(target)
    rows = _run(conn, target, _variables(conn, time_from, time_to), time_from, time_to)
    assert rows, f"{target.name} returned no rows"
    # An aggregate always returns a row; some figure in it must come from the run.
    assert any(v not in (None, 0) for row in rows for v in row), f"{target.name}: {rows}"


@pytest.mark.parametrize("target", SQL_TARGETS, ids=[t.name for t in SQL_TARGETS])
def test_sql_panel_runs_with_one_grid_and_on_timescaledb_macros(conn, target):
    """One community and one grid chosen (quoted single values), and the TimescaleDB flavour
    of $__timeGroup compiles as far as PostgreSQL can check it without the extension."""
    time_from, time_to = _range(target)
    variables = _variables(conn, time_from, time_to, community="C1", grid="C1-G01")
    assert "C1-G01" in variables["grid"].options
    rows = _run(conn, target, variables, time_from, time_to)
    assert rows, f"{target.name} returned no rows for grid C1-G01"
    sql = macros.expand(target.text, time_from=time_from, time_to=time_to,
                        variables=variables, timescaledb=True)
    assert "floor(extract(epoch" not in sql


# --- the expander itself, against Grafana's documented output --------------------------------

def test_macros_expand_as_grafana_does():
    f = datetime(2024, 3, 1, 0, 0, 0, tzinfo=UTC)
    t = datetime(2024, 3, 2, 12, 30, 0, 250000, tzinfo=UTC)
    e = lambda sql, **kw: macros.expand(sql, time_from=f, time_to=t, **kw)  # noqa: E731
    assert e("$__timeFilter(ts)") == \
        "ts BETWEEN '2024-03-01T00:00:00Z' AND '2024-03-02T12:30:00.25Z'"
    assert e("$__timeFrom() $__timeTo()") == "'2024-03-01T00:00:00Z' '2024-03-02T12:30:00.25Z'"
    assert e("SELECT $__timeGroup(ts, '5m'), v") == \
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", v'
    assert e("GROUP BY $__timeGroup(ts, 1h)") == "GROUP BY floor(extract(epoch from ts)/3600)*3600"
    assert e("$__timeGroupAlias(ts, 1d)") == 'floor(extract(epoch from ts)/86400)*86400 AS "time"'
    assert e("$__timeGroup(ts, 1h)", timescaledb=True) == "time_bucket('3600.000s',ts)"
    assert e("$__unixEpochFilter(t)") == "t >= 1709251200 AND t <= 1709382600"
    assert e("$__timeGroupAlias(ts, $__interval)", interval_s=3600) == \
        'floor(extract(epoch from ts)/3600)*3600 AS "time"'
    assert e("$__interval $__interval_ms", interval_s=21600) == "6h 21600000"
    v = {"c": Variable("c", ["$__all"], ["C1", "O'Hara"]), "g": Variable("g", ["G1"]),
         "s": Variable("s", ["it's"], multi=False, include_all=False),
         "m": Variable("m", ["a", "b"])}
    assert e("IN ($c) IN (${g}) '$s' IN ([[m]])", variables=v) == \
        "IN ('C1','O''Hara') IN ('G1') 'it''s' IN ('a','b')"
    assert e("$unknown") == "$unknown"      # not a variable: Grafana leaves it too
    with pytest.raises(MacroError):
        e("$__nope(x)")
    with pytest.raises(MacroError):
        e("$__timeGroup(ts)")


def test_interval_follows_the_frontend():
    t = datetime(2024, 3, 2, tzinfo=UTC)
    assert macros.panel_interval(t - timedelta(days=1), t) == 60        # 86 s -> 1m floor
    assert macros.panel_interval(t - timedelta(days=7), t) == 600       # 605 s -> 10m
    assert macros.panel_interval(t - timedelta(days=365), t) == 21600   # 8.76 h -> 6h
    assert macros.panel_interval(t - timedelta(days=1), t, min_interval="1h") == 3600
    assert macros.seconds_to_hms(604800) == "7d"


# --- (c) every metric a PromQL target uses is exported ----------------------------------------

_PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "irate", "histogram_quantile",
                 "max", "min", "avg", "count", "le", "on", "ignoring", "offset"}


def _metrics(expr: str) -> set[str]:
    text = re.sub(r"\{[^}]*\}", "", expr)        # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)       # range selectors
    text = re.sub(r"by \([^)]*\)", "", text)      # grouping labels
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)) - _PROMQL_WORDS
    return {n for n in names if not n.startswith("__")}


@pytest.mark.parametrize("target", PROM_TARGETS, ids=[t.name for t in PROM_TARGETS])
def test_promql_uses_only_exported_metrics(target):
    names = _metrics(target.text)
    assert names, f"{target.name}: no metric in {target.text}"
    missing = names - exported()
    assert not missing, f"{target.name}: {sorted(missing)} are not exported by firegrid"


def test_promql_groups_only_by_labels_the_metrics_have():
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    from ingest.metrics import BatchHistogram
    labels: dict[str, set[str]] = {}
    for module in MODULES:
        for obj in vars(importlib.import_module(module)).values():
            if isinstance(obj, MetricWrapperBase):
                labels[obj._name] = set(obj._labelnames)
            elif isinstance(obj, BatchHistogram):
                for family in obj.collect():
                    labels[family.name] = {k for s in family.samples for k in s.labels}
    for target in PROM_TARGETS:
        base = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in _metrics(target.text)}
        have = set().union(*(labels[b] for b in base)) | {"le"}
        for group in re.findall(r"by \(([^)]*)\)", target.text):
            used = {x.strip() for x in group.split(",")}
            assert used <= have, f"{target.name}: grouping by {used - have}"
