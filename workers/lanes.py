"""Where a claimed job runs: a runner thread, or the event loop for ``async def`` handlers.

``Lanes`` gives the conductor one object with the runner threads' interface (submit, take
back the buffered, enforce time limits, interrupt, stop) over both kinds of slot. A job goes to
the event loop when its ``job_type`` field names an async job type of the registry; anything
else (a plain handler, a job without the field) goes to the threads. A worker whose registry
has no async job type starts no loop, and submitting costs what it did before.
"""

from __future__ import annotations

from workers.aio import AsyncRunners
from workers.execution import Claimed, Outcome
from workers.isolation import ChildPool
from workers.runner import Runners


class Lanes:
    def __init__(
        self,
        threads: Runners,
        aio: AsyncRunners | None = None,
        async_types: frozenset[str] = frozenset(),
        pool: ChildPool | None = None,
    ) -> None:
        self.threads = threads
        self.aio = aio if async_types else None
        self.async_types = async_types
        self.pool = pool
        self.submit = self._route if self.aio is not None else threads.submit

    @property
    def abandoned(self) -> int:
        return self.threads.abandoned + (self.aio.abandoned if self.aio else 0)

    def _route(self, claimed: Claimed) -> None:
        if self.aio is not None and claimed.job_type in self.async_types:
            self.aio.submit(claimed)
        else:
            self.threads.submit(claimed)

    def start(self) -> None:
        self.threads.start()
        if self.aio:
            self.aio.start()

    def take_buffered(self) -> list[Claimed]:
        return self.threads.take_buffered() + (self.aio.take_buffered() if self.aio else [])

    def running(self) -> list[Claimed]:
        return self.threads.running() + (self.aio.running() if self.aio else [])

    def next_deadline(self) -> float | None:
        times = [self.threads.next_deadline(), self.aio.next_deadline() if self.aio else None]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def enforce(self, now: float) -> list[Outcome]:
        return self.threads.enforce(now) + (self.aio.enforce(now) if self.aio else [])

    def interrupt(self, now: float, grace: float) -> None:
        self.threads.interrupt(now, grace)
        if self.aio:
            self.aio.interrupt(now, grace)

    def stop(self) -> None:
        self.threads.stop()
        if self.aio:
            self.aio.stop()
        if self.pool:
            self.pool.close()
