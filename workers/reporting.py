"""A running job's progress and log lines (``ctx.progress``, ``ctx.log``), kept on the job in Redis.

- ``ctx.progress(value)``: a number, or a small JSON object or list (at most 4 KiB encoded),
  stored in the job hash's ``progress`` field; with job events on, a ``progress`` event too.
- ``ctx.log(line)``: one line appended to the job's log (``Keys.job_logs``), of which the last
  ``job_log_lines`` (100) are kept; a line is cut at 1 KiB and its control characters escaped.
  ``ctx.log`` is also the worker's logger: ``ctx.log.info(...)`` goes to the process's log only.

Each call is one scripted round trip (workers/lua/report.lua) that writes only while this run
owns the job, so a run that was recovered from a silent worker cannot write over its successor.
The log expires with its job: settling gives it the job's own expiry (result_ttl, retention).
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from workers.connection import is_cluster
from workers.keys import Keys, tag_of

if TYPE_CHECKING:
    from redis import Redis

    from workers.scripts import Scripts
    from workers.settings import RuntimeSettings

MAX_PROGRESS_BYTES = 4096
MAX_LINE_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def progress_json(value: Any) -> str:
    """``value`` as the JSON kept on the job; ValueError or TypeError saying why it cannot be."""
    if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
        raise TypeError(f"progress must be a number or a JSON object or list, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"progress must be a finite number, not {value}")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"progress is not plain JSON: {exc}") from None
    if len(text.encode()) > MAX_PROGRESS_BYTES:
        raise ValueError(f"progress is {len(text.encode())} bytes as JSON; at most {MAX_PROGRESS_BYTES}")
    return text


def log_line(line: object) -> str:
    """One log line as kept: control characters escaped (a line stays one line), cut at 1 KiB."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(line))
    raw = text.encode()
    if len(raw) <= MAX_LINE_BYTES:
        return text
    return raw[: MAX_LINE_BYTES - 3].decode(errors="ignore") + "..."


class Reporter:
    """Writes one run's progress and log lines; the methods return False once the run lost its job."""

    __slots__ = ("_client", "_execution", "_job_id", "_queue", "_scripts", "_settings")

    def __init__(
        self,
        scripts: Scripts,
        client: Redis,
        settings: RuntimeSettings,
        job_id: str,
        execution: str,
        queue: str,
    ) -> None:
        # built for every run: it only keeps references until the job reports something
        self._scripts, self._client, self._settings = scripts, client, settings
        self._job_id, self._execution, self._queue = job_id, execution, queue

    def progress(self, value: Any) -> bool:
        return self._send({"progress": progress_json(value)})

    def log(self, line: object) -> bool:
        return self._send({"lines": [log_line(line)]})

    def _send(self, plan: dict[str, Any]) -> bool:
        settings = self._settings
        plan.update(
            id=self._job_id,
            exec=self._execution,
            queue=self._queue,
            max_lines=settings.job_log_lines,
            ttl=settings.dlq_retention,  # until settling gives the log its job's own expiry
            events=settings.events_cap,
        )
        keys = Keys(settings.key_prefix, tag_of(self._queue) if is_cluster(self._client) else None)
        declared = [keys.job(self._job_id), keys.job_logs(self._job_id), keys.events]
        return bool(self._scripts.run("report", plan, client=self._client, keys=declared))


class NoReporter:
    """For a context built outside a worker (a handler called in a test): checks, keeps nothing."""

    def progress(self, value: Any) -> bool:
        progress_json(value)
        return False

    def log(self, line: object) -> bool:
        log_line(line)
        return False


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.log``: call it with a line to keep the line on the job; use it as a logger
    (``ctx.log.info(...)``) to write to the worker's log only."""

    def __init__(self, logger: logging.Logger, reporter: Reporter | NoReporter | None = None) -> None:
        super().__init__(logger, {})
        self.reporter = reporter or NoReporter()

    def __call__(self, line: object) -> bool:
        """Append ``line`` to the job's log; False if this run no longer owns the job."""
        return self.reporter.log(line)
