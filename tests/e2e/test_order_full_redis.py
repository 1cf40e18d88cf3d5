"""The order flow with real processes while Redis refuses every write for a few seconds
(``maxmemory`` reached, ``noeviction``), longer than a worker's liveness time-out.

What must hold: no process dies; a placement refused meanwhile raises a clear error and
writes nothing, and the app's retry with the same idempotency key places it once; when Redis
takes writes again every order settles, each charge, refund, shipment and email happens once
(counted from the raw records: every message the sink received), and the read model catches up.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import OutOfMemoryError

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.keys import OrderKeys
from producer import Producer
from tests.e2e.test_order_processes import EventsProcess, _settled, mix
from tests.flow import CATALOGUE, Flow, flow_settings, with_style
from tests.redisproc import RedisServer
from tests.support import WorkerProcess, wait_until

pytestmark = pytest.mark.e2e
QUEUES = ["orders", "inventory", "payments", "shipping", "notifications"]
FULL_FOR = 3.0  # seconds of refused writes: longer than worker_ttl (2 s in the tests' settings)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=False) as srv:
        yield srv


def oom_errors(redis: Redis) -> int:
    return int(redis.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def fill_for(redis: Redis, seconds: float, done: threading.Event) -> None:
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", "1")  # every command that may grow memory is refused
    time.sleep(seconds)  # the fault's length, the scenario under test
    redis.config_set("maxmemory", "0")
    done.set()


def place(producer: Producer, order: dict[str, Any], key: str, refusals: list[str]) -> str:
    """As an app would: a placement Redis refused is tried again, with the same key."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return producer.place_order(**order, idempotency_key=key).order_id
        except OutOfMemoryError as exc:
            refusals.append(str(exc))
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def summaries_settled(producer: Producer, ids: list[str]) -> bool:
    return all((s := producer.get_order_summary(i)) and s.status.value != "PENDING" for i in ids)


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_a_full_redis_mid_run_loses_and_doubles_nothing(server: RedisServer, style: str) -> None:
    redis = server.client()
    n = 40
    with SmtpSink(port=0, redis=redis, keys=OrderKeys()) as sink:
        settings = with_style(flow_settings(server.url, sink.port), style)
        services = build_services(redis, settings)
        stock = {sku: (100_000, price) for sku, (_, price) in CATALOGUE.items()}
        for sku, (on_hand, price) in {**stock, "POT": (10, 3500)}.items():
            services.inventory.set_stock(sku, on_hand, price)
        env = {"smtp__port": sink.port, "saga__style": style, "events__claim_after": 1.0}
        command = ["--queues", *QUEUES, "--concurrency", "8"]
        processes = [WorkerProcess(server.url, *command, app="jobs:registry", **env) for _ in range(2)]
        processes.append(EventsProcess(server.url, **env))
        refusals: list[str] = []
        lifted = threading.Event()
        try:
            producer = Producer(redis, settings, jobs.registry, services.orders)
            flow = Flow(redis, settings, services, producer, sink, OrderKeys())
            ids: list[str] = []
            refused_before = oom_errors(redis)
            for i, order in enumerate(mix(random.Random(7), n)):
                if i == n // 3:  # a third placed: Redis fills up while they are under way
                    threading.Thread(target=fill_for, args=(server.client(), FULL_FOR, lifted)).start()
                ids.append(place(producer, order, f"full-{style}-{i}", refusals))
                time.sleep(0.05)
            wait_until(lifted.is_set, timeout=30, message="Redis to take writes again")
            assert oom_errors(redis) > refused_before
            assert all(p.proc.poll() is None for p in processes), [p.output for p in processes]
            wait_until(lambda: _settled(flow, ids) == n, timeout=120, message="every order to settle")
            wait_until(lambda: summaries_settled(producer, ids), timeout=30, message="the read model")
            assert all(p.proc.poll() is None for p in processes), [p.output for p in processes]
        finally:
            for process in processes:
                process.stop()
        assert len(set(ids)) == n  # each placement once, whatever was refused on the way
        assert refusals and all("maxmemory" in r for r in refusals)
        report = flow.audit()
        print(f"\n{style}: {report.model_dump(exclude={'pending', 'needs_attention'})}", len(refusals))
        assert report.ok, report.violations
        assert not report.pending
        assert all("OutOfMemoryError" in p.output or "maxmemory" in p.output for p in processes[:2])
