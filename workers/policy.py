"""Retry policy and backoff: pure functions, no I/O, no clock, no global random state.

The backoff for attempt ``n`` (1-based, the attempt that just failed) is::

    delay = min(cap, base * factor ** (n - 1))
    delay = delay * (1 - jitter * u)        # u drawn from [0, 1) by the injected source

so with ``jitter=0`` the schedule is exact, with ``jitter=1`` it is "full jitter" (anywhere
in [0, delay]), and the cap is never exceeded. Jitter only ever shortens a delay, which keeps
the bounds easy to state: ``delay * (1 - jitter) <= actual <= delay``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

RandomSource = Callable[[], float]
"""Returns a float in [0, 1): ``random.random`` in production, a constant in tests."""


MAX_DELAY = 365 * 24 * 3600.0
"""The longest delay anything in the runtime accepts (a year): a retry, a delayed job, a deferral."""


class RetryPolicy(BaseModel):
    """How often a job is attempted and how long it waits between attempts.

    Every field is finite and bounded, so no policy can overflow the backoff or schedule a job
    beyond ``MAX_DELAY``: at most 1,000 attempts, ``base`` and ``cap`` at most a year, ``factor``
    at most 100.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(default=5, ge=1, le=1000, description="Attempts in all, the first included.")
    base: float = Field(
        default=1.0, ge=0, le=MAX_DELAY, description="Delay after the first failure, in seconds."
    )
    factor: float = Field(
        default=2.0, ge=1, le=100, description="Each further delay is this many times longer."
    )
    cap: float = Field(default=300.0, ge=0, le=MAX_DELAY, description="No delay is longer than this.")
    jitter: float = Field(default=0.2, ge=0, le=1, description="Fraction a delay may be shortened at random.")

    @model_validator(mode="after")
    def _cap_covers_base(self) -> RetryPolicy:
        if self.cap < self.base:
            raise ValueError("cap must be at least base")
        return self


def backoff_delay(attempt: int, policy: RetryPolicy, rand: RandomSource) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exponent = min(attempt - 1, 64)  # factor <= 100: 100**64 is far from overflow, and past the cap
    raw = min(policy.cap, policy.base * policy.factor**exponent)
    return raw * (1.0 - policy.jitter * min(max(rand(), 0.0), 1.0))


def clamp_delay(seconds: float) -> float:
    """A delay brought into [0, MAX_DELAY]; NaN counts as 0 (defensive: delays come from job code)."""
    if math.isnan(seconds):
        return 0.0
    return min(max(0.0, seconds), MAX_DELAY)


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Run the job again ``delay`` seconds from now."""

    delay: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Stop: move the job to its queue's dead-letter queue."""

    reason: str


Decision = RetryAt | DeadLetter


def decide(
    attempt: int,
    policy: RetryPolicy,
    *,
    retryable: bool,
    requested_delay: float | None,
    rand: RandomSource,
) -> Decision:
    """What follows failed attempt ``attempt``: another attempt after a delay, or the dead-letter queue.

    ``requested_delay`` is a delay the job asked for (``Retryable(delay=...)``); it replaces
    the computed backoff but not the attempt budget.
    """
    if not retryable:
        return DeadLetter("permanent error")
    if attempt >= policy.max_attempts:
        return DeadLetter(f"attempts exhausted ({attempt} of {policy.max_attempts})")
    if requested_delay is not None:
        return RetryAt(clamp_delay(requested_delay))
    return RetryAt(backoff_delay(attempt, policy, rand))
