"""Operators' and apps' control of queues and jobs: pause and resume a queue, cancel a job.

- ``pause(queue)``: no worker claims from the queue until ``resume(queue)``; jobs running go on,
  jobs keep arriving. The paused queues are the set ``Keys.paused``, read by every claim.
- ``cancel(job_id)``: a waiting job (queued, prioritized, scheduled, deferred) leaves its queue
  and ends canceled, in rq's canceled registry; a running one is asked to stop (its handler sees
  ``ctx.cancelled`` within a heartbeat and may ``raise Cancelled()``). Both are idempotent: a
  job already finished, failed or canceled is left as it is, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import names, readable
from workers.errors import RuntimeFault
from workers.keys import Keys, check_queue_name
from workers.layout import Layout
from workers.scripts import Scripts
from workers.settings import RuntimeSettings

RACES = 5  # reads of a job's whereabouts before a cancel gives up


@dataclass(frozen=True, slots=True)
class QueueFlow:
    """One queue's flow-control state, as ``chumon queues`` and the metrics show it."""

    queue: str
    paused: bool
    prioritized: int  # jobs waiting with a priority (they run before the plain FIFO list)
    throttled_for: float  # seconds left of a 'slow down' (RateLimited) pause, 0 when none
    rate_limit: str | None  # the configured limit, e.g. '50/1s', or None


@dataclass(frozen=True, slots=True)
class CancelResult:
    job_id: str
    status: str  # before: queued, scheduled, started, finished... ('' when there was no job)
    action: str  # removed, asked, nothing, missing


class Control:
    def __init__(self, redis: Redis, settings: RuntimeSettings, *, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.layout = Layout(redis, settings, scripts=scripts)
        self.keys = self.layout.base

    def pause(self, queue: str) -> bool:
        """Pause ``queue`` for every worker; False if it was paused already."""
        return bool(self.redis.sadd(self.layout.keys(queue).paused, check_queue_name(queue)))

    def resume(self, queue: str) -> bool:
        """Let workers claim from ``queue`` again; False if it was not paused. Wakes idle workers."""
        keys = self.layout.keys(queue)
        resumed = bool(self.redis.srem(keys.paused, check_queue_name(queue)))
        if resumed:
            self.redis.xadd(keys.signal(queue), {"q": queue}, maxlen=1)
        return resumed

    def paused(self) -> set[str]:
        found: set[str] = set()
        for keys in self.layout.every_keys():
            found.update(names(self.redis.smembers(keys.paused), what=keys.paused))
        return found

    def flows(self, queues: list[str]) -> list[QueueFlow]:
        """Pause, priority backlog, throttle and rate limit of each queue, in one round trip.

        Garbage in a key reads as 'not paused / 0', never as an error: this feeds metrics."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name in queues:
                keys = self.layout.keys(name)
                pipe.sismember(keys.paused, name)
                pipe.zcard(keys.prioritized(name))
                pipe.pttl(keys.throttle("queue", name))
            replies = pipe.execute(raise_on_error=False)
        limits = self.settings.queue_rate_limits
        rows = []
        for i, name in enumerate(queues):
            paused, backlog, ttl = replies[3 * i : 3 * i + 3]
            rows.append(
                QueueFlow(
                    queue=name,
                    paused=paused is True or paused == 1,
                    prioritized=backlog if isinstance(backlog, int) else 0,
                    throttled_for=ttl / 1000 if isinstance(ttl, int) and ttl > 0 else 0.0,
                    rate_limit=str(limits[name]) if name in limits else None,
                )
            )
        return rows

    def cancel(self, job_id: str) -> CancelResult:
        """Cancel a waiting job, or ask a running one to stop (see the module docstring).

        The script declares every key it touches, so the job's queue and flow parent are read
        first and passed along; the script checks them and says 'changed' if the job is no longer
        what was read (a job deleted and made again under its id), and this reads again."""
        located = self.layout.locate(job_id)
        if located is None:  # on a cluster, no queue's slot holds it
            return CancelResult(job_id, "", "missing")
        family = self.layout.family(located.tag) if located.tag else self.layout.single
        assert family is not None
        for _ in range(RACES):
            origin, parent, parent_origin = self._whereabouts(family.keys, job_id)
            plan = {
                "action": "cancel",
                "id": job_id,
                "ttl": self.settings.dlq_retention,
                "events": self.settings.events_cap,
                "origin": origin,
                "parent": parent,
                "parent_origin": parent_origin,
            }
            keys = family.keys.cancel_keys(job_id, origin, parent, parent_origin)
            status, action = family.scripts.run("control", plan, keys=keys)
            if readable(action) != "changed":
                return CancelResult(job_id, readable(status) or "", readable(action) or "")
        raise RuntimeFault(f"job {job_id} kept changing while it was being canceled: try again")

    def _whereabouts(self, keys: Keys, job_id: str) -> tuple[str, str, str]:
        """The job's queue, its flow parent and the parent's queue, as Redis holds them ('' when none)."""
        try:
            origin, parent = self.redis.hmget(keys.job(job_id), ["origin", "flow_parent"])
        except ResponseError:  # the job's key holds something else than a hash: the script says so
            return "", "", ""
        parent_id = readable(parent) or ""
        try:
            parent_origin = self.redis.hget(keys.job(parent_id), "origin") if parent_id else None
        except ResponseError:  # the parent's key holds garbage: the script leaves the parent alone
            parent_origin = None
        return readable(origin) or "", parent_id, readable(parent_origin) or ""
