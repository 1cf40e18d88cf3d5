"""Keys that depend on what Redis holds, read just before a script that declares them in KEYS.

Every runtime script declares every key it touches (docs/operations.md, "Scripts and their
declared keys"). Where a key depends on data only Redis holds (which worker claimed a run, a job's
effect key, the flow parent a run tells when it ends and that parent's queue, the oldest dead
letters the length cap removes, the oldest jobs a type keeps), these functions read it with plain
commands (no writes) and list the keys; the scripts check anything they read again and leave
what they were not told of for a later call. Used by recovery (lua/orphans.lua, lua/recover.lua),
housekeeping (lua/keep.lua) and the worker's step (workers/stepkeys.py). Ids are kept as bytes: a
run whose id is not UTF-8 is still recovered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import raw_bytes, readable
from workers.keys import Keys, dead_letter_queue, raw_key

KEEP_READ = 100  # the oldest jobs of each kept set read before a trim (lua/includes/retention.lua)
DLQ_HEAD = 100  # the oldest dead letters read per queue: the most the cap removes per call (settle.lua)

Key = str | bytes


def page_keys(redis: Redis, keys: Keys, queue: str, offset: int, count: int) -> list[Key]:
    """For orphans.lua's page of ``queue``'s running registry: each run's job, its worker's in-flight
    set and its effect key, and what putting a run back in line touches."""
    declared: dict[Key, None] = dict.fromkeys(
        [keys.wip(queue), keys.live_workers, keys.liveness, keys.events]
    )
    declared.update(dict.fromkeys(keys.requeue_keys(queue)))
    try:
        members = redis.zrangebyscore(keys.wip(queue), "+inf", "+inf", start=offset, num=count)
    except ResponseError:  # not a sorted set: the script reports it
        return list(declared)
    runs = [(raw_bytes(m) if isinstance(m, bytes | str) else None) or b"" for m in members]
    ids = [run.rpartition(b":")[0] for run in runs]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(raw_key(keys.job, job_id), ["worker_name", "effect_key"])
        rows = pipe.execute(raise_on_error=False)
    for job_id, row in zip(ids, rows, strict=True):
        declared[raw_key(keys.job, job_id)] = None
        if isinstance(row, list):
            worker, effect_key = (readable(value) for value in row)
            if worker:
                declared[keys.inflight(worker)] = None
            if effect_key:
                declared[keys.effect_key(effect_key)] = None
    return list(declared)


def recover_keys(redis: Redis, keys: Keys, items: list[list[Any]], effect_keys: Iterable[str]) -> list[Key]:
    """For recover.lua settling ``items`` (failed items, the dead worker 12th) of runs whose effect
    keys are ``effect_keys``: each run's keys and its queue's, its hook job's, its flow's (its own
    records as a parent, its parent's and the parent's queue), and the oldest dead letters of each
    queue a run is dead-lettered to (the length cap may remove them)."""
    declared: dict[Key, None] = dict.fromkeys(
        [keys.live_workers, keys.liveness, keys.events, keys.dlq_dropped]
    )
    declared.update(dict.fromkeys(keys.effect_key(key) for key in effect_keys if key))
    dead_queues: dict[str, None] = {}
    for item in items:
        job_id, queue, action, hook, worker = item[0], item[2], item[3], item[7], item[11]
        declared.update(dict.fromkeys([keys.job(job_id), keys.results(job_id), keys.job_logs(job_id)]))
        declared.update(dict.fromkeys([keys.wip(queue), keys.inflight(worker), keys.scheduled(queue)]))
        declared.update(dict.fromkeys(keys.requeue_keys(queue)))
        declared.update(dict.fromkeys([keys.queue(dead_letter_queue(queue)), keys.failed(queue)]))
        if hook:
            declared.update(dict.fromkeys(keys.enqueue_job_keys(hook)))
        if action == "dead":
            dead_queues[queue] = None
    declared.update(dict.fromkeys(flow_keys(redis, keys, [(item[0], item[2]) for item in items])))
    declared.update(dict.fromkeys(dead_letter_head_keys(redis, keys, list(dead_queues))))
    return list(declared)


def dead_letter_head_keys(redis: Redis, keys: Keys, queues: list[str]) -> list[Key]:
    """The keys of the oldest ``DLQ_HEAD`` dead letters of each of ``queues``: the length cap
    removes them (lua/includes/settle.lua dead_letter)."""
    if not queues:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.lrange(keys.queue(dead_letter_queue(queue)), 0, DLQ_HEAD - 1)
        heads = pipe.execute(raise_on_error=False)
    found: list[Key] = []
    for head in heads:
        for job_id in head if isinstance(head, list) else []:
            raw = raw_bytes(job_id) or b""
            found += [raw_key(build, raw) for build in (keys.job, keys.results, keys.job_logs)]
    return found


def flow_keys(redis: Redis, keys: Keys, runs: list[tuple[str, str]]) -> list[Key]:
    """The flow records ending each of ``runs`` (job id, queue) touches: its own as a parent, its
    parent's, and the parent's queue (lua/includes/flows.lua flow_settled)."""
    if not runs:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for job_id, _queue in runs:
            pipe.hmget(keys.job(job_id), ["flow_parent", "flow"])
        rows = pipe.execute(raise_on_error=False)
    found: list[Key] = []
    parents: dict[bytes, None] = {}
    for (job_id, queue), row in zip(runs, rows, strict=True):
        if not isinstance(row, list):
            continue
        parent, is_parent = raw_bytes(row[0]), row[1]
        if is_parent:
            found += [keys.flow_children(job_id), keys.flow_pending(job_id), keys.flow_results(job_id)]
            found.append(keys.deferred(queue))
        if parent:
            parents[parent] = None
    found += parent_keys(redis, keys, list(parents))
    return found


def parent_keys(redis: Redis, keys: Keys, parents: list[bytes]) -> list[Key]:
    """What telling each flow parent of ``parents`` that a child ended touches: its job hash, its
    flow records, and its queue's line and deferred registry (its `origin`, read here)."""
    if not parents:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for parent in parents:
            pipe.hget(raw_key(keys.job, parent), "origin")
        origins = pipe.execute(raise_on_error=False)
    found: list[Key] = []
    for parent, origin in zip(parents, origins, strict=True):
        found += [raw_key(build, parent) for build in (keys.job, keys.flow_children, keys.flow_pending)]
        found.append(raw_key(keys.flow_results, parent))
        queue = readable(origin) if isinstance(origin, bytes | str) else None
        if queue:
            found += [*keys.requeue_keys(queue), keys.deferred(queue)]
    return found


