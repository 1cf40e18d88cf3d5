"""What is stored where: no payment token outlives the charge, no email is part of a key name.

Both are checked the hard way: every key in Redis is listed, and every value of every type
(strings, hashes, lists, sets, sorted sets, streams: job data, orders, events, results, the
read model) is searched for the raw token.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from tests.flow import running_flow

TOKEN = "tok_transient_1"  # a test token that also fails once, so a retry handles it too
EMAIL = "Grace.Hopper@Example.com"


def everything(redis: Redis) -> dict[bytes, list[bytes]]:
    """Every key with every byte string it holds."""
    found: dict[bytes, list[bytes]] = {}
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key)
        values: list[Any]
        if kind == b"string":
            values = [redis.get(key)]
        elif kind == b"hash":
            values = [part for pair in redis.hgetall(key).items() for part in pair]
        elif kind == b"list":
            values = redis.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(redis.smembers(key))
        elif kind == b"zset":
            values = redis.zrange(key, 0, -1)
        elif kind == b"stream":
            values = [part for _id, fields in redis.xrange(key) for pair in fields.items() for part in pair]
        else:
            values = []
        found[key] = [v for v in values if isinstance(v, bytes)]
    return found


def holding(redis: Redis, needle: str) -> list[str]:
    return [key.decode(errors="replace") for key, values in everything(redis).items()
            if any(needle.encode() in value for value in values)]  # fmt: skip


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_the_payment_token_is_gone_once_the_charge_has_answered(
    redis: Redis, redis_url: str, style: str
) -> None:
    with running_flow(redis, redis_url, style=style) as flow:
        order_id = flow.place(("TEA", 1), payment_token=TOKEN, customer_email=EMAIL)
        order = flow.settled(order_id)
        assert order.status.value == "CONFIRMED"
        assert holding(redis, TOKEN) == []  # not in the order, its events, its jobs, their results
        loaded = flow.services.orders.get(order_id)
        assert loaded is not None and loaded.order.payment_hint == "tok_…nt_1"


def test_while_the_charge_may_run_the_token_is_in_one_key_with_an_expiry(
    redis: Redis, redis_url: str
) -> None:
    with running_flow(redis, redis_url, workers=0) as flow:  # nothing runs: the saga waits for its first step
        order_id = flow.place(("TEA", 1), payment_token=TOKEN)
        assert holding(redis, TOKEN) == [f"chumon:payment-method:{order_id}"]
        assert 0 < redis.ttl(f"chumon:payment-method:{order_id}") <= 86_400


def test_no_key_name_holds_an_email(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url) as flow:
        flow.settled(flow.place(("TEA", 1), customer_email=EMAIL))
        flow.settled(flow.place(("MUG", 1), customer_email=EMAIL, idempotency_key="checkout-1"))
        names = [key.decode(errors="replace").lower() for key in redis.scan_iter(count=1000)]
        assert names and not [name for name in names if "@" in name or "hopper" in name]
        assert [o.order_id for o in flow.producer.list_orders(customer=EMAIL)]  # the index still answers


def test_a_refusal_quoting_the_address_is_kept_masked(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(("TEA", 1), customer_email="bounce-grace@example.com")
        order = flow.settled(order_id)
        assert order.attention and "could not be delivered" in order.attention
        assert "bounce-grace@" not in order.attention and "b***@example.com" in order.attention
