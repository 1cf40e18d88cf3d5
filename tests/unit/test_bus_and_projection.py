"""The in-process bus and the projection's fold, as pure code."""

from __future__ import annotations

import pytest

from orders import events as e
from orders.bus import EventBus
from orders.projection import apply

BASE = {"order_id": "o1", "correlation_id": "c", "at": 10.0}
ORDER = {
    "customer": {"name": "Ada", "email": "ada@example.com"},
    "lines": [
        {"sku": "TEA", "quantity": 2, "unit_price": 450},
        {"sku": "MUG", "quantity": 1, "unit_price": 1299},
    ],
    "total": 2199,
    "currency": "EUR",
    "placed_at": 10.0,
}


def history() -> list[e.Event]:
    return [
        e.OrderPlaced(**BASE, sequence=1, order=ORDER),
        e.InventoryReserved(**BASE, sequence=2, lines=[]),
        e.PaymentFailed(**BASE, sequence=3, reason="payment declined: insufficient_funds"),
        e.InventoryReleased(**BASE, sequence=4),
        e.OrderCancelled(**BASE, sequence=5, reason="payment declined: insufficient_funds"),
    ]


def test_fold_gives_the_summary() -> None:
    summary = None
    for event in history():
        summary = apply(summary, event)
    assert summary is not None
    assert (summary.status.value, summary.item_count, summary.total, summary.version) == (
        "CANCELLED",
        3,
        2199,
        5,
    )
    assert summary.reason == "payment declined: insufficient_funds"
    assert [t.event for t in summary.timeline] == [type(ev).__name__ for ev in history()]
    assert summary.timeline[0].text == "placed: 3 item(s), EUR 21.99"


def test_an_event_before_order_placed_is_refused() -> None:
    with pytest.raises(ValueError, match="before OrderPlaced"):
        apply(None, history()[1])


def test_bus_calls_handlers_of_the_class_and_its_bases_in_order() -> None:
    bus, seen = EventBus(), []
    bus.subscribe(e.StepFailed, lambda ev: seen.append(("any failure", ev.reason)))
    bus.subscribe(e.PaymentFailed, lambda ev: seen.append(("payment", ev.definite)))
    assert bus.publish(history()[2]) == 2
    assert seen == [("payment", True), ("any failure", "payment declined: insufficient_funds")]
    assert bus.publish(history()[0]) == 0


def test_bus_refuses_a_handler_twice_and_lets_errors_through() -> None:
    bus = EventBus()

    def boom(event: e.Event) -> None:
        raise RuntimeError("handler failed")

    bus.subscribe(e.OrderPlaced, boom)
    with pytest.raises(ValueError, match="already handles"):
        bus.subscribe(e.OrderPlaced, boom)
    with pytest.raises(RuntimeError, match="handler failed"):
        bus.publish(history()[0])


def test_events_round_trip_through_stream_fields() -> None:
    for event in history():
        fields = e.to_fields(event)
        assert e.from_fields(dict(zip(fields[::2], fields[1::2], strict=True))) == event
