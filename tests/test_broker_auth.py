"""Per-device broker credentials, against the real thing.

Mosquitto: a private broker with the dynamic-security plugin (the `secure_broker` fixture),
driven by devices.dynsec exactly as the registry drives it. What a device may do is judged
by what other clients actually receive, never by the plugin's own account of its ACLs.

EMQX is not here, so its side is checked where it touches firegrid: the queries documented
in docs/broker-auth.md run against the migrated PostgreSQL, and the hash EMQX's pbkdf2
settings would compute (RFC 8018, written out below) matches the one firegrid stores.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from devices.credentials import DeviceCredentials, hash_password, new_password
from devices.dynsec import (
    INGEST_ROLE,
    DynsecFile,
    MosquittoDynsec,
    ServiceAccount,
    _ControlClient,
    _Pacer,
    device_role,
    setup_broker,
)
from devices.errors import BrokerAuthError, Invalid
from runtime.localsvc import Mosquitto, _dynsec_init, make_state_dir
from runtime.settings import BrokerAuthSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
BROKER_AUTH_MD = ROOT / "docs" / "broker-auth.md"
WAIT = 10  # seconds for any one broker event; a pass takes milliseconds


class Session:
    """One MQTT connection as some user, whose events a test awaits."""

    def __init__(self, broker, username: str | None, password: str | None,
                 client_id: str | None = None):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  # Devices are bound to client id = device id.
                                  client_id=client_id or username or f"anon-{time.monotonic_ns()}")
        if username is not None:  # None: anonymous
            self.client.username_pw_set(username, password)
        self.connack = None
        self._connected = threading.Event()
        self.disconnected = threading.Event()
        self._subacks: dict[int, list] = {}
        self._cond = threading.Condition()
        self.received: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        # Our own network loop, not loop_start(): paho's would reconnect after a kick or a
        # refusal, and a test wants to see exactly those.
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        assert self._connected.wait(WAIT), "no CONNACK"

    def _loop(self) -> None:
        while self._running and self.client.loop(timeout=0.05) == mqtt.MQTT_ERR_SUCCESS:
            pass

    @property
    def accepted(self) -> bool:
        return not self.connack.is_failure

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if self.connack is None:
            self.connack = reason_code
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = reason_codes
            self._cond.notify_all()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.received.append((message.topic, message.payload))
            self._cond.notify_all()

    def subscribe(self, topic: str) -> bool:
        """True if the broker granted the subscription."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, WAIT), "no SUBACK"
            return not self._subacks[mid][0].is_failure

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK. (MQTT 3.1.1 acknowledges a publish the
        ACL refused just the same: only subscribers can tell.)"""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including (topic, payload)."""
        with self._cond:
            assert self._cond.wait_for(lambda: (topic, payload) in self.received, WAIT), (
                f"{topic} {payload!r} never arrived; got {self.received}")
            return self.received[:self.received.index((topic, payload)) + 1]

    def close(self) -> None:
        self.client.disconnect()
        self._running = False
        self._thread.join(WAIT)


@pytest.fixture
def sessions():
    opened: list[Session] = []

    def open_(broker, username, password, client_id=None) -> Session:
        s = Session(broker, username, password, client_id)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def settings(secure_broker):
    """The secure broker's settings without a database (conftest's secure_settings has one)."""
    return load_settings(None, mqtt={"host": secure_broker.host, "port": secure_broker.port,
                                     "topic_prefix": secure_broker.topic_prefix},
                         broker_auth={"mode": "mosquitto-dynsec",
                                      "admin_username": secure_broker.admin[0],
                                      "admin_password": secure_broker.admin[1]})


@pytest.fixture
def dynsec(settings):
    broker = MosquittoDynsec(settings.mqtt, settings.broker_auth)
    yield broker
    broker.close()


@pytest.fixture
def admin(settings):
    """Raw control commands, to look at the plugin's state behind MosquittoDynsec's back."""
    control = _ControlClient(settings.mqtt, settings.broker_auth)
    yield control
    control.close()


