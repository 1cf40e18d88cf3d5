"""Inventory: stock levels, prices and reservations, on fakeredis (the scripts run in its Lua)."""

from __future__ import annotations

import json
import re

import fakeredis
import pytest
from pydantic import ValidationError

from orders.errors import UnknownSku
from orders.inventory import (
    MAX_UNITS,
    Inventory,
    ReservationState,
    Shortage,
    StockLevel,
    StockLine,
    aggregate,
)
from orders.keys import OrderKeys
from orders.model import LineRequest
from workers.scripts import source

NOW = 1_700_000_000.123456
KEYS = OrderKeys()


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def inv(fake: fakeredis.FakeRedis) -> Inventory:
    return Inventory(fake, KEYS, clock=lambda: NOW)


def snapshot(r: fakeredis.FakeRedis) -> dict:
    return {key: r.dump(key) for key in r.keys("*")}


def level(inv: Inventory, sku: str) -> tuple[int, int, int, int]:
    (stock,) = inv.levels(sku)
    return stock.on_hand, stock.reserved, stock.committed, stock.available


# -- set_stock ------------------------------------------------------------------------------------
def test_set_stock_adds_the_sku_to_the_catalogue(fake, inv) -> None:
    stock = inv.set_stock("A-1", 7, price=1999)
    assert stock == StockLevel(sku="A-1", on_hand=7, reserved=0, committed=0, available=7, price=1999)
    assert fake.smembers(KEYS.skus) == {b"A-1"}
    assert fake.hgetall(KEYS.stock("A-1")) == {
        b"on_hand": b"7",
        b"reserved": b"0",
        b"committed": b"0",
        b"price": b"1999",
    }


def test_set_stock_is_absolute_and_keeps_the_price_unless_given(inv) -> None:
    inv.set_stock("A", 7, price=100)
    assert inv.set_stock("A", 3).price == 100
    stock = inv.set_stock("A", 12, price=250)
    assert (stock.on_hand, stock.price) == (12, 250)


def test_a_new_sku_without_a_price_is_refused_and_nothing_written(fake, inv) -> None:
    with pytest.raises(ValueError, match=r"'NEW'.*no price"):
        inv.set_stock("NEW", 5)
    assert fake.dbsize() == 0


def test_on_hand_below_reserved_is_refused_naming_the_numbers(fake, inv) -> None:
    inv.set_stock("A", 10, price=100)
    inv.reserve("o-1", [("A", 6)])
    before = snapshot(fake)
    with pytest.raises(ValueError, match=r"'A' to 5: 6 units are reserved"):
        inv.set_stock("A", 5, price=999)
    assert snapshot(fake) == before
    assert inv.set_stock("A", 6).available == 0  # down to exactly the reserved units is fine


@pytest.mark.parametrize(
    ("sku", "on_hand", "price", "match"),
    [
        ("A", -1, 100, "on_hand of SKU 'A'"),
        ("A", 1, -5, "price of SKU 'A'"),
        ("A", True, 100, "on_hand of SKU 'A'"),
        ("A", 1.5, 100, "on_hand of SKU 'A'"),
        ("A", MAX_UNITS + 1, 100, "on_hand of SKU 'A'"),
        ("bad sku", 1, 100, "SKU 'bad sku' is invalid"),
        ("", 1, 100, "SKU '' is invalid"),
    ],
)
def test_invalid_set_stock_arguments_are_refused_before_any_io(fake, inv, sku, on_hand, price, match) -> None:
    with pytest.raises(ValueError, match=match):
        inv.set_stock(sku, on_hand, price=price)
    assert fake.dbsize() == 0


# -- reserve --------------------------------------------------------------------------------------
def test_reserve_holds_every_line(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 2, price=300)
    result = inv.reserve("o-1", [LineRequest(sku="A", quantity=2), LineRequest(sku="B", quantity=2)])
    assert result.state is ReservationState.RESERVED and result.ok
    assert result.lines == [StockLine(sku="A", quantity=2), StockLine(sku="B", quantity=2)]
    assert result.shortage == []
    assert level(inv, "A") == (5, 2, 0, 3)
    assert level(inv, "B") == (2, 2, 0, 0)


def test_one_short_line_rejects_the_whole_order_and_holds_nothing(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 1, price=300)
    result = inv.reserve("o-1", [("A", 2), ("B", 2)])
    assert result.state is ReservationState.REJECTED and not result.ok
    assert result.shortage == [Shortage(sku="B", requested=2, available=1)]
    assert level(inv, "A") == (5, 0, 0, 5)
    assert level(inv, "B") == (1, 0, 0, 1)


