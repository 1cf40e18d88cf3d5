"""rq's index of queues (``rq:queues``), read by everything that lists queues.

The index is shared with rq's own tools and may hold anything: unreadable members are skipped
(``codec.names``), and a key that holds something else than a set reads as an empty index, with
one error line per reader until it is readable again, instead of failing the caller (recovery,
housekeeping, the exporter's scrape, ``chumon queues``).
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import names
from workers.keys import Keys

LOG = logging.getLogger("chumon.queues")


class QueueIndex:
    def __init__(self, redis: Redis, keys: Keys, *, log: logging.Logger | None = None) -> None:
        self.redis, self.keys = redis, keys
        self.log = log or LOG
        self.unreadable = False

    def names(self) -> list[str]:
        """The names of the queues rq:queues lists (dead-letter queues included), in its order."""
        try:
            members: Any = self.redis.smembers(self.keys.RQ_QUEUES)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            if not self.unreadable:
                self.log.error(
                    "redis key %s holds something else than a set: read as empty", self.keys.RQ_QUEUES
                )
            self.unreadable = True
            return []
        self.unreadable = False
        listed = names(members, what="rq:queues", log=self.log)
        return [self.keys.queue_name_of(k) for k in listed if k.startswith(self.keys.RQ_QUEUE)]
