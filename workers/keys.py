"""Every Redis key the runtime touches is built here, and nowhere else.

Two families:

- **rq's keys**, spelled exactly as rq 2.x spells them, so ``rq info``, rq-dashboard and
  rq-scheduler see chumon's queues, jobs, registries and workers. Their ``rq:`` prefix is
  fixed by rq and cannot be configured.
- **chumon's own keys**, under the configurable prefix (``chumon`` by default): worker
  liveness, in-flight sets, wake-up signals, idempotency keys, dead-letter counters.

Lua scripts never spell a key: they receive the prefixes below (``Keys.lua_keyspace``) and
append ids to them, so the shapes live in this one module.

**The cluster layout** (a ``redis+cluster://`` URL, docs/operations.md "Redis Cluster"): every
runtime key of a queue carries the queue's hash tag right after its first part (``rq:{emails}:job:<id>``,
``chumon:{emails}:signal:emails``), so a queue's jobs, registries, dead letters, signal stream,
idempotency keys and its workers' records all live in one slot and every script stays in one
slot. ``Keys(prefix, tag=...)`` builds that family; ``tag_of`` says which tag a queue has (a
dead-letter queue has its origin's). Only ``Keys.queue_index`` is outside every tag: the list of
tags, written with plain commands.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache, cached_property
from typing import Any

from redis.crc import key_slot

DLQ_SUFFIX = ".dlq"
SLOTS = 16384  # Redis Cluster's hash slots
_WORD = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
_QUEUE_NAME = re.compile(rf"^{_WORD}(@{_WORD})?$")
GROUP = "@"  # queue@group: queues of one group share a slot on Redis Cluster


def check_queue_name(name: str) -> str:
    """Return ``name`` if it may name a work queue; raise ValueError naming the problem otherwise."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is invalid: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit (optionally @ and a group name of the same kind: "
            "queues of one group share a slot on Redis Cluster)"
        )
    return name


def dead_letter_queue(queue: str) -> str:
    """The name of ``queue``'s dead-letter queue (itself a real rq queue that no worker serves)."""
    return queue + DLQ_SUFFIX


def is_dead_letter_queue(name: str) -> bool:
    return name.endswith(DLQ_SUFFIX)


def origin_of_dead_letter_queue(name: str) -> str:
    return name[: -len(DLQ_SUFFIX)]


SUB = "#"  # a sub-queue's name: <queue>#<n>
MAX_SPLIT = 256


def spread(count: int, name: Callable[[int], str]) -> tuple[str, ...]:
    """``count`` names ``name(n)``, the k-th one with its slot in the k-th of ``count`` equal ranges
    of the 16,384 slots (the smallest such n), so they land on different primaries of an evenly
    sliced cluster (names hashed blindly bunch up: 3 of them land on 2 primaries one time in 3)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        candidate = name(n)
        found.setdefault(key_slot(candidate.encode()) * count // SLOTS, candidate)
        n += 1
    return tuple(found[k] for k in range(count))


@cache
def shard_tags(count: int) -> tuple[str, ...]:
    """The groups of ``count`` shards (``shard0``, ``shard5``...: see ``spread``)."""
    return spread(count, lambda n: f"shard{n}")


def sharded_queue(queue: str, tag: str) -> str:
    """The copy of sharded ``queue`` in shard ``tag``."""
    return f"{queue}{GROUP}{tag}"


@cache
def sub_queues(queue: str, count: int) -> tuple[str, ...]:
    """The names of ``queue``'s ``count`` sub-queues (the cluster layout's split of a hot queue):
    ``queue#<n>``, spread over the slots (``spread``)."""
    if count <= 1:
        return (queue,)
    return spread(count, lambda n: f"{queue}{SUB}{n}")


def sub_queue_for(queue: str, count: int, key: str) -> str:
    """The sub-queue of ``queue`` (split in ``count``) that takes the job whose key is ``key``: the
    same key always the same one, so idempotency keys (kept per slot) keep deduplicating."""
    subs = sub_queues(queue, count)
    return subs[zlib.crc32(key.encode()) % count] if count > 1 else queue


