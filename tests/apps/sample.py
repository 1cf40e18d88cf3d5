"""Job types the tests run. Their effects go to Redis lists and counters under ``test:``,
so tests can count them across processes."""

from __future__ import annotations

import os
import threading
import time

from pydantic import BaseModel, Field

from workers import (
    Cancelled,
    DeadLetterNotice,
    JobContext,
    JobRegistry,
    Permanent,
    RateLimited,
    Retryable,
    RetryPolicy,
)

registry = JobRegistry(on_dead_letter="t.dead_letter_hook")
SLICE = 0.02  # seconds a sleeping job sleeps between checks
_PAUSE = threading.Event()  # never set: waited on for a slice


class Echo(BaseModel):
    text: str = Field(min_length=1)
    n: int = 0


class Flaky(BaseModel):
    name: str
    failures: int = Field(ge=0)


class Keyed(BaseModel):
    key: str = Field(min_length=1)
    sleep: float = Field(default=0.0, ge=0)


class Sleep(BaseModel):
    name: str
    seconds: float = Field(ge=0)


class Gate(BaseModel):
    name: str


class Tally(BaseModel):
    n: int = Field(ge=0)
    ms: float = Field(default=0.0, ge=0, le=10_000)


class Deposit(BaseModel):
    account: str
    amount: int
    reference: str
    fail: bool = False
    also: str | None = None


@registry.job("t.echo", queue="q")
def echo(payload: Echo, ctx: JobContext) -> dict[str, object]:
    ctx.redis.rpush("test:echo", payload.text)
    return {"text": payload.text, "attempt": ctx.attempt}


@registry.job("t.flaky", queue="q", retry=RetryPolicy(max_attempts=5, base=0.1, factor=2.0, jitter=0.5))
def flaky(payload: Flaky, ctx: JobContext) -> int:
    ctx.redis.rpush(f"test:attempts:{payload.name}", time.time())
    if ctx.attempt <= payload.failures:
        raise RuntimeError(f"failure {ctx.attempt}")
    return ctx.attempt


@registry.job("t.once", queue="q", retry=RetryPolicy(max_attempts=1))
def once(payload: Echo, ctx: JobContext) -> int:
    """A job with a single attempt: if an attempt it never ran were counted, it would be dead."""
    ctx.redis.rpush("test:once", payload.text)
    return ctx.attempt


@registry.job("t.always_fails", queue="q")
def always_fails(payload: Echo, ctx: JobContext) -> None:
    raise ConnectionError(f"cannot reach the peer for {payload.text}")


@registry.job("t.permanent", queue="q")
def permanent(payload: Echo, ctx: JobContext) -> None:
    raise Permanent(f"{payload.text} is refused")


