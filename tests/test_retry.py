"""The one backoff (runtime/retry.py) and the ingest supervisor's restart policy, as pure
logic: no sleeps, a seeded random source."""

from __future__ import annotations

import random

import pytest

from ingest.workers import HEALTHY_S, restart_delay
from runtime.retry import Backoff


def test_backoff_doubles_up_to_its_cap_within_its_jitter():
    backoff = Backoff(0.5, 30.0)
    rng = random.Random(1)
    for attempt, ceiling in enumerate((0.5, 1, 2, 4, 8, 16, 30, 30)):
        delay = backoff.delay(attempt, rng)
        assert ceiling * 0.5 <= delay <= ceiling


def test_backoff_without_jitter_and_after_very_many_attempts():
    assert Backoff(0.5, 30.0, floor=1.0).delay(3) == 4.0
    assert Backoff(0.2, 10.0).delay(10_000) <= 10.0     # no overflow, still capped


def test_a_seeded_source_gives_the_same_delays():
    b = Backoff(2, 300)
    assert [b.delay(n, random.Random(7)) for n in range(5)] == \
        [b.delay(n, random.Random(7)) for n in range(5)]


def test_an_impossible_backoff_is_refused():
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, floor=1.5)


def test_a_worker_that_keeps_crashing_waits_longer_each_time():
    count, delays = 0, []
    for _ in range(8):
        count, delay = restart_delay(count, ran_s=1.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_worker_that_ran_healthily_restarts_quickly_again():
    count, delay = restart_delay(10, ran_s=HEALTHY_S + 1)
    assert (count, delay) == (1, 1.0)
