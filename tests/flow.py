"""A running order flow for tests: settings, an SMTP sink, the services, workers, a producer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis

import jobs
import jobs.orders
from chumon.bootstrap import build_services, order_shards
from chumon.settings import Settings
from chumon.smtpsink import SmtpSink
from orders.audit import Audit, audit
from orders.config import SagaConfig, SimulationConfig, SmtpConfig
from orders.eventsproc import EventProcessors
from orders.handlers import Services
from orders.keys import OrderKeys
from orders.payments import SimulatedGateway
from orders.shipping import SimulatedCarrier
from orders.views import OrderDetails
from producer import Producer
from tests.support import FAST, wait_until, worker_thread
from workers.connection import is_cluster
from workers.crew import served_queues

QUEUES = ["orders", "inventory", "payments", "shipping", "notifications"]
CATALOGUE = {"TEA": (100, 450), "MUG": (100, 1299), "POT": (10, 3500)}


def flow_settings(redis_url: str, smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **FAST,
        "redis_url": redis_url,
        "smtp": SmtpConfig(port=smtp_port, timeout=5),
        "simulation": SimulationConfig(gateway_timeout=0.2, seed=7),
        "saga": SagaConfig(step_timeout=30),
    }
    if "smtp" in overrides:  # keep the sink's port
        overrides["smtp"] = overrides["smtp"].model_copy(update={"port": smtp_port})
    values.update(overrides)
    return Settings(**values)


@dataclass
class Flow:
    redis: Redis
    settings: Settings
    services: Services
    producer: Producer
    sink: SmtpSink
    keys: OrderKeys

    def place(self, *items: tuple[str, int], **fields: Any) -> str:
        fields.setdefault("customer_name", "Ada Lovelace")
        fields.setdefault("customer_email", "ada@example.com")
        fields.setdefault("ship_to", "12 Analytical Lane, London")
        return self.producer.place_order(items=list(items) or [("TEA", 2)], **fields).order_id

    def order(self, order_id: str) -> OrderDetails:
        details = self.producer.get_order(order_id)
        assert details is not None
        return details

    def settled(self, order_id: str, *, emails: bool = True, timeout: float = 20) -> OrderDetails:
        """Wait until the order is terminal and its after-effects (email, stock) are done."""

        def done() -> OrderDetails | None:
            order = self.order(order_id)
            if order.status.value == "PENDING" and not order.attention:
                return None
            if emails and not order.attention and not order.emails:
                return None
            if order.status.value == "CONFIRMED" and not order.saga.facts.get("inventory_committed"):
                return None
            return order

        return wait_until(done, timeout=timeout, message=f"order {order_id} to settle")

    def audit(self) -> Audit:
        gateway = self.services.payments
        carrier = self.services.carrier
        assert isinstance(gateway, SimulatedGateway) and isinstance(carrier, SimulatedCarrier)
        return audit(self.redis, self.keys, self.services.orders.store, gateway, carrier)

    def read_side_differences(self, order_ids: list[str]) -> list[str]:
        """Orders whose summary in the read model disagrees with the write side."""
        return read_side_differences(self.producer, order_ids)


def read_side_differences(producer: Producer, order_ids: list[str]) -> list[str]:
    differ = []
    for order_id in order_ids:
        order, summary = producer.get_order(order_id), producer.get_order_summary(order_id)
        wrote = order and (order.status.value, order.reason, order.attention, order.version)
        read = summary and (summary.status.value, summary.reason, summary.attention, summary.version)
        if wrote != read or (summary and summary.unreadable):
            differ.append(f"{order_id}: write side {wrote}, read side {read}")
    return differ


def with_style(settings: Settings, style: str) -> Settings:
    return settings.model_copy(update={"saga": settings.saga.model_copy(update={"style": style})})


@contextmanager
def running_flow(
    redis: Redis,
    redis_url: str,
    *,
    style: str = "orchestrated",
    workers: int = 1,
    concurrency: int = 8,
    **overrides: Any,
) -> Iterator[Flow]:
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink(port=0, redis=redis, keys=OrderKeys()))
        settings = with_style(flow_settings(redis_url, sink.port, **overrides), style)
        services = build_services(redis, settings)
        jobs.orders.configure(services)
        stack.callback(jobs.orders.configure, None)
        for sku, (on_hand, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, on_hand, price)
        shards = order_shards(redis, settings)  # one on one Redis; on a cluster, CHUMON_SHARDS
        groups = served_queues(
            QUEUES, {}, is_cluster(redis), sharded=jobs.registry.sharded, shards=settings.shards
        )  # one group on one Redis; on a cluster, one per shard (its copy of every queue)
        for _ in range(workers):
            for group in groups:
                stack.enter_context(
                    worker_thread(redis, jobs.registry, settings, queues=group, concurrency=concurrency)
                )
        processors = EventProcessors(
            redis,
            shards.all(),
            services.orders,
            choreographed=style == "choreographed",
            step_timeout=settings.saga.step_timeout,
            claim_after=1.0,
            max_deliveries=settings.events.max_deliveries,
            watchdog_interval=settings.saga.watchdog_interval,
        )
        processors.start()
        stack.callback(processors.stop)
        producer = Producer(redis, settings, jobs.registry, services.orders)
        yield Flow(redis, settings, services, producer, sink, shards.all()[0])
