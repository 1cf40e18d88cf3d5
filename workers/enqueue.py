"""Enqueue: validate a payload, then write the job in one scripted call.

Validation happens entirely before anything is sent, so an invalid payload or option raises
(pydantic's ValidationError names the field) and Redis is unchanged. Times are the server's:
a job carries its delay (or its absolute ``run_at``), and the script decides, by Redis's
clock, whether it is due now.

A bulk enqueue is sent in chunks of at most ``CHUNK`` jobs and ``CHUNK_BYTES`` of their data,
one script call each, all in one round trip: each chunk is atomic and no call holds Redis for
long, whatever the batch's size (a failure between chunks leaves the earlier chunks enqueued).
Passing ``pipeline=`` queues the scripts on the caller's pipeline
(``redis.pipeline(transaction=True)``), so a state change and the jobs it triggers commit in
one MULTI/EXEC or not at all; because that transaction holds Redis for its whole length, it
takes at most ``MAX_ATOMIC`` jobs. The job ids are decided before anything is sent. A payload
larger than ``CHUMON_MAX_PAYLOAD_BYTES`` is refused (``PayloadTooLarge``) before anything is
sent.

With ``CHUMON_REDIS__REPLICAS_ACK`` set, an enqueue returns only once that many replicas hold
it, and raises ``NotReplicated`` otherwise (workers/durability.py): enqueue again with the
same idempotency key. On the caller's pipeline, the caller's transaction decides.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline

from workers.codec import describe, encode_data, megabytes, shown, size_over, text
from workers.durability import Durability
from workers.errors import PayloadTooLarge, RuntimeFault
from workers.jobtypes import JobType
from workers.keys import sub_queue_for, tag_of
from workers.layout import Family, Layout
from workers.options import EnqueueOptions, check_job_id
from workers.scripts import Scripts, dumps
from workers.settings import RuntimeSettings

NO_OPTIONS = EnqueueOptions()
CHUNK = 200
CHUNK_BYTES = 4 * 1024 * 1024  # of job data per script call (one job alone may be larger)
MAX_ATOMIC = 1000


class EnqueueRefused(RuntimeFault):
    """Redis holds something else than a queue where a job was to be queued (nothing was written)."""


def new_job_id() -> str:
    """``uuid.uuid4().hex`` (the same random bits, version and variant), without a UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


