"""Job types for the flow tests. Every run is recorded in Redis lists under ``test:flow``, so the
tests count runs across worker processes from Redis's own records."""

from __future__ import annotations

import json
import threading

from pydantic import BaseModel, Field

from workers import DeadLetterNotice, JobContext, JobRegistry, Permanent

registry = JobRegistry(on_dead_letter="flow.dead_letter_hook")
PART_RUNS = "test:flow:part-runs"  # job ids of every run of a part
TOTAL_RUNS = "test:flow:total-runs"  # job ids of every run of a parent
SEEN = "test:flow:seen:"  # + parent job id: what ctx.children() showed it (JSON)
NOTICES = "test:flow:notices"  # job ids the dead-letter hook heard of
_PAUSE = threading.Event()  # never set: waited on


class Part(BaseModel):
    n: int
    seconds: float = Field(default=0.0, ge=0, le=5)
    fail: bool = False


class Total(BaseModel):
    label: str


@registry.job("flow.part", queue="a")
def part(payload: Part, ctx: JobContext) -> dict[str, int]:
    _PAUSE.wait(payload.seconds)
    ctx.redis.rpush(PART_RUNS, ctx.job_id)
    if payload.fail:
        raise Permanent(f"part {payload.n} cannot be done")
    return {"n": payload.n}


@registry.job("flow.total", queue="parents")
def total(payload: Total, ctx: JobContext) -> int:
    children = ctx.children()
    ctx.redis.rpush(TOTAL_RUNS, ctx.job_id)
    seen = [{"id": c.id, "type": c.job_type, "status": c.status, "result": c.result, "error": c.error}
            for c in children]  # fmt: skip
    ctx.redis.set(SEEN + ctx.job_id, json.dumps(seen))
    return sum(c.result["n"] if isinstance(c.result, dict) else (c.result or 0) for c in children)


class Keyed(BaseModel):
    key: str
    n: int


@registry.job("flow.keyed", queue="a", idempotency_key=lambda p: p.key)
def keyed(payload: Keyed, ctx: JobContext) -> dict[str, int]:
    ctx.redis.rpush(PART_RUNS, ctx.job_id)
    return {"n": payload.n}


@registry.job("flow.dead_letter_hook", queue="hooks")
def dead_letter_hook(payload: DeadLetterNotice, ctx: JobContext) -> None:
    ctx.redis.rpush(NOTICES, payload.job_id)
