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
from orders.shards import ShardedStore, Shards
from orders.shipping import SimulatedCarrier
from orders.simulation import SlowInventory
from orders.store import OrderStore
from workers import Enqueuer
from workers.connection import is_cluster


def order_service(redis: Redis, settings: Settings) -> OrderService:
    from jobs.orders import route

    enqueuer = Enqueuer(redis, settings)
    shards = order_shards(redis, settings)
    store: OrderStore | ShardedStore
    if shards.sharded:  # Redis Cluster: each order's calls go to its shard's store
        store = ShardedStore(redis, shards, enqueuer, route)
    else:
        store = OrderStore(redis, shards.all()[0], enqueuer, route)
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


def order_shards(redis: Redis, settings: Settings) -> Shards:
    """The order flow's shards: ``CHUMON_SHARDS`` on Redis Cluster, one on one Redis."""
    return Shards(settings.key_prefix, settings.shards if is_cluster(redis) else None)


def order_keys(redis: Redis, settings: Settings) -> OrderKeys:
    """Keys for what every shard shares: the stock, the simulated systems, the SMTP sink's records
    (on Redis Cluster, the first shard's keys, whose stock keys are every shard's)."""
    return order_shards(redis, settings).all()[0]


def inventory(redis: Redis, settings: Settings) -> Inventory:
    """The inventory; slowed down as configured when the simulation asks for it (tests, demo)."""
    keys, sim = order_keys(redis, settings), settings.simulation
    slow = (sim.request_latency.reserve, sim.request_latency.release, sim.response_latency.reserve,
            sim.response_latency.release)  # fmt: skip
    if any(slow):
        return SlowInventory(redis, keys, sim.request_latency, sim.response_latency)
    return Inventory(redis, keys)


def build_services(redis: Redis, settings: Settings) -> Services:
    keys = order_keys(redis, settings)
    return Services(
        orders=order_service(redis, settings),
        inventory=inventory(redis, settings),
        payments=SimulatedGateway(redis, keys, settings.simulation),
        carrier=SimulatedCarrier(redis, keys, settings.simulation),
        mailer=SmtpMailer(settings.smtp),
        message_id_domain=settings.smtp.message_id_domain,
    )
