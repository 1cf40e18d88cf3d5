"""An app with schedules, for the scheduler tests: every run records its occurrence in Redis."""

from __future__ import annotations

from pydantic import BaseModel

from workers import JobContext, JobRegistry

registry = JobRegistry()
RUNS = "test:schedule-runs"  # one entry per run: the occurrence's key


class Tick(BaseModel):
    label: str = "tick"


@registry.job("sched.tick", queue="ticks")
def tick(payload: Tick, ctx: JobContext) -> str:
    ctx.redis.rpush(RUNS, ctx.idempotency_key or "?")
    return payload.label


registry.schedule("every-second", tick, every=1, args={"label": "fast"})
registry.schedule("five-minutes", "sched.tick", cron="*/5 * * * *")


broken = JobRegistry()
broken.schedule("orphan", "no.such.type", every=60)  # its job type is nowhere: refused at start
