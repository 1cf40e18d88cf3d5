"""Job types: a payload model, a handler, and the queue options that belong to the type.

A job type is declared once, with a decorator on its handler::

    registry = JobRegistry()

    class Greet(BaseModel):
        name: str

    @registry.job("demo.greet", queue="default", retry=RetryPolicy(max_attempts=3))
    def greet(payload: Greet, ctx: JobContext) -> str:
        return f"hello {payload.name}"

The handler takes the validated payload and a ``JobContext``; what it returns (JSON-able, or
a pydantic model) becomes the job's result. The payload model is read from the handler's
annotation unless given as ``payload=``. Which handler serves which name is this explicit
registry: a worker runs nothing it was not given, whatever a job in Redis names.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field

from workers.effects import Effects
from workers.errors import UnknownJobType
from workers.keys import check_queue_name
from workers.limits import RateLimit
from workers.options import MAX_TIMEOUT, MAX_TTL
from workers.policy import RetryPolicy
from workers.reporting import JobLogger
from workers.retention import Keep
from workers.schedules import Schedule

if TYPE_CHECKING:
    from redis import Redis

    from workers.enqueue import Enqueuer
    from workers.flows import ChildResult

P = TypeVar("P", bound=BaseModel)
_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
Handler = Callable[[P, "JobContext"], Any]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running job knows about its run, and the tools to act atomically with Redis.

    ``effects`` records Redis writes that the worker applies in the same atomic step as the
    job's completion, so they happen exactly once (workers/effects.py); writes made through
    ``redis`` happen at once, and again if the attempt is retried.
    """

    job_id: str
    job_type: str
    queue: str
    attempt: int
    max_attempts: int
    execution_id: str
    idempotency_key: str | None
    redis: Redis
    enqueuer: Enqueuer
    log: JobLogger  # ctx.log("line") keeps a line on the job; ctx.log.info(...) logs (reporting.py)
    effects: Effects = field(default_factory=Effects)
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if isinstance(self.log, logging.Logger):  # built with a plain logger: lines are checked, not kept
            object.__setattr__(self, "log", JobLogger(self.log))

    def progress(self, value: Any) -> bool:
        """Report progress: a number, or a JSON object or list of at most 4 KiB, kept on the job
        (``chumon job show``) and sent as a ``progress`` event. False if this run lost the job."""
        return self.log.reporter.progress(value)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def cancelled(self) -> bool:
        """Someone asked this job to stop (``chumon job cancel``): check it between steps of long
        work, and ``raise Cancelled()`` to end the job cancelled (it is not retried)."""
        return self.cancel.is_set()

    def children(self) -> list[ChildResult]:
        """If this job is a flow's parent: how each child ended, with its result (workers/flows.py)."""
        from workers.flows import children_of

        return children_of(self.redis, self.enqueuer.layout.keys(self.queue), self.job_id)


@dataclass(frozen=True, slots=True, eq=False)
class JobType(Generic[P]):
    """One kind of job. Call it like its handler (useful in tests)."""

    name: str
    handler: Handler[P]
    payload: type[P]
    queue: str
    retry: RetryPolicy | None = None
    timeout: float | None = None
    idempotency_key: Callable[[P], str] | None = None
    permanent: tuple[type[BaseException], ...] = ()
    on_dead_letter: str | None = None
    result_ttl: int | None = None
    log_fields: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    isolated: bool = False  # run in a child process (workers/isolation.py)
    keep_completed: Keep | None = None  # retention (workers/retention.py); None: result_ttl
    keep_failed: Keep | None = None  # None: dlq_retention and dlq_max_length

    @property
    def is_async(self) -> bool:
        """An ``async def`` handler: it runs on the worker's event loop (workers/aio.py)."""
        return inspect.iscoroutinefunction(self.handler)

    def __call__(self, payload: P, ctx: JobContext) -> Any:
        return self.handler(payload, ctx)

    def effect_key(self, payload: P, explicit: str | None) -> str | None:
        """``<type>:<key>`` guarding this job's effect: the type's derived key, else the producer's."""
        key = self.idempotency_key(payload) if self.idempotency_key else explicit
        return f"{self.name}:{key}" if key else None


