"""Reading the generated dashboards back: every SQL and PromQL target with the panel it
belongs to, for the tests and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dashboards.generate import JSON_DIR


@dataclass(frozen=True)
class Target:
    dashboard: str          # file name
    panel: str              # panel title
    ref_id: str
    kind: str               # "sql" or "promql"
    text: str               # rawSql or expr
    fmt: str | None         # SQL: "table" or "time_series"
    min_interval: str | None  # the panel's minimum interval ("1h"), if any
    time_from: str | None   # the panel's relative time override ("182d"), if any

    @property
    def name(self) -> str:
        return f"{self.dashboard}: {self.panel} [{self.ref_id}]"


def load(directory: Path = JSON_DIR) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(directory.glob("*.json"))}


def targets(directory: Path = JSON_DIR) -> Iterator[Target]:
    for name, model in load(directory).items():
        for top in model.get("panels", []):
            for panel in [top, *top.get("panels", [])]:
                for t in panel.get("targets", []):
                    kind = "sql" if "rawSql" in t else "promql" if "expr" in t else None
                    if kind is None:
                        raise ValueError(f"{name}: {panel.get('title')}: unknown target {t}")
                    yield Target(name, panel["title"], t["refId"], kind,
                                 t.get("rawSql") or t.get("expr"), t.get("format"),
                                 panel.get("interval"), panel.get("timeFrom"))


def variable_queries(directory: Path = JSON_DIR) -> dict[str, str]:
    """name -> query of the template variables (the same in every dashboard that has them)."""
    found: dict[str, str] = {}
    for name, model in load(directory).items():
        for v in model.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                if found.setdefault(v["name"], v["query"]) != v["query"]:
                    raise ValueError(f"{name}: variable {v['name']} differs between dashboards")
    return found
