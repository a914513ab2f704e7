"""Typed settings: FIREGRID_* environment variables over an optional TOML file over defaults.

Nested fields use a double underscore: FIREGRID_MQTT__HOST, FIREGRID_INGEST__BATCH_MAX_ROWS.
Everything is validated before any network I/O; a bad value raises ConfigError naming the
setting as the operator would type it. deploy/firegrid.example.toml documents every field.

A typo is an error, never a silent default: a FIREGRID_* variable or a TOML key that names
no setting is refused with the nearest real name (FIREGRID_DATABASE_URL, one underscore,
gets "did you mean FIREGRID_DATABASE__URL?"). URLs are checked for their scheme and port.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import re
import ssl
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runtime.errors import ConfigError

_TOML_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)

ENV_PREFIX = "FIREGRID_"
# FIREGRID_* variables that are not settings, so not typos: the CLI's --config default,
# Grafana's datasource provisioning (dashboards/provisioning, deploy/), the duty console's
# screenshot switch in the tests and bench/flavour.py's TimescaleDB installer. A new
# variable of that kind is added here, or every command refuses it as a typo.
NOT_SETTINGS = ("FIREGRID_CONFIG", "FIREGRID_SCREENSHOTS", "FIREGRID_TIMESCALEDB_INSTALL")
NOT_SETTINGS_PREFIXES = ("FIREGRID_GRAFANA_",)


def _url_problem(url: str, schemes: Iterable[str]) -> str | None:
    """What is wrong with `url` for one of `schemes`, or None. Several hosts, as libpq
    accepts them (postgresql://h1:5432,h2:5433/db), are checked one by one."""
    scheme, sep, rest = url.partition("://")
    allowed = tuple(schemes)
    if not sep or scheme.lower() not in allowed:
        # Never the whole value: a connection string may hold a password.
        return (f"must start with {' or '.join(s + '://' for s in allowed)}"
                f" (got {scheme + '://' if sep else 'no scheme'})")
    hosts = urlsplit("//" + rest).netloc.rpartition("@")[2]
    for host in hosts.split(","):
        match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(.*))?", host)
        port = match.group(2) if match else None
        if port is not None and port != "" and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"port {port} is not a port (1-65535)"
    return None


