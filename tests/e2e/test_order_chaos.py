"""The short chaos run of the order flow, in both styles (the long one: tests/chaos, `make chaos`).

Slow parties and late answers, the email worker and the step worker SIGKILLed at random, a new
event type from an upgraded writer mid-run and an upgraded `chumon events` to read it: at the
end nothing is lost, stuck, charged, held or shipped that should not be, every duplicate email
is explained by a kill inside the crash window, and the read model equals the write side.
"""

from __future__ import annotations

import pytest
from redis import Redis

from tests.chaos.orderchaos import ChaosPlan, assert_clean, run_chaos

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_a_short_chaos_run_leaves_nothing_behind(redis: Redis, redis_url: str, style: str) -> None:
    report = run_chaos(redis, redis_url, style, ChaosPlan(orders=24, kills=4, gifts=2, seed=5))
    print("\n" + report.summary())
    assert_clean(report)
    assert len(report.kills) == 4 and report.audit.orders == 24
