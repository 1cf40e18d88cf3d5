"""The order aggregate and its parts. Pure: no Redis, no clock of its own.

Money is integer minor units. An order's lines carry the catalogue price at the moment the
order was placed; the total is derived from them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.networks import validate_email

from orders.money import MAX_AMOUNT

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SKU = re.compile(SKU_PATTERN)


def check_sku(sku: str) -> str:
    if not _SKU.match(sku):
        raise ValueError(f"SKU {sku!r} is invalid: 1-64 letters, digits, '.', '_' or '-'")
    return sku


@lru_cache(maxsize=8192)
def normalized_email(value: str) -> str:
    """What pydantic's ``EmailStr`` makes of ``value`` (the same check and the same error),
    remembered: every process reads the same orders' addresses again at each step (an order is
    read four to eight times), and email-validator's parse was the largest part of reading one.
    An address it refuses is not remembered (the error is raised again each time)."""
    return validate_email(value)[1]


EmailAddress = Annotated[
    str, AfterValidator(normalized_email), WithJsonSchema({"type": "string", "format": "email"})
]
"""``EmailStr``, its check remembered (``normalized_email``)."""


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: EmailAddress

    @field_validator("name")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    @field_validator("email")
    @classmethod
    def _deliverable(cls, value: str, info: ValidationInfo) -> str:
        """With the context ``{"smtputf8": False}`` (a mail server without SMTPUTF8), refuse an
        address whose local part is not ASCII: no such server can ever deliver to it."""
        context = info.context or {}
        if context.get("smtputf8", True) is False and not value.rpartition("@")[0].isascii():
            raise ValueError(
                f"{value!r} has a non-ASCII local part; the shop's mail server cannot send to it "
                "(it does not offer SMTPUTF8): give an ASCII address"
            )
        return value


class LineRequest(BaseModel):
    """A line as the customer asks for it: what and how many."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str
    quantity: int = Field(gt=0, le=10_000)

    @field_validator("sku")
    @classmethod
    def _sku_format(cls, value: str) -> str:
        return check_sku(value)


class OrderLine(LineRequest):
    """A line of a placed order, priced from the catalogue."""

    unit_price: int = Field(ge=0, le=MAX_AMOUNT, description="minor units")

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


def payment_hint(token: str) -> str:
    """What the shop keeps of a payment token: enough for a person to tell two apart, never the token
    (``tok_transient_2`` -> ``tok_…nt_2``)."""
    return "tok_…" + token[-4:] if len(token) > 8 else "tok_…"


class Order(BaseModel):
    """An order as the write side keeps it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    customer: Customer
    ship_to: str = Field(min_length=5, max_length=300)
    lines: list[OrderLine] = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    total: int = Field(ge=0, le=MAX_AMOUNT, description="minor units")
    payment_hint: str = Field(description="the payment token, masked: the token itself is not kept here")
    status: OrderStatus = OrderStatus.PENDING
    reason: str | None = None
    attention: str | None = Field(default=None, description="set when a person must step in")
    correlation_id: str
    placed_at: float
    updated_at: float

    @model_validator(mode="before")
    @classmethod
    def _token_to_hint(cls, data: Any) -> Any:
        """Orders stored before tokens left the order document carry ``payment_token``: masked here."""
        if isinstance(data, dict) and "payment_token" in data and "payment_hint" not in data:
            data = {**data, "payment_hint": payment_hint(str(data["payment_token"]))}
            del data["payment_token"]
        return data

    @model_validator(mode="after")
    def _total_matches_lines(self) -> Order:
        if self.total != sum(line.total for line in self.lines):
            raise ValueError("total does not match the lines")
        return self

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)