def base_queue(name: str) -> str:
    """The queue a sub-queue belongs to (``emails#7`` -> ``emails``); any other name unchanged."""
    head, sep, tail = name.rpartition(SUB)
    return head if sep and tail.isdigit() else name


def check_served_queue(name: str) -> str:
    """``check_queue_name`` for a queue or one of its sub-queues."""
    check_queue_name(base_queue(name))
    return name


def tag_of(queue: str) -> str:
    """The hash tag of ``queue``'s keys in the cluster layout: its own name; its group's for a
    queue of a group (``reports@acme`` -> ``acme``: the group's queues share a slot); its
    origin's for a dead-letter queue (dead letters stay in their queue's slot)."""
    name = origin_of_dead_letter_queue(queue) if is_dead_letter_queue(queue) else queue
    _, at, group = name.rpartition(GROUP)
    return group if at else name


RELAY_SUFFIX = "~relay"


def relay_queue(queue: str) -> str:
    """The cluster layout's relay of ``queue``'s tag: a list in that slot holding jobs bound for a
    queue in another slot (a dead-letter hook's), until workers/relay.py moves them there."""
    return tag_of(queue) + RELAY_SUFFIX


def raw_key(build: Callable[[str], str], raw: bytes) -> bytes:
    """The key ``build`` makes for an id read from Redis as bytes, kept as bytes: an id that is not
    UTF-8 (hand-written garbage) still names its own key, as a script would build it."""
    prefix, _, suffix = build("\0").partition("\0")
    return prefix.encode() + raw + suffix.encode()


