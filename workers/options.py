"""Queue options: how and when to run a job, kept apart from the job's own payload."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.keys import check_queue_name
from workers.policy import RetryPolicy


class EnqueueOptions(BaseModel):
    """Options of one enqueue. Every field is optional; the job type's defaults fill the rest.

    Priority: a queue is a FIFO list (rq's model), so there are no numeric priorities. A job
    may jump its queue with ``at_front``; for priority classes, use queues and list them in
    order of importance when starting a worker (``--queues high default low``): a worker
    always drains the earlier queues first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str | None = Field(default=None, description="Queue other than the job type's.")
    delay: float | None = Field(default=None, ge=0, description="Seconds to wait before the job may run.")
    run_at: datetime | None = Field(default=None, description="When the job may run (timezone-aware).")
    retry: RetryPolicy | None = Field(default=None, description="Retry policy for this job only.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Enqueue at most once per key within the idempotency TTL; also guards the job's effect.",
    )
    timeout: float | None = Field(default=None, gt=0, description="Time limit of one attempt, in seconds.")
    at_front: bool = Field(default=False, description="Put the job at the head of its queue.")
    result_ttl: int | None = Field(default=None, ge=-1, description="Seconds to keep the result; -1 forever.")

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return None if value is None else check_queue_name(value)

    @field_validator("run_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        return value

    @model_validator(mode="after")
    def _one_start_time(self) -> EnqueueOptions:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        return self

    def start_time(self, now: float) -> float | None:
        """The Unix time the job may start, or None for 'now'."""
        if self.delay:
            return now + self.delay
        if self.run_at is not None:
            at = self.run_at.timestamp()
            return at if at > now else None
        return None
