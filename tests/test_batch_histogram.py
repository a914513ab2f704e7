"""ingest's lag histogram is observed a batch at a time (ingest/metrics.BatchHistogram): its
exposition must be what prometheus_client's own Histogram shows for the same values, so the
dashboards' histogram_quantile reads it unchanged."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ingest.metrics import BatchHistogram

BUCKETS = (.01, .05, .1, 1, 60, 86400)


def _lines(registry: CollectorRegistry, name: str) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(name) and "_created" not in line:
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_a_batch_shows_as_the_same_values_observed_one_by_one(monkeypatch):
    registry = CollectorRegistry()
    monkeypatch.setattr("ingest.metrics.REGISTRY", registry)
    batch = BatchHistogram("fg_test_lag_seconds", "lag", buckets=BUCKETS, scale=1000)
    reference = Histogram("fg_ref_lag_seconds", "lag", buckets=BUCKETS, registry=registry)
    values_ms = [-3, 0, 10, 11, 50, 51, 999, 1000, 1001, 2_000_000, 10**9]
    batch.observe_many(values_ms[:4])
    batch.observe_many(values_ms[4:])
    batch.observe_many([])
    for value in values_ms:
        reference.observe(value / 1000)

    ours = _lines(registry, "fg_test_lag_seconds")
    theirs = {k.replace("fg_ref", "fg_test"): v
              for k, v in _lines(registry, "fg_ref_lag_seconds").items()}
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value), key
