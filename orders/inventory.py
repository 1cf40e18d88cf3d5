"""Stock per SKU and each order's reservation, in Redis.

A SKU's stock is a hash (``OrderKeys.stock``) of integer counts:

- ``on_hand``: units in the warehouse not yet sold, reserved ones included;
- ``reserved``: units held for pending orders; ``available`` is ``on_hand - reserved``;
- ``committed``: units sold so far (cumulative);
- ``price``: the catalogue unit price in minor units.

An order holds stock through its reservation record (``OrderKeys.reservation``), which moves
``reserved`` -> ``released`` or ``committed``, or is ``rejected`` from the start, or ``void``
when a release came before any reserve (the reserve that arrives later holds nothing). Every
change is
one Lua script (``orders/lua``), so a reservation takes all of its lines or none, concurrent
orders never oversell, and calling reserve, release or commit again for the same order changes
nothing: each returns the outcome the order already has.

Each script call declares in KEYS every key it may touch. Release and commit touch the stock of
the lines the reservation holds, which only Redis knows: they read the lines first, declare
their stock, and the script checks it was given those lines (it answers with the lines it
holds, writing nothing, when a reserve came in between; the call is then made again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis

from orders.errors import UnknownSku
from orders.keys import OrderKeys
from orders.model import LineRequest, check_sku
from orders.money import MAX_AMOUNT
from orders.scripts import order_scripts
from workers.codec import text, texts

MAX_UNITS = 10**12
"""Upper bound of a count or price: Lua numbers are doubles, and Redis's cjson prints 14 digits."""

_LEVEL_FIELDS = ("on_hand", "reserved", "committed", "price")

MAX_LINE_READS = 3
"""Script calls one release or commit makes at most: a reservation's lines are written once, so
a second call (after a reserve came between the read and the first) always has them."""


