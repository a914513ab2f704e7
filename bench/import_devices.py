#!/usr/bin/env python
"""Registering a whole street office from CSV, and provisioning its broker credentials.

    .venv/bin/python bench/import_devices.py [--preset street] [--live-sample 30]

The deployment is simulators.topology's "street" preset: 18,064 smoke detectors in 3,441
buildings and 3,673 camera channels in 3,537 buildings (3,900 buildings in all), 214 grids,
672 workers and a week's roster (5,200 shifts), written as the four import CSVs. A private,
durable PostgreSQL (fsync on) and a private Mosquitto 2 with the dynamic-security plugin are
started through runtime.localsvc and removed at the end. Timed:

    check      `firegrid devices import --dry-run`: every row of the four files checked
    registry   the import with nothing to push to a broker: what it costs with EMQX, which
               reads the registry itself (broker_auth.mode = "database")
    file load  the import with Mosquitto stopped, writing the plugin's file (DynsecFile, the
               documented first load of a large site); then Mosquitto is started and timed
               until a sampled device logs in with its own password
    live       --live-sample more devices added over $CONTROL/dynamic-security/v1 to the
               running broker that already holds the whole street (MosquittoDynsec): the
               day-to-day path, and the baseline the file load is compared with
    live empty the same number added to an empty plugin: the control topic at its best

The last line printed is always:
    RESULT import_s=<file load, s> devices=<n> check_s=<x> registry_s=<x>
           provision_file_per_s=<x> provision_live_full_per_s=<x> vs_live=<ratio>  (one line)
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices import importer  # noqa: E402
from devices.broker import NoBrokerAuth  # noqa: E402
from devices.dynsec import INGEST_ROLE, DynsecFile, MosquittoDynsec, ServiceAccount, setup_broker  # noqa: E402
from runtime import migrate  # noqa: E402
from runtime.localsvc import Mosquitto, Postgres, make_state_dir, wait_until  # noqa: E402
from runtime.settings import DatabaseSettings, load_settings  # noqa: E402
from simulators import topology  # noqa: E402

ADMIN = ("firegrid-admin", "bench-admin-password")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="street", choices=sorted(topology.PRESETS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--live-sample", type=int, default=30,
                    help="devices added over the control topic (default 30: ~30 s at full size)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fg-bench-import-"))
    pg = Postgres(make_state_dir("fg-bench-import-pg-"), durable=True).start()
    broker = Mosquitto(make_state_dir("fg-bench-import-mq-"), dynsec_admin=ADMIN)
    rows: list[tuple[str, int, float]] = []
    try:
        files = topology.generate(work / "street", args.preset, args.seed)
        paths = list(files.values())
        devices = sum(1 for _ in csv.reader(files["devices"].open())) - 1
        settings = _settings(broker)
        iterations = settings.broker_auth.hash_iterations

        with _fresh_db(pg, "check") as conn:
            started = time.perf_counter()
            importer.run_import(conn, NoBrokerAuth(), paths, actor="bench", iterations=iterations,
                                dry_run=True)
            check_s = time.perf_counter() - started
        rows.append(("check (dry run, 4 files)", devices, check_s))

        with _fresh_db(pg, "registry") as conn:
            started = time.perf_counter()
            importer.run_import(conn, NoBrokerAuth(), paths, actor="bench", iterations=iterations)
            registry_s = time.perf_counter() - started
        rows.append(("registry only (EMQX reads it)", devices, registry_s))

        # The first load: plugin prepared as an operator would, broker stopped, file written.
        broker.start()
        setup_broker(settings.mqtt, settings.broker_auth,
                     [ServiceAccount("firegrid-ingest", "bench-ingest-pw", (INGEST_ROLE,))])
        live_empty = _live_add(settings, pg, broker, args.live_sample, "E")
        rows.append(("live, empty plugin", args.live_sample, live_empty))
        broker.stop()
        with _fresh_db(pg, "file") as conn:
            started = time.perf_counter()
            importer.run_import(conn, DynsecFile(broker.dynsec_file, settings.mqtt), paths,
                                actor="bench", iterations=iterations)
            file_s = time.perf_counter() - started
        rows.append(("registry + plugin file (broker stopped)", devices, file_s))
        started = time.perf_counter()
        broker.start()
        device_id, password = _first_device(files["devices"])
        _login(broker, device_id, password)
        login_s = time.perf_counter() - started
        rows.append(("broker start until a device logs in", 0, login_s))

        live_full = _live_add(settings, pg, broker, args.live_sample, "F")
        rows.append((f"live, {devices:,} already in the plugin", args.live_sample, live_full))
    finally:
        broker.destroy()
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)

    live_rate = args.live_sample / live_full
    print(f"\n{'step':<42} {'devices':>8} {'seconds':>9} {'devices/s':>10} {'vs live':>8}")
    for name, n, seconds in rows:
        if not n:
            print(f"{name:<42} {'':>8} {seconds:>9.2f}")
            continue
        rate = n / seconds
        print(f"{name:<42} {n:>8,} {seconds:>9.2f} {rate:>10,.1f} {rate / live_rate:>7.1f}x")
    projected_h = sum(_live_seconds_at(k, live_empty / args.live_sample,
                                       live_full / args.live_sample, devices)
                      for k in range(0, devices, 100)) * 100 / 3600
    print(f"\ncontrol topic alone from empty to {devices:,} devices: about {projected_h:.1f} h "
          "(linear interpolation of the two live rates)")
    print(f"RESULT import_s={file_s:.1f} devices={devices} check_s={check_s:.1f} "
          f"registry_s={registry_s:.1f} provision_file_per_s={devices / file_s:.0f} "
          f"provision_live_full_per_s={live_rate:.1f} vs_live={devices / file_s / live_rate:.0f}")
    return 0


def _settings(broker: Mosquitto):
    return load_settings(None, mqtt={"host": broker.host, "port": broker.port},
                         broker_auth={"mode": "mosquitto-dynsec", "admin_username": ADMIN[0],
                                      "admin_password": ADMIN[1], "timeout_s": 600})


class _fresh_db:
    def __init__(self, pg: Postgres, name: str) -> None:
        self.pg, self.name = pg, f"bench_{name}"

    def __enter__(self) -> psycopg.Connection:
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name}")
            conn.execute(f"CREATE DATABASE {self.name}")
        migrate.migrate(DatabaseSettings(url=self.pg.url(self.name)))
        self.conn = psycopg.connect(self.pg.url(self.name), autocommit=True)
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()


def _live_add(settings, pg: Postgres, broker: Mosquitto, n: int, tag: str) -> float:
    """Register n devices (in the street's first building) through the control topic."""
    with _fresh_db(pg, f"live{tag.lower()}") as conn:
        tmp = Path(tempfile.mkdtemp(prefix="fg-bench-live-"))
        try:
            h = tmp / "h.csv"
            h.write_text("street_id,community_id,grid_id,building_id,address,lat,lon,floors,use\n"
                         "S1,C1,C1-G01,B00001,bench,22.52,114.05,7,rental\n")
            d = tmp / "d.csv"
            d.write_text("device_id,kind,building_id,password\n" + "".join(
                f"LIVE{tag}{i:05d},smoke_detector,B00001,bench-password-{i:06d}\n"
                for i in range(n)))
            importer.run_import(conn, NoBrokerAuth(), [h], actor="bench", iterations=1000)
            control = MosquittoDynsec(settings.mqtt, settings.broker_auth)
            try:
                started = time.perf_counter()
                importer.run_import(conn, control, [d], actor="bench", iterations=1000)
                return time.perf_counter() - started
            finally:
                control.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _live_seconds_at(k: int, empty_s: float, full_s: float, full_n: int) -> float:
    return empty_s + (full_s - empty_s) * k / full_n


def _first_device(path: Path) -> tuple[str, str]:
    with path.open(encoding="utf-8-sig") as handle:     # the CSVs carry a BOM for Excel
        row = next(csv.DictReader(handle))
    return row["device_id"], row["password"]


def _login(broker: Mosquitto, username: str, password: str) -> None:
    """Connect as the device, retrying until the broker is up; fail on a refused login."""
    result: list = []
    done = threading.Event()

    def on_connect(client, userdata, flags, reason, props) -> None:
        result.append(reason)
        done.set()

    def attempt() -> bool:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
        client.username_pw_set(username, password)
        client.on_connect = on_connect
        try:
            client.connect(broker.host, broker.port)
        except OSError:
            return False
        client.loop_start()
        done.wait(10)
        client.disconnect()
        client.loop_stop()
        return True

    wait_until(attempt, 30, "the broker accepting connections")
    if not result or result[0].is_failure:
        raise SystemExit(f"device {username} could not log in: {result}")


if __name__ == "__main__":
    sys.exit(main())
