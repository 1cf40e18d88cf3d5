"""Async slots: ``async def`` handlers on one event loop, in a thread of their own.

The conductor hands claimed jobs of async types here instead of to the runner threads
(workers/lanes.py routes them). Up to ``limit`` run at once on the loop; the rest wait in a
buffer that shutdown can take back, like the runner threads' prefetch buffer. Each job gets
the same treatment as in a thread slot: the executor decodes it and builds its context, and
classifies what the handler raised or returned, so retries, effect keys, ``ctx.effects``,
``ctx.cancelled``, ``RateLimited`` and settlement are the same.

Time limits are asyncio cancellation: at its deadline a job's task is cancelled (the await it
is in raises ``CancelledError``) and the attempt is a ``JobTimeout``. A task that ignores the
cancellation is *abandoned* ``grace`` seconds later: its attempt is settled as timed out, its
place is freed, and whatever it returns is discarded. Shutdown cancels the running tasks and
puts their jobs back without using an attempt, as it interrupts the runner threads.

A handler that blocks (``time.sleep``, a synchronous socket call) blocks every async job of
the process: use ``await asyncio.to_thread(...)`` for such calls. ``ctx.redis`` here is the
worker's pooled (thread-safe) client, so ``asyncio.to_thread(ctx.redis.get, key)`` is safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from workers.execution import Claimed, Executor, Outcome, Prepared

DEFAULT_LIMIT = 100
TIMEOUT = "timeout"
INTERRUPT = "interrupt"


@dataclass(slots=True, eq=False)
class Running:
    claimed: Claimed
    deadline: float  # monotonic
    task: asyncio.Task[None] | None = None
    flag: str | None = None
    abandon_at: float = field(default=float("inf"))
    posted: bool = False


class AsyncRunners:
    def __init__(
        self,
        limit: int,
        executor: Executor,
        redis: Redis,
        post: Callable[[Outcome], None],
        *,
        grace: float,
        began: Callable[[Claimed], None] = lambda claimed: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.executor = executor
        self.redis = redis
        self.post = post
        self.grace = grace
        self.began = began
        self.clock = clock
        self.abandoned = 0
        self._lock = threading.Lock()  # guards the buffer, the running set and each run's ``posted``
        self._buffer: deque[Claimed] = deque()
        self._fill_due = False  # a call of _fill is scheduled on the loop
        self._running: dict[str, Running] = {}  # execution id -> run
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="chumon-async", daemon=True)

    # -- called from the conductor's thread -----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, claimed: Claimed) -> None:
        with self._lock:
            self._buffer.append(claimed)
            if self._fill_due:  # a fill is already on its way: it takes this job too
                return
            self._fill_due = True
        self._loop.call_soon_threadsafe(self._fill)

    def take_buffered(self) -> list[Claimed]:
        with self._lock:
            taken = list(self._buffer)
            self._buffer.clear()
        return taken

    def running(self) -> list[Claimed]:
        with self._lock:
            return [run.claimed for run in self._running.values()]

    def next_deadline(self) -> float | None:
        """When the conductor must look again: the earliest time a run may have to be abandoned."""
        with self._lock:
            times = [min(r.abandon_at, r.deadline + self.grace) for r in self._running.values()]
        return min(times) if times else None

    def enforce(self, now: float) -> list[Outcome]:
        """Settle runs whose task outlived its deadline (or interruption) by the grace period."""
        settled: list[Outcome] = []
        with self._lock:
            for run in list(self._running.values()):
                if now < min(run.abandon_at, run.deadline + self.grace) or run.posted:
                    continue
                run.posted = True
                del self._running[run.claimed.execution]
                self.abandoned += 1
                if run.flag == INTERRUPT:
                    settled.append(Outcome(run.claimed, "released"))
                else:
                    settled.append(Outcome.failure(run.claimed, "JobTimeout", "async job abandoned"))
        for outcome in settled:
            outcome.ended_at = self.clock()
        if settled:
            self._loop.call_soon_threadsafe(self._fill)
        return settled

    def interrupt(self, now: float, grace: float) -> None:
        """Cancel every running task (shutdown): their jobs go back without using an attempt."""
        with self._lock:
            for run in self._running.values():
                if run.flag is None:
                    run.flag, run.abandon_at = INTERRUPT, now + grace
        self._loop.call_soon_threadsafe(self._cancel_all)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # -- on the loop's thread -----------------------------------------------------------------
    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.close()

    def _fill(self) -> None:
        while True:
            with self._lock:
                self._fill_due = False
                if not self._buffer or len(self._running) >= self.limit:
                    return
                claimed = self._buffer.popleft()
                claimed.started_at = self.clock()
                run = Running(claimed, time.monotonic() + claimed.timeout)
                self._running[claimed.execution] = run
            run.task = self._loop.create_task(self._run(run), name=f"chumon-job-{claimed.job_id}")

    def _cancel_all(self) -> None:
        with self._lock:
            tasks = [r.task for r in self._running.values() if r.flag == INTERRUPT and r.task]
        for task in tasks:
            task.cancel()

    async def _run(self, run: Running) -> None:
        claimed = run.claimed
        try:
            self.began(claimed)
            outcome = await self._attempt(run)
        except asyncio.CancelledError:  # interrupted before or outside the handler
            outcome = Outcome(claimed, "released")
        except Exception as exc:  # a bug of ours must not be lost: the job fails instead
            self.executor.log.exception("job %s: the runtime failed to run it", claimed.job_id)
            outcome = Outcome.failure(claimed, "RuntimeFault", f"{type(exc).__name__}: {exc}")
        if run.flag == INTERRUPT:
            outcome = Outcome(claimed, "released")
        outcome.ended_at = self.clock()
        with self._lock:
            if run.posted:  # abandoned meanwhile: settled already
                return
            run.posted = True
            self._running.pop(claimed.execution, None)
        self.post(outcome)
        self._fill()

    async def _attempt(self, run: Running) -> Outcome:
        prepared = self.executor.prepare(run.claimed, self.redis)
        if isinstance(prepared, Outcome):
            return prepared
        _, job_type, payload, _, _ = prepared
        timeout = asyncio.timeout(run.claimed.timeout)
        try:
            async with timeout:
                value = await _call(prepared)
        except TimeoutError as exc:
            if timeout.expired():
                return Outcome(run.claimed, "failed", job_type, payload).timed_out()
            return self.executor.failed(prepared, exc)
        except asyncio.CancelledError as exc:
            if run.flag == INTERRUPT:
                raise
            return self.executor.failed(prepared, exc)
        except Exception as exc:  # the job's failure is an outcome
            return self.executor.failed(prepared, exc)
        if timeout.expired():  # it swallowed the cancellation: the time limit still wins
            return Outcome(run.claimed, "failed", job_type, payload).timed_out()
        return self.executor.succeeded(prepared, value)


async def _call(prepared: Prepared) -> object:
    _, job_type, _, model, ctx = prepared
    return await job_type.handler(model, ctx)
