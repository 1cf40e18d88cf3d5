"""Job types for the runtime on Redis Cluster (tests/integration/test_cluster.py).

``c.tally`` runs on whichever queue it is enqueued to: its start is recorded at once (every start,
so retries show), its effect with its completion, in its queue's slot (``{queue}`` in the key), as
the cluster layout asks."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from workers import DeadLetterNotice, JobContext, JobRegistry, Permanent, RetryPolicy
from workers.keys import tag_of

registry = JobRegistry(on_dead_letter="c.hook")


class Tally(BaseModel):
    n: int = Field(ge=0)
    ms: float = Field(default=0.0, ge=0, le=10_000)


def starts(queue: str) -> str:
    return f"starts:{{{tag_of(queue)}}}"


def effects(queue: str) -> str:
    return f"effects:{{{tag_of(queue)}}}"  # in the queue's slot: its group's for queue@group


HOOKS_SEEN = "hooks:seen"


@registry.job(
    "c.tally",
    queue="alpha",
    idempotency_key=lambda p: f"tally-{p.n}",
    retry=RetryPolicy(max_attempts=30, base=0.2, cap=1.0),
)
def tally(payload: Tally, ctx: JobContext) -> int:
    ctx.redis.rpush(starts(ctx.queue), f"{payload.n}:{ctx.execution_id}")
    time.sleep(payload.ms / 1000)
    ctx.effects.hincrby(effects(ctx.queue), str(payload.n), 1)
    return payload.n


@registry.job("c.doomed", queue="alpha")
def doomed(payload: Tally, ctx: JobContext) -> None:
    raise Permanent(f"doomed {payload.n}")


@registry.job("c.stray", queue="alpha")
def stray(payload: Tally, ctx: JobContext) -> None:
    ctx.effects.incrby("stray-counter", 1)  # no tag: outside its queue's slot, refused


@registry.job("c.hook", queue="hooks")
def hook(notice: DeadLetterNotice, ctx: JobContext) -> None:
    ctx.redis.rpush(HOOKS_SEEN, notice.job_id)