def _exists(admin: _ControlClient, device_id: str) -> dict[str, bool]:
    client, role = admin.exchange([{"command": "getClient", "username": device_id},
                                   {"command": "getRole", "rolename": device_role(device_id)}])
    return {"client": "data" in client, "role": "data" in role}


def _device(device_id: str, kind: str = "smoke_detector") -> DeviceCredentials:
    return DeviceCredentials(device_id, kind, new_password())


# --- topics: what a device may publish and read ------------------------------------------

def test_a_device_cannot_publish_as_another(secure_broker, dynsec, sessions, uid):
    a, b = _device(f"{uid}-A"), _device(f"{uid}-B")
    dynsec.add_devices([a, b])
    p = secure_broker.topic_prefix
    # The admin reads every topic, so it would see a spoof wherever it landed.
    watcher = sessions(secure_broker, *secure_broker.admin)
    assert watcher.subscribe("#")
    device_a = sessions(secure_broker, a.device_id, a.password)
    assert device_a.accepted

    for topic in (f"{p}/{b.device_id}/telemetry", f"{p}/{b.device_id}/event",
                  f"{p}/{b.device_id}/gateway",
                  f"{p}/{a.device_id}/gateway",   # a smoke detector is not a gateway
                  f"{p}/{a.device_id}/cmd",       # commands come from firegrid only
                  f"{p}/{a.device_id}/other", f"elsewhere/{uid}"):
        device_a.publish(topic, b"spoof")
    device_a.publish(f"{p}/{a.device_id}/event", b"own event")
    device_a.publish(f"{p}/{a.device_id}/telemetry", b"own telemetry")

    # The broker delivers A's messages to the watcher in the order A sent them, so once the
    # last one is in, any spoof the broker had let through would be in too.
    mine = [m for m in watcher.wait_for(f"{p}/{a.device_id}/telemetry", b"own telemetry")
            if uid in m[0]]
    assert mine == [(f"{p}/{a.device_id}/event", b"own event"),
                    (f"{p}/{a.device_id}/telemetry", b"own telemetry")]


def test_a_gateway_publishes_its_batches(secure_broker, dynsec, sessions, uid):
    gw = _device(f"{uid}-GW", "gateway")
    dynsec.add_devices([gw])
    topic = f"{secure_broker.topic_prefix}/{gw.device_id}/gateway"
    watcher = sessions(secure_broker, *secure_broker.service)
    assert watcher.subscribe(topic)
    sessions(secure_broker, gw.device_id, gw.password).publish(topic, b"batch")
    assert watcher.wait_for(topic, b"batch") == [(topic, b"batch")]


def test_a_device_reads_only_its_own_command_topic(secure_broker, dynsec, sessions, uid):
    a, b = _device(f"{uid}-A"), _device(f"{uid}-B")
    dynsec.add_devices([a, b])
    p = secure_broker.topic_prefix
    device_a = sessions(secure_broker, a.device_id, a.password)
    assert not device_a.subscribe(f"{p}/{b.device_id}/cmd")
    assert not device_a.subscribe(f"{p}/+/cmd")
    assert not device_a.subscribe(f"{p}/#")
    assert not device_a.subscribe(f"$share/g/{p}/{b.device_id}/cmd")
    assert device_a.subscribe(f"{p}/{a.device_id}/cmd")

    firegrid = sessions(secure_broker, *secure_broker.service)
    firegrid.publish(f"{p}/{b.device_id}/cmd", b"for B")
    firegrid.publish(f"{p}/{a.device_id}/cmd", b"for A")
    assert device_a.wait_for(f"{p}/{a.device_id}/cmd", b"for A") == [
        (f"{p}/{a.device_id}/cmd", b"for A")]


def test_the_ingest_account_reads_every_device_through_a_shared_subscription(
        secure_broker, dynsec, sessions, uid):
    a = _device(f"{uid}-A")
    dynsec.add_devices([a])
    p = secure_broker.topic_prefix
    ingest = sessions(secure_broker, *secure_broker.service)
    assert ingest.subscribe(f"$share/g{uid}/{p}/+/telemetry")
    assert not ingest.subscribe(f"$share/g{uid}/#")   # the prefix only
    topic = f"{p}/{a.device_id}/telemetry"
    sessions(secure_broker, a.device_id, a.password).publish(topic, b"reading")
    assert ingest.wait_for(topic, b"reading")[-1] == (topic, b"reading")


