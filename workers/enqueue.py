"""Enqueue: validate a payload, then write the job in one scripted call.

Validation happens entirely before anything is sent, so an invalid payload or option raises
(pydantic's ValidationError names the field) and Redis is unchanged. A bulk enqueue is one
script call whatever its size. Passing ``pipeline=`` queues the script on the caller's
pipeline (``redis.pipeline(transaction=True)``), so a state change and the jobs it triggers
commit in one MULTI/EXEC or not at all; the job ids are decided before the transaction runs.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline

from workers.codec import describe, encode_data, iso
from workers.jobtypes import JobType
from workers.keys import Keys
from workers.options import EnqueueOptions
from workers.scripts import Scripts
from workers.settings import RuntimeSettings

NO_OPTIONS = EnqueueOptions()


def new_job_id() -> str:
    return uuid.uuid4().hex


class Enqueuer:
    """Writes jobs. Cheap to build; holds no connection of its own beyond the client given."""

    def __init__(
        self,
        redis: Redis,
        settings: RuntimeSettings,
        *,
        scripts: Scripts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.scripts = scripts or Scripts(redis, self.keys.lua_keyspace)
        self.clock = clock

    def enqueue(
        self,
        job_type: JobType[Any],
        payload: BaseModel | Mapping[str, Any],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Enqueue one job and return its id (an earlier job's id if the idempotency key was used)."""
        now = self.clock()
        spec = self.spec(job_type, payload, options or NO_OPTIONS, now)
        ids = self.submit([spec], now=now, pipeline=pipeline)
        return ids[0] if ids else spec["id"]

    def enqueue_many(
        self,
        job_type: JobType[Any],
        payloads: Iterable[BaseModel | Mapping[str, Any]],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one type in one round trip; all payloads are validated first."""
        now = self.clock()
        opts = options or NO_OPTIONS
        specs = [self.spec(job_type, payload, opts, now) for payload in payloads]
        ids = self.submit(specs, now=now, pipeline=pipeline)
        return ids if ids else [spec["id"] for spec in specs]

    def submit(
        self, specs: list[dict[str, Any]], *, now: float, pipeline: Pipeline | None = None
    ) -> list[str]:
        """Send built specs; with a pipeline the reply arrives with the pipeline's, and [] is returned."""
        if not specs:
            return []
        plan = {"now": now, "jobs": specs}
        if pipeline is not None:
            self.scripts.run("enqueue", plan, client=pipeline)
            return []
        reply = self.scripts.run("enqueue", plan)
        return [value.decode() if isinstance(value, bytes) else str(value) for value in reply]

    def spec(
        self,
        job_type: JobType[Any],
        payload: BaseModel | Mapping[str, Any],
        options: EnqueueOptions,
        now: float,
        *,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """The job as enqueue_job() in Lua takes it; raises on an invalid payload before any I/O."""
        model = _validated(job_type, payload)
        payload_dict = model.model_dump(mode="json")
        payload_json = json.dumps(payload_dict, separators=(",", ":"), ensure_ascii=False)
        queue = options.queue or job_type.queue
        run_at = options.start_time(now)
        timeout = options.timeout or job_type.timeout or self.settings.job_timeout
        stamp = iso(now)
        job_id = job_id or new_job_id()
        fields = [
            "created_at", stamp,
            "data", encode_data(job_type.name, payload_json),
            "description", describe(job_type.name, payload_json),
            "origin", queue,
            "timeout", str(max(1, math.ceil(timeout))),
        ]  # fmt: skip
        fields += (
            ["status", "scheduled"] if run_at is not None else ["status", "queued", "enqueued_at", stamp]
        )
        if options.retry is not None:
            fields += ["retry", options.retry.model_dump_json()]
        effect_key = job_type.effect_key(model, options.idempotency_key)
        if effect_key is not None:
            fields += ["effect_key", effect_key]
        if options.result_ttl is not None:
            fields += ["result_ttl", str(options.result_ttl)]
        spec: dict[str, Any] = {"id": job_id, "queue": queue, "fields": fields}
        if run_at is not None:
            spec["run_at"] = run_at
        if options.at_front:
            spec["at_front"] = True
        if options.idempotency_key is not None:
            spec["enqueue_key"] = f"{job_type.name}:{options.idempotency_key}"
            spec["enqueue_key_ttl"] = self.settings.idempotency_ttl
        return spec


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
