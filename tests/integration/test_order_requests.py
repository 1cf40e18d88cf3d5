"""What placing an order accepts and refuses: scoped idempotency keys bound to the request,
amounts that survive Lua exactly, and addresses the mail server can (or cannot) send to."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from redis import Redis

from chumon import cli
from chumon.settings import load
from orders.config import SmtpConfig
from orders.errors import IdempotencyConflict, OrderTooLarge
from orders.money import MAX_AMOUNT
from tests.flow import Flow, running_flow
from workers.joblog import set_sink


@pytest.fixture
def flow(redis: Redis, redis_url: str) -> Iterator[Flow]:
    with running_flow(redis, redis_url) as running:
        yield running


@pytest.fixture
def idle_flow(redis: Redis, redis_url: str) -> Iterator[Flow]:
    """No worker runs: nothing but the test writes (what was written can be compared exactly)."""
    with running_flow(redis, redis_url, workers=0) as running:
        yield running


def place(flow: Flow, key: str | None, **overrides: Any) -> Any:
    request: dict[str, Any] = {
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "items": [("TEA", 1)],
        "ship_to": "1 Lane Street",
        "idempotency_key": key,
        **overrides,
    }
    return flow.producer.place_order(**request)


def written(flow: Flow) -> tuple[Any, ...]:
    r, k = flow.redis, flow.keys
    return r.zcard(k.orders_by_time), r.xlen(k.events), sorted(r.scan_iter(k.order("*")))


# -- idempotency keys ---------------------------------------------------------------------------------
def test_a_key_belongs_to_its_customer(flow: Flow) -> None:
    """Issue 11, 6: Ada's key, then Mallory's same key with other items: Mallory gets an order of
    her own, never Ada's id."""
    ada = place(flow, "checkout-1")
    mallory = place(flow, "checkout-1", customer_name="Mallory", customer_email="mallory@example.com",
                    items=[("POT", 3)])  # fmt: skip
    assert ada.created and mallory.created and ada.order_id != mallory.order_id
    assert flow.order(mallory.order_id).customer.email == "mallory@example.com"


def test_the_same_key_and_request_is_the_first_order(flow: Flow) -> None:
    first, again = place(flow, "checkout-2"), place(flow, "checkout-2")
    assert (first.order_id, first.created, again.created) == (again.order_id, True, False)
    shouted = place(flow, "checkout-2", customer_email="ADA@example.com")  # the same customer
    assert (shouted.order_id, shouted.created) == (first.order_id, False)


@pytest.mark.parametrize(
    "change",
    [
        {"items": [("TEA", 2)]},
        {"items": [("MUG", 1)]},
        {"ship_to": "2 Other Road"},
        {"payment_token": "tok_declined"},
        {"customer_name": "Ada L."},
    ],
)
def test_the_same_key_with_a_different_request_is_refused(idle_flow: Flow, change: dict[str, Any]) -> None:
    flow = idle_flow
    first = place(flow, "checkout-3")
    before = written(flow)
    with pytest.raises(IdempotencyConflict, match="'checkout-3'") as refused:
        place(flow, "checkout-3", **change)
    assert first.order_id not in str(refused.value)  # the refusal does not give the first order away
    assert written(flow) == before


# -- amounts ---------------------------------------------------------------------------------------------
def test_the_largest_allowed_order_round_trips_exactly(flow: Flow) -> None:
    """Issue 11, 7: a total of 9,999,999,999,999 minor units (13 digits) through place.lua, the
    event log, the gateway and the read model, to the last cent."""
    price = MAX_AMOUNT // 9  # 1,111,111,111,111: nine of them make MAX_AMOUNT exactly
    assert price * 9 == MAX_AMOUNT
    flow.services.inventory.set_stock("GOLD", 100, price)
    order_id = place(flow, None, items=[("GOLD", 4), ("GOLD", 5)]).order_id
    order = flow.settled(order_id)
    assert order.status.value == "CONFIRMED" and order.total == MAX_AMOUNT
    assert [line.unit_price for line in order.lines] == [price, price]
    charge = flow.services.payments.charges_for(order_id)[0]  # type: ignore[attr-defined]
    assert charge.amount == MAX_AMOUNT
    summary = flow.producer.wait_for_order(order_id, timeout=20)
    assert summary is not None and summary.total == MAX_AMOUNT
    stored = json.loads(flow.redis.hget(flow.keys.order(order_id), "doc"))
    assert stored["total"] == MAX_AMOUNT and isinstance(stored["total"], int)
    assert flow.audit().ok