def test_ingest_logs_in_as_its_service_account_and_stores_a_device_reading(
        secure_settings, secure_broker, dynsec, sessions, db_url, uid):
    from simulators import messages as m
    from tests.helpers import ThreadedIngest, wait_for_count

    d = _device(f"{uid}-I")
    dynsec.add_devices([d])
    ingest = ThreadedIngest(secure_settings).start()   # $share/<group>/fg/v1/# as the service
    try:
        device = sessions(secure_broker, d.device_id, d.password)
        device.publish(m.topic(d.device_id, "telemetry", secure_broker.topic_prefix),
                       m.encode(m.smoke_status(1)))
        query = f"SELECT count(*) FROM readings WHERE device_id = '{d.device_id}'"
        assert wait_for_count(db_url, query, 1, timeout=WAIT) == 1
    finally:
        ingest.stop()


def test_a_device_cannot_take_another_devices_client_id(secure_broker, dynsec, sessions, uid):
    a, b = _device(f"{uid}-A"), _device(f"{uid}-B")
    dynsec.add_devices([a, b])
    b_session = sessions(secure_broker, b.device_id, b.password)
    assert b_session.accepted
    # A's own credentials, B's client id: refused, and B is not kicked off (takeover).
    assert not sessions(secure_broker, a.device_id, a.password, client_id=b.device_id).accepted
    assert not b_session.disconnected.is_set()
    assert sessions(secure_broker, a.device_id, a.password).accepted


# --- retirement and rotation take effect at once ------------------------------------------

def test_a_removed_device_is_disconnected_and_refused(secure_broker, dynsec, sessions, uid):
    d = _device(f"{uid}-D")
    dynsec.add_devices([d])
    connected = sessions(secure_broker, d.device_id, d.password)
    assert connected.accepted

    dynsec.remove_devices([d.device_id])
    assert connected.disconnected.wait(WAIT), "the retired device's session was not closed"
    assert not sessions(secure_broker, d.device_id, d.password).accepted

    dynsec.remove_devices([d.device_id, f"{uid}-never-existed"])   # idempotent


def test_a_rotated_password_works_and_the_old_one_does_not(secure_broker, dynsec, sessions, uid):
    d = _device(f"{uid}-R")
    dynsec.add_devices([d])
    on_old = sessions(secure_broker, d.device_id, d.password)
    assert on_old.accepted

    new = new_password()
    dynsec.set_password(d.device_id, new)
    assert on_old.disconnected.wait(WAIT), "the session on the old password stayed connected"
    assert not sessions(secure_broker, d.device_id, d.password).accepted
    on_new = sessions(secure_broker, d.device_id, new)
    assert on_new.accepted

    # Only the password changed: the device keeps its topics.
    topic = f"{secure_broker.topic_prefix}/{d.device_id}/telemetry"
    watcher = sessions(secure_broker, *secure_broker.service)
    assert watcher.subscribe(topic)
    on_new.publish(topic, b"after rotation")
    watcher.wait_for(topic, b"after rotation")


def test_rotating_an_unknown_device_fails(dynsec, uid):
    with pytest.raises(BrokerAuthError, match="no broker account"):
        dynsec.set_password(f"{uid}-ghost", new_password())


# --- all or nothing, and never touching what is not a device ------------------------------

def test_add_devices_takes_back_everything_when_the_broker_refuses_one(
        settings, admin, sessions, secure_broker, uid):
    # One device per message, so the refusal comes after three messages the broker took.
    dynsec = MosquittoDynsec(settings.mqtt, settings.broker_auth, max_devices_per_message=1)
    try:
        batch = [_device(f"{uid}-X{i}") for i in range(3)]
        twice = DeviceCredentials(batch[0].device_id, "camera", new_password())
        with pytest.raises(BrokerAuthError, match="already exists"):
            dynsec.add_devices(batch + [twice])
    finally:
        dynsec.close()
    for c in batch:
        assert _exists(admin, c.device_id) == {"client": False, "role": False}
        assert not sessions(secure_broker, c.device_id, c.password).accepted


