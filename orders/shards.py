"""The order flow on Redis Cluster: orders sharded over ``CHUMON_SHARDS`` slot groups.

On one Redis there is one shard, the untagged keys, and nothing here changes anything. On
Redis Cluster each shard is a group (``shard0``, ``shard5``...: ``workers.keys.shard_tags``,
names in evenly spaced slot ranges, so shards land on different primaries) that holds its
orders, their event stream, read model and job index, and its copy of every service queue
(``payments@shard5``). Placing an order and every saga transition therefore stay one script
in one slot, which enqueues the order's next jobs on its shard's queues. The stock is in a
slot of its own (``{stock}``): reserving, releasing and committing stock are separate calls
already, and placing reads the prices first.

An order's id names its shard (``shard5-<hex>``): every later call finds its keys from the id
alone. A request with an idempotency key lands on the shard the key picks, so a retry meets
its first order; one without, on a random shard.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from redis import Redis
from redis.client import Pipeline

from orders.keys import OrderKeys
from orders.messages import new_id
from orders.model import Order, OrderStatus
from orders.projection import OrderSummary
from orders.readmodel import ReadModel
from orders.saga import Outgoing, SagaState, Transition
from orders.store import Loaded, OrderStore, Placed, Router
from workers import Enqueuer
from workers.keys import shard_tags

SEPARATOR = "-"
T = TypeVar("T")


class Shards:
    """The shards of the order flow: ``count`` on Redis Cluster, or one (None) on one Redis."""

    def __init__(self, prefix: str, count: int | None) -> None:
        self.tags: tuple[str | None, ...] = shard_tags(count) if count else (None,)
        self._keys = {tag: OrderKeys(prefix, tag) for tag in self.tags}

    @property
    def sharded(self) -> bool:
        return self.tags[0] is not None

    def all(self) -> list[OrderKeys]:
        return list(self._keys.values())

    def tag_of(self, order_id: str) -> str | None:
        """The shard ``order_id`` names (the first shard's for an id that names none: a lookup
        of it finds nothing there)."""
        if not self.sharded:
            return None
        tag = order_id.partition(SEPARATOR)[0]
        return tag if tag in self._keys else self.tags[0]

    def of(self, order_id: str) -> OrderKeys:
        return self._keys[self.tag_of(order_id)]

    def new_order_id(self, key: str | None = None) -> str:
        """A new order's id: on Redis Cluster, in the shard ``key`` picks (a random one for None)."""
        if not self.sharded:
            return new_id()
        tags = self.tags
        index = zlib.crc32(key.encode()) % len(tags) if key is not None else random.randrange(len(tags))
        return f"{tags[index]}{SEPARATOR}{new_id()}"


class ShardedStore:
    """``OrderStore``'s calls, each sent to the store of the order's shard."""

    def __init__(self, redis: Redis, shards: Shards, enqueuer: Enqueuer, route: Router) -> None:
        self.redis = redis
        self.shards = shards
        self.enqueuer = enqueuer
        self.route = route
        self.stores = {keys.shard: OrderStore(redis, keys, enqueuer, route) for keys in shards.all()}
        self.keys = shards.all()[0]  # the stock's keys are the same in every shard's

    def of(self, order_id: str) -> OrderStore:
        return self.stores[self.shards.tag_of(order_id)]

    def new_order_id(self, key: str | None = None) -> str:
        return self.shards.new_order_id(key)

    def settle(self, order_id: str) -> None:
        self.of(order_id).settle(order_id)

    def load(self, order_id: str) -> Loaded | None:
        return self.of(order_id).load(order_id)

    def read_many(self, order_ids: Iterable[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for tag, ids in _by_shard(self.shards, order_ids, lambda order_id: order_id).items():
            found.update(self.stores[tag].read_many(ids))
        return found

    def parse(self, order_id: str, raw: list[Any]) -> Loaded | None:
        return self.of(order_id).parse(order_id, raw)

    def place(self, order: Order, saga: SagaState, outgoing: list[Outgoing], **kwargs: Any) -> Placed:
        return self.of(order.id).place(order, saga, outgoing, **kwargs)

    def overdue(self, now: float, *, limit: int = 100) -> list[str]:
        found: list[str] = []
        for store in self.stores.values():
            found += store.overdue(now, limit=limit)
        return found[:limit]

    def commit(self, loaded: Loaded, transition: Transition, now: float) -> bool:
        return self.of(transition.order.id).commit(loaded, transition, now)

    def commit_many(self, commits: list[tuple[Loaded, Transition]], now: float) -> list[bool]:
        results: list[bool] = [False] * len(commits)
        groups = _by_shard(self.shards, range(len(commits)), lambda i: commits[i][1].order.id)
        for tag, positions in groups.items():
            done = self.stores[tag].commit_many([commits[i] for i in positions], now)
            for i, ok in zip(positions, done, strict=True):
                results[i] = ok
        return results

    def payment_method(self, order_id: str) -> str | None:
        return self.of(order_id).payment_method(order_id)

    def send(self, outgoing: list[Outgoing], *, dedupe: str, now: float) -> None:
        self.index(self.send_many([(dedupe, outgoing)], now=now))

    def send_many(self, sends: list[tuple[str, list[Outgoing]]], *, now: float) -> dict[str, list[str]]:
        by_order: dict[str, list[str]] = {}
        groups = _by_shard(self.shards, sends, lambda send: _order_of(send[1]))
        for tag, group in groups.items():
            for order_id, ids in self.stores[tag].send_many(group, now=now).items():
                by_order.setdefault(order_id, []).extend(ids)
        return by_order

    def index(self, jobs_by_order: dict[str, list[str]], *, pipe: Pipeline | None = None) -> None:
        for tag, order_ids in _by_shard(self.shards, jobs_by_order, lambda order_id: order_id).items():
            self.stores[tag].index({order_id: jobs_by_order[order_id] for order_id in order_ids}, pipe=pipe)


def _order_of(outgoing: list[Outgoing]) -> str:
    for out in outgoing:
        order_id = getattr(out.command, "order_id", None)
        if isinstance(order_id, str):
            return order_id
    return ""


def _by_shard(shards: Shards, items: Iterable[T], order_of: Callable[[T], str]) -> dict[str | None, list[T]]:
    groups: dict[str | None, list[T]] = {}
    for item in items:
        groups.setdefault(shards.tag_of(order_of(item)), []).append(item)
    return groups


class ShardedView:
    """``ReadModel``'s reads over every shard's read model: an order's from its shard; lists
    merged, newest first (each shard gives its newest ``limit``, the merge keeps ``limit``)."""

    def __init__(self, redis: Redis, shards: Shards) -> None:
        self.shards = shards
        self.views = {keys.shard: ReadModel(redis, keys) for keys in shards.all()}

    def get(self, order_id: str, *, gen: int | None = None) -> OrderSummary | None:
        return self.views[self.shards.tag_of(order_id)].get(order_id, gen=gen)

    def query(
        self, *, customer: str | None = None, status: OrderStatus | None = None, limit: int = 50
    ) -> list[OrderSummary]:
        found: list[OrderSummary] = []
        for view in self.views.values():
            found += view.query(customer=customer, status=status, limit=limit)
        found.sort(key=lambda summary: summary.placed_at, reverse=True)
        return found[:limit]

    def wait_for(self, order_id: str, **kwargs: Any) -> OrderSummary | None:
        return self.views[self.shards.tag_of(order_id)].wait_for(order_id, **kwargs)
