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
from redis.exceptions import ResponseError

from workers.codec import decode_meta, iso, names, raw_bytes, readable
from workers.jobview import JobInfo, load_job
from workers.keys import (
    GROUP,
    Keys,
    base_queue,
    dead_letter_queue,
    is_dead_letter_queue,
    origin_of_dead_letter_queue,
    raw_key,
)
from workers.layout import Layout
from workers.queueindex import QueueIndex
from workers.scripts import Scripts
from workers.settings import RuntimeSettings

log = logging.getLogger("chumon.dlq")
CHUNK = 100  # ids per script call: each LREM reads the dead-letter list
AGE_CHUNK = 500  # dead letters removed by age per script call
RACES = 5  # times in a row the head of a dead-letter list may change under a removal by age


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        settings: RuntimeSettings,
        *,
        scripts: Scripts | None = None,
        layout: Layout | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.layout = layout or Layout(redis, settings, scripts=scripts)
        self.keys = self.layout.base

    def origins(self) -> list[str]:
        """The queues that have a dead-letter queue (unreadable members of rq:queues are skipped)."""
        found: list[str] = []
        for keys in self.layout.every_keys():
            found += QueueIndex(self.redis, keys, log=log).names()
        return sorted({origin_of_dead_letter_queue(name) for name in found if is_dead_letter_queue(name)})

    def matching(self, queue: str | None) -> list[str]:
        """The origins ``queue`` names: itself, or its sub-queues (a split queue, on a cluster) or
        its shard copies (a sharded queue: ``notifications`` names ``notifications@shard3``);
        every origin for None."""
        origins = self.origins()
        if queue is None:
            return origins
        mine = [
            o
            for o in origins
            if queue in (o, base_queue(o)) or (GROUP not in queue and o.partition(GROUP)[0] == queue)
        ]
        return mine or [queue]

    def ids(self, queue: str) -> list[str]:
        """The dead letters of ``queue``, oldest first (unreadable ids are skipped)."""
        raw = self.redis.lrange(self.layout.keys(queue).queue(dead_letter_queue(queue)), 0, -1)
        return names(raw, what=f"the dead-letter queue of {queue}", log=log)

    def count(self, queue: str) -> int:
        return int(self.redis.llen(self.layout.keys(queue).queue(dead_letter_queue(queue))))

    def entries(self, queue: str | None = None) -> list[JobInfo]:
        entries: list[JobInfo] = []
        for origin in self.matching(queue):
            for job_id in self.ids(origin):
                info = load_job(self.redis, self.layout.keys(origin), job_id)
                if info is not None:
                    entries.append(info)
        return entries

    def show(self, job_id: str) -> JobInfo | None:
        keys = self.layout.locate(job_id)
        return load_job(self.redis, keys, job_id) if keys else None

    def requeue(
        self, job_ids: Sequence[str] = (), *, queue: str | None = None, all_: bool = False
    ) -> list[str]:
        """Move dead letters back to their origin queues with a fresh attempt budget."""
        if all_:
            job_ids = [job_id for origin in self.matching(queue) for job_id in self.ids(origin)]
        now = time.time()
        items = []
        located = [(job_id, keys) for job_id in job_ids if (keys := self.layout.locate(job_id)) is not None]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, keys in located:
                pipe.hmget(keys.job(job_id), ["origin", "meta"])
            rows = pipe.execute(raise_on_error=False)
        for (job_id, _), row in zip(located, rows, strict=True):
            if isinstance(row, Exception):
                continue  # not a hash: nothing to requeue
            origin = readable(row[0])
            if origin is None or (queue and origin != queue and base_queue(origin) != queue):
                continue
            meta = decode_meta(raw_bytes(row[1]))
            meta.update(attempt=0, state="requeued from dead letters", next_run_at=None)
            history = meta.get("requeued_at")
            meta["requeued_at"] = [*(history if isinstance(history, list) else [])[-19:], iso(now)]
            items.append([job_id, origin, json.dumps(meta, separators=(",", ":"))])
        requeued: list[str] = []
        for group in self.layout.by_family(items, lambda item: item[1]):
            family = self.layout.family(group[0][1])
            for start in range(0, len(group), CHUNK):
                chunk = group[start : start + CHUNK]
                declared = self._requeue_keys(family.keys, chunk)
                reply = family.scripts.run("dlq_requeue", {"items": chunk}, keys=declared)
                requeued += [readable(i) or "" for i in reply]
        return requeued

    @staticmethod
    def _requeue_keys(keys: Keys, items: list[list[str]]) -> list[str]:
        """Every key lua/dlq_requeue.lua may touch for ``items`` ({id, origin, meta}), for its KEYS."""
        declared: dict[str, None] = {}
        for job_id, origin, _ in items:
            declared.update(dict.fromkeys(keys.dead_letter_keys(origin, [job_id])))
            declared.update(dict.fromkeys(keys.requeue_keys(origin)))
        return list(declared)

    def purge(self, queue: str | None = None, *, older_than: float | None = None) -> int:
        """Delete dead letters: all of them, or those dead-lettered more than ``older_than`` s ago."""
        removed = 0
        for origin in self.matching(queue):
            if older_than is None:
                ids = self.ids(origin)
                count = sum(self.remove(origin, ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK))
            else:
                count = self._remove_older(origin, iso(time.time() - older_than), counted=False)
            if count:
                log.info("purged %d dead letter(s) of queue %s", count, origin)
            removed += count
        return removed

    def remove(self, origin: str, job_ids: list[str]) -> int:
        """Delete these dead letters of ``origin`` (at most ``CHUNK``); how many were there."""
        family = self.layout.family(origin)
        keys = family.keys.dead_letter_keys(origin, job_ids)
        return int(family.scripts.run("dlq_remove", {"origin": origin, "ids": job_ids}, keys=keys))

    def _remove_older(self, origin: str, before_iso: str, *, counted: bool) -> int:
        """Remove the dead letters of ``origin`` older than ``before_iso``, oldest first, a chunk per call.

        The script declares the keys it touches, so it is told the ids at the head of the list,
        read just before, and removes no other: when the head changed meanwhile (a removal by
        someone else), it stops and this reads the head again."""
        removed, raced = 0, 0
        family = self.layout.family(origin)
        k = family.keys
        dlq = k.queue(dead_letter_queue(origin))
        while raced < RACES:
            try:
                head = [raw_bytes(raw) or b"" for raw in self.redis.lrange(dlq, 0, AGE_CHUNK - 1)]
            except ResponseError:  # not a list: the script's own check reports it
                head = []
            keys: list[str | bytes] = [*k.dead_letter_keys(origin, [])]
            for raw in head:  # as bytes: an id that is not UTF-8 is still removed
                keys += [raw_key(k.job, raw), raw_key(k.results, raw)]
            plan = {"origin": origin, "before_iso": before_iso, "head": len(head), "counted": counted}
            count, changed = family.scripts.run("dlq_remove", plan, keys=keys)
            removed += int(count)
            raced = raced + 1 if changed and not count else 0
            if not head or not (changed or int(count) == len(head)):
                return removed
        return removed

    def enforce_retention(self, now: float, origins: list[str] | None = None) -> int:
        """Remove dead letters older than the retention (of ``origins``, else of every queue);
        counted and logged."""
        removed = 0
        for origin in self.origins() if origins is None else origins:
            count = self._remove_older(origin, iso(now - self.settings.dlq_retention), counted=True)
            if count:
                log.warning("retention removed %d dead letter(s) of queue %s (older than %d s)",
                            count, origin, self.settings.dlq_retention)  # fmt: skip
            removed += count
        return removed

    def dropped(self) -> dict[str, int]:
        """Dead letters removed by the cap or the retention so far, per origin queue."""
        dropped: dict[str, int] = {}
        for keys in self.layout.every_keys():
            found = self.redis.hgetall(keys.dlq_dropped).items()
            for k, v in found:
                if (name := readable(k)) and (readable(v) or "").isdigit():
                    dropped[name] = dropped.get(name, 0) + int(v)
        return dropped
