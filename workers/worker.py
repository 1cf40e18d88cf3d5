"""The worker: one process that runs up to N jobs at once on rq's data model.

One thread, the conductor, talks to Redis; N runner threads run handlers (runner.py). The
conductor's loop gathers finished attempts and, in **one scripted call** (``step.lua``),
settles them all and claims as many new jobs as there is room for. Room is the number of
slots plus an equal prefetch buffer, so runners never wait for a round trip. When the queues
are empty the conductor sleeps until a signal stream says otherwise (listener.py), the next
scheduled job is due, or a timer fires:

- every ``heartbeat_interval``: liveness, rq's worker hash, renewal of idempotency claims;
- every ``recovery_interval``: recovery of dead workers' jobs (recovery.py);
- every minute: housekeeping (maintenance.py);
- continuously while jobs run: time limits (runner.py).

Retries and delayed jobs need no other process: every step promotes due scheduled jobs.

SIGTERM or SIGINT: stop claiming, put back unstarted jobs, let running ones finish for up to
``drain_timeout`` (shorter than honcho's 5 s kill), then interrupt the rest and put them back
at the head of their queue without using an attempt. A second signal skips the wait.
"""

from __future__ import annotations

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
from queue import Empty, SimpleQueue
from types import FrameType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from workers.codec import text
from workers.deadletter import DeadLetters
from workers.enqueue import Enqueuer
from workers.execution import Claimed, Executor, Outcome
from workers.joblog import JobLog, context_of
from workers.jobtypes import JobRegistry, JobType
from workers.keys import Keys, check_queue_name
from workers.listener import Listener
from workers.maintenance import INTERVAL as MAINTENANCE_INTERVAL
from workers.maintenance import Maintenance
from workers.metrics import RuntimeMetrics, process_metrics
from workers.policy import RandomSource
from workers.presence import Presence
from workers.recovery import Reaper
from workers.runner import Runners
from workers.scripts import Scripts
from workers.settings import RuntimeSettings
from workers.settle import Settler, settle_ctx

WAKE = object()
_STAT = {"succeeded": "done", "retried": "retried", "dead_lettered": "dead", "released": "released"}
INTERRUPT_GRACE = 0.5