class Enqueuer:
    """Writes jobs. Cheap to build; holds no connection of its own beyond the client given."""

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
        # on one Redis, the one family of keys; on a cluster, each queue's tag has its own and
        # these name the untagged ones (use self.layout.family(queue))
        base = self.layout.single
        self.keys = base.keys if base else self.layout.base
        self.scripts = base.scripts if base else (scripts or Scripts(redis, self.keys.lua_keyspace))
        self.durability = base.durability if base else Durability(settings.redis, self.keys.replication_fence)

    def enqueue(
        self,
        job_type: JobType[Any],
        payload: BaseModel | Mapping[str, Any],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Enqueue one job and return its id (an earlier job's id if the idempotency key was used)."""
        spec = self.spec(job_type, payload, options or NO_OPTIONS)
        ids = self.submit([spec], pipeline=pipeline)
        return ids[0] if ids else str(spec["id"])

    def enqueue_many(
        self,
        job_type: JobType[Any],
        payloads: Iterable[BaseModel | Mapping[str, Any]],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one type in one round trip; all payloads are validated first."""
        opts = options or NO_OPTIONS
        specs = [self.spec(job_type, payload, opts) for payload in payloads]
        ids = self.submit(specs, pipeline=pipeline)
        return ids if ids else [str(spec["id"]) for spec in specs]

    def submit(self, specs: list[dict[str, Any]], *, pipeline: Pipeline | None = None) -> list[str]:
        """Send built specs; with a pipeline the reply arrives with the pipeline's, and [] is returned.

        Raises EnqueueRefused if a job could not be queued because its queue's keys hold
        something else (the other jobs of its chunk are written).
        """
        if not specs:
            return []
        if self.layout.cluster:
            return self._submit_per_tag(specs, pipeline)
        return self._submit(specs, pipeline, self.layout.family(specs[0]["queue"]))

    def _submit_per_tag(self, specs: list[dict[str, Any]], pipeline: Pipeline | None) -> list[str]:
        """On a cluster: each queue tag's jobs in calls of their own, in the order given (atomic
        per tag and chunk; a caller's transaction must keep to one tag, as the cluster's do)."""
        self.layout.index([spec["queue"] for spec in specs])
        groups: dict[str, list[int]] = {}
        for n, spec in enumerate(specs):
            groups.setdefault(tag_of(spec["queue"]), []).append(n)
        ids: list[str] = [""] * len(specs)
        for positions in groups.values():
            group = [specs[n] for n in positions]
            got = self._submit(group, pipeline, self.layout.family(group[0]["queue"]))
            for n, job_id in zip(positions, got, strict=False):
                ids[n] = job_id
        return [] if pipeline is not None else ids

    def _submit(self, specs: list[dict[str, Any]], pipeline: Pipeline | None, family: Family) -> list[str]:
        chunks = _chunks(specs)
        scripts, keys = family.scripts, family.keys
        if pipeline is not None:
            if len(specs) > MAX_ATOMIC:
                raise ValueError(
                    f"an enqueue inside your transaction takes at most {MAX_ATOMIC} jobs, not {len(specs)}: "
                    "a longer transaction would hold Redis for everyone"
                )
            for chunk in chunks:
                scripts.run("enqueue", {"jobs": chunk}, client=pipeline, keys=keys.enqueue_batch_keys(chunk))
            return []
        if len(chunks) == 1:
            plan, declared = {"jobs": chunks[0]}, keys.enqueue_batch_keys(chunks[0])
            replies = [
                family.durability.write(
                    self.redis, lambda client: scripts.run("enqueue", plan, client, declared)
                )
            ]
        else:
            replies = family.durability.write_all(
                self.redis,
                lambda pipe: [
                    scripts.run("enqueue", {"jobs": chunk}, client=pipe, keys=keys.enqueue_batch_keys(chunk))
                    for chunk in chunks
                ],
            )
        ids: list[str] = []
        problems: list[Any] = []
        for ids_reply, chunk_problems in replies:
            ids += [text(value) if value is not None else "" for value in ids_reply]
            problems += chunk_problems
        if "" in ids:
            missing = [str(spec["id"]) for spec, got in zip(specs, ids, strict=True) if not got]
            raise EnqueueRefused(
                f"{len(missing)} job(s) not enqueued: their queue's keys hold something else "
                f"({'; '.join(f'{shown(k)} {shown(w)}' for k, w in problems[:3])})"
            )
        return ids

    def chunk_keys(self, chunk: list[dict[str, Any]]) -> list[str]:
        """Every key the enqueue script may touch for ``chunk``, declared in its KEYS."""
        return self.layout.keys(chunk[0]["queue"]).enqueue_batch_keys(chunk)

    def spec(
        self,
        job_type: JobType[Any],
        payload: BaseModel | Mapping[str, Any],
        options: EnqueueOptions,
        *,
        job_id: str | None = None,
        sized: bool = True,
    ) -> dict[str, Any]:
        """The job as enqueue_job() in Lua takes it; raises on an invalid payload or id before any I/O.

        ``sized=False``: not checked against ``CHUMON_MAX_PAYLOAD_BYTES`` (the runtime's own
        notices, bounded by construction)."""
        model = _validated(job_type, payload)
        payload_dict = model.model_dump(mode="json")
        payload_json = dumps(payload_dict)
        size = size_over(payload_json, self.settings.max_payload_bytes) if sized else None
        if size is not None:
            raise PayloadTooLarge(
                f"the payload of job type {job_type.name!r} is {megabytes(size)} of JSON, more than "
                f"CHUMON_MAX_PAYLOAD_BYTES ({megabytes(self.settings.max_payload_bytes)}): keep large data "
                "elsewhere (a file, an object store) and pass its address"
            )
        queue = options.queue or job_type.queue
        timeout = options.timeout or job_type.timeout or self.settings.job_timeout
        job_id = check_job_id(job_id) if job_id is not None else new_job_id()
        split = self.settings.queue_split.get(queue, 1) if self.layout.cluster else 1
        effect_key = job_type.effect_key(model, options.idempotency_key)
        if split > 1:  # one of the queue's sub-queues, by the job's key (docs/operations.md)
            queue = sub_queue_for(queue, split, effect_key or job_id)
        fields = [
            "data", encode_data(job_type.name, payload_json),
            "description", describe(job_type.name, payload_json),
            "origin", queue,
            "timeout", str(max(1, math.ceil(timeout))),
            "job_type", job_type.name,
        ]  # fmt: skip
        if options.retry is not None:
            fields += ["retry", options.retry.model_dump_json()]
        if effect_key is not None:
            fields += ["effect_key", effect_key]
        if options.result_ttl is not None:
            fields += ["result_ttl", str(options.result_ttl)]
        spec: dict[str, Any] = {"id": job_id, "queue": queue, "fields": fields}
        if options.delay:
            spec["delay"] = options.delay
        elif options.run_at is not None:
            spec["run_at"] = options.run_at.timestamp()
        if options.at_front:
            spec["at_front"] = True
        if options.priority is not None:
            spec["priority"] = options.priority
            fields += ["priority", str(options.priority)]
        if options.idempotency_key is not None:
            spec["enqueue_key"] = f"{job_type.name}:{options.idempotency_key}"
            spec["enqueue_key_ttl"] = self.settings.idempotency_ttl
        if self.settings.job_events:
            spec["events"] = self.settings.job_events_max_length
        return spec


def _chunks(specs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Specs in order, ``CHUNK`` jobs and ``CHUNK_BYTES`` of data at most per chunk (a job larger
    than that goes alone): no call carries, or holds Redis for, more than a few megabytes."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for spec in specs:
        data = len(spec["fields"][1])  # "data", <data>, ...: characters, about its bytes
        if chunks[-1] and (len(chunks[-1]) >= CHUNK or size + data > CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(spec)
        size += data
    return chunks


def _validated(job_type: JobType[Any], payload: BaseModel | Mapping[str, Any]) -> BaseModel:
    if isinstance(payload, BaseModel):
        if not isinstance(payload, job_type.payload):
            raise TypeError(
                f"job type {job_type.name!r} takes a {job_type.payload.__name__} payload, "
                f"not {type(payload).__name__}"
            )
        checked: BaseModel = payload
        return checked
    model: BaseModel = job_type.payload.model_validate(payload)
    return model
