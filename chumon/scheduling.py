"""``chumon scheduler``: rq-scheduler for the periodic maintenance jobs, JSON only.

rq-scheduler 0.14 has no serializer option and pickles by default. ``JSONJob`` is an rq
``Job`` whose serializer is JSON unless told otherwise; passed as the scheduler's job
class, every job it creates, reads and enqueues is JSON (see shared/FACTS.md).

The periodic jobs are registered at start-up under fixed ids, so restarting the scheduler
replaces them instead of adding copies. rq's Job.create writes ``data`` as
``["<job type>", null, [], {}]``: a chumon worker reads the job type and an empty payload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from workers.keys import Keys

log = logging.getLogger("chumon.scheduler")


class JSONJob(Job):
    """An rq Job that serializes with JSON unless another serializer is given explicitly."""

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)


class PeriodicQueue(Queue):
    """The queue rq-scheduler enqueues into: each run of a periodic job starts afresh.

    A periodic job keeps one id for ever; without this its attempt counter and failure
    history would run on from one period to the next. It also wakes idle chumon workers
    (rq's own enqueue does not touch their signal streams).
    """

    key_prefix = "chumon"

    def enqueue_job(
        self, job: Job, pipeline: Any = None, at_front: bool = False, unique: bool = False
    ) -> Job:
        keys = Keys(self.key_prefix)
        self.connection.hdel(keys.job(job.id), "attempt", "execution")
        job.meta.pop("failures", None)
        enqueued = super().enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        self.connection.xadd(keys.signal(self.name), {"q": self.name}, maxlen=1)
        return enqueued


@dataclass(frozen=True)
class Periodic:
    job_id: str
    job_type: str
    queue: str
    every: int  # seconds


PERIODIC = (
    Periodic("chumon-periodic-release-stale-holds", "maintenance.release_stale_holds", "orders", 60),
    Periodic("chumon-periodic-housekeeping", "maintenance.housekeeping", "orders", 60),
)


def scheduler(redis: Redis, interval: float = 5.0, key_prefix: str = "chumon") -> Scheduler:
    PeriodicQueue.key_prefix = key_prefix
    return Scheduler(
        queue_name="orders", connection=redis, interval=interval, job_class=JSONJob, queue_class=PeriodicQueue
    )


def register_periodic(sched: Scheduler) -> list[str]:
    """Schedule every periodic job under its fixed id; existing ones are replaced, never doubled."""
    for periodic in PERIODIC:
        sched.cancel(periodic.job_id)
        sched.schedule(
            scheduled_time=datetime.now(UTC).replace(tzinfo=None),
            func=periodic.job_type,
            kwargs={},
            interval=periodic.every,
            id=periodic.job_id,
            queue_name=periodic.queue,
            result_ttl=-1,  # one hash for every run: it must outlive the interval
            description=f"{periodic.job_type} every {periodic.every} s",
        )
    log.info("periodic jobs registered: %s", ", ".join(p.job_type for p in PERIODIC))
    return [p.job_id for p in PERIODIC]


def run(redis: Redis, *, key_prefix: str, interval: float = 5.0, burst: bool = False) -> None:
    sched = scheduler(redis, interval, key_prefix)
    register_periodic(sched)
    sched.run(burst=burst)