def test_add_devices_refuses_an_existing_account_and_leaves_it_alone(
        dynsec, admin, sessions, secure_broker, uid):
    existing = _device(f"{uid}-E")
    dynsec.add_devices([existing])
    newcomer = _device(f"{uid}-N")
    again = DeviceCredentials(existing.device_id, "smoke_detector", new_password())
    with pytest.raises(BrokerAuthError, match="already have a broker account"):
        dynsec.add_devices([newcomer, again])
    assert _exists(admin, newcomer.device_id) == {"client": False, "role": False}
    assert sessions(secure_broker, existing.device_id, existing.password).accepted
    assert not sessions(secure_broker, existing.device_id, again.password).accepted


def test_device_calls_never_touch_other_accounts(secure_broker, dynsec, sessions):
    service, admin_user = secure_broker.service[0], secure_broker.admin[0]
    with pytest.raises(BrokerAuthError, match="not firegrid device accounts"):
        dynsec.remove_devices([service])
    with pytest.raises(BrokerAuthError, match="not firegrid device accounts"):
        dynsec.set_password(admin_user, "taken over")
    assert sessions(secure_broker, *secure_broker.service).accepted
    assert sessions(secure_broker, *secure_broker.admin).accepted


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "x" * 65])
def test_ids_that_would_widen_an_acl_are_refused_before_any_io(dynsec, bad):
    with pytest.raises(Invalid):
        dynsec.add_devices([DeviceCredentials(bad, "smoke_detector", "pw")])
    with pytest.raises(Invalid):
        dynsec.remove_devices([bad])


def test_setup_can_be_run_again_and_services_cannot_act_as_devices(
        secure_settings, secure_broker, dynsec, sessions, uid):
    # secure_settings (conftest, with a database): what registry tests get.
    a = _device(f"{uid}-A")
    dynsec.add_devices([a])
    name = f"svc-{uid}"
    setup_broker(secure_settings.mqtt, secure_settings.broker_auth,
                 [ServiceAccount(name, "first", roles=(INGEST_ROLE,))])
    did = setup_broker(secure_settings.mqtt, secure_settings.broker_auth,
                       [ServiceAccount(name, "second", roles=(INGEST_ROLE,))])
    assert f"service {name} ({INGEST_ROLE}): updated" in did
    assert "role firegrid-ingest: updated" in did
    assert not sessions(secure_broker, name, "first").accepted
    ingest = sessions(secure_broker, name, "second")

    # Read-only: an ingest account can neither speak for a device nor command one.
    p = secure_broker.topic_prefix
    assert ingest.subscribe(f"{p}/{a.device_id}/#")
    ingest.publish(f"{p}/{a.device_id}/telemetry", b"forged")
    ingest.publish(f"{p}/{a.device_id}/cmd", b"forged command")
    sessions(secure_broker, a.device_id, a.password).publish(
        f"{p}/{a.device_id}/telemetry", b"real")
    assert ingest.wait_for(f"{p}/{a.device_id}/telemetry", b"real") == [
        (f"{p}/{a.device_id}/telemetry", b"real")]


# --- failures are reported, in words ------------------------------------------------------

def test_a_wrong_admin_password_is_reported(settings, uid):
    auth = settings.broker_auth.model_copy(update={"admin_password": SecretStr("wrong")})
    broker = MosquittoDynsec(settings.mqtt, auth)
    try:
        with pytest.raises(BrokerAuthError, match="refused the dynamic-security admin"):
            broker.add_devices([_device(f"{uid}-A")])
    finally:
        broker.close()


def test_a_broker_without_the_plugin_times_out_with_a_hint(broker, uid):
    settings = load_settings(None, mqtt={"host": broker.host, "port": broker.port},
                             broker_auth={"mode": "mosquitto-dynsec", "admin_password": "x",
                                          "timeout_s": 1.0})
    open_broker = MosquittoDynsec(settings.mqtt, settings.broker_auth)
    try:
        with pytest.raises(BrokerAuthError, match="did not answer.*plugin loaded"):
            open_broker.add_devices([_device(f"{uid}-A")])
    finally:
        open_broker.close()