class ReservationState(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    COMMITTED = "committed"
    REJECTED = "rejected"
    VOID = "void"


class StockLine(BaseModel):
    """One SKU of a reservation, with the quantity of all the order's lines for it."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int = Field(gt=0)


class Shortage(BaseModel):
    """A line that could not be held: what it asked for and what was available then."""

    model_config = ConfigDict(frozen=True)

    sku: str
    requested: int
    available: int


class ReservationResult(BaseModel):
    """The outcome of reserve: ``reserved`` (every line held) or ``rejected`` (none held).

    A repeated reserve returns the reservation as it is now, so its state may by then be
    ``released`` or ``committed``.
    """

    model_config = ConfigDict(frozen=True)

    state: ReservationState
    lines: list[StockLine]
    shortage: list[Shortage] = []

    @property
    def ok(self) -> bool:
        """True unless the reservation was rejected or void (it held the stock, even if no longer)."""
        return self.state not in (ReservationState.REJECTED, ReservationState.VOID)


class Reservation(ReservationResult):
    """An order's reservation record as stored."""

    order_id: str
    reserved_at: float | None = Field(default=None, description="when the units were held; unset if rejected")
    updated_at: float


class StockLevel(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    on_hand: int
    reserved: int
    committed: int
    available: int
    price: int | None = Field(description="minor units; None only for data not written by set_stock")


def aggregate(lines: Iterable[LineRequest | tuple[str, int]]) -> list[StockLine]:
    """Validate the lines (ValueError / ValidationError before any I/O) and sum them per SKU, in order."""
    totals: dict[str, int] = {}
    for item in lines:
        line = item if isinstance(item, LineRequest) else LineRequest(sku=item[0], quantity=item[1])
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    if not totals:
        raise ValueError("a reservation needs at least one line")
    return [StockLine(sku=sku, quantity=quantity) for sku, quantity in totals.items()]


def check_count(what: str, sku: str, value: int, limit: int = MAX_UNITS) -> int:
    """Return ``value`` if it is a whole number from 0 to ``limit``; raise ValueError naming the SKU."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{what} of SKU {sku!r} must be a whole number from 0 to {limit}, not {value!r}")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int | None:
    return None if value is None else int(_text(value))


def _level(sku: str, values: Sequence[bytes | str | None]) -> StockLevel:
    on_hand, reserved, committed, price = (_int(value) for value in values)
    on_hand, reserved, committed = on_hand or 0, reserved or 0, committed or 0
    return StockLevel(
        sku=sku,
        on_hand=on_hand,
        reserved=reserved,
        committed=committed,
        available=on_hand - reserved,
        price=price,
    )


class Inventory:
    """Stock levels, prices and reservations. Cheap to build; safe to share between threads."""

    def __init__(self, redis: Redis, keys: OrderKeys, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self._scripts = order_scripts(redis, keys.lua_keyspace)

    # -- an order's reservation ------------------------------------------------------------------
    def reserve(
        self, order_id: str, lines: Sequence[LineRequest] | Sequence[tuple[str, int]]
    ) -> ReservationResult:
        """Hold every line's units for ``order_id``, or none if any line is short.

        Duplicate SKUs are summed. A SKU not in the catalogue is short with 0 available. If the
        order already has a reservation record, nothing changes and its outcome is returned
        (even a rejection, and whatever ``lines`` says now).
        """
        held = aggregate(lines)
        plan = {
            "order_id": _check_order_id(order_id),
            "now": self._now(),
            "lines": [[line.sku, line.quantity] for line in held],
        }
        keys = [self.keys.reservation(order_id), self.keys.skus, self.keys.holds]
        keys += [self.keys.stock(line.sku) for line in held]
        state, lines_json, shortage_json = self._scripts.run("reserve", plan, keys=keys)
        return ReservationResult(
            state=ReservationState(_text(state)),
            lines=json.loads(lines_json),
            shortage=json.loads(shortage_json),
        )

    def release(self, order_id: str) -> ReservationState | None:
        """Give back the units ``order_id`` holds. Only a ``reserved`` reservation changes.

        Returns the state afterwards: ``released``; ``void`` when the order had no reservation
        (one is recorded, holding nothing, so a reserve arriving later holds nothing either);
        or the state it was left in.
        """
        return self._transition("release", order_id)

    def commit(self, order_id: str) -> ReservationState | None:
        """Turn the units ``order_id`` holds into sold ones. Only a ``reserved`` reservation changes.

        Returns the state afterwards (``committed``, or the one it was left in), None without a
        reservation.
        """
        return self._transition("commit_stock", order_id)

    def reservation(self, order_id: str) -> Reservation | None:
        """The reservation record of ``order_id``, or None."""
        raw = self.redis.hgetall(self.keys.reservation(_check_order_id(order_id)))
        if not raw:
            return None
        fields = {_text(name): _text(value) for name, value in raw.items()}
        return Reservation(
            order_id=order_id,
            state=ReservationState(fields["state"]),
            lines=json.loads(fields["lines"]),
            shortage=json.loads(fields.get("shortage", "[]")),
            reserved_at=float(fields["reserved_at"]) if "reserved_at" in fields else None,
            updated_at=float(fields["updated_at"]),
        )

    # -- the catalogue ------------------------------------------------------------------------------
    def stale_holds(self, older_than: float, *, limit: int = 500) -> list[str]:
        """Orders whose reservation has been held for more than ``older_than`` seconds."""
        cutoff = self.clock() - older_than
        return texts(self.redis.zrangebyscore(self.keys.holds, "-inf", cutoff, start=0, num=limit))

    def set_stock(self, sku: str, on_hand: int, price: int | None = None) -> StockLevel:
        """Set ``sku``'s units on hand (absolute) and, if given, its price (minor units).

        Adds the SKU to the catalogue. Raises ValueError, writing nothing, for an invalid SKU, a
        negative count or price, a new SKU without a price, or ``on_hand`` below the units
        reserved.
        """
        plan: dict[str, Any] = {"sku": check_sku(sku), "on_hand": check_count("on_hand", sku, on_hand)}
        if price is not None:
            plan["price"] = check_count("price", sku, price, MAX_AMOUNT)
        outcome, *values = self._scripts.run("set_stock", plan, keys=[self.keys.stock(sku), self.keys.skus])
        outcome = _text(outcome)
        if outcome == "no_price":
            raise ValueError(f"SKU {sku!r} is new and has no price: every catalogue SKU needs one")
        if outcome == "below_reserved":
            raise ValueError(
                f"cannot set on_hand of SKU {sku!r} to {on_hand}: {values[0]} units are reserved "
                "(on_hand may not go below reserved)"
            )
        return _level(sku, values)

    def levels(self, sku: str | None = None) -> list[StockLevel]:
        """The stock of ``sku`` (UnknownSku if it is not in the catalogue), or of every SKU, sorted."""
        if sku is not None:
            return [self._one_level(sku)]
        skus = sorted(_text(member) for member in self.redis.smembers(self.keys.skus))
        pipe = self.redis.pipeline(transaction=False)
        for name in skus:
            pipe.hmget(self.keys.stock(name), _LEVEL_FIELDS)
        return [_level(name, values) for name, values in zip(skus, pipe.execute(), strict=True)]

    def prices(self, skus: Iterable[str]) -> dict[str, int | None]:
        """The catalogue price of each SKU (None when it has none), in one round trip."""
        wanted = list(dict.fromkeys(skus))
        pipe = self.redis.pipeline(transaction=False)
        for sku in wanted:
            pipe.hget(self.keys.stock(sku), "price")
        return {sku: _int(price) for sku, price in zip(wanted, pipe.execute(), strict=True)}

    # -- helpers ------------------------------------------------------------------------------------
    def _transition(self, script: str, order_id: str) -> ReservationState | None:
        """Run release or commit_stock, declaring the stock of the lines the reservation holds."""
        record = self.keys.reservation(_check_order_id(order_id))
        lines = self.redis.hget(record, "lines")
        for _ in range(MAX_LINE_READS):
            plan: dict[str, Any] = {"order_id": order_id, "now": self._now()}
            keys = [record, self.keys.holds]
            if lines is not None:
                plan["lines"] = text(lines)
                keys += [self.keys.stock(line["sku"]) for line in json.loads(lines)]
            state = self._scripts.run(script, plan, keys=keys)
            if not isinstance(state, list):
                return None if state is None else ReservationState(_text(state))
            lines = state[1]  # {'lines', lines}: a reserve came between the read and the script
        raise RuntimeError(f"reservation of order {order_id!r}: its lines kept changing")

    def _one_level(self, sku: str) -> StockLevel:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self.keys.skus, check_sku(sku))
        pipe.hmget(self.keys.stock(sku), _LEVEL_FIELDS)
        known, values = pipe.execute()
        if not known:
            raise UnknownSku(sku)
        return _level(sku, values)

    def _now(self) -> str:
        """The clock as text: a float through cjson would keep only 14 significant digits."""
        return repr(float(self.clock()))


def _check_order_id(order_id: str) -> str:
    if not order_id or not isinstance(order_id, str):
        raise ValueError(f"order id must be a non-empty string, not {order_id!r}")
    return order_id
