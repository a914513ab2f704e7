"""Real services for the tests: a private PostgreSQL cluster and a private Mosquitto with
firegrid's shipped conf.d, both on free ports, started once per session. Each test gets its
own database (cloned from a migrated template) and its own topic prefix and client ids, so
tests never see each other's rows or messages.

Both database flavours: every test that uses the database (the `pg_server` fixture, directly
or through `db_url`, `db`, `make_settings`) runs once on plain PostgreSQL (`[plain]`) and
once on TimescaleDB (`[timescale]`), a server started from the copy that
../shared/timescaledb/install lays out, with the extension preloaded. Where that copy is
absent (a user's machine) the TimescaleDB pass is skipped with one line in the summary.
`--db-flavour plain|timescale` runs one pass only; `@pytest.mark.flavour("timescale")`
keeps a test to one flavour. The summary ends with the counts per flavour.

The modules in PLAIN_ONLY run on plain PostgreSQL only, unless `--db-flavour every`: their
database work never meets what TimescaleDB changes (the readings and events hypertables,
the aggregate, its policies and jobs). Running them twice doubled the suite past 15 minutes
on 2 cores and tested the same SQL twice.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from runtime import migrate
from runtime.localsvc import Mosquitto, Postgres, make_state_dir
from runtime.settings import DatabaseSettings, Settings, load_settings

_counter = itertools.count()

FLAVOURS = ("plain", "timescale")
# FIREGRID_TEST_TIMESCALEDB_INSTALL points elsewhere (a path that does not exist: the run of
# a machine without it).
TIMESCALEDB_INSTALL = Path(os.environ.get(
    "FIREGRID_TEST_TIMESCALEDB_INSTALL",
    Path(__file__).resolve().parent.parent.parent / "shared" / "timescaledb" / "install"))
TIMESCALEDB_ABSENT = (f"TimescaleDB pass skipped: {TIMESCALEDB_INSTALL} is not on this machine"
                      " (the plain PostgreSQL pass ran; see ../shared/timescaledb/README)")
# A private server that can load TimescaleDB preloads it. No background workers: the
# scheduler would hold the template database open (CREATE DATABASE ... TEMPLATE fails), and
# tests run jobs themselves with CALL run_job (shared/timescaledb/README).
TIMESCALEDB_SETTINGS = ("shared_preload_libraries=timescaledb",
                        "timescaledb.max_background_workers=0",
                        "timescaledb.telemetry_level=off")


# The alert core's tables, the registry, the API, the console and the services' process
# and broker behaviour: the same SQL on both flavours (see the module's docstring).
PLAIN_ONLY = frozenset({
    "test_alarms_first", "test_alert_channels", "test_alert_core", "test_alert_dispatch",
    "test_alert_inhibit", "test_alert_loop", "test_alert_restart", "test_alert_service",
    "test_api", "test_api_fuzz", "test_api_incidents", "test_api_permissions",
    "test_api_queries", "test_broker_auth", "test_cli_broker", "test_console_api",
    "test_console_browser", "test_console_duty", "test_console_field",
    "test_console_incident", "test_duty", "test_field_people", "test_human_confirm",
    "test_import", "test_pages_once", "test_rules_live", "test_side_by_side", "test_voice",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db-flavour", choices=("both", "every", *FLAVOURS), default="both",
                     help="run the database tests on plain PostgreSQL, on TimescaleDB, or"
                          " on both (default; TimescaleDB only where"
                          " ../shared/timescaledb/install exists, and not for the modules in"
                          " tests/conftest.py's PLAIN_ONLY); every: all of them on both")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flavour(name): a database test for one flavour only (plain or"
                   " timescale); without the `pg_server` fixture, a test that needs that"
                   " flavour's server software (tsdb_bindir)")
    if config.getoption("--db-flavour") == "timescale" and not TIMESCALEDB_INSTALL.exists():
        raise pytest.UsageError(TIMESCALEDB_ABSENT)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_flavour" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--db-flavour")
    flavours = list(FLAVOURS) if chosen in ("both", "every") else [chosen]
    if chosen == "both" and metafunc.module.__name__.rpartition(".")[2] in PLAIN_ONLY:
        flavours = ["plain"]
    marker = metafunc.definition.get_closest_marker("flavour")
    if marker is not None:
        flavours = [f for f in flavours if f in marker.args]   # none: skipped, saying so
    metafunc.parametrize("pg_flavour", flavours, indirect=True, scope="session")


@pytest.fixture(scope="session")
def tsdb_bindir() -> Path:
    """The bin directory of the PostgreSQL with TimescaleDB; skips (one line for the whole
    run: the same reason from the same place) where it is not on this machine."""
    if not TIMESCALEDB_INSTALL.exists():
        pytest.skip(TIMESCALEDB_ABSENT)
    out = subprocess.run([str(TIMESCALEDB_INSTALL)], capture_output=True, text=True,
                         check=True, timeout=300)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def pg_flavour(request: pytest.FixtureRequest) -> str:
    """The flavour of this pass's `pg_server`: "plain" or "timescale"."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server(pg_flavour, request):
    if pg_flavour == "timescale":
        bindir = request.getfixturevalue("tsdb_bindir")
        server = Postgres(make_state_dir("fg-test-tsdb-"), durable=False, bindir=bindir,
                          settings=TIMESCALEDB_SETTINGS).start()
    else:
        server = Postgres(make_state_dir("fg-test-pg-"), durable=False).start()
    url = server.url("fg_template")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fg_template")
    migrate.migrate(DatabaseSettings(
        url=url, timescale="require" if pg_flavour == "timescale" else "off"))
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def broker():
    server = Mosquitto(make_state_dir("fg-test-mq-")).start()
    yield server
    server.destroy()


