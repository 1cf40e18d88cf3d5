"""CHUMON_REDIS__REPLICAS_ACK: an order, an enqueue or a saga step counts only once a replica holds it.

The suite's Redis has no replica, so with waiting on every such write raises NotReplicated,
and the write stays on the primary for the retry (with the same idempotency key) to find. A
primary with a real replica (tests/redisproc.py) acknowledges them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

import jobs
from chumon.bootstrap import build_services
from orders.keys import OrderKeys
from producer import Producer
from tests.flow import Flow, flow_settings, running_flow
from tests.redisproc import RedisServer
from tests.support import make_settings, wait_until
from workers import Enqueuer
from workers.connection import RedisOptions
from workers.durability import NotReplicated

WAITING = RedisOptions(replicas_ack=1, replicas_timeout_ms=50)


@pytest.fixture
def idle_flow(redis: Redis, redis_url: str) -> Iterator[Flow]:
    with running_flow(redis, redis_url, workers=0) as running:
        yield running


def place(flow: Flow, key: str) -> str:
    return flow.place(("TEA", 1), idempotency_key=key)


def test_without_the_setting_nothing_waits(idle_flow: Flow) -> None:
    place(idle_flow, "plain")
    assert not idle_flow.redis.exists(idle_flow.keys.runtime.replication_fence)


def test_an_unreplicated_order_is_an_error_and_the_retry_finds_it(redis: Redis, redis_url: str) -> None:
    settings = flow_settings(redis_url, 25, redis=WAITING)
    services = build_services(redis, settings)
    services.inventory.set_stock("TEA", 10, 450)
    producer = Producer(redis, settings, jobs.registry, services.orders)
    order = {"customer_name": "Ada", "customer_email": "ada@example.com", "ship_to": "1 Lane Street"}
    with pytest.raises(NotReplicated, match="0 of 1 replica"):
        producer.place_order(items=[("TEA", 1)], idempotency_key="checkout-1", **order)
    assert redis.zcard(OrderKeys().orders_by_time) == 1  # on the primary, not undone
    with pytest.raises(NotReplicated):  # the retry finds it, and waits again
        producer.place_order(items=[("TEA", 1)], idempotency_key="checkout-1", **order)
    assert redis.zcard(OrderKeys().orders_by_time) == 1


def test_an_unreplicated_enqueue_is_an_error(redis: Redis, redis_url: str) -> None:
    enqueuer = Enqueuer(redis, make_settings(redis_url, redis=WAITING))
    with pytest.raises(NotReplicated):
        enqueuer.enqueue(jobs.registry.get("demo.work"), {"item": 3})


def test_a_replica_acknowledges() -> None:
    quick = ["--repl-diskless-sync-delay", "0"]  # 7.0 waits 5 s before a first sync otherwise
    with RedisServer(extra=quick) as primary, RedisServer(extra=quick) as replica:
        replica.client().replicaof("127.0.0.1", primary.port)
        wait_until(
            lambda: replica.client().info("replication")["master_link_status"] == "up",
            timeout=30,
            message="the replica to sync",
        )
        settings = make_settings(primary.url, redis=RedisOptions(replicas_ack=1, replicas_timeout_ms=30_000))
        job_id = Enqueuer(primary.client(), settings).enqueue(jobs.registry.get("demo.work"), {"item": 3})
        assert replica.client().exists(f"rq:job:{job_id}")  # acknowledged: the replica has it
        replica.kill()  # a graceful stop of the primary would wait for its replica
        primary.kill()
