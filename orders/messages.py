"""The envelope every command and event carries: id, version, order, correlation, time."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


def new_id() -> str:
    return uuid.uuid4().hex


class Message(BaseModel):
    """Base of commands and events.

    ``correlation_id`` is the same for every message of one order's flow; ``causation_id``
    is the id of the message that caused this one (None for the customer's own request).
    ``schema_version`` is the version of the message's shape, for readers of old messages.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    id: str = Field(default_factory=new_id)
    version: int = Field(default=1, ge=1, description="schema version of this message type")
    order_id: str = Field(min_length=1)
    correlation_id: str = Field(min_length=1)
    causation_id: str | None = None
    at: float = Field(description="when the message was created (Unix time)")

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__
