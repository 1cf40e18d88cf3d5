"""Wiring the order flow: the one place that picks the implementations of every Protocol."""

from __future__ import annotations

from redis import Redis

from chumon.settings import Settings
from orders.bus import EventBus
from orders.choreography import Choreography
from orders.handlers import Services
from orders.inventory import Inventory
from orders.keys import OrderKeys
from orders.metrics import process_saga_metrics
from orders.notifications import SmtpMailer
from orders.payments import SimulatedGateway
from orders.saga import Saga
from orders.service import OrderService
from orders.shipping import SimulatedCarrier
from orders.simulation import SlowInventory
from orders.store import OrderStore
from workers import Enqueuer
from workers.connection import ORDERS_ON_CLUSTER, is_cluster
from workers.errors import ServerUnsupported


def order_service(redis: Redis, settings: Settings) -> OrderService:
    from jobs.orders import route

    if is_cluster(redis):  # its scripts span an order, its stock and its events: not sharded yet
        raise ServerUnsupported(f"REDIS_URL is a Redis Cluster: {ORDERS_ON_CLUSTER}")
    keys = OrderKeys(settings.key_prefix)
    store = OrderStore(redis, keys, Enqueuer(redis, settings), route)
    flow = Choreography if settings.saga.style == "choreographed" else Saga
    bus = EventBus()
    process_saga_metrics().subscribe(bus)
    return OrderService(
        store,
        flow(settings.saga.step_timeout, settings.saga.stall_after),
        currency=settings.saga.currency,
        idempotency_ttl=settings.idempotency_ttl,
        saga_hold=settings.saga.reservation_hold,
        payment_ttl=settings.saga.payment_method_ttl,
        smtputf8=settings.smtp.smtputf8,
        bus=bus,
    )


def inventory(redis: Redis, settings: Settings) -> Inventory:
    """The inventory; slowed down as configured when the simulation asks for it (tests, demo)."""
    keys, sim = OrderKeys(settings.key_prefix), settings.simulation
    slow = (sim.request_latency.reserve, sim.request_latency.release, sim.response_latency.reserve,
            sim.response_latency.release)  # fmt: skip
    if any(slow):
        return SlowInventory(redis, keys, sim.request_latency, sim.response_latency)
    return Inventory(redis, keys)


def build_services(redis: Redis, settings: Settings) -> Services:
    keys = OrderKeys(settings.key_prefix)
    return Services(
        orders=order_service(redis, settings),
        inventory=inventory(redis, settings),
        payments=SimulatedGateway(redis, keys, settings.simulation),
        carrier=SimulatedCarrier(redis, keys, settings.simulation),
        mailer=SmtpMailer(settings.smtp),
        message_id_domain=settings.smtp.message_id_domain,
    )
