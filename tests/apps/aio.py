"""Job types of the async and isolated tests (tests/integration/test_async_and_isolated.py).

Async handlers await; isolated handlers run in a child process, so they are module-level
functions, and their effects go to Redis under ``test:`` where a test can count them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time

from pydantic import BaseModel, Field

from workers import Cancelled, JobContext, JobRegistry, RateLimited, RetryPolicy

registry = JobRegistry()
FAST_RETRY = RetryPolicy(max_attempts=3, base=0.05, factor=1.0, jitter=0.0)


class Nap(BaseModel):
    name: str = "n"
    seconds: float = Field(default=0.0, ge=0)
    failures: int = Field(default=0, ge=0)


class Crunch(BaseModel):
    n: int = Field(ge=0)
    how: str = "ok"  # ok | exit | segv | memory | permanent | slow | rate | report


@registry.job("a.nap", queue="aio", retry=FAST_RETRY, idempotency_key=lambda p: p.name)
async def nap(payload: Nap, ctx: JobContext) -> dict[str, object]:
    """Awaits, fails ``failures`` times, records its run, counts once through ``ctx.effects``."""
    await asyncio.sleep(payload.seconds)
    ctx.redis.rpush(f"test:nap:{payload.name}", ctx.attempt)
    if ctx.attempt <= payload.failures:
        raise RuntimeError(f"failure {ctx.attempt}")
    ctx.effects.incrby("test:naps", 1)
    return {"name": payload.name, "attempt": ctx.attempt}


@registry.job("a.stuck", queue="aio", retry=RetryPolicy(max_attempts=2, base=0.05, jitter=0.0), timeout=0.3)
async def stuck(payload: Nap, ctx: JobContext) -> None:
    """Awaits past its 0.3 s limit: the cancellation lands in the await."""
    ctx.redis.rpush(f"test:stuck:{payload.name}", ctx.attempt)
    await asyncio.sleep(60)


@registry.job("a.polite", queue="aio", retry=FAST_RETRY)
async def polite(payload: Nap, ctx: JobContext) -> str:
    """Told to slow down on its first run; stops when cancelled."""
    if payload.failures and not ctx.redis.incr(f"test:polite:{payload.name}") > payload.failures:
        raise RateLimited("429", delay=0.2)
    while payload.seconds and not ctx.cancelled:
        await asyncio.sleep(0.02)
    if ctx.cancelled:
        raise Cancelled()
    return "ok"


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


@registry.job("a.crunch", queue="cpu", isolated=True, retry=FAST_RETRY, timeout=20, permanent=(KeyError,))
def crunch(payload: Crunch, ctx: JobContext) -> dict[str, int]:
    """CPU-bound, in a child process; ``how`` picks a way to fail."""
    ctx.redis.rpush(f"test:crunch:{payload.how}", os.getpid())
    if payload.how == "exit":
        os._exit(3)
    if payload.how == "segv":
        ctypes.string_at(0)
    if payload.how == "memory":
        bytearray(1 << 62)
    if payload.how == "permanent":
        raise KeyError("no such thing")
    if payload.how == "slow":
        time.sleep(60)
    if payload.how == "rate" and ctx.redis.incr("test:crunch-rate") == 1:
        raise RateLimited("slow down", delay=0.2)
    if payload.how == "report":
        ctx.progress({"done": 50})
        ctx.log(f"half way in {os.getpid()}")
    ctx.effects.incrby("test:crunched", 1)
    return {"fib": _fib(payload.n), "pid": os.getpid()}


@registry.job("a.plain", queue="cpu")
def plain(payload: Crunch, ctx: JobContext) -> int:
    """The same work in a thread slot (the baseline the isolated type is compared with)."""
    return _fib(payload.n)