def test_duplicate_skus_are_summed_before_checking(inv) -> None:
    inv.set_stock("A", 3, price=100)
    result = inv.reserve("o-1", [("A", 2), ("B", 1), ("A", 2)])
    assert result.lines == [StockLine(sku="A", quantity=4), StockLine(sku="B", quantity=1)]
    assert result.shortage == [
        Shortage(sku="A", requested=4, available=3),
        Shortage(sku="B", requested=1, available=0),
    ]


def test_unknown_sku_is_short_with_nothing_available(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    # a stock hash outside the catalogue is not for sale either
    fake.hset(KEYS.stock("GHOST"), mapping={"on_hand": 9, "reserved": 0})
    result = inv.reserve("o-1", [("A", 1), ("NOPE", 1), ("GHOST", 1)])
    assert result.state is ReservationState.REJECTED
    assert result.shortage == [
        Shortage(sku="NOPE", requested=1, available=0),
        Shortage(sku="GHOST", requested=1, available=0),
    ]
    assert level(inv, "A") == (5, 0, 0, 5)
    assert not fake.exists(KEYS.stock("NOPE"))


def test_reserve_never_takes_available_below_zero(inv) -> None:
    inv.set_stock("A", 3, price=100)
    outcomes = [inv.reserve(f"o-{i}", [("A", 2)]).state for i in range(3)]
    assert outcomes == ["reserved", "rejected", "rejected"]
    assert level(inv, "A") == (3, 2, 0, 1)
    assert inv.reserve("o-9", [("A", 1)]).ok
    assert level(inv, "A") == (3, 3, 0, 0)


def test_reserve_again_changes_nothing_and_returns_the_first_outcome(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    first = inv.reserve("o-1", [("A", 2)])
    before = snapshot(fake)
    again = inv.reserve("o-1", [("A", 2)])
    other_lines = inv.reserve("o-1", [("A", 5), ("B", 1)])
    assert first == again == other_lines
    assert snapshot(fake) == before
    assert level(inv, "A") == (5, 2, 0, 3)


def test_a_rejection_stays_rejected_after_a_restock(fake, inv) -> None:
    inv.set_stock("A", 1, price=100)
    first = inv.reserve("o-1", [("A", 2)])
    inv.set_stock("A", 10)
    again = inv.reserve("o-1", [("A", 2)])
    assert first == again and again.state is ReservationState.REJECTED
    assert again.shortage == [Shortage(sku="A", requested=2, available=1)]
    assert level(inv, "A") == (10, 0, 0, 10)


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([], "at least one line"),
        ([("A", 0)], "quantity"),
        ([("A", -1)], "quantity"),
        ([("A", 1), ("bad sku", 1)], "invalid"),
        ([("A", "two")], "quantity"),
    ],
)
def test_invalid_lines_are_refused_before_any_io(fake, inv, lines, error) -> None:
    inv.set_stock("A", 5, price=100)
    before = snapshot(fake)
    with pytest.raises((ValueError, ValidationError), match=error):
        inv.reserve("o-1", lines)
    assert snapshot(fake) == before


def test_an_empty_order_id_is_refused(inv) -> None:
    for call in (lambda: inv.reserve("", [("A", 1)]), lambda: inv.release(""), lambda: inv.commit("")):
        with pytest.raises(ValueError, match="order id"):
            call()


def test_aggregate_keeps_the_order_of_first_appearance() -> None:
    lines = aggregate([("B", 1), LineRequest(sku="A", quantity=2), ("B", 3)])
    assert lines == [StockLine(sku="B", quantity=4), StockLine(sku="A", quantity=2)]


# -- release and commit -----------------------------------------------------------------------------
def test_release_gives_the_units_back_once(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 5, price=100)
    inv.reserve("o-1", [("A", 2), ("B", 3)])
    assert inv.release("o-1") == "released"
    before = snapshot(fake)
    assert inv.release("o-1") == "released"
    assert inv.commit("o-1") == "released"
    assert snapshot(fake) == before
    assert level(inv, "A") == (5, 0, 0, 5)
    assert level(inv, "B") == (5, 0, 0, 5)


