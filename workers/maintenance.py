"""Housekeeping that keeps Redis from growing without bound; one worker does it per interval.

- dead letters past their retention are removed (counted and logged, see deadletter.py);
- rq's finished and failed registries drop entries whose job hash has expired (rq does the
  same in its registry cleanup; chumon's workers do not run rq's cleanup);
- job types that keep only their last N jobs or those younger than an age are trimmed
  (workers/retention.py): the settling step trims too, but ages pass while nothing settles.

Everything else chumon writes expires by itself: finished jobs and their results after
``result_ttl``, idempotency keys after ``idempotency_ttl``, worker hashes after their TTL.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from workers import locks
from workers.deadletter import DeadLetters
from workers.keys import Keys, is_dead_letter_queue, origin_of_dead_letter_queue
from workers.queueindex import QueueIndex
from workers.readkeys import kept_keys
from workers.scripts import Scripts

INTERVAL = 60


def keys_of_kept(keys: Keys, item: list[Any]) -> str:
    """The kept set of one retention item ({job type, kind, count, age}: JobRegistry.kept())."""
    return keys.kept(item[1], item[0])


class Maintenance:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        dead_letters: DeadLetters,
        worker: str,
        log: logging.Logger,
        *,
        kept: list[list[Any]] | None = None,
        scripts: Scripts | None = None,
    ) -> None:
        self.redis = redis
        self.kept = kept or []  # JobRegistry.kept(): retention per job type
        self.scripts = scripts
        self.keys = keys
        self.dead_letters = dead_letters
        self.worker = worker
        self.log = log
        self.index = QueueIndex(redis, keys, log=log)

    def _kept_keys(self) -> list[str | bytes]:
        """What lua/keep.lua may touch trimming each kept set: the oldest jobs of each (read here,
        with each one's queue, just before the call) and their keys and registries."""
        return kept_keys(self.redis, self.keys, [keys_of_kept(self.keys, item) for item in self.kept])

    def run(self, now: float) -> bool:
        """Do the housekeeping unless another worker did within INTERVAL. True if it ran."""
        if not locks.take(self.redis, self.keys.maintenance_lock, self.worker, INTERVAL * 1000):
            return False
        # on Redis Cluster each slot's workers keep house in it: their own queues' dead letters
        own = None
        if self.keys.tag is not None:
            own = [origin_of_dead_letter_queue(q) for q in self.index.names() if is_dead_letter_queue(q)]
        self.dead_letters.enforce_retention(now, own)
        if self.kept and self.scripts is not None:
            removed = int(self.scripts.run("keep", {"kept": self.kept}, keys=self._kept_keys()))
            if removed:
                self.log.warning("retention per job type removed %d dead letter(s)", removed)
        queues = self.index.names()
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zremrangebyscore(self.keys.finished(queue), "-inf", now)
                pipe.zremrangebyscore(self.keys.failed(queue), "-inf", now)
            replies = pipe.execute(raise_on_error=False)
        broken = [r for r in replies if isinstance(r, Exception)]
        if broken:
            self.log.error("housekeeping: %d registry key(s) hold garbage: %s", len(broken), broken[0])
        return True
