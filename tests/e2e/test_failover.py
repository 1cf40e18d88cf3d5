"""Issue 10: a Sentinel failover, planned or a SIGKILL of the primary, loses no acknowledged
order with the recommended settings (CHUMON_REDIS__REPLICAS_ACK=1, min-replicas-to-write 1).

Counted from the producer's own record of what was acknowledged (tests/failover.py), not from
Redis alone: an order Redis forgot leaves no trace there.
"""

from __future__ import annotations

import pytest

from chumon.devredis import find_server
from tests.failover import CONFIGS, run

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("fault", ["planned", "kill"])
def test_no_acknowledged_order_is_lost_or_stuck(fault: str) -> None:
    if find_server() is None:
        pytest.skip(
            "no redis-server binary to run a primary, a replica and Sentinels (redis-server --sentinel)"
        )
    outcome = run(CONFIGS["recommended"], fault, total=100, fault_after=30)
    print(f"\n{fault}: {outcome.as_dict()}")
    assert outcome.acknowledged == 100
    assert outcome.lost == [], f"acknowledged orders missing after the failover: {outcome.lost}"
    assert outcome.stuck == [], f"acknowledged orders neither CONFIRMED nor CANCELLED: {outcome.stuck}"
    assert outcome.emails_for_missing_orders == [], outcome.emails_for_missing_orders
    assert outcome.exited == [], f"processes that exited during the failover: {outcome.exited}"