def test_a_broker_restart_is_ridden_out(secure_broker, dynsec, sessions, uid):
    """A long-lived API process keeps its MosquittoDynsec across broker restarts; the
    accounts live in the plugin's file and survive too."""
    before = _device(f"{uid}-before")
    dynsec.add_devices([before])
    secure_broker.server.restart()
    after = _device(f"{uid}-after")
    dynsec.add_devices([after])
    assert sessions(secure_broker, before.device_id, before.password).accepted
    assert sessions(secure_broker, after.device_id, after.password).accepted


def test_an_unreachable_broker_is_reported():
    from runtime.localsvc import free_port
    settings = load_settings(None, mqtt={"port": free_port()},
                             broker_auth={"mode": "mosquitto-dynsec", "admin_password": "x"})
    with pytest.raises(BrokerAuthError, match="cannot reach the broker"):
        MosquittoDynsec(settings.mqtt, settings.broker_auth).remove_devices(["A"])


# --- the shipped config snippet ------------------------------------------------------------

def test_the_shipped_dynsec_snippet_closes_the_broker_to_strangers(sessions):
    snippet = (ROOT / "deploy" / "mosquitto" / "dynsec.conf.example").read_text()
    state = make_state_dir("fg-test-snippet-")
    plugin_file = state / "dynamic-security.json"
    _dynsec_init(plugin_file, "admin", "admin-pw")
    # The snippet comes after the open broker's `allow_anonymous true`, as conf.d does
    # after mosquitto.conf's.
    server = Mosquitto(state, extra_conf=snippet.replace(
        "/var/lib/mosquitto/dynamic-security.json", str(plugin_file))).start()
    try:
        assert not sessions(server, None, None).accepted
        assert not sessions(server, "admin", "wrong").accepted
        assert sessions(server, "admin", "admin-pw").accepted
    finally:
        server.destroy()


# --- EMQX: the documented queries against the real database --------------------------------

# ```hocon <name> and ```sql <name> blocks in docs/broker-auth.md: what operators paste.
_FENCE = re.compile(r"^```(?:hocon|sql)[ \t]+(\S+)\n(.*?)^```[ \t]*$", re.M | re.S)


def _emqx_config(name: str) -> str:
    blocks = dict(_FENCE.findall(BROKER_AUTH_MD.read_text(encoding="utf-8")))
    assert name in blocks, f"docs/broker-auth.md has no ```hocon/sql {name} block"
    return blocks[name]


def _setting(block: str, key: str) -> str:
    match = re.search(rf'^\s*{key}\s*=\s*"?(.*?)"?\s*$', block, re.M)
    assert match, f"no {key} in {block}"
    return match.group(1)


def _emqx_query(name: str, db: psycopg.Connection, username: str,
                clientid: str | None = None) -> list[tuple]:
    # EMQX sends ${username} and ${clientid} as bound parameters of a prepared statement;
    # so do we, in the order they appear.
    query = _setting(_emqx_config(name), "query")
    order = re.findall(r"\$\{(username|clientid)\}", query)
    values = {"username": username, "clientid": clientid or username}
    query = re.sub(r"\$\{(username|clientid)\}", "%s", query)
    return db.execute(query, [values[k] for k in order]).fetchall()


@pytest.fixture
def registry(db):
    """A building with an active smoke detector, an active gateway and a retired camera,
    stored the way the registry stores them."""
    db.execute("INSERT INTO street_offices VALUES ('S1', 'street')")
    db.execute("INSERT INTO communities VALUES ('C1', 'S1', 'community')")
    db.execute("INSERT INTO grids VALUES ('G1', 'C1', 'grid', 400)")
    db.execute("INSERT INTO buildings VALUES ('B1', 'G1', 'No. 1', 22.5, 114.0, 6, 40, 'rental')")
    passwords = {}
    iterations = BrokerAuthSettings().hash_iterations
    for device_id, kind in (("SD-1", "smoke_detector"), ("GW-1", "gateway"),
                            ("CAM-1", "camera")):
        passwords[device_id] = new_password()
        digest, salt = hash_password(passwords[device_id], iterations)
        db.execute("INSERT INTO devices (id, kind, building_id, heartbeat_s, password_hash,"
                   " password_salt) VALUES (%s, %s, 'B1', 3600, %s, %s)",
                   [device_id, kind, digest, salt])
    db.execute("UPDATE devices SET state = 'retired', retired_at = now(), password_hash = NULL,"
               " password_salt = NULL WHERE id = 'CAM-1'")
    return passwords


