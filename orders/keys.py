"""Every Redis key of the order domain, built from the same prefix as the runtime's keys.

The simulated payment gateway, carrier and the SMTP sink keep their state under ``sim:``
and ``smtp-sink:``: they stand in for external systems and are kept apart from the shop's
own data on purpose.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

from workers.keys import Keys
from workers.streams import Parking


def customer_digest(email: str) -> str:
    """The name a customer's email takes in key names: a SHA-256 of it, lower-cased (32 hex digits)."""
    return hashlib.sha256(email.lower().encode()).hexdigest()[:32]


STOCK_TAG = "stock"  # on Redis Cluster, every SKU's stock and every reservation share this slot


class OrderKeys:
    """The keys of the order domain: of every order on one Redis; on Redis Cluster, of one shard
    (``shard``, a group name from ``workers.keys.shard_tags``): its orders, their events, read
    model and job index, and its copy of the service queues (``runtime``) carry the shard's tag,
    and the stock (SKUs, reservations, holds) carries ``{stock}`` (orders/shards.py)."""

    def __init__(self, prefix: str = "chumon", shard: str | None = None) -> None:
        self.shard = shard
        self.runtime = Keys(prefix, shard)
        self.prefix = prefix
        self._p = prefix + ":" if shard is None else f"{prefix}:{{{shard}}}:"
        self._s = prefix + ":" if shard is None else f"{prefix}:{{{STOCK_TAG}}}:"  # the stock's
        self._x = prefix + ":"  # the simulated external systems': outside every shard

    # -- orders -------------------------------------------------------------------------------
    def order(self, order_id: str) -> str:
        """Hash: doc (the order, JSON), saga (the saga state, JSON), version, status."""
        return self._p + "order:" + order_id

    @property
    def orders_by_time(self) -> str:
        """Sorted set: order id -> time placed."""
        return self._p + "orders"

    def order_idempotency(self, scope: str, key: str) -> str:
        """Hash: order_id, fingerprint: what place_order's ``key`` created within ``scope`` (the
        customer's email, lower-cased: see OrderService.place). The scope is hashed, so any email
        gives a plain key."""
        digest = hashlib.sha256(scope.encode()).hexdigest()[:32]
        return f"{self._p}idem:order:{digest}:{key}"

    def order_jobs(self, order_id: str) -> str:
        """Set of the ids of the jobs that carry the order's commands (orders/trace.py reads it)."""
        return self._p + "order-jobs:" + order_id

    def payment_method(self, order_id: str) -> str:
        """String: the payment token ``place_order`` was given, kept only until the charge step has
        answered (or the saga ended, or its TTL passed). Nothing else stores the token: the order,
        its events and the charge command carry a masked hint (see orders/model.py)."""
        return self._p + "payment-method:" + order_id

    @property
    def saga_deadlines(self) -> str:
        """Sorted set: order id -> when its saga must have made progress (only while it must)."""
        return self._p + "saga-deadlines"

    @property
    def events(self) -> str:
        """Stream of every domain event, in commit order."""
        return self._p + "events"

    def parked_events(self, group: str) -> str:
        """Stream: the entries consumer group ``group`` gave up on (its dead-letter stream)."""
        return f"{self._p}events-dlq:{group}"

    def replayed_events(self, group: str) -> str:
        """Stream: parked entries sent back to ``group`` by ``chumon events dlq retry``."""
        return f"{self._p}events-replay:{group}"

    def parking(self, group: str) -> Parking:
        """The dead-letter and replay streams of consumer group ``group``."""
        return Parking(parked=self.parked_events(group), replay=self.replayed_events(group))

    @property
    def parked_events_pattern(self) -> str:
        """Every consumer group's dead-letter stream (SCAN pattern)."""
        return f"{self._p}events-dlq:*"

    # -- the read model ------------------------------------------------------------------------
    @property
    def view_current(self) -> str:
        """The generation of the view that readers read (absent: 1)."""
        return self._p + "view:current"

    @property
    def view_generations(self) -> str:
        """Set of the generations the projector keeps up to date (current, and one being rebuilt)."""
        return self._p + "view:generations"

    @property
    def view_counter(self) -> str:
        return self._p + "view:counter"

    def view_order(self, gen: int, order_id: str) -> str:
        """Hash: doc (the OrderSummary, JSON), version (sequence of the last event applied)."""
        return f"{self._p}view:{gen}:order:{order_id}"

    def view_parked(self, gen: int, order_id: str) -> str:
        """Hash: sequence -> event, for events that arrived before their predecessors."""
        return f"{self._p}view:{gen}:parked:{order_id}"

    def view_history(self, gen: int, order_id: str) -> str:
        """Hash: sequence -> event, every event applied since the order's first unreadable one
        (kept only while one is unreadable, to fold the summary again once it can be read)."""
        return f"{self._p}view:{gen}:history:{order_id}"

    def view_all(self, gen: int) -> str:
        """Sorted set: order id -> time placed."""
        return f"{self._p}view:{gen}:all"

    def view_status(self, gen: int, status: str) -> str:
        return f"{self._p}view:{gen}:status:{status}"

    def view_customer(self, gen: int, email: str) -> str:
        """Sorted set: a customer's orders. The email is hashed (lower-cased): no address is part
        of a key name, where it would show in every key listing, SCAN and MONITOR."""
        return f"{self._p}view:{gen}:customer:{customer_digest(email)}"

    def view_pattern(self, gen: int) -> str:
        """Every key of one generation (for deleting a replaced generation with SCAN)."""
        return f"{self._p}view:{gen}:*"

    def view_changed(self, order_id: str) -> str:
        """Pub/Sub channel: "<version> <status>" whenever the order's summary changes."""
        return self._p + "view-changed:" + order_id

    # -- inventory ----------------------------------------------------------------------------
    def stock(self, sku: str) -> str:
        """Hash: on_hand, reserved, committed, price (minor units)."""
        return self._s + "stock:" + sku

    @property
    def holds(self) -> str:
        """Sorted set: order id -> time its reservation was held (only while held)."""
        return self._s + "holds"

    @property
    def skus(self) -> str:
        """Set of every SKU in the catalogue."""
        return self._s + "skus"

    def reservation(self, order_id: str) -> str:
        """Hash: state (reserved | released | committed | rejected), lines (JSON), shortage (JSON,
        when rejected), reserved_at (when held), updated_at."""
        return self._s + "reservation:" + order_id

    # -- simulated external systems -------------------------------------------------------------
    def sim(self, system: str, *parts: str) -> str:
        """State of a simulated external system (``payments``, ``carrier``): one slot per system
        (``{payments}``), since one script may race two of its records (orders/lua/put_first.lua)."""
        return self._x + "sim:{" + system + "}:" + ":".join(parts)

    def smtp_sink(self, *parts: str) -> str:
        return self._x + "smtp-sink:" + ":".join(parts)

    # -- for Lua ----------------------------------------------------------------------------------
    @cached_property
    def lua_keyspace(self) -> str:
        """The runtime's keyspace plus the order domain's prefixes (ARGV[1] of orders/lua scripts)."""
        space = json.loads(self.runtime.lua_keyspace)
        space.update(
            order=self._p + "order:",
            payment_method=self._p + "payment-method:",
            order_jobs=self._p + "order-jobs:",
            orders_by_time=self.orders_by_time,
            saga_deadlines=self.saga_deadlines,
            events=self.events,
            stock=self._s + "stock:",
            skus=self.skus,
            holds=self.holds,
            reservation=self._s + "reservation:",
        )
        return json.dumps(space, separators=(",", ":"))
