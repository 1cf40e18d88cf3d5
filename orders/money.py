"""Money as integer minor units (cents): no float ever touches an amount.

Every amount the shop stores is at most ``MAX_AMOUNT``: 9,999,999,999,999 minor units
(99,999,999,999.99), thirteen digits. The place script prices an order in Lua, whose
numbers are doubles (exact to 2^53, about 9.007e15), and writes it back through Redis's
cjson, which prints numbers with ``%.14g``: fourteen significant digits. A thirteen-digit
integer survives both exactly; a larger one would come back as ``9.99899999999e+15``. So a
price above the bound is refused when it is set, and an order whose total would exceed it
is refused when it is placed (``orders.errors.OrderTooLarge``), before anything is written.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_UNITS = 100  # every currency the shop sells in has two decimals
MAX_AMOUNT = 10**13 - 1
"""The largest price or order total, in minor units (see the module docstring)."""


def parse_amount(text: str) -> int:
    """'19.99' -> 1999. Refuses negatives, more than two decimals and non-numbers, naming the input."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative amount")
    minor = value * MINOR_UNITS
    if minor != minor.to_integral_value():
        raise ValueError(f"{text!r} has more than two decimals")
    return int(minor)


def format_amount(minor: int, currency: str) -> str:
    """1999, 'EUR' -> 'EUR 19.99'."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), MINOR_UNITS)
    return f"{currency} {sign}{whole}.{cents:02d}"
