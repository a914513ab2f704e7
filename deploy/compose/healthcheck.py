#!/usr/bin/env python3
"""Health checks for firegrid's containers (compose healthchecks, Kubernetes probes).

    firegrid-healthcheck metrics PORT [GAUGE ...]   /metrics answers on 127.0.0.1:PORT and
                                                    every GAUGE named is 1 there
    firegrid-healthcheck http URL                   URL answers 200 (the API's /healthz)

Exit 0 healthy, 1 not. Standard library only: it runs in the firegrid image (python:3.11-slim
has no curl) and must not import firegrid, so a broken install still gets a clear answer.

Why gauges and not just the port: ingest and the alert core keep serving /metrics while they
are disconnected from the broker or the database; `firegrid_mqtt_connected` and
`firegrid_ingest_database_connected` say whether they are doing their job.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def gauge_values(text: str, name: str) -> list[float]:
    """Every sample of `name` (any labels) in a Prometheus text exposition."""
    values = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric == name:
            values.append(float(value))
    return values


def check_metrics(port: int, gauges: list[str]) -> list[str]:
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return [f"/metrics on port {port} did not answer ({status or body})"]
    problems = []
    for name in gauges:
        values = gauge_values(body, name)
        if not values:
            problems.append(f"{name} not exported")
        elif any(v != 1 for v in values):
            problems.append(f"{name} is {values}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "metrics":
        problems = check_metrics(int(argv[1]), argv[2:])
    elif len(argv) == 2 and argv[0] == "http":
        status, body = _get(argv[1])
        problems = [] if status == 200 else [f"{argv[1]} answered {status or body}"]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
