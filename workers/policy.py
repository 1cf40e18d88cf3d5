"""Retry policy and backoff: pure functions, no I/O, no clock, no global random state.

The backoff for attempt ``n`` (1-based, the attempt that just failed) is::

    delay = min(cap, base * factor ** (n - 1))
    delay = delay * (1 - jitter * u)        # u drawn from [0, 1) by the injected source

so with ``jitter=0`` the schedule is exact, with ``jitter=1`` it is "full jitter" (anywhere
in [0, delay]), and the cap is never exceeded. Jitter only ever shortens a delay, which keeps
the bounds easy to state: ``delay * (1 - jitter) <= actual <= delay``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

RandomSource = Callable[[], float]
"""Returns a float in [0, 1): ``random.random`` in production, a constant in tests."""


class RetryPolicy(BaseModel):
    """How often a job is attempted and how long it waits between attempts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=5, ge=1, le=1000, description="Attempts in all, the first included.")
    base: float = Field(default=1.0, ge=0, description="Delay after the first failure, in seconds.")
    factor: float = Field(default=2.0, ge=1, description="Each further delay is this many times longer.")
    cap: float = Field(default=300.0, ge=0, description="No delay is longer than this.")
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
    exponent = min(attempt - 1, 64)  # beyond this the cap has long been reached; avoids float overflow
    raw = min(policy.cap, policy.base * policy.factor**exponent)
    return raw * (1.0 - policy.jitter * rand())


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
        return RetryAt(max(0.0, requested_delay))
    return RetryAt(backoff_delay(attempt, policy, rand))
