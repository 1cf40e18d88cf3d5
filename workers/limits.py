"""Rate limits: at most N jobs per window, across every worker and host, enforced when jobs are claimed.

A limit applies to a queue (``CHUMON_QUEUE_RATE_LIMITS="payments=50/s,shipping=20/s"``) or to a
job type (``registry.job(..., rate_limit=RateLimit.parse("10/s"))``, or
``CHUMON_JOB_RATE_LIMITS="notifications.confirmation=10/s"``). Each is a fixed window kept in
Redis (``Keys.limiter``): the claim script counts the jobs it starts in the current window and
starts no more once the count reaches the limit; the window's end is the next time the worker
looks. Every worker must be given the same limits (the same settings and code), as in BullMQ.

A job can also say that the other side asked to slow down (an HTTP 429, an SMTP 421) by
raising ``RateLimited(delay=D)``: the job waits D seconds without using an attempt, and its
queue (and its type, if that has a limit) is paused for D seconds for every worker.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|m|min|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class RateLimit(BaseModel):
    """At most ``max`` jobs started per ``per`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max: int = Field(ge=1, le=1_000_000, description="Jobs started per window.")
    per: float = Field(ge=0.01, le=86_400, description="The window, in seconds.")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"50/s"``, ``"10/min"``, ``"100/2s"``, ``"5/500ms"``; ValueError naming the text otherwise."""
        match = _LIMIT.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a rate like 50/s, 10/min or 100/2s")
        count, amount, unit = match.groups()
        return cls(max=int(count), per=float(amount or 1) * _UNIT[unit])

    def plan(self) -> dict[str, Any]:
        """As the claim script takes it."""
        return {"max": self.max, "ms": max(1, round(self.per * 1000))}

    def __str__(self) -> str:
        return f"{self.max}/{self.per:g}s"


def parse_limits(text: str | dict[str, Any] | None) -> dict[str, RateLimit]:
    """``"payments=50/s, shipping=20/s"`` (or a mapping) -> {name: RateLimit}."""
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k): v if isinstance(v, RateLimit) else RateLimit.parse(str(v)) for k, v in text.items()}
    limits = {}
    for part in re.split(r"[,\s]+", text.strip()):
        name, sep, rate = part.partition("=")
        if not sep or not name:
            raise ValueError(f"{part!r} is not NAME=RATE, e.g. payments=50/s")
        limits[name] = RateLimit.parse(rate)
    return limits
