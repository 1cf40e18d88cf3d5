"""One log line per job state change, kept off the hot path.

Each line names the event (started, succeeded, retried, dead_lettered, released, duplicate,
deferred, recovered-*), the job type, the job id, its queue and attempt, plus the payload
fields its job type lists in ``log_fields`` (the order flow adds ``order_id``).

Recording a line costs a tuple on a queue (runner threads record "started"). The worker's
conductor writes what was recorded once per batch (``flush``), through the *sink*: by
default one ``logging`` record per line on the ``chumon.jobs`` logger, or, once the
command line's logging is configured (chumon/logs.py), a sink that formats the whole batch
and writes it in one call, masked like every other line. Nothing is recorded while the
``chumon.jobs`` logger is disabled for INFO (``CHUMON_LOG_JOBS=false``) but dead letters,
which are logged at WARNING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

log = logging.getLogger("chumon.jobs")

WARNING_EVENTS = frozenset({"dead_lettered"})  # a person may have to act: logged at WARNING


def level_of(event: str) -> int:
    return logging.WARNING if event in WARNING_EVENTS else logging.INFO


class JobLine(NamedTuple):
    at: float
    event: str
    job_id: str
    queue: str
    job_type: str | None
    attempt: int
    context: dict[str, Any]
    detail: str

    def fields(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "job_id": self.job_id,
            "queue": self.queue,
            "job_type": self.job_type,
            "attempt": self.attempt,
            **self.context,
        }

    @property
    def level(self) -> int:
        return logging.WARNING if self.event in WARNING_EVENTS else logging.INFO

    @property
    def level_name(self) -> str:
        return "WARNING" if self.event in WARNING_EVENTS else "INFO"

    def text(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.context.items())
        tail = f": {self.detail}" if self.detail else ""
        head = f"{self.event} {self.job_type or '?'} {self.job_id}"
        return f"{head} queue={self.queue} attempt={self.attempt}{extra}{tail}"


Sink = Callable[[list[JobLine]], None]


def logging_sink(lines: list[JobLine]) -> None:
    """One ``logging`` record per line (what a library user's own logging set-up receives)."""
    for line in lines:
        record = log.makeRecord(
            log.name, line.level, __file__, 0, line.text(), (), None, extra={"job": line.fields()}
        )
        record.created, record.msecs = line.at, (line.at % 1) * 1000
        log.handle(record)


_sink: Sink = logging_sink


def set_sink(sink: Sink | None) -> None:
    """Where flushed lines go (chumon/logs.py installs its batched writer); None: the default."""
    global _sink
    _sink = sink or logging_sink


class JobLog:
    """The lines of one worker: recorded from any thread, written by ``flush``."""

    def __init__(self) -> None:
        self._lines: SimpleQueue[JobLine] = SimpleQueue()

    def record(
        self,
        event: str,
        *,
        job_id: str,
        queue: str,
        job_type: str | None,
        attempt: int,
        context: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        if log.isEnabledFor(logging.WARNING if event in WARNING_EVENTS else logging.INFO):
            self._lines.put(
                JobLine(time.time(), event, job_id, queue, job_type, attempt, context or {}, detail)
            )

    def flush(self) -> None:
        lines: list[JobLine] = []
        try:
            while True:
                lines.append(self._lines.get_nowait())
        except Empty:
            pass
        if lines:
            try:
                _sink(lines)
            except Exception:  # logging is never a reason for a worker to stop
                log.debug("job lines could not be written", exc_info=True)


def context_of(fields: tuple[str, ...], payload: dict[str, Any] | None) -> dict[str, Any]:
    if not fields or not payload:
        return {}
    return {name: payload[name] for name in fields if name in payload}
