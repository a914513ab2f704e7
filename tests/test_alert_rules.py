"""The temperature rules, as pure logic: a fast rise is a fire alert, sensor noise and slow
drift are not (alerts/rules.py RuleEngine)."""

from __future__ import annotations

from alerts.rules import RuleEngine, load_policy
from protocol.decode import Reading

T = 1_700_000_000_000   # ms


def report(device: str, at_s: float, temp: float, seq: int) -> Reading:
    """A detector's status report as protocol.decode yields it."""
    ts = T + int(at_s * 1000)
    return Reading(device, ts, seq, "smoke", ts, None, None, temp, 90, None, None, None, 60,
                   None, None, None)


def rules_fired(temps: list[tuple[float, float]], device: str = "SD-1") -> list[dict]:
    engine = RuleEngine(load_policy())
    out = []
    for seq, (at_s, temp) in enumerate(temps):
        out += engine.readings([report(device, at_s, temp, seq)])
    return [c.detail for c in out if c.rule == "rate_of_rise"]


def test_a_fire_reported_in_small_steps_is_a_rate_of_rise_alert():
    # 20 °C -> 32 °C over 60 s, a report every 2 s: each step is 0.4 °C, the whole 12 °C/min
    fired = rules_fired([(2 * i, 20 + 0.4 * i) for i in range(31)])
    assert fired, "a 12 °C/min rise went unnoticed"
    assert fired[0]["from_c"] == 20 and fired[0]["c_per_min"] >= 10


def test_sensor_noise_between_close_reports_is_not():
    # 0.3 °C up half a second later is 36 °C/min, but only 0.3 °C
    assert rules_fired([(0, 24.0), (0.5, 24.3), (1.0, 24.1), (1.5, 24.4)]) == []


def test_slow_drift_and_a_warm_afternoon_are_not():
    assert rules_fired([(60 * i, 22 + 0.5 * i) for i in range(20)]) == []   # 0.5 °C/min


def test_a_rise_spread_over_more_than_the_window_is_not():
    # 8 °C in 20 minutes: the window is 10 minutes, and within it the rise is 4 °C
    assert rules_fired([(120 * i, 20 + 0.8 * i) for i in range(11)]) == []


def test_a_redelivered_report_raises_nothing_new():
    engine = RuleEngine(load_policy())
    first = engine.readings([report("SD-1", 0, 20, 1)]) + engine.readings(
        [report("SD-1", 30, 30, 2)])
    again = engine.readings([report("SD-1", 30, 30, 2)])
    assert [c.rule for c in first] == ["rate_of_rise"] and again == []


def test_a_rules_file_can_switch_a_threshold_rule_off(tmp_path):
    import pytest

    from runtime.errors import ConfigError
    path = tmp_path / "rules.toml"
    ladders = ('[[ladder.warning]]\nroles = ["grid_worker"]\nack_timeout_s = 60\n'
               '[[ladder.confirmed]]\nroles = ["grid_worker"]\nack_timeout_s = 60\n')
    path.write_text("[smoke_detector]\nhigh_temperature_c = false\nrate_of_rise_c_per_min = false\n"
                    "[camera]\nsmoke_confidence = false\n" + ladders)
    policy = load_policy(path)
    engine = RuleEngine(policy)
    hot = engine.readings([report("SD-1", 0, 20.0, 1), report("SD-1", 30, 90.0, 2)])
    assert hot == []                          # neither high temperature nor rate of rise
    assert policy.camera.fire_confidence == 0.7   # the others keep their defaults
    path.write_text("[camera]\nsmoke_confidence = true\n" + ladders)
    with pytest.raises(ConfigError, match="smoke_confidence"):
        load_policy(path)
