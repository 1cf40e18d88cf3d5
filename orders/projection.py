"""The order summary view (CQRS read side): a pure function from events to a summary.

``apply(summary, event)`` folds one event into an order's summary. It is only ever called
with the next event of that order (``event.sequence == summary.version + 1``; the
projector sees to that, holding back events that arrive early), so applying is simple and
the result depends only on the order's history: a rebuild by replay gives the same view.

``skip(summary, seq, kind, at)`` stands in for an event this projector cannot read (a type
a newer writer added): the summary moves past it, so the order's later events still show,
and it records the gap (``unreadable``) until the event, read at last after an upgrade, is
folded in its place (orders/readmodel.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orders import events as e
from orders.model import OrderStatus
from orders.money import format_amount


class TimelineEntry(BaseModel):
    seq: int
    at: float
    event: str
    text: str


class Unreadable(BaseModel):
    """An event of the order this projector could not read: parked, not applied (yet)."""

    seq: int
    type: str


class OrderSummary(BaseModel):
    """One order, denormalized for reading. Written only by the projector."""

    order_id: str
    customer_name: str
    customer_email: str
    item_count: int
    total: int
    currency: str
    status: OrderStatus
    reason: str | None = None
    attention: str | None = None
    placed_at: float
    updated_at: float
    version: int = Field(description="sequence of the last event applied")
    timeline: list[TimelineEntry] = Field(default_factory=list)
    unreadable: list[Unreadable] = Field(
        default_factory=list, description="events skipped because this projector cannot read them"
    )

    @property
    def unreadable_note(self) -> str | None:
        """Why a person should look, when events of the order could not be read."""
        if not self.unreadable:
            return None
        which = ", ".join(f"{u.type} (#{u.seq})" for u in self.unreadable)
        return (
            f"event(s) {which} could not be read by the projector: this summary lacks them; they are "
            "parked (chumon events dlq list --group projector) until an upgrade reads them"
        )


def apply(summary: OrderSummary | None, event: e.Event) -> OrderSummary:
    if isinstance(event, e.OrderPlaced):
        summary = _placed(event)
    elif summary is None:
        raise ValueError(f"{type(event).__name__} for order {event.order_id} before OrderPlaced")
    else:
        summary = _copy(summary)
        _change(summary, event)
    summary.version = event.sequence
    summary.updated_at = max(summary.updated_at, event.at)
    summary.timeline.append(
        TimelineEntry(seq=event.sequence, at=event.at, event=event.type_name(), text=describe(event))
    )
    return summary


def skip(summary: OrderSummary, seq: int, kind: str, at: float | None) -> OrderSummary:
    """Move past event ``seq`` (of type ``kind``), which cannot be read: record the gap."""
    summary = _copy(summary)
    summary.unreadable.append(Unreadable(seq=seq, type=kind))
    summary.version = seq
    summary.timeline.append(
        TimelineEntry(
            seq=seq,
            at=at if at is not None else summary.updated_at,
            event=kind,
            text=f"{kind}: could not be read by this projector (parked)",
        )
    )
    return summary


def _copy(summary: OrderSummary) -> OrderSummary:
    """A summary to change, leaving ``summary`` as it was: its own lists, the entries in them
    shared (an entry is never changed once made). A deep copy took 400 µs for a summary of six
    events, the new copy 24 µs: the deep copy was the projector's largest cost per event."""
    lists = {"timeline": list(summary.timeline), "unreadable": list(summary.unreadable)}
    return summary.model_copy(update=lists)


def _placed(event: e.OrderPlaced) -> OrderSummary:
    order: dict[str, Any] = event.order
    return OrderSummary(
        order_id=event.order_id,
        customer_name=order["customer"]["name"],
        customer_email=order["customer"]["email"],
        item_count=sum(int(line["quantity"]) for line in order["lines"]),
        total=int(order["total"]),
        currency=order["currency"],
        status=OrderStatus.PENDING,
        placed_at=float(order.get("placed_at") or event.at),
        updated_at=event.at,
        version=event.sequence,
    )


def _change(summary: OrderSummary, event: e.Event) -> None:
    if isinstance(event, e.OrderConfirmed):
        summary.status = OrderStatus.CONFIRMED
    elif isinstance(event, e.OrderCancelled):
        summary.status, summary.reason = OrderStatus.CANCELLED, event.reason
    elif isinstance(event, e.OrderNeedsAttention):
        summary.attention = event.reason
    elif isinstance(event, e.AttentionCleared):
        summary.attention = None


def describe(event: e.Event) -> str:
    """One line of the timeline."""
    if isinstance(event, e.OrderPlaced):
        total = format_amount(int(event.order["total"]), event.order["currency"])
        return f"placed: {sum(int(line['quantity']) for line in event.order['lines'])} item(s), {total}"
    if isinstance(event, e.PaymentCharged):
        return f"charged {format_amount(event.amount, event.currency)} ({event.charge_id})" + _late(event)
    if isinstance(event, e.ShipmentArranged):
        return f"shipment arranged ({event.shipment_id})" + _late(event)
    if isinstance(event, e.InventoryReserved):
        return "stock reserved" + _late(event)
    if isinstance(event, e.StepFailed):
        return f"{type(event).__name__}: {event.reason}"
    if isinstance(event, e.PaymentRefunded):
        return f"refunded ({event.refund_id})" if event.refund_id else "refund: nothing was charged"
    if isinstance(event, e.ShipmentCancelled):
        return (
            f"shipment cancelled ({event.cancellation_id})"
            if event.cancellation_id
            else "no shipment to cancel"
        )
    if isinstance(event, e.OrderCancelled | e.OrderNeedsAttention | e.CompensationRepeated):
        return f"{type(event).__name__}: {event.reason}"
    if isinstance(event, e.EmailSent):
        return f"{event.kind} email sent {event.message_id}"
    if isinstance(event, e.EmailFailed):
        return f"{event.kind} email failed: {event.reason}"
    return type(event).__name__


def _late(event: e.StepAnswered) -> str:
    return " (late: to be undone)" if event.late else ""
