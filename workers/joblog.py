"""One log line per job state change, on the ``chumon.jobs`` logger.

Each line names the event, the job type, the job id, its queue and attempt, plus the
payload fields its job type lists in ``log_fields`` (the order flow adds ``order_id``); the
same fields travel as ``record.job`` for the JSON formatter. Lines are built only when the
logger is enabled for INFO: at thousands of jobs a second, raise its level
(``CHUMON_LOG_JOBS=false``) and keep the metrics.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("chumon.jobs")


def job_event(
    event: str,
    *,
    job_id: str,
    queue: str,
    job_type: str | None,
    attempt: int,
    context: dict[str, Any] | None = None,
    detail: str = "",
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "event": event,
        "job_id": job_id,
        "queue": queue,
        "job_type": job_type,
        "attempt": attempt,
    }
    if context:
        fields.update(context)
    extra = "".join(f" {k}={v}" for k, v in (context or {}).items())
    tail = f": {detail}" if detail else ""
    log.info(
        "%s %s %s queue=%s attempt=%d%s%s", event, job_type or "?", job_id, queue, attempt, extra, tail,
        extra={"job": fields},
    )  # fmt: skip


def context_of(fields: tuple[str, ...], payload: dict[str, Any] | None) -> dict[str, Any]:
    if not fields or not payload:
        return {}
    return {name: payload[name] for name in fields if name in payload}
