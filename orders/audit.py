"""Checks the order flow's promises against what every party recorded.

For each order in a terminal state, counted from Redis (orders, stock, reservations), the
payment gateway's and the carrier's records, and the SMTP sink's inbox:

- CONFIRMED: one successful charge and no refund; one arranged shipment and no
  cancellation; the reservation committed; one confirmation email.
- CANCELLED: no net charge (every successful charge refunded); no shipment left arranged;
  no stock held; one cancellation email.

Emails are counted as the sink received them: every message, not distinct Message-IDs, so a
second copy of the same email (a retry after the crash window of docs/orders.md) is seen and
reported (``duplicate_emails``), never hidden by the id they share.
- An email the receiving server refused for good cannot arrive: the order must be flagged
  for a person instead.
- PENDING orders are reported as such (not yet terminal), flagged ones with their reason.

And for every SKU: no counter negative, and ``reserved`` equal to the units held by
reservations in state ``reserved``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, Field
from redis import Redis

from orders.inventory import Inventory
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.payments import SimulatedGateway
from orders.shards import ShardedStore
from orders.shipping import SimulatedCarrier
from orders.store import Loaded, OrderStore
from workers.codec import texts


class Audit(BaseModel):
    orders: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    needs_attention: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)
    charges: int = 0
    refunds: int = 0
    shipments: int = 0
    shipment_cancellations: int = 0
    emails_received: int = 0
    emails_unique: int = 0
    duplicate_emails: dict[str, int] = Field(
        default_factory=dict, description="'<order> <kind>' -> copies received, where more than one"
    )

    @property
    def ok(self) -> bool:
        return not self.violations


def sink_messages(redis: Redis, keys: OrderKeys) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis.lrange(keys.smtp_sink("messages"), 0, -1)]


def audit(
    redis: Redis,
    keys: OrderKeys,
    store: OrderStore | ShardedStore,
    gateway: SimulatedGateway,
    carrier: SimulatedCarrier,
) -> Audit:
    inventory = Inventory(redis, keys)
    every = store.shards.all() if isinstance(store, ShardedStore) else [keys]  # each shard's orders
    ids = [order_id for shard in every for order_id in texts(redis.zrange(shard.orders_by_time, 0, -1))]
    orders = [loaded for order_id in ids if (loaded := store.load(order_id)) is not None]
    emails: dict[tuple[str, str], list[str]] = defaultdict(list)
    messages = sink_messages(redis, keys)
    for message in messages:  # every message received: a second copy counts as a second email
        emails[(message.get("order_id") or "", message.get("kind") or "")].append(message["message_id"])
    report = Audit(
        orders=len(orders),
        by_status=dict(Counter(loaded.order.status.value for loaded in orders)),
        charges=sum(1 for ch in gateway.charges() if ch.status == "succeeded"),
        refunds=len(gateway.refunds()),
        shipments=sum(1 for sh in carrier.shipments() if sh.status == "arranged"),
        shipment_cancellations=len(carrier.cancellations()),
        emails_received=len(messages),
        emails_unique=len({m["message_id"] for m in messages}),
        duplicate_emails={f"{o} {k}": len(ids) for (o, k), ids in emails.items() if len(ids) > 1},
    )
    for loaded in orders:
        if loaded.order.attention:
            report.needs_attention.append(f"{loaded.order.id}: {loaded.order.attention}")
        if loaded.order.status is OrderStatus.PENDING:
            report.pending.append(loaded.order.id)
            continue
        report.violations += _check_order(loaded, inventory, gateway, carrier, emails)
    report.violations += _check_stock(inventory, [loaded.order.id for loaded in orders])
    return report


def _check_order(
    loaded: Loaded,
    inventory: Inventory,
    gateway: SimulatedGateway,
    carrier: SimulatedCarrier,
    emails: dict[tuple[str, str], list[str]],
) -> list[str]:
    order = loaded.order
    charged = sum(1 for ch in gateway.charges_for(order.id) if ch.status == "succeeded")
    refunded = len(gateway.refunds_for(order.id))
    shipped = sum(1 for sh in carrier.shipments_for(order.id) if sh.status == "arranged")
    unshipped = len(carrier.cancellations_for(order.id))
    reservation = inventory.reservation(order.id)
    held = reservation.state if reservation else None
    bounced = set(loaded.saga.facts.get("email_failures", {}))
    problems: list[str] = []

    def expect(condition: bool, what: str) -> None:
        if not condition:
            problems.append(f"{order.id} {order.status.value}: {what}")

    def one_email(kind: str) -> None:
        if kind in bounced:  # the receiver refused it for good: the order is flagged instead
            expect(bool(order.attention), f"{kind} email bounced but the order is not flagged")
        else:
            copies = len(emails[(order.id, kind)])
            expect(copies == 1, f"{kind} emails: {copies} received, want exactly 1")

    if order.status is OrderStatus.CONFIRMED:
        expect(charged == 1 and refunded == 0, f"{charged} charge(s), {refunded} refund(s); want 1 and 0")
        expect(shipped == 1 and unshipped == 0, f"{shipped} shipment(s), {unshipped} cancelled; want 1 and 0")
        expect(held == "committed", f"reservation {held}; want committed")
        one_email("confirmation")
    else:
        expect(charged == refunded, f"{charged} charge(s) but {refunded} refund(s): net charge")
        expect(shipped == unshipped, f"{shipped} shipment(s) but {unshipped} cancelled")
        expect(held != "reserved" and held != "committed", f"reservation still {held}")
        one_email("cancellation")
        expect(not emails[(order.id, "confirmation")], "a cancelled order got a confirmation email")
    return problems


def _check_stock(inventory: Inventory, order_ids: list[str]) -> list[str]:
    held: Counter[str] = Counter()
    for order_id in order_ids:
        reservation = inventory.reservation(order_id)
        if reservation is not None and reservation.state == "reserved":
            for line in reservation.lines:
                held[line.sku] += line.quantity
    problems = []
    for level in inventory.levels():
        if min(level.on_hand, level.reserved, level.committed, level.available) < 0:
            problems.append(f"stock {level.sku}: a counter is negative ({level})")
        if level.reserved != held[level.sku]:
            problems.append(
                f"stock {level.sku}: reserved {level.reserved} but reservations hold {held[level.sku]}"
            )
    return problems
