"""The order flow with real worker processes, random faults, and a worker killed mid-run."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from redis import Redis

import jobs
import jobs.orders
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.keys import OrderKeys
from producer import Producer
from tests.flow import CATALOGUE, Flow, flow_settings
from tests.support import WorkerProcess, wait_until

pytestmark = pytest.mark.e2e
QUEUES = ["orders", "inventory", "payments", "shipping", "notifications"]


def mix(rng: random.Random, n: int) -> list[dict]:
    orders = []
    for i in range(n):
        roll = rng.random()
        order = {
            "customer_name": f"Customer {i}",
            "customer_email": f"c{i}@example.com",
            "items": [(rng.choice(["TEA", "MUG"]), rng.randint(1, 3))],
            "ship_to": f"{i} Test Street",
        }
        if roll < 0.15:
            order["items"] = [("POT", 1)]  # 10 in stock, contended
        elif roll < 0.22:
            order["payment_token"] = "tok_declined"
        elif roll < 0.29:
            order["ship_to"] = "1 Nowhere Lane"
        elif roll < 0.36:
            order["payment_token"] = "tok_transient_2"
        elif roll < 0.42:
            order["customer_email"] = f"tempfail-{i}@example.com"
        orders.append(order)
    return orders


def test_orders_survive_faults_and_a_killed_worker(redis: Redis, redis_url: str) -> None:
    with SmtpSink(port=0, redis=redis, keys=OrderKeys()) as sink:
        settings = flow_settings(redis_url, sink.port)
        services = build_services(redis, settings)
        for sku, (on_hand, price) in {**CATALOGUE, "POT": (10, 3500)}.items():
            services.inventory.set_stock(sku, on_hand, price)
        env = {
            "smtp__port": sink.port,
            "simulation__payment_fault_rate": 0.1,
            "simulation__carrier_fault_rate": 0.1,
            "simulation__gateway_timeout": 0.2,
        }
        command = ["--queues", *QUEUES, "--concurrency", "8"]
        workers = [WorkerProcess(redis_url, *command, app="jobs:registry", **env) for _ in range(3)]
        try:
            producer = Producer(redis, settings, jobs.registry, services.orders)
            flow = Flow(redis, settings, services, producer, sink, OrderKeys())
            ids = [producer.place_order(**order).order_id for order in mix(random.Random(11), 120)]
            wait_until(lambda: _settled(flow, ids) >= 30, timeout=60, message="a quarter of the orders")
            workers[0].kill()  # mid-run: its jobs must be recovered by the others
            workers.append(WorkerProcess(redis_url, "--queues", *QUEUES, app="jobs:registry", **env))
            wait_until(lambda: _settled(flow, ids) == len(ids), timeout=120, message="every order to settle")
        finally:
            for worker in workers:
                worker.stop()
        statuses = Counter(flow.order(i).status.value for i in ids)
        report = flow.audit()
        print(f"\n{dict(statuses)}; {report.model_dump(exclude={'pending', 'needs_attention'})}")
        assert report.ok, report.violations
        assert statuses["PENDING"] == 0 and statuses["CONFIRMED"] > 40
        assert services.inventory.levels("POT")[0].committed <= 10


def _settled(flow: Flow, ids: list[str]) -> int:
    done = 0
    for order_id in ids:
        order = flow.order(order_id)
        if order.attention or (
            order.status.value != "PENDING"
            and order.emails
            and (order.status.value == "CANCELLED" or order.saga.facts.get("inventory_committed"))
        ):
            done += 1
    return done
