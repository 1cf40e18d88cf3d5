"""The keys the worker's step (lua/step.lua) may touch, learned just before each call.

The step declares every key it touches in KEYS, like every runtime script (docs/operations.md,
"Scripts and their declared keys"). Most are known to the worker: its own keys, its queues' keys,
and those of the runs it settles (their ids, queues and effect keys came with the claim). Which
jobs it claims next depends on what Redis holds, so a call that claims is preceded by one round
trip that reads the head of each of the worker's queues (its list, its prioritized set and, when a
scheduled job may be due, its scheduled registry) with each job's effect key: one
``SORT <line> BY nosort LIMIT 0 <window> GET # GET rq:job:*->effect_key`` per line, no Lua. A
server that refuses SORT's GET patterns (an ACL user limited to key patterns) gets the same from
LRANGE/ZRANGE and HMGET, in two round trips. The throttle and rate-limit keys of the job types the
worker serves are declared on every call; a job of another type is claimed once the worker has
read its type (``wanted``, below), and that type's keys are declared from then on.

The script claims only jobs whose keys it was told. An id it meets at a head the worker did not
read (another worker took those it read) goes back where it was, and the worker reads again at
once with a wider window; a job it cannot place without more (a type or an effect key not read, a
duplicate in a flow) is returned in ``wanted``, and the next call declares what ``wanted_keys``
reads of it. Settling reads only in rare cases: a run in a flow (its parent and the parent's
queue), a dead letter (the oldest dead letters the length cap removes), a type that keeps its last
N (the oldest of its kept set): workers/readkeys.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from workers.codec import raw_bytes, readable
from workers.connection import slot_client, slot_trouble
from workers.execution import Claimed
from workers.keys import Keys, dead_letter_queue, raw_key
from workers.readkeys import Key, dead_letter_head_keys, flow_keys, kept_keys, parent_keys

WINDOW_MIN = 4  # ids read beyond what a call claims: room for another worker taking some first
WINDOW_MAX = 1024
TYPES_MAX = 256  # job types of other workers' registries whose keys are declared (once met)
FIELDS = ["effect_key", "job_type", "data", "flow_parent", "flow"]  # what the slower reads take of a job


class StepKeys:
    """The KEYS of one worker's step calls: its fixed keys, the claim's (read first), the settle's."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        worker: str,
        queues: Sequence[str],
        type_limits: Mapping[str, Any],
        types: Iterable[str] = (),
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self.queues = list(queues)
        self.type_limits = type_limits
        # False once the server refuses SORT's GET patterns (Redis 6.2's cluster refuses them all;
        # 7's takes a pattern with the list's own tag, which chumon's keys have there)
        self.sort = True
        self.extra = WINDOW_MIN  # grows when a claim met ids it was not told of
        self._gets = ["#", keys.RQ_JOB + "*->effect_key"]
        fixed: dict[Key, None] = dict.fromkeys(
            [keys.RQ_QUEUES, keys.paused, keys.quarantine, keys.events, keys.rq_worker(worker),
             keys.inflight(worker)]
        )  # fmt: skip
        for queue in self.queues:
            fixed.update(dict.fromkeys(self.line_keys(queue)))
        self._type_keys: dict[bytes, list[Key]] = {}
        for job_type in types:
            fixed.update(dict.fromkeys(self.type_keys(job_type.encode())))
        self.fixed = list(fixed)
        self.met: dict[bytes, None] = {}  # other types met in the worker's queues (wanted_keys)

    @contextmanager
    def _pipeline(self) -> Iterator[Pipeline]:
        """A pipeline for the head reads: on a cluster, straight to the primary of this worker's
        slot; an error there (a slot moved, a primary gone) makes the slot map read again."""
        try:
            with slot_client(self.redis, self.fixed[0]).pipeline(transaction=False) as pipe:
                yield pipe
        except (RedisError, OSError) as exc:
            slot_trouble(self.redis, exc)
            raise

    def queue_keys(self, queue: str) -> list[str]:
        """Every key of ``queue`` a step may touch."""
        return self.line_keys(queue) + self.ending_keys(queue)

    def line_keys(self, queue: str) -> list[str]:
        """What claiming from ``queue`` and completing its jobs touch: its lines and the running,
        scheduled and finished registries, its signal, its rate limit and throttle."""
        k = self.keys
        return [
            k.queue(queue), k.scheduled(queue), k.wip(queue), k.finished(queue), k.prioritized(queue),
            k.priority_seq(queue), k.signal(queue), k.throttle("queue", queue), k.limiter("queue", queue),
        ]  # fmt: skip

    def ending_keys(self, queue: str) -> list[str]:
        """What a run of ``queue`` ending otherwise touches (failed, dead-lettered, canceled, a flow's
        parent): rq's failed, canceled and deferred registries, the dead letters."""
        k = self.keys
        return [k.failed(queue), k.canceled(queue), k.deferred(queue), k.queue(dead_letter_queue(queue))]

    def type_keys(self, job_type: bytes) -> list[Key]:
        """A job type's throttle and, if it has a rate limit, its limiter."""
        found = self._type_keys.get(job_type)
        if found is None:
            found = [raw_key(lambda name: self.keys.throttle("type", name), job_type)]
            name = readable(job_type)
            if name is not None and name in self.type_limits:
                found.append(self.keys.limiter("type", name))
            if len(self._type_keys) < 4096:
                self._type_keys[job_type] = found
        return found

    # -- the claim ---------------------------------------------------------------------------
    def claim_keys(self, want: int, scheduled: bool) -> list[Key]:
        """The keys of the jobs at the head of each queue, read now (one round trip): the next
        ``want`` plus a margin, with their effect keys and types. ``scheduled``: read the head of
        the scheduled registries too (a job there may be due)."""
        window = min(want + self.extra, WINDOW_MAX)
        lines = []
        for queue in self.queues:
            lines += [self.keys.queue(queue), self.keys.prioritized(queue)]
            if scheduled:
                lines.append(self.keys.scheduled(queue))
        rows = self._heads_sorted(lines, window) if self.sort else None
        if rows is None:
            rows = self._heads_plain(lines, window)
        found: list[Key] = []
        for job_id, effect_key in rows:
            found.append(raw_key(self.keys.job, job_id))
            if effect_key:  # found done, the job ends at once as a duplicate, with the result
                found += [raw_key(self.keys.effect_key, effect_key), raw_key(self.keys.results, job_id)]
        for job_type in self.met:
            found += self.type_keys(job_type)
        return found

    def named_keys(self, named: Iterable[tuple[bytes, bytes]]) -> list[Key]:
        """The keys of jobs the queues' signals named (id, effect key): an idle worker woken for
        them claims without reading the heads; a claim that meets another id reads them next."""
        found: list[Key] = []
        for job_id, effect_key in named:
            found.append(raw_key(self.keys.job, job_id))
            if effect_key:
                found += [raw_key(self.keys.effect_key, effect_key), raw_key(self.keys.results, job_id)]
        for job_type in self.met:
            found += self.type_keys(job_type)
        return found

    def claimed(self, wanted: int, got: int, exhausted: bool) -> None:
        """How a claim went: one that met ids it was not told of (it ended early) reads twice as far
        ahead next time; one that got all it wanted reads less far, down to ``WINDOW_MIN``."""
        if got >= wanted:
            self.extra = max(WINDOW_MIN, self.extra // 2)
        elif exhausted:
            self.extra = min(self.extra * 2, WINDOW_MAX)

    def _heads_sorted(self, lines: list[str], window: int) -> list[tuple[bytes, bytes]] | None:
        with self._pipeline() as pipe:
            for line in lines:
                pipe.sort(line, start=0, num=window, by="nosort", get=self._gets)
            replies = pipe.execute(raise_on_error=False)
        rows: list[tuple[bytes, bytes]] = []
        for reply in replies:
            if isinstance(reply, ResponseError):
                if "WRONGTYPE" in str(reply):
                    continue  # a line holding garbage: the script reports it
                self.sort = False  # refused (ACL key patterns, a server without SORT ... GET)
                return None
            if isinstance(reply, list):
                for i in range(0, len(reply) - 1, 2):
                    rows.append((raw_bytes(reply[i]) or b"", raw_bytes(reply[i + 1]) or b""))
        return rows

    def _heads_plain(self, lines: list[str], window: int) -> list[tuple[bytes, bytes]]:
        with self._pipeline() as pipe:
            for line in lines:
                if line.startswith(self.keys.RQ_QUEUE):
                    pipe.lrange(line, 0, window - 1)
                else:
                    pipe.zrange(line, 0, window - 1)
            heads = pipe.execute(raise_on_error=False)
        ids = [raw_bytes(i) or b"" for head in heads if isinstance(head, list) for i in head]
        return [(row[0], row[1]) for row in self._fields(ids)]

    def _fields(self, ids: list[bytes]) -> list[tuple[bytes, bytes, bytes, bytes, bytes]]:
        """Each job's effect key, type (from its data when the hash names none), flow parent and
        flow mark, in one round trip; b'' for what is absent or unreadable."""
        with self._pipeline() as pipe:
            for job_id in ids:
                pipe.hmget(
                    raw_key(self.keys.job, job_id), ["effect_key", "job_type", "data", "flow_parent", "flow"]
                )
            rows = pipe.execute(raise_on_error=False)
        found = []
        for job_id, row in zip(ids, rows, strict=True):
            if not isinstance(row, list):
                found.append((job_id, b"", b"", b"", b""))
                continue
            effect_key, job_type, data, parent, flow = (raw_bytes(v) or b"" for v in row)
            found.append((job_id, effect_key, job_type or _type_in(data), parent, flow))
        return found

    def wanted_keys(self, ids: Iterable[bytes]) -> list[Key]:
        """Everything claiming the jobs ``ids`` may touch, read now: their keys, effect keys and
        types (a type read from the data when the job hash names none), and, for a job in a flow,
        its flow records, its parent's and the parent's queue (a duplicate ends at once)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        found: list[Key] = []
        parents: list[bytes] = []
        for job_id, effect_key, job_type, parent, flow in self._fields(ids):
            found.append(raw_key(self.keys.job, job_id))
            if effect_key:
                found += [raw_key(self.keys.effect_key, effect_key), raw_key(self.keys.results, job_id)]
            if job_type:
                found += self.type_keys(job_type)
                if len(self.met) < TYPES_MAX:
                    self.met[job_type] = None
            if flow:  # a flow's parent: its records expire with it, it leaves rq's deferred
                own = (self.keys.flow_children, self.keys.flow_pending, self.keys.flow_results)
                found += [raw_key(build, job_id) for build in own]
                found += [self.keys.deferred(queue) for queue in self.queues]
            if parent:
                parents.append(parent)
        return found + parent_keys(self.redis, self.keys, parents)

    # -- settling ----------------------------------------------------------------------------
    def settle_keys(
        self,
        outcomes: Sequence[Any],
        items: Mapping[str, list[list[Any]]],
        started: Iterable[Claimed],
    ) -> list[Key]:
        """What settling ``outcomes`` (their items by section, as workers/settle.py's Plan holds
        them) and recording ``started`` runs touches. Reads Redis only for runs in a flow, dead
        letters and types that keep their last N."""
        k = self.keys
        found: list[Key] = [k.job(c.job_id) for c in started]
        queues: dict[str, None] = {}
        ending: dict[str, None] = {}  # queues of runs that end otherwise than done
        in_flow: list[tuple[str, str]] = []
        for outcome in outcomes:
            claimed = outcome.claimed
            found += [k.job(claimed.job_id), k.job_logs(claimed.job_id)]
            if outcome.kind != "done" or outcome.result_b64 or outcome.effects:
                found.append(k.results(claimed.job_id))  # a result, a failure, or a refusal's
            if claimed.effect_key_raw:
                found.append(raw_key(k.effect_key, claimed.effect_key_raw))
            queues[claimed.queue] = None
            if outcome.kind != "done" or outcome.effects or claimed.in_flow:
                ending[claimed.queue] = None
            if claimed.in_flow:
                in_flow.append((claimed.job_id, claimed.queue))
        dead: dict[str, None] = {}
        for item in items.get("done", ()):
            if item[4] == 0:  # kept for no time: the job and its results go at once
                found.append(k.results(item[0]))
            for effect in item[9] or ():
                found.append(effect[1])
            if item[10]:
                found += self._failed_item_keys(item[10], dead)
        for item in items.get("failed", ()):
            found += self._failed_item_keys(item, dead)
        for item in items.get("throttled", ()):
            found += [k.throttle(kind, name) for kind, name in item[5]]
        kept = items.get("kept", ())
        for queue in queues:
            if queue not in self.queues:
                found += self.line_keys(queue)
        for queue in ending:
            found += self.ending_keys(queue)
        if ending:
            found += [k.dlq_dropped, k.cancel_requests()]
        if in_flow:
            found += flow_keys(self.redis, k, in_flow)
        if dead:
            found += dead_letter_head_keys(self.redis, k, list(dead))
        if kept:
            found += kept_keys(self.redis, k, list(dict.fromkeys(k.kept(item[2], item[1]) for item in kept)))
        return found

    def _failed_item_keys(self, item: list[Any], dead: dict[str, None]) -> list[Key]:
        """A failed item's hook job (enqueued with a dead letter), and its queue noted if it dies."""
        if item[3] == "dead":
            dead[item[2]] = None
        return list(self.keys.enqueue_job_keys(item[7])) if item[7] else []


def _type_in(data: bytes) -> bytes:
    """The job type a job's data names (``[type, payload]``), as claim.lua reads it; b'' if none."""
    if not data:
        return b""
    try:
        decoded = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return b""
    if isinstance(decoded, list) and decoded and isinstance(decoded[0], str):
        return decoded[0].encode()
    return b""
