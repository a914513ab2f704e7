"""`firegrid demo`: the whole ingest path on one machine, for a newcomer to watch.

Private by default: it starts its own Mosquitto and PostgreSQL under --state-dir (.local/)
and never uses, or writes a database into, a broker or database that happens to answer on
the default ports (someone else's, perhaps password-protected). `use_services` uses the
configured ones instead, as they are. The private instances keep their data and their ports
between runs (demo.json in the state dir), so a second `./dev up` on the same clone comes
back to the same registry, and the shell lines of demo.env (FIREGRID_MQTT__PORT,
FIREGRID_DATABASE__URL, PGHOST...) stay true: `. .local/demo.env` in another terminal
points `firegrid simulate`, `mosquitto_sub` and `psql` at the running demo.

Then: migrate, register a small street (simulators.topology, preset "small", seed 7 as the
README's `firegrid simulate --seed 7` uses) through the CSV import when the registry is
empty, or refresh its roster when it is kept; run ingest, the maintenance monitor and the
alert core (fire warnings become incidents and pages on firegrid/v1/workers/<id>/pages),
serve the API and the duty console with login links for the grid worker on duty in the
building the README's fire burns and their community's duty officer, run a calm fleet of
those devices (status reports as real devices send them; alarms come from `firegrid
simulate`'s scenarios, or from --false-alarms), and print what lands in the database every
2 seconds. Ctrl-C (or SIGTERM) stops everything in order: the fleet, the console, the alert
core, ingest and the monitor, then the broker and the database.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts.service import AlertService
from devices import importer
from devices.broker import broker_auth
from devices.errors import ImportRejected
from devices.monitor import run_monitor
from firegrid.demo_console import start_console
from ingest.service import IngestService
from runtime import db, migrate
from runtime.localsvc import Mosquitto, Postgres, ServiceError, free_port, reachable
from runtime.settings import Settings
from simulators import messages as m
from simulators import timeline, topology
from simulators.errors import SimulatorError

log = logging.getLogger(__name__)

# What _start runs: either service, given back as itself.
_Service = TypeVar("_Service", IngestService, AlertService)

# The street the demo registers: the one `firegrid simulate --preset small --seed 7` runs.
PRESET, SEED = "small", 7
STATE_FILE, ENV_FILE = "demo.json", "demo.env"


@dataclass
class Noise:
    """What the fleet mixes into its status reports, as fractions of its messages: 0 by
    default, since real detectors alarm when there is smoke (the scenarios' job), and an
    alarm a minute buries the fire a newcomer came to watch."""
    false_alarms: float = 0.0
    malformed: float = 0.0


def run_demo(settings: Settings, *, devices: int, rate: float, seconds: float,
             state_dir: Path, use_services: bool = False, noise: Noise | None = None,
             stop: threading.Event | None = None) -> int:
    noise = noise or Noise()
    stop = stop or threading.Event()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    _refuse_second_demo(state_dir)
    _stop_on_signals(stop)
    started: list[Mosquitto | Postgres] = []
    state: dict[str, Any] = _read_state(state_dir)
    try:
        if use_services:
            settings = _existing_services(settings)
        else:
            settings = _private_services(settings, state_dir, state, started)
        settings = _free_metrics_ports(settings)
        db.ensure_database(settings.database)
        report = migrate.migrate(settings.database, max_age_days=settings.ingest.max_age_days)
        print(f"database: {_public_url(settings.database.url)} (schema path: {report.flavour})")
        print(f"broker:   {settings.mqtt.host}:{settings.mqtt.port}")
        street_dir = state_dir / "street"
        registered = _register_street(settings, street_dir, refresh_roster=not use_services)
        ids = registered[:devices]
        if ids:
            ids += [f"STRAY-{i}" for i in range(1, 4)]  # unregistered: they end in quarantine
        _write_state(state_dir, state, settings)
        service, ingest = _start(IngestService(settings), "ingest")
        if ingest is None:
            return 3
        alerts, alert_core = _start(AlertService(settings), "the alert core")
        if alert_core is None:
            service.stop()
            ingest.join(60)
            return 3
        fleet = threading.Thread(target=_fleet, args=(settings, ids, rate, stop, noise),
                                 name="fleet", daemon=True)
        if ids:
            fleet.start()
        monitor = threading.Thread(target=run_monitor, args=(settings, stop), name="monitor",
                                   daemon=True)
        monitor.start()
        if settings.ingest.metrics_port:
            print(f"metrics:  http://{settings.ingest.metrics_host}:"
                  f"{settings.ingest.metrics_port}/metrics")
        stop_console, logins = start_console(settings, _fire_building(street_dir))
        print("\n".join(logins))
        print(_walkthrough_lines(state_dir, settings))
        print(f"{len(ids)} simulated devices, ~{rate if ids else 0:g} messages/s, calm"
              f"{'' if noise.false_alarms == 0 else f' but {noise.false_alarms:g} false alarms'}"
              ". Ctrl-C stops.\n", flush=True)
        try:
            _report(settings, seconds, stop)
        finally:
            # In order: nothing new arrives, then the consumers drain and let go of the
            # broker and the database, which stop last (below).
            stop.set()
            if fleet.is_alive():
                fleet.join(10)
            stop_console()
            alerts.stop()
            alert_core.join(30)
            service.stop()
            ingest.join(60)
            monitor.join(30)
        return 0
    finally:
        stop.set()
        for server in reversed(started):
            server.stop()
        _clear_pid(state_dir)


def _stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM set `stop` (the demo winds down in order) instead of raising
    KeyboardInterrupt wherever the main thread happens to be."""
    if threading.current_thread() is not threading.main_thread():
        return   # a test running the demo in a thread stops it through `stop`
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


# --- state between runs ----------------------------------------------------------------


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _refuse_second_demo(state_dir: Path) -> None:
    pid = _read_state(state_dir).get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid) and "demo" in _cmdline(pid):
        raise ServiceError(f"演示已在运行 a demo is already running from {state_dir} (pid {pid}):"
                           f" use it (. {state_dir / ENV_FILE}) or stop it first")