def test_commit_sells_the_held_units_once(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.reserve("o-1", [("A", 2)])
    assert inv.commit("o-1") == "committed"
    before = snapshot(fake)
    assert inv.commit("o-1") == "committed"
    assert inv.release("o-1") == "committed"
    assert snapshot(fake) == before
    assert level(inv, "A") == (3, 0, 2, 3)


def test_release_and_commit_leave_a_rejection_alone(fake, inv) -> None:
    inv.set_stock("A", 1, price=100)
    inv.reserve("o-1", [("A", 2)])
    before = snapshot(fake)
    assert inv.release("o-1") == "rejected"
    assert inv.commit("o-1") == "rejected"
    assert snapshot(fake) == before


def test_without_a_reservation_commit_returns_none_and_writes_nothing(fake, inv) -> None:
    assert inv.commit("o-404") is None
    assert fake.dbsize() == 0


def test_a_release_before_any_reserve_voids_the_order_so_a_late_reserve_holds_nothing(fake, inv) -> None:
    """The race of a reservation given up while on its way: the release comes first."""
    inv.set_stock("A", 5, price=100)
    assert inv.release("o-late") == "void"
    late = inv.reserve("o-late", [("A", 2)])
    assert late.state == "void" and not late.ok and late.lines == []
    assert inv.levels("A")[0].reserved == 0 and inv.stale_holds(-1) == []
    assert inv.release("o-late") == "void" and inv.commit("o-late") == "void"


# -- the reservation record -----------------------------------------------------------------------
def test_the_reservation_record(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.reserve("o-1", [("A", 1), ("A", 1)])
    raw = fake.hgetall(KEYS.reservation("o-1"))
    assert raw[b"state"] == b"reserved"
    assert json.loads(raw[b"lines"]) == [{"sku": "A", "quantity": 2}]
    assert float(raw[b"reserved_at"]) == float(raw[b"updated_at"]) == NOW  # exact, not 14 digits
    record = inv.reservation("o-1")
    assert record is not None
    assert (record.order_id, record.state, record.reserved_at) == ("o-1", "reserved", NOW)
    assert record.lines == [StockLine(sku="A", quantity=2)]
    assert inv.reservation("o-404") is None


def test_a_rejected_record_has_its_shortage_and_no_hold_time(inv) -> None:
    inv.reserve("o-1", [("X", 3)])
    record = inv.reservation("o-1")
    assert record is not None and record.state is ReservationState.REJECTED
    assert record.shortage == [Shortage(sku="X", requested=3, available=0)]
    assert record.reserved_at is None and record.updated_at == NOW


def test_release_and_commit_stamp_updated_at(fake) -> None:
    now = [100.0]
    inv = Inventory(fake, KEYS, clock=lambda: now[0])
    inv.set_stock("A", 5, price=100)
    inv.reserve("o-1", [("A", 1)])
    now[0] = 160.5
    inv.release("o-1")
    record = inv.reservation("o-1")
    assert record is not None and (record.reserved_at, record.updated_at) == (100.0, 160.5)


# -- levels and prices ----------------------------------------------------------------------------
def test_levels_lists_every_sku_sorted(inv) -> None:
    for sku in ("b", "C", "a"):
        inv.set_stock(sku, 1, price=10)
    assert [stock.sku for stock in inv.levels()] == ["C", "a", "b"]


def test_levels_of_an_unknown_sku_raises(inv) -> None:
    assert inv.levels() == []
    with pytest.raises(UnknownSku, match="'A'"):
        inv.levels("A")


def test_prices(inv) -> None:
    inv.set_stock("A", 1, price=1999)
    inv.set_stock("B", 0, price=0)
    assert inv.prices(["A", "B", "Z", "A"]) == {"A": 1999, "B": 0, "Z": None}
    assert inv.prices([]) == {}


# -- the scripts ----------------------------------------------------------------------------------
def test_keys_come_from_the_prefix(fake) -> None:
    inv = Inventory(fake, OrderKeys("shop"))
    inv.set_stock("A", 5, price=100)
    inv.reserve("o-1", [("A", 1)])
    inv.reserve("o-2", [("A", 9)])
    inv.commit("o-1")
    assert sorted(fake.keys("*")) == [
        b"shop:reservation:o-1",
        b"shop:reservation:o-2",
        b"shop:skus",
        b"shop:stock:A",
    ]


def test_bad_stock_data_fails_the_script_before_it_writes(fake, inv) -> None:
    inv.set_stock("A", 5, price=100)
    inv.set_stock("B", 5, price=100)
    fake.hset(KEYS.stock("B"), "reserved", "lots")
    before = snapshot(fake)
    with pytest.raises(Exception, match="SKU B: reserved is not an integer"):
        inv.reserve("o-1", [("A", 1), ("B", 1)])
    assert snapshot(fake) == before


@pytest.mark.parametrize("name", ["reserve", "release", "commit_stock", "set_stock"])
def test_every_script_has_a_header_and_spells_no_key(name: str) -> None:
    text = source(name, package="orders")
    header = text.split("]]", 1)[0]
    assert header.startswith(f"--[[\n  {name}: ")
    for section in ("Input:", "Output:", "Events:"):
        assert section in header
    assert not re.search(r"['\"](chumon|stock|reservation|skus):", text)
