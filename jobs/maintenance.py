"""Periodic maintenance, run as jobs that rq-scheduler enqueues (``chumon scheduler``): both are
schedules of this registry, every 60 s (``chumon schedules list``).

- ``maintenance.release_stale_holds``: stock held longer than ``saga.reservation_hold`` for an
  order still in flight is given up through the saga (the step it waits for fails without
  an answer), so the usual compensations run: refund if charged, release the stock, cancel.
  Stock still held by an order whose saga has let go of it (cancelled, or compensated
  without its reservation: a reserve that landed late) is released, and the release recorded
  on the order; that of a confirmed order whose commit never happened is committed. An order
  whose release is under way, or that a person has been asked to look at, is left alone.
- ``maintenance.housekeeping``: dead-letter retention, trimming of rq's registries, trimming
  of the event log to ``events.retention_days`` (when set), and an alert (a log line; the
  exporter, ``chumon metrics``, shows the same as ``chumon_dead_letter_alert``) for every
  dead-letter queue longer than ``dlq_alert_threshold``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from pydantic import BaseModel
from redis import Redis

from orders.handlers import Services
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.saga import SagaStatus, Step
from workers import JobContext, JobRegistry, RetryPolicy
from workers.deadletter import DeadLetters
from workers.keys import Keys, dead_letter_queue
from workers.maintenance import Maintenance

registry = JobRegistry()
log = logging.getLogger("chumon.maintenance")
RETRY = RetryPolicy(max_attempts=3, base=5.0, factor=2.0, cap=60.0, jitter=0.2)


class NoArguments(BaseModel):
    pass


@registry.job("maintenance.release_stale_holds", queue="orders", retry=RETRY, result_ttl=3600)
def release_stale_holds(payload: NoArguments, ctx: JobContext) -> dict[str, int]:
    from jobs.orders import services

    s = services(ctx)
    stale = s.inventory.stale_holds(s.orders.saga_hold)
    outcomes = Counter(settle_stale_hold(s, order_id, ctx.job_id) for order_id in stale)
    if stale:
        log.info("stale stock holds: %d found: %s", len(stale), dict(outcomes))
    return {"stale": len(stale), **outcomes}


def settle_stale_hold(s: Services, order_id: str, cause: str) -> str:
    """What to do with stock ``order_id`` has held past its hold time; returns what was done."""
    loaded = s.orders.get(order_id)
    if loaded is None:  # no order at all: nothing can ever need this stock
        s.inventory.release(order_id)
        return "released"
    saga, order = loaded.saga, loaded.order
    if saga.status is SagaStatus.RUNNING:
        return "given_up" if s.orders.hold_expired(order_id, s.orders.saga_hold, cause=cause) else "left"
    if order.status is OrderStatus.CONFIRMED:
        s.inventory.commit(order_id)
        s.orders.inventory_committed(order_id, cause=cause)
        return "committed"
    releasing = saga.compensating is Step.RESERVE or Step.RESERVE in saga.pending_compensations
    if releasing or saga.status is SagaStatus.NEEDS_ATTENTION:
        log.warning("order %s holds stock past its hold time; its release is under way or flagged", order_id)
        return "left"
    if s.inventory.release(order_id) == "released":
        s.orders.stale_hold_released(order_id, cause=cause)
    return "released"


@registry.job("maintenance.housekeeping", queue="orders", retry=RETRY, result_ttl=3600)
def housekeeping(payload: NoArguments, ctx: JobContext) -> dict[str, object]:
    from chumon.settings import load

    settings = load()
    keys = Keys(settings.key_prefix)
    dead = DeadLetters(ctx.redis, settings)
    now = time.time()
    ran = Maintenance(ctx.redis, keys, dead, f"scheduler-job-{ctx.job_id}", log).run(now)
    trimmed = trim_events(ctx.redis, OrderKeys(settings.key_prefix), settings.events.retention_days, now)
    alerts = {}
    for origin in dead.origins():
        depth = dead.count(origin)
        if depth > settings.dlq_alert_threshold:
            alerts[dead_letter_queue(origin)] = depth
            log.warning(
                "ALERT dead-letter queue %s holds %d jobs (threshold %d): triage with "
                "`chumon dlq list --queue %s`",
                dead_letter_queue(origin), depth, settings.dlq_alert_threshold, origin,
            )  # fmt: skip
    return {"retention_ran": ran, "events_trimmed": trimmed, "alerts": alerts}


registry.schedule("release-stale-holds", release_stale_holds, every=60)
registry.schedule("housekeeping", housekeeping, every=60)


def trim_events(redis: Redis, keys: OrderKeys, retention_days: float | None, now: float) -> int:
    """Drop events older than the retention (stream ids begin with their time in ms).

    Replay, and so ``chumon projections rebuild``, reaches back only as far as the log does:
    a rebuild carries the summaries of orders whose history was trimmed over from the view it
    replaces (orders/projector.py).
    """
    if retention_days is None:
        return 0
    cutoff_ms = int((now - retention_days * 86400) * 1000)
    trimmed = int(redis.xtrim(keys.events, minid=f"{cutoff_ms}-0", approximate=False))
    if trimmed:
        log.info("event log: %d event(s) older than %g day(s) trimmed", trimmed, retention_days)
    return trimmed
