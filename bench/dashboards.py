#!/usr/bin/env python
"""Every SQL panel of the dashboards, timed over a synthetic year of the whole street.

    .venv/bin/python bench/dashboards.py                  # about 4 minutes on 2 cores
    .venv/bin/python bench/dashboards.py --reading-days 30 --incidents-per-day 60
    .venv/bin/python bench/dashboards.py --flavour timescale

A private PostgreSQL (runtime.localsvc; fsync off: only query times are measured), migrated
for --flavour (bench/flavour.py): plain PostgreSQL (default; readings_hourly is the plain
view) or TimescaleDB (hypertables, readings_hourly the continuous aggregate; after the
history is written the aggregate's refresh job and the compression jobs run once, timed, as
the scheduler would, and Grafana's macros expand as with the datasource's timescaledb
option on). Then the street
preset registered in-process with the importer (3 communities, 3,900 buildings, 21,737
devices), then a synthetic history written with SQL:

    incidents     --incidents-per-day over 365 days (default 30: ~11,000), 10% confirmed,
                  20% of warnings escalated to rung 1, causes mostly false alarms, the
                  newest 20 still open; an incident_log 'notified' row per rung and
                  3 alerts per incident
    tickets       --tickets-per-day over 365 days (default 20: ~7,300), 300 still open
    device_status every device but 1% heard, 3% of them silent for hours to days
    readings      --reading-days (default 7) of hourly statuses from every detector and
                  camera (~3.6 million rows). A year of the street's raw readings is ~190
                  million rows (~30 GB with the key): it does not fit this machine's time
                  budget, and it is what TimescaleDB's continuous aggregate is for.
    readings_daily filled by the real rollup (devices.rollup.refresh): the first run
                  backfills every day of readings, timed, then a steady run (yesterday and
                  today) is timed too. The complete days are then copied back to make a
                  year of daily rows (~140,000), so the trend panel reads at 365 days what a
                  year's rollup holds.

Each panel's query is expanded as Grafana expands it (dashboards/macros.py) with every
community and grid selected ("All"), at the dashboard's default range (or the panel's own
override) and at 365 days, run once to warm up and --repeat times; the table shows the
median in milliseconds and the rows returned. The last line printed is always
    RESULT flavour=<f> panels=<n> slowest_default_ms=<x> slowest_year_ms=<x> slowest_panel=<name>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench import flavour as flavours  # noqa: E402
from dashboards import macros, panels  # noqa: E402
from dashboards.macros import Variable  # noqa: E402
from devices import rollup  # noqa: E402
from devices.broker import NoBrokerAuth  # noqa: E402
from devices.importer import run_import  # noqa: E402
from runtime import migrate  # noqa: E402
from runtime.localsvc import make_state_dir  # noqa: E402
from runtime.settings import DatabaseSettings  # noqa: E402
from simulators import topology  # noqa: E402

HISTORY = """
WITH b AS (SELECT array_agg(id ORDER BY id) AS ids FROM buildings),
x AS (
  SELECT g, now() - random() * interval '365 days' AS o, random() AS r_sev, random() AS r_cause,
         random() AS r_esc, random() * 300 AS ack, random() * 900 AS arr, random() * 3600 AS res,
         random() AS r_b
  FROM generate_series(1, %(incidents)s) g
)
INSERT INTO incidents (building_id, hazard, severity, state, opened_at, last_alert_at,
                       alert_count, notified_at, acknowledged_at, acknowledged_by, on_site_at,
                       on_site_by, resolved_at, resolved_by, cause, note, ladder, rung)
SELECT b.ids[1 + floor(x.r_b * array_length(b.ids, 1))::int], 'fire',
       CASE WHEN x.r_sev < 0.1 THEN 'confirmed' ELSE 'warning' END, 'resolved', x.o,
       x.o + interval '1 minute', 3, x.o + interval '2 seconds',
       x.o + x.ack * interval '1 second', 'bench',
       x.o + (x.ack + x.arr) * interval '1 second', 'bench',
       x.o + (x.ack + x.arr + x.res) * interval '1 second', 'bench',
       CASE WHEN x.r_cause < 0.55 THEN 'cooking_steam' WHEN x.r_cause < 0.7 THEN 'dust_insects'
            WHEN x.r_cause < 0.8 THEN 'device_fault' WHEN x.r_cause < 0.9 THEN 'test_drill'
            ELSE 'real_fire' END, 'bench',
       CASE WHEN x.r_sev < 0.1 THEN 'confirmed' ELSE 'warning' END,
       CASE WHEN x.r_sev >= 0.1 AND x.r_esc < 0.2 THEN 1 ELSE 0 END
FROM b, x;

INSERT INTO incident_log (incident_id, at, actor, action, from_state, to_state, detail)
SELECT i.id, i.opened_at + r * interval '60 seconds', 'escalator', 'notified', 'raised',
       'notified', jsonb_build_object('ladder', i.ladder, 'rung', r)
