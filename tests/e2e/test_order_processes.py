"""The order flow with real processes (workers, the events process), random faults, and a
worker killed mid-run, in both saga styles: the outcomes must agree order by order."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest
from redis import Redis

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.keys import OrderKeys
from producer import Producer
from tests.chaos.orderchaos import email_windows, explained_violations
from tests.flow import CATALOGUE, Flow, flow_settings, with_style
from tests.support import ChumonProcess, WorkerProcess, wait_until

pytestmark = pytest.mark.e2e
QUEUES = ["orders", "inventory", "payments", "shipping", "notifications"]


def mix(rng: random.Random, n: int) -> list[dict[str, Any]]:
    orders = []
    for i in range(n):
        roll = rng.random()
        order: dict[str, Any] = {
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


class EventsProcess(ChumonProcess):
    """``chumon events``: the projector, and the reactors in the choreographed style."""

    def __init__(self, redis_url: str, **settings: Any) -> None:
        super().__init__(redis_url, "events", **settings)


def run_mix(redis: Redis, redis_url: str, style: str, n: int = 100) -> tuple[list[tuple[str, str]], Any]:
    """Place the mix through real processes, kill a worker mid-run; return each order's outcome."""
    redis.flushdb()
    with SmtpSink(port=0, redis=redis, keys=OrderKeys()) as sink:
        settings = with_style(flow_settings(redis_url, sink.port), style)
        services = build_services(redis, settings)
        # plenty of TEA and MUG; only the POT's last units are contended
        stock = {sku: (100_000, price) for sku, (_, price) in CATALOGUE.items()}
        for sku, (on_hand, price) in {**stock, "POT": (10, 3500)}.items():
            services.inventory.set_stock(sku, on_hand, price)
        env = {
            "smtp__port": sink.port,
            "saga__style": style,
            "simulation__payment_fault_rate": 0.1,
            "simulation__carrier_fault_rate": 0.1,
            "simulation__gateway_timeout": 0.2,
            "events__claim_after": 1.0,
        }
        command = ["--queues", *QUEUES, "--concurrency", "8"]
        processes = [WorkerProcess(redis_url, *command, app="jobs:registry", **env) for _ in range(3)]
        processes.append(EventsProcess(redis_url, **env))
        try:
            producer = Producer(redis, settings, jobs.registry, services.orders)
            flow = Flow(redis, settings, services, producer, sink, OrderKeys())
            ids = [producer.place_order(**order).order_id for order in mix(random.Random(11), n)]
            wait_until(lambda: _settled(flow, ids) >= n // 4, timeout=60, message="a quarter of the orders")
            killed_at = time.time()
            processes[0].kill()  # mid-run: its jobs must be recovered by the others
            processes.append(WorkerProcess(redis_url, *command, app="jobs:registry", **env))
            wait_until(
                lambda: _settled(flow, ids) == n, timeout=120, message=f"every order to settle ({style})"
            )
            wait_until(
                lambda: all((s := producer.get_order_summary(i)) and s.status.value != "PENDING"
                            for i in ids),
                timeout=30, message="the read model to catch up",
            )  # fmt: skip
        finally:
            for process in processes:
                process.stop()
        outcomes = [(flow.order(i).status.value, _why(flow.order(i).reason)) for i in ids]
        report = flow.audit()
        windows = email_windows(flow, [killed_at])  # a duplicate email only from the kill, inside its window
        assert windows.unexplained == [], windows.unexplained
        return outcomes, report.model_copy(
            update={"violations": explained_violations(report.violations, windows)}
        )


def _why(reason: str | None) -> str:
    """The kind of reason (its details, like which SKU was short, are the same in both styles)."""
    return (reason or "").split(":")[0]


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


def test_both_styles_survive_faults_and_a_killed_worker_with_the_same_outcomes(
    redis: Redis, redis_url: str
) -> None:
    results = {style: run_mix(redis, redis_url, style) for style in ("orchestrated", "choreographed")}
    for style, (outcomes, report) in results.items():
        print(f"\n{style}: {dict(Counter(status for status, _ in outcomes))}; "
              f"{report.model_dump(exclude={'pending', 'needs_attention', 'by_status'})}")  # fmt: skip
        assert report.ok, (style, report.violations)
        assert not report.pending
    orchestrated, choreographed = results["orchestrated"][0], results["choreographed"][0]
    pot = [i for i, order in enumerate(mix(random.Random(11), 100)) if order["items"] == [("POT", 1)]]
    for style_outcomes in (orchestrated, choreographed):
        assert Counter(style_outcomes[i][0] for i in pot)["CONFIRMED"] == 10  # the last units: exactly 10 win
    differing = [i for i in range(100) if i not in pot and orchestrated[i] != choreographed[i]]
    assert differing == [], [(i, orchestrated[i], choreographed[i]) for i in differing]
