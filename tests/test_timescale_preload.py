"""TimescaleDB installed but not preloaded (issue 17, item 3): `firegrid db migrate` used to
end in a 58-line traceback whose last line was "the connection is closed" (CREATE EXTENSION
ends the session with a FATAL error, and the advisory unlock then ran on the dead
connection). Now "auto" takes the plain path with a warning, "require" fails with one line
saying what to add to postgresql.conf, and a preloaded server gets TimescaleDB.

Needs the TimescaleDB build that ../shared/timescaledb/install lays out beside the system
PostgreSQL (conftest's `tsdb_bindir`); where it is absent (a user's machine) these tests are
skipped with the TimescaleDB pass, in the same one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runtime import migrate
from runtime.errors import MigrationError
from runtime.localsvc import Postgres, make_state_dir
from runtime.settings import DatabaseSettings

pytestmark = pytest.mark.flavour("timescale")

def _server(bindir: Path, *settings: str) -> Iterator[Postgres]:
    server = Postgres(make_state_dir("fg-test-tsdb-"), durable=False, bindir=bindir,
                      settings=settings).start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def not_preloaded(tsdb_bindir: Path) -> Iterator[Postgres]:
    yield from _server(tsdb_bindir)


@pytest.fixture
def preloaded(tsdb_bindir: Path) -> Iterator[Postgres]:
    # No background workers: the scheduler would hold databases open (and this pair's jobs
    # fail after their work anyway: shared/timescaledb/README.md).
    yield from _server(tsdb_bindir, "shared_preload_libraries=timescaledb",
                       "timescaledb.max_background_workers=0")


def _database(server: Postgres, name: str) -> str:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


def test_auto_takes_the_plain_path_when_timescaledb_is_not_preloaded(not_preloaded):
    report = migrate.migrate(DatabaseSettings(url=_database(not_preloaded, "auto"),
                                              timescale="auto"))
    assert report.flavour == "postgresql"


def test_require_fails_with_one_line_saying_what_to_change(not_preloaded):
    url = _database(not_preloaded, "required")
    with pytest.raises(MigrationError, match="shared_preload_libraries = 'timescaledb'"):
        migrate.migrate(DatabaseSettings(url=url, timescale="require"))
    env = dict(os.environ, FIREGRID_DATABASE__URL=url, FIREGRID_DATABASE__TIMESCALE="require")
    out = subprocess.run([sys.executable, "-m", "firegrid.cli", "db", "migrate"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "shared_preload_libraries = 'timescaledb'" in out.stderr


def _status(url: str) -> str:
    env = dict(os.environ, FIREGRID_DATABASE__URL=url)
    out = subprocess.run([sys.executable, "-m", "firegrid.cli", "db", "status"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_preloaded_server_gets_timescaledb_and_db_status_says_so(preloaded, not_preloaded):
    url = _database(preloaded, "ts")
    report = migrate.migrate(DatabaseSettings(url=url, timescale="require"))
    assert report.flavour.startswith("timescaledb 2.")
    status = _status(url)
    assert "flavour: TimescaleDB 2." in status
    assert "policy_retention readings: last run never" in status    # the jobs, listed
    plain = _database(not_preloaded, "plain")
    migrate.migrate(DatabaseSettings(url=plain, timescale="auto"))
    assert "flavour: PostgreSQL" in _status(plain)


def _jobs(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {f"{proc} {table or '-'}": value for proc, table, value in conn.execute(
            "SELECT proc_name, hypertable_name, coalesce(config->>'drop_after',"
            " config->>'compress_after', config->>'start_offset')"
            " FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%'").fetchall()}


def test_policies_follow_the_settings_on_every_migrate(preloaded):
    """add_*_policy(if_not_exists) kept the first job: changing retention_days or
    compress_after_days later did nothing. Now each migrate brings the jobs in line and says
    what it changed; the hourly aggregate refreshes as far back as ingest accepts."""
    url = _database(preloaded, "policies")
    first = migrate.migrate(DatabaseSettings(url=url, timescale="require"), max_age_days=30)
    assert "readings: drop_after none -> 400 days" in first.changes
    jobs = _jobs(url)
    assert jobs["policy_retention readings"] == "400 days"
    assert jobs["policy_compression events"] == "7 days"
    # The aggregate's own: compressed a day after its refresh window, kept as the readings
    assert jobs["policy_compression readings_hourly"] == "32 days"
    assert jobs["policy_retention readings_hourly"] == "400 days"
    refresh = next(v for k, v in jobs.items() if k.startswith("policy_refresh"))
    assert refresh == "31 days"
    again = migrate.migrate(DatabaseSettings(url=url, timescale="require"), max_age_days=30)
    assert again.changes == ()
    changed = migrate.migrate(DatabaseSettings(url=url, timescale="require", retention_days=90,
                                               compress_after_days=2), max_age_days=60)
    assert set(changed.changes) == {
        "readings: compress_after 7 days -> 2 days", "events: compress_after 7 days -> 2 days",
        "readings: drop_after 400 days -> 90 days", "events: drop_after 400 days -> 90 days",
        "policy_refresh_continuous_aggregate: start_offset 31 days -> 61 days",
        "readings_hourly: compress_after 32 days -> 62 days",
        "readings_hourly: drop_after 400 days -> 90 days"}
    jobs = _jobs(url)
    assert jobs["policy_retention readings"] == "90 days"
    assert jobs["policy_compression readings"] == "2 days"
    assert jobs["policy_retention readings_hourly"] == "90 days"
    assert jobs["policy_compression readings_hourly"] == "62 days"
    assert len([k for k in jobs if k.startswith("policy_retention")]) == 3   # replaced, not added
    # and back: a shorter window after a longer one (the compression policy moves first)
    back = migrate.migrate(DatabaseSettings(url=url, timescale="require", retention_days=90,
                                            compress_after_days=2), max_age_days=30)
    assert set(back.changes) == {
        "policy_refresh_continuous_aggregate: start_offset 61 days -> 31 days",
        "readings_hourly: compress_after 62 days -> 32 days"}
