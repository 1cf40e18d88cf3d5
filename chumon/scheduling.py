"""``chumon scheduler`` and ``chumon schedules``: the app's schedules through rq-scheduler, JSON only.

rq-scheduler 0.14 has no serializer option and pickles by default. ``JSONJob`` is an rq
``Job`` whose serializer is JSON unless told otherwise; passed as the scheduler's job class,
every job it creates and reads is JSON.

How a schedule runs (the schedules are declared with ``registry.schedule``, workers/schedules.py):

- rq-scheduler keeps one *template* per schedule (job id ``chumon-schedule-<name>``, the
  schedule's definition in its ``meta``) in its sorted set, scored by the next occurrence.
  Registering is an upsert: an unchanged schedule keeps its template and next time; a changed
  one is replaced (and its pending occurrence cancelled). The scheduler registers what its app
  declares at start and whenever Redis answers again after an outage.
- Each *occurrence* is an ordinary chumon job for one occurrence time. The next occurrence is
  enqueued ahead, delayed to its time (when that is within half the idempotency TTL), so it
  shows in rq-dashboard's Scheduled view of its queue and chumon's workers start it on time.
- Enqueuing an occurrence uses the idempotency key ``schedule:<name>@<time>``, which is also the
  job's effect key: re-registering, restarting, or two schedulers ticking together (rq-scheduler's
  lock keeps them apart; a lock that expired mid-tick does not) never make a second job, nor a
  second run, of one occurrence.
- A scheduler that was down runs the missed occurrence it finds due once, then carries on
  from the present (as rq-scheduler and BullMQ do).

The loop is chumon's, not rq-scheduler's: rq-scheduler's ``run`` ends on the first Redis error
(and its signal handler writes to Redis). This one logs the error once, backs off (up to 5 s),
registers again once Redis answers, and stops only on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from workers import Control, EnqueueOptions, Enqueuer, JobRegistry
from workers.codec import iso, readable
from workers.schedules import Schedule

log = logging.getLogger("chumon.scheduler")
TEMPLATE_PREFIX = "chumon-schedule-"
LEGACY_PREFIX = "chumon-periodic-"  # the fixed maintenance templates of earlier versions


class JSONJob(Job):
    """An rq Job that serializes with JSON unless another serializer is given explicitly."""

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)


def template_id(name: str) -> str:
    return TEMPLATE_PREFIX + name


def occurrence_key(schedule: Schedule, at: float) -> str:
    return f"schedule:{schedule.name}@{int(at)}"


class AppScheduler(Scheduler):  # type: ignore[misc]  # rq-scheduler ships no types
    """rq-scheduler whose due templates become chumon jobs instead of being pushed themselves."""

    def __init__(
        self, redis: Redis, enqueuer: Enqueuer, registry: JobRegistry, *, interval: float, control: Control
    ) -> None:
        super().__init__(queue_name="default", connection=redis, interval=interval, job_class=JSONJob)
        self.enqueuer = enqueuer
        self.registry = registry
        self.control = control
        self.lookahead = enqueuer.settings.idempotency_ttl / 2

    # -- registering ------------------------------------------------------------------------
    def register(self) -> list[str]:
        """Upsert every schedule the app declares; returns the names of those added or changed."""
        for legacy in self.connection.zrange(self.scheduled_jobs_key, 0, -1):
            name = readable(legacy) or ""
            if name.startswith(LEGACY_PREFIX):
                self.cancel(name)
                self.connection.delete(f"{Job.redis_job_namespace_prefix}{name}")
        changed = [s.name for s in self.registry.schedules() if self.upsert(s)]
        declared = {s.name for s in self.registry.schedules()}
        stray = [name for name, _ in registered(self.connection) if name not in declared]
        log.info(
            "schedules registered: %d declared (%s), %d added or changed%s",
            len(declared), ", ".join(sorted(declared)) or "none", len(changed),
            f"; in Redis but not declared by this app (`chumon schedules remove NAME`): {', '.join(stray)}"
            if stray else "",
        )  # fmt: skip
        return changed

    def upsert(self, schedule: Schedule, now: float | None = None) -> bool:
        """Register ``schedule``; False if it was registered already, unchanged."""
        now = time.time() if now is None else now
        tid = template_id(schedule.name)
        current = self._template(tid)
        if current is not None and current[1] == schedule and tid in self:
            return False
        if current is not None:
            self._cancel_pending(current[0])
            self.connection.delete(current[0].key)
        following = schedule.next_after(now)
        template = self.schedule(
            scheduled_time=datetime.fromtimestamp(following, UTC).replace(tzinfo=None),
            func=schedule.job_type,
            kwargs=schedule.args,
            interval=schedule.every,
            id=tid,
            result_ttl=-1,
            queue_name=schedule.queue or self.registry.get(schedule.job_type).queue,
            meta={"schedule": schedule.model_dump(mode="json")},
            description=f"{schedule.job_type} {schedule.rule()} (template of schedule {schedule.name})",
        )
        self.connection.zadd(self.scheduled_jobs_key, {tid: following})
        self._ahead(template, schedule, following, now)
        return True

    # -- firing -------------------------------------------------------------------------------
    def enqueue_jobs(self) -> list[str]:
        """Enqueue the occurrence of every due template (rq-scheduler's tick); returns the job ids."""
        now = time.time()
        due = self.connection.zrangebyscore(self.scheduled_jobs_key, 0, now, withscores=True)
        fired = []
        for raw, at in due:
            job_id = self.fire(readable(raw) or "", at, now)
            if job_id:
                fired.append(job_id)
        return fired

    def fire(self, tid: str, at: float, now: float) -> str | None:
        """Run the occurrence of ``at`` (once, whoever asks) and schedule the next one."""
        found = self._template(tid)
        if found is None:
            log.warning("rq-scheduler holds %s, which is no chumon schedule; cancelling it", tid)
            self.cancel(tid)
            return None
        template, schedule = found
        following = schedule.next_after(max(now, at))
        self.connection.zadd(self.scheduled_jobs_key, {tid: following})
        if schedule.job_type not in self.registry:
            log.warning("schedule %s: job type %s is not in this scheduler's app; occurrence skipped",
                        schedule.name, schedule.job_type)  # fmt: skip
            return None
        job_id = self.occurrence(schedule, at)
        self._ahead(template, schedule, following, now)
        return job_id

    def occurrence(self, schedule: Schedule, at: float) -> str:
        """Enqueue the run of occurrence ``at`` (delayed until then), once whoever asks and however often."""
        options = EnqueueOptions(
            queue=schedule.queue,
            run_at=datetime.fromtimestamp(at, UTC),
            idempotency_key=occurrence_key(schedule, at),
        )
        return self.enqueuer.enqueue(self.registry.get(schedule.job_type), schedule.args, options=options)

    def _ahead(self, template: Job, schedule: Schedule, at: float, now: float) -> None:
        """Enqueue the next occurrence ahead (if near enough for its key to outlive it); note it."""
        if at - now > self.lookahead or schedule.job_type not in self.registry:
            return
        template.meta["next_job"] = self.occurrence(schedule, at)
        template.meta["next_at"] = iso(at)
        template.save_meta()  # type: ignore[no-untyped-call]  # rq 2.12 leaves it untyped

    def _template(self, tid: str) -> tuple[Job, Schedule] | None:
        try:
            template = JSONJob.fetch(tid, connection=self.connection)
            return template, Schedule.model_validate(template.meta.get("schedule"))
        except (NoSuchJobError, ValidationError, ValueError):
            return None

    def _cancel_pending(self, template: Job) -> None:
        pending = template.meta.get("next_job")
        if isinstance(pending, str):
            self.control.cancel(pending)

    # -- the loop -----------------------------------------------------------------------------
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


# -- listing and removing (``chumon schedules``) ----------------------------------------------------
@dataclass(frozen=True)
class Registered:
    """A schedule as Redis holds it."""

    schedule: Schedule
    next_at: float | None
    next_job: str | None
    queue: str  # where its occurrences go: the schedule's queue, else its job type's

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.schedule.model_dump(mode="json"),
            "queue": self.queue,
            "rule": self.schedule.rule(),
            "next_at": iso(self.next_at) if self.next_at is not None else None,
            "next_job": self.next_job,
        }


