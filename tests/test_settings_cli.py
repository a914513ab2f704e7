"""Settings are validated before any I/O, and the CLI maps failures to meaningful exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firegrid.cli import main
from runtime.errors import ConfigError
from runtime.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "firegrid.example.toml"


def test_environment_overrides_the_toml_file(tmp_path, monkeypatch):
    path = tmp_path / "fg.toml"
    path.write_text('[mqtt]\nhost = "broker.example"\nport = 8883\n'
                    '[ingest]\nbatch_max_rows = 500\n')
    monkeypatch.setenv("FIREGRID_MQTT__PORT", "1884")
    settings = load_settings(path)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.example", 1884)
    assert settings.ingest.batch_max_rows == 500


def test_a_bad_setting_is_named_as_the_operator_would_type_it(monkeypatch):
    monkeypatch.setenv("FIREGRID_INGEST__BATCH_MAX_ROWS", "lots")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "FIREGRID_INGEST__BATCH_MAX_ROWS" in str(err.value)


def test_a_batch_larger_than_the_window_is_refused():
    with pytest.raises(ConfigError, match="inflight_window"):
        load_settings(None, ingest={"inflight_window": 100, "batch_max_rows": 500})


def test_unknown_toml_key_and_broken_toml_are_refused(tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text("[mqtt]\nhots = 'x'\n")
    with pytest.raises(ConfigError, match="mqtt.hots"):
        load_settings(typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_the_example_config_is_valid_and_documents_every_setting():
    settings = load_settings(EXAMPLE)
    text = EXAMPLE.read_text()
    for section in ("mqtt", "database", "ingest", "broker_auth", "devices", "api", "alerts"):
        for key in type(getattr(settings, section)).model_fields:
            assert f"\n{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"
    assert settings == Settings()  # the example shows the defaults


def test_cli_exit_codes(monkeypatch, capsys):
    assert main(["config", "check"]) == 0
    monkeypatch.setenv("FIREGRID_MQTT__PORT", "99999")
    assert main(["config", "check"]) == 2
    assert "FIREGRID_MQTT__PORT" in capsys.readouterr().err
    monkeypatch.delenv("FIREGRID_MQTT__PORT")
    monkeypatch.setenv("FIREGRID_DATABASE__URL", "postgresql://postgres@127.0.0.1:1/x")
    assert main(["db", "migrate"]) == 3


def test_help_is_readable_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "firegrid.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for word in ("ingest", "db", "demo", "exit codes", "FIREGRID_"):
        assert word in out


def test_workers_warn_when_their_metrics_ports_meet_another_services(caplog):
    from ingest.workers import _check_ports
    settings = Settings()                     # ingest 9108, monitor 9109, alert core 9110
    _check_ports(settings, 1)
    assert not caplog.records
    _check_ports(settings, 3)
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    caplog.clear()
    _check_ports(Settings(ingest={"metrics_port": 9120}), 4)
    assert not caplog.records


# --- typos are errors naming the nearest setting (issue 20) -------------------------------

@pytest.mark.parametrize(("variable", "nearest"), [
    ("FIREGRID_DATABASE_URL", "FIREGRID_DATABASE__URL"),   # one underscore for two
    ("FIREGRID_MQTT_PORT", "FIREGRID_MQTT__PORT"),
    ("FIREGRID_INGEST__BATCH_MAX_ROW", "FIREGRID_INGEST__BATCH_MAX_ROWS"),
    ("firegrid_log_levl", "FIREGRID_LOG_LEVEL"),            # read case-insensitively
])
def test_an_unknown_variable_is_refused_naming_the_nearest_setting(monkeypatch, capsys,
                                                                    variable, nearest):
    monkeypatch.setenv(variable, "postgresql://postgres@127.0.0.1:5432/x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert variable in str(err.value) and f"did you mean {nearest}?" in str(err.value)
    assert main(["config", "check"]) == 2
    out = capsys.readouterr()
    assert f"did you mean {nearest}?" in out.err and not out.out


def test_a_variable_near_no_setting_points_to_the_list(monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_FOO", "1")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "FIREGRID_FOO" in err and "did you mean" not in err
    assert "deploy/firegrid.example.toml" in err


def test_firegrid_variables_that_are_not_settings_pass(monkeypatch):
    # Grafana's datasource provisioning and the console test's switch share the prefix.
    monkeypatch.setenv("FIREGRID_GRAFANA_PG_HOST", "db:5432")
    monkeypatch.setenv("FIREGRID_SCREENSHOTS", "1")
    monkeypatch.setenv("FIREGRID_TIMESCALEDB_INSTALL", "/tmp/install.sh")
    monkeypatch.setenv("FIREGRID_CONFIG", str(EXAMPLE))
    load_settings()


def test_unknown_toml_keys_name_the_nearest_key(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text('log_levle = "INFO"\n[mqtt]\nhots = "x"\n[databse]\nurl = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    for key, nearest in (("mqtt.hots", "mqtt.host"), ("databse", "database"),
                         ("log_levle", "log_level")):
        assert f"'{key}' in {path}" in message and f"did you mean {nearest}?" in message
    assert main(["--config", str(path), "config", "check"]) == 2
    assert "did you mean mqtt.host?" in capsys.readouterr().err


@pytest.mark.parametrize(("url", "why"), [
    ("mysql://root@127.0.0.1:3306/firegrid", "must start with postgresql://"),
    ("host=127.0.0.1 dbname=firegrid password=secret", "must start with postgresql://"),
    ("postgresql://postgres@127.0.0.1:99999/firegrid", "port 99999"),
    ("postgresql://postgres@h1:5432,h2:0/firegrid", "port 0"),
])
def test_config_check_refuses_database_urls_that_are_not_postgresql(monkeypatch, capsys,
                                                                     url, why):
    monkeypatch.setenv("FIREGRID_DATABASE__URL", url)
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "FIREGRID_DATABASE__URL" in err and why in err
    assert "secret" not in err                     # the value itself is never echoed


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/firegrid", "postgres://u:p@db.example/firegrid",
    "postgresql://u@h1:5432,h2:5433/firegrid", "postgresql://[::1]:5432/firegrid",
    "postgresql:///firegrid?host=/var/run/postgresql"])
def test_postgresql_urls_as_libpq_reads_them_pass(url):
    assert load_settings(None, database={"url": url}).database.url == url


def test_http_urls_and_ports_are_checked(monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_ALERTS__FIRE_SERVICE_URL", "ftp://119.example/hook")
    monkeypatch.setenv("FIREGRID_API__PORT", "0")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "FIREGRID_ALERTS__FIRE_SERVICE_URL" in err and "http://" in err
    assert "FIREGRID_API__PORT" in err


def test_config_check_reads_the_rules_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_ALERTS__RULES_FILE", str(tmp_path / "missing.toml"))
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "alerts.rules_file" in err and "missing.toml" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[[ladder.warning\n")
    monkeypatch.setenv("FIREGRID_ALERTS__RULES_FILE", str(broken))
    assert main(["config", "check"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    good = tmp_path / "rules.toml"
    good.write_text((REPO / "alerts" / "default_rules.toml").read_text(encoding="utf-8"),
                    encoding="utf-8")
    monkeypatch.setenv("FIREGRID_ALERTS__RULES_FILE", str(good))
    assert main(["config", "check"]) == 0


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"firegrid {version('firegrid')}\n"


def test_a_grid_token_without_its_worker_is_refused(db_url, db, monkeypatch, capsys):
    monkeypatch.setenv("FIREGRID_DATABASE__URL", db_url)
    for role in ("grid_worker", "grid_leader"):
        assert main(["api", "token", "create", "--name", "phone", "--role", role]) == 2
        out = capsys.readouterr()
        assert "--worker" in out.err and "log in" in out.err and not out.out
    assert db.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
    db.execute("INSERT INTO workers (id, name, role) VALUES ('W1', '张三', 'grid_worker')")
    assert main(["api", "token", "create", "--name", "phone", "--role", "grid_worker",
                 "--worker", "W1"]) == 0
    assert capsys.readouterr().out.startswith("fg_")
    # A duty officer's token may serve the API alone; the CLI says what it cannot do.
    assert main(["api", "token", "create", "--name", "ops", "--role", "street_duty"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("fg_") and "duty console" in out.err
    assert db.execute("SELECT role, worker_id FROM api_tokens ORDER BY id").fetchall() == [
        ("grid_worker", "W1"), ("street_duty", None)]
