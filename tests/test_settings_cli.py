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