def test_emqx_authentication_query(db, registry):
    stored = db.execute("SELECT password_hash, password_salt FROM devices WHERE id = 'SD-1'"
                        ).fetchone()
    assert _emqx_query("emqx-authentication", db, "SD-1") == [(*stored, False)]
    assert _emqx_query("emqx-authentication", db, "CAM-1") == []      # retired
    assert _emqx_query("emqx-authentication", db, "nobody") == []
    # Another device's client id with SD-1's login: no user, so EMQX refuses it.
    assert _emqx_query("emqx-authentication", db, "SD-1", clientid="GW-1") == []


def test_emqx_authorization_query(db, registry):
    def rules(username):
        return sorted(_emqx_query("emqx-authorization", db, username))

    assert rules("SD-1") == [("allow", "publish", "fg/v1/SD-1/event"),
                             ("allow", "publish", "fg/v1/SD-1/telemetry"),
                             ("allow", "subscribe", "fg/v1/SD-1/cmd")]
    assert rules("GW-1") == [("allow", "publish", "fg/v1/GW-1/event"),
                             ("allow", "publish", "fg/v1/GW-1/gateway"),
                             ("allow", "publish", "fg/v1/GW-1/telemetry"),
                             ("allow", "subscribe", "fg/v1/GW-1/cmd")]
    assert rules("CAM-1") == []
    assert "no_match = deny" in _emqx_config("emqx-authorization")


