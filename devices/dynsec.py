"""Per-device broker accounts in Mosquitto's dynamic-security plugin, managed over its
control topic ($CONTROL/dynamic-security/v1) as the plugin's admin account.

What firegrid keeps in the plugin (docs/broker-auth.md has the operator's view):

    client <device id>        the device's password; role fg-device/<device id>
    role fg-device/<id>       publish <prefix>/<id>/telemetry and /event (gateways also
                              /gateway); subscribe to and receive <prefix>/<id>/cmd
    role firegrid-ingest      subscribe to <prefix>/# (also as $share/<group>/...), receive it
    role firegrid-service     publish <prefix>/+/cmd; publish, subscribe and receive
                              <service namespace>/# (worker apps: firegrid/workers/<id>/...)
    default access            deny publish, receive and subscribe; unsubscribing is harmless

One role per device because Mosquitto 2.0's plugin takes ACL topics literally: `%c` and
`%u` are not substituted (checked against 2.0.11; issue eclipse/mosquitto#2222, due in 2.1).

Cost, measured on 2.0.11 (docs/broker-auth.md): the plugin rewrites its whole JSON file
after every changing command, so a command costs time in proportion to the accounts already
there (a quarter to half a second at 20,000 devices), and the broker serves no client while
it works through a control message. Messages are therefore sized by time, not by count
(_Pacer): each should keep the broker busy for about `busy_s`, however large the file has
grown. For the first load of a large site, DynsecFile writes the plugin's file directly
while Mosquitto is stopped: seconds for a street office instead of hours.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, Required, TypedDict, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.credentials import DeviceCredentials
from devices.errors import BrokerAuthError, Invalid
from devices.models import DEVICE_KINDS
from protocol.models import DEVICE_ID
from runtime.errors import ConfigError
from runtime.settings import BrokerAuthSettings, MqttSettings

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
DEVICE_ROLE_PREFIX = "fg-device/"
INGEST_ROLE = "firegrid-ingest"
SERVICE_ROLE = "firegrid-service"
SERVICE_NAMESPACE = "firegrid"

# The channels each kind of device may publish on (docs/protocol.md); all read only /cmd.
_PUBLISHES = {"smoke_detector": ("telemetry", "event"), "camera": ("telemetry", "event"),
              "gateway": ("telemetry", "event", "gateway")}
assert set(_PUBLISHES) == set(DEVICE_KINDS)

# Mosquitto refuses packets above max_packet_size (1 MiB in deploy/mosquitto/conf.d) and
# disconnects the sender; stay well under it whatever the deployment set.
_MAX_MESSAGE_BYTES = 256 * 1024
# Look-ups (getClient, getRole) change nothing, so they cost the broker almost nothing.
_LOOKUPS_PER_MESSAGE = 500

T = TypeVar("T")


class Acl(TypedDict):
    acltype: str
    topic: NotRequired[str]   # the default access list names none
    allow: bool


class Command(TypedDict, total=False):
    """One command of a control message, with the fields of the commands firegrid sends."""
    command: Required[str]
    username: str
    clientid: str
    password: str
    rolename: str
    acls: list[Acl]
    roles: list[dict[str, str]]
    verbose: bool


class Response(TypedDict, total=False):
    """The plugin's answer to one command: `error` if it refused, `data` for a look-up."""
    command: str
    error: str
    data: dict[str, Any]
    correlationData: str


class _PasswordHash(TypedDict):
    password: str
    salt: str
    iterations: int


@dataclass(frozen=True)
class ServiceAccount:
    """A firegrid service's broker login (ingest, later the alert core)."""
    username: str
    password: str
    roles: tuple[str, ...] = (INGEST_ROLE,)


