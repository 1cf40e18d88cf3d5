"""The worker: one process that runs up to N jobs at once on rq's data model.

One thread, the conductor, talks to Redis; N runner threads run handlers (runner.py); a
heartbeat thread says the worker lives (presence.py); a listener thread wakes the conductor
when work arrives (listener.py). The conductor's loop gathers finished attempts and, in
**one scripted call** (``step.lua``), records which handlers began, settles finished
attempts and claims as many new jobs as there is room for. Room is the number of slots plus
an equal prefetch buffer, so runners never wait for a round trip. When the queues are empty
the conductor sleeps until a signal says otherwise, the next scheduled job is due, or a
timer fires:

- every ``recovery_interval``: recovery of dead workers' runs (recovery.py), and a check that
  Redis credits this worker with no run it does not know of (a reply lost in transit);
- every minute: housekeeping (maintenance.py);
- continuously while jobs run: time limits (runner.py).

Retries and delayed jobs need no other process: every step promotes due scheduled jobs.
Every decision about time (due, expired, silent) is made by Redis's clock inside the scripts.

**It does not die of the world around it.** Any Redis error (a restart, a failover, a stall,
a time-out) is logged once, the loop backs off (up to 5 s) and resumes by itself, keeping
its running jobs and their finished outcomes until Redis takes them. Data it cannot read is
dead-lettered or quarantined with the reason. It exits only on a signal, or at start on a
configuration error it names.

SIGTERM or SIGINT: stop claiming, put back unstarted jobs, let running ones finish for up to
``drain_timeout`` (shorter than honcho's 5 s kill), then interrupt the rest and put them back
at the head of their queue without using an attempt. A second signal skips the wait. Runs it
cannot settle (Redis down) are left, with their evidence, for recovery.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from workers.aio import AsyncRunners
from workers.codec import raw_bytes, readable, shown
from workers.connection import check_server
from workers.deadletter import DeadLetters
from workers.enqueue import Enqueuer
from workers.errors import ServerUnsupported
from workers.execution import Claimed, Executor, Outcome
from workers.isolation import ChildPool
from workers.joblog import JobLog, context_of
from workers.jobtypes import JobRegistry, JobType
from workers.keys import base_queue, check_served_queue, is_dead_letter_queue, tag_of
from workers.lanes import Lanes
from workers.layout import Layout
from workers.listener import Listener
from workers.maintenance import INTERVAL as MAINTENANCE_INTERVAL
from workers.maintenance import Maintenance
from workers.metrics import RuntimeMetrics, process_metrics
from workers.policy import RandomSource
from workers.presence import Heartbeat, Presence, Snapshot
from workers.recovery import Reaper
from workers.relay import Relay
from workers.reporting import Reporter
from workers.runner import Runners
from workers.settings import RuntimeSettings
from workers.settle import Plan, Settler, settle_ctx
from workers.stepkeys import StepKeys

WAKE = object()


@dataclass(slots=True)
class Named:
    """A wake-up from the listener naming the jobs the queues' signals named (id, effect key)."""

    jobs: list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Due:
    """A wake-up from the listener saying only that a job was scheduled for ``at`` (server time)."""

    at: float


_STAT = {
    "succeeded": "done", "retried": "retried", "dead_lettered": "dead", "released": "released",
    "throttled": "throttled", "cancelled": "cancelled",
}  # fmt: skip
INTERRUPT_GRACE = 0.5
SETTLE_MAX = 256  # outcomes settled per call
SETTLE_BYTES = 4 * 1024 * 1024  # of return values per call (one larger value goes alone)
CLAIM_MAX = 256  # jobs claimed per call
# s: a claim reads the head of the scheduled registries too when a job there is due this soon (every
# step says when the next one is due; a job scheduled meanwhile by another worker wakes this one,
# and that step's reply says when): a step promotes only the due jobs it was told of (stepkeys.py)
SCHEDULED_AHEAD = 1.0
BACKOFF_CAP = 5.0
CLOCK_JUMP = 0.25  # s: a server-time sample this far below the offset means our clock jumped
# s: a begun handler is recorded in Redis with the next step call, or on its own once it has run
# this long. Most handlers end sooner, so their begin costs no call of its own (it did: one step
# call per job more for any handler slower than a round trip). A worker that dies within this
# time of a handler's start loses the run without an attempt counted; recovery counts one after
# three such losses (orphans.lua LOST_LIMIT), so a job that kills its worker still ends.
BEGAN_DELAY = 0.05
PROBLEM_LOG_EVERY = 60.0
STUCK_AFTER = 60.0  # the heartbeat stops if the conductor's loop has not moved for this long


