"""Inventory against a real Redis: its Lua, its atomicity under concurrent orders."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from orders.inventory import Inventory, ReservationState, Shortage, StockLine
from orders.keys import OrderKeys

KEYS = OrderKeys()
T = TypeVar("T")


@pytest.fixture
def inv(redis: Redis) -> Inventory:
    return Inventory(redis, KEYS)


def snapshot(r: Redis) -> dict:
    return {key: r.dump(key) for key in r.keys("*")}


def level(inv: Inventory, sku: str) -> tuple[int, int, int, int]:
    (stock,) = inv.levels(sku)
    return stock.on_hand, stock.reserved, stock.committed, stock.available


def all_at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run every call in its own thread, released together, and return their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


# -- the scripts on a real server -------------------------------------------------------------------
def test_an_order_lifecycle(redis, inv) -> None:
    inv.set_stock("A", 5, price=1999)
    inv.set_stock("B", 2, price=500)
    held = inv.reserve("o-1", [("A", 2), ("B", 1), ("A", 1)])
    assert held.state is ReservationState.RESERVED
    assert held.lines == [StockLine(sku="A", quantity=3), StockLine(sku="B", quantity=1)]
    assert level(inv, "A") == (5, 3, 0, 2)
    assert inv.commit("o-1") == "committed"
    assert level(inv, "A") == (2, 0, 3, 2)
    assert level(inv, "B") == (1, 0, 1, 1)
    record = inv.reservation("o-1")
    assert record is not None and record.state is ReservationState.COMMITTED and record.reserved_at


def test_one_short_line_holds_nothing(redis, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 1, price=100)
    result = inv.reserve("o-1", [("A", 5), ("B", 2), ("C", 1)])
    assert result.state is ReservationState.REJECTED
    assert result.shortage == [
        Shortage(sku="B", requested=2, available=1),
        Shortage(sku="C", requested=1, available=0),
    ]
    assert level(inv, "A") == (5, 0, 0, 5)
    assert level(inv, "B") == (1, 0, 0, 1)


def test_every_call_is_idempotent(redis, inv) -> None:
    inv.set_stock("A", 4, price=100)
    inv.set_stock("B", 4, price=100)
    assert inv.reserve("o-1", [("A", 3)]).ok
    assert inv.reserve("o-2", [("B", 3)]).ok
    assert not inv.reserve("o-3", [("A", 2)]).ok
    assert inv.commit("o-1") == "committed"
    assert inv.release("o-2") == "released"
    before = snapshot(redis)
    assert inv.reserve("o-1", [("A", 3)]).state == "committed"
    assert inv.reserve("o-3", [("A", 1)]).state == "rejected"
    assert [inv.commit("o-1"), inv.release("o-1")] == ["committed", "committed"]
    assert [inv.release("o-2"), inv.commit("o-2")] == ["released", "released"]
    assert [inv.release("o-3"), inv.commit("o-3")] == ["rejected", "rejected"]
    assert snapshot(redis) == before
    assert level(inv, "A") == (1, 0, 3, 1)
    assert level(inv, "B") == (4, 0, 0, 4)


def test_a_rejection_stays_rejected_after_a_restock(inv) -> None:
    inv.set_stock("A", 0, price=100)
    assert not inv.reserve("o-1", [("A", 1)]).ok
    inv.set_stock("A", 50)
    assert inv.reserve("o-1", [("A", 1)]).shortage == [Shortage(sku="A", requested=1, available=0)]
    assert level(inv, "A") == (50, 0, 0, 50)


def test_set_stock_refusals_write_nothing(redis, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.reserve("o-1", [("A", 4)])
    before = snapshot(redis)
    with pytest.raises(ValueError, match="'A' to 3: 4 units are reserved"):
        inv.set_stock("A", 3, price=1)
    with pytest.raises(ValueError, match="'B' is new and has no price"):
        inv.set_stock("B", 3)
    with pytest.raises(ValueError, match="on_hand of SKU 'A'"):
        inv.set_stock("A", -1)
    assert snapshot(redis) == before


def test_bad_stock_data_fails_before_anything_is_written(redis, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 5, price=100)
    inv.reserve("o-1", [("A", 1), ("B", 1)])
    redis.hset(KEYS.stock("B"), "on_hand", "1.5")
    before = snapshot(redis)
    with pytest.raises(ResponseError, match="SKU B: on_hand is not an integer"):
        inv.reserve("o-2", [("A", 1), ("B", 1)])
    with pytest.raises(ResponseError, match="SKU B: on_hand is not an integer"):
        inv.commit("o-1")
    assert snapshot(redis) == before


# -- concurrency --------------------------------------------------------------------------------------
def test_fifty_orders_race_for_ten_units(redis, inv) -> None:
    inv.set_stock("LAST", 10, price=100)
    orders = [f"o-{i}" for i in range(50)]
    results = all_at_once([lambda o=o: inv.reserve(o, [("LAST", 1)]) for o in orders])
    won = [o for o, result in zip(orders, results, strict=True) if result.ok]
    assert len(won) == 10
    assert sum(result.state is ReservationState.REJECTED for result in results) == 40
    assert level(inv, "LAST") == (10, 10, 0, 0)

    assert all_at_once([lambda o=o: inv.commit(o) for o in won]) == ["committed"] * 10
    assert level(inv, "LAST") == (0, 0, 10, 0)
    assert {inv.commit(o) for o in orders} == {"committed", "rejected"}
    assert level(inv, "LAST") == (0, 0, 10, 0)


def test_racing_retries_of_one_order_hold_its_units_once(inv) -> None:
    inv.set_stock("A", 10, price=100)
    results = all_at_once([lambda: inv.reserve("o-1", [("A", 3)]) for _ in range(20)])
    assert {result.state for result in results} == {ReservationState.RESERVED}
    assert level(inv, "A") == (10, 3, 0, 7)
    assert all_at_once([lambda: inv.release("o-1") for _ in range(20)]) == ["released"] * 20
    assert level(inv, "A") == (10, 0, 0, 10)


def test_a_mixed_concurrent_workload_keeps_the_counts_consistent(inv) -> None:
    skus = {"A": 20, "B": 15, "C": 5}
    for sku, units in skus.items():
        inv.set_stock(sku, units, price=100)
    rng = random.Random(7)
    orders = {
        f"o-{i}": [(rng.choice(list(skus)), rng.randint(1, 3)) for _ in range(rng.randint(1, 3))]
        for i in range(60)
    }

    def life(order_id: str) -> str | None:
        """Reserve, then commit or release, each twice (a retry)."""
        inv.reserve(order_id, orders[order_id])
        settle = inv.commit if int(order_id[2:]) % 2 else inv.release
        settle(order_id)
        return settle(order_id)

    finals = dict(zip(orders, all_at_once([lambda o=o: life(o) for o in orders]), strict=True))
    assert set(finals.values()) <= {"committed", "released", "rejected"}
    sold = dict.fromkeys(skus, 0)
    for order_id, state in finals.items():
        if state == "committed":
            for sku, quantity in orders[order_id]:
                sold[sku] += quantity
    for sku, units in skus.items():
        assert level(inv, sku) == (units - sold[sku], 0, sold[sku], units - sold[sku])


@pytest.mark.parametrize("call", ["release", "commit"])
def test_a_reserve_between_reading_the_lines_and_the_script_is_caught(redis, inv, call) -> None:
    """Release and commit declare the stock of the lines they read first; when a reserve came in
    between, the script writes nothing and answers with the lines, and the call is made again."""
    inv.set_stock("TEA", 10, 450)
    inv.set_stock("MUG", 5, 1299)
    real_hget = redis.hget
    reads = []

    def read_then_reserve(key, field):  # the first read sees no reservation; then one is made
        reads.append(key)
        value = real_hget(key, field)
        if len(reads) == 1:
            assert inv.reserve("o1", [("TEA", 2), ("MUG", 1)]).ok
        return value

    redis.hget = read_then_reserve
    assert getattr(inv, call)("o1") == ("released" if call == "release" else "committed")
    assert level(inv, "TEA") == ((10, 0, 0, 10) if call == "release" else (8, 0, 2, 8))
    assert level(inv, "MUG") == ((5, 0, 0, 5) if call == "release" else (4, 0, 1, 4))


def test_a_release_script_given_other_lines_writes_nothing(redis, inv) -> None:
    inv.set_stock("TEA", 10, 450)
    assert inv.reserve("o1", [("TEA", 2)]).ok
    before = snapshot(redis)
    plan = {"order_id": "o1", "now": "1.0", "lines": '[{"sku":"MUG","quantity":2}]'}
    answer = inv._scripts.run("release", plan, keys=[KEYS.reservation("o1"), KEYS.holds, KEYS.stock("MUG")])
    assert answer == [b"lines", b'[{"sku":"TEA","quantity":2}]'] and snapshot(redis) == before