def registered(redis: Redis) -> list[tuple[str, Registered]]:
    """Every schedule registered in rq-scheduler, by name (templates that cannot be read are skipped)."""
    found = []
    entries: Any = redis.zrange(Scheduler.scheduled_jobs_key, 0, -1, withscores=True)
    for raw, score in entries:
        tid = readable(raw) or ""
        if not tid.startswith(TEMPLATE_PREFIX):
            continue
        try:
            template = JSONJob.fetch(tid, connection=redis)
            schedule = Schedule.model_validate(template.meta.get("schedule"))
        except (NoSuchJobError, ValidationError, ValueError) as exc:
            log.warning("schedule template %s cannot be read: %s", tid, exc)
            continue
        nxt = template.meta.get("next_job")
        pending = nxt if isinstance(nxt, str) else None
        queue = schedule.queue or template.origin
        found.append((schedule.name, Registered(schedule, float(score), pending, queue)))
    return found


def remove(redis: Redis, control: Control, name: str) -> bool:
    """Stop schedule ``name``: its template goes, and its occurrence waiting ahead is cancelled."""
    tid = template_id(name)
    try:
        template: Job | None = JSONJob.fetch(tid, connection=redis)
    except (NoSuchJobError, ValueError):
        template = None
    removed = bool(redis.zrem(Scheduler.scheduled_jobs_key, tid))
    if template is not None:
        pending = template.meta.get("next_job")
        if isinstance(pending, str):
            control.cancel(pending)
        redis.delete(template.key)
    return removed or template is not None


def run(
    redis: Redis,
    enqueuer: Enqueuer,
    registry: JobRegistry,
    control: Control,
    *,
    interval: float = 5.0,
    burst: bool = False,
) -> None:
    """Serve until SIGTERM or SIGINT (``chumon scheduler``)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    AppScheduler(redis, enqueuer, registry, interval=interval, control=control).serve(stop, burst=burst)
