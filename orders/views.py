"""What callers read about an order from the write side (strongly consistent, by id)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orders.model import Customer, OrderLine, OrderStatus
from orders.saga import SagaState
from orders.store import Loaded


class OrderDetails(BaseModel):
    id: str
    status: OrderStatus
    reason: str | None
    attention: str | None
    customer: Customer
    ship_to: str
    lines: list[OrderLine]
    total: int
    currency: str
    placed_at: float
    updated_at: float
    version: int
    saga: SagaState
    emails: dict[str, str]

    @classmethod
    def of(cls, loaded: Loaded) -> OrderDetails:
        order, saga = loaded.order, loaded.saga
        return cls(
            id=order.id,
            status=order.status,
            reason=order.reason,
            attention=order.attention,
            customer=order.customer,
            ship_to=order.ship_to,
            lines=order.lines,
            total=order.total,
            currency=order.currency,
            placed_at=order.placed_at,
            updated_at=order.updated_at,
            version=loaded.version,
            saga=saga,
            emails=dict(saga.facts.get("emails", {})),
        )

    def public(self) -> dict[str, Any]:
        """For --json output: everything except nothing secret (the payment token is not here)."""
        return self.model_dump(mode="json")