def test_an_order_above_the_largest_total_is_refused_whole(flow: Flow) -> None:
    """The issue's own example: 9,999,999,999.99 x 9,999 units, which cjson stored as 9.99899999999e+15."""
    flow.services.inventory.set_stock("DEAR", 100_000, 999_999_999_999)
    before = written(flow)
    with pytest.raises(OrderTooLarge, match=r"total: the order comes to 9998999999990001 minor units"):
        place(flow, None, items=[("DEAR", 9_999)])
    with pytest.raises(OrderTooLarge, match="9999999999999"):
        flow.services.inventory.set_stock("ONE", 10, MAX_AMOUNT)
        place(flow, None, items=[("ONE", 1), ("TEA", 1)])
    assert written(flow) == before


def test_a_price_above_the_largest_amount_is_refused(flow: Flow) -> None:
    with pytest.raises(ValueError, match=f"price of SKU 'X' must be a whole number from 0 to {MAX_AMOUNT}"):
        flow.services.inventory.set_stock("X", 1, MAX_AMOUNT + 1)


# -- addresses ----------------------------------------------------------------------------------------
def test_a_non_ascii_address_is_sent_with_smtputf8(flow: Flow) -> None:
    """Issue 11, 8: decided: send it. The sink offers SMTPUTF8, as most servers do."""
    order_id = place(flow, None, customer_email="ü@example.com", customer_name="Zoë").order_id
    order = flow.settled(order_id)
    assert order.status.value == "CONFIRMED" and order.attention is None
    (message,) = flow.sink.messages()
    assert message["rcpt_tos"] == ["ü@example.com"] and message["kind"] == "confirmation"
    assert flow.audit().ok


def test_an_international_domain_goes_out_as_ascii(flow: Flow) -> None:
    order_id = place(flow, None, customer_email="ada@bücher.example").order_id
    flow.settled(order_id)
    (message,) = flow.sink.messages()
    assert message["rcpt_tos"] == ["ada@xn--bcher-kva.example"]


def test_without_smtputf8_such_an_address_is_refused_when_placed(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url, smtp=SmtpConfig(smtputf8=False)) as flow:
        before = written(flow)
        with pytest.raises(ValidationError, match=r"customer\.email[\s\S]*non-ASCII local part"):
            place(flow, None, customer_email="ü@example.com")
        assert written(flow) == before
        order_id = place(flow, None, customer_email="ada@bücher.example").order_id  # ASCII on the wire
        assert flow.settled(order_id).status.value == "CONFIRMED"


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture
def chumon(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    """``chumon ...`` in-process: returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    load.cache_clear()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


def test_the_cli_says_already_placed_and_names_a_conflicting_key(flow: Flow, chumon: Any) -> None:
    place_ = ["order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
              "--idempotency-key", "k-9", "--ship-to", "12 Analytical Lane"]  # fmt: skip
    code, out, err = chumon(*place_, "--item", "TEA:1", "--json")
    first = json.loads(out)
    assert code == 0 and first["created"] and not first["already_placed"]
    code, out, err = chumon(*place_, "--item", "TEA:1")
    assert code == 0 and out.strip() == first["order_id"] and "already placed" in err and "'k-9'" in err
    code, out, err = chumon(*place_, "--item", "TEA:1", "--json")
    assert code == 0 and json.loads(out) == {**first, "created": False, "already_placed": True}
    code, out, err = chumon(*place_, "--item", "TEA:2")
    assert code == 2 and out == "" and "idempotency key 'k-9'" in err and "different order request" in err
    code, out, err = chumon("order", "place", "--customer-email", "ü@example.com", "--customer-name", "Zoë",
                            "--item", "TEA:1", "--ship-to", "12 Analytical Lane", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["created"]


def test_an_order_stored_before_the_bounds_is_reported_not_crashed(flow: Flow, chumon: Any) -> None:
    order_id = place(flow, None).order_id
    flow.settled(order_id)
    doc = json.loads(flow.redis.hget(flow.keys.order(order_id), "doc"))
    doc["total"] = 9.99899999999e15  # what the old place.lua wrote
    flow.redis.hset(flow.keys.order(order_id), "doc", json.dumps(doc))
    code, _, err = chumon("order", "show", order_id, "--consistent")
    assert (
        code == 1
        and f"order '{order_id}': its stored record cannot be read" in err
        and "Traceback" not in err
    )


def test_order_place_wait_exits_0_only_for_a_confirmed_order(flow: Flow, chumon: Any) -> None:
    place_ = ["order", "place", "--customer-email", "ada@example.com", "--customer-name", "Ada",
              "--ship-to", "12 Analytical Lane", "--wait", "--timeout", "60"]  # fmt: skip
    code, out, err = chumon(*place_, "--item", "TEA:1")
    assert code == 0 and out.split()[1] == "CONFIRMED", (out, err)
    code, out, err = chumon(*place_, "--item", "POT:11")  # more than there is: cancelled
    assert code == 4 and out.split()[1] == "CANCELLED", (out, err)
