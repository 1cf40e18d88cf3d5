"""The long chaos runs of the order flow (`make chaos`: pytest -m chaos), in both styles, with
parties that void late calls and parties that cannot. The short run is in the normal suite
(tests/e2e/test_order_chaos.py); what happens in a run is described in tests/chaos/orderchaos.py.

Each run prints its figures: SIGKILLs, how many landed inside an email's crash window, duplicate
emails seen (each must be explained by such a kill), the window's measured width, and the
counts of charges, refunds, shipments and emails.
"""

from __future__ import annotations

import pytest
from redis import Redis

from tests.chaos.orderchaos import ChaosPlan, assert_clean, run_chaos, skip_unless_chaos

pytestmark = pytest.mark.chaos


@pytest.fixture(autouse=True)
def chaos_tier(request: pytest.FixtureRequest) -> None:
    skip_unless_chaos(request.config)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("voids", [True, False], ids=["parties-void", "parties-without-voids"])
@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_a_long_chaos_run_leaves_nothing_behind(
    redis: Redis, redis_url: str, style: str, voids: bool
) -> None:
    plan = ChaosPlan(orders=240, kills=40, kill_every=(0.4, 1.2), gifts=10, voids=voids, seed=23,
                     place_every=0.2)  # fmt: skip
    report = run_chaos(redis, redis_url, style, plan)
    print("\n" + report.summary())
    assert_clean(report)
    assert len(report.kills) == plan.kills and report.audit.orders == plan.orders
