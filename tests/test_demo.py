"""The demo's parts (issue 20): private services, its own process group for the broker,
links reissued on a kept registry for the people on duty where the README's fire burns, a
calm fleet, scenario timestamps apart from ingest lag, and simulate refusing to run without
a broker. tests/test_demo_walkthrough.py runs the whole demo and the README as written."""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices import importer
from devices.broker import broker_auth
from firegrid import cli, demo
from firegrid.demo_console import demo_token, people_for
from runtime import db, migrate
from runtime.localsvc import Mosquitto, Postgres, free_port, make_state_dir
from runtime.settings import load_settings
from simulators import scenarios, timeline, topology
from simulators.clock import VirtualClock
from simulators.engine import Engine, LoopbackLink, run_virtual
from simulators.truth import Truth


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


def test_links_are_for_the_people_on_duty_where_the_readmes_fire_burns(
        make_settings, db, tmp_path):
    street = _register(make_settings(), tmp_path)
    building = timeline.fire_building(street, 7)
    grid = db.execute("SELECT grid_id FROM buildings WHERE id = %s", [building]).fetchone()[0]
    community = grid.split("-")[0]
    for hours in (0, 12):   # grid workers take alternate 12 h shifts
        at = datetime.now(UTC) + timedelta(hours=hours)
        people = {role: (worker, on) for role, worker, on in people_for(db, building, at)}
        worker, on_duty = people["grid_worker"]
        assert on_duty and worker.startswith(f"{grid}-W")
        shift = db.execute("SELECT 1 FROM roster WHERE worker_id = %s AND starts_at <= %s"
                           " AND ends_at > %s", [worker, at, at]).fetchone()
        assert shift is not None
        officer, on_duty = people["community_duty"]
        assert on_duty and officer.startswith(f"{community}-D")


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


def test_the_fleet_is_calm_by_default(make_settings, broker, uid):
    settings = make_settings()
    ids = [f"SD{n:06d}" for n in range(1, 21)] + [f"CAM{n:06d}" for n in range(1, 6)]
    seen: list[str] = []
    enough = threading.Event()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"calm-{uid}")
    client.on_connect = lambda c, *_: c.subscribe(f"{settings.mqtt.topic_prefix}/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()

    def on_message(c, userdata, msg):
        seen.append(msg.payload.decode(errors="replace"))
        if len(seen) >= 1500:
            enough.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    stop = threading.Event()
    try:
        assert subscribed.wait(10)
        fleet = threading.Thread(target=demo._fleet,
                                 args=(settings, ids, 2000.0, stop, demo.Noise()))
        fleet.start()
        assert enough.wait(60)
        stop.set()
        fleet.join(10)
    finally:
        stop.set()
        client.loop_stop()
        client.disconnect()
    # The old fleet sent ~1% alarms and 0.5% malformed messages: 15 and 7 of 1,500.
    types = [json.loads(p)["type"] for p in seen]
    assert set(types) == {"smoke_status", "camera_status"}


def test_scenario_timestamps_are_not_ingest_lag(make_settings, db):
    settings = make_settings()
    now = datetime.now(UTC)
    rows = [("SD1", now - timedelta(milliseconds=20), 1),
            ("SD2", now - timedelta(minutes=6), 1),      # firegrid simulate's clock
            ("SD3", now - timedelta(minutes=6, seconds=1), 2)]
    for device, ts, seq in rows:
        db.execute("INSERT INTO readings (device_id, ts, seq, kind, received_at)"
                   " VALUES (%s, %s, %s, 'smoke', %s)", [device, ts, seq, now])
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        line, count = demo.status_line(conn, None, 2.0)
    assert count == 3
    assert "lag p50 20 ms (2 back-dated: scenario clock)" in line, line


def test_simulate_without_a_broker_exits_3(monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_MQTT__PORT", str(free_port()))
    code = cli.main(["simulate", "--preset", "tiny", "--scenario", "fire", "--speed", "600"])
    assert code == 3
    assert "demo.env" in capsys.readouterr().err


def test_fire_building_is_the_one_the_fire_scenario_burns(tmp_path):
    # The demo names the building before `firegrid simulate` runs; on a virtual clock, the
    # planner's own choice for a few seeds (the planner draws it first from the seed's rng).
    topology.generate(tmp_path, "tiny", seed=1)
    street = topology.load(tmp_path)
    fire = scenarios.load("fire")
    for seed in (1, 2, 3, 7):
        clock = VirtualClock(1_750_000_000_000)
        truth = Truth()
        engine = Engine(street, clock=clock, seed=seed, truth=truth,
                        link_factory=LoopbackLink, models=fire.devices, uplink=fire.uplink)
        timeline.plan(engine, fire, seed)
        run_virtual(engine, clock, clock.now_ms() + int(fire.span_s() * 1000))
        engine.finish()
        truth.close()
        burnt = [r["building"] for r in truth.records if r["kind"] == "incident"]
        assert burnt == [timeline.fire_building(street, seed)], seed


def test_the_demo_runs_beside_a_password_protected_postgresql():
    # What Debian's postgresql package sets up: scram for TCP connections. The demo used
    # it because it answered, and exited 3 with "fe_sendauth: no password supplied".
    guarded = Postgres(make_state_dir("fg-test-scram-"), durable=False).start()
    home = make_state_dir("fg-test-demo-")
    started: list = []
    try:
        with psycopg.connect(guarded.url(), autocommit=True) as conn:
            conn.execute("ALTER USER postgres PASSWORD 'not-yours'")
        (guarded.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        guarded.restart()
        settings = load_settings(None, database={"url": guarded.url("firegrid")})
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(settings.database.url).close()
        private = demo._private_services(settings, home, {}, started)
        assert db.ensure_database(private.database)
        migrate.migrate(private.database)
    finally:
        for server in reversed(started):
            server.stop()
        guarded.destroy()
        shutil.rmtree(home, ignore_errors=True)
