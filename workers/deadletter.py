"""The dead-letter queues, for operators: list, show, requeue, purge, and retention.

A dead-letter queue is the rq queue ``<origin>.dlq`` (so ``rq info`` and rq-dashboard list
it); its jobs are also in rq's failed registry of the origin queue, with their whole failure
history in ``meta`` and the latest failure in rq's result stream. No worker serves a
``.dlq`` queue. Retention: dead letters older than ``dlq_retention`` are removed by the
workers' maintenance, and each queue keeps at most ``dlq_max_length``; every removal by
either rule is counted in ``<prefix>:dlq:dropped`` and logged, never silent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from redis import Redis

from workers.codec import decode_meta, iso, raw_bytes, text
from workers.jobview import JobInfo, load_job
from workers.keys import Keys, dead_letter_queue, is_dead_letter_queue, origin_of_dead_letter_queue
from workers.scripts import Scripts
from workers.settings import RuntimeSettings

log = logging.getLogger("chumon.dlq")


class DeadLetters:
    def __init__(self, redis: Redis, settings: RuntimeSettings, *, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.scripts = scripts or Scripts(redis, self.keys.lua_keyspace)

    def origins(self) -> list[str]:
        """The queues that have a dead-letter queue."""
        names = (self.keys.queue_name_of(text(key)) for key in self.redis.smembers(self.keys.RQ_QUEUES))
        return sorted(origin_of_dead_letter_queue(name) for name in names if is_dead_letter_queue(name))

    def ids(self, queue: str) -> list[str]:
        return [text(i) for i in self.redis.lrange(self.keys.queue(dead_letter_queue(queue)), 0, -1)]

    def count(self, queue: str) -> int:
        return int(self.redis.llen(self.keys.queue(dead_letter_queue(queue))))

    def entries(self, queue: str | None = None) -> list[JobInfo]:
        entries: list[JobInfo] = []
        for origin in [queue] if queue else self.origins():
            for job_id in self.ids(origin):
                info = load_job(self.redis, self.keys, job_id)
                if info is not None:
                    entries.append(info)
        return entries

    def show(self, job_id: str) -> JobInfo | None:
        return load_job(self.redis, self.keys, job_id)

    def requeue(
        self, job_ids: Sequence[str] = (), *, queue: str | None = None, all_: bool = False
    ) -> list[str]:
        """Move dead letters back to their origin queues with a fresh attempt budget."""
        if all_:
            job_ids = [
                job_id for origin in ([queue] if queue else self.origins()) for job_id in self.ids(origin)
            ]
        now = time.time()
        items = []
        for job_id in job_ids:
            origin, raw_meta = self.redis.hmget(self.keys.job(job_id), ["origin", "meta"])
            if origin is None or (queue and text(origin) != queue):
                continue
            meta = decode_meta(raw_bytes(raw_meta))
            meta.update(attempt=0, state="requeued from dead letters", next_run_at=None)
            meta["requeued_at"] = [*meta.get("requeued_at", []), iso(now)]
            items.append([job_id, text(origin), json.dumps(meta, separators=(",", ":"))])
        if not items:
            return []
        reply = self.scripts.run("dlq_requeue", {"now_iso": iso(now), "items": items})
        return [text(i) for i in reply]

    def purge(self, queue: str | None = None, *, older_than: float | None = None) -> int:
        """Delete dead letters: all of them, or those dead-lettered more than ``older_than`` s ago."""
        removed = 0
        for origin in [queue] if queue else self.origins():
            plan: dict[str, object] = {"origin": origin}
            if older_than is None:
                plan["ids"] = self.ids(origin)
            else:
                plan["before_iso"] = iso(time.time() - older_than)
            count = int(self.scripts.run("dlq_remove", plan))
            if count:
                log.info("purged %d dead letter(s) of queue %s", count, origin)
            removed += count
        return removed

    def enforce_retention(self, now: float) -> int:
        """Remove dead letters older than the retention; counted and logged."""
        removed = 0
        for origin in self.origins():
            plan = {"origin": origin, "before_iso": iso(now - self.settings.dlq_retention), "counted": True}
            count = int(self.scripts.run("dlq_remove", plan))
            if count:
                log.warning("retention removed %d dead letter(s) of queue %s (older than %d s)",
                            count, origin, self.settings.dlq_retention)  # fmt: skip
            removed += count
        return removed

    def dropped(self) -> dict[str, int]:
        """Dead letters removed by the cap or the retention so far, per origin queue."""
        return {text(k): int(v) for k, v in self.redis.hgetall(self.keys.dlq_dropped).items()}