def _write_state(state_dir: Path, state: dict[str, Any], settings: Settings) -> None:
    info = _conninfo(settings.database.url)
    # mqtt_port and pg_port are the private instances' (_private_services), kept for the
    # next private run whatever this one used.
    state.update({"pid": os.getpid(), "broker": f"{settings.mqtt.host}:{settings.mqtt.port}",
                  "database_url": settings.database.url})
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    env = {"FIREGRID_MQTT__HOST": settings.mqtt.host,
           "FIREGRID_MQTT__PORT": str(settings.mqtt.port),
           "FIREGRID_DATABASE__URL": settings.database.url,
           # psql and the other libpq tools read these, for the README's SQL.
           "PGHOST": info.get("host", "127.0.0.1"), "PGPORT": info.get("port", "5432"),
           "PGUSER": info.get("user", "postgres"), "PGDATABASE": info.get("dbname", "firegrid")}
    lines = [f"# firegrid demo (pid {os.getpid()}): `. {state_dir / ENV_FILE}` points this "
             "shell's firegrid, mosquitto_sub -p \"$FIREGRID_MQTT__PORT\" and psql at it"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    path = state_dir / ENV_FILE
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)   # with --use-services the URL may hold a password


def _clear_pid(state_dir: Path) -> None:
    state = _read_state(state_dir)
    if state.get("pid") == os.getpid():
        state.pop("pid")
        state.pop("mosquitto_pid", None)
        (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def _walkthrough_lines(state_dir: Path, settings: Settings) -> str:
    env = state_dir / ENV_FILE
    return (f"walkthrough (README.md), in another terminal of this directory:\n"
            f"          . {env}     # FIREGRID_MQTT__PORT={settings.mqtt.port}, "
            f"FIREGRID_DATABASE__URL, PGPORT...\n"
            f"          .venv/bin/firegrid simulate --preset {PRESET} --seed {SEED}"
            f" --scenario fire --speed 600 --truth truth.jsonl")


# --- services ----------------------------------------------------------------------------


def _conninfo(url: str) -> dict[str, str]:
    # Parsed from a string alone, every value is a str (the int and None in the dict's type
    # come from keyword overrides, which are not used here).
    return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items()}


def _public_url(url: str) -> str:
    info = _conninfo(url)
    return (f"postgresql://{info.get('user', '')}@{info.get('host', '')}:"
            f"{info.get('port', '5432')}/{info.get('dbname', '')}")


def _existing_services(settings: Settings) -> Settings:
    """--use-services: the configured broker and database, as they are, or exit 3."""
    if not reachable(settings.mqtt.host, settings.mqtt.port):
        raise ServiceError(f"no broker at {settings.mqtt.host}:{settings.mqtt.port} "
                           "(--use-services uses the configured one: FIREGRID_MQTT__HOST/PORT)")
    info = _conninfo(settings.database.url)
    host, port = info.get("host", "127.0.0.1"), int(info.get("port", 5432))
    if not reachable(host, port):
        raise ServiceError(f"no database at {host}:{port} (--use-services uses the configured "
                           "one: FIREGRID_DATABASE__URL)")
    return settings


