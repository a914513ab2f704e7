"""firegrid's own Prometheus config and alerting rules (deploy/prometheus/): promtool accepts
the config and the rules and passes the rules' unit tests; every rule is tested firing and
quiet, is documented, and uses only metrics firegrid's code exports.

promtool comes from Debian's `prometheus` package (`./dev test` installs it). Without it
these tests fail rather than skip: CI must run them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import required_tool
from tests.metric_names import exported

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULES = sorted((PROM / "rules").glob("*.rules.yml"))
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))
DOCS = ROOT / "docs" / "alerting-rules.md"

# Series Prometheus makes itself, not exported by any firegrid process.
SYNTHETIC = {"up"}
SEVERITIES = {"critical", "warning"}
_INSTALL = ("install Debian's `prometheus` package (./dev test does): the Prometheus rules "
            "cannot be checked without it")


def _run(*args: str | Path) -> None:
    done = subprocess.run([required_tool("promtool", _INSTALL), *map(str, args)], cwd=PROM,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n" \
                                 f"{done.stdout}\n{done.stderr}"


def _rules() -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


# --- promtool ----------------------------------------------------------------------------

def test_rule_files_exist():
    assert RULES and UNIT_TESTS


def test_promtool_check_config():
    _run("check", "config", CONFIG)  # also checks the rule files and the targets files


def test_promtool_check_rules():
    _run("check", "rules", *RULES)


def test_promtool_test_rules():
    _run("test", "rules", *UNIT_TESTS)


# --- every rule tested, labelled and documented --------------------------------------------

def _unit_cases() -> list[dict]:
    return [case for path in UNIT_TESTS for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def test_every_alert_is_tested_firing_and_quiet():
    firing = {c["alertname"] for c in _unit_cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in _unit_cases() if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "no promtool test shows these firing"
    assert names - quiet == set(), "no promtool test shows these quiet"
    assert (firing | quiet) - names == set(), "tests for alerts that do not exist"


def test_every_alert_has_severity_summary_description_and_runbook():
    docs = DOCS.read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+\s+(.+?)\s*$", docs, re.MULTILINE)}
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in _alerts():
        name, ann = rule["alert"], rule.get("annotations", {})
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        assert ann.get("summary") and ann.get("description"), name
        zh, _, en = ann["summary"].partition("\n")
        assert re.search(r"[\u4e00-\u9fff]", zh) and en.isascii() and en, \
            f"{name}: summary is Chinese, then English on the next line"
        assert ann.get("runbook_url") == f"docs/alerting-rules.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name} has no section in docs/alerting-rules.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_rules_and_scrape_config_agree_on_job_names():
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    used = set()
    for rule in _rules():
        for op, value in re.findall(r'\bjob\s*(=~|=)\s*"([^"]*)"', rule["expr"]):
            used.update(value.split("|") if op == "=~" else [value])
    assert used and used <= jobs, f"rules select jobs the config does not scrape: {used - jobs}"


# --- metric names ------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "bool", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects. Strings, label matchers ({...}), range
    and subquery durations ([...]) and the label lists of by/without/on/ignoring/group_*
    are removed first; what is left is a metric name unless it is a function or an
    aggregation (followed by "(") or a keyword. `offset 1h` cannot read as a name `h`: a
    name never follows a digit."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for name, call in _IDENT.findall(text):
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (job, le) (rate(a_bucket{job="x", le="+Inf"}[5m]))', {"a_bucket"}),
    ("max by (street, community) (b) == 0 and on (street, community) c > 0 "
     "unless on () max(d) == 1", {"b", "c", "d"}),
    ("x - x offset 1h > clamp_min(y offset 1h, 20)", {"x", "y"}),
    ('x > on (job) group_left 0.01 * sum by (job) (increase(y[10m])) and z{a="by (q)"} > 10',
     {"x", "y", "z"}),
    ("absent(up{job=\"a\"}) or min_over_time(p[15m:1m]) > 1e3", {"up", "p"}),
    ("sum(rate(x_total[5m])) without (instance) / ignoring (le) Inf", {"x_total"}),
])
def test_metric_name_parser(expr, names):
    assert metric_names(expr) == names


def test_rules_use_only_metrics_the_code_exports():
    known = exported() | SYNTHETIC
    for rule in _rules():
        name = rule.get("alert") or rule.get("record")
        used = metric_names(rule["expr"])
        assert used, f"{name}: no metric found in {rule['expr']!r}"
        assert used <= known, f"{name} uses metrics no firegrid process exports: {used - known}"
