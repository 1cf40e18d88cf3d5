"""Domain events: facts, named in the past tense. They have already happened; many may listen.

Every event is appended to the event stream in the same atomic step as the state change it
records (orders/lua/place.lua, orders/lua/transition.lua), with ``sequence``: its position in
its order's history (1, 2, 3, ...).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from orders.messages import Message
from orders.model import LineRequest


class Event(Message):
    sequence: int = Field(default=0, ge=0, description="position in the order's history, set at commit")


class OrderPlaced(Event):
    order: dict[str, Any] = Field(description="the order as placed, priced from the catalogue")


class StepAnswered(Event):
    """A step's success. ``late``: it came after the flow had given the step up."""

    late: bool = False


class StepFailed(Event):
    """A step's failure. ``definite``: the service said no (it did nothing); otherwise it gave
    no answer and may have acted, so its own effect must be undone too."""

    reason: str
    definite: bool = True


class InventoryReserved(StepAnswered):
    lines: list[LineRequest]


class InventoryReservationFailed(StepFailed):
    shortage: list[dict[str, Any]] = Field(default_factory=list)


class PaymentCharged(StepAnswered):
    charge_id: str
    amount: int
    currency: str


class PaymentFailed(StepFailed):
    pass


class ShipmentArranged(StepAnswered):
    shipment_id: str


class ShipmentFailed(StepFailed):
    pass


class OrderConfirmed(Event):
    pass


class InventoryReleased(Event):
    pass


class PaymentRefunded(Event):
    refund_id: str | None = Field(description="None when there was no charge to refund")


class ShipmentCancelled(Event):
    cancellation_id: str | None = Field(description="None when there was no shipment to cancel")


class CompensationRepeated(Event):
    """A compensation found nothing to undo, but its step had answered late: it is asked again."""

    step: str
    reason: str


class OrderCancelled(Event):
    reason: str


class OrderNeedsAttention(Event):
    reason: str


class AttentionCleared(Event):
    """The cause of an OrderNeedsAttention was dealt with (a requeued compensation went through)."""


class InventoryCommitted(Event):
    pass


class EmailSent(Event):
    kind: str
    message_id: str


class EmailFailed(Event):
    kind: str
    reason: str


ENVELOPE = frozenset({"id", "version", "order_id", "correlation_id", "causation_id", "at", "sequence"})


def to_fields(event: Event) -> list[str]:
    """The event as the flat field list of its stream entry (type, envelope, data as JSON)."""
    data = event.model_dump_json(exclude=set(ENVELOPE))
    return [
        "type", event.type_name(),
        "id", event.id,
        "version", str(event.version),
        "order_id", event.order_id,
        "seq", str(event.sequence),
        "correlation_id", event.correlation_id,
        "causation_id", event.causation_id or "",
        "at", repr(event.at),
        "data", data,
    ]  # fmt: skip


def from_fields(fields: dict[str, str]) -> Event:
    """Read a stream entry back; raises KeyError for an unknown type, ValidationError for a bad one."""
    kind = EVENT_TYPES[fields["type"]]
    return kind.model_validate(
        {
            **json.loads(fields["data"]),
            "id": fields["id"],
            "version": int(fields["version"]),
            "order_id": fields["order_id"],
            "sequence": int(fields["seq"]),
            "correlation_id": fields["correlation_id"],
            "causation_id": fields["causation_id"] or None,
            "at": float(fields["at"]),
        }
    )


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name(): cls
    for cls in (
        OrderPlaced,
        InventoryReserved,
        InventoryReservationFailed,
        PaymentCharged,
        PaymentFailed,
        ShipmentArranged,
        ShipmentFailed,
        OrderConfirmed,
        InventoryReleased,
        PaymentRefunded,
        ShipmentCancelled,
        CompensationRepeated,
        OrderCancelled,
        OrderNeedsAttention,
        AttentionCleared,
        InventoryCommitted,
        EmailSent,
        EmailFailed,
    )
}
