"""``chumon scheduler``: rq-scheduler as the clock of the periodic maintenance jobs, JSON only.

rq-scheduler 0.14 has no serializer option and pickles by default. ``JSONJob`` is an rq
``Job`` whose serializer is JSON unless told otherwise; passed as the scheduler's job
class, every job it creates and reads is JSON (measured: it has no serializer option of its own).

How a periodic job runs:

- rq-scheduler keeps one *template* per periodic job (fixed id, ``interval`` in its meta) in
  its own sorted set, and calls ``enqueue_job`` whenever a template is due.
- Each *occurrence* is an ordinary chumon job for a slot of the schedule (slots are aligned
  to the interval: a 60 s job runs at :00 of every minute). The next occurrence is always
  enqueued ahead, delayed to its slot, so it shows in rq-dashboard's Scheduled view of its
  queue; chumon's workers start it when it is due.
- Enqueuing an occurrence uses an idempotency key made of the periodic job and its slot:
  registering at every start, restarting the scheduler, or two schedulers ticking together
  never make a second run of one slot.

The loop is chumon's, not rq-scheduler's: rq-scheduler's ``run`` ends on the first Redis error
(and its signal handler writes to Redis). This one logs the error once, backs off (up to 5 s),
registers again once Redis answers, and stops only on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from workers import EnqueueOptions, Enqueuer, JobRegistry

log = logging.getLogger("chumon.scheduler")


class JSONJob(Job):
    """An rq Job that serializes with JSON unless another serializer is given explicitly."""

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)


@dataclass(frozen=True)
class Periodic:
    job_id: str
    job_type: str
    every: int  # seconds

    def slot(self, at: float) -> int:
        """The start of the slot ``at`` falls in."""
        return int(math.floor(at / self.every) * self.every)


PERIODIC = (
    Periodic("chumon-periodic-release-stale-holds", "maintenance.release_stale_holds", 60),
    Periodic("chumon-periodic-housekeeping", "maintenance.housekeeping", 60),
)


class PeriodicScheduler(Scheduler):  # type: ignore[misc]  # rq-scheduler ships no types
    """rq-scheduler whose due templates become chumon jobs instead of being pushed themselves."""

    def __init__(self, redis: Redis, enqueuer: Enqueuer, registry: JobRegistry, *, interval: float) -> None:
        super().__init__(queue_name="orders", connection=redis, interval=interval, job_class=JSONJob)
        self.enqueuer = enqueuer
        self.registry = registry
        self.periodic = {p.job_id: p for p in PERIODIC}

    def register(self) -> list[str]:
        """Schedule every template under its fixed id (replacing any), and its next occurrence."""
        now = time.time()
        for periodic in PERIODIC:
            self.cancel(periodic.job_id)
            self.schedule(
                scheduled_time=datetime.fromtimestamp(periodic.slot(now) + periodic.every, UTC).replace(
                    tzinfo=None
                ),
                func=periodic.job_type,
                kwargs={},
                interval=periodic.every,
                id=periodic.job_id,
                result_ttl=-1,
                description=f"{periodic.job_type} every {periodic.every} s (template)",
            )
            self.occurrence(periodic, periodic.slot(now) + periodic.every)
        log.info("periodic jobs registered: %s", ", ".join(p.job_type for p in PERIODIC))
        return [p.job_id for p in PERIODIC]

    def enqueue_job(self, job: Job) -> None:
        """rq-scheduler's hook for a due template: run this slot, schedule the next."""
        periodic = self.periodic.get(job.id)
        if periodic is None:
            log.warning("unknown periodic job %s left in rq-scheduler; cancelling it", job.id)
            self.cancel(job.id)
            return
        now = time.time()
        self.occurrence(periodic, periodic.slot(now))
        following = periodic.slot(now) + periodic.every
        self.occurrence(periodic, following)
        self.connection.zadd(self.scheduled_jobs_key, {job.id: following})

    def occurrence(self, periodic: Periodic, slot: int) -> str:
        """Enqueue the run of ``slot`` (delayed until then), once whoever asks and however often."""
        return self.enqueuer.enqueue(
            self.registry.get(periodic.job_type),
            {},
            options=EnqueueOptions(
                run_at=datetime.fromtimestamp(slot, UTC), idempotency_key=f"{periodic.job_id}@{slot}"
            ),
        )

    def serve(self, stop: threading.Event, *, burst: bool = False) -> None:
        """Register, then enqueue what is due every interval until ``stop`` (or once, with ``burst``)."""
        registered, backoff, trouble = False, 0.0, False
        while not stop.is_set():
            started = time.monotonic()
            try:
                if not registered:
                    self.register_birth()
                    self.register()
                    registered = True
                self.heartbeat()
                if self.acquire_lock():
                    try:
                        self.enqueue_jobs()
                    finally:
                        self.remove_lock()
                    if burst:
                        break
            except (RedisError, OSError) as exc:
                if not trouble:
                    log.error("scheduler: redis: %s; retrying", exc)
                trouble, registered = True, False
                self._lock_acquired = False
                backoff = min(5.0, max(0.5, backoff * 2))
                stop.wait(backoff)
                continue
            if trouble:
                log.info("scheduler: redis answers again")
            trouble, backoff = False, 0.0
            stop.wait(max(0.0, self._interval - (time.monotonic() - started)))
        try:
            self.register_death()
        except (RedisError, OSError) as exc:
            log.warning("scheduler: could not record its stop: %s", exc)


def run(
    redis: Redis, enqueuer: Enqueuer, registry: JobRegistry, *, interval: float = 5.0, burst: bool = False
) -> None:
    """Serve until SIGTERM or SIGINT (``chumon scheduler``)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    PeriodicScheduler(redis, enqueuer, registry, interval=interval).serve(stop, burst=burst)
