"""Private PostgreSQL and Mosquitto instances on free ports, for tests, the demo and the
benchmarks. They run from the OS packages (./dev installs them) as child processes, so a
test can stop, kill and restart them without touching the machine's own services.

PostgreSQL refuses to run as root, so as root its commands run as the `postgres` user
(which the Debian package creates) in a directory that user owns.
"""

from __future__ import annotations

import getpass
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import UnavailableError

REPO = Path(__file__).resolve().parent.parent
BROKER_CONF_D = REPO / "deploy" / "mosquitto" / "conf.d"


class ServiceError(UnavailableError):
    pass


def _listen_range() -> tuple[int, int]:
    """Ports to hand out for servers: below the kernel's ephemeral range. A port the kernel
    handed out once (bind to port 0) is free now but can be taken by any outgoing
    connection before our server binds it; below that range only another server can."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768        # Linux's default; elsewhere the check below still applies
    return 10000, max(10000 + 1000, low)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return free_ports(1)


def free_ports(count: int) -> int:
    """A base port with `count` consecutive free ports after it (e.g. several workers'
    metrics ports, base + i), below the ephemeral range (_listen_range)."""
    low, high = _listen_range()
    rng = random.Random()
    while True:
        base = rng.randrange(low, high - count)
        if all(_bindable(port) for port in range(base, base + count)):
            return base


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_state_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class Postgres:
    """A private cluster: initdb on first start, then pg_ctl start/stop/kill."""

    def __init__(self, base: Path, port: int | None = None, *, durable: bool = True,
                 bindir: Path | None = None, settings: tuple[str, ...] = ()) -> None:
        self.base = base.resolve()
        self.data = self.base / "data"
        self.port = port or free_port()
        self.durable = durable
        # Another installation (the TimescaleDB copy from shared/timescaledb/install), and
        # server settings of its own (`-c name=value`).
        self._bindir = bindir or _pg_bindir()
        self._settings = settings
        self._as_postgres = os.geteuid() == 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self._bindir / cmd[0]), *cmd[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True)

    def start(self) -> Postgres:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C.UTF-8")
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base}", "-c max_connections=200",
                *(f"-c {setting}" for setting in self._settings)]
        if not self.durable:
            # Tests only: a crash of the machine mid-test loses nothing we care about.
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"),
                           "-w", "-t", "60", "-o", " ".join(opts), "start", check=False)
        if result.returncode != 0:
            logfile = self.base / "log"
            log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise ServiceError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log}")
        wait_until(lambda: reachable("127.0.0.1", self.port), 30, "PostgreSQL port")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


class Mosquitto:
    """A private broker with firegrid's shipped conf.d, running as a child process.

    Open by default (anonymous clients may do anything), as the ingest tests need. With
    `dynsec_admin=(username, password)` it loads the dynamic-security plugin instead, with
    anonymous access off: the admin account is the only one until firegrid creates more over
    the control topic (devices/dynsec.py). The plugin's JSON file lives in `base`, so a
    restart keeps every account, as a real deployment's would.
    """

    def __init__(self, base: Path, port: int | None = None, *, extra_conf: str = "",
                 dynsec_admin: tuple[str, str] | None = None) -> None:
        self.base = base.resolve()
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.dynsec_admin = dynsec_admin
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dynsec_file(self) -> Path:
        return self.base / "dynamic-security.json"

    def start(self) -> Mosquitto:
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "mosquitto.conf"
        conf.write_text(
            f"user {getpass.getuser()}\n"
            f"per_listener_settings false\n"
            f"persistence_location {self.base}/\n"
            f"log_dest file {self.base}/mosquitto.log\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{self._access_conf()}"
            f"include_dir {BROKER_CONF_D}\n"
            # Last, so that a test's lines override the shipped conf.d.
            f"{self.extra_conf}\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        # Its own session: Ctrl-C in a terminal goes to the whole foreground process group,
        # and a broker in it would exit under the services still using it (the demo's
        # "lost broker connection" warnings). Whoever started it stops it, in order.
        proc = self.proc = subprocess.Popen([binary, "-c", str(conf)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            start_new_session=True)
        try:
            wait_until(lambda: reachable("127.0.0.1", self.port) or proc.poll() is not None,
                       20, "Mosquitto port")
        except ServiceError:
            self.kill()
            raise
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ServiceError(f"Mosquitto exited at start: {err.strip()}")
        return self

    def _access_conf(self) -> str:
        if self.dynsec_admin is None:
            return "allow_anonymous true\n"
        if not self.dynsec_file.exists():
            _dynsec_init(self.dynsec_file, *self.dynsec_admin)
        return ("allow_anonymous false\n"
                f"plugin {_dynsec_plugin()}\n"
                f"plugin_opt_config_file {self.dynsec_file}\n")

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parent.parent.name))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ServiceError("PostgreSQL server binaries not found: install the postgresql package "
                       "(./dev does this)")


def _dynsec_plugin() -> Path:
    # Debian and Ubuntu put it under the multiarch directory; other builds in /usr/lib.
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")
                   + glob.glob("/usr/lib/mosquitto_dynamic_security.so"))
    if not found:
        raise ServiceError("Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) "
                           "not found: install the mosquitto package (./dev does this)")
    return Path(found[0])


def _dynsec_init(path: Path, username: str, password: str) -> None:
    """The plugin's starting file, written by Mosquitto's own tool so its hash format is
    whatever this Mosquitto expects: one admin client, whose role may use the control topic
    and read (never publish) everything else."""
    tool = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"
    result = subprocess.run([tool, "dynsec", "init", str(path), username, password],
                            capture_output=True, text=True)
    if result.returncode != 0 or not path.exists():
        raise ServiceError(f"mosquitto_ctrl dynsec init failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    # It holds password hashes: readable by the broker's user only.
    path.chmod(0o600)


# --- TLS for a private broker's second listener (tests/test_tls.py, bench/ingest.py --tls) ----

@dataclass(frozen=True)
class TlsFiles:
    """A private CA and what it signed: the broker's certificate for 127.0.0.1 and a
    client certificate; `other_ca` signed nothing here (a broker it is told to trust fails)."""
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Made with openssl, as deploy/compose/up makes a site's (RSA 2048, two days)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError("openssl not found: apt-get install openssl (./dev test does)")
    d = directory
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/O=firegrid local/CN={ca}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(f"{ext}\nbasicConstraints=critical,CA:FALSE\n")
        run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=firegrid local/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt")
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                    d / "client.key", d / "other-ca.crt")


def tls_listener(port: int, files: TlsFiles) -> str:
    """Mosquitto configuration lines (for `extra_conf`) of a TLS listener on 127.0.0.1 that
    asks every client for a certificate signed by the private CA."""
    return (f"listener {port} 127.0.0.1\n"
            f"cafile {files.ca}\ncertfile {files.server_cert}\nkeyfile {files.server_key}\n"
            "require_certificate true\n")
