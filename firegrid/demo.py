"""`firegrid demo`: the whole ingest path on one machine, for a newcomer to watch.

Uses the configured broker and database when they answer; otherwise starts private ones
(runtime.localsvc) under --state-dir on free ports. Then: migrate, register a small street
(simulators.topology, preset "small") through the CSV import when the registry is empty,
run ingest, the maintenance monitor and the alert core (fire warnings become incidents and
pages on firegrid/v1/workers/<id>/pages), serve the API and the duty console with login
links for a grid worker and their community's duty officer, run a simulated fleet of those
devices (smoke detectors and cameras, with the occasional alarm, a few unregistered ids and,
on purpose, the occasional malformed message), and print what lands in the database every
2 seconds. The full device simulators and scenarios are `simulators/` proper (a later issue).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts.service import AlertService
from devices import importer
from devices.broker import broker_auth
from devices.monitor import run_monitor
from firegrid.demo_console import start_console
from ingest.service import IngestService
from runtime import db, migrate
from runtime.localsvc import Mosquitto, Postgres, free_port, reachable
from runtime.settings import Settings
from simulators import messages as m
from simulators import topology

log = logging.getLogger(__name__)

# What _start runs: either service, given back as itself.
_Service = TypeVar("_Service", IngestService, AlertService)


def run_demo(settings: Settings, *, devices: int, rate: float, seconds: float,
             state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    started: list[Mosquitto | Postgres] = []
    try:
        settings = _with_services(settings, state_dir, started)
        db.ensure_database(settings.database)
        report = migrate.migrate(settings.database, max_age_days=settings.ingest.max_age_days)
        print(f"database: {settings.database.url} (schema path: {report.flavour})")
        print(f"broker:   {settings.mqtt.host}:{settings.mqtt.port}")
        ids = _register_street(settings, state_dir)[:devices]
        ids += [f"STRAY-{i}" for i in range(1, 4)]  # unregistered: they end in quarantine
        service, ingest = _start(IngestService(settings), "ingest")
        if ingest is None:
            return 3
        alerts, alert_core = _start(AlertService(settings), "the alert core")
        if alert_core is None:
            return 3
        stop = threading.Event()
        fleet = threading.Thread(target=_fleet, args=(settings, ids, rate, stop),
                                 name="fleet", daemon=True)
        fleet.start()
        monitor = threading.Thread(target=run_monitor, args=(settings, stop), name="monitor",
                                   daemon=True)
        monitor.start()
        if settings.ingest.metrics_port:
            print(f"metrics:  http://{settings.ingest.metrics_host}:"
                  f"{settings.ingest.metrics_port}/metrics")
        stop_console, logins = start_console(settings, ids[0])
        print("\n".join(logins))
        print(f"{len(ids)} simulated devices, ~{rate:g} messages/s. Ctrl-C stops.\n")
        try:
            _report(settings, seconds)
        except KeyboardInterrupt:
            pass
        stop.set()
        stop_console()
        fleet.join(10)
        alerts.stop()
        alert_core.join(30)
        service.stop()
        ingest.join(60)
        return 0
    finally:
        for server in reversed(started):
            server.stop()


def _start(service: _Service, name: str) -> tuple[_Service, threading.Thread | None]:
    """Run a broker-consuming service in a thread; (service, thread), or (service, None)
    when it does not get its subscription within 30 s."""
    thread = threading.Thread(target=service.run, name=name, daemon=True)
    thread.start()
    if not service.consumer.subscribed.wait(30):
        print(f"{name} could not subscribe to the broker")
        return service, None
    return service, thread


def _register_street(settings: Settings, state_dir: Path) -> list[str]:
    """The registered device ids; registers the "small" street first if there are none."""
    with db.connect(settings.database, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
        assert row is not None  # count(*) without GROUP BY gives exactly one row
        if row[0] == 0:
            files = topology.generate(state_dir / "street", preset="small", seed=7)
            broker = broker_auth(settings)
            try:
                result = importer.run_import(conn, broker, files.values(), actor="demo",
                                             iterations=settings.broker_auth.hash_iterations)
            finally:
                broker.close()
            print(f"registry: imported {result.plan.summary()} from {state_dir / 'street'}")
        rows = conn.execute("SELECT id FROM devices WHERE state <> 'retired' ORDER BY id")
        return [r[0] for r in rows]


def _with_services(settings: Settings, state_dir: Path,
                   started: list[Mosquitto | Postgres]) -> Settings:
    mqtt_cfg, db_cfg, ingest_cfg = settings.mqtt, settings.database, settings.ingest
    if not reachable(mqtt_cfg.host, mqtt_cfg.port):
        broker = Mosquitto(state_dir / "mosquitto").start()
        started.append(broker)
        mqtt_cfg = mqtt_cfg.model_copy(update={"host": broker.host, "port": broker.port})
        print(f"no broker at {settings.mqtt.host}:{settings.mqtt.port}: "
              f"started one on port {broker.port}")
    # Parsed from a string alone, every value is a str (the int and None in the dict's type
    # come from keyword overrides, which are not used here).
    info = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(db_cfg.url).items()}
    host, port = info.get("host", "127.0.0.1"), int(info.get("port", 5432))
    if not reachable(host, port):
        pg = Postgres(state_dir / "postgres").start()
        started.append(pg)
        db_cfg = db_cfg.model_copy(update={"url": pg.url(info.get("dbname", "firegrid"))})
        print(f"no database at {host}:{port}: started PostgreSQL on port {pg.port}")
    if ingest_cfg.metrics_port and reachable(ingest_cfg.metrics_host, ingest_cfg.metrics_port):
        ingest_cfg = ingest_cfg.model_copy(update={"metrics_port": free_port()})
    alerts_cfg = settings.alerts
    if alerts_cfg.metrics_port and reachable(ingest_cfg.metrics_host, alerts_cfg.metrics_port):
        alerts_cfg = alerts_cfg.model_copy(update={"metrics_port": free_port()})
    return settings.model_copy(update={"mqtt": mqtt_cfg, "database": db_cfg,
                                       "ingest": ingest_cfg, "alerts": alerts_cfg})


def _fleet(settings: Settings, ids: list[str], rate: float, stop: threading.Event) -> None:
    """Devices multiplexed over one connection, each with its own id and seq counter."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"firegrid-demo-fleet-{random.randrange(1 << 30)}")
    client.max_queued_messages_set(0)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    prefix = settings.mqtt.topic_prefix
    rng = random.Random(7)
    seqs = dict.fromkeys(ids, 0)
    battery = {d: rng.randint(20, 100) for d in ids}
    # Room temperature drifts slowly: a fresh random value per report would climb 10 °C a
    # minute between two reports seconds apart and trip the rate-of-rise fire rule.
    temperature = {d: rng.uniform(20, 28) for d in ids}
    interval = 1.0 / rate
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            device = rng.choice(ids)
            seqs[device] += 1
            seq = seqs[device]
            roll = rng.random()
            if roll < 0.005:
                topic = m.topic(device, "telemetry", prefix)
                payload = b'{"type": "smoke_status", "ts": '
            elif roll < 0.01 and not device.startswith("CAM"):
                topic = m.topic(device, "event", prefix)
                payload = m.encode(m.event("alarm", seq, obscuration_db_m=0.35))
            elif roll < 0.012 and device.startswith("CAM"):
                topic = m.topic(device, "event", prefix)
                payload = m.encode(m.event("smoke_detected", seq,
                                           confidence=round(rng.uniform(0.5, 0.99), 2)))
            elif not device.startswith("CAM"):
                battery[device] = max(0, battery[device] - (rng.random() < 0.01))
                temperature[device] = min(32.0, max(18.0, temperature[device]
                                                    + rng.uniform(-0.05, 0.05)))
                topic, payload = m.topic(device, "telemetry", prefix), m.encode(m.smoke_status(
                    seq, obscuration_db_m=round(rng.uniform(0, 0.05), 3),
                    temperature_c=round(temperature[device], 1), battery_pct=battery[device],
                    rsrp_dbm=rng.randint(-120, -70), sinr_db=round(rng.uniform(-5, 20), 1)))
            else:
                topic = m.topic(device, "telemetry", prefix)
                payload = m.encode(m.camera_status(seq))
            client.publish(topic, payload, qos=1)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        client.disconnect()
        client.loop_stop()


