"""The demo's parts (issue 20): private services, its own process group for the broker,
links reissued on a kept registry, and simulate refusing to run without a broker."""

from __future__ import annotations

import os
import shutil

import psycopg

from devices import importer
from devices.broker import broker_auth
from firegrid import cli, demo
from firegrid.demo_console import demo_token
from runtime import db
from runtime.localsvc import Mosquitto, free_port, make_state_dir
from simulators import topology


def test_private_mosquitto_is_not_in_the_terminals_process_group():
    # Ctrl-C goes to the terminal's whole foreground group: a broker in it exits under the
    # services still using it ("lost broker connection" warnings at every Ctrl-C).
    broker = Mosquitto(make_state_dir("fg-test-mq-")).start()
    try:
        assert broker.proc is not None
        assert os.getpgid(broker.proc.pid) != os.getpgid(0)
    finally:
        broker.destroy()


def test_the_demo_never_uses_a_broker_or_database_that_happens_to_answer(
        make_settings, broker, pg_server, uid):
    # The configured broker and database answer (another project's, a system service):
    # the demo starts its own all the same and writes no database into that server.
    settings = make_settings(database={"url": pg_server.url(f"demo_{uid}")})
    home = make_state_dir("fg-test-demo-")
    started: list = []
    try:
        private = demo._private_services(settings, home, {}, started)
        assert private.mqtt.port != broker.port
        assert f":{pg_server.port}/" not in private.database.url
        assert db.ensure_database(private.database)
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                [f"demo_{uid}"]).fetchone() is None
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


def _register(settings, tmp_path, preset="small", seed=7):
    files = topology.generate(tmp_path / "street", preset=preset, seed=seed)
    broker = broker_auth(settings)
    try:
        with db.connect(settings.database, autocommit=True) as conn:
            importer.run_import(conn, broker, files.values(), actor="test",
                                iterations=settings.broker_auth.hash_iterations)
    finally:
        broker.close()
    return topology.load(tmp_path / "street")


def test_a_second_start_reissues_the_demo_links(make_settings, db, tmp_path):
    # The first run's token name is taken on a kept registry: the second start failed
    # with "name 'demo-C1-G01-W1' already exists".
    _register(make_settings(), tmp_path)
    first = demo_token(db, "C1-G01-W1", "grid_worker")
    second = demo_token(db, "C1-G01-W1", "grid_worker")
    assert first != second
    live = db.execute("SELECT count(*) FROM api_tokens WHERE name = 'demo-C1-G01-W1'"
                      " AND revoked_at IS NULL").fetchone()[0]
    assert live == 1


def test_simulate_without_a_broker_exits_3(monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_MQTT__PORT", str(free_port()))
    code = cli.main(["simulate", "--preset", "tiny", "--scenario", "fire", "--speed", "600"])
    assert code == 3
    assert "demo.env" in capsys.readouterr().err
