"""Real services for the tests: a private PostgreSQL cluster and a private Mosquitto with
firegrid's shipped conf.d, both on free ports, started once per session. Each test gets its
own database (cloned from a migrated template) and its own topic prefix and client ids, so
tests never see each other's rows or messages."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import psycopg
import pytest

from runtime import migrate
from runtime.localsvc import Mosquitto, Postgres, make_state_dir
from runtime.settings import DatabaseSettings, Settings, load_settings

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    server = Postgres(make_state_dir("fg-test-pg-"), durable=False).start()
    url = server.url("fg_template")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fg_template")
    migrate.migrate(DatabaseSettings(url=url))
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
