"""Queue options: how and when to run a job, kept apart from the job's own payload.

Every option is checked when the options are made, against documented bounds, so nothing
later (a script, the backoff, a time limit) can overflow or be half-applied:

=================  ==========================================================
``delay``          0 to a year (``MAX_DELAY``), finite
``run_at``         timezone-aware, at most a year ahead
``timeout``        above 0, at most a week (``MAX_TIMEOUT``), finite
``result_ttl``     -1 (keep for ever), or 0 to a year (``MAX_TTL``)
``idempotency_key``  1-200 printable characters, no whitespace other than spaces
=================  ==========================================================
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.keys import check_queue_name
from workers.policy import MAX_DELAY, RetryPolicy

MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_TTL = 365 * 24 * 3600
MAX_PRIORITY = 2**21
_KEY = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if every tool accepts it (rq 2.x's rule); raise ValueError naming it otherwise."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(
            f"job id {job_id!r} is invalid: use 1-128 letters, digits, '-' or '_' "
            "(rq, rq-dashboard and chumon's recovery accept nothing else)"
        )
    return job_id


class EnqueueOptions(BaseModel):
    """Options of one enqueue. Every field is optional; the job type's defaults fill the rest.

    Priority: ``priority=N`` (1 first, up to 2,097,152, as BullMQ) orders a queue's prioritized
    jobs, FIFO among equals; jobs without a priority are on the queue's rq list and come first,
    so the common case costs nothing more. ``at_front`` puts a job at the head of its line. For
    priority classes across queues, list them in order when starting a worker
    (``--queues high default low``): a worker drains the earlier queues first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    queue: str | None = Field(default=None, description="Queue other than the job type's.")
    delay: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY,
        description="Seconds to wait before the job may run (at most a year).",
    )
    run_at: datetime | None = Field(
        default=None, description="When the job may run (timezone-aware, at most a year ahead)."
    )
    retry: RetryPolicy | None = Field(default=None, description="Retry policy for this job only.")
    idempotency_key: str | None = Field(
        default=None,
        description="Enqueue at most once per key within the idempotency TTL; also guards the job's effect.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT,
        description="Time limit of one attempt, in seconds (at most a week).",
    )
    at_front: bool = Field(default=False, description="Put the job at the head of its queue.")
    priority: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PRIORITY,
        description="1 (first) to 2,097,152; jobs without a priority come before any with one.",
    )
    result_ttl: int | None = Field(
        default=None,
        ge=-1,
        le=MAX_TTL,
        description="Seconds to keep the result (at most a year); -1 forever.",
    )

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return None if value is None else check_queue_name(value)

    @field_validator("idempotency_key")
    @classmethod
    def _printable_key(cls, value: str | None) -> str | None:
        if value is not None and not _KEY.match(value):
            raise ValueError("must be 1-200 characters without control characters (newlines, tabs, NUL)")
        return value

    @field_validator("run_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        if value.timestamp() > time.time() + MAX_DELAY:
            raise ValueError("run_at must be at most a year ahead")
        return value

    @model_validator(mode="after")
    def _one_start_time(self) -> EnqueueOptions:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        return self
