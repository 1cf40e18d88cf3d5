"""One adapter per system: how app code enqueues to it, and how to read its counts from Redis.

Every adapter enqueues the same payloads (bench.jobs.payload) and counts from Redis itself,
so a worker's own bookkeeping is never taken on trust.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Iterator
from typing import Any, Protocol

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench import QUEUE
from bench.jobs import CHUMON_TYPES, RQ_FUNCTIONS, payload
from workers import Enqueuer, RuntimeSettings
from workers.keys import Keys, dead_letter_queue

SYSTEMS = ("rq", "chumon", "bullmq")


class Adapter(Protocol):
    system: str
    finished_key: str  # the sorted set of finished jobs, polled during a drain

    def add_each(self, workload: str, numbers: range) -> None: ...
    def add_bulk(self, workload: str, numbers: range, batch: int) -> None: ...
    def queued(self) -> int: ...
    def finished(self) -> int: ...
    def problems(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def chunks(numbers: range, size: int) -> Iterator[range]:
    for start in range(0, len(numbers), size):
        yield numbers[start : start + size]


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def bullmq_unavailable() -> str | None:
    """Why bullmq cannot run here, or None if it can."""
    try:
        import bullmq  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc}); pip install bullmq"
    return None


class RqAdapter:
    """rq 2.x with the JSON serializer; bulk is ``enqueue_many`` on a pipeline."""

    system = "rq"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.queue = Queue(QUEUE, connection=redis, serializer=JSONSerializer)
        self.finished_key = Keys.RQ_FINISHED + QUEUE

    def add_each(self, workload: str, numbers: range) -> None:
        func = RQ_FUNCTIONS[workload]
        for i in numbers:
            self.queue.enqueue(func, payload(workload, i))

    def add_bulk(self, workload: str, numbers: range, batch: int) -> None:
        func = RQ_FUNCTIONS[workload]
        for part in chunks(numbers, batch):
            with self.redis.pipeline() as pipe:
                jobs = [Queue.prepare_data(func, (payload(workload, i),)) for i in part]
                self.queue.enqueue_many(jobs, pipeline=pipe)
                pipe.execute()

    def queued(self) -> int:
        return int(self.redis.llen(Keys.RQ_QUEUE + QUEUE))

    def finished(self) -> int:
        return int(self.redis.zcard(self.finished_key))

    def problems(self) -> dict[str, int]:
        return {
            "failed": int(self.redis.zcard(Keys.RQ_FAILED + QUEUE)),
            "started": int(self.redis.zcard(Keys.RQ_WIP + QUEUE)),
        }

    def close(self) -> None:
        pass


class ChumonAdapter:
    """chumon's Enqueuer, with the default runtime settings."""

    system = "chumon"

    def __init__(self, redis: Redis, url: str) -> None:
        self.redis = redis
        self.settings = RuntimeSettings(redis_url=url)
        self.keys = Keys(self.settings.key_prefix)
        self.enqueuer = Enqueuer(redis, self.settings)
        self.finished_key = self.keys.finished(QUEUE)

    def add_each(self, workload: str, numbers: range) -> None:
        job_type = CHUMON_TYPES[workload]
        for i in numbers:
            self.enqueuer.enqueue(job_type, payload(workload, i))

    def add_bulk(self, workload: str, numbers: range, batch: int) -> None:
        job_type = CHUMON_TYPES[workload]
        for part in chunks(numbers, batch):
            self.enqueuer.enqueue_many(job_type, [payload(workload, i) for i in part])

    def queued(self) -> int:
        return int(self.redis.llen(self.keys.queue(QUEUE)))

    def finished(self) -> int:
        return int(self.redis.zcard(self.finished_key))

    def problems(self) -> dict[str, int]:
        return {
            "failed": int(self.redis.zcard(self.keys.failed(QUEUE))),
            "dead_lettered": int(self.redis.llen(self.keys.queue(dead_letter_queue(QUEUE)))),
            "scheduled_retries": int(self.redis.zcard(self.keys.scheduled(QUEUE))),
            "started": int(self.redis.zcard(self.keys.wip(QUEUE))),
            "dead_letter_hooks": int(self.redis.get("bench:dead_letters") or 0),
        }

    def close(self) -> None:
        pass


class BullmqAdapter:
    """The Python port of BullMQ (asyncio), driven from its own event loop."""

    system = "bullmq"

    def __init__(self, redis: Redis, url: str) -> None:
        from bullmq import Queue as BullQueue

        self.redis = redis
        self.loop = asyncio.new_event_loop()
        self.queue: Any = BullQueue(QUEUE, {"connection": url})
        self.prefix = f"bull:{QUEUE}:"
        self.finished_key = self.prefix + "completed"

    def add_each(self, workload: str, numbers: range) -> None:
        async def run() -> None:
            for i in numbers:
                await self.queue.add(workload, payload(workload, i))

        self.loop.run_until_complete(run())

    def add_bulk(self, workload: str, numbers: range, batch: int) -> None:
        async def run() -> None:
            for part in chunks(numbers, batch):
                await self.queue.addBulk([{"name": workload, "data": payload(workload, i)} for i in part])

        self.loop.run_until_complete(run())

    def queued(self) -> int:
        return int(self.redis.llen(self.prefix + "wait"))

    def finished(self) -> int:
        return int(self.redis.zcard(self.finished_key))

    def problems(self) -> dict[str, int]:
        return {
            "failed": int(self.redis.zcard(self.prefix + "failed")),
            "active": int(self.redis.llen(self.prefix + "active")),
        }

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.close())
        self.loop.close()


def adapter(system: str, redis: Redis, url: str) -> Adapter:
    if system == "rq":
        return RqAdapter(redis)
    if system == "chumon":
        return ChumonAdapter(redis, url)
    if system == "bullmq":
        return BullmqAdapter(redis, url)
    raise ValueError(f"unknown system {system!r}")
