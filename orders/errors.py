"""Errors of the order domain.

A *transient* error says "ask again later" (a gateway that did not answer); the job
adapters turn it into a retry. A definite "no" from a service (a declined card, a refused
address, too little stock) is not an error here: it is a result, and the saga reacts to it.
"""

from __future__ import annotations


class TransientError(Exception):
    """The outcome is unknown or the service is unavailable: try again (with the same key)."""


class GatewayUnavailable(TransientError):
    """The payment gateway failed to process or to answer."""


class GatewayTimeout(TransientError):
    """The payment gateway did not answer in time; the charge may or may not exist."""


class CarrierUnavailable(TransientError):
    """The carrier failed to process or to answer."""


class PartyBusy(TransientError):
    """The other side asked to slow down (an HTTP 429, an SMTP 421): try again after ``retry_after``
    seconds. The job adapters turn it into the runtime's RateLimited: no attempt is used, and the
    party's queue pauses for every worker."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MailTransient(TransientError):
    """The mail server deferred the message (4xx) or could not be reached."""


class MailRejected(Exception):
    """The mail server refused the message for good (5xx)."""


class UnknownSku(ValueError):
    """An order names a SKU that is not in the catalogue."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"unknown SKU {sku!r}: not in the catalogue")
        self.sku = sku


class OrderTooLarge(ValueError):
    """An order's total would exceed the largest amount the shop stores (orders.money.MAX_AMOUNT)."""

    def __init__(self, total: int, limit: int) -> None:
        super().__init__(
            f"total: the order comes to {total} minor units, above the largest allowed total of "
            f"{limit} ({limit // 100}.{limit % 100:02d}); nothing was written"
        )
        self.total = total
        self.limit = limit


class IdempotencyConflict(ValueError):
    """An idempotency key was used before, by the same customer, for a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used by this customer for a different order request "
            "(other items, address, payment token or name); use a new key for a new order. "
            "Nothing was written"
        )
        self.key = key


class CorruptOrder(ValueError):
    """An order's stored record cannot be read back (written by a bug, or by hand)."""

    def __init__(self, order_id: str, detail: str) -> None:
        super().__init__(f"order {order_id!r}: its stored record cannot be read: {detail}")
        self.order_id = order_id
