"""How long the finished and the dead-lettered jobs of a type are kept (BullMQ's removeOnComplete
and removeOnFail), instead of the one global ``result_ttl`` and dead-letter retention.

``registry.job(..., keep_completed=100, keep_failed=Keep(count=1000, age=7 * 86400))``:

- an int N keeps the last N jobs of the type (0: a finished job is deleted at once);
- ``Keep(age=S)`` keeps them S seconds;
- ``Keep(count=N, age=S)``: both, whichever removes first.

A finished job's age is its key's expiry (Redis removes it on time). Otherwise the type's jobs
are a sorted set per type and outcome (``Keys.kept``): the step that settles a job adds it and
removes the oldest beyond N and those past the age, at most 100 per call
(workers/lua/includes/retention.lua); the workers' minute-by-minute housekeeping trims too,
so a dead letter goes at most about a minute late. A dead letter removed this way is counted
like one the length cap removed (``chumon:dlq:dropped``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.options import MAX_TTL


class Keep(BaseModel):
    """Keep the last ``count`` jobs and/or those younger than ``age`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int | None = Field(default=None, ge=0, le=1_000_000, description="How many to keep.")
    age: int | None = Field(default=None, ge=1, le=MAX_TTL, description="For how many seconds.")

    @model_validator(mode="after")
    def _something(self) -> Keep:
        if self.count is None and self.age is None:
            raise ValueError("Keep needs a count, an age, or both")
        return self

    @classmethod
    def of(cls, value: Keep | int | None, what: str) -> Keep | None:
        """An int is a count; None keeps the runtime's defaults. ValueError naming ``what`` otherwise."""
        if value is None or isinstance(value, Keep):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be a number of jobs or a Keep(count=..., age=...)")
        return cls(count=value)

    def ttl(self) -> int:
        """How long a finished job's key lives: 0 (at once), its age, or -1 (until the count removes it)."""
        if self.count == 0:
            return 0
        return self.age if self.age is not None else -1

    def item(self, job_id: str, job_type: str, kind: str) -> list[Any]:
        """The step script's ``kept`` item (workers/lua/includes/retention.lua)."""
        return [job_id, job_type, kind, self.count if self.count is not None else False, self.age or False]
