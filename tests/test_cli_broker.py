"""The operator's path through the CLI, against a real Mosquitto with the dynamic-security
plugin: `firegrid broker setup`, the first load with `devices import --dynsec-file` while the
broker is stopped, then day-to-day imports over the control topic."""

from __future__ import annotations

import csv
import threading

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from firegrid.cli import main
from runtime.localsvc import Mosquitto, make_state_dir

ADMIN = ("firegrid-admin", "cli-test-admin-password")


def login(broker: Mosquitto, username: str, password: str) -> bool:
    """True when the broker accepts the login (awaits the CONNACK, no sleeping)."""
    answered = threading.Event()
    result = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)  # bound to the id
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, reason, p: (result.append(reason), answered.set())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
        return not result[0].is_failure
    finally:
        client.disconnect()
        client.loop_stop()


def write(path, rows):
    with path.open("w", newline="") as out:
        csv.writer(out).writerows(rows)
    return str(path)


def test_setup_first_load_from_file_then_control_topic(db_url, tmp_path, monkeypatch, capsys):
    broker = Mosquitto(make_state_dir("fg-test-cli-mq-"), dynsec_admin=ADMIN).start()
    try:
        for key, value in {"DATABASE__URL": db_url, "MQTT__HOST": broker.host,
                           "MQTT__PORT": str(broker.port), "MQTT__USERNAME": "fg-ingest",
                           "MQTT__PASSWORD": "ingest-service-password",
                           "BROKER_AUTH__MODE": "mosquitto-dynsec",
                           "BROKER_AUTH__ADMIN_USERNAME": ADMIN[0],
                           "BROKER_AUTH__ADMIN_PASSWORD": ADMIN[1]}.items():
            monkeypatch.setenv(f"FIREGRID_{key}", value)
        assert main(["broker", "setup"]) == 0
        assert "service fg-ingest" in capsys.readouterr().out
        assert login(broker, "fg-ingest", "ingest-service-password")

        hierarchy = write(tmp_path / "h.csv", [
            ["street_id", "community_id", "grid_id", "building_id", "address", "lat", "lon",
             "floors", "use"],
            ["S1", "C1", "G1", "B1", "1号楼", "22.52", "114.05", "6", "rental"]])
        first = write(tmp_path / "d1.csv", [
            ["device_id", "kind", "building_id", "password"],
            ["SD-1", "smoke_detector", "B1", "first-load-password-1"],
            ["CAM-1", "camera", "B1", "first-load-password-2"]])
        broker.stop()
        assert main(["devices", "import", hierarchy, first, "--dynsec-file",
                     str(broker.dynsec_file)]) == 0
        broker.start()
        assert login(broker, "SD-1", "first-load-password-1")
        assert not login(broker, "SD-1", "first-load-password-2")

        # Day to day: the running broker gets new accounts over the control topic.
        later = write(tmp_path / "d2.csv", [["device_id", "kind", "building_id"],
                                            ["SD-2", "smoke_detector", "B1"]])
        creds = tmp_path / "creds.csv"
        assert main(["devices", "import", later, "--credentials-out", str(creds)]) == 0
        with creds.open() as handle:
            [row] = list(csv.DictReader(handle))
        assert login(broker, "SD-2", row["mqtt_password"])
        # The broker refuses a file load while it runs: nothing is written anywhere.
        late = write(tmp_path / "d3.csv", [["device_id", "kind", "building_id", "password"],
                                           ["SD-3", "smoke_detector", "B1", "x" * 20]])
        assert main(["devices", "import", late, "--dynsec-file", str(broker.dynsec_file)]) == 3
        assert "stop Mosquitto" in capsys.readouterr().err
        with psycopg.connect(db_url) as conn:
            assert [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")] == [
                "CAM-1", "SD-1", "SD-2"]
    finally:
        broker.destroy()


def test_reconcile_finds_and_removes_stale_accounts(db_url, tmp_path, monkeypatch, capsys):
    from devices.credentials import DeviceCredentials
    from devices.dynsec import MosquittoDynsec
    from runtime.settings import load_settings

    broker = Mosquitto(make_state_dir("fg-test-cli-mq-"), dynsec_admin=ADMIN).start()
    try:
        for key, value in {"DATABASE__URL": db_url, "MQTT__HOST": broker.host,
                           "MQTT__PORT": str(broker.port), "BROKER_AUTH__MODE": "mosquitto-dynsec",
                           "BROKER_AUTH__ADMIN_USERNAME": ADMIN[0],
                           "BROKER_AUTH__ADMIN_PASSWORD": ADMIN[1]}.items():
            monkeypatch.setenv(f"FIREGRID_{key}", value)
        hierarchy = write(tmp_path / "h.csv", [
            ["street_id", "community_id", "grid_id", "building_id", "address", "lat", "lon",
             "floors", "use"],
            ["S1", "C1", "G1", "B1", "1号楼", "22.52", "114.05", "6", "rental"]])
        devices = write(tmp_path / "d.csv", [["device_id", "kind", "building_id", "password"],
                                             ["SD-1", "smoke_detector", "B1", "p" * 20]])
        assert main(["devices", "import", hierarchy, devices]) == 0
        # An account the registry does not know (an unconfirmed registration that did not
        # commit), and a registered device whose account is gone.
        control = MosquittoDynsec(load_settings().mqtt, load_settings().broker_auth)
        control.add_devices([DeviceCredentials("GHOST-1", "camera", "g" * 20)])
        control.remove_devices(["SD-1"])
        control.close()
        capsys.readouterr()
        assert main(["broker", "reconcile"]) == 1
        out = capsys.readouterr().out
        assert "stale account (device retired or not registered): GHOST-1" in out
        assert "no broker account: SD-1" in out
        assert main(["broker", "reconcile", "--apply"]) == 1      # SD-1 still needs a rotation
        assert not login(broker, "GHOST-1", "g" * 20)
    finally:
        broker.destroy()
