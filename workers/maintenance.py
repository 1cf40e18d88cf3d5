"""Housekeeping that keeps Redis from growing without bound; one worker does it per interval.

- dead letters past their retention are removed (counted and logged, see deadletter.py);
- rq's finished and failed registries drop entries whose job hash has expired (rq does the
  same in its registry cleanup; chumon's workers do not run rq's cleanup).

Everything else chumon writes expires by itself: finished jobs and their results after
``result_ttl``, idempotency keys after ``idempotency_ttl``, worker hashes after their TTL.
"""

from __future__ import annotations

import logging

from redis import Redis

from workers.codec import text
from workers.deadletter import DeadLetters
from workers.keys import Keys

INTERVAL = 60


class Maintenance:
    def __init__(
        self, redis: Redis, keys: Keys, dead_letters: DeadLetters, worker: str, log: logging.Logger
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.dead_letters = dead_letters
        self.worker = worker
        self.log = log

    def run(self, now: float) -> bool:
        """Do the housekeeping unless another worker did within INTERVAL. True if it ran."""
        if not self.redis.set(self.keys.maintenance_lock, self.worker, nx=True, ex=INTERVAL):
            return False
        self.dead_letters.enforce_retention(now)
        queues = [self.keys.queue_name_of(text(k)) for k in self.redis.smembers(self.keys.RQ_QUEUES)]
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zremrangebyscore(self.keys.finished(queue), "-inf", now)
                pipe.zremrangebyscore(self.keys.failed(queue), "-inf", now)
            pipe.execute()
        return True
