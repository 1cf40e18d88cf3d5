"""Isolated job types: each attempt runs in a child process (BullMQ's sandboxed processors).

``registry.job(..., isolated=True)`` is for CPU-bound work. In a thread slot such a handler
holds the GIL from every other slot and the conductor; in a child process it holds its own.
And whatever the child does (``os._exit``, a segfault in C code, running out of memory) the
worker lives: the attempt fails with ``ProcessDied`` and the retry policy decides what follows.

How: the runner thread that took the job sends it to an idle child of this worker's
``ChildPool`` (started on demand, at most one per thread slot, kept for the next job) and waits
for the reply, so an isolated job occupies its slot as any other job does. Children are plain
``python -m workers.child`` processes (a fresh interpreter, as multiprocessing's *spawn*
start method gives): nothing is inherited from the worker's threads, and nothing is
pickled. Requests and replies are JSON lines on the child's stdin and stdout; the child's
own prints go to the worker's stderr. The handler is imported in the child by its module and
name, so it must be a module-level function; its payload and result are JSON. A handler of
the script being run (``python app.py``) is found as multiprocessing's *spawn* finds it: the
child runs the script under another name than ``__main__``, so the script must keep what it
does (enqueue, run a worker) under ``if __name__ == "__main__":``.

- **Time limit:** the runner raises ``JobTimeout`` into the waiting thread at the deadline,
  and the child is killed (SIGKILL) at once: CPU-bound code never needs the grace period.
- **Shutdown** (``Interrupted``) kills the child too, and the job goes back to its queue.
- **Cancellation** (``chumon job cancel``): the child is killed and the job ends canceled,
  so ``ctx.cancelled`` is not needed (nor seen) in an isolated handler.
- ``ctx.effects`` works (the child records, the worker applies them with the completion);
  ``ctx.redis`` and ``ctx.enqueuer`` are the child's own clients; ``ctx.progress`` and
  ``ctx.log("line")`` write to the job from the child.
- A child that raised ``MemoryError`` reports it and exits; a fresh one takes the next job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from workers.errors import Cancelled, RateLimited
from workers.execution import Encoded, IsolatedFailure
from workers.jobtypes import JobContext, JobType
from workers.settings import RuntimeSettings

POLL = 0.05  # seconds between looks at the cancel flag while a child works
LOG = logging.getLogger("chumon.worker")


class Child:
    """One child process and its two pipes."""

    def __init__(self, settings: RuntimeSettings) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.stdin: IO[bytes] = self.process.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]
        hello = settings.model_dump(mode="json", exclude={"queue_rate_limits", "job_rate_limits"})
        self._send({"settings": hello})

    def _send(self, message: dict[str, Any]) -> None:
        self.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.stdin.flush()

    def ask(self, request: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
        """Send one job and wait for its reply; raises IsolatedFailure if the child dies, Cancelled
        if the job is cancelled meanwhile (the child is killed then)."""
        try:
            self._send(request)
        except OSError:
            raise self._died() from None
        fd = self.stdout.fileno()
        while not select.select([fd], [], [], POLL)[0]:
            if cancel.is_set():
                self.kill()
                raise Cancelled("canceled: its process was stopped")
        line = self.stdout.readline()
        if not line.endswith(b"\n"):
            raise self._died()
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _died(self) -> IsolatedFailure:
        code = self.process.wait()
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return IsolatedFailure("ProcessDied", f"the job's process died: {how}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def close(self) -> None:
        """Ask an idle child to exit (end of its input); kill it if it does not."""
        self._close_pipes()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


class ChildPool:
    """Children of one worker: started on demand, one per running isolated job, kept when idle."""

    def __init__(self, settings: RuntimeSettings, keep: int) -> None:
        self.settings = settings
        self.keep = keep
        self._idle: list[Child] = []
        self._lock = threading.Lock()
        self.started = 0  # children started (a measure of crashes and recycling)

    def call(
        self, job_type: JobType[Any], payload: dict[str, Any], ctx: JobContext, cancel: threading.Event
    ) -> Encoded:
        """Run one attempt of ``job_type`` in a child; raise what the handler raised, as the
        runtime needs it (RateLimited, Cancelled, or IsolatedFailure for the rest)."""
        child = self._take()
        request = {"job": _request(job_type, payload, ctx)}
        try:
            reply = child.ask(request, cancel)
        except BaseException:  # a time-out, shutdown, cancellation, or a death: the child goes
            child.kill()
            raise
        if reply.get("recycle"):
            child.close()
        else:
            self._give_back(child)
        return _result(reply, ctx)

    def _take(self) -> Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.kill()
            self.started += 1
        return Child(self.settings)

    def _give_back(self, child: Child) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(child)
                return
        child.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()


def _request(job_type: JobType[Any], payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    module = job_type.handler.__module__
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if module == "__main__" else None
    return {
        "module": module,
        "path": path,  # a script's handler: the child loads the script under another name
        "name": job_type.handler.__qualname__,
        "payload": payload,
        "ctx": {
            "job_id": ctx.job_id,
            "job_type": ctx.job_type,
            "queue": ctx.queue,
            "attempt": ctx.attempt,
            "max_attempts": ctx.max_attempts,
            "execution_id": ctx.execution_id,
            "idempotency_key": ctx.idempotency_key,
        },
    }


def _result(reply: dict[str, Any], ctx: JobContext) -> Encoded:
    kind = reply.get("kind")
    message = str(reply.get("message", ""))
    if kind == "done":
        ctx.effects.commands.extend(reply.get("effects") or [])
        return Encoded(str(reply.get("result", "")))
    if kind == "rate_limited":
        raise RateLimited(message, delay=float(reply["delay"]))
    if kind == "cancelled":
        raise Cancelled(message)
    delay = reply.get("delay")
    raise IsolatedFailure(
        str(reply.get("exc_type", "IsolatedJobFailed")),
        message,
        tb=str(reply.get("traceback", "")),
        retryable=bool(reply.get("retryable", True)),
        delay=float(delay) if delay is not None else None,
    )
