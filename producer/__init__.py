"""What application code imports to start work and read results.

    from producer import Producer
    from workers import EnqueueOptions

    producer = Producer.connect()                      # settings from the environment
    job_id = producer.enqueue("demo.work", {"item": 1},
                              options=EnqueueOptions(delay=5, idempotency_key="req-42"))
    producer.get_job(job_id).status

Every call is one Redis round trip (bulk enqueue included).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline

from workers import EnqueueOptions, Enqueuer, JobInfo, JobRegistry, JobType, RuntimeSettings, load_job
from workers.keys import Keys

TERMINAL = frozenset({"finished", "failed"})


class Producer:
    def __init__(self, redis: Redis, settings: RuntimeSettings, registry: JobRegistry) -> None:
        self.redis = redis
        self.settings = settings
        self.registry = registry
        self.keys = Keys(settings.key_prefix)
        self.enqueuer = Enqueuer(redis, settings)

    @classmethod
    def connect(
        cls, settings: RuntimeSettings | None = None, registry: JobRegistry | None = None
    ) -> Producer:
        """A producer from the environment's settings and the app's registry."""
        from chumon.app import load_registry, redis_client
        from chumon.settings import load

        settings = settings or load()
        return cls(redis_client(settings.redis_url), settings, registry or load_registry(settings.app))

    def job_type(self, job_type: JobType[Any] | str) -> JobType[Any]:
        return self.registry.get(job_type) if isinstance(job_type, str) else job_type

    def enqueue(
        self,
        job_type: JobType[Any] | str,
        payload: BaseModel | Mapping[str, Any],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Validate and enqueue one job; returns its id. See ``workers.enqueue`` for the rules."""
        return self.enqueuer.enqueue(self.job_type(job_type), payload, options=options, pipeline=pipeline)

    def enqueue_many(
        self,
        job_type: JobType[Any] | str,
        payloads: Iterable[BaseModel | Mapping[str, Any]],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[str]:
        """Validate every payload, then enqueue them all in one round trip."""
        return self.enqueuer.enqueue_many(
            self.job_type(job_type), payloads, options=options, pipeline=pipeline
        )

    def get_job(self, job_id: str) -> JobInfo | None:
        return load_job(self.redis, self.keys, job_id)

    def wait_for_job(self, job_id: str, *, timeout: float, poll: float = 0.05) -> JobInfo:
        """Wait until the job finished or failed for good; raises TimeoutError with its last state."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_job(job_id)
            if info is not None and info.status in TERMINAL:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {info.status if info else 'missing'} after {timeout} s"
                )
            time.sleep(poll)
