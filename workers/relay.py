"""The cluster layout's outbox: jobs one slot's script made for a queue in another slot.

A step settles a dead letter and enqueues its hook job in one script, which on Redis Cluster
touches one slot: when the hook's queue is in another one, the step writes the hook job into
its own queue's relay (``Keys.queue(relay_queue(q))``, a job hash and a list in ``q``'s slot).
``Relay.run`` then moves each relayed job to its queue: it enqueues a copy there with the
enqueue idempotency key ``relay:<id>``, and only then removes the relayed one (one MULTI, one
slot). A worker that dies in between leaves the job in the relay; the next run enqueues it
again, which the key turns into a no-op: each relayed job reaches its queue exactly once.
Workers run it after a step that relayed, and at each recovery interval (leftovers).
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import readable
from workers.enqueue import Enqueuer, EnqueueRefused
from workers.keys import Keys, check_served_queue, relay_queue

BATCH = 100
QUARANTINE_CAP = 10_000  # entries the quarantine stream keeps, about
KEEP_S = 7 * 86400  # the relay key's lifetime in the target queue's slot


class Relay:
    def __init__(self, redis: Redis, keys: Keys, enqueuer: Enqueuer, queue: str, log: logging.Logger) -> None:
        self.redis = redis
        self.keys = keys
        self.enqueuer = enqueuer
        self.name = relay_queue(queue)
        self.log = log

    def run(self) -> int:
        """Move every relayed job to its own queue; how many were moved. An entry that cannot be
        moved (an unreadable id, a job key that is not a job hash, an origin that names no queue)
        is quarantined (``Keys.quarantine``, with the reason) and removed: it never holds up the
        entries behind it."""
        moved = 0
        line = self.keys.queue(self.name)
        while True:
            raw: Any = self.redis.lrange(line, 0, BATCH - 1)
            if not raw:
                return moved
            for entry in raw:
                job_id = readable(entry)
                try:
                    if job_id is None:
                        raise ValueError("the id is not readable text")
                    self._move(line, job_id)
                    moved += 1
                except (ResponseError, ValueError, EnqueueRefused) as exc:
                    self.log.error("relay of %s: entry %r quarantined: %s", self.name, entry, exc)
                    self._drop(line, entry, str(exc))
            if len(raw) < BATCH:
                return moved

    def _move(self, line: str, job_id: str) -> None:
        fields: Any = self.redis.hgetall(self.keys.job(job_id))
        row = {readable(k) or "": v for k, v in fields.items()}
        target = readable(row.get("origin"))
        if not target or "data" not in row:
            raise ValueError("not a job hash with an origin and data")
        check_served_queue(target)
        keep = ("data", "description", "origin", "timeout", "job_type", "retry", "effect_key", "result_ttl")
        spec = {
            "id": job_id,
            "queue": target,
            "fields": [part for name in keep if name in row for part in (name, readable(row[name]) or "")],
            "enqueue_key": f"relay:{job_id}",
            "enqueue_key_ttl": KEEP_S,
        }
        self.enqueuer.submit([spec])
        self.log.info("relayed job %s to queue %s", job_id, target)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(line, 0, job_id)
            pipe.delete(self.keys.job(job_id))
            pipe.execute()

    def _drop(self, line: str, entry: bytes | str, reason: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(line, 0, entry)  # type: ignore[arg-type]  # bytes as read: the entry itself
            pipe.xadd(self.keys.quarantine, {"id": entry, "where": line, "reason": reason[:500]},
                      maxlen=QUARANTINE_CAP, approximate=True)  # fmt: skip
            pipe.execute()
