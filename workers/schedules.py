"""Schedules declared by the app: a job type run on a cron expression or every N seconds.

A schedule is declared next to the job types, on the registry::

    registry.schedule("nightly-report", build_report, cron="0 3 * * *", args={"name": "daily"})
    registry.schedule("heartbeat", "monitoring.ping", every=30, queue="monitoring")

A declaration is only data (this module does no I/O). ``chumon scheduler`` registers every
schedule its app declares in rq-scheduler, idempotently, and enqueues each occurrence as an
ordinary job (chumon/scheduling.py). Times are UTC: ``cron`` is a five-field expression
(minute hour day-of-month month day-of-week, evaluated in UTC); ``every`` occurrences fall on
multiples of N seconds since the epoch (a 60 s schedule runs at :00 of every minute), so every
scheduler computes the same occurrence times.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.keys import check_queue_name
from workers.options import MAX_TTL

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Schedule(BaseModel):
    """One repeatable job: which type, with which payload, on which queue, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="1-64 letters, digits, '-' or '_'; unique among the app's schedules.")
    job_type: str
    cron: str | None = Field(default=None, description="Five-field cron expression, in UTC.")
    every: int | None = Field(default=None, ge=1, le=MAX_TTL, description="Seconds between occurrences.")
    args: dict[str, Any] = Field(default_factory=dict, description="The payload of every occurrence.")
    queue: str | None = Field(default=None, description="Queue other than the job type's.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-64 letters, digits, '-' or '_', starting with a letter or digit")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"{value!r} is not a five-field cron expression like '*/5 * * * *'")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return None if value is None else check_queue_name(value)

    @model_validator(mode="after")
    def _one_rule(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r}: give cron= or every=, exactly one")
        return self

    def next_after(self, at: float) -> float:
        """The first occurrence strictly after Unix time ``at``."""
        if self.every is not None:
            return float((math.floor(at / self.every) + 1) * self.every)
        nxt: float = croniter(self.cron, datetime.fromtimestamp(at, UTC)).get_next(float)
        return nxt

    def rule(self) -> str:
        """How it repeats, for people: 'every 60 s' or 'cron */5 * * * *'."""
        return f"every {self.every} s" if self.every is not None else f"cron {self.cron}"