FROM incidents i, generate_series(0, 1) r WHERE r <= i.rung;

INSERT INTO alerts (device_id, ts, seq, rule, device_kind, building_id, incident_id,
                    received_at)
SELECT 'BENCH-' || i.id, i.opened_at + k * interval '20 seconds', k, 'alarm', 'smoke_detector',
       i.building_id, i.id, i.opened_at + k * interval '20 seconds'
FROM incidents i, generate_series(0, 2) k;

-- the newest 20 incidents, one per building, are still open
UPDATE incidents SET state = 'acknowledged', resolved_at = NULL, resolved_by = NULL,
                     cause = NULL, note = NULL
WHERE id IN (SELECT DISTINCT ON (building_id) id FROM incidents
             ORDER BY building_id, opened_at DESC LIMIT 20);

WITH d AS (SELECT array_agg(id ORDER BY id) AS ids FROM devices),
x AS (SELECT g, now() - random() * interval '365 days' AS o, random() AS r_d, random() AS r_c
      FROM generate_series(1, %(tickets)s) g)
INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail, closed_at,
                                 close_reason, closed_by)
SELECT d.ids[1 + floor(x.r_d * array_length(d.ids, 1))::int],
       (ARRAY['offline', 'low_battery', 'tamper', 'fault', 'false_alarms'])
           [1 + floor(x.r_c * 5)::int],
       x.o, 'bench', x.o + interval '2 days', 'cleared', 'monitor'
FROM d, x;

INSERT INTO maintenance_tickets (device_id, condition, opened_at, detail)
SELECT id, 'offline', now() - random() * interval '30 days', 'bench'
FROM (SELECT id FROM devices ORDER BY random() LIMIT 300) d;

INSERT INTO device_status (device_id, last_seen, last_ts, battery_pct, rsrp_dbm, messages)
SELECT id, ls, ls, (random() * 100)::int, (-70 - random() * 55)::int, 1000
FROM (SELECT id, CASE WHEN random() < 0.03 THEN now() - interval '3 hours'
                      - random() * interval '5 days'
                      ELSE now() - random() * interval '50 minutes' END AS ls
      FROM devices WHERE random() < 0.99) d;

UPDATE devices SET state = 'active' WHERE id IN (SELECT device_id FROM device_status);

INSERT INTO readings (device_id, ts, seq, kind, received_at, temperature_c, obscuration_db_m,
                      battery_pct, rsrp_dbm, sinr_db, heartbeat_s, stream_online)
SELECT d.id, h, extract(epoch FROM h)::bigint,
       CASE d.kind WHEN 'camera' THEN 'camera' ELSE 'smoke' END, h,
       20 + random() * 8, random() * 0.05, (100 - random() * 60)::int,
       (-70 - random() * 55)::int, random() * 20, 3600,
       CASE d.kind WHEN 'camera' THEN true END
FROM devices d,
     generate_series(date_trunc('hour', now()) - %(reading_days)s * interval '1 day',
                     now(), interval '1 hour') h
WHERE d.kind <> 'gateway';
"""


def parse_relative(text: str) -> timedelta:
    """'now-24h' or '182d' -> the span back from now."""
    return timedelta(seconds=macros.parse_interval(text.removeprefix("now-")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents-per-day", type=int, default=30)
    parser.add_argument("--tickets-per-day", type=int, default=20)
    parser.add_argument("--reading-days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    flavours.add_argument(parser)
    args = parser.parse_args()
    timescaledb = args.flavour == "timescale"

    server = flavours.postgres(make_state_dir("fg-bench-dash-"), args.flavour,
                               durable=False).start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = server.url("bench")
        report = migrate.migrate(DatabaseSettings(
            url=url, timescale=flavours.timescale_setting(args.flavour)))
        print(f"flavour: {report.flavour}", flush=True)
        work = Path(make_state_dir("fg-bench-dash-street-"))
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            files = topology.generate(work / "street", "street", 1)
            run_import(conn, NoBrokerAuth(), list(files.values()), actor="bench", iterations=1)
            print(f"registered the street preset in {time.perf_counter() - started:.0f} s",
                  flush=True)
            started = time.perf_counter()
            # Several statements in one simple-protocol call, so the numbers go in as text
            # (integers from argparse, nothing else).
            history = HISTORY
            for key, value in (("incidents", 365 * args.incidents_per_day),
                               ("tickets", 365 * args.tickets_per_day),
                               ("reading_days", args.reading_days)):
                history = history.replace(f"%({key})s", str(int(value)))
            conn.execute(history)
            if timescaledb:
                took = flavours.run_jobs(conn, "policy_refresh_continuous_aggregate",
                                         "policy_compression")
                print("TimescaleDB jobs run once: " + ", ".join(
                    f"{job} {s:.1f} s" for job, s in took.items()), flush=True)
            conn.execute("VACUUM ANALYZE")
            fill_rollup(conn, args.repeat)
            sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("devices", "buildings", "incidents", "incident_log", "alerts",
                               "maintenance_tickets", "readings", "readings_daily")}
            print(f"wrote the history in {time.perf_counter() - started:.0f} s: "
                  + ", ".join(f"{t} {n:,}" for t, n in sizes.items()), flush=True)
            results = time_panels(conn, args.repeat, timescaledb)
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    finally:
        server.destroy()

    slowest = max(results, key=lambda r: r[3])
    print(f"RESULT flavour={args.flavour} panels={len(results)}"
          f" slowest_default_ms={max(r[1] for r in results):.1f}"
          f" slowest_year_ms={slowest[3]:.1f} slowest_panel={slowest[0]!r}")
    return 0


# A year of daily rows: every complete day the rollup computed, repeated back in time with
# its figures unchanged (only the count of rows matters for the panel's time).
YEAR_OF_DAYS = """
INSERT INTO readings_daily
SELECT r.day - k * span, r.grid_id, r.kind, r.devices, r.samples, r.battery_devices,
       r.min_battery_pct, r.avg_battery_pct, r.rsrp_samples, r.avg_rsrp_dbm, r.min_rsrp_dbm,
       r.sinr_samples, r.avg_sinr_db, r.max_temperature_c, r.min_storage_free_mb, r.computed_at
