"""Reading a job back: status, attempts, failure history, next run, result."""

from __future__ import annotations

import binascii
import json
import zlib
from typing import Any

from pydantic import BaseModel
from redis import Redis

from workers.codec import BadJob, decode_data, decode_exc_string, decode_meta, decode_result, readable
from workers.keys import Keys


class JobInfo(BaseModel):
    """One job as an operator or an app sees it (``chumon job show --json`` prints this)."""

    id: str
    job_type: str | None
    queue: str
    status: str
    attempt: int
    max_attempts: int | None
    payload: dict[str, Any] | None
    description: str
    created_at: str | None
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    next_run_at: str | None
    dead_lettered_at: str | None
    dead_letter_reason: str | None
    last_error: str | None
    failures: list[dict[str, Any]]
    result: Any = None
    worker: str | None
    problem: str | None = None
    progress: Any = None  # what the job last reported (ctx.progress)
    logs: list[str] = []  # its last log lines (ctx.log), oldest first


def _s(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


def _whole(value: bytes | None) -> int:
    text = readable(value) or ""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def load_job(redis: Redis, keys: Keys, job_id: str) -> JobInfo | None:
    """The job with this id, or None; never raises on a malformed job (it says what is wrong)."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.xrevrange(keys.results(job_id), count=1)
        pipe.lrange(keys.job_logs(job_id), 0, -1)
        raw, results, logs = pipe.execute(raise_on_error=False)
    if isinstance(raw, Exception):
        return _unreadable(job_id, f"its key is not a job hash: {raw}")
    if not raw:
        return None
    if isinstance(results, Exception):
        results = []
    fields: dict[str, bytes] = {k.decode(errors="replace"): v for k, v in raw.items()}
    job_type: str | None = None
    payload: dict[str, Any] | None = None
    problem: str | None = None
    try:
        job_type, payload = decode_data(fields.get("data"))
    except BadJob as exc:
        problem = str(exc)
    meta = decode_meta(fields.get("meta"))
    result: Any = None
    failures = meta.get("failures")
    failures = [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []
    if results:
        _id, entry = results[0]
        try:
            if entry.get(b"type") == b"1":
                result = decode_result(entry.get(b"return_value"))
            elif not failures and entry.get(b"exc_string"):
                failures = [{"message": decode_exc_string(entry[b"exc_string"])}]
        except (ValueError, binascii.Error, zlib.error, UnicodeDecodeError) as exc:
            problem = problem or f"its result cannot be read: {exc}"
    if result is None and fields.get("return_value"):  # CHUMON_RESULT_STORE=hash
        try:
            result = decode_result(fields["return_value"])
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            problem = problem or f"its result cannot be read: {exc}"
    max_attempts = meta.get("max_attempts")
    return JobInfo(
        id=job_id,
        job_type=job_type,
        queue=_s(fields.get("origin")) or "",
        status=_s(fields.get("status")) or "unknown",
        attempt=_whole(fields.get("attempt")),
        max_attempts=max_attempts if isinstance(max_attempts, int) else None,
        payload=payload,
        description=_s(fields.get("description")) or "",
        created_at=_s(fields.get("created_at")),
        enqueued_at=_s(fields.get("enqueued_at")),
        started_at=_s(fields.get("started_at")),
        ended_at=_s(fields.get("ended_at")),
        next_run_at=_str(meta.get("next_run_at")),
        dead_lettered_at=_s(fields.get("dead_lettered_at")),
        dead_letter_reason=_str(meta.get("dead_letter_reason")),
        last_error=_str(meta.get("last_error")),
        failures=failures,
        result=result,
        worker=_s(fields.get("worker_name")),
        problem=problem,
        progress=_progress(fields.get("progress")),
        logs=[line.decode(errors="replace") for line in logs] if isinstance(logs, list) else [],
    )


def _progress(raw: bytes | None) -> Any:
    """The job's last progress, or None; a value that is not JSON is shown as its text."""
    if not raw:
        return None
    text = raw.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _unreadable(job_id: str, problem: str) -> JobInfo:
    return JobInfo(
        id=job_id, job_type=None, queue="", status="unknown", attempt=0, max_attempts=None, payload=None,
        description="", created_at=None, enqueued_at=None, started_at=None, ended_at=None,
        next_run_at=None, dead_lettered_at=None, dead_letter_reason=None, last_error=None, failures=[],
        worker=None, problem=problem,
    )  # fmt: skip