def _check_url(url: str | None, schemes: tuple[str, ...]) -> str | None:
    if url:
        problem = _url_problem(url, schemes)
        if problem:
            raise ValueError(problem)
    return url


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # A stable client id plus a persistent session is what lets the broker keep messages
    # for ingest while it is down. Give every ingest process its own id.
    client_id: str = Field("firegrid-ingest-1", min_length=1, max_length=128)
    # The protocol of firegrid's own sessions (devices choose theirs). "5": the fast path on
    # the mqtt5 codec (transport/mqtt.py), with ingest.inflight_window sent as Receive
    # Maximum. "3.1.1": paho-mqtt, for a broker without MQTT 5 (transport/paho.py).
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    # MQTT 5 Session Expiry Interval: how long the broker keeps our queue while we are away.
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60)
    # "" (the default): a plain subscription. Mosquitto 2.0 restores a persistent session's
    # plain subscriptions after a restart but never its $share ones, so a shared group
    # loses what devices send between the broker's return and our resubscribe
    # (docs/operations.md, "Broker restarts"). A group name subscribes through
    # $share/<group>/: for an EMQX cluster, whose shared subscriptions are its way to scale.
    share_group: str = ""
    # Several processes on plain subscriptions split the work by device instead: each gets
    # every message, keeps those whose topic id hashes to its `partition` of `partitions`
    # and acknowledges the others unstored (their owner keeps its own copy).
    # `firegrid ingest --workers N` sets both for its workers.
    partitions: int = Field(1, ge=1, le=64)
    partition: int = Field(0, ge=0, le=63)
    topic_prefix: str = "fg/v1"
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    # MQTT over TLS for firegrid's own sessions (ingest, the alert core and its pages, the
    # dynamic-security admin), e.g. to a broker across a network firegrid does not own. The
    # broker's certificate is verified against tls_ca_file (default: the system's CAs) and
    # must name `host`. tls_cert_file and tls_key_file: a client certificate, for a broker
    # that asks for one (Mosquitto's require_certificate, EMQX's verify_peer).
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        given = [name for name, path in files.items() if path is not None]
        if given and not self.tls:
            # A CA file without `tls` would connect in plain text, against the intent.
            raise ValueError(f"{', '.join(given)} set but tls is false: set tls = true")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        missing = [f"{name} {path.resolve()}" for name, path in files.items()
                   if path is not None and not path.is_file()]
        if missing:
            raise ValueError(f"no such file: {'; '.join(missing)}")
        if self.tls:
            # Read them now, so that a wrong file stops the start with this message rather
            # than failing every reconnect.
            try:
                self.ssl_context()
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"the TLS files cannot be used: {exc}") from exc
        return self

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # FIREGRID_MQTT__TLS_CA_FILE= (empty, as the env examples show it) means "not set".
        return None if value == "" else value

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS client context for the broker, None when tls is off (transport/link.py
        wraps the socket in a transport.tls.TlsStream with it; paho clients take it whole).
        The broker's certificate must chain to tls_ca_file (or a system CA) and name
        `host`; TLS 1.2 at least (ssl.create_default_context); no renegotiation."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(
            cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
        # Renegotiation would need a read in the middle of a write from another thread
        # (transport/tls.py); Mosquitto and EMQX never ask for it, and TLS 1.3 has none.
        ctx.options |= ssl.OP_NO_RENEGOTIATION
        if self.tls_cert_file and self.tls_key_file:
            ctx.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file),
                                password=_no_key_password)
        return ctx

    @model_validator(mode="after")
    def _one_way_to_split(self) -> MqttSettings:
        if self.partition >= self.partitions:
            raise ValueError(f"partition ({self.partition}) must be below partitions"
                             f" ({self.partitions})")
        if self.share_group and self.partitions > 1:
            raise ValueError("share_group and partitions both split the messages: set one")
        return self


def _no_key_password() -> str:
    # Called by OpenSSL only for an encrypted key: without it OpenSSL would prompt on a
    # terminal at every reconnect, or fail with "Invalid argument" without one.
    raise ValueError("tls_key_file is encrypted with a passphrase; give firegrid an "
                     "unencrypted key (readable by its user only)")


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    url: str = "postgresql://postgres@127.0.0.1:5432/firegrid"
    connect_timeout_s: int = Field(5, ge=1)
    # auto: use TimescaleDB when the extension is available, plain PostgreSQL otherwise.
    # require: fail `db migrate` without it (production). off: plain path even if present.
    timescale: Literal["auto", "require", "off"] = "auto"
    retention_days: int = Field(400, ge=7)
    compress_after_days: int = Field(7, ge=1)

    @field_validator("url")
    @classmethod
    def _postgresql(cls, url: str) -> str:
        # libpq's URL form only (postgres:// is its alias): a mysql:// URL or a port out of
        # range fails here, before any command tries to connect.
        return _check_url(url, ("postgresql", "postgres")) or url


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    # The in-flight window: messages received but not yet acknowledged. Sent to the broker
    # as MQTT 5 Receive Maximum; for MQTT 3.1.1 the broker's max_inflight_messages rules.
    inflight_window: int = Field(8000, ge=10, le=65535)
    # The window's bound in payload bytes as well: 8,000 gateway messages of 64 KiB would
    # be 512 MiB. A single message larger than this still passes, alone.
    window_max_bytes: int = Field(64 * 2**20, ge=2**20)
    # Half the window: one batch commits while the next fills. Large, so that a batch's
    # fixed costs (round trips, the WAL flush) spread over many rows in a backlog drain
    # (docs/benchmarks.md); at field rates batch_max_age_ms decides anyway.
    batch_max_rows: int = Field(4000, ge=1, le=50000)
    batch_max_age_ms: int = Field(50, ge=1, le=60000)
    max_payload_bytes: int = Field(64 * 1024, ge=256)
    max_future_skew_s: int = Field(300, ge=0)
    max_age_days: int = Field(30, ge=1)
    retry_min_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(10.0, gt=0)
    drain_timeout_s: float = Field(30.0, gt=0)
    metrics_host: str = "127.0.0.1"
    # 0 disables the metrics HTTP server (tests run several ingest processes side by side).
    metrics_port: int = Field(9108, ge=0, le=65535)

    @model_validator(mode="after")
    def _window_holds_batches(self) -> IngestSettings:
        # Acks wait for the commit, so the broker stops sending at `inflight_window` unacked
        # messages. A batch larger than the window would only ever flush on age.
        if self.batch_max_rows > self.inflight_window:
            raise ValueError(
                f"batch_max_rows ({self.batch_max_rows}) must not exceed inflight_window "
                f"({self.inflight_window}): the broker stops sending at the window"
            )
        return self


class BrokerAuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    # Who enforces per-device credentials and ACLs at the broker:
    #   mosquitto-dynsec  firegrid manages Mosquitto's dynamic-security plugin over
    #                     $CONTROL/dynamic-security/v1 (one site).
    #   database          the broker reads firegrid's tables itself (EMQX PostgreSQL authn/
    #                     authz, docs/broker-auth.md); firegrid only writes the hashes.
    #   none              development only: credentials are issued and hashed, nothing
    #                     enforces them.
    mode: Literal["mosquitto-dynsec", "database", "none"] = "none"
    # The dynamic-security admin account (created by `mosquitto_ctrl dynsec init`).
    admin_username: str = "firegrid-admin"
    admin_password: SecretStr | None = None
    # How long to wait for the broker to answer a control command.
    timeout_s: float = Field(10.0, gt=0)
    # PBKDF2-SHA256 iterations for the stored hash. Device passwords are 128-bit random, so
    # the count guards little the entropy does not; EMQX must be configured with the same.
    hash_iterations: int = Field(1000, ge=1, le=1_000_000)


class DevicesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    # Ingest writes last_seen and device conditions once per device per this interval.
    liveness_flush_s: float = Field(5.0, gt=0, le=300)
    # The maintenance monitor's period: offline checks and opening/closing tickets.
    monitor_interval_s: float = Field(10.0, gt=0, le=3600)
    # Offline rules: a device is offline after N missed periods, the period being the one it
    # reports (smoke detectors send heartbeat_s) or else the one it was registered with
    # (cameras: the 60 s GB/T 28181 keepalive). Cameras 3, smoke detectors 2, gateways 3.
    camera_missed: int = Field(3, ge=1)
    smoke_missed: int = Field(2, ge=1)
    gateway_missed: int = Field(3, ge=1)
    # Added to every offline threshold to cover the liveness flush and the monitor period.
    offline_grace_s: float = Field(10.0, ge=0)
    # A status report at or below this battery level opens a low_battery ticket; it closes
    # when a report is at or above low_battery_clear_pct (hysteresis, so it cannot flap).
    low_battery_pct: int = Field(20, ge=0, le=100)
    low_battery_clear_pct: int = Field(30, ge=0, le=100)
    # Prometheus /metrics of `firegrid devices monitor` (on ingest.metrics_host); 0 disables.
    metrics_port: int = Field(9109, ge=0, le=65535)
    # The monitor brings the daily readings rollup (readings_daily, devices/rollup.py) up to
    # date this often: yesterday and today each time, history on the first run; 0 disables.
    rollup_interval_s: float = Field(300.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _hysteresis(self) -> DevicesSettings:
        if self.low_battery_clear_pct < self.low_battery_pct:
            raise ValueError("low_battery_clear_pct must be >= low_battery_pct")
        return self


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # The duty console's map of an incident's building (docs/console.md#the-map): a tile URL
    # template with {z}, {x} and {y}; empty: no map, the building as a plain line. Its
    # origin is allowed in the console's Content-Security-Policy (img-src) and nothing else.
    map_tiles: str = ""
    # The datum the tiles are drawn in: Amap (高德) and Tencent tiles are GCJ-02, OSM's WGS-84.
    map_datum: Literal["wgs84", "gcj02"] = "gcj02"
    map_zoom: int = Field(17, ge=3, le=19)

    @field_validator("map_tiles")
    @classmethod
    def _tile_template(cls, value: str) -> str:
        if value and not (re.match(r"^https?://[^/{}]+/", value)
                          and all(k in value for k in ("{x}", "{y}", "{z}"))):
            raise ValueError("an http(s) URL template with {x}, {y} and {z}, and a fixed host")
        return value

    @property
    def map_origin(self) -> str | None:
        """scheme://host[:port] of the tiles, for the console's img-src."""
        match = re.match(r"^https?://[^/]+", self.map_tiles)
        return match.group(0) if match else None


class AlertsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not a default

    # Rules, confirmation, ladders and feedback (a TOML file, validated at start; see
    # alerts/default_rules.toml, which is used when this is empty).
    rules_file: str | None = None
    # The alert core is its own MQTT consumer of the device topics, so alarms never wait
    # for ingest's bulk batches. Its own persistent session (client id) and share group:
    # several alert-core processes with the same group split the messages between them
    # (rate-of-rise then sees part of a detector's reports unless the broker shares by
    # client id, as EMQX's hash_clientid strategy does).
    client_id: str = Field("firegrid-alerts-1", min_length=1, max_length=120)
    # As mqtt.share_group / partitions / partition, for the alert core's own subscription
    # (plain by default, for the same reason). Partitions keep each detector on one process,
    # so rate-of-rise sees all of its reports.
    share_group: str = ""
    partitions: int = Field(1, ge=1, le=64)
    partition: int = Field(0, ge=0, le=63)
    # Pages for the worker app go to {page_topic_prefix}/{worker_id}/pages (QoS 1).
    page_topic_prefix: str = "firegrid/v1/workers"
    # Messages evaluated per transaction at most; alarms are taken as soon as they arrive.
    batch_max: int = Field(200, ge=1, le=5000)
    # Due escalations fired per transaction, and how often to look when nothing woke us.
    escalation_batch: int = Field(1000, ge=1, le=20000)
    # Escalator threads, each with its own connection, claiming due timers side by side
    # (SKIP LOCKED): a burst of timers is mostly database work, which several connections
    # spread over the database's cores (bench/alerts.py: 3 beat 2 on two cores).
    escalators: int = Field(3, ge=1, le=16)
    poll_s: float = Field(1.0, gt=0, le=60)
    # The MQTT pages this process writes go straight to its own dispatcher, leased to it
    # for this long (alerts/ladder.py): no other dispatcher claims them meanwhile, and if
    # the process dies first they are due that much later, for any. 0: through the outbox.
    hand_off_s: float = Field(5.0, ge=0, le=60)
    # Webhooks (per-worker `webhook` channel and the fire-service hook) are signed with
    # HMAC-SHA256 over "<unix time>.<body>" with this secret (docs/alerts.md).
    webhook_secret: SecretStr | None = None
    # Where confirmed fires are forwarded (the 119 centre's gateway); empty: no forwarding.
    fire_service_url: str | None = None
    # An Apprise URL for SMS with {phone} where the number goes, e.g. a provider's
    # "twilio://SID:TOKEN@+8610.../{phone}"; empty: the sms channel is not used.
    sms_url: str | None = None
    # Voice calls (alerts/channels/voice.py): a person whose page is still unacknowledged
    # after the rules' [voice] after_s is called through Aliyun's voice service (IvrCall, a
    # text-to-speech template with "press 1 to acknowledge"); empty voice_url: no calls.
    # The key press comes back on the provider's receipt push to
    # POST /v1/voice/report?token=<voice_callback_token>, SMS replies to /v1/sms/reply.
    voice_url: str | None = None        # e.g. https://dyvmsapi.aliyuncs.com/
    voice_access_key_id: str | None = None
    voice_access_key_secret: SecretStr | None = None
    voice_show_number: str | None = None     # the caller number bought from the provider
    voice_tts_code: str | None = None        # the approved TTS template, e.g. TTS_1234
    voice_callback_token: SecretStr | None = None
    # Channel retries: exponential backoff between these bounds, giving up after
    # max_attempts (the page is then 'failed', counted and visible in the log).
    retry_min_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=100)
    # HTTP timeout for webhooks and chat robots.
    http_timeout_s: float = Field(10.0, gt=0, le=120)
    # Link to the incident in pages ("{base}/incidents/{id}"); empty: no link.
    console_url: str | None = None
    # Prometheus /metrics of `firegrid alerts run` (on ingest.metrics_host); 0 disables.
    metrics_port: int = Field(9110, ge=0, le=65535)

    @field_validator("fire_service_url", "console_url", "voice_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        return _check_url(url, ("http", "https"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FIREGRID_", env_nested_delimiter="__", extra="forbid"
    )

    mqtt: MqttSettings = MqttSettings()
    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    broker_auth: BrokerAuthSettings = BrokerAuthSettings()
    devices: DevicesSettings = DevicesSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertsSettings = AlertsSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _TOML_PATH.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build and validate settings; raise ConfigError with every bad setting named."""
    path = Path(config_file) if config_file else None
    typos = unknown_variables(os.environ)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"找不到配置文件 config file not found: {path}")
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"配置文件不是有效的 TOML: config file {path} is not valid TOML:"
                              f" {exc}") from exc
        typos += [f"'{key}' in {path}: {why}" for key, why in unknown_keys(document)]
    if typos:
        raise ConfigError("\n".join(["设置有误 invalid settings:"] + [f"  {t}" for t in typos]))
    token = _TOML_PATH.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    finally:
        _TOML_PATH.reset(token)


def variable_names() -> dict[str, str]:
    """Every FIREGRID_* variable the settings read, to its TOML key. A section may also be
    given whole, as JSON (FIREGRID_MQTT='{"host": "..."}'), as pydantic-settings allows."""
    names: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        names[f"{ENV_PREFIX}{name.upper()}"] = name
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key in section.model_fields:
                names[f"{ENV_PREFIX}{name.upper()}__{key.upper()}"] = f"{name}.{key}"
    return names


def _did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """'没有这个设置 ... / no such setting; did you mean X?' with the nearest choice; the
    prefix every choice shares is left out of the comparison, so it does not make every
    name look near."""
    tails = {c.removeprefix(prefix): c for c in choices}
    near = difflib.get_close_matches(word.removeprefix(prefix), list(tails), n=1, cutoff=0.6)
    if near:
        return (f"没有这个设置，是不是 {tails[near[0]]}？ / no such setting; did you mean "
                f"{tails[near[0]]}?")
    return ("没有这个设置，全部设置见 deploy/firegrid.example.toml / no such setting; "
            "deploy/firegrid.example.toml lists every setting")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per FIREGRID_* variable that names no setting, with the nearest that does.
    pydantic-settings reads the names case-insensitively, and so does this check."""
    names = variable_names()
    problems = []
    for variable in sorted(environ):
        upper = variable.upper()
        if (not upper.startswith(ENV_PREFIX) or upper in names or upper in NOT_SETTINGS
                or upper.startswith(NOT_SETTINGS_PREFIXES)):
            continue
        problems.append(f"{variable}: {_did_you_mean(upper, names, ENV_PREFIX)}")
    return problems


def unknown_keys(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, why) for each key of a TOML settings document that names no setting."""
    problems = []
    for key, value in document.items():
        info = Settings.model_fields.get(key)
        if info is None:
            problems.append((key, _did_you_mean(key, Settings.model_fields)))
            continue
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            if not isinstance(value, dict):
                continue  # pydantic names the wrong type
            for sub in value:
                if sub not in section.model_fields:
                    problems.append((f"{key}.{sub}", _did_you_mean(
                    f"{key}.{sub}", [f"{key}.{f}" for f in section.model_fields], f"{key}.")))
    return problems


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = ["设置有误 invalid settings:"]
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        env = "FIREGRID_" + "__".join(part.upper() for part in loc)
        toml = ".".join(loc)
        where = f"{env} (or '{toml}' in {path})" if path else env
        lines.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