@pytest.fixture
def db_url(pg_server, request) -> str:
    """A fresh, migrated database for this test."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE fg_template")
    return pg_server.url(name)


@pytest.fixture
def db(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def uid() -> str:
    return f"t{os.getpid()}x{next(_counter)}"


@pytest.fixture
def make_settings(broker, db_url, uid):
    """Settings pointing at the test's broker, database and private topic namespace."""

    def make(**sections) -> Settings:
        base = {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"ingest-{uid}",
                     "topic_prefix": f"fg/{uid}",
                     "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
            "database": {"url": db_url},
            "ingest": {"metrics_port": 0, "batch_max_age_ms": 20, "retry_min_s": 0.05,
                       "retry_max_s": 0.5},
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return load_settings(None, **base)

    return make


# --- a broker that enforces per-device credentials (devices/dynsec.py) ----------------------

SECURE_ADMIN = ("firegrid-admin", "test-admin-password")
SECURE_PREFIX = "fg/v1"


@dataclass(frozen=True)
class SecureBroker:
    server: Mosquitto
    admin: tuple[str, str]      # the dynamic-security admin
    service: tuple[str, str]    # a service account with the ingest and service roles
    topic_prefix: str = SECURE_PREFIX

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="session")
def secure_broker():
    """A private Mosquitto with the dynamic-security plugin and anonymous access off, set up
    as an operator would (devices.dynsec.setup_broker): deny by default, the ingest and
    service roles, one service account with both. One topic prefix for the session: tests
    keep apart by device id (use `uid` in it)."""
    from devices.dynsec import INGEST_ROLE, SERVICE_ROLE, ServiceAccount, setup_broker

    server = Mosquitto(make_state_dir("fg-test-mqs-"), dynsec_admin=SECURE_ADMIN).start()
    service = ("firegrid-test-service", "test-service-password")
    try:
        settings = load_settings(None, mqtt={"host": server.host, "port": server.port,
                                             "topic_prefix": SECURE_PREFIX},
                                 broker_auth={"mode": "mosquitto-dynsec",
                                              "admin_username": SECURE_ADMIN[0],
                                              "admin_password": SECURE_ADMIN[1]})
        setup_broker(settings.mqtt, settings.broker_auth,
                     [ServiceAccount(*service, roles=(INGEST_ROLE, SERVICE_ROLE))])
        yield SecureBroker(server, SECURE_ADMIN, service)
    finally:
        server.destroy()


@pytest.fixture
def secure_settings(secure_broker, make_settings) -> Settings:
    """Settings for the secure broker: ingest logs in as the service account, and
    broker_auth manages device accounts through the dynamic-security admin."""
    return make_settings(
        mqtt={"host": secure_broker.host, "port": secure_broker.port,
              "topic_prefix": secure_broker.topic_prefix,
              "username": secure_broker.service[0], "password": secure_broker.service[1]},
        broker_auth={"mode": "mosquitto-dynsec", "admin_username": secure_broker.admin[0],
                     "admin_password": secure_broker.admin[1]})


# --- the counts per flavour, at the end of the run ---------------------------------------

_flavour_of: dict[str, str] = {}
_outcomes: dict[str, Counter[str]] = {}
_seconds: dict[str, float] = {}     # setup, call and teardown, servers' start included
_not_run: list[str] = []    # the TimescaleDB pass, where TimescaleDB is absent


def _item_flavour(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "pg_flavour" in callspec.params:
        return str(callspec.params["pg_flavour"])
    marker = item.get_closest_marker("flavour")
    return str(marker.args[0]) if marker is not None else "no database"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = []
    for item in items:
        flavour = _flavour_of[item.nodeid] = _item_flavour(item)
        if flavour == "timescale" and not TIMESCALEDB_INSTALL.exists():
            _not_run.append(item.nodeid)
        else:
            keep.append(item)
    if _not_run:
        # Deselected, not hundreds of skips: the summary says it once (terminal_summary).
        not_run = set(_not_run)
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in not_run])
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    flavour = _flavour_of.get(report.nodeid, "no database")
    _seconds[flavour] = _seconds.get(flavour, 0.0) + report.duration   # every phase
    if report.when == "call" or report.outcome != "passed":
        outcome = "error" if report.when != "call" and report.failed else report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        _outcomes.setdefault(flavour, Counter())[outcome] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if not _outcomes and not _not_run:
        return
    terminalreporter.section("tests per database flavour")
    if _not_run:
        terminalreporter.write_line(f"  timescale: {len(_not_run)} not run: {TIMESCALEDB_ABSENT}")
    for flavour in (*FLAVOURS, "no database"):
        counts = _outcomes.get(flavour)
        if counts:
            text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            terminalreporter.write_line(
                f"{flavour:>11}: {text} in {_seconds.get(flavour, 0.0):.0f} s")