def _pbkdf2(mac: str, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2 (RFC 8018 section 5.2) from HMAC alone, as EMQX's erlang pbkdf2 computes it."""
    out = b""
    block = 1
    while len(out) < length:
        u = hmac.new(password, salt + block.to_bytes(4, "big"), mac).digest()
        t = int.from_bytes(u, "big")
        for _ in range(iterations - 1):
            u = hmac.new(password, u, mac).digest()
            t ^= int.from_bytes(u, "big")
        out += t.to_bytes(len(u), "big")
        block += 1
    return out[:length]


def test_emqx_pbkdf2_settings_verify_the_stored_hash(db, registry):
    block = _emqx_config("emqx-authentication")
    assert _setting(block, "name") == "pbkdf2"
    iterations = int(_setting(block, "iterations"))
    assert iterations == BrokerAuthSettings().hash_iterations, (
        "docs/broker-auth.md must configure EMQX with broker_auth.hash_iterations")
    mac, length = _setting(block, "mac_fun"), int(_setting(block, "dk_length"))
    (stored_hash, salt, _), = _emqx_query("emqx-authentication", db, "SD-1")
    # EMQX: hex(pbkdf2(mac_fun, password, salt column as given, iterations, dk_length)),
    # lower case, compared with password_hash.
    emqx = _pbkdf2(mac, registry["SD-1"].encode(), salt.encode(), iterations, length).hex()
    assert emqx == stored_hash
    assert _pbkdf2(mac, b"wrong", salt.encode(), iterations, length).hex() != stored_hash
    assert hashlib.pbkdf2_hmac(mac, b"x", b"s", 3).hex() == _pbkdf2(mac, b"x", b"s", 3, 32).hex()


def test_the_emqx_login_sees_the_views_and_not_the_table(pg_server, db_url, db, registry, uid):
    """The grants docs/broker-auth.md tells the operator to give EMQX's database login."""
    role = f"emqx_{uid}"
    sql = _emqx_config("emqx-database-login").replace("firegrid_emqx", role)
    sql = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        for statement in filter(str.strip, sql.split(";")):
            if "CREATE ROLE" not in statement:   # made above, without a password
                db.execute(statement)
        with psycopg.connect(db_url.replace("postgres@", f"{role}@"), autocommit=True) as emqx:
            assert _emqx_query("emqx-authentication", emqx, "SD-1")
            assert _emqx_query("emqx-authorization", emqx, "GW-1")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                emqx.execute("SELECT password_hash FROM devices")
    finally:
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")


def test_the_pacer_sizes_messages_by_time():
    pacer = _Pacer(busy_s=0.5, max_devices=400)
    assert pacer.devices == 1                 # the broker may already be large
    pacer.observe(1, 0.001)
    assert pacer.devices == 4                 # fast, but grow by 4x at most per message
    pacer.observe(4, 0.004)
    assert pacer.devices == 16
    pacer.observe(16, 4.0)                    # 0.25 s a device: two fit in half a second
    assert pacer.devices == 2
    pacer.observe(2, 3.0)
    assert pacer.devices == 1                 # never below one
    for _ in range(10):
        pacer.observe(pacer.devices, 1e-6)
    assert pacer.devices == 400


# --- loading a stopped broker from its file ------------------------------------------------

def test_a_stopped_broker_is_loaded_from_its_file(sessions, uid):
    state = make_state_dir("fg-test-dynsec-file-")
    server = Mosquitto(state, dynsec_admin=("admin", "admin-pw")).start()
    try:
        settings = load_settings(None, mqtt={"host": server.host, "port": server.port},
                                 broker_auth={"mode": "mosquitto-dynsec",
                                              "admin_username": "admin",
                                              "admin_password": "admin-pw"})
        setup_broker(settings.mqtt, settings.broker_auth, [ServiceAccount("svc", "svc-pw")])
        with pytest.raises(BrokerAuthError, match="stop Mosquitto"):
            DynsecFile(server.dynsec_file, settings.mqtt)
        server.stop()

        creds = [_device(f"F{i}") for i in range(500)] + [_device("GW", "gateway")]
        loader = DynsecFile(server.dynsec_file, settings.mqtt)
        loader.add_devices(creds)
        with pytest.raises(BrokerAuthError, match="already have a broker account"):
            loader.add_devices([_device("F0")])
        with pytest.raises(BrokerAuthError, match="not firegrid device accounts"):
            loader.remove_devices(["svc"])
        server.start()

        # Mosquitto takes the file's accounts as its own: they log in and are confined ...
        a, b = creds[0], creds[1]
        watcher = sessions(server, "admin", "admin-pw")
        assert watcher.subscribe("#")
        device_a = sessions(server, a.device_id, a.password)
        assert device_a.accepted
        assert not sessions(server, a.device_id, b.password).accepted
        device_a.publish(f"fg/v1/{b.device_id}/telemetry", b"spoof")
        device_a.publish(f"fg/v1/{a.device_id}/gateway", b"spoof")
        device_a.publish(f"fg/v1/{a.device_id}/telemetry", b"own")
        assert watcher.wait_for(f"fg/v1/{a.device_id}/telemetry", b"own") == [
            (f"fg/v1/{a.device_id}/telemetry", b"own")]
        assert sessions(server, "svc", "svc-pw").accepted   # setup's work survives

        # ... and the control topic manages them from here on.
        dynsec = MosquittoDynsec(settings.mqtt, settings.broker_auth)
        try:
            assert dynsec.device_accounts() == {c.device_id for c in creds}
            dynsec.remove_devices([a.device_id])
            assert device_a.disconnected.wait(WAIT)
        finally:
            dynsec.close()
    finally:
        server.destroy()


def test_a_rotation_recreates_a_missing_account(secure_broker, dynsec, sessions, uid):
    # What a retire or rotate whose COMMIT was lost can leave: the registry still has the
    # device, the broker does not. Rotating again (with the kind) heals it.
    d = _device(f"{uid}-H")
    dynsec.add_devices([d])
    dynsec.remove_devices([d.device_id])
    new = new_password()
    dynsec.set_password(d.device_id, new, d.kind)
    assert sessions(secure_broker, d.device_id, new).accepted