def device_role(device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_id


def device_acls(device_id: str, kind: str, prefix: str) -> list[Acl]:
    base = f"{prefix}/{device_id}"
    acls = [_acl("publishClientSend", f"{base}/{channel}") for channel in _PUBLISHES[kind]]
    return acls + [_acl("subscribeLiteral", f"{base}/cmd"),
                   _acl("publishClientReceive", f"{base}/cmd")]


def service_role_acls(prefix: str, namespace: str = SERVICE_NAMESPACE) -> dict[str, list[Acl]]:
    return {
        INGEST_ROLE: [
            _acl("subscribePattern", f"{prefix}/#"),
            # Mosquitto checks a shared subscription with its $share/<group>/ in front.
            _acl("subscribePattern", f"$share/+/{prefix}/#"),
            _acl("publishClientReceive", f"{prefix}/#"),
        ],
        SERVICE_ROLE: [
            _acl("publishClientSend", f"{prefix}/+/cmd"),
            _acl("publishClientSend", f"{namespace}/#"),
            _acl("subscribePattern", f"{namespace}/#"),
            _acl("subscribePattern", f"$share/+/{namespace}/#"),
            _acl("publishClientReceive", f"{namespace}/#"),
        ],
    }


def _acl(acltype: str, topic: str) -> Acl:
    return {"acltype": acltype, "topic": topic, "allow": True}


class MosquittoDynsec:
    """BrokerAuth for Mosquitto's dynamic-security plugin (devices/broker.py)."""

    def __init__(self, mqtt_settings: MqttSettings, auth: BrokerAuthSettings, *,
                 busy_s: float = 0.5, max_devices_per_message: int = 400) -> None:
        self._prefix = _checked_prefix(mqtt_settings.topic_prefix)
        self._control = _ControlClient(mqtt_settings, auth)
        self._pacer = _Pacer(busy_s, max_devices_per_message)

    def add_devices(self, creds: list[DeviceCredentials]) -> None:
        if not creds:
            return
        _check_credentials(creds)
        ids = [c.device_id for c in creds]
        clients, roles = self._lookup(ids)
        taken = [i for i in ids if i in clients]
        if taken:
            raise BrokerAuthError(
                f"{len(taken)} device(s) already have a broker account: {_some(taken)}; "
                "nothing was added (is the registry out of step with the broker?)")
        # A role without its client is what an interrupted add leaves behind: replace it.
        try:
            self._paced([(c.device_id, self._create_commands(c, c.device_id in roles))
                         for c in creds])
        except BrokerAuthError as exc:
            self._undo_add(ids, exc)
            raise

    def set_password(self, device_id: str, password: str, kind: str | None = None) -> None:
        _check_device(device_id)
        if not password:
            raise Invalid("password", f"empty password for {device_id!r}")
        clients, _ = self._lookup([device_id])
        if device_id not in clients:
            if kind is None:
                raise BrokerAuthError(f"device {device_id!r} has no broker account to rotate")
            # Self-healing: an earlier change whose COMMIT failed left the account missing.
            self.add_devices([DeviceCredentials(device_id, kind, password)])
            return
        _refuse_non_devices(clients)
        # The plugin disconnects the device's sessions itself: they logged in with the old one.
        response, = self._control.exchange([{"command": "setClientPassword",
                                             "username": device_id, "password": password}])
        _raise_on_error(response, device_id)

    def remove_devices(self, device_ids: list[str]) -> None:
        if not device_ids:
            return
        for device_id in device_ids:
            _check_device(device_id)
        clients, _ = self._lookup(device_ids)
        _refuse_non_devices(clients)
        # deleteClient also disconnects the device's connected sessions, at once.
        self._paced([(i, _delete_commands(i)) for i in device_ids], missing_ok=True)

    def device_accounts(self) -> set[str]:
        """The device ids the broker has an account for (to reconcile with the registry)."""
        response, = self._control.exchange([{"command": "listRoles", "verbose": False}])
        _raise_on_error(response, "listRoles")
        names = response.get("data", {}).get("roles", [])
        devices = {n[len(DEVICE_ROLE_PREFIX):] for n in names if n.startswith(DEVICE_ROLE_PREFIX)}
        response, = self._control.exchange([{"command": "listClients", "verbose": False}])
        _raise_on_error(response, "listClients")
        return devices & set(response.get("data", {}).get("clients", []))

    def close(self) -> None:
        self._control.close()

    # --- internals ------------------------------------------------------------------------

    def _create_commands(self, c: DeviceCredentials, replace_role: bool) -> list[Command]:
        role = device_role(c.device_id)
        commands: list[Command] = (
            [{"command": "deleteRole", "rolename": role}] if replace_role else [])
        return commands + [
            {"command": "createRole", "rolename": role,
             "acls": device_acls(c.device_id, c.kind, self._prefix)},
            # The client id is bound to the device id: with the username alone, device A
            # could connect with client id B and so keep B off the broker (session takeover).
            {"command": "createClient", "username": c.device_id, "clientid": c.device_id,
             "password": c.password, "roles": [{"rolename": role}]},
        ]

    def _paced(self, work: Sequence[tuple[str, list[Command]]], *, missing_ok: bool = False
               ) -> None:
        """Send each device's commands, several devices per message as the pacer says;
        raise on the first refusal, once the message it was in has been worked through."""
        start = 0
        while start < len(work):
            batch: list[Command] = []
            owners: list[str] = []
            size = 0
            end = start
            while end < len(work) and end - start < self._pacer.devices:
                device_id, commands = work[end]
                cost = sum(len(json.dumps(c)) for c in commands)
                if batch and size + cost > _MAX_MESSAGE_BYTES:
                    break
                batch += commands
                owners += [device_id] * len(commands)
                size += cost
                end += 1
            began = time.monotonic()
            responses = self._control.exchange(batch)
            self._pacer.observe(end - start, time.monotonic() - began)
            for response, device_id in zip(responses, owners, strict=True):
                _raise_on_error(response, device_id, missing_ok=missing_ok)
            start = end

    def _lookup(self, device_ids: Sequence[str]
                ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Which of these ids have a client (with its details) and which a device role."""
        clients: dict[str, dict[str, Any]] = {}
        roles: set[str] = set()
        for chunk in _chunks(device_ids, _LOOKUPS_PER_MESSAGE):
            commands: list[Command] = []
            for device_id in chunk:
                commands += [{"command": "getClient", "username": device_id},
                             {"command": "getRole", "rolename": device_role(device_id)}]
            responses = self._control.exchange(commands)
            for device_id, got_client, got_role in zip(chunk, responses[::2], responses[1::2],
                                                       strict=True):
                _raise_on_error(got_client, device_id, missing_ok=True)
                _raise_on_error(got_role, device_id, missing_ok=True)
                if "data" in got_client:
                    clients[device_id] = got_client["data"]["client"]
                if "data" in got_role:
                    roles.add(device_id)
        return clients, roles

    def _undo_add(self, ids: list[str], cause: BrokerAuthError) -> None:
        # None of `ids` had a client before this call, so deleting all of them removes
        # exactly what the call created, whichever of its commands the broker carried out.
        try:
            self._paced([(i, _delete_commands(i)) for i in ids], missing_ok=True)
        except BrokerAuthError as exc:
            log.error("could not take back a failed add_devices: %s", exc)
            raise BrokerAuthError(
                f"{cause}; and taking back the accounts already created failed too ({exc}): "
                f"these may remain at the broker: {_some(ids)}") from cause


class DynsecFile:
    """BrokerAuth that edits the plugin's JSON file itself, for the first load of a large
    site: Mosquitto must be stopped meanwhile (it reads the file only when it starts, and
    overwrites it on its next change), and started afterwards. One read and one atomic
    write per call, so a call is all or nothing and 22,000 devices take seconds, where the
    control topic takes hours (docs/broker-auth.md). After the start, MosquittoDynsec
    manages these accounts like any other.

    The constructor refuses if a broker answers at mqtt.host:port: a safety net for the
    common case of firegrid on the broker's host, not a lock.
    """

    def __init__(self, path: str | Path, mqtt_settings: MqttSettings) -> None:
        self._path = Path(path)
        self._prefix = _checked_prefix(mqtt_settings.topic_prefix)
        where = f"{mqtt_settings.host}:{mqtt_settings.port}"
        if _answers(mqtt_settings.host, mqtt_settings.port):
            raise BrokerAuthError(f"a broker answers at {where}: stop Mosquitto before "
                                  f"editing {self._path}, and start it afterwards")
        if not self._path.is_file():
            raise BrokerAuthError(f"{self._path} does not exist: create it with "
                                  "`mosquitto_ctrl dynsec init` (docs/broker-auth.md)")

    def add_devices(self, creds: list[DeviceCredentials]) -> None:
        if not creds:
            return
        _check_credentials(creds)
        ids = [c.device_id for c in creds]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            raise BrokerAuthError(f"listed more than once: {_some(twice)}; nothing was added")
        config = self._load()
        clients = config.setdefault("clients", [])
        taken = sorted({c["username"] for c in clients} & set(ids))
        if taken:
            raise BrokerAuthError(
                f"{len(taken)} device(s) already have a broker account: {_some(taken)}; "
                "nothing was added (is the registry out of step with the broker?)")
        new_roles = {device_role(i) for i in ids}
        roles = [r for r in config.setdefault("roles", []) if r["rolename"] not in new_roles]
        for c in creds:
            role = device_role(c.device_id)
            roles.append({"rolename": role, "acls": [
                dict(acl, priority=0) for acl in device_acls(c.device_id, c.kind, self._prefix)]})
            clients.append({"username": c.device_id, "clientid": c.device_id,
                            **_mosquitto_hash(c.password),
                            "roles": [{"rolename": role}]})
        config["roles"] = roles
        self._save(config)

    def set_password(self, device_id: str, password: str, kind: str | None = None) -> None:
        _check_device(device_id)
        if not password:
            raise Invalid("password", f"empty password for {device_id!r}")
        config = self._load()
        client = next((c for c in config.get("clients", []) if c["username"] == device_id),
                      None)
        if client is None:
            if kind is None:
                raise BrokerAuthError(f"device {device_id!r} has no broker account to rotate")
            self.add_devices([DeviceCredentials(device_id, kind, password)])
            return
        _refuse_non_devices({device_id: client})
        client.update(_mosquitto_hash(password))
        self._save(config)

    def remove_devices(self, device_ids: list[str]) -> None:
        if not device_ids:
            return
        for device_id in device_ids:
            _check_device(device_id)
        config = self._load()
        gone = set(device_ids)
        _refuse_non_devices({c["username"]: c for c in config.get("clients", [])
                             if c["username"] in gone})
        roles = {device_role(i) for i in gone}
        config["clients"] = [c for c in config.get("clients", []) if c["username"] not in gone]
        config["roles"] = [r for r in config.get("roles", []) if r["rolename"] not in roles]
        self._save(config)

    def close(self) -> None:
        pass

    def _load(self) -> dict[str, Any]:
        try:
            config: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BrokerAuthError(f"cannot read the plugin's file {self._path}: {exc}") from exc
        return config

    def _save(self, config: dict[str, Any]) -> None:
        # Write beside it and rename, so a crash leaves the old file or the new one, never
        # half of one; keep the owner (the broker's user) and keep it private.
        temp = self._path.with_name(self._path.name + ".firegrid-new")
        try:
            before = self._path.stat()
            with open(temp, "w", encoding="utf-8") as f:
                json.dump(config, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temp, 0o600)
            if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
                os.chown(temp, before.st_uid, before.st_gid)
            os.replace(temp, self._path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise BrokerAuthError(f"cannot write the plugin's file {self._path}: {exc}") from exc


def _mosquitto_hash(password: str) -> _PasswordHash:
    """A client password the way Mosquitto 2.0's plugin stores it: PBKDF2-HMAC-SHA512 over
    12 random bytes of salt, 101 rounds, both base64 (mosquitto_ctrl writes the same)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return {"password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": 101}


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def setup_broker(mqtt_settings: MqttSettings, auth: BrokerAuthSettings,
                 services: Sequence[ServiceAccount] = (), *,
                 service_namespace: str = SERVICE_NAMESPACE) -> list[str]:
    """Prepare a broker whose plugin holds only its admin (or an earlier setup): deny by
    default, the ingest and service roles, and the given service accounts. Safe to run
    again: roles get the current ACLs, accounts the given password and roles (which
    disconnects them once). Returns what it did, one line per object."""
    prefix = _checked_prefix(mqtt_settings.topic_prefix)
    namespace = _checked_prefix(service_namespace)
    roles = service_role_acls(prefix, namespace)
    for account in services:
        unknown = set(account.roles) - set(roles)
        if unknown:
            raise Invalid("roles", f"{account.username}: unknown role(s) {sorted(unknown)}")
        if not account.password:
            raise Invalid("password", f"empty password for service {account.username!r}")
        if account.username == auth.admin_username:
            raise Invalid("username", "a service cannot use the dynamic-security admin account")
    control = _ControlClient(mqtt_settings, auth)
    try:
        lookups: list[Command] = [{"command": "getRole", "rolename": name} for name in roles]
        lookups += [{"command": "getClient", "username": s.username} for s in services]
        found = control.exchange(lookups)
        for response, command in zip(found, lookups, strict=True):
            _raise_on_error(response, command.get("rolename") or command["username"],
                            missing_ok=True)
        # The roles' answers come first, the services' after them.
        existing_roles = {name for name, r in zip(roles, found[:len(roles)], strict=True)
                          if "data" in r}
        existing_clients: set[str] = set()
        for s, r in zip(services, found[len(roles):], strict=True):
            if "data" in r:
                existing_clients.add(s.username)
                if any(x["rolename"].startswith(DEVICE_ROLE_PREFIX)
                       for x in r["data"]["client"].get("roles", [])):
                    raise BrokerAuthError(f"{s.username!r} is a device account; pick another "
                                          "username for the service")
        work: list[tuple[str, Command]] = [("default access", {
            "command": "setDefaultACLAccess", "acls": [
                {"acltype": "publishClientSend", "allow": False},
                {"acltype": "publishClientReceive", "allow": False},
                {"acltype": "subscribe", "allow": False},
                {"acltype": "unsubscribe", "allow": True},
            ]})]
        done = ["default access: deny publish, receive and subscribe"]
        for name, acls in roles.items():
            update = name in existing_roles
            work.append((name, {"command": "modifyRole" if update else "createRole",
                                "rolename": name, "acls": acls}))
            done.append(f"role {name}: {'updated' if update else 'created'}")
        for s in services:
            update = s.username in existing_clients
            work.append((s.username, {"command": "modifyClient" if update else "createClient",
                                      "username": s.username, "password": s.password,
                                      "roles": [{"rolename": r} for r in s.roles]}))
            done.append(f"service {s.username} ({', '.join(s.roles)}): "
                        f"{'updated' if update else 'created'}")
        responses = control.exchange([command for _, command in work])
        for response, (who, _) in zip(responses, work, strict=True):
            _raise_on_error(response, who)
        return done
    finally:
        control.close()


def _refuse_non_devices(clients: dict[str, dict[str, Any]]) -> None:
    # Device ids share the username space with the admin and service accounts: never let a
    # device operation delete or re-key one of those.
    strangers = [name for name, client in clients.items()
                 if device_role(name) not in {r["rolename"] for r in client.get("roles", [])}]
    if strangers:
        raise BrokerAuthError(
            f"not firegrid device accounts (no role {DEVICE_ROLE_PREFIX}<id>): "
            f"{_some(strangers)}; refusing to change them")


def _delete_commands(device_id: str) -> list[Command]:
    return [{"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)}]


_NOT_FOUND = ("Client not found", "Role not found")


def _raise_on_error(response: Response, who: str, *, missing_ok: bool = False) -> None:
    error = response.get("error")
    if error is None or (missing_ok and error in _NOT_FOUND):
        return
    raise BrokerAuthError(f"the broker refused {response.get('command', '?')} for {who!r}: {error}")


def _check_credentials(creds: Sequence[DeviceCredentials]) -> None:
    for c in creds:
        _check_device(c.device_id)
        if c.kind not in _PUBLISHES:
            raise Invalid("kind", f"unknown device kind {c.kind!r} for {c.device_id!r}")
        if not c.password:
            raise Invalid("password", f"empty password for {c.device_id!r}")


def _check_device(device_id: str) -> None:
    # The id goes into ACL topics: '+' or '#' in it would grant other devices' topics.
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise Invalid("device_id", f"{device_id!r} is not a valid device id")


def _checked_prefix(prefix: str) -> str:
    if not prefix or any(ch in prefix for ch in "+#") or prefix.startswith(("/", "$")) \
            or prefix.endswith("/"):
        raise ConfigError(f"topic prefix {prefix!r} cannot scope broker ACLs: no wildcards, "
                          "no leading '$' or '/', no trailing '/'")
    return prefix


def _some(names: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Pacer:
    """How many devices go into the next control message: as many as the broker gets
    through in about `busy_s`, learnt from the last message (the cost per command grows
    with the plugin's file, so a fixed count would either crawl when the broker is empty or
    freeze it for minutes when it is full)."""

    def __init__(self, busy_s: float, max_devices: int) -> None:
        self.busy_s = busy_s
        self.max_devices = max_devices
        # Start with one: the broker may already hold tens of thousands of accounts.
        self.devices = 1

    def observe(self, devices: int, seconds: float) -> None:
        per_device = max(seconds, 1e-4) / max(devices, 1)
        wanted = int(self.busy_s / per_device)
        # Grow by at most 4x a step: one fast answer is not yet a trend.
        self.devices = max(1, min(self.max_devices, wanted, self.devices * 4))


class _ControlClient:
    """The admin's MQTT connection: publish a list of commands as one control message and
    wait for the broker's answer to exactly that message.

    Responses go to everyone subscribed to the response topic (another firegrid process
    using the same admin account, mosquitto_ctrl), so each command carries correlationData
    `<this client's token>:<message number>:<index>` and foreign or stale answers are
    dropped. One exchange at a time: the registry may call from several threads.
    """

    def __init__(self, mqtt_settings: MqttSettings, auth: BrokerAuthSettings) -> None:
        if auth.admin_password is None:
            raise ConfigError("broker_auth.admin_password is not set: firegrid needs the "
                              "dynamic-security admin account (docs/broker-auth.md)")
        self._host, self._port = mqtt_settings.host, mqtt_settings.port
        self._tls = mqtt_settings.ssl_context()
        self._username = auth.admin_username
        self._password = auth.admin_password.get_secret_value()
        self._timeout = auth.timeout_s
        self._token = secrets.token_hex(6)
        self._numbers = itertools.count()
        self._exchange_lock = threading.Lock()
        self._cond = threading.Condition()
        self._client: mqtt.Client | None = None
        self._ready = False          # connected and subscribed to the response topic
        self._refused: str | None = None
        self._connection = 0         # +1 per disconnect: a waiter sees it lost its session
        self._awaiting: int | None = None
        self._answer: list[Response] | None = None

    def exchange(self, commands: list[Command]) -> list[Response]:
        with self._exchange_lock:
            client = self._connect()
            number = next(self._numbers)
            tag = f"{self._token}:{number}:"
            payload = json.dumps({"commands": [dict(c, correlationData=f"{tag}{i}")
                                               for i, c in enumerate(commands)]},
                                 separators=(",", ":"))
            with self._cond:
                self._awaiting, self._answer = number, None
                connection = self._connection
            info = client.publish(CONTROL_TOPIC, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # paho keeps a QoS 1 message for the next connection: say so.
                raise BrokerAuthError(
                    f"could not send to the broker ({mqtt.error_string(info.rc)}); the "
                    "commands may still be applied when the connection comes back")
            deadline = time.monotonic() + self._timeout
            with self._cond:
                while self._answer is None:
                    if self._connection != connection:
                        raise BrokerAuthError(
                            "lost the connection to the broker while it worked on a control "
                            f"message ({len(commands)} commands); some may have been applied")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BrokerAuthError(
                            f"the broker did not answer {len(commands)} dynamic-security "
                            f"command(s) within {self._timeout:g} s (broker_auth.timeout_s); "
                            "some may have been applied. Is the dynamic-security plugin "
                            "loaded?")
                    self._cond.wait(remaining)
                answer, self._awaiting = self._answer, None
        if len(answer) != len(commands) or any(
                r.get("correlationData") != f"{tag}{i}" for i, r in enumerate(answer)):
            raise BrokerAuthError("the broker's answer does not match the commands sent")
        return answer

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- connection -----------------------------------------------------------------------

    def _connect(self) -> mqtt.Client:
        client = self._client
        if client is None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                 client_id=f"firegrid-dynsec-{self._token}",
                                 protocol=mqtt.MQTTv5)
            client.username_pw_set(self._username, self._password)
            if self._tls is not None:
                client.tls_set_context(self._tls)
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            try:
                client.connect(self._host, self._port, keepalive=30)
            except OSError as exc:
                raise BrokerAuthError(
                    f"cannot reach the broker at {self._host}:{self._port}: {exc}") from exc
            self._client = client
            client.loop_start()
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while not self._ready and self._refused is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            refused, ready = self._refused, self._ready
        if refused is not None:
            self.close()
            self._refused = None
            raise BrokerAuthError(refused)
        if not ready:
            raise BrokerAuthError(f"no session with the broker at {self._host}:{self._port} "
                                  f"within {self._timeout:g} s")
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            with self._cond:
                self._refused = (
                    f"the broker refused the dynamic-security admin {self._username!r}: "
                    f"{reason_code} (check broker_auth.admin_username and admin_password)")
                self._cond.notify_all()
            client.disconnect()  # stop paho retrying a login that will not work
            return
        # A clean session every time: (re)subscribe, and be ready only once it is granted.
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        with self._cond:
            if any(rc.is_failure for rc in reason_codes):
                self._refused = (f"{self._username!r} may not read {RESPONSE_TOPIC}: is it "
                                 "the dynamic-security admin account?")
            else:
                self._ready = True
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: object,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        with self._cond:
            self._ready = False
            self._connection += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
            token, seq, _ = str(responses[0].get("correlationData", "")).split(":")
            number = int(seq)
        except (ValueError, KeyError, IndexError, TypeError):
            return  # an answer to someone else (mosquitto_ctrl, another admin session)
        with self._cond:
            if token == self._token and number == self._awaiting:
                self._answer = responses
                self._cond.notify_all()