def kept_keys(redis: Redis, keys: Keys, sets: list[str]) -> list[Key]:
    """What trimming each kept set of ``sets`` touches (lua/includes/retention.lua): the oldest
    ``KEEP_READ`` jobs of each (read here, with each one's queue) and their keys and registries."""
    with redis.pipeline(transaction=False) as pipe:
        for index in sets:
            pipe.zrange(index, 0, KEEP_READ - 1)
        heads = pipe.execute(raise_on_error=False)
    ids = [[raw_bytes(i) or b"" for i in head] if isinstance(head, list) else [] for head in heads]
    with redis.pipeline(transaction=False) as pipe:
        for head in ids:
            for job_id in head:
                pipe.hget(raw_key(keys.job, job_id), "origin")
        origins = iter(pipe.execute(raise_on_error=False))
    declared: dict[Key, None] = {keys.dlq_dropped: None}
    for index, head in zip(sets, ids, strict=True):
        declared[index] = None
        for job_id in head:
            for build in (keys.job, keys.results, keys.job_logs):
                declared[raw_key(build, job_id)] = None
            raw = next(origins)  # an error when the key holds no hash: the script leaves it
            origin = readable(raw) if isinstance(raw, bytes | str) else None
            if origin:
                declared.update(dict.fromkeys([keys.finished(origin), keys.failed(origin)]))
                declared[keys.queue(dead_letter_queue(origin))] = None
    return list(declared)
