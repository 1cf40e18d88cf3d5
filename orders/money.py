"""Money as integer minor units (cents): no float ever touches an amount."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_UNITS = 100  # every currency the shop sells in has two decimals


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
