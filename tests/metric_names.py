"""Every Prometheus series firegrid's code exports, for the tests that check that dashboards
and alerting rules only use metrics that exist.

A labelled metric with no child yet has no samples, so the series names are derived from
each family's type (a counter `x` is scraped as `x_total`, a histogram as `x_bucket`,
`x_sum` and `x_count`), not read off the samples.
"""

from __future__ import annotations

import importlib

from prometheus_client import REGISTRY

# The modules that define firegrid's metrics; importing them registers the metrics.
MODULES = ("transport.metrics", "ingest.metrics", "devices.metrics", "alerts.metrics")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exported() -> set[str]:
    """Series names, with firegrid's prefix, that a scrape of firegrid's processes can
    return (plus the client library's process_ and python_ collectors)."""
    for module in MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names
