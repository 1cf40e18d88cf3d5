"""The benchmark's jobs, the same work written for each system.

- ``noop``: does nothing.
- ``write``: an idempotency-guarded write, ``SET bench:seen:<key> 1 NX EX 3600`` and, only if
  that set the key, ``INCR bench:counter``. A run is correct only if the counter ends equal
  to the number of jobs. chumon's job type also declares the runtime's idempotency key.

Payloads are ``{"n": i}`` (no-op) and ``{"key": "<i>"}`` (write) for every system. rq's
functions and dramatiq's actors take the payload as their one positional argument; everything
is JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bench import COUNTER_KEY, QUEUE, SEEN_PREFIX
from workers import DeadLetterNotice, JobContext, JobRegistry, JobType

SEEN_TTL = 3600


def payload(workload: str, i: int) -> dict[str, Any]:
    return {"n": i} if workload in ("noop", "value") else {"key": str(i)}


def write_once(redis: Redis, key: str) -> bool:
    if redis.set(SEEN_PREFIX + key, 1, nx=True, ex=SEEN_TTL):
        redis.incr(COUNTER_KEY)
        return True
    return False


# -- chumon --------------------------------------------------------------------------------------
registry = JobRegistry(on_dead_letter="bench.dead_letter")


class Numbered(BaseModel):
    n: int


class Keyed(BaseModel):
    key: str


@registry.job("bench.noop", queue=QUEUE)
def noop(payload: Numbered, ctx: JobContext) -> None:
    return None


@registry.job("bench.write", queue=QUEUE, idempotency_key=lambda p: p.key)
def guarded_write(payload: Keyed, ctx: JobContext) -> bool:
    return write_once(ctx.redis, payload.key)


@registry.job("bench.dead_letter", queue="bench-dead-letters")
def dead_letter(notice: DeadLetterNotice, ctx: JobContext) -> None:
    """The dead-letter hook: any call means a job died, which fails the run."""
    ctx.redis.incr("bench:dead_letters")


@registry.job("bench.value", queue=QUEUE)
def value(payload: Numbered, ctx: JobContext) -> dict[str, int]:
    """A no-op that returns a value: its result is written (rq's result stream), a no-op's is not."""
    return {"n": payload.n}


CHUMON_TYPES: dict[str, JobType[Any]] = {"noop": noop, "write": guarded_write, "value": value}


# -- rq --------------------------------------------------------------------------------------------
def rq_noop(payload: dict[str, Any]) -> None:
    return None


def rq_write(payload: dict[str, Any]) -> bool:
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    return write_once(job.connection, payload["key"])


RQ_FUNCTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {"noop": rq_noop, "write": rq_write}


# -- bullmq ----------------------------------------------------------------------------------------
BullmqProcessor = Callable[[Any, str], Awaitable[Any]]


def bullmq_processor(workload: str, redis: AsyncRedis) -> BullmqProcessor:
    """The processor for a bullmq Worker; ``redis`` is the job's own asyncio client."""

    async def process_noop(job: Any, token: str) -> None:
        return None

    async def process_write(job: Any, token: str) -> bool:
        key = job.data["key"]
        if await redis.set(SEEN_PREFIX + key, 1, nx=True, ex=SEEN_TTL):
            await redis.incr(COUNTER_KEY)
            return True
        return False

    return process_noop if workload == "noop" else process_write


# -- dramatiq --------------------------------------------------------------------------------------
def dramatiq_actors(broker: Any, redis: Redis) -> dict[str, Any]:
    """The two actors, declared on ``broker`` (not on dramatiq's global one, so that importing
    this module needs no dramatiq); ``redis`` is the write job's client (thread-safe pool)."""
    import dramatiq

    def noop(payload: dict[str, Any]) -> None:
        return None

    def write(payload: dict[str, Any]) -> bool:
        return write_once(redis, payload["key"])

    return {  # one decorator each: a dramatiq decorator keeps the first function's name
        "noop": dramatiq.actor(queue_name=QUEUE, broker=broker)(noop),
        "write": dramatiq.actor(queue_name=QUEUE, broker=broker)(write),
    }