class Worker:
    def __init__(
        self,
        redis: Redis,
        registry: JobRegistry,
        settings: RuntimeSettings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        async_concurrency: int | None = None,
        name: str | None = None,
        rand: RandomSource = random.random,
        log: logging.Logger | None = None,
        metrics: RuntimeMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        wanted = list(queues or registry.queues())
        dead = [q for q in wanted if is_dead_letter_queue(q)]
        if dead:
            raise ValueError(f"{dead[0]!r} is a dead-letter queue: no worker serves one")
        self.queues = [check_served_queue(q) for q in wanted]  # a queue, or a sub-queue of one
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        self.layout = Layout(redis, settings)
        family = self.layout.family(self.queues[0])
        if self.layout.cluster and len({tag_of(q) for q in self.queues}) > 1:
            raise ValueError(
                f"on Redis Cluster one worker serves the queues of one slot ({', '.join(self.queues)} "
                "given): one queue, or the queues of one group (name@group); `chumon worker` runs "
                "one worker per slot"
            )
        self.keys = family.keys
        if concurrency is not None and not 1 <= concurrency <= 1024:
            raise ValueError(f"concurrency must be from 1 to 1024, not {concurrency}")
        self.concurrency = concurrency or settings.worker_concurrency
        self.prefetch = self.concurrency
        self.capacity = self.concurrency + self.prefetch  # jobs owned at most (async slots add theirs)
        self.token = secrets.token_hex(4)
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{self.token}"
        self.log = log or logging.getLogger("chumon.worker")
        if settings.queue_split and not self.layout.cluster:
            self.log.warning("CHUMON_QUEUE_SPLIT is for Redis Cluster: on one Redis, queues are not split")
        self.stats: Counter[str] = Counter()
        self._local_clock = clock
        self._offset: float | None = None  # the server's clock minus ours (see _note_server_time)

        self.scripts = family.scripts
        self.enqueuer = Enqueuer(redis, settings, layout=self.layout)
        self.settler = Settler(registry, settings, self.enqueuer, self.name, rand)
        self.metrics = metrics or process_metrics()
        self.joblog = JobLog()
        bases = {base_queue(q) for q in self.queues}
        served = [t for t in registry if t.queue in bases]
        pool = ChildPool(settings, self.concurrency) if any(t.isolated for t in served) else None
        self.executor = Executor(
            registry, redis, self.enqueuer, self.settler.policy_of, self.log,
            on_start=self._started, owned=self.keys.effect_refusal, isolation=pool,
            reporter=self._reporter, max_result=settings.max_result_bytes,
        )  # fmt: skip
        self.inbox: SimpleQueue[Any] = SimpleQueue()
        self.runners = self._lanes(registry, async_concurrency, pool)
        self.listener = Listener(
            lambda: redis, self.keys, self.queues, self.wake, self.log, wake_at=self.wake_at
        )
        self.presence = Presence(
            redis, self.scripts, self.keys, self.name, self.queues,
            ttl=settings.worker_ttl, heartbeat=settings.heartbeat_interval,
        )  # fmt: skip
        self.heartbeat = Heartbeat(
            self.presence, self._snapshot, interval=settings.heartbeat_interval,
            stuck_after=max(STUCK_AFTER, 3 * settings.redis.socket_timeout), on_forgotten=self._forgotten,
            log=self.log, on_cancel=self._cancel,
        )  # fmt: skip
        self.reaper = Reaper(
            redis, self.scripts, self.keys, self.settler, settings, self.name, self.log,
            metrics=self.metrics, joblog=self.joblog, queues=self.queues,
        )  # fmt: skip
        self.dead_letters = DeadLetters(redis, settings, layout=self.layout)
        self.maintenance = Maintenance(
            redis,
            self.keys,
            self.dead_letters,
            self.name,
            self.log,
            kept=registry.kept(),
            scripts=self.scripts,
        )

        # on Redis Cluster: dead-letter hook jobs bound for another slot wait in this queue's relay
        self.relay = (
            Relay(redis, self.keys, self.enqueuer, self.queues[0], self.log) if self.layout.cluster else None
        )
        self._relay_due = self.relay is not None

        limits = settings.queue_rate_limits
        # a sub-queue has its queue's limit (each sub-queue's slot keeps its own window)
        self._limits = {q: limits[base_queue(q)].plan() for q in self.queues if base_queue(q) in limits}
        type_limits = {**registry.rate_limits(), **settings.job_rate_limits}
        self._type_limits = {name: limit.plan() for name, limit in type_limits.items()}
        self.step_keys = StepKeys(
            redis, self.keys, self.name, self.queues, self._type_limits, [t.name for t in served]
        )
        self._wanted: list[bytes] = []  # ids the last claim needed more keys of (stepkeys.py)
        self._named: list[tuple[bytes, bytes]] = []  # jobs signals named since the last step
        self._drained = False  # the last claim found the queues empty
        self._owned: dict[str, Claimed] = {}  # execution id -> claimed job, until settled
        self._pending: list[Outcome] = []  # finished attempts not yet settled in Redis
        self._began_runs: dict[str, Claimed] = {}  # handlers that began, not yet recorded in Redis
        self._began_at = 0.0  # monotonic time of the oldest begin notice in _began_runs
        self._seq = 0
        self._stopping = 0  # 0 running, 1 draining, 2 stop now
        self._next_due: float | None = None
        self._due_known = False  # whether a step said when the next scheduled job is due
        self._reconcile = False
        self._reregister = False
        self._woken = False
        # when each periodic task is due (server time); the loop sleeps until the first of them,
        # so every timer here must be one that ``_periodic`` moves on (a relay only on a cluster)
        self._timers = {"recovery": 0.0, "maintenance": 0.0}
        if self.relay is not None:
            self._timers["relay"] = 0.0
        self._backoff = 0.0
        self._trouble: str | None = None
        self._problems_logged: dict[tuple[str, str], float] = {}

    def _lanes(self, registry: JobRegistry, async_concurrency: int | None, pool: ChildPool | None) -> Lanes:
        """The runner threads and, if the registry has async job types, the event loop (aio.py)."""
        threads = Runners(
            self.concurrency, self.executor.run, self.inbox.put, grace=self.settings.timeout_grace,
            began=self._began, clock=self.clock,
        )  # fmt: skip
        async_types = frozenset(t.name for t in registry if t.is_async)
        if not async_types:
            return Lanes(threads, pool=pool)
        limit = async_concurrency or self.settings.async_concurrency
        if not 1 <= limit <= 10_000:
            raise ValueError(f"async concurrency must be from 1 to 10000, not {limit}")
        aio = AsyncRunners(
            limit, self.executor, self.redis, self.inbox.put, grace=self.settings.timeout_grace,
            began=self._began, clock=self.clock,
        )  # fmt: skip
        self.capacity += 2 * limit  # its slots and an equal prefetch buffer, as the threads have
        return Lanes(threads, aio, async_types, pool)

    # -- control ------------------------------------------------------------------------------
    def clock(self) -> float:
        """Now, by the server's clock (as last measured): for the times shown on jobs."""
        return self._local_clock() + (self._offset or 0.0)

    def _note_server_time(self, server_now: float) -> None:
        """Keep the offset of the server's clock from ours, measured by every step's reply.

        A sample is the server's time when the script began less ours once the reply is read, so
        it falls short of the true offset by the call's duration and wanders by milliseconds from
        call to call. The offset therefore only moves up (to a better sample), or down when a
        sample is further below than any call takes (our clock jumped): the times written on jobs
        never step back between one run and the next, so runs of one slot never overlap.
        """
        sample = server_now - self._local_clock()
        if self._offset is None or sample > self._offset or sample < self._offset - CLOCK_JUMP:
            self._offset = sample

    def wake(self, named: list[tuple[bytes, bytes]] | None = None) -> None:
        """Look for work now; ``named``: the jobs the queues' signals named (id, effect key)."""
        self.inbox.put(Named(named) if named else WAKE)

    def wake_at(self, due: float) -> None:
        """Look for work at ``due`` (server time): a job was scheduled for then."""
        self.inbox.put(Due(due))

    def stop(self, *, hard: bool = False) -> None:
        """Ask the worker to stop (thread-safe, signal-safe): drain first unless ``hard``."""
        self._stopping = 2 if hard else max(self._stopping, 1)
        self.inbox.put(WAKE)

    def run(self, *, burst: bool = False) -> Counter[str]:
        """Serve the queues until stopped (or, with ``burst``, until they are empty).

        Raises ValueError (a bad registry) or ServerUnsupported (a Redis that is too old) before
        anything is started; waits, logging, while Redis does not answer.
        """
        self.registry.check()
        restore = self._install_signals()
        try:
            if not self._start():
                return self.stats
            if threading.current_thread() is threading.main_thread():
                # a worker process: what is allocated so far (modules, the registry, clients)
                # lives as long as it does; frozen, full collections no longer walk it (measured:
                # the no-op drain's 5 to 8 % lost to the modules this version added, won back)
                gc.freeze()
            self.log.info(
                "worker %s serving %s with %d slots", self.name, ",".join(self.queues), self.concurrency
            )
            try:
                self._loop(burst)
            finally:
                self._shutdown()
        finally:
            restore()
        return self.stats

    def _start(self) -> bool:
        """Check the server and register, waiting for Redis to answer; False if stopped meanwhile."""
        while not self._stopping:
            try:
                check_server(self.redis)
                self.layout.index(self.queues)  # on a cluster: its queues listed, whoever fills them
                self.presence.register()
                break
            except ServerUnsupported:
                raise
            except (RedisError, OSError) as exc:
                self._redis_trouble(exc, "starting")
        else:
            return False
        self._backoff, self._trouble = 0.0, None
        self.runners.start()
        self.listener.start()
        self.heartbeat.start()
        return True

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self, burst: bool) -> None:
        may_have_work: bool | None = True
        while not self._stopping:
            self.heartbeat.alive()
            try:
                may_have_work = self._round(burst, bool(may_have_work))
            except (RedisError, OSError) as exc:
                self._redis_trouble(exc, "serving")
                may_have_work = True
            except Exception:  # a bug of ours: logged with its traceback, and the loop goes on
                self.log.exception("worker %s: unexpected error; carrying on", self.name)
                self._pause()
            if may_have_work is None:  # burst finished
                return

    def _round(self, burst: bool, may_have_work: bool) -> bool | None:
        self._collect(block=0.0)
        woke, self._woken = self._woken, False
        now = self.clock()
        self._periodic(now)
        if woke or (self._next_due is not None and now >= self._next_due):
            may_have_work = True
        want = min(self._room(), CLAIM_MAX) if may_have_work else 0
        began_due = bool(self._began_runs) and time.monotonic() >= self._began_at + BEGAN_DELAY
        if self._pending or began_due or want:
            fetched, exhausted = self._step(want)
            if fetched < want and not exhausted:
                may_have_work = False
            return may_have_work  # look again at once: more may have finished meanwhile
        if burst and not may_have_work and not self._owned and not self._pending:
            return None
        self._collect(block=self._wait_time(now))
        return may_have_work

    def _room(self) -> int:
        """Jobs to claim now: capacity (slots, prefetch, async slots) less what is owned and not settling."""
        return max(0, self.capacity - len(self._owned) + len(self._pending))

    def _collect(self, *, block: float) -> None:
        """Move finished attempts from the inbox to pending, note begun runs and wake-ups."""
        try:
            item = self.inbox.get(timeout=block) if block > 0 else self.inbox.get_nowait()
            while True:
                if item is WAKE:
                    self._woken = True
                elif isinstance(item, Named):
                    self._woken = True
                    self._named += item.jobs
                elif isinstance(item, Due):
                    self._next_due = item.at if self._next_due is None else min(self._next_due, item.at)
                elif isinstance(item, Claimed):
                    if not self._began_runs:
                        self._began_at = time.monotonic()
                    self._began_runs[item.execution] = item
                else:
                    self._pending.append(item)
                item = self.inbox.get_nowait()
        except Empty:
            return

    def _wait_time(self, now: float) -> float:
        until = min(self._timers.values())
        if self._next_due is not None:
            until = min(until, self._next_due)
        wait = until - now
        deadline = self.runners.next_deadline()
        if self._began_runs:
            began_due = self._began_at + BEGAN_DELAY
            deadline = began_due if deadline is None else min(deadline, began_due)
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(0.001, min(wait, 1.0))

    def _step(self, want: int) -> tuple[int, bool]:
        """Record begun runs, settle pending outcomes and claim up to ``want`` jobs.

        Returns (jobs claimed, whether the claim budget ran out). Raises RedisError, with every
        outcome still pending: a reply lost in transit may have claimed jobs, which the next
        reconciliation hands back.
        """
        count = settle_count(self._pending)
        outcomes = self._pending[:count]
        finished = {o.claimed.execution for o in outcomes}
        started = [
            [c.job_id, c.execution, c.attempt, c.started_at]
            for execution, c in self._began_runs.items()
            if execution not in finished
        ]
        plan = self.settler.plan(outcomes)
        declared = self._step_keys(want, outcomes, plan, finished)
        ctx = settle_ctx(self.settings, self.name)
        ctx.update(
            token=self.token,
            seq=self._seq,
            claim_ttl_ms=int(self.settings.worker_ttl * 1000),
            defer_s=self.settings.defer_delay,
            result_ttl=self.settings.result_ttl,
            budget=want + 128,
            limits=self._limits,
            type_limits=self._type_limits,
        )
        body = {"ctx": ctx, "started": started, "done": plan.done, "failed": plan.failed,
                "released": plan.released, "throttled": plan.throttled, "cancelled": plan.cancelled,
                "kept": plan.kept,
                "queues": self.queues, "n": want}  # fmt: skip
        self._reconcile = True  # until the reply is read: a lost reply may have claimed jobs
        reply = self.scripts.run("step", body, keys=declared)
        self._reconcile = False
        self._recovered_from_trouble()
        jobs, duplicates, lost, deferred, stale, dropped, next_due, held, refused = reply[:9]
        quarantined, exhausted, problems, server_now, wanted = reply[9:14]
        self._wanted = [raw_bytes(i) or b"" for i in wanted]
        self._named = []
        if want:
            self.step_keys.claimed(want, len(jobs), bool(int(exhausted)))
            self._drained = len(jobs) < want and not int(exhausted)
        self._note_server_time(float(server_now))
        held_ids = {readable(i) for i in held}
        self._pending = [o for o in outcomes if o.claimed.job_id in held_ids] + self._pending[count:]
        for claimed in self._began_runs.copy().values():
            if claimed.execution not in finished or claimed.job_id not in held_ids:
                del self._began_runs[claimed.execution]
        self._began_at = time.monotonic()  # any left (held) wait their delay again
        settled = [
            (o, a) for o, a in zip(outcomes, plan.actions, strict=True) if o.claimed.job_id not in held_ids
        ]
        for outcome, _action in settled:
            self._owned.pop(outcome.claimed.execution, None)
        self._record(settled, {readable(r[0]): readable(r[1]) for r in refused})
        for row in jobs:
            claimed = Claimed.from_row(row)
            self._owned[claimed.execution] = claimed
            self.runners.submit(claimed)
        self._seq += len(jobs)
        if self.relay is not None and any(
            item[7] and item[7]["queue"] == self.relay.name for item in plan.failed
        ):
            self._relay_due = True
        if want == 0 and any(item[7] for item in plan.failed):
            # a dead letter's hook job went to its queue in this call, which claimed nothing: look
            # again (a burst worker would otherwise stop before the listener tells it)
            self._woken = True
        self._skipped("duplicate", duplicates)
        self._skipped("deferred", deferred)
        self._count("stale", int(stale))
        self._count("quarantined", int(quarantined))
        if int(quarantined):
            self.log.error("%d job id(s) quarantined (unreadable ids or job keys): see %s",
                           int(quarantined), self.keys.quarantine)  # fmt: skip
        if lost:
            self._count("lost", len(lost))
            self.metrics.lost.inc(len(lost))
            self.log.error("%d attempt(s) were settled elsewhere (worker presumed dead?): %s",
                           len(lost), ", ".join(shown(i) for i in lost[:10]))  # fmt: skip
        if int(dropped):
            self.log.warning(
                "dead-letter cap (or its type's keep_failed) removed %d old dead letter(s)", int(dropped)
            )
        self._log_problems(problems)
        due = float(next_due)
        self._next_due = due if due >= 0 else None
        self._due_known = True
        self.joblog.flush()
        return len(jobs), bool(int(exhausted))

    def _step_keys(self, want: int, outcomes: list[Outcome], plan: Plan, finished: set[str]) -> list[Any]:
        """The step's KEYS: the worker's own, what settling touches and, for a claim, the jobs at the
        head of its queues (read now, workers/stepkeys.py)."""
        step_keys = self.step_keys
        declared: list[Any] = list(step_keys.fixed)
        if want:
            due = self._next_due
            scheduled = not self._due_known or (due is not None and due <= self.clock() + SCHEDULED_AHEAD)
            if self._drained and self._named and not scheduled:  # an idle worker woken for a job
                declared += step_keys.named_keys(self._named)
            else:
                declared += step_keys.claim_keys(want, scheduled)
            if self._wanted:
                declared += step_keys.wanted_keys(self._wanted)
        began = [c for execution, c in self._began_runs.items() if execution not in finished]
        sections = {"done": plan.done, "failed": plan.failed, "throttled": plan.throttled, "kept": plan.kept}
        declared += step_keys.settle_keys(outcomes, sections, began)
        return declared

    def _record(self, settled: list[tuple[Outcome, str]], refused: dict[str | None, str | None]) -> None:
        """Count, measure and log every settled attempt (one line per state change)."""
        for outcome, action in settled:
            claimed, job_type = outcome.claimed, outcome.job_type
            type_name = job_type.name if job_type else ""
            detail = f"{outcome.exc_type}: {outcome.message[:300]}" if outcome.kind == "failed" else ""
            if claimed.job_id in refused:
                action, detail = "dead_lettered", f"EffectsRefused: {refused[claimed.job_id]}"
            self._count(_STAT[action], 1)
            self.metrics.count(claimed.queue, type_name, action)
            if action != "released":
                self.metrics.observe(
                    claimed.queue, type_name, max(0.0, outcome.ended_at - claimed.started_at)
                )
            context = context_of(job_type.log_fields if job_type else (), outcome.payload)
            self.joblog.record(
                action, job_id=claimed.job_id, queue=claimed.queue, job_type=type_name or None,
                attempt=claimed.attempt, context=context, detail=detail,
            )  # fmt: skip

    def _skipped(self, outcome: str, entries: list[Any]) -> None:
        for raw_id, raw_queue, raw_type in entries:
            job_id, queue, job_type = shown(raw_id), shown(raw_queue), shown(raw_type)
            self._count(outcome, 1)
            self.metrics.count(queue, job_type, outcome)
            self.joblog.record(outcome, job_id=job_id, queue=queue, job_type=job_type or None, attempt=0)

    def _reporter(self, client: Redis, claimed: Claimed) -> Reporter:
        """The writer of one run's progress and log lines (``ctx.progress``, ``ctx.log``)."""
        return Reporter(self.scripts, client, self.settings, claimed.job_id, claimed.execution, claimed.queue)

    def _began(self, claimed: Claimed) -> None:
        """Called in a runner thread as a handler begins: the next step records it in Redis."""
        self.inbox.put(claimed)

    def _started(self, claimed: Claimed, job_type: JobType[Any], payload: dict[str, Any]) -> None:
        """Called in the runner thread once the job is decoded and about to run."""
        self.metrics.count(claimed.queue, job_type.name, "started")
        self.joblog.record(
            "started", job_id=claimed.job_id, queue=claimed.queue, job_type=job_type.name,
            attempt=claimed.attempt, context=context_of(job_type.log_fields, payload),
        )  # fmt: skip

    def _count(self, event: str, n: int) -> None:
        if n:
            self.stats[event] += n

    def _log_problems(self, problems: list[Any]) -> None:
        """Keys holding garbage: one line per key and problem per minute."""
        now = time.monotonic()
        for raw_key, raw_what in problems:
            key, what = shown(raw_key), shown(raw_what)
            if now - self._problems_logged.get((key, what), -PROBLEM_LOG_EVERY) >= PROBLEM_LOG_EVERY:
                self._problems_logged[(key, what)] = now
                self.log.error("%s %s", key if " " in key else f"redis key {key}", what)

    # -- trouble ------------------------------------------------------------------------------------
    def _redis_trouble(self, exc: BaseException, doing: str) -> None:
        """Log once per outage, back off (capped), and reconcile once Redis answers again."""
        self._reconcile = True
        message = f"{type(exc).__name__}: {exc}"
        if self._trouble is None:
            self.log.error("worker %s: redis while %s: %s; retrying, %d job(s) kept", self.name, doing,
                           message, len(self._owned))  # fmt: skip
        elif self._trouble != message:
            self.log.warning("worker %s: redis: %s; still retrying", self.name, message)
        self._trouble = message
        self._pause()

    def _pause(self) -> None:
        self._backoff = min(BACKOFF_CAP, max(0.1, self._backoff * 2))
        self._collect(block=self._backoff)  # a wait the inbox (and a stop) can end early
        if self._owned:
            self._pending += self.runners.enforce(time.monotonic())

    def _recovered_from_trouble(self) -> None:
        if self._trouble is not None:
            self.log.info("worker %s: redis answers again", self.name)
        self._backoff, self._trouble = 0.0, None

    # -- timers ---------------------------------------------------------------------------------
    def _periodic(self, now: float) -> None:
        """Timers. Each task fails alone: garbage in the keys one reads must not stop the others,
        nor the step (an outage makes the step fail too, and the loop backs off then)."""
        timers = self._timers
        if self._trouble is not None:  # the next step probes Redis; housekeeping waits until it answers
            if self._owned:
                self._pending += self.runners.enforce(time.monotonic())
            return
        if self._reregister:
            self._task("registering again", self.presence.register)
            self._reregister = False
        if now >= timers["recovery"] or self._reconcile:
            timers["recovery"] = now + self.settings.recovery_interval
            self._task("reconciling its runs", self._reconcile_runs)
            self._task("recovering dead workers' runs", lambda: self._count("recovered", self.reaper.run()))
        if self.relay is not None and (self._relay_due or now >= timers["relay"]):
            timers["relay"] = now + self.settings.recovery_interval
            self._relay_due = False
            self._task("relaying hook jobs to their queues", self.relay.run)
        if now >= timers["maintenance"]:
            timers["maintenance"] = now + MAINTENANCE_INTERVAL
            self._task("housekeeping", lambda: self.maintenance.run(now))
        if self._owned:
            self._pending += self.runners.enforce(time.monotonic())

    def _task(self, what: str, task: Callable[[], object]) -> None:
        try:
            task()
        except (RedisError, OSError) as exc:
            self._log_problems([(what, f"failed: {type(exc).__name__}: {exc}")])
        except Exception:  # a bug of ours: logged, and the worker goes on
            self.log.exception("worker %s: %s failed", self.name, what)

    def _reconcile_runs(self) -> None:
        """Hand back runs Redis credits to this worker that it does not know of (a lost reply)."""
        members = self.redis.smembers(self.keys.inflight(self.name))
        known = {f"{c.job_id}:{c.execution}" for c in self._owned.values()}
        items: list[list[Any]] = []
        origins: set[str] = set()
        for member in members:
            run = readable(member)
            if run is None or run in known:
                continue
            job_id, _, execution = run.rpartition(":")
            origin = readable(self.redis.hget(self.keys.job(job_id), "origin")) or self.queues[0]
            items.append([job_id, execution, origin, False, False])
            origins.add(origin)
        if items:
            ids = [str(item[0]).encode() for item in items]
            declared = self.step_keys.fixed + self.step_keys.wanted_keys(ids)
            for queue in origins - set(self.queues):
                declared += self.step_keys.queue_keys(queue)
            reply = self.scripts.run(
                "step", {"ctx": {**settle_ctx(self.settings, self.name), "budget": 0}, "started": [],
                         "done": [], "failed": [], "released": items, "queues": self.queues, "n": 0},
                keys=declared,
            )  # fmt: skip
            self.log.warning("handed back %d run(s) claimed by a reply that never arrived",
                             len(items) - len(reply[2]))  # fmt: skip
        self._reconcile = False

    def _snapshot(self) -> Snapshot:
        """What the heartbeat reports: a running job, the effect-key claims, the ids of the runs held."""
        running = self.runners.running()
        owned = list(self._owned.values())
        claims = [(c.effect_key, c.execution) for c in owned if c.effect_key]
        return (running[0].job_id if running else None), claims, [c.job_id for c in owned]

    def _cancel(self, job_ids: list[str]) -> None:
        """Someone asked these jobs to stop: their handlers see ``ctx.cancelled``."""
        wanted = set(job_ids)
        for claimed in list(self._owned.values()):
            if claimed.job_id in wanted:
                claimed.cancel.set()

    def _forgotten(self) -> None:
        """The heartbeat found this worker presumed dead: register again (its runs were recovered)."""
        self._reregister = True
        self.wake()

    # -- shutdown -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.log.info(
            "worker %s stopping: %d job(s) running%s", self.name, len(self.runners.running()),
            "" if self._stopping < 2 else ", not waiting for them",
        )  # fmt: skip
        self.listener.stop()
        self._collect(block=0.0)
        self._pending += [Outcome(c, "released") for c in self.runners.take_buffered()]
        drain_until = time.monotonic() + self.settings.drain_timeout
        while self.runners.running() and self._stopping < 2 and time.monotonic() < drain_until:
            self._settle_now()
            self._collect(block=0.05)
            self._pending += self.runners.enforce(time.monotonic())
        if self.runners.running():
            self.runners.interrupt(time.monotonic(), INTERRUPT_GRACE)
            give_up = time.monotonic() + INTERRUPT_GRACE
            while self.runners.running() and time.monotonic() < give_up:
                self._collect(block=0.05)
            self._pending += self.runners.enforce(float("inf"))
        self._collect(block=0.0)
        settle_until = time.monotonic() + max(1.0, self.settings.drain_timeout)
        while (self._pending or self._began_runs) and time.monotonic() < settle_until:
            if not self._settle_now():
                self._collect(block=0.2)
        self.runners.stop()
        self.heartbeat.stop()
        self.joblog.flush()
        left = len(self._owned)
        try:
            if not self.presence.leave():
                left = max(left, 1)
        except (RedisError, OSError) as exc:
            self.log.error(
                "worker %s: redis during shutdown: %s; its runs are left for recovery", self.name, exc
            )
        self.log.info(
            "worker %s stopped: %s%s", self.name, dict(self.stats),
            f"; {left} run(s) left for recovery" if left else "",
        )  # fmt: skip

    def _settle_now(self) -> bool:
        """Settle what is pending; False if Redis did not take it."""
        if not (self._pending or self._began_runs):
            return True
        try:
            self._step(0)
        except (RedisError, OSError) as exc:
            self._redis_trouble(exc, "settling at shutdown")
            return False
        return True

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            hard = self._stopping > 0
            self.stop(hard=hard)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def settle_count(pending: list[Outcome]) -> int:
    """How many of the first pending outcomes one step call settles: at most ``SETTLE_MAX``, and
    ``SETTLE_BYTES`` of return values (at least one), so that no call holds Redis for long."""
    size = 0
    for n, outcome in enumerate(pending[:SETTLE_MAX]):
        size += len(outcome.result_b64)
        if size > SETTLE_BYTES and n > 0:
            return n
    return min(len(pending), SETTLE_MAX)
