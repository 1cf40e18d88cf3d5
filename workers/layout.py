"""Which keys, scripts and replication fence serve a queue: the key layout of the client's Redis.

- **One Redis** (``redis://``, ``redis+sentinel://``): one family of keys for every queue, rq's
  own (workers/keys.py), so rq's tools see chumon's queues.
- **Redis Cluster** (``redis+cluster://``): one family per queue's hash tag (``tag_of``), so
  each script stays in one slot; each family has its scripts bound to its prefixes and its own
  replication fence. The queues are listed in ``Keys.queue_index``, a set outside every tag
  written with plain commands (idempotently, before the first job of a queue).

Built once per Redis client and shared (the composition root's Enqueuer, Worker, CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import names
from workers.connection import is_cluster
from workers.durability import Durability
from workers.keys import Keys, check_served_queue, tag_of
from workers.scripts import Scripts
from workers.settings import RuntimeSettings

T = TypeVar("T")
LOG = logging.getLogger("chumon.queues")


class Family:
    """The keys of one tag (or of every queue, on one Redis), with their scripts and fence."""

    def __init__(self, redis: Redis, settings: RuntimeSettings, keys: Keys, scripts: Scripts | None) -> None:
        self.keys = keys
        self.scripts = scripts or Scripts(redis, keys.lua_keyspace)
        self.durability = Durability(settings.redis, keys.replication_fence)


class Layout:
    def __init__(self, redis: Redis, settings: RuntimeSettings, *, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.cluster = is_cluster(redis)
        self._families: dict[str | None, Family] = {}
        self._indexed: set[str] = set()
        if not self.cluster:
            self._families[None] = Family(redis, settings, Keys(settings.key_prefix), scripts)
        self._given = scripts

    @property
    def single(self) -> Family | None:
        """On one Redis, the one family; on a cluster, None."""
        return self._families.get(None)

    @property
    def base(self) -> Keys:
        """The untagged keys: every queue's on one Redis; on a cluster, only ``queue_index``."""
        family = self._families.get(None)
        return family.keys if family else Keys(self.settings.key_prefix)

    def family(self, queue: str) -> Family:
        tag = tag_of(queue) if self.cluster else None
        family = self._families.get(tag)
        if family is None:
            keys = Keys(self.settings.key_prefix, tag)
            given = self._given
            scripts = given if given is not None and _bound_to(given, keys) else None
            family = self._families[tag] = Family(self.redis, self.settings, keys, scripts)
        return family

    def keys(self, queue: str) -> Keys:
        return self.family(queue).keys

    def index(self, queues: list[str]) -> None:
        """On a cluster: list ``queues`` in the queue index (once per process and queue)."""
        if not self.cluster:
            return
        new = [q for q in dict.fromkeys(tag_of(q) for q in queues) if q not in self._indexed]
        if new:
            self.redis.sadd(self.base.queue_index, *new)
            self._indexed.update(new)

    def queues(self) -> list[str]:
        """Every queue (tag) the cluster's index lists, sorted; on one Redis, []: rq:queues says."""
        if not self.cluster:
            return []
        try:
            members: Any = self.redis.smembers(self.base.queue_index)
        except ResponseError:  # not a set (hand-written garbage): read as empty, said once a call
            LOG.error("redis key %s holds something else than a set: read as empty", self.base.queue_index)
            return []
        found = []
        for name in names(members, what=self.base.queue_index, log=LOG):
            try:
                found.append(check_served_queue(name))
            except ValueError:
                LOG.error("%s lists %r, which names no queue: skipped", self.base.queue_index, name)
        return sorted(found)

    def every_keys(self) -> list[Keys]:
        """The key family of every queue: the one on one Redis, each listed tag's on a cluster."""
        if not self.cluster:
            return [self.base]
        return [self.keys(queue) for queue in self.queues()]

    def locate(self, job_id: str) -> Keys | None:
        """The keys of the family whose job ``job_id`` is: on one Redis, the one (whether or not
        the job exists); on a cluster, the first tag holding a job hash of that id, probed in one
        pipeline (ids are not tagged: a job's queue decides its slot), or None."""
        if not self.cluster:
            return self.base
        families = self.every_keys()
        with self.redis.pipeline(transaction=False) as pipe:
            for keys in families:
                pipe.exists(keys.job(job_id))
            found = pipe.execute()
        return next((keys for keys, hit in zip(families, found, strict=True) if hit), None)

    def by_family(self, items: list[T], queue_of: Callable[[T], str]) -> list[list[T]]:
        """``items`` grouped by the family of their queue, in order of first appearance."""
        groups: dict[str | None, list[T]] = {}
        for item in items:
            groups.setdefault(tag_of(queue_of(item)) if self.cluster else None, []).append(item)
        return list(groups.values())


def _bound_to(scripts: Scripts, keys: Keys) -> bool:
    return scripts.keyspace == keys.lua_keyspace