@registry.job("t.retry_later", queue="q", retry=RetryPolicy(max_attempts=2, base=60))
def retry_later(payload: Echo, ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise Retryable("come back in a moment", delay=0.2)
    return "second time lucky"


@registry.job("t.keyed", queue="q", idempotency_key=lambda p: p.key)
def keyed(payload: Keyed, ctx: JobContext) -> int:
    ctx.redis.rpush("test:keyed:started", payload.key)
    time.sleep(payload.sleep)
    ctx.redis.rpush("test:effects", payload.key)
    return int(ctx.redis.llen("test:effects"))


@registry.job("t.sleep", queue="q", timeout=30)
def sleep(payload: Sleep, ctx: JobContext) -> str:
    ctx.redis.rpush(f"test:started:{payload.name}", ctx.execution_id)
    until = time.monotonic() + payload.seconds
    while (left := until - time.monotonic()) > 0:  # short slices: a time-out or interrupt lands promptly
        _PAUSE.wait(min(SLICE, left))  # not time.sleep: libfaketime (a skewed clock) breaks it
    ctx.redis.rpush(f"test:finished:{payload.name}", ctx.execution_id)
    return payload.name


@registry.job("t.nap", queue="q", timeout=30)
def nap(payload: Sleep, ctx: JobContext) -> str:
    """Records its start, then only sleeps: its end needs no Redis (it may come during an outage)."""
    ctx.redis.rpush(f"test:started:{payload.name}", ctx.execution_id)
    time.sleep(payload.seconds)
    return payload.name


@registry.job("t.stuck", queue="q", timeout=1)
def stuck(payload: Sleep, ctx: JobContext) -> str:
    """One long blocking call: a time-out cannot land until it returns."""
    ctx.redis.rpush(f"test:started:{payload.name}", ctx.execution_id)
    time.sleep(payload.seconds)
    ctx.redis.rpush(f"test:finished:{payload.name}", ctx.execution_id)
    return payload.name


@registry.job("t.gated", queue="q")
def gated(payload: Gate, ctx: JobContext) -> str:
    """Fails until ``test:gate:<name>`` exists: lets a test decide when it may succeed."""
    if not ctx.redis.exists(f"test:gate:{payload.name}"):
        raise ConnectionError("gate closed")
    return "passed"


@registry.job("t.dead_letter_hook", queue="hooks")
def dead_letter_hook(payload: DeadLetterNotice, ctx: JobContext) -> None:
    ctx.redis.rpush("test:dead_letters", payload.model_dump_json())


@registry.job("t.deposit", queue="q", idempotency_key=lambda p: p.reference)
def deposit(payload: Deposit, ctx: JobContext) -> None:
    """Adds to a balance through ``ctx.effects``: applied with the job's completion, once."""
    ctx.effects.hincrby("test:balances", payload.account, payload.amount)
    if payload.also:
        ctx.effects.incrby(payload.also, 1)
    if payload.fail:
        raise RuntimeError("failed after recording its effects")


@registry.job(
    "t.tally",
    queue="q",
    idempotency_key=lambda p: f"tally-{p.n}",
    retry=RetryPolicy(max_attempts=20, base=0.2, cap=2.0),
)
def tally(payload: Tally, ctx: JobContext) -> int:
    """The chaos tier's job: its start is written at once (at least once: a retry writes again),
    its effect with its completion (once)."""
    ctx.redis.rpush(f"chaos:starts:{ctx.job_id}", time.time())
    time.sleep(payload.ms / 1000)
    ctx.effects.hincrby("chaos:effects", str(payload.n), 1)
    return payload.n


class Mark(BaseModel):
    name: str
    seconds: float = 0.0


@registry.job("t.record", queue="q")
def record(payload: Mark, ctx: JobContext) -> str:
    """Appends its name to ``test:order`` as it starts: the order jobs ran in."""
    ctx.redis.rpush("test:order", payload.name)
    return payload.name


@registry.job("t.busy_peer", queue="q")
def busy_peer(payload: Mark, ctx: JobContext) -> str:
    """Told to slow down by the other side the first time it runs (an HTTP 429)."""
    if ctx.redis.set(f"test:told:{payload.name}", 1, nx=True):
        raise RateLimited("429 Too Many Requests", delay=payload.seconds or 1.0)
    ctx.redis.rpush("test:order", payload.name)
    return f"passed on attempt {ctx.attempt}"


@registry.job("t.cancellable", queue="q", timeout=30)
def cancellable(payload: Mark, ctx: JobContext) -> str:
    """Works in slices until done or asked to stop."""
    ctx.redis.rpush(f"test:started:{payload.name}", ctx.execution_id)
    until = time.monotonic() + payload.seconds
    while time.monotonic() < until:
        if ctx.cancelled:
            raise Cancelled("asked to stop")
        _PAUSE.wait(SLICE)
    return "ran to the end"


@registry.job("t.limited", queue="limited", rate_limit="5/s")
def limited(payload: Mark, ctx: JobContext) -> None:
    """A job type with a rate limit of its own."""
    seconds, micros = ctx.redis.time()
    ctx.redis.rpush("test:limited", seconds + micros / 1e6)


@registry.job(
    "t.exit_at_once", queue="crash", retry=RetryPolicy(max_attempts=2, base=0.1, factor=1.0, jitter=0.0)
)
def exit_at_once(payload: Echo, ctx: JobContext) -> None:
    """Kills its worker process the moment it starts: before the worker can record the begin."""
    ctx.redis.rpush("test:exit_at_once", ctx.execution_id)
    os._exit(1)
