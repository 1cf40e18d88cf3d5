"""The write side: orders and their saga state in Redis, changed only by atomic scripts.

An order lives in one hash (``OrderKeys.order``): ``doc`` (the order), ``saga`` (its saga
state), ``version`` (how many events it has), ``status``. Reading it is one HMGET; every
change is one script call (``orders/lua/place.lua``, ``orders/lua/transition.lua``) that
writes the new state, appends its events to the event stream and enqueues the commands it
sends, or writes nothing at all. Each call declares in KEYS every key it may touch (Redis
Cluster, Dragonfly and ACL key patterns need it: tests/integration/test_declared_keys.py).
With ``CHUMON_REDIS__REPLICAS_ACK`` set, a change counts only once replicas hold it
(``NotReplicated`` otherwise; workers/durability.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.client import Pipeline

from orders.commands import CheckStepTimeout, Command
from orders.errors import CorruptOrder, IdempotencyConflict, OrderTooLarge, UnknownSku
from orders.events import OrderPlaced, to_fields
from orders.keys import OrderKeys
from orders.messages import new_id
from orders.model import Order
from orders.money import MAX_AMOUNT
from orders.saga import Outgoing, SagaState, Transition
from orders.scripts import order_scripts
from workers import EnqueueOptions, Enqueuer, JobType
from workers.codec import readable, text, texts
from workers.durability import Durability
from workers.keys import sharded_queue

LOADED_FIELDS = ["doc", "saga", "version"]
Router = Callable[[type[Command]], JobType[Any]]
"""Which job type carries a kind of command (defined by the job adapters, jobs/orders.py)."""


@dataclass(slots=True)
class Loaded:
    order: Order
    saga: SagaState
    version: int


@dataclass(frozen=True, slots=True)
class Placed:
    order_id: str
    created: bool


class UnknownOrder(LookupError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {order_id!r}")
        self.order_id = order_id


class OrderStore:
    def __init__(self, redis: Redis, keys: OrderKeys, enqueuer: Enqueuer, route: Router) -> None:
        self.redis = redis
        self.keys = keys
        self.enqueuer = enqueuer
        self.route = route
        self._scripts = order_scripts(redis, keys.lua_keyspace)
        # the fence of this store's slot: on Redis Cluster, its shard's (orders/shards.py)
        self.durability = (
            enqueuer.durability
            if keys.shard is None
            else Durability(enqueuer.settings.redis, keys.runtime.replication_fence)
        )
        # the order's job index lives as long as its longest-kept job (a dead letter)
        self.index_ttl = max(int(enqueuer.settings.dlq_retention), 1)

    def new_order_id(self, key: str | None = None) -> str:
        """A new order's id (orders/shards.py places it by ``key`` on Redis Cluster)."""
        return new_id()

    def settle(self, order_id: str) -> None:
        """Wait until what was written of ``order_id`` so far is replicated (with waiting on)."""
        self.durability.settle(self.redis)

    def load(self, order_id: str) -> Loaded | None:
        """The order and its saga; None if there is none; CorruptOrder if its record cannot be read."""
        return self.parse(order_id, self.redis.hmget(self.keys.order(order_id), LOADED_FIELDS))

    def read_many(self, order_ids: Iterable[str]) -> dict[str, list[Any]]:
        """Several orders' records as stored, in one round trip (``parse`` reads one)."""
        ids = list(dict.fromkeys(order_ids))
        if not ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hmget(self.keys.order(order_id), LOADED_FIELDS)
            return dict(zip(ids, pipe.execute(), strict=True))

    def parse(self, order_id: str, raw: list[Any]) -> Loaded | None:
        """An order's record (``doc``, ``saga``, ``version`` as read) read into its models."""
        doc, saga, version = raw
        if doc is None or saga is None or version is None:
            return None
        try:
            return Loaded(Order.model_validate_json(doc), SagaState.model_validate_json(saga), int(version))
        except (ValidationError, ValueError) as exc:
            raise CorruptOrder(order_id, str(exc).replace("\n", "; ")) from None

    def place(
        self,
        order: Order,
        saga: SagaState,
        outgoing: list[Outgoing],
        *,
        idempotency: tuple[str, str, str] | None,
        idempotency_ttl: int,
        payment_token: str,
        now: float,
        payment_ttl: int = 86_400,
    ) -> Placed:
        """Store ``order`` (lines unpriced) and start its saga.

        ``idempotency`` is (scope, key, fingerprint of the request). Raises UnknownSku,
        OrderTooLarge or IdempotencyConflict, and then nothing is written.
        """
        event = OrderPlaced(
            order_id=order.id, correlation_id=order.correlation_id, at=now, order={}, sequence=1
        )
        fields = to_fields(event)
        jobs = [self._job(out, now) for out in outgoing]
        plan: dict[str, Any] = {
            "order_id": order.id,
            "now": now,
            "doc": order.model_dump_json(),
            "saga": saga.model_dump_json(),
            "deadline": saga.deadline,
            "max_total": MAX_AMOUNT,
            "event": fields[: fields.index("data")],
            "jobs": jobs,
            "index_ttl": self.index_ttl,
            "payment_method": {"token": payment_token, "ttl": payment_ttl},
        }
        keys = self._order_keys(order.id)
        if idempotency is not None:
            scope, key, fingerprint = idempotency
            keys.append(self.keys.order_idempotency(scope, key))
            plan["idempotency"] = {"fingerprint": fingerprint, "ttl": idempotency_ttl}
        if self.keys.shard is None:
            keys += [self.keys.stock(line.sku) for line in order.lines]
        else:  # on Redis Cluster the stock is in a slot of its own: its prices are read first
            plan["prices"] = self._prices([line.sku for line in order.lines])
        keys += self._job_keys(jobs)
        run = self._scripts.run
        reply = self.durability.write(self.redis, lambda client: run("place", plan, client, keys))
        outcome, values = text(reply[0]), texts(reply[1:])
        if outcome == "unknown_sku":
            raise UnknownSku(values[0])
        if outcome == "too_large":
            total = sum(int(price) * line.quantity for price, line in zip(values, order.lines, strict=True))
            raise OrderTooLarge(total, MAX_AMOUNT)
        if outcome == "conflict":
            assert idempotency is not None
            raise IdempotencyConflict(idempotency[1])
        if outcome == "bad_price":
            raise ValueError(f"SKU {values[0]!r}: its catalogue price is not a whole amount: {values[1]!r}")
        return Placed(values[0], created=outcome == "placed")

    def _prices(self, skus: list[str]) -> list[str]:
        """The catalogue price of each SKU as stored (for place.lua to check); UnknownSku for one
        without a price, before anything is written."""
        with self.redis.pipeline(transaction=False) as pipe:
            for sku in skus:
                pipe.hget(self.keys.stock(sku), "price")
            found = pipe.execute(raise_on_error=False)
        prices = []
        for sku, price in zip(skus, found, strict=True):
            if isinstance(price, Exception):  # Redis's trouble (a failover under way), not the SKU's
                raise price
            if not isinstance(price, bytes | str):
                raise UnknownSku(sku)
            prices.append(text(price))
        return prices

    def overdue(self, now: float, *, limit: int = 100) -> list[str]:
        """Orders whose saga deadline has passed, oldest deadline first."""
        return texts(self.redis.zrangebyscore(self.keys.saga_deadlines, "-inf", now, start=0, num=limit))

    def commit(self, loaded: Loaded, transition: Transition, now: float) -> bool:
        """Commit ``transition`` if the order is still at ``loaded.version``; False if it moved on."""
        plan, keys = self._transition_call(loaded, transition, now)
        run = self._scripts.run
        return bool(self.durability.write(self.redis, lambda client: run("transition", plan, client, keys)))

    def commit_many(self, commits: list[tuple[Loaded, Transition]], now: float) -> list[bool]:
        """``commit`` for several orders' transitions in one round trip (one pipeline, not a
        MULTI: each commit is its own script call, atomic on its own, and each is checked
        against its own version). Returns each one's outcome, in order; with waiting for
        replicas on, one wait covers them all."""
        if not commits:
            return []
        calls = [self._transition_call(loaded, transition, now) for loaded, transition in commits]
        run = self._scripts.run

        def send(pipe: Pipeline) -> None:
            for plan, keys in calls:
                run("transition", plan, pipe, keys)

        return [bool(reply) for reply in self.durability.write_all(self.redis, send)]

    def _transition_call(
        self, loaded: Loaded, transition: Transition, now: float
    ) -> tuple[dict[str, Any], list[str]]:
        """The transition script's plan and keys for committing ``transition`` on ``loaded``."""
        if not transition.events:
            raise ValueError("a transition without events records nothing")
        version = loaded.version
        fields = []
        for offset, event in enumerate(transition.events, start=1):
            fields.append(to_fields(event.model_copy(update={"sequence": version + offset})))
        jobs = [self._job(out, now) for out in transition.outgoing]
        timeout_queue = self.route(CheckStepTimeout).queue
        if self.keys.shard is not None:
            timeout_queue = sharded_queue(timeout_queue, self.keys.shard)
        plan = {
            "order_id": transition.order.id,
            "now": now,
            "expected": version,
            "doc": transition.order.model_dump_json(),
            "saga": transition.saga.model_dump_json(),
            "status": transition.order.status.value,
            "deadline": transition.saga.deadline,
            "events": fields,
            "jobs": jobs,
            "index_ttl": self.index_ttl,
            "cancel": [[timeout_queue, job_id] for job_id in transition.cancel_jobs],
            "forget_payment_method": not transition.saga.may_charge,
        }
        order_id, runtime = transition.order.id, self.keys.runtime
        keys = [
            self.keys.order(order_id), self.keys.saga_deadlines, self.keys.payment_method(order_id),
            self.keys.events, self.keys.order_jobs(order_id),
        ]  # fmt: skip
        for job_id in transition.cancel_jobs:
            keys += [runtime.scheduled(timeout_queue), runtime.job(job_id)]
        keys += self._job_keys(jobs)
        return plan, keys

    def payment_method(self, order_id: str) -> str | None:
        """The payment token place_order was given, while the charge step may still need it."""
        raw = self.redis.get(self.keys.payment_method(order_id))
        return readable(raw) if raw is not None else None

    def send(self, outgoing: list[Outgoing], *, dedupe: str, now: float) -> None:
        """Enqueue commands outside a transition (a choreographed service reacting to an event).

        ``dedupe`` (the event's id) makes each command an idempotent enqueue: a reaction
        repeated for a redelivered event enqueues nothing new.
        """
        self.index(self.send_many([(dedupe, outgoing)], now=now))

    def send_many(self, sends: list[tuple[str, list[Outgoing]]], *, now: float) -> dict[str, list[str]]:
        """``send`` for several events' reactions in one enqueue call; returns the jobs by order,
        for ``index`` (left to the caller, who may write it with its own commands).

        Each command keeps the enqueue key it would have alone (``<event id>.<n>``, n its
        place among its event's commands), so a redelivered event enqueues nothing new
        whichever batch it comes back in."""
        outgoing = [out for _, outs in sends for out in outs]
        specs = [
            self._job(out, now, dedupe=f"{dedupe}.{i}")
            for dedupe, outs in sends
            for i, out in enumerate(outs)
        ]
        ids = self.enqueuer.submit(specs) or [str(spec["id"]) for spec in specs]
        by_order: dict[str, list[str]] = {}
        for out, job_id in zip(outgoing, ids, strict=True):
            order_id = getattr(out.command, "order_id", None)
            if isinstance(order_id, str):
                by_order.setdefault(order_id, []).append(job_id)
        return by_order

    def index(self, jobs_by_order: dict[str, list[str]], *, pipe: Pipeline | None = None) -> None:
        """Add jobs to their orders' job index (place and transitions do it in their script).

        After the enqueue, not in it: the index only helps a trace find the jobs, so a crash in
        between costs the trace those jobs and nothing else. ``pipe``: queue the writes on the
        caller's pipeline (its errors are the caller's to judge) instead of sending them."""
        if not jobs_by_order:
            return
        if pipe is not None:
            self._index_into(pipe, jobs_by_order)
            return
        with self.redis.pipeline(transaction=False) as own:
            self._index_into(own, jobs_by_order)
            own.execute(raise_on_error=False)

    def _index_into(self, pipe: Pipeline, jobs_by_order: dict[str, list[str]]) -> None:
        for order_id, job_ids in jobs_by_order.items():
            pipe.sadd(self.keys.order_jobs(order_id), *job_ids)
            pipe.expire(self.keys.order_jobs(order_id), self.index_ttl)

    def _order_keys(self, order_id: str) -> list[str]:
        """KEYS[1..6] of place.lua: the order, its payment method, orders by time, saga deadlines,
        the event stream, the order's job index."""
        keys = self.keys
        return [
            keys.order(order_id), keys.payment_method(order_id), keys.orders_by_time, keys.saga_deadlines,
            keys.events, keys.order_jobs(order_id),
        ]  # fmt: skip

    def _job_keys(self, jobs: list[dict[str, Any]]) -> list[str]:
        """The keys enqueueing ``jobs`` may touch, each once."""
        runtime = self.keys.runtime
        return runtime.enqueue_batch_keys(jobs)

    def _job(self, out: Outgoing, now: float, *, dedupe: str | None = None) -> dict[str, Any]:
        job_type = self.route(type(out.command))
        queue = None if self.keys.shard is None else sharded_queue(job_type.queue, self.keys.shard)
        options = EnqueueOptions(delay=out.delay or None, idempotency_key=dedupe, queue=queue)
        return self.enqueuer.spec(job_type, out.command, options, job_id=out.job_id)
