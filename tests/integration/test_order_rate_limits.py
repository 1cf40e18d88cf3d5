"""The order flow under its parties' rate limits: a gateway that answers 429, a mail server that
answers 421. Every order still ends as it would have, no attempt is spent on "slow down", and the
parties see no more calls than their limit allows."""

from __future__ import annotations

import pytest
from redis import Redis

from orders.config import SimulationConfig, SmtpConfig
from tests.flow import running_flow
from workers import RateLimit


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_a_gateway_that_says_slow_down_is_waited_for(redis: Redis, redis_url: str, style: str) -> None:
    simulation = SimulationConfig(gateway_timeout=0.2, seed=7, payment_rate_limit=RateLimit(max=2, per=0.5))
    with running_flow(redis, redis_url, style=style, simulation=simulation) as flow:
        ids = [flow.place(("TEA", 1), customer_email=f"c{i}@example.com") for i in range(8)]
        orders = [flow.settled(order_id, timeout=60) for order_id in ids]
        assert [o.status.value for o in orders] == ["CONFIRMED"] * 8
        refused = int(redis.hget(flow.keys.sim("payments", "calls"), "refused_busy") or 0)
        assert refused > 0  # the gateway did say "slow down": every charge waited, none failed
        assert flow.audit().ok


def test_a_mail_server_421_pauses_mail_and_costs_no_attempt(redis: Redis, redis_url: str) -> None:
    smtp = SmtpConfig(timeout=5, busy_retry_after=0.5)
    with running_flow(redis, redis_url, smtp=smtp) as flow:
        order_id = flow.place(("TEA", 1), customer_email="slowdown-ada@example.com")
        order = flow.settled(order_id, timeout=30)
        assert order.status.value == "CONFIRMED" and not order.attention
        sent = [m for m in flow.sink.messages() if m.get("order_id") == order_id]
        assert len(sent) == 1
        from workers import load_job
        from workers.keys import Keys

        email_jobs = [
            info
            for key in redis.scan_iter("rq:job:*")
            if (info := load_job(redis, Keys(), key.decode()[7:]))
            and info.job_type == "notifications.confirmation"
        ]
        assert [job.attempt for job in email_jobs] == [1] and email_jobs[0].failures == []