class Worker:
    def __init__(
        self,
        redis: Redis,
        registry: JobRegistry,
        settings: RuntimeSettings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
        rand: RandomSource = random.random,
        log: logging.Logger | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.queues = [check_queue_name(q) for q in (queues or registry.queues())]
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        self.concurrency = concurrency or settings.worker_concurrency
        self.prefetch = self.concurrency
        self.token = secrets.token_hex(4)
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{self.token}"
        self.log = log or logging.getLogger("chumon.worker")
        self.stats: Counter[str] = Counter()

        self.scripts = Scripts(redis, self.keys.lua_keyspace)
        self.enqueuer = Enqueuer(redis, settings, scripts=self.scripts)
        self.settler = Settler(registry, settings, self.enqueuer, self.name, rand)
        self.metrics = metrics or process_metrics()
        self.joblog = JobLog()
        self.executor = Executor(
            registry, redis, self.enqueuer, self.settler.policy_of, self.log, on_start=self._started
        )
        self.inbox: SimpleQueue[Any] = SimpleQueue()
        self.runners = Runners(
            self.concurrency, self.executor.run, self.inbox.put, grace=settings.timeout_grace
        )
        self.listener = Listener(lambda: redis, self.keys, self.queues, self.wake, self.log)
        self.presence = Presence(redis, self.keys, self.name, self.queues, ttl=settings.worker_ttl)
        self.reaper = Reaper(
            redis, self.scripts, self.keys, self.settler, settings, self.name, self.log,
            metrics=self.metrics, joblog=self.joblog,
        )  # fmt: skip
        self.dead_letters = DeadLetters(redis, settings, scripts=self.scripts)
        self.maintenance = Maintenance(redis, self.keys, self.dead_letters, self.name, self.log)

        self._owned: dict[str, Claimed] = {}  # execution id -> claimed job, until settled
        self._pending: list[Outcome] = []  # finished attempts not yet settled in Redis
        self._seq = 0
        self._stopping = 0  # 0 running, 1 draining, 2 stop now
        self._next_due: float | None = None
        self._reconcile = False
        self._woken = False
        self._timers = {"heartbeat": 0.0, "recovery": 0.0, "maintenance": 0.0}
        self._backoff = 0.0

    # -- control ------------------------------------------------------------------------------
    def wake(self) -> None:
        self.inbox.put(WAKE)

    def stop(self, *, hard: bool = False) -> None:
        """Ask the worker to stop (thread-safe, signal-safe): drain first unless ``hard``."""
        self._stopping = 2 if hard else max(self._stopping, 1)
        self.inbox.put(WAKE)

    def run(self, *, burst: bool = False) -> Counter[str]:
        """Serve the queues until stopped (or, with ``burst``, until they are empty)."""
        self.registry.check()
        self.presence.register(time.time())
        self.runners.start()
        self.listener.start()
        restore = self._install_signals()
        self.log.info(
            "worker %s serving %s with %d slots", self.name, ",".join(self.queues), self.concurrency
        )
        try:
            self._loop(burst)
        finally:
            try:
                self._shutdown()
            finally:
                restore()
        return self.stats

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self, burst: bool) -> None:
        may_have_work = True
        while not self._stopping:
            self._collect(block=0.0)
            woke, self._woken = self._woken, False
            now = time.time()
            self._periodic(now)
            if woke or (self._next_due is not None and now >= self._next_due):
                may_have_work = True
            want = self._room() if may_have_work else 0
            if self._pending or want:
                fetched = self._step(want, now)
                if fetched is not None and fetched < want:
                    may_have_work = False
                continue  # look again at once: more may have finished meanwhile
            if burst and not may_have_work and not self._owned and not self._pending:
                return
            self._collect(block=self._wait_time(now))

    def _room(self) -> int:
        """Jobs to claim now: slots plus prefetch, less what is owned and not about to be settled."""
        return max(0, self.concurrency + self.prefetch - len(self._owned) + len(self._pending))

    def _collect(self, *, block: float) -> None:
        """Move finished attempts from the inbox to pending, and note wake-ups."""
        try:
            item = self.inbox.get(timeout=block) if block > 0 else self.inbox.get_nowait()
            while True:
                if item is WAKE:
                    self._woken = True
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
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(0.001, min(wait, 1.0))

    def _step(self, want: int, now: float) -> int | None:
        """Settle pending outcomes and claim up to ``want`` jobs; None if Redis failed."""
        outcomes = self._pending
        plan = self.settler.plan(outcomes, now)
        if self._reconcile:
            plan.released += self._orphan_runs()
        ctx = settle_ctx(self.settings, self.name, now)
        ctx.update(
            token=self.token,
            seq=self._seq,
            claim_ttl_ms=int(self.settings.worker_ttl * 1000),
            defer_s=self.settings.defer_delay,
            result_ttl=self.settings.result_ttl,
        )
        body = {"ctx": ctx, "done": plan.done, "failed": plan.failed, "released": plan.released}
        try:
            reply = self.scripts.run("step", {**body, "queues": self.queues, "n": want})
        except RedisError as exc:
            self._redis_trouble(exc)
            return None
        self._backoff = 0.0
        self._reconcile = False
        self._pending = []
        jobs, duplicates, lost, deferred, stale, dropped, next_due = reply
        for outcome in outcomes:
            self._owned.pop(outcome.claimed.execution, None)
        self._record(outcomes, plan.actions, now)
        for row in jobs:
            claimed = Claimed.from_row(row)
            self._owned[claimed.execution] = claimed
            self.runners.submit(claimed)
        self._seq += len(jobs)
        self._skipped("duplicate", duplicates)
        self._skipped("deferred", deferred)
        self._count("stale", int(stale))
        if lost:
            self._count("lost", len(lost))
            self.metrics.lost.inc(len(lost))
            self.log.error(
                "%d attempt(s) were settled elsewhere (worker presumed dead?): %s", len(lost), lost
            )
        if dropped:
            self.log.warning("dead-letter cap removed %d old dead letter(s)", int(dropped))
        due = float(next_due)
        self._next_due = due if due >= 0 else None
        self.joblog.flush()
        return len(jobs)

    def _record(self, outcomes: list[Outcome], actions: list[str], now: float) -> None:
        """Count, measure and log every settled attempt (one line per state change)."""
        for outcome, action in zip(outcomes, actions, strict=True):
            claimed, job_type = outcome.claimed, outcome.job_type
            type_name = job_type.name if job_type else ""
            self._count(_STAT[action], 1)
            self.metrics.count(claimed.queue, type_name, action)
            if action != "released":
                self.metrics.observe(claimed.queue, type_name, outcome.ended_at - claimed.started_at)
            detail = f"{outcome.exc_type}: {outcome.message[:300]}" if outcome.kind == "failed" else ""
            context = context_of(job_type.log_fields if job_type else (), outcome.payload)
            self.joblog.record(
                action, job_id=claimed.job_id, queue=claimed.queue, job_type=type_name or None,
                attempt=claimed.attempt, context=context, detail=detail,
            )  # fmt: skip

    def _skipped(self, outcome: str, entries: list[Any]) -> None:
        for raw_id, raw_queue, raw_type in entries:
            job_id, queue, job_type = text(raw_id), text(raw_queue), text(raw_type)
            self._count(outcome, 1)
            self.metrics.count(queue, job_type, outcome)
            self.joblog.record(outcome, job_id=job_id, queue=queue, job_type=job_type or None, attempt=0)

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

    def _redis_trouble(self, exc: RedisError) -> None:
        self._backoff = min(5.0, max(0.1, self._backoff * 2))
        self._reconcile = True  # a reply lost in transit may have claimed jobs we never saw
        self.log.error("redis: %s; retrying in %.1f s", exc, self._backoff)
        time.sleep(self._backoff)

    def _orphan_runs(self) -> list[list[Any]]:
        """Runs Redis credits to this worker that it does not know of: hand them back."""
        members = {text(m) for m in self.redis.smembers(self.keys.inflight(self.name))}
        known = {f"{c.job_id}:{c.execution}" for c in self._owned.values()}
        items = []
        for run in members - known:
            job_id, _, execution = run.partition(":")
            origin = self.redis.hget(self.keys.job(job_id), "origin")
            items.append([job_id, execution, text(origin) if origin else self.queues[0]])
        return items

    # -- timers ---------------------------------------------------------------------------------
    def _periodic(self, now: float) -> None:
        timers = self._timers
        try:
            if now >= timers["heartbeat"]:
                timers["heartbeat"] = now + self.settings.heartbeat_interval
                self._heartbeat(now)
            if now >= timers["recovery"]:
                timers["recovery"] = now + self.settings.recovery_interval
                self._count("recovered", self.reaper.run(now))
            if now >= timers["maintenance"]:
                timers["maintenance"] = now + MAINTENANCE_INTERVAL
                self.maintenance.run(now)
        except RedisError as exc:
            self.log.error("redis during housekeeping: %s", exc)
        if self._owned:
            self._pending += self.runners.enforce(time.monotonic())

    def _heartbeat(self, now: float) -> None:
        running = self.runners.running()
        claims = [c.effect_key for c in self._owned.values() if c.effect_key]
        if not self.presence.heartbeat(now, running[0].job_id if running else None, claims):
            self.log.error("worker %s was presumed dead and its runs recovered; registering again", self.name)
            self.presence.register(now)

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
        self._settle_now()
        self.runners.stop()
        self.joblog.flush()
        left = len(self._owned)
        try:
            self.presence.deregister(time.time())
        except RedisError as exc:
            self.log.error("redis during shutdown: %s", exc)
        self.log.info(
            "worker %s stopped: %s%s", self.name, dict(self.stats),
            f"; {left} run(s) left for recovery" if left else "",
        )  # fmt: skip

    def _settle_now(self) -> None:
        if self._pending:
            self._step(0, time.time())

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