class Keys:
    """Key builder for one key prefix."""

    # rq's fixed key shapes (rq/job.py, rq/queue.py, rq/registry.py, rq/results.py,
    # rq/worker_registration.py)
    RQ_JOB = "rq:job:"
    RQ_QUEUE = "rq:queue:"
    RQ_QUEUES = "rq:queues"
    RQ_WIP = "rq:wip:"
    RQ_FINISHED = "rq:finished:"
    RQ_FAILED = "rq:failed:"
    RQ_SCHEDULED = "rq:scheduled:"
    RQ_CANCELED = "rq:canceled:"
    RQ_DEFERRED = "rq:deferred:"
    RQ_RESULTS = "rq:results:"
    RQ_WORKER = "rq:worker:"
    RQ_WORKERS = "rq:workers"
    RQ_WORKERS_BY_QUEUE = "rq:workers:"

    def __init__(self, prefix: str = "chumon", tag: str | None = None) -> None:
        self.prefix = prefix
        self.tag = tag
        self._p = prefix + ":"
        if tag is not None:  # the cluster layout: every key in the slot of ``{tag}``
            check_served_queue(tag)
            self._p = f"{prefix}:{{{tag}}}:"
            for name, value in vars(Keys).items():
                if name.startswith("RQ_"):
                    setattr(self, name, f"rq:{{{tag}}}:" + value[len("rq:") :])

    @property
    def queue_index(self) -> str:
        """Set of every queue's name, outside every tag (the cluster layout's list of queues)."""
        return self.prefix + ":queue-index"

    # -- rq -------------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        return self.RQ_JOB + job_id

    def queue(self, name: str) -> str:
        return self.RQ_QUEUE + name

    def queue_name_of(self, queue_key: str) -> str:
        return queue_key[len(self.RQ_QUEUE) :]

    def wip(self, queue: str) -> str:
        return self.RQ_WIP + queue

    def finished(self, queue: str) -> str:
        return self.RQ_FINISHED + queue

    def failed(self, queue: str) -> str:
        return self.RQ_FAILED + queue

    def scheduled(self, queue: str) -> str:
        return self.RQ_SCHEDULED + queue

    def canceled(self, queue: str) -> str:
        return self.RQ_CANCELED + queue

    def deferred(self, queue: str) -> str:
        """rq's registry of jobs waiting on others: a flow's parents wait there for their children."""
        return self.RQ_DEFERRED + queue

    def results(self, job_id: str) -> str:
        return self.RQ_RESULTS + job_id

    def rq_worker(self, name: str) -> str:
        return self.RQ_WORKER + name

    def rq_workers_by_queue(self, queue: str) -> str:
        return self.RQ_WORKERS_BY_QUEUE + queue

    # -- chumon -----------------------------------------------------------------------------
    @property
    def live_workers(self) -> str:
        """Sorted set: worker name -> time of its last heartbeat."""
        return self._p + "workers"

    def inflight(self, worker: str) -> str:
        """Set of ``job_id:execution_id`` a worker has claimed and not yet settled."""
        return self._p + "worker:" + worker + ":inflight"

    def signal(self, queue: str) -> str:
        """Stream of one entry, appended whenever ``queue`` gets work; idle workers block on it."""
        return self._p + "signal:" + queue

    def enqueue_key(self, key: str) -> str:
        """Producer-side idempotency: key -> the id of the job it enqueued."""
        return self._p + "idem:enqueue:" + key

    def effect_key(self, effect_key: str) -> str:
        """Worker-side idempotency for ``<job type>:<key>``: ``r:<execution>`` while a run holds it,
        ``d<result>`` once done."""
        return self._p + "idem:effect:" + effect_key

    @property
    def dlq_dropped(self) -> str:
        """Hash: queue -> dead letters removed by the length cap or retention, counted."""
        return self._p + "dlq:dropped"

    @property
    def maintenance_lock(self) -> str:
        """Held for a minute by the worker doing housekeeping (see maintenance.py)."""
        return self._p + "maintenance:lock"

    @property
    def recovery_lock(self) -> str:
        """Held for one recovery interval by the worker scanning for orphaned runs (recovery.py)."""
        return self._p + "recovery:lock"

    @property
    def liveness(self) -> str:
        """Hash: last_beat (server time of the last heartbeat of any worker), grace_until."""
        return self._p + "liveness"

    @property
    def quarantine(self) -> str:
        """Stream of ids found in a queue that cannot be run at all (invalid id, job key not a hash)."""
        return self._p + "quarantine"

    def limiter(self, kind: str, name: str) -> str:
        """Counter of jobs started in the current window of a rate limit (``kind``: queue or type)."""
        return f"{self._p}limiter:{kind}:{name}"

    def throttle(self, kind: str, name: str) -> str:
        """Present while a queue or job type is paused because a job said the other side is busy."""
        return f"{self._p}throttle:{kind}:{name}"

    @property
    def paused(self) -> str:
        """Set of queue names no worker claims from (``chumon queues pause``)."""
        return self._p + "paused"

    def prioritized(self, queue: str) -> str:
        """Sorted set of a queue's jobs that have a numeric priority: score priority * 2**32 + seq."""
        return self._p + "prioritized:" + queue

    def priority_seq(self, queue: str) -> str:
        """Counter that keeps jobs of equal priority in FIFO order."""
        return self._p + "priority-seq:" + queue

    def cancel_requests(self) -> str:
        """Set of job ids whose running attempt was asked to stop (``chumon job cancel``)."""
        return self._p + "cancel"

    @property
    def replication_fence(self) -> str:
        """Written before each WAIT so it covers every earlier write (workers/durability.py)."""
        return self._p + "fence"

    # -- flows (workers/flows.py, lua/includes/flows.lua) ----------------------------------------
    def flow_children(self, parent: str) -> str:
        """List of a flow parent's children ids, in the order they were given."""
        return self._p + "flow:" + parent + ":children"

    def flow_pending(self, parent: str) -> str:
        """Set of a flow parent's children that have not ended yet."""
        return self._p + "flow:" + parent + ":pending"

    def flow_results(self, parent: str) -> str:
        """Hash: child id -> 'd<result>' (finished), 'f' (dead-lettered) or 'c' (canceled)."""
        return self._p + "flow:" + parent + ":results"

    # -- progress, job logs, events, retention (docs/runtime.md) ----------------------------
    def job_logs(self, job_id: str) -> str:
        """List of a job's log lines (``ctx.log``), the last few kept, expiring with the job."""
        return self._p + "joblog:" + job_id

    @property
    def events(self) -> str:
        """Stream of job lifecycle events (``CHUMON_JOB_EVENTS``), capped at about its max length."""
        return self._p + "job-events"  # not "events": the order flow's domain events live there

    def kept(self, kind: str, job_type: str) -> str:
        """Sorted set: the ``completed`` or ``failed`` jobs of a type that keeps its last N -> when."""
        return f"{self._p}kept:{kind}:{job_type}"

    def runtime_owned(self, key: str) -> bool:
        """Whether ``key`` is one the runtime keeps for itself (a job's effects may not write it)."""
        own = (
            "idem:", "worker:", "workers", "signal:", "dlq:", "maintenance:", "recovery:", "liveness",
            "quarantine", "limiter:", "throttle:", "paused", "prioritized:", "priority-seq:", "cancel",
            "fence", "flow:",
            "joblog:", "job-events", "kept:",
        )  # fmt: skip
        if key.startswith("rq:") or key.startswith(self.prefix + ":{") or key == self.queue_index:
            return True  # rq's, and any queue's keys in the cluster layout
        return key.startswith(self._p) and key[len(self._p) :].startswith(own)

    def effect_refusal(self, key: str) -> bool | str:
        """Why a job's effect may not write ``key``: True for a key of the runtime's own; in the
        cluster layout, a sentence for a key outside the tag's slot (the effects are applied in the
        script that completes the job, which touches one slot); False when it may."""
        if self.runtime_owned(key):
            return True
        if self.tag is not None and key_slot(key.encode()) != key_slot(self.tag.encode()):
            return (
                f"{key!r} is not in the slot of queue {self.tag!r}: on Redis Cluster a job's effects "
                f"stay in its queue's slot; put {{{self.tag}}} in the key (e.g. 'balances:{{{self.tag}}}')"
            )
        return False

    def enqueue_job_keys(self, job: Mapping[str, Any]) -> list[str]:
        """Every key ``enqueue_job`` (lua/includes/enqueue_job.lua) and the ``flush_touched`` after
        it may touch for the job spec ``job`` (``Enqueuer.spec``), for a script that declares its
        KEYS: the job hash, the queue's list and scheduled registry (which one is decided by the
        server's clock), rq:queues and the queue's signal stream; the prioritized set and its
        sequence counter for a job with a priority; its enqueue idempotency key; the job event
        stream when events are on."""
        return self.enqueue_batch_keys([job])

    def enqueue_batch_keys(self, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
        """``enqueue_job_keys`` for a batch of job specs, built in one pass: each job's hash, its
        enqueue idempotency key, and each queue's keys once (a bulk enqueue declares a few hundred;
        a list per job and their merge cost four times as much Python)."""
        keys = [self.RQ_QUEUES]
        queues: dict[str, bool] = {}  # queue -> whether a job of the batch has a priority there
        events = False
        for job in jobs:
            keys.append(self.RQ_JOB + job["id"])
            queue = job["queue"]
            queues[queue] = queues.get(queue, False) or job.get("priority") is not None
            if job.get("enqueue_key") is not None:
                keys.append(self.enqueue_key(job["enqueue_key"]))
            events = events or bool(job.get("events"))
        for queue, prioritized in queues.items():
            keys += [self.queue(queue), self.scheduled(queue), self.signal(queue)]
            if prioritized:
                keys += [self.prioritized(queue), self.priority_seq(queue)]
        if events:
            keys.append(self.events)
        return keys

    def requeue_keys(self, queue: str) -> list[str]:
        """What ``requeue`` and ``flush_touched`` (lua/includes/common.lua) touch putting a job back
        in ``queue``'s line: its list or prioritized set (and sequence), rq:queues, its signal."""
        return [
            self.queue(queue),
            self.prioritized(queue),
            self.priority_seq(queue),
            self.RQ_QUEUES,
            self.signal(queue),
        ]

    def dead_letter_keys(self, origin: str, job_ids: list[str]) -> list[str]:
        """What lua/dlq_remove.lua touches removing ``job_ids`` from ``origin``'s dead letters."""
        keys = [self.queue(dead_letter_queue(origin)), self.failed(origin), self.dlq_dropped]
        for job_id in job_ids:
            keys += [self.job(job_id), self.results(job_id)]
        return keys

    def cancel_keys(self, job_id: str, origin: str, parent: str, parent_origin: str) -> list[str]:
        """What lua/control.lua may touch canceling ``job_id`` of queue ``origin`` whose flow parent
        (if any) is ``parent`` of queue ``parent_origin``: the job, its queue's lines and
        registries, its own flow records, the parent's job and flow records and its queue's line."""
        keys = [self.job(job_id), self.cancel_requests(), self.events]
        if origin:
            keys += [self.queue(origin), self.prioritized(origin), self.scheduled(origin)]
            keys += [self.canceled(origin), self.deferred(origin)]
            keys += [self.flow_children(job_id), self.flow_pending(job_id), self.flow_results(job_id)]
        if parent:
            keys += [self.job(parent), self.flow_children(parent), self.flow_pending(parent)]
            keys.append(self.flow_results(parent))
            if parent_origin:
                keys += [*self.requeue_keys(parent_origin), self.deferred(parent_origin)]
        return list(dict.fromkeys(keys))

    def flow_create_keys(self, nodes: Sequence[Mapping[str, Any]]) -> list[str]:
        """Every key lua/flow.lua may touch creating the flow ``nodes`` (FlowProducer's specs):
        each node's job hash and the queue keys it checks, a leaf's enqueue keys, a parent's
        flow records and deferred registry."""
        keys: dict[str, None] = {self.RQ_QUEUES: None}
        for node in nodes:
            queue = node["queue"]
            for key in (
                self.job(node["id"]),
                self.queue(queue),
                self.scheduled(queue),
                self.prioritized(queue),
            ):
                keys[key] = None
            keys[self.deferred(queue)] = None
            if node.get("children"):
                parent = node["id"]
                for key in (self.flow_children(parent), self.flow_pending(parent), self.flow_results(parent)):
                    keys[key] = None
            else:
                keys.update(dict.fromkeys(self.enqueue_job_keys(node)))
        return list(keys)

    # -- for Lua ----------------------------------------------------------------------------
    @cached_property
    def lua_keyspace(self) -> str:
        """The prefixes Lua scripts append ids to, as the JSON their first ARGV carries."""
        return json.dumps(
            {
                "job": self.RQ_JOB,
                "queue": self.RQ_QUEUE,
                "queues": self.RQ_QUEUES,
                "wip": self.RQ_WIP,
                "finished": self.RQ_FINISHED,
                "failed": self.RQ_FAILED,
                "scheduled": self.RQ_SCHEDULED,
                "canceled": self.RQ_CANCELED,
                "results": self.RQ_RESULTS,
                "rq_worker": self.RQ_WORKER,
                "rq_workers": self.RQ_WORKERS,
                "rq_workers_by_queue": self.RQ_WORKERS_BY_QUEUE,
                "signal": self._p + "signal:",
                "enqueue_key": self._p + "idem:enqueue:",
                "effect_key": self._p + "idem:effect:",
                "live_workers": self.live_workers,
                "inflight": self._p + "worker:",
                "inflight_suffix": ":inflight",
                "dlq_suffix": DLQ_SUFFIX,
                "dlq_dropped": self.dlq_dropped,
                "liveness": self.liveness,
                "quarantine": self.quarantine,
                "limiter": self._p + "limiter:",
                "throttle": self._p + "throttle:",
                "paused": self.paused,
                "prioritized": self._p + "prioritized:",
                "priority_seq": self._p + "priority-seq:",
                "cancel": self.cancel_requests(),
                "deferred": self.RQ_DEFERRED,
                "flow": self._p + "flow:",
                "job_logs": self._p + "joblog:",
                "job_events": self.events,
                "kept": self._p + "kept:",
            },
            separators=(",", ":"),
        )
