"""Progress for `firegrid db migrate` and `firegrid alerts report` (issue 20): the libraries
report their steps to a callback (runtime has no rich); the CLI draws rich's bars on a
terminal only, so pipes, logs and files get the same lines as before and nothing else.
(The import's bars: tests/test_import.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg

from alerts import reports
from runtime import migrate
from runtime.settings import DatabaseSettings
from tests.helpers import on_a_terminal

REPO = Path(__file__).resolve().parent.parent
BAR = "━"   # rich's bar
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(db_url: str) -> dict[str, str]:
    return {**os.environ, "FIREGRID_DATABASE__URL": db_url, "TERM": "xterm-256color",
            "COLUMNS": "120"}


def _piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "firegrid.cli", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def _fresh(pg_server, name: str, *, create: bool = False) -> str:
    """An empty database's URL (created, or left to --create-db): no schema yet, every
    migration to apply."""
    name = f"{name}_{os.getpid()}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        if create:
            conn.execute(f"CREATE DATABASE {name}")
    return str(pg_server.url(name))


def test_migrate_reports_each_migration_and_the_timescaledb_step(pg_server, pg_flavour):
    seen: list[tuple[str, int, int, str]] = []
    url = _fresh(pg_server, "fg_progress_lib", create=True)
    report = migrate.migrate(DatabaseSettings(url=url), progress=lambda *c: seen.append(c))
    names = [name for _, name, _ in migrate._migration_files()]
    assert report.applied == names
    applying = [c for c in seen if c[0] == migrate.APPLYING]
    # Before and after each: the one being applied, then how many are done.
    assert applying == [c for i, name in enumerate(names)
                        for c in ((migrate.APPLYING, i, len(names), name),
                                  (migrate.APPLYING, i + 1, len(names), name))]
    timescale = [c[1:3] for c in seen if c[0] == migrate.TIMESCALE]
    assert timescale == ([(0, 1), (1, 1)] if pg_flavour == "timescale" else [])


def test_migrate_draws_barson_a_terminal(pg_server, pg_flavour):
    env = _env(_fresh(pg_server, "fg_progress_tty"))
    text = on_a_terminal(["db", "migrate", "--create-db"], env)
    total = len(migrate._migration_files())
    last = migrate._migration_files()[-1][1]
    assert f"应用迁移 applying migrations · {last}" in text
    assert f"{total}/{total}" in text and BAR in text
    assert ("TimescaleDB 超表与策略 hypertables and policies" in text) == (
        pg_flavour == "timescale")
    # The bars go; the summary is what stays, after them.
    assert text.rindex("schema up to date") > text.rindex("应用迁移 applying migrations")
    # The log's lines come whole, each from the start of a clean line, above the bars
    # rather than written on after the bar's text.
    logged = re.findall(r"[^\r\n]*INFO runtime\.migrate: applied migration", text)
    assert len(logged) == total
    for line in logged:
        before = ANSI.sub("", line).split(" INFO ")[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", before), line


def test_migrate_draws_no_bars_when_not_a_terminal(pg_server, pg_flavour):
    out = _piped(["db", "migrate", "--create-db"], _env(_fresh(pg_server, "fg_progress_pipe")))
    flavour = "postgresql" if pg_flavour == "plain" else r"timescaledb 2\.\d+"
    assert re.fullmatch(f"created database\nschema up to date "
                        rf"\({len(migrate._migration_files())} applied; path: {flavour}\)\n"
                        r"(policy changed: [^\n]*\n)*", out.stdout), out.stdout
    assert "应用迁移" not in out.stderr and BAR not in out.stderr and "\x1b[" not in out.stderr


def test_report_reports_its_queries_and_computes_the_same(db):
    seen: list[tuple[str, int, int, str]] = []
    day = date(2026, 3, 4)
    with_progress = reports.build_report(db, "week", day, progress=lambda *c: seen.append(c))
    assert with_progress == reports.build_report(db, "week", day)
    assert [c[1:3] for c in seen] == [(0, 2), (1, 2), (2, 2)]
    assert {c[0] for c in seen} == {reports.BUILDING}
    assert seen[0][3] == "统计告警事件 counting incidents"
    assert seen[1][3] == "统计维保工单 counting maintenance tickets"


def test_report_draws_a_bar_on_a_terminal_only(db_url):
    args = ["alerts", "report", "--period", "week", "--date", "2026-03-04"]
    text = on_a_terminal(args, _env(db_url))
    assert "生成报表 building the report" in text and "2/2" in text and BAR in text
    assert text.rindex("周报 weekly report") > text.rindex("生成报表 building the report")
    out = _piped(args, _env(db_url))
    assert out.stdout.startswith("周报 weekly report · 2026-03-02 – 2026-03-08")
    assert "生成报表" not in out.stdout + out.stderr and BAR not in out.stdout
