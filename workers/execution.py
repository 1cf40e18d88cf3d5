"""Running one claimed job: decode, validate, call the handler, classify what happened.

Nothing here touches Redis except through the handler itself; the result is an ``Outcome``
that the worker settles in its next scripted call. Nothing here raises either: a job whose
fields cannot be read, whose type is unknown, or whose data breaks the decoder comes back as
a failed outcome with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ValidationError
from redis import Redis

from workers.codec import BadJob, decode_data, encode_result, megabytes, readable
from workers.connection import is_cluster
from workers.effects import Effects
from workers.enqueue import Enqueuer
from workers.errors import Cancelled, Permanent, RateLimited, Retryable
from workers.flows import child_failure
from workers.jobtypes import JobContext, JobRegistry, JobType
from workers.options import MAX_TIMEOUT, MAX_TTL
from workers.policy import RetryPolicy
from workers.reporting import JobLogger, Reporter
from workers.settings import MIB

_WHOLE = re.compile(r"^-?[0-9]{1,12}$")
DEFAULT_TIMEOUT = 180.0
MAX_RESULT = MIB  # CHUMON_MAX_RESULT_BYTES' default

# failures that no retry can mend: the job is dead-lettered at once
UNREADABLE = ("MalformedJob", "InvalidPayload", "UnserializableResult", "EffectsRefused")


@dataclass(slots=True)
class Claimed:
    """A job this worker claimed: its id, the execution that owns it, and the fields it needs.

    ``problems`` lists what could not be read from the job hash; such a job is not run but
    dead-lettered with the reason.
    """

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
    problems: list[str] = field(default_factory=list)
    job_type: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)  # set when asked to stop
    effect_key_raw: bytes = b""  # as stored: its key is declared to the step even if not UTF-8
    in_flow: bool = False  # a flow's child or parent: ending it tells the flow (workers/stepkeys.py)

    @classmethod
    def from_row(cls, row: list[Any]) -> Claimed:
        """From a job as claim.lua returns it: id, exec, attempt, queue, note, then the job hash's
        data, meta, timeout, retry, effect_key, result_ttl, attempt (as stored), job_type,
        flow_parent and flow.

        Never raises: the id, execution and queue were written or checked by the script; every
        other field is read defensively and what cannot be read is noted in ``problems``.
        """
        job_id, execution, attempt, queue, note = row[:5]
        data, meta, timeout, retry, effect_key, result_ttl, stored, job_type = row[5:13]
        problems = [readable(note)] if note else []
        claimed = cls(
            job_id=readable(job_id) or "",
            execution=readable(execution) or "",
            attempt=int(attempt),
            queue=readable(queue) or "",
            data=_raw(data),
            meta=_raw(meta),
            timeout=DEFAULT_TIMEOUT,
            retry="",
            effect_key="",
            result_ttl=None,
            problems=[p for p in problems if p],
        )
        claimed.timeout = claimed._timeout(timeout)
        claimed.retry = claimed._text("retry", retry)
        claimed.effect_key = claimed._text("effect_key", effect_key)
        claimed.effect_key_raw = _raw(effect_key)
        claimed.in_flow = any(row[13:15])
        claimed.result_ttl = claimed._ttl(result_ttl)
        claimed.job_type = readable(job_type) or "" if job_type else ""
        if stored and _WHOLE.match(readable(stored) or "x") is None:
            claimed.problems.append(f"its attempt count is not a whole number: {stored!r:.60}")
        return claimed

    def _text(self, name: str, raw: Any) -> str:
        value = readable(raw) if raw else ""
        if value is None:
            self.problems.append(f"its {name} field is not UTF-8 text")
            return ""
        return value

    def _timeout(self, raw: Any) -> float:
        value = self._text("timeout", raw)
        if not value:
            return DEFAULT_TIMEOUT
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= MAX_TIMEOUT:  # NaN fails too
            self.problems.append(
                f"its timeout is not a number of seconds up to {MAX_TIMEOUT:g}: {value!r:.60}"
            )
            return DEFAULT_TIMEOUT
        return seconds

    def _ttl(self, raw: Any) -> int | None:
        value = self._text("result_ttl", raw)
        if not value:
            return None
        if _WHOLE.match(value) is None or not -1 <= int(value) <= MAX_TTL:
            self.problems.append(f"its result_ttl is not a whole number from -1 to {MAX_TTL}: {value!r:.60}")
            return None
        return int(value)


def _raw(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return value or b""


Kind = Literal["done", "failed", "released", "throttled", "cancelled"]


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
    effects: list[list[str]] | None = None

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
        owned: Callable[[str], bool | str] = lambda key: False,
        isolation: Isolation | None = None,
        reporter: Callable[[Redis, Claimed], Reporter] | None = None,
        max_result: int = MAX_RESULT,
    ) -> None:
        self.registry = registry
        self.max_result = max_result  # bytes of a return value as stored (CHUMON_MAX_RESULT_BYTES)
        self.redis = redis
        self.enqueuer = enqueuer
        self.policy_of = policy_of
        self.log = log
        self.on_start = on_start
        self.owned = owned
        self.isolation = isolation
        self.reporter = reporter  # builds a run's progress and log writer (workers/reporting.py)
        self._local = threading.local()

    def _client(self) -> Redis:
        """This thread's own client, holding one connection: no contended pool lock per command."""
        client: Redis | None = getattr(self._local, "client", None)
        if client is None:
            if is_cluster(self.redis):  # a cluster client: thread-safe, one pool per node
                return self.redis
            client = Redis(connection_pool=self.redis.connection_pool, single_connection_client=True)
            self._local.client = client
        return client

    def run(self, claimed: Claimed) -> Outcome:
        """Run one job; every failure, the runtime's own included, is an outcome, never an exception."""
        try:
            return self._run(claimed)
        except Exception as exc:  # a bug of ours must not kill a runner thread: the job fails instead
            self.log.exception("job %s: the runtime failed to run it", claimed.job_id)
            return Outcome.failure(claimed, "RuntimeFault", f"{type(exc).__name__}: {exc}")

    def _run(self, claimed: Claimed) -> Outcome:
        prepared = self.prepare(claimed, self._client())
        if isinstance(prepared, Outcome):
            return prepared
        _, job_type, payload, model, ctx = prepared
        try:
            if job_type.isolated and self.isolation is not None:
                value = self.isolation.call(job_type, payload, ctx, claimed.cancel)
            else:
                value = job_type.handler(model, ctx)
                if isinstance(value, CoroutineType):  # an async job in a thread slot (no job_type field)
                    value = asyncio.run(value)
        except BaseException as exc:  # the job's failure, whatever it is, is an outcome, not a crash
            return self.failed(prepared, exc)
        return self.succeeded(prepared, value)

    def prepare(self, claimed: Claimed, redis: Redis) -> Prepared | Outcome:
        """Decode and validate the job and build its context; an Outcome if it cannot run."""
        if claimed.problems:
            return Outcome.failure(claimed, "MalformedJob", "; ".join(claimed.problems), retryable=False)
        try:
            name, payload = decode_data(claimed.data)
        except BadJob as exc:
            return Outcome.failure(claimed, "MalformedJob", str(exc), retryable=False)
        job_type = self.registry.find(name)
        if job_type is None:  # a rolling deploy: a newer worker may know it, so retry
            return Outcome.failure(
                claimed, "UnknownJobType", f"no job type named {name!r} is registered with this worker",
                payload=payload,
            )  # fmt: skip
        try:
            model = job_type.payload.model_validate(payload)
        except ValidationError as exc:
            return Outcome.failure(
                claimed, "InvalidPayload", str(exc), retryable=False, job_type=job_type, payload=payload
            )
        except RecursionError:
            return Outcome.failure(
                claimed, "InvalidPayload", "payload nested too deeply", retryable=False, job_type=job_type
            )
        failed_child = child_failure(claimed.meta)  # flows: a parent whose child failed is not run
        if failed_child is not None:
            return Outcome.failure(
                claimed, "ChildFailed", failed_child, retryable=False, job_type=job_type, payload=payload
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
            redis=redis,
            enqueuer=self.enqueuer,
            log=JobLogger(self.log, self.reporter(redis, claimed) if self.reporter else None),
            effects=Effects(self.owned),
            cancel=claimed.cancel,
        )
        return claimed, job_type, payload, model, ctx

    def failed(self, prepared: Prepared, exc: BaseException) -> Outcome:
        """The outcome of a handler that raised ``exc``."""
        claimed, job_type, payload, _, _ = prepared
        if isinstance(exc, RateLimited):  # the other side asked to slow down: no attempt used
            throttled = Outcome(claimed, "throttled", job_type=job_type, payload=payload, message=str(exc))
            throttled.delay = exc.delay
            return throttled
        if isinstance(exc, Cancelled):
            return Outcome(claimed, "cancelled", job_type=job_type, payload=payload, message=str(exc))
        remote = exc if isinstance(exc, IsolatedFailure) else None
        return Outcome.failure(
            claimed,
            remote.exc_type if remote else type(exc).__name__,
            str(exc),
            tb=remote.tb if remote else "".join(traceback.format_exception(exc)),
            retryable=_retryable(job_type, exc),
            delay=exc.delay if isinstance(exc, Retryable | IsolatedFailure) else None,
            job_type=job_type,
            payload=payload,
        )

    def succeeded(self, prepared: Prepared, value: Any) -> Outcome:
        """The outcome of a handler that returned ``value``."""
        claimed, job_type, payload, _, ctx = prepared
        try:
            result = value.b64 if isinstance(value, Encoded) else encode_result(value)
        except TypeError as exc:
            return Outcome.failure(
                claimed, "UnserializableResult", str(exc), retryable=False, job_type=job_type, payload=payload
            )
        if len(result) > self.max_result:  # base64: one byte per character
            return Outcome.failure(
                claimed, "ResultTooLarge",
                f"the job's return value is {megabytes(len(result))} as stored, more than "
                f"CHUMON_MAX_RESULT_BYTES ({megabytes(self.max_result)}): keep large data elsewhere "
                "and return its address",
                retryable=False, job_type=job_type, payload=payload,
            )  # fmt: skip
        done = Outcome(claimed, "done", job_type=job_type, payload=payload, result_b64=result)
        done.effects = ctx.effects.commands or None
        return done


