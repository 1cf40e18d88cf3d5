"""Job types for the progress, job log, event and retention tests (tests/integration)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from workers import JobContext, JobRegistry, Keep, Permanent, RetryPolicy

registry = JobRegistry()


class Steps(BaseModel):
    steps: int = Field(default=3, ge=0, le=1000)
    fail_attempts: int = Field(default=0, ge=0)  # the first attempts that fail after reporting
    line: str = "step"


@registry.job("r.steps", queue="rq1", retry=RetryPolicy(max_attempts=3, base=0.05, jitter=0.0))
def steps(payload: Steps, ctx: JobContext) -> int:
    """Reports progress and one log line per step; fails its first ``fail_attempts`` attempts."""
    for i in range(1, payload.steps + 1):
        ctx.progress({"step": i, "of": payload.steps})
        ctx.log(f"{payload.line} {i}")
    if ctx.attempt <= payload.fail_attempts:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return payload.steps


class Plain(BaseModel):
    n: int = 0
    fail: bool = False


@registry.job("r.keep3", queue="rq1", keep_completed=3)
def keep3(payload: Plain, ctx: JobContext) -> int:
    return payload.n


@registry.job("r.keep_young", queue="rq1", keep_completed=Keep(age=1))
def keep_young(payload: Plain, ctx: JobContext) -> int:
    return payload.n


@registry.job("r.forget", queue="rq1", keep_completed=0)
def forget(payload: Plain, ctx: JobContext) -> int:
    return payload.n


@registry.job("r.fail_keep2", queue="rq1", keep_failed=2, retry=RetryPolicy(max_attempts=1))
def fail_keep2(payload: Plain, ctx: JobContext) -> None:
    raise Permanent(f"job {payload.n} fails")


@registry.job("r.fail_young", queue="rq1", keep_failed=Keep(age=1), retry=RetryPolicy(max_attempts=1))
def fail_young(payload: Plain, ctx: JobContext) -> None:
    raise Permanent(f"job {payload.n} fails")


class Nap(BaseModel):
    seconds: float = Field(ge=0, le=60)


@registry.job("r.nap", queue="rq1", timeout=60)
def nap(payload: Nap, ctx: JobContext) -> str:
    """Sleeps in small slices (a worker killed meanwhile leaves it stalled)."""
    deadline = time.monotonic() + payload.seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return "rested"
