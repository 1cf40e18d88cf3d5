"""The keys recovery's scripts (lua/orphans.lua, lua/recover.lua) may touch, read just before each call.

Both scripts declare every key they touch in KEYS (docs/operations.md, "Scripts and their
declared keys"). Which keys a run's recovery touches depends on what Redis holds: the worker that
claimed it and its effect key (its job hash), the flow parent it tells when it ends and that
parent's queue, the oldest dead letters the length cap removes. These functions read them (plain
commands, no writes) and list the keys; the scripts check anything they read again and leave a run
whose keys they were not told of for the next round. Ids are kept as bytes: a run whose id is not
UTF-8 is still recovered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import raw_bytes, readable
from workers.keys import Keys, dead_letter_queue, raw_key

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
    declared.update(dict.fromkeys(_flow_keys(redis, keys, items)))
    with redis.pipeline(transaction=False) as pipe:
        for queue in dead_queues:
            pipe.lrange(keys.queue(dead_letter_queue(queue)), 0, DLQ_HEAD - 1)
        heads = pipe.execute(raise_on_error=False)
    for head in heads:
        for job_id in head if isinstance(head, list) else []:
            raw = raw_bytes(job_id) or b""
            declared.update(
                dict.fromkeys(raw_key(build, raw) for build in (keys.job, keys.results, keys.job_logs))
            )
    return list(declared)


def _flow_keys(redis: Redis, keys: Keys, items: list[list[Any]]) -> list[str]:
    """The flow records a run ending touches: its own as a parent, its parent's, the parent's queue."""
    with redis.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hmget(keys.job(item[0]), ["flow_parent", "flow"])
        rows = pipe.execute(raise_on_error=False)
    found: list[str] = []
    parents: dict[str, None] = {}
    for item, row in zip(items, rows, strict=True):
        if not isinstance(row, list):
            continue
        parent, is_parent = readable(row[0]), row[1]
        if is_parent:
            found += [keys.flow_children(item[0]), keys.flow_pending(item[0]), keys.flow_results(item[0])]
            found.append(keys.deferred(item[2]))
        if parent:
            parents[parent] = None
    with redis.pipeline(transaction=False) as pipe:
        for parent in parents:
            pipe.hget(keys.job(parent), "origin")
        origins = pipe.execute(raise_on_error=False)
    for parent, origin in zip(parents, origins, strict=True):
        found += [
            keys.job(parent),
            keys.flow_children(parent),
            keys.flow_pending(parent),
            keys.flow_results(parent),
        ]
        queue = readable(origin) if isinstance(origin, bytes | str) else None
        if queue:
            found += [*keys.requeue_keys(queue), keys.deferred(queue)]
    return found