FROM readings_daily r,
     (SELECT count(DISTINCT day) * interval '1 day' AS span, count(DISTINCT day) AS n
      FROM readings_daily WHERE day > (SELECT min(day) FROM readings_daily)
      AND day < %(today)s - interval '1 day') d,
     generate_series(1, ceil(366.0 / greatest(d.n, 1))::int) k
WHERE r.day > (SELECT min(day) FROM readings_daily) AND r.day < %(today)s - interval '1 day'
  AND r.day - k * span > %(today)s - interval '366 days'
ON CONFLICT (day, grid_id, kind) DO NOTHING
"""


def fill_rollup(conn: psycopg.Connection, repeat: int) -> None:
    """The rollup as the monitor runs it: a first run (the backfill), then steady runs."""
    now = datetime.now(UTC)
    report = rollup.refresh(conn, now)
    print(f"rollup, first run: {report.seconds:.1f} s for {report.computed} days"
          f" ({len(report.days.get('backfill', []))} backfilled,"
          f" {report.seconds / max(report.computed, 1):.2f} s a day), {report.rows} rows",
          flush=True)
    times = []
    for _ in range(repeat):
        report = rollup.refresh(conn, datetime.now(UTC))
        times.append(report.seconds)
    print(f"rollup, steady run (yesterday and today): median {statistics.median(times):.2f} s",
          flush=True)
    today = rollup.day_start(rollup.local_day(now))
    added = conn.execute(YEAR_OF_DAYS, {"today": today}).rowcount
    conn.execute("ANALYZE readings_daily")
    print(f"readings_daily: {added:,} rows copied back to make a year", flush=True)


def time_panels(conn: psycopg.Connection, repeat: int, timescaledb: bool = False
                ) -> list[tuple[str, float, int, float, int]]:
    models = panels.load()
    now = datetime.now(UTC).replace(microsecond=0)
    queries = panels.variable_queries()
    day = now - timedelta(days=1)
    communities = [r[0] for r in conn.execute(
        macros.expand(queries["community"], time_from=day, time_to=now))]
    variables = {"community": Variable("community", ["$__all"], communities)}
    grids = [r[0] for r in conn.execute(
        macros.expand(queries["grid"], time_from=day, time_to=now, variables=variables))]
    variables["grid"] = Variable("grid", ["$__all"], grids)

    def run(target: panels.Target, span: timedelta) -> tuple[float, int]:
        time_from = now - span
        sql = macros.expand(target.text, time_from=time_from, time_to=now, variables=variables,
                            interval_s=macros.panel_interval(
                                time_from, now, min_interval=target.min_interval or "1m"),
                            timescaledb=timescaledb)
        rows = len(conn.execute(sql).fetchall())          # warm-up
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(sql).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), rows

    results = []
    print(f"\n{'panel':<74} {'range':>6} {'ms':>8} {'rows':>6} {'365d ms':>8} {'rows':>6}")
    for target in panels.targets():
        if target.kind != "sql":
            continue
        default = target.time_from or models[target.dashboard]["time"]["from"]
        span = parse_relative(default)
        ms, rows = run(target, span)
        year_ms, year_rows = run(target, timedelta(days=365))
        name = f"{target.dashboard.removesuffix('.json')}: {target.panel}"
        results.append((name, ms, rows, year_ms, year_rows))
        print(f"{name:<74} {default.removeprefix('now-'):>6} {ms:8.1f} {rows:6d}"
              f" {year_ms:8.1f} {year_rows:6d}", flush=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
