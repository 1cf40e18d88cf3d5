"""The checks of orders/audit.py for an all-CONFIRMED run, in one pass over each record kind.

orders.audit.audit() reads every charge and shipment again for each order, which is fine for
a test's hundred orders and takes hours for the benchmark's thousands. This is the
CONFIRMED half of it, counted once: per order exactly one successful charge, one arranged
shipment and one confirmation email (by Message-ID), status CONFIRMED; no refund, no
cancellation, no cancellation email; no stock left reserved, and committed stock equal to
the units ordered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from redis import Redis

from chumon.smtpsink import read_messages
from orders.inventory import Inventory
from orders.keys import OrderKeys
from orders.payments import SimulatedGateway
from orders.shipping import SimulatedCarrier
from workers.codec import text

LIMIT = 5  # problems of one kind listed before "and N more"


def audit_confirmed(
    redis: Redis,
    keys: OrderKeys,
    gateway: SimulatedGateway,
    carrier: SimulatedCarrier,
    order_ids: list[str],
    units: Mapping[str, int],
) -> list[str]:
    problems = _statuses(redis, keys, order_ids)
    charged = Counter(c.order_id for c in gateway.charges() if c.status == "succeeded")
    shipped = Counter(s.order_id for s in carrier.shipments() if s.status == "arranged")
    messages = read_messages(redis, keys)
    emailed = Counter(str(m.get("order_id")) for m in messages if m.get("kind") == "confirmation")
    problems += _per_order("successful charges", charged, order_ids)
    problems += _per_order("arranged shipments", shipped, order_ids)
    problems += _per_order("confirmation emails", emailed, order_ids)
    if len({m.get("message_id") for m in messages}) != len(messages):
        problems.append("the SMTP sink received a Message-ID twice")
    refunds, cancellations = len(gateway.refunds()), len(carrier.cancellations())
    if refunds or cancellations:
        problems.append(f"{refunds} refund(s) and {cancellations} shipment cancellation(s), expected none")
    for level in Inventory(redis, keys).levels():
        if level.reserved or level.committed != units.get(level.sku, 0):
            problems.append(
                f"stock {level.sku}: {level.reserved} reserved, {level.committed} committed; "
                f"expected 0 and {units.get(level.sku, 0)}"
            )
    return problems


def _statuses(redis: Redis, keys: OrderKeys, order_ids: list[str]) -> list[str]:
    with redis.pipeline(transaction=False) as pipe:
        for order_id in order_ids:
            pipe.hget(keys.order(order_id), "status")
        statuses = pipe.execute()
    found = {i: text(s) if s else "missing" for i, s in zip(order_ids, statuses, strict=True)}
    wrong = [f"{i}: {status}" for i, status in found.items() if status != "CONFIRMED"]
    return [f"{len(wrong)} order(s) not CONFIRMED: {wrong[:LIMIT]}"] if wrong else []


def _per_order(what: str, counts: Counter[str], order_ids: list[str]) -> list[str]:
    wrong = [f"{i}: {counts[i]}" for i in order_ids if counts[i] != 1]
    extra = set(counts) - set(order_ids)
    problems = [f"{len(wrong)} order(s) without exactly one of the {what}: {wrong[:LIMIT]}"] if wrong else []
    if extra:
        problems.append(f"{what} for orders never placed here: {sorted(extra)[:LIMIT]}")
    return problems