def _port(state: dict[str, Any], key: str) -> int:
    """The port this state dir's service had last time when it is free, so demo.env and
    the lines printed last time stay true; another free one otherwise."""
    port = state.get(key)
    if isinstance(port, int) and not reachable("127.0.0.1", port):
        with socket.socket() as s:
            # As Mosquitto and PostgreSQL bind: the last run's connections, closed moments
            # ago, linger in TIME_WAIT on the port and would refuse a plain bind.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    return free_port()


def _private_services(settings: Settings, state_dir: Path, state: dict[str, Any],
                      started: list[Mosquitto | Postgres]) -> Settings:
    # A broker or a database left running by a demo that was killed (SIGKILL, a closed
    # terminal): ours by their state dir, so stopped and started again on the ports below.
    old_broker = state.get("mosquitto_pid")
    conf = str((state_dir / "mosquitto" / "mosquitto.conf").resolve())
    if isinstance(old_broker, int) and _alive(old_broker) and conf in _cmdline(old_broker):
        os.kill(old_broker, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(old_broker) and time.monotonic() < deadline:
            time.sleep(0.05)   # polling a process that is not our child: no wait() for it
    pg = Postgres(state_dir / "postgres", _port(state, "pg_port"))
    pg.stop()   # a no-op unless a killed demo's server is still running from this directory
    broker = Mosquitto(state_dir / "mosquitto", _port(state, "mqtt_port")).start()
    started.append(broker)
    state.update({"mqtt_port": broker.port,
                  "mosquitto_pid": broker.proc.pid if broker.proc else None})
    pg.start()
    started.append(pg)
    state["pg_port"] = pg.port
    print(f"private broker and database under {state_dir}/ (--use-services for configured "
          f"ones): Mosquitto on port {broker.port}, PostgreSQL on port {pg.port}")
    dbname = _conninfo(settings.database.url).get("dbname", "firegrid")
    return settings.model_copy(update={
        "mqtt": settings.mqtt.model_copy(update={"host": broker.host, "port": broker.port,
                                                 "username": None, "password": None}),
        "database": settings.database.model_copy(update={"url": pg.url(dbname)}),
        "broker_auth": settings.broker_auth.model_copy(update={"mode": "none"})})


def _free_metrics_ports(settings: Settings) -> Settings:
    ingest_cfg, alerts_cfg = settings.ingest, settings.alerts
    if ingest_cfg.metrics_port and reachable(ingest_cfg.metrics_host, ingest_cfg.metrics_port):
        ingest_cfg = ingest_cfg.model_copy(update={"metrics_port": free_port()})
    if alerts_cfg.metrics_port and reachable(ingest_cfg.metrics_host, alerts_cfg.metrics_port):
        alerts_cfg = alerts_cfg.model_copy(update={"metrics_port": free_port()})
    return settings.model_copy(update={"ingest": ingest_cfg, "alerts": alerts_cfg})


def _start(service: _Service, name: str) -> tuple[_Service, threading.Thread | None]:
    """Run a broker-consuming service in a thread; (service, thread), or (service, None)
    when it does not get its subscription within 30 s."""
    thread = threading.Thread(target=service.run, name=name, daemon=True)
    thread.start()
    if not service.consumer.subscribed.wait(30):
        print(f"{name} could not subscribe to the broker")
        return service, None
    return service, thread


# --- the street ---------------------------------------------------------------------------


def _register_street(settings: Settings, street_dir: Path, *, refresh_roster: bool
                     ) -> list[str]:
    """The registered device ids. Registers the demo's street first when there are none;
    on a kept registry, imports this week's roster (a registry kept for a week would
    otherwise have nobody on duty, and the fire would page nobody)."""
    # Deterministic for the seed (ids, passwords); the roster is the week around today.
    files = topology.generate(street_dir, preset=PRESET, seed=SEED)
    with db.connect(settings.database, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
        assert row is not None  # count(*) without GROUP BY gives exactly one row
        chosen = list(files.values()) if row[0] == 0 else [files["roster"]]
        if row[0] == 0 or refresh_roster:
            broker = broker_auth(settings)
            try:
                result = importer.run_import(conn, broker, chosen, actor="demo",
                                             iterations=settings.broker_auth.hash_iterations)
            except ImportRejected as exc:
                # A registry that is not the demo's street (--use-services): left as it is.
                print(f"registry: kept as it is; this week's demo roster does not fit it "
                      f"({exc})")
            else:
                what = result.plan.summary() or "nothing new"
                unchanged = f", {result.plan.unchanged} unchanged" if result.plan.unchanged else ""
                print(f"registry: imported {what}{unchanged} from {street_dir}")
            finally:
                broker.close()
        rows = conn.execute("SELECT id FROM devices WHERE state <> 'retired' ORDER BY id")
        return [r[0] for r in rows]


def _fire_building(street_dir: Path) -> str | None:
    """The building `firegrid simulate --preset small --seed 7 --scenario fire` burns, whose
    people the demo logs in."""
    try:
        return timeline.fire_building(topology.load(street_dir), SEED)
    except (SimulatorError, OSError):   # a foreign registry: no fire building to show
        log.debug("no demo street in %s", street_dir, exc_info=True)
        return None


# --- the fleet and the status line ------------------------------------------------------


def _fleet(settings: Settings, ids: list[str], rate: float, stop: threading.Event,
           noise: Noise) -> None:
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
            camera = device.startswith("CAM")
            if roll < noise.malformed:
                topic = m.topic(device, "telemetry", prefix)
                payload = b'{"type": "smoke_status", "ts": '
            elif roll < noise.malformed + noise.false_alarms and not camera:
                topic = m.topic(device, "event", prefix)
                payload = m.encode(m.event("alarm", seq, obscuration_db_m=0.35))
            elif roll < noise.malformed + noise.false_alarms and camera:
                topic = m.topic(device, "event", prefix)
                payload = m.encode(m.event("smoke_detected", seq,
                                           confidence=round(rng.uniform(0.5, 0.99), 2)))
            elif not camera:
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


# Ingest lag is arrival minus device time, which a live device keeps within seconds. A
# reading stamped more than this before it arrived was not late through ingest: a
# scenario's compressed clock (firegrid simulate starts in the simulated past) or a
# device's buffer from an outage. Counted apart, never in the lag.
BACKDATED_S = 60

_STATUS = f"""
    SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events),
      (SELECT count(*) FROM events WHERE type IN ('alarm', 'smoke_detected', 'fire_detected')),
      (SELECT coalesce(sum(seen_count), 0) FROM dead_letters),
      (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts))
       FROM readings WHERE received_at > now() - interval '10 seconds'
         AND ts > received_at - interval '{BACKDATED_S} seconds'),
      (SELECT count(*) FROM readings WHERE received_at > now() - interval '10 seconds'
         AND ts <= received_at - interval '{BACKDATED_S} seconds'),
      (SELECT count(*) FROM device_status),
      (SELECT count(*) FROM maintenance_tickets WHERE closed_at IS NULL),
      (SELECT count(*) FROM quarantine WHERE claimed_at IS NULL),
      (SELECT count(*) FROM incidents WHERE state <> 'resolved'),
      (SELECT count(*) FROM pages WHERE status = 'sent')"""


def status_line(conn: psycopg.Connection[Any], last: int | None, every_s: float
                ) -> tuple[str, int]:
    """The demo's line of counts, and the readings count for the next line's rate."""
    row = conn.execute(_STATUS).fetchone()
    assert row is not None  # a SELECT without FROM gives exactly one row
    (readings, events, alarms, dead, lag, backdated, seen, tickets, stray, incidents,
     pages) = row
    rate = f"+{(readings - last) / every_s:.0f}/s" if last is not None else ""
    lag_ms = f"{lag * 1000:.0f} ms" if lag is not None else "-"
    late = f" ({backdated} back-dated: scenario clock)" if backdated else ""
    return (f"readings {readings:>8} {rate:>8} | events {events:>6} (fire warnings {alarms})"
            f" | dead letters {dead:>4} | lag p50 {lag_ms}{late} | devices heard {seen}"
            f" | open tickets {tickets} | quarantine {stray}"
            f" | open incidents {incidents} | pages sent {pages}"), readings


def _report(settings: Settings, seconds: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    last = None
    every = 2.0
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        while deadline is None or time.monotonic() < deadline:
            wait = every if deadline is None else min(every, deadline - time.monotonic())
            if stop.wait(max(wait, 0)):
                return
            line, last = status_line(conn, last, every)
            print(line, flush=True)
