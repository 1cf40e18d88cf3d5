"""Job types that show the runtime itself (``make demo-runtime``).

Their effects are Redis writes under the ``demo`` part of the key space, so the demo can
count them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from workers import JobContext, JobRegistry, Permanent, Retryable, RetryPolicy

registry = JobRegistry()

QUEUE = "demo"


class Work(BaseModel):
    item: int = Field(ge=0)


class Flaky(BaseModel):
    item: int = Field(ge=0)
    failures: int = Field(ge=0, le=10, description="attempts that fail before one succeeds")


class Doomed(BaseModel):
    item: int = Field(ge=0)
    permanent: bool = False


class Deposit(BaseModel):
    account: str = Field(min_length=1)
    amount: int = Field(gt=0)
    reference: str = Field(min_length=1, description="the client's reference: one deposit per reference")


@registry.job("demo.work", queue=QUEUE)
def work(payload: Work, ctx: JobContext) -> dict[str, int]:
    """Succeeds at once."""
    return {"item": payload.item, "square": payload.item**2}


@registry.job("demo.flaky", queue=QUEUE, retry=RetryPolicy(max_attempts=4, base=1.0, factor=2.0, jitter=0.2))
def flaky(payload: Flaky, ctx: JobContext) -> str:
    """Fails its first ``failures`` attempts with a transient error, then succeeds."""
    if ctx.attempt <= payload.failures:
        raise Retryable(f"upstream busy (attempt {ctx.attempt} of {ctx.max_attempts})")
    return f"succeeded on attempt {ctx.attempt}"


@registry.job("demo.doomed", queue=QUEUE, retry=RetryPolicy(max_attempts=3, base=0.5, jitter=0.2))
def doomed(payload: Doomed, ctx: JobContext) -> None:
    """Never succeeds: a permanent error at once, or transient errors until attempts run out."""
    if payload.permanent:
        raise Permanent(f"item {payload.item} can never be processed")
    raise ConnectionError(f"item {payload.item}: peer unreachable")


@registry.job("demo.deposit", queue=QUEUE, idempotency_key=lambda p: p.reference)
def deposit(payload: Deposit, ctx: JobContext) -> dict[str, int | str]:
    """Adds to a balance, exactly once per reference.

    The reference is the job's idempotency key, so a second delivery of the same deposit
    finishes as a duplicate; and the addition is a Redis effect (``ctx.effects``), applied in
    the same atomic step that marks the job done, so a worker killed mid-job adds nothing and
    the retry adds it once. (A direct ``ctx.redis.hincrby`` would be applied at once, and again
    by the retry.)
    """
    ctx.effects.hincrby("demo:balances", payload.account, payload.amount)
    return {"account": payload.account, "added": payload.amount}
