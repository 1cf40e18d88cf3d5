"""A worker's presence in Redis: rq's worker registration plus chumon's liveness heartbeat.

rq's view (``rq:workers``, ``rq:workers:<queue>``, the ``rq:worker:<name>`` hash) keeps
``rq info`` and rq-dashboard's Workers tab truthful. chumon's own view is the sorted set
``<prefix>:workers`` of name -> last heartbeat, which live workers read to find dead ones,
and the renewal of the idempotency claims the worker's running jobs hold.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable

from redis import Redis
from rq.version import VERSION as RQ_VERSION

from workers.codec import iso
from workers.keys import Keys


class Presence:
    def __init__(self, redis: Redis, keys: Keys, name: str, queues: list[str], *, ttl: float) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.queues = queues
        self.ttl = ttl
        self.key = keys.rq_worker(name)

    def register(self, now: float) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.hset(
                self.key,
                mapping={
                    "birth": iso(now),
                    "last_heartbeat": iso(now),
                    "queues": ",".join(self.queues),
                    "pid": os.getpid(),
                    "hostname": socket.gethostname(),
                    "ip_address": "",
                    "version": RQ_VERSION,
                    "python_version": sys.version,
                    "state": "idle",
                    "successful_job_count": 0,
                    "failed_job_count": 0,
                    "total_working_time": 0,
                },
            )
            pipe.expire(self.key, self._rq_ttl)
            pipe.sadd(self.keys.RQ_WORKERS, self.key)
            for queue in self.queues:
                pipe.sadd(self.keys.rq_workers_by_queue(queue), self.key)
            pipe.zadd(self.keys.live_workers, {self.name: now})
            pipe.execute()

    def heartbeat(self, now: float, current_job: str | None, claims: Iterable[str]) -> bool:
        """Renew liveness and the effect-key claims of running jobs.

        Returns False if this worker had been declared dead (and its runs recovered) meanwhile.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.live_workers, {self.name: now})
            pipe.hset(
                self.key, mapping={"last_heartbeat": iso(now), "state": "busy" if current_job else "idle"}
            )
            if current_job:
                pipe.hset(self.key, "current_job", current_job)
            else:
                pipe.hdel(self.key, "current_job")  # rq's convention for an idle worker
            pipe.expire(self.key, self._rq_ttl)
            for effect_key in claims:
                pipe.pexpire(self.keys.effect_key(effect_key), int(self.ttl * 1000))
            reply = pipe.execute()
        # ZADD added us back: another worker had declared us dead and recovered our runs
        return bool(reply[0] == 0)

    def deregister(self, now: float) -> None:
        with self.redis.pipeline() as pipe:
            pipe.srem(self.keys.RQ_WORKERS, self.key)
            for queue in self.queues:
                pipe.srem(self.keys.rq_workers_by_queue(queue), self.key)
            pipe.hset(self.key, mapping={"death": iso(now), "state": "dead"})
            pipe.hdel(self.key, "current_job")
            pipe.expire(self.key, 60)
            pipe.zrem(self.keys.live_workers, self.name)
            pipe.delete(self.keys.inflight(self.name))
            pipe.execute()

    @property
    def _rq_ttl(self) -> int:
        return int(self.ttl) + 60
