"""Reading a job back: status, attempts, failure history, next run, result."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from redis import Redis

from workers.codec import BadJob, decode_data, decode_exc_string, decode_meta, decode_result
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


def _s(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


def load_job(redis: Redis, keys: Keys, job_id: str) -> JobInfo | None:
    """The job with this id, or None; never raises on a malformed job (it says what is wrong)."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.xrevrange(keys.results(job_id), count=1)
        raw, results = pipe.execute()
    if not raw:
        return None
    fields: dict[str, bytes] = {k.decode(): v for k, v in raw.items()}
    job_type: str | None = None
    payload: dict[str, Any] | None = None
    problem: str | None = None
    try:
        job_type, payload = decode_data(fields.get("data"))
    except BadJob as exc:
        problem = str(exc)
    meta = decode_meta(fields.get("meta"))
    result: Any = None
    if results:
        _id, entry = results[0]
        if entry.get(b"type") == b"1":
            result = decode_result(entry.get(b"return_value"))
        elif not meta.get("failures") and entry.get(b"exc_string"):
            meta["failures"] = [{"message": decode_exc_string(entry[b"exc_string"])}]
    return JobInfo(
        id=job_id,
        job_type=job_type,
        queue=_s(fields.get("origin")) or "",
        status=_s(fields.get("status")) or "unknown",
        attempt=int(fields.get("attempt") or 0),
        max_attempts=meta.get("max_attempts"),
        payload=payload,
        description=_s(fields.get("description")) or "",
        created_at=_s(fields.get("created_at")),
        enqueued_at=_s(fields.get("enqueued_at")),
        started_at=_s(fields.get("started_at")),
        ended_at=_s(fields.get("ended_at")),
        next_run_at=meta.get("next_run_at"),
        dead_lettered_at=_s(fields.get("dead_lettered_at")),
        dead_letter_reason=meta.get("dead_letter_reason"),
        last_error=meta.get("last_error"),
        failures=list(meta.get("failures") or []),
        result=result,
        worker=_s(fields.get("worker_name")),
        problem=problem,
    )