class DeadLetterNotice(BaseModel):
    """The payload of a dead-letter hook job: what died, where, and why."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    job_type: str | None
    queue: str
    payload: dict[str, Any] | None
    reason: str
    attempts: int
    failures: list[dict[str, Any]] = Field(default_factory=list)


@dataclass
class JobRegistry:
    """The explicit map from job type name to job type.

    ``on_dead_letter`` names a job type run (as a job, atomically enqueued with the dead letter)
    whenever a job of a type without its own hook is dead-lettered, including jobs whose type
    or payload could not be read.
    """

    on_dead_letter: str | None = None
    _types: dict[str, JobType[Any]] = field(default_factory=dict)
    _schedules: dict[str, Schedule] = field(default_factory=dict)
    sharded: set[str] = field(default_factory=set)
    """Queues with one copy per shard on Redis Cluster (``shard``)."""

    def shard(self, *queues: str) -> None:
        """Give each of ``queues`` one copy per shard on Redis Cluster (``<queue>@<shard>``, the
        shards being ``CHUMON_SHARDS`` groups in evenly spaced slots): the app enqueues each job
        to the copy of the shard whose data it works on (the order flow: the order's), so one
        script may change that data and enqueue the job. Workers serve every copy. On one
        Redis, nothing changes."""
        self.sharded.update(check_queue_name(q) for q in queues)

    def job(
        self,
        name: str,
        *,
        queue: str = "default",
        payload: type[BaseModel] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        idempotency_key: Callable[[Any], str] | None = None,
        permanent: tuple[type[BaseException], ...] = (),
        on_dead_letter: str | None = None,
        result_ttl: int | None = None,
        log_fields: tuple[str, ...] = (),
        rate_limit: RateLimit | str | None = None,
        isolated: bool = False,
        keep_completed: Keep | int | None = None,
        keep_failed: Keep | int | None = None,
    ) -> Callable[[Handler[Any]], JobType[Any]]:
        """Register the decorated handler as job type ``name``.

        ``isolated=True`` runs each attempt in a child process (for CPU-bound work; see
        workers/isolation.py); an ``async def`` handler runs on the worker's event loop.
        """

        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"job type {name!r}: timeout must be above 0 and at most {MAX_TIMEOUT:g} s")
        if result_ttl is not None and not -1 <= result_ttl <= MAX_TTL:
            raise ValueError(f"job type {name!r}: result_ttl must be -1 (for ever) or 0 to {MAX_TTL} s")
        kept_done = Keep.of(keep_completed, f"job type {name!r}: keep_completed")
        kept_failed = Keep.of(keep_failed, f"job type {name!r}: keep_failed")
        if kept_done is not None and result_ttl is not None:
            raise ValueError(f"job type {name!r}: give keep_completed or result_ttl, not both")

        def register(handler: Handler[Any]) -> JobType[Any]:
            job_type: JobType[Any] = JobType(
                name=name,
                handler=handler,
                payload=payload or _payload_model(handler),
                queue=check_queue_name(queue),
                retry=retry,
                timeout=timeout,
                idempotency_key=idempotency_key,
                permanent=permanent,
                on_dead_letter=on_dead_letter,
                result_ttl=result_ttl,
                log_fields=log_fields,
                rate_limit=RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit,
                isolated=isolated,
                keep_completed=kept_done,
                keep_failed=kept_failed,
            )
            if isolated:
                _check_isolated(job_type)
            self.add(job_type)
            return job_type

        return register

    def add(self, job_type: JobType[Any]) -> None:
        if not _TYPE_NAME.match(job_type.name):
            raise ValueError(
                f"job type name {job_type.name!r} must be 1-100 letters, digits, '.', '_' or '-'"
            )
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self._types[job_type.name] = job_type

    def include(self, other: JobRegistry) -> None:
        """Add every job type and schedule of ``other`` (how an app composes the registries of its parts)."""
        for job_type in other:
            self.add(job_type)
        self.sharded |= other.sharded
        for schedule in other.schedules():
            self._add_schedule(schedule)

    # -- schedules (workers/schedules.py) ---------------------------------------------------------
    def schedule(
        self,
        name: str,
        job_type: str | JobType[Any],
        *,
        cron: str | None = None,
        every: int | None = None,
        args: BaseModel | dict[str, Any] | None = None,
        queue: str | None = None,
    ) -> Schedule:
        """Declare a repeatable job: ``job_type`` with payload ``args``, on a cron expression (UTC)
        or every ``every`` seconds. ``chumon scheduler`` registers it; the payload is checked here
        if the job type is known, else when a worker starts (``check``)."""
        type_name = job_type if isinstance(job_type, str) else job_type.name
        if isinstance(args, BaseModel):
            args = args.model_dump(mode="json")
        schedule = Schedule(
            name=name, job_type=type_name, cron=cron, every=every, args=args or {}, queue=queue
        )
        known = job_type if not isinstance(job_type, str) else self.find(type_name)
        if known is not None:
            schedule = _checked(schedule, known)
        self._add_schedule(schedule)
        return schedule

    def _add_schedule(self, schedule: Schedule) -> None:
        if schedule.name in self._schedules:
            raise ValueError(f"schedule {schedule.name!r} is declared twice")
        self._schedules[schedule.name] = schedule

    def schedules(self) -> list[Schedule]:
        return list(self._schedules.values())

    def get(self, name: str) -> JobType[Any]:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(f"no job type named {name!r} is registered") from None

    def find(self, name: str | None) -> JobType[Any] | None:
        return self._types.get(name) if name else None

    def __iter__(self) -> Iterator[JobType[Any]]:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def rate_limits(self) -> dict[str, RateLimit]:
        """The rate limits the job types declare, by job type name."""
        return {t.name: t.rate_limit for t in self if t.rate_limit is not None}

    def kept(self) -> list[list[Any]]:
        """The retention of the job types that keep their last N or for an age (workers/lua/keep.lua)."""
        policies = []
        for t in self:
            for kind, keep in (("completed", t.keep_completed), ("failed", t.keep_failed)):
                if keep is not None and (keep.count or kind == "failed"):
                    policies.append(
                        [t.name, kind, keep.count if keep.count is not None else False, keep.age or False]
                    )
        return policies

    def queues(self) -> list[str]:
        return sorted({job_type.queue for job_type in self})

    def dead_letter_hook(self, job_type: JobType[Any] | None) -> JobType[Any] | None:
        name = (job_type.on_dead_letter if job_type else None) or self.on_dead_letter
        return self.get(name) if name else None

    def check(self) -> None:
        """Fail early on hooks that name missing job types or take the wrong payload."""
        for name in [self.on_dead_letter, *(t.on_dead_letter for t in self)]:
            if name is None:
                continue
            hook = self.get(name)
            if not issubclass(hook.payload, DeadLetterNotice):
                raise ValueError(f"dead-letter hook {name!r} must take a DeadLetterNotice payload")
        for schedule in self._schedules.values():
            _checked(schedule, self.get(schedule.job_type))


def _checked(schedule: Schedule, job_type: JobType[Any]) -> Schedule:
    """``schedule`` with its payload validated by its job type (pydantic's error names the field)."""
    payload = job_type.payload.model_validate(schedule.args).model_dump(mode="json")
    return schedule.model_copy(update={"args": payload})


def _check_isolated(job_type: JobType[Any]) -> None:
    """An isolated handler is imported by its child process: a module-level, synchronous function."""
    if job_type.is_async:
        raise ValueError(f"job type {job_type.name!r}: an isolated handler must be a plain def, not async")
    if "<locals>" in job_type.handler.__qualname__:
        raise ValueError(
            f"job type {job_type.name!r}: an isolated handler must be defined at module level "
            "(its child process imports it by name)"
        )


def _payload_model(handler: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(handler).parameters)
    if not params:
        raise TypeError(f"handler {handler.__qualname__} must take (payload, ctx)")
    hints = get_type_hints(handler)
    model = hints.get(params[0])
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(
            f"handler {handler.__qualname__}: annotate its first parameter with a pydantic model "
            "or pass payload="
        )
    return model
