"""Write the dashboards' JSON into dashboards/json/, or check that it is up to date.

    .venv/bin/python -m dashboards.generate            # regenerate dashboards/json/*.json
    .venv/bin/python -m dashboards.generate --check    # exit 1 if the committed JSON differs

The JSON is committed (Grafana's file provider reads it, dashboards/provisioning/); the
generator is the source, so edit the Python and regenerate, never the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import device_health, ingest_health, response, street

JSON_DIR = Path(__file__).resolve().parent / "json"

# file name -> builder; the file names are what the provisioning's file provider loads.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "street-overview.json": street.build,
    "response.json": response.build,
    "device-health.json": device_health.build,
    "ingest-alert-health.json": ingest_health.build,
}


def render(build: Callable[[], Dashboard]) -> str:
    """The dashboard as Grafana's JSON model: sorted keys and a final newline, so the output
    is byte-for-byte stable and diffs stay small."""
    model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    _finish_panels(model)
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _finish_panels(model: dict) -> None:
    """What the SDK leaves to Grafana's UI: unique panel ids (links and the panel editor
    need them), and each panel's datasource, taken from its targets (without one Grafana
    would send the queries to the default datasource)."""
    panels = [p for top in model.get("panels", []) for p in [top, *top.get("panels", [])]]
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
        sources = {json.dumps(t["datasource"], sort_keys=True)
                   for t in panel.get("targets", []) if "datasource" in t}
        if len(sources) == 1:
            panel["datasource"] = json.loads(sources.pop())


def rendered() -> dict[str, str]:
    return {name: render(build) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed JSON instead of writing it")
    parser.add_argument("--out", type=Path, default=JSON_DIR,
                        help="directory (default %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("out of date (run .venv/bin/python -m dashboards.generate): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