def _report(settings: Settings, seconds: float) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    last = None
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(2)
            row = conn.execute(
                "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events),"
                " (SELECT count(*) FROM events"
                "  WHERE type IN ('alarm', 'smoke_detected', 'fire_detected')),"
                " (SELECT coalesce(sum(seen_count), 0) FROM dead_letters),"
                " (SELECT percentile_cont(0.5)"
                "  WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts))"
                "  FROM readings WHERE received_at > now() - interval '10 seconds'),"
                " (SELECT count(*) FROM device_status),"
                " (SELECT count(*) FROM maintenance_tickets WHERE closed_at IS NULL),"
                " (SELECT count(*) FROM quarantine WHERE claimed_at IS NULL),"
                " (SELECT count(*) FROM incidents WHERE state <> 'resolved'),"
                " (SELECT count(*) FROM pages WHERE status = 'sent')").fetchone()
            assert row is not None  # a SELECT without FROM gives exactly one row
            readings, events, alarms, dead, lag, seen, tickets, stray, incidents, pages = row
            rate = f"+{(readings - last) / 2:.0f}/s" if last is not None else ""
            last = readings
            lag_ms = f"{lag * 1000:.0f} ms" if lag is not None else "-"
            print(f"readings {readings:>8} {rate:>8} | events {events:>6} (fire warnings {alarms})"
                  f" | dead letters {dead:>4} | lag p50 {lag_ms} | devices heard {seen}"
                  f" | open tickets {tickets} | quarantine {stray}"
                  f" | open incidents {incidents} | pages sent {pages}", flush=True)
