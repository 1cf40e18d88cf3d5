"""The jobs of ``python -m bench.slots``: I/O waits and CPU burns, in each kind of slot.

- ``slots.sleep`` / ``slots.await``: wait ``ms`` milliseconds (``time.sleep`` in a thread
  slot, ``await asyncio.sleep`` on the event loop): an I/O-bound job, the wait standing for a
  network call.
- ``slots.burn`` / ``slots.burn_isolated``: pure-Python arithmetic for ``seconds`` of wall
  time, holding the GIL the whole time, in a thread slot or in a child process.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from workers import JobContext, JobRegistry

registry = JobRegistry()
IO_QUEUE = "io"
CPU_QUEUE = "cpu"


class Wait(BaseModel):
    ms: float


class Burn(BaseModel):
    seconds: float


@registry.job("slots.sleep", queue=IO_QUEUE)
def sleep(payload: Wait, ctx: JobContext) -> None:
    time.sleep(payload.ms / 1000)


@registry.job("slots.await", queue=IO_QUEUE)
async def wait(payload: Wait, ctx: JobContext) -> None:
    await asyncio.sleep(payload.ms / 1000)


def _burn(seconds: float) -> int:
    end, total = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for i in range(10_000):
            total += i * i % 7
    return total


@registry.job("slots.burn", queue=CPU_QUEUE, timeout=600)
def burn(payload: Burn, ctx: JobContext) -> int:
    return _burn(payload.seconds)


@registry.job("slots.burn_isolated", queue=CPU_QUEUE, timeout=600, isolated=True)
def burn_isolated(payload: Burn, ctx: JobContext) -> int:
    return _burn(payload.seconds)
