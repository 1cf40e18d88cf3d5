"""The runtime's settings: one typed object, read from the environment only when built.

Every name is read as ``CHUMON_<FIELD>`` (``CHUMON_WORKER_CONCURRENCY=8``); the Redis URL
is also read from plain ``REDIS_URL``, the name every tool in this stack understands.
Nothing here runs at import time: build a ``RuntimeSettings()`` in an entry point and pass
it down. The application's settings (``chumon.settings.Settings``) extend this class.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.connection import RedisOptions
from workers.keys import GROUP, MAX_SPLIT, check_queue_name
from workers.limits import RateLimit, parse_limits
from workers.policy import MAX_DELAY, RetryPolicy

YEAR = 365 * 24 * 3600
WEEK = 7 * 24 * 3600
MIB = 1024 * 1024
MAX_DATA = 64 * MIB  # a payload or result: larger values hold Redis for a good part of a second


class RuntimeSettings(BaseSettings):
    """Settings of the job runtime. Durations are in seconds."""

    model_config = SettingsConfigDict(
        env_prefix="CHUMON_", env_nested_delimiter="__", extra="ignore", frozen=True, allow_inf_nan=False
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CHUMON_REDIS_URL", "REDIS_URL"),
        description="Where Redis answers: redis://, rediss://, unix:// or redis+sentinel:// URLs.",
    )
    redis: RedisOptions = Field(default_factory=RedisOptions, description="How clients talk to Redis.")
    key_prefix: str = Field(
        default="chumon",
        description="Prefix of every key chumon owns. rq's own keys keep rq's fixed 'rq:' prefix.",
    )
    app: str = Field(
        default="jobs:registry",
        description="module:attribute of the JobRegistry a worker serves.",
    )

    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Default retry policy.")
    job_timeout: float = Field(
        default=180.0, gt=0, le=WEEK, description="Default time limit of one attempt (at most a week)."
    )
    max_payload_bytes: int = Field(
        default=MIB,
        ge=1024,
        le=MAX_DATA,
        description=(
            "Largest payload an enqueue takes, in bytes of its JSON (at most 64 MiB): a larger one is "
            "refused before anything is written, since every script call carrying it holds Redis longer."
        ),
    )
    max_result_bytes: int = Field(
        default=MIB,
        ge=1024,
        le=MAX_DATA,
        description=(
            "Largest return value a job may leave, in bytes as stored (at most 64 MiB): a job returning "
            "more fails with ResultTooLarge and is dead-lettered, instead of a settle call holding Redis."
        ),
    )
    result_ttl: int = Field(
        default=500,
        ge=0,
        le=YEAR,
        description="How long a finished job and its result stay (at most a year).",
    )
    result_store: Literal["stream", "hash"] = Field(
        default="stream",
        description=(
            "Where a job's return value is kept: 'stream', rq 2.x's result stream (rq:results:<id>, "
            "read by rq and rq-dashboard; Redis allocates about 4.7 KB for each), or 'hash', a "
            "return_value field on the job hash (tens of bytes; chumon's tools read it, rq's do not)."
        ),
    )

    dlq_retention: int = Field(
        default=WEEK, gt=0, le=10 * YEAR, description="How long dead letters stay (at most ten years)."
    )
    dlq_max_length: int = Field(
        default=10_000, gt=0, le=10_000_000, description="Dead letters kept per queue."
    )

    dlq_alert_threshold: int = Field(
        default=100, gt=0, description="A dead-letter queue longer than this raises an alert."
    )

    idempotency_ttl: int = Field(
        default=24 * 3600, gt=0, le=YEAR, description="How long idempotency keys count (at most a year)."
    )

    log_format: Literal["text", "json"] = Field(default="text", description="Log lines as text or JSON.")
    log_jobs: bool = Field(default=True, description="One log line per job state change (chumon.jobs).")

    metrics_host: str = Field(default="127.0.0.1", description="Where metrics endpoints listen.")
    metrics_port: int = Field(
        default=9300, ge=1, le=65535, description="Port of the exporter (chumon metrics)."
    )

    worker_concurrency: int = Field(default=8, ge=1, le=1024, description="Jobs one process runs at once.")
    async_concurrency: int = Field(
        default=100, ge=1, le=10_000, description="Jobs of async def types one process runs at once."
    )
    heartbeat_interval: float = Field(
        default=1.0, gt=0, le=60, description="How often a worker says it lives."
    )
    worker_ttl: float = Field(
        default=6.0, gt=0, le=600, description="A worker silent this long is dead and its jobs are recovered."
    )
    recovery_interval: float = Field(
        default=1.0, gt=0, le=600, description="How often a worker looks for runs whose worker died."
    )
    drain_timeout: float = Field(
        default=4.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long in-flight jobs may finish (honcho kills at 5 s).",
    )
    timeout_grace: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="After a timeout, how long a stuck job thread gets before it is abandoned.",
    )
    queue_rate_limits: Annotated[dict[str, RateLimit], NoDecode] = Field(
        default_factory=dict,
        description='Rate limits per queue, every worker the same: "payments=50/s,shipping=20/s".',
    )
    job_rate_limits: Annotated[dict[str, RateLimit], NoDecode] = Field(
        default_factory=dict,
        description="Rate limits per job type, over the code's own: notifications.confirmation=10/s",
    )
    shards: int = Field(
        default=3,
        ge=1,
        le=MAX_SPLIT,
        description="On Redis Cluster, the copies of each sharded queue and its app's data (grow only).",
    )
    queue_split: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description='On Redis Cluster, queues split over N sub-queues (slots) each: "emails=3,payments=6".',
    )
    defer_delay: float = Field(
        default=1.0,
        gt=0,
        le=MAX_DELAY,
        description="How long a job first waits when its idempotency key is held by a live run.",
    )

    # progress, job logs and lifecycle events (docs/runtime.md)
    job_log_lines: int = Field(
        default=100, ge=1, le=10_000, description="Log lines (ctx.log) kept per job, the last ones."
    )
    job_events: bool = Field(
        default=False, description="Append job lifecycle events to a stream (chumon job events)."
    )
    job_events_max_length: int = Field(
        default=10_000, ge=100, le=10_000_000, description="About how many events the stream keeps."
    )

    @field_validator("queue_rate_limits", "job_rate_limits", mode="before")
    @classmethod
    def _limits(cls, value: object) -> object:
        return parse_limits(value) if isinstance(value, str | dict) or value is None else value

    @field_validator("queue_split", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        split: dict[str, object] = {}
        for part in filter(None, re.split(r"[,\s]+", value.strip())):
            name, sep, count = part.partition("=")
            if not sep or not name:
                raise ValueError(f"{part!r} is not QUEUE=N, e.g. emails=3")
            split[name] = count
        return split

    @field_validator("queue_split")
    @classmethod
    def _split_counts(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            check_queue_name(name)
            if GROUP in name:
                raise ValueError(
                    f"queue {name!r} is in a group, whose queues share one slot: it cannot be split"
                )
            if not 1 <= count <= MAX_SPLIT:
                raise ValueError(f"queue {name!r}: split into 1 to {MAX_SPLIT} sub-queues, not {count}")
        return value

    @property
    def events_cap(self) -> int | bool:
        """What scripts take as ``events``: the stream's max length, or False while events are off."""
        return self.job_events_max_length if self.job_events else False

    @field_validator("key_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not value or ":" in value or " " in value:
            raise ValueError("key_prefix must be a non-empty word without ':' or spaces")
        return value

    @field_validator("worker_ttl")
    @classmethod
    def _ttl_above_heartbeat(cls, value: float, info: object) -> float:
        data = getattr(info, "data", {})
        heartbeat = data.get("heartbeat_interval", 1.0)
        if value <= 2 * heartbeat:
            raise ValueError("worker_ttl must be more than twice heartbeat_interval")
        return value
