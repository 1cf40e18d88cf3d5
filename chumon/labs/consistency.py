"""Eventual consistency: the read model right after a write, after waiting, and the write side.

An order is written on the write side (orders/store.py: the order's hash and its
``OrderPlaced`` event, in one script); the read model (orders/readmodel.py) learns of it
only when the projector (orders/projector.py, run by ``chumon consumers``) has applied the
event. A read right after the write may find nothing yet. Two ways close the gap:

- wait for the write's version: ``Producer.wait_for_order(order_id, version=...)``, woken by
  the projector's Pub/Sub notice (``chumon order place --wait`` waits the same way);
- read the write side instead: ``Producer.get_order`` (``chumon order show --consistent``).

The lab runs on a private Redis with the projector in a thread and no workers (each order
stays at its first event); every number is counted in the run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pydantic import BaseModel
from redis import Redis

from chumon.bootstrap import build_services
from chumon.settings import Settings
from orders.eventsproc import EventProcessors
from orders.keys import OrderKeys

HELP = "read-model lag right after a write, and how waiting or reading the write side closes it"


class Result(BaseModel):
    orders: int
    right_after_write_stale: int
    right_after_write_fresh: int
    after_wait_stale: int
    wait_ms_median: float
    wait_ms_max: float
    write_side_stale: int
    projector_applied: int


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders", type=int, default=50, help="orders per way of reading (default 50)")


def run(redis: Redis, prefix: str, args: argparse.Namespace) -> Result:
    import jobs
    from producer import Producer

    url = redis.connection_pool.connection_kwargs
    settings = Settings(redis_url=f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}")
    services = build_services(redis, settings)
    services.inventory.set_stock("TEA", 1_000_000, 450)
    producer = Producer(redis, settings, jobs.registry, services.orders)
    processors = EventProcessors(
        redis, OrderKeys(settings.key_prefix), services.orders, choreographed=False,
        step_timeout=settings.saga.step_timeout, claim_after=settings.events.claim_after,
        max_deliveries=settings.events.max_deliveries, watchdog_interval=3600.0,
    )  # fmt: skip
    processors.start()
    try:
        return measure(producer, args.orders, processors)
    finally:
        processors.stop()


def place(producer: object, i: int) -> str:
    order_id: str = producer.place_order(  # type: ignore[attr-defined]
        customer_name="Lab",
        customer_email=f"lab{i}@example.com",
        items=[("TEA", 1)],
        ship_to=f"{i} Lab Street",
    ).order_id
    return order_id


def measure(producer: object, n: int, processors: EventProcessors) -> Result:
    stale = 0
    for i in range(n):  # read the read model in the very next call after the write
        order_id = place(producer, i)
        summary = producer.get_order_summary(order_id)  # type: ignore[attr-defined]
        stale += summary is None
    waits, waited_stale = [], 0
    for i in range(n, 2 * n):  # wait for the write's version (1: OrderPlaced), woken by Pub/Sub
        order_id = place(producer, i)
        started = time.perf_counter()
        summary = producer.wait_for_order(order_id, version=1, timeout=30.0)  # type: ignore[attr-defined]
        waits.append((time.perf_counter() - started) * 1000)
        waited_stale += summary is None
    consistent_stale = 0
    for i in range(2 * n, 3 * n):  # read the write side
        order_id = place(producer, i)
        consistent_stale += producer.get_order(order_id) is None  # type: ignore[attr-defined]
    return Result(
        orders=n,
        right_after_write_stale=stale,
        right_after_write_fresh=n - stale,
        after_wait_stale=waited_stale,
        wait_ms_median=round(statistics.median(waits), 2) if waits else 0.0,
        wait_ms_max=round(max(waits), 2) if waits else 0.0,
        write_side_stale=consistent_stale,
        projector_applied=processors.projector.applied,
    )


def render(r: Result) -> str:
    return "\n".join([
        f"{r.orders} orders placed for each way of reading (projector running in a thread, no workers)",
        f"read model, right after the write:   {r.right_after_write_stale} of {r.orders} not there yet, "
        f"{r.right_after_write_fresh} there",
        f"read model, after waiting (--wait):  {r.after_wait_stale} of {r.orders} not there; "
        f"the wait took {r.wait_ms_median:g} ms (median), {r.wait_ms_max:g} ms (max): the lag",
        f"write side (--consistent):           {r.write_side_stale} of {r.orders} not there",
        f"events the projector applied in the run: {r.projector_applied}",
    ])  # fmt: skip