# A job ready to run: the claimed job, its type, its payload as read and as validated, its context
# (a plain tuple: it is built for every job, and a tuple costs a tenth of a dataclass).
Prepared = tuple[Claimed, JobType[Any], dict[str, Any], BaseModel, JobContext]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already encoded (by an isolated job's child process)."""

    b64: str


class IsolatedFailure(Exception):
    """An isolated job's failure as its child process reported it (or the child's death)."""

    def __init__(
        self, exc_type: str, message: str, *, tb: str = "", retryable: bool = True, delay: float | None = None
    ) -> None:
        super().__init__(message)
        self.exc_type, self.tb, self.retryable, self.delay = exc_type, tb, retryable, delay


class Isolation(Protocol):
    """Runs an isolated job type's handler elsewhere (workers/isolation.py)."""

    def call(
        self, job_type: JobType[Any], payload: dict[str, Any], ctx: JobContext, cancel: threading.Event
    ) -> Encoded: ...


def _retryable(job_type: JobType[Any], exc: BaseException) -> bool:
    """Retryable unless the job said Permanent or raised one of its type's permanent classes."""
    if isinstance(exc, IsolatedFailure):
        return exc.retryable
    if isinstance(exc, Retryable):
        return True
    if isinstance(exc, Permanent):
        return False
    return not isinstance(exc, job_type.permanent)
