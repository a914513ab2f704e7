"""Hand-over and the escalators side by side: a hand-over pass that finds nobody new on duty
locks nothing, so the escalators' SKIP LOCKED claim still gets every due timer (issue 18:
with 10,000 open incidents a pass that locked them all held 10,000 due rungs back)."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from alerts import handover, ladder
from alerts.rules import load_policy
from tests.alert_support import NO_CHANNELS, T0, alarm, build_ward, record

POLICY = load_policy()


def test_a_hand_over_pass_with_nobody_new_leaves_due_timers_to_the_escalators(db, db_url):
    build_ward(db)
    incident = record(db, [alarm("SD-1", 1, T0)], T0).opened[0]
    due = T0 + timedelta(seconds=31)
    with db.transaction():
        assert handover.hand_over(db, due, POLICY, NO_CHANNELS) == 0
        # the pass's transaction is still open: the escalator of another thread claims
        with psycopg.connect(db_url) as other, other.transaction():
            assert [i.id for i in ladder.claim_due(other, due, 10)] == [incident]
