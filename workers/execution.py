"""Running one claimed job: decode, validate, call the handler, classify what happened.

Nothing here touches Redis except through the handler itself; the result is an ``Outcome``
that the worker settles in its next scripted call.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from redis import Redis

from workers.codec import BadJob, decode_data, encode_result
from workers.enqueue import Enqueuer
from workers.errors import Permanent, Retryable
from workers.jobtypes import JobContext, JobRegistry, JobType
from workers.policy import RetryPolicy


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Claimed:
    """A job this worker claimed: its id, the execution that owns it, and the fields it needs."""

    job_id: str
    execution: str
    attempt: int
    queue: str
    data: bytes
    meta: bytes
    timeout: float
    retry: str
    effect_key: str
    result_ttl: int | None
    started_at: float = field(default_factory=time.time)

    @classmethod
    def from_row(cls, row: list[Any]) -> Claimed:
        """From a job as claim.lua returns it: id, exec, attempt, queue, then codec.FETCH_FIELDS."""
        job_id, execution, attempt, queue, data, meta, _origin, timeout, retry, effect_key = row[:10]
        result_ttl = _text(row[11])
        return cls(
            job_id=_text(job_id),
            execution=_text(execution),
            attempt=int(attempt),
            queue=_text(queue),
            data=data or b"",
            meta=meta or b"",
            timeout=_float(timeout),
            retry=_text(retry),
            effect_key=_text(effect_key),
            result_ttl=int(result_ttl) if result_ttl.lstrip("-").isdigit() else None,
        )


def _float(value: bytes | str | None, default: float = 180.0) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


Kind = Literal["done", "failed", "released"]


@dataclass(slots=True)
class Outcome:
    """How one attempt ended. ``job_type`` and ``payload`` are None when the job was unreadable."""

    claimed: Claimed
    kind: Kind
    job_type: JobType[Any] | None = None
    payload: dict[str, Any] | None = None
    result_b64: str = ""
    exc_type: str = ""
    message: str = ""
    traceback: str = ""
    retryable: bool = True
    delay: float | None = None
    ended_at: float = field(default_factory=time.time)

    @classmethod
    def failure(
        cls,
        claimed: Claimed,
        exc_type: str,
        message: str,
        *,
        tb: str = "",
        retryable: bool = True,
        delay: float | None = None,
        job_type: JobType[Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Outcome:
        return cls(
            claimed,
            "failed",
            job_type=job_type,
            payload=payload,
            exc_type=exc_type,
            message=message,
            traceback=tb,
            retryable=retryable,
            delay=delay,
        )

    def timed_out(self) -> Outcome:
        """This attempt, re-read as a time-out (the runner's verdict wins over what the job returned)."""
        return Outcome.failure(
            self.claimed,
            "JobTimeout",
            f"attempt ran past its time limit of {self.claimed.timeout:g} s",
            job_type=self.job_type,
            payload=self.payload,
        )


class Executor:
    """Runs claimed jobs of one registry. Thread-safe: holds no per-job state."""

    def __init__(
        self,
        registry: JobRegistry,
        redis: Redis,
        enqueuer: Enqueuer,
        policy_of: Callable[[Claimed, JobType[Any] | None], RetryPolicy],
        log: logging.Logger,
        on_start: Callable[[Claimed, JobType[Any], dict[str, Any]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.enqueuer = enqueuer
        self.policy_of = policy_of
        self.log = log
        self.on_start = on_start
        self._local = threading.local()

    def _client(self) -> Redis:
        """This thread's own client, holding one connection: no contended pool lock per command."""
        client: Redis | None = getattr(self._local, "client", None)
        if client is None:
            client = Redis(connection_pool=self.redis.connection_pool, single_connection_client=True)
            self._local.client = client
        return client

    def run(self, claimed: Claimed) -> Outcome:
        try:
            name, payload = decode_data(claimed.data)
            job_type = self.registry.find(name)
            if job_type is None:
                raise BadJob(f"no job type named {name!r} is registered with this worker")
        except BadJob as exc:
            return Outcome.failure(claimed, "MalformedJob", str(exc), retryable=False)
        try:
            model = job_type.payload.model_validate(payload)
        except ValidationError as exc:
            return Outcome.failure(
                claimed, "InvalidPayload", str(exc), retryable=False, job_type=job_type, payload=payload
            )
        if self.on_start is not None:
            self.on_start(claimed, job_type, payload)
        ctx = JobContext(
            job_id=claimed.job_id,
            job_type=job_type.name,
            queue=claimed.queue,
            attempt=claimed.attempt,
            max_attempts=self.policy_of(claimed, job_type).max_attempts,
            execution_id=claimed.execution,
            idempotency_key=claimed.effect_key.partition(":")[2] or None,
            redis=self._client(),
            enqueuer=self.enqueuer,
            log=self.log,
        )
        try:
            value = job_type.handler(model, ctx)
        except BaseException as exc:  # the job's failure, whatever it is, is an outcome, not a crash
            return Outcome.failure(
                claimed,
                type(exc).__name__,
                str(exc),
                tb=traceback.format_exc(),
                retryable=_retryable(job_type, exc),
                delay=exc.delay if isinstance(exc, Retryable) else None,
                job_type=job_type,
                payload=payload,
            )
        try:
            result = encode_result(value)
        except TypeError as exc:
            return Outcome.failure(
                claimed, "UnserializableResult", str(exc), retryable=False, job_type=job_type, payload=payload
            )
        return Outcome(claimed, "done", job_type=job_type, payload=payload, result_b64=result)


def _retryable(job_type: JobType[Any], exc: BaseException) -> bool:
    """Retryable unless the job said Permanent or raised one of its type's permanent classes."""
    if isinstance(exc, Retryable):
        return True
    if isinstance(exc, Permanent):
        return False
    return not isinstance(exc, job_type.permanent)
