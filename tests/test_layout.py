"""The house plan: top-level packages in layers, imports pointing only down, no loops.

    firegrid            entry points: the CLI and the demo's wiring
    simulators          software devices, scenarios, load
    api                 the HTTP API and the duty console
    alerts              the alert core
    ingest   devices    MQTT -> database; the registry, broker accounts, monitor
    protocol transport  the wire models and decoder; the MQTT session and window
    runtime             settings, database access, migrations, local services

A package may import from the layers below it, never from its own layer or above. Read
from the source with `ast` (nothing is imported), so a lazy import inside a function counts
as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    {"runtime"},
    {"protocol", "transport"},
    {"ingest", "devices"},
    {"alerts"},
    {"api"},
    {"simulators"},
    {"firegrid"},
]
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from pkg import module` imports pkg.module
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in LEVEL for p in (ROOT / pkg).rglob("*.py")}


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "dashboards"}
    assert packages == set(LEVEL), "add the new package to LAYERS (and to pyproject.toml)"


def test_imports_point_only_down():
    upward = []
    for module, path in _sources().items():
        here = module.split(".")[0]
        for target, line in _imports(path):
            there = target.split(".")[0]
            if there in LEVEL and there != here and LEVEL[there] >= LEVEL[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert upward == []


def test_no_import_loops_between_modules():
    sources = _sources()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in sources.items():
        for target, _ in _imports(path):
            if target in sources and target != module:
                graph[module].add(target)
    # Tarjan's strongly connected components; any with two or more modules is a loop.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(sources):
        if module not in index:
            visit(module)
    assert loops == []


def test_the_checks_see_an_upward_import_and_a_loop(tmp_path, monkeypatch):
    """The two checks above can fail: a package that imports one above it, and two modules
    that import each other, are both found."""
    for pkg, body in (("runtime", "from api import app\n"), ("api", "")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "app.py").write_text(body)
    (tmp_path / "api" / "a.py").write_text("from api import b\n")
    (tmp_path / "api" / "b.py").write_text("from . import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "LEVEL", {"runtime": 0, "api": 4})
    with pytest.raises(AssertionError, match="runtime/app.py:1 imports api"):
        test_imports_point_only_down()
    with pytest.raises(AssertionError, match="api.a"):
        test_no_import_loops_between_modules()


def test_importing_a_package_starts_nothing_and_registers_no_metric():
    probe = (
        "import sys, threading\n"
        "from prometheus_client import REGISTRY\n"
        "before = set(REGISTRY._names_to_collectors)\n"
        f"for pkg in {sorted(LEVEL)!r}:\n"
        "    __import__(pkg)\n"
        "import protocol.models, protocol.decode, devices.models\n"
        "added = sorted(set(REGISTRY._names_to_collectors) - before)\n"
        "assert added == [], added\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'paho' not in sys.modules, 'the wire models load the MQTT client'\n"
        "assert 'psycopg' not in sys.modules, 'the wire models load the database driver'\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
