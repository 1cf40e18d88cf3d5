"""Commands: requests to do something, named in the imperative. Each has one handler and may fail.

Every command here travels as the payload of a job on its service's queue (see
``jobs/orders.py`` for which job carries which command).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orders.messages import Message
from orders.model import Customer, LineRequest
from orders.money import MAX_AMOUNT


class ReserveInventory(Message):
    lines: list[LineRequest] = Field(min_length=1)


class ReleaseInventory(Message):
    reason: str


class CommitInventory(Message):
    """Turn the order's reservation into sold stock ("update inventory")."""


class ChargePayment(Message):
    amount: int = Field(ge=0, le=MAX_AMOUNT)
    currency: str
    payment_hint: str = Field(
        default="", description="the token, masked; the handler fetches the token itself"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_token(cls, data: Any) -> Any:
        """A command queued before tokens left the job data still carries one: it is dropped, unread."""
        if isinstance(data, dict) and "token" in data:
            data = {k: v for k, v in data.items() if k != "token"}
        return data


class RefundPayment(Message):
    reason: str


class ArrangeShipping(Message):
    ship_to: str
    lines: list[LineRequest] = Field(min_length=1)


class CancelShipment(Message):
    reason: str


class SendConfirmationEmail(Message):
    pass


class SendCancellationEmail(Message):
    reason: str


class CheckStepTimeout(Message):
    """Sent delayed when a step starts: if the step has not answered by then, it has failed."""

    step: str


Command = (
    ReserveInventory
    | ReleaseInventory
    | CommitInventory
    | ChargePayment
    | RefundPayment
    | ArrangeShipping
    | CancelShipment
    | SendConfirmationEmail
    | SendCancellationEmail
    | CheckStepTimeout
)


class PlaceOrder(BaseModel):
    """The customer's request. Handled at once by ``place_order``, not as a job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer: Customer
    lines: list[LineRequest] = Field(min_length=1, max_length=100)
    ship_to: str = Field(min_length=5, max_length=300)
    payment_token: str = Field(default="tok_ok", pattern=r"^tok_[A-Za-z0-9_]{1,60}$")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
