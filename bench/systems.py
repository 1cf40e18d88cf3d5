"""One adapter per system: how app code enqueues to it, and how to read its counts from Redis.

Every adapter enqueues the same payloads (bench.jobs.payload) and counts from Redis itself,
so a worker's own bookkeeping is never taken on trust. A job is done when the command that
records its completion runs in Redis: a ZADD to the finished registry (rq, chumon) or to the
``completed`` set (bullmq), the HDEL of its message when dramatiq acks it (dramatiq's Redis
broker keeps no record of finished messages).
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
from bench.jobs import CHUMON_TYPES, RQ_FUNCTIONS, dramatiq_actors, payload
from workers import Enqueuer, RuntimeSettings
from workers.keys import Keys, dead_letter_queue

SYSTEMS = ("rq", "chumon", "bullmq", "dramatiq")
PEERS = ("bullmq", "dramatiq")  # optional: the bench extra installs them
DRAMATIQ_THREADS = 8


class Adapter(Protocol):
    system: str
    done_key: str  # the key whose command records a job's completion...
    done_event: str  # ...and that command, as keyspace notifications name it
    done_command: str  # the command done() sends (the poller's own, left out of the counts)
    no_bulk: str | None  # why there is no bulk enqueue, or None

    def add_each(self, workload: str, numbers: range) -> None: ...
    def add_bulk(self, workload: str, numbers: range, batch: int) -> None: ...
    def queued(self) -> int: ...
    def done(self, client: Redis, total: int) -> int: ...
    def problems(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class FinishedSet:
    """Done jobs counted as the members of a sorted set (rq, chumon, bullmq)."""

    done_key: str
    done_event = "zadd"
    done_command = "zcard"
    no_bulk: str | None = None

    def done(self, client: Redis, total: int) -> int:
        return int(client.zcard(self.done_key))


def chunks(numbers: range, size: int) -> Iterator[range]:
    for start in range(0, len(numbers), size):
        yield numbers[start : start + size]


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def unavailable(system: str) -> str | None:
    """Why an optional peer (bullmq, dramatiq) cannot run here, or None if it can."""
    try:
        importlib.import_module(system)
    except ImportError as exc:
        return f"not installed ({exc}); pip install {system} (the bench extra)"
    return None


class RqAdapter(FinishedSet):
    """rq 2.x with the JSON serializer; bulk is ``enqueue_many`` on a pipeline."""

    system = "rq"

    def __init__(self, redis: Redis, queue: str = QUEUE) -> None:
        self.redis = redis
        self.name = queue  # another than chumon's when both serve at once (the latency run)
        self.queue = Queue(queue, connection=redis, serializer=JSONSerializer)
        self.done_key = Keys.RQ_FINISHED + queue

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
        return int(self.redis.llen(Keys.RQ_QUEUE + self.name))

    def problems(self) -> dict[str, int]:
        return {
            "failed": int(self.redis.zcard(Keys.RQ_FAILED + self.name)),
            "started": int(self.redis.zcard(Keys.RQ_WIP + self.name)),
        }

    def close(self) -> None:
        pass


class ChumonAdapter(FinishedSet):
    """chumon's Enqueuer, with the default runtime settings."""

    system = "chumon"

    def __init__(self, redis: Redis, url: str) -> None:
        self.redis = redis
        self.settings = RuntimeSettings(redis_url=url)
        self.keys = Keys(self.settings.key_prefix)
        self.enqueuer = Enqueuer(redis, self.settings)
        self.done_key = self.keys.finished(QUEUE)

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


class BullmqAdapter(FinishedSet):
    """The Python port of BullMQ (asyncio), driven from its own event loop."""

    system = "bullmq"

    def __init__(self, redis: Redis, url: str) -> None:
        from bullmq import Queue as BullQueue

        self.redis = redis
        self.loop = asyncio.new_event_loop()
        self.queue: Any = BullQueue(QUEUE, {"connection": url})
        self.prefix = f"bull:{QUEUE}:"
        self.done_key = self.prefix + "completed"

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

    def problems(self) -> dict[str, int]:
        return {
            "failed": int(self.redis.zcard(self.prefix + "failed")),
            "active": int(self.redis.llen(self.prefix + "active")),
        }

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.close())
        self.loop.close()


class DramatiqAdapter:
    """dramatiq with its Redis broker and JSON encoder; ``actor.send`` enqueues.

    Its Redis broker enqueues one message per script call and has no bulk path (``group`` and
    ``pipeline`` send their messages one by one), so there is no bulk row; the drains and the
    memory run enqueue one by one (untimed). A message's id stays in ``<queue>.msgs`` until it
    is acked, so jobs done = jobs sent less that hash's size.
    """

    system = "dramatiq"
    done_event = "hdel"
    done_command = "hlen"
    no_bulk: str | None = "no bulk path: its Redis broker enqueues one message per script call"

    def __init__(self, redis: Redis, url: str) -> None:
        self.redis = redis
        self.broker = broker(url)
        self.actors = dramatiq_actors(self.broker, redis)
        self.prefix = f"{self.broker.namespace}:{QUEUE}"
        self.done_key = self.prefix + ".msgs"

    def add_each(self, workload: str, numbers: range) -> None:
        actor = self.actors[workload]
        for i in numbers:
            actor.send(payload(workload, i))

    def add_bulk(self, workload: str, numbers: range, batch: int) -> None:
        self.add_each(workload, numbers)

    def queued(self) -> int:
        return int(self.redis.llen(self.prefix))

    def done(self, client: Redis, total: int) -> int:
        return total - int(client.hlen(self.done_key))

    def problems(self) -> dict[str, int]:
        return {
            "dead_lettered": int(self.redis.zcard(self.prefix + ".XQ")),
            "delayed_retries": int(self.redis.hlen(self.prefix + ".DQ.msgs")),
        }

    def close(self) -> None:
        self.broker.close()


def broker(url: str) -> Any:
    """dramatiq's Redis broker on ``url`` with the JSON encoder (its default, made explicit)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.encoder import JSONEncoder

    dramatiq.set_encoder(JSONEncoder())
    redis_broker = RedisBroker(url=url)  # type: ignore[no-untyped-call,unused-ignore]
    dramatiq.set_broker(redis_broker)
    return redis_broker


def adapter(system: str, redis: Redis, url: str) -> Adapter:
    if system == "rq":
        return RqAdapter(redis)
    if system == "chumon":
        return ChumonAdapter(redis, url)
    if system == "bullmq":
        return BullmqAdapter(redis, url)
    if system == "dramatiq":
        return DramatiqAdapter(redis, url)
    raise ValueError(f"unknown system {system!r}")
