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

from workers.codec import names, readable
from workers.keys import Keys, check_queue_name
from workers.scripts import Scripts
from workers.settings import RuntimeSettings


@dataclass(frozen=True, slots=True)
class CancelResult:
    job_id: str
    status: str  # before: queued, scheduled, started, finished... ('' when there was no job)
    action: str  # removed, asked, nothing, missing


class Control:
    def __init__(self, redis: Redis, settings: RuntimeSettings, *, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.scripts = scripts or Scripts(redis, self.keys.lua_keyspace)

    def pause(self, queue: str) -> bool:
        """Pause ``queue`` for every worker; False if it was paused already."""
        return bool(self.redis.sadd(self.keys.paused, check_queue_name(queue)))

    def resume(self, queue: str) -> bool:
        """Let workers claim from ``queue`` again; False if it was not paused. Wakes idle workers."""
        resumed = bool(self.redis.srem(self.keys.paused, check_queue_name(queue)))
        if resumed:
            self.redis.xadd(self.keys.signal(queue), {"q": queue}, maxlen=1)
        return resumed

    def paused(self) -> set[str]:
        return set(names(self.redis.smembers(self.keys.paused), what=self.keys.paused))

    def cancel(self, job_id: str) -> CancelResult:
        """Cancel a waiting job, or ask a running one to stop (see the module docstring)."""
        status, action = self.scripts.run(
            "control",
            {
                "action": "cancel",
                "id": job_id,
                "ttl": self.settings.dlq_retention,
                "events": self.settings.events_cap,
            },
        )
        return CancelResult(job_id, readable(status) or "", readable(action) or "")
