"""bench/orderfill.py: copies of settled orders are distinct orders, with every key and entry the
originals have, and an id shared by two orders refuses to be copied."""

import time

import fakeredis
import pytest

from bench import orderfill

O1, O2 = "a" * 31 + "1", "b" * 31 + "2"
J1, J2 = "c" * 31 + "1", "d" * 31 + "2"


def settled(redis: fakeredis.FakeRedis) -> None:
    """Two orders as the flow leaves them, in miniature: own keys, and entries in shared ones."""
    for n, (order, job) in enumerate(((O1, J1), (O2, J2))):
        redis.hset(
            f"chumon:order:{order}", mapping={"doc": f'{{"id":"{order}","charge":"ch_{"ef"[n] * 24}"}}'}
        )
        redis.sadd(f"chumon:order-jobs:{order}", job, f"{order}-timeout-charge_payment")
        redis.hset(f"rq:job:{job}", mapping={"data": f'["payments.charge",{{"order_id":"{order}"}}]'})
        redis.expire(f"rq:job:{job}", 500)
        redis.xadd(f"rq:results:{job}", {"return_value": "ok"})
        redis.zadd("chumon:orders", {order: time.time() - 10 + n})
        redis.zadd("rq:finished:payments", {job: time.time() + 500 + n})
        redis.xadd("chumon:events", {"type": "OrderPlaced", "order_id": order})
    redis.hset("chumon:stock:TEA", mapping={"on_hand": 5})  # no order's: left alone


def test_copies_are_new_orders_with_the_originals_keys_and_entries() -> None:
    redis = fakeredis.FakeRedis()
    settled(redis)
    recipes = orderfill.capture(redis, "chumon:orders")
    assert sorted(r.order_id for r in recipes) == [O1.encode(), O2.encode()]
    sample = orderfill.fill(redis, recipes, 5, batch=2, sample=5)

    orders = [m.decode() for m in redis.zrange("chumon:orders", 0, -1)]
    assert len(orders) == len(set(orders)) == 7
    assert redis.zcard("rq:finished:payments") == 7 and redis.xlen("chumon:events") == 7
    copies = [o for o in orders if o not in (O1, O2)]
    for order in copies:
        (job,) = [j.decode() for j in redis.smembers(f"chumon:order-jobs:{order}") if b"timeout" not in j]
        assert redis.sismember(f"chumon:order-jobs:{order}", f"{order}-timeout-charge_payment")
        assert order in redis.hget(f"chumon:order:{order}", "doc").decode()
        assert order in redis.hget(f"rq:job:{job}", "data").decode()
        ttl = orderfill.EXTRA_TTL + 500
        assert ttl - 60 < redis.ttl(f"rq:job:{job}") <= ttl and redis.ttl(f"chumon:order:{order}") == -1
        assert redis.xlen(f"rq:results:{job}") == 1
        expires = redis.zscore("rq:finished:payments", job)  # a time to come: moved with the TTL
        assert expires is not None and expires > time.time() + orderfill.EXTRA_TTL
    assert {f"chumon:order:{o}".encode() for o in copies} <= set(sample)
    assert redis.hget("chumon:stock:TEA", "on_hand") == b"5"
    assert len({redis.hget(f"chumon:order:{o}", "doc") for o in orders}) == 7  # the charge ids too
    placed = [redis.zscore("chumon:orders", o) for o in copies]  # a time past: moved, no further
    assert all(time.time() - 15 < t <= time.time() + 1 for t in placed)


def test_two_orders_sharing_an_id_cannot_be_copied() -> None:
    redis = fakeredis.FakeRedis()
    settled(redis)
    redis.sadd(f"chumon:order-jobs:{O2}", J1)  # O2 names O1's job: they would share it
    with pytest.raises(ValueError, match="share an id"):
        orderfill.capture(redis, "chumon:orders")
