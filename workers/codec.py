"""The job hash, written and read in rq's format with JSON as the only serializer.

A chumon job is an ordinary rq job hash (``rq:job:<id>``) that rq's ``Job.fetch(...,
serializer=JSONSerializer)`` restores, so rq's tools can show it:

- ``data``: ``["<job type>", null, [<payload>], {}]`` as JSON (rq's func/instance/args/kwargs).
  Never zlib-compressed by chumon; rq's compressed form is accepted when reading.
- rq's own fields: ``created_at``, ``enqueued_at``, ``origin``, ``description``, ``status``,
  ``timeout``, ``started_at``, ``ended_at``, ``worker_name``, ``result_ttl``, ``meta``.
- chumon's fields, which rq ignores: ``attempt`` (attempts started), ``execution`` (the run
  that owns the job now), ``retry`` (a per-job RetryPolicy override, JSON), ``effect_key``
  (``<job type>:<idempotency key>``), ``dead_lettered_at``.

``meta`` (JSON, shown by rq-dashboard) carries the attempt number, the failure history and the
next run time once a job has failed at least once.

Nothing here, or anywhere in chumon, unpickles: data that looks like a pickle is refused
with a reason, and the job is dead-lettered by the worker.
"""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

RQ_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
DESCRIPTION_LIMIT = 120
MESSAGE_LIMIT = 1_000
TRACEBACK_LIMIT = 4_000
HISTORY_LIMIT = 20


def text(value: bytes | str) -> str:
    """A Redis reply as str (redis-py types replies as bytes or str). Raises on bytes that are not
    UTF-8: use it for values chumon wrote itself, and ``readable``/``names`` for anything else."""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: Any) -> list[str]:
    """A list reply (LRANGE, ZRANGE, SMEMBERS...) as str; redis-py types those replies loosely."""
    return [text(value) for value in values]


def readable(value: bytes | str | None) -> str | None:
    """A value read from Redis as str, or None if it is absent or not UTF-8 (garbage)."""
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def shown(value: bytes | str | None) -> str:
    """Any value read from Redis as printable text, for logs and error messages (never raises)."""
    if value is None:
        return ""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")[:200]


def names(values: Any, *, what: str, log: Any = None) -> list[str]:
    """Members of a registry (SMEMBERS, ZRANGE...) that are readable names; garbage is skipped
    and, given a logger, reported once per call."""
    found, garbage = [], []
    for value in values:
        name = readable(value)
        if name is None:
            garbage.append(value)
        else:
            found.append(name)
    if garbage and log is not None:
        log.warning("%d unreadable member(s) of %s skipped: %s", len(garbage), what,
                    ", ".join(shown(g) for g in garbage[:3]))  # fmt: skip
    return found


def loads(raw: bytes | str) -> Any:
    """``json.loads`` for untrusted data: any failure (bad UTF-8, bad JSON, nesting too deep for
    Python's stack) is a ValueError."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not usable JSON: nested too deeply") from None


def raw_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class BadJob(Exception):
    """A job in Redis that cannot be run as it is: undecodable, pickled, unknown or invalid."""


def iso(ts: float) -> str:
    """A Unix time in rq's timestamp format."""
    return datetime.fromtimestamp(ts, UTC).strftime(RQ_TIMESTAMP)


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, RQ_TIMESTAMP).replace(tzinfo=UTC)


def encode_data(job_type: str, payload_json: str) -> str:
    """``data`` for a payload already dumped as JSON (the enqueue path dumps it once, for the
    description too)."""
    return f"[{json.dumps(job_type)},null,[{payload_json}],{{}}]"


def describe(job_type: str, payload_json: str) -> str:
    """rq's ``description`` field: a readable call string, bounded in size."""
    text = f"{job_type}({payload_json})"
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 4] + "...)"
    return text


def decode_data(raw: bytes | None) -> tuple[str, dict[str, Any]]:
    """The job type name and payload of a job's ``data``; raises BadJob saying what is wrong."""
    if not raw:
        raise BadJob("job has no data field")
    if raw[:1] == b"x":  # zlib header: rq compresses data it writes itself
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
    if raw[:1] == b"\x80":
        raise BadJob(
            "job data is a pickle (protocol header 0x80); chumon runs JSON jobs only and never unpickles"
        )
    try:
        decoded = loads(raw)
    except ValueError as exc:
        raise BadJob(f"job data is {exc}") from None
    if not (isinstance(decoded, list) and len(decoded) == 4 and isinstance(decoded[0], str)):
        raise BadJob("job data is not [job_type, instance, args, kwargs]")
    name, _instance, args, kwargs = decoded
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict) and not kwargs:
        return name, args[0]
    if args == [] and isinstance(kwargs, dict):
        return name, kwargs
    raise BadJob("job data must carry one payload object, as args=[payload] or as kwargs")


def size_over(text: str, limit: int) -> int | None:
    """The size of ``text`` in UTF-8 bytes if it is more than ``limit``, else None; encodes only
    text long enough to be over (a character is at most 4 bytes)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text) if text.isascii() else len(text.encode())
    return size if size > limit else None


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


def encode_result(value: Any) -> str:
    """A job's return value as the base64 JSON rq keeps in ``rq:results:<id>``; '' for None."""
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"job result is not JSON serializable: {exc}") from None
    return base64.b64encode(text.encode()).decode()


def decode_result(b64: bytes | str | None) -> Any:
    if not b64:
        return None
    return loads(base64.b64decode(b64))


def encode_exc_string(text: str) -> str:
    """rq's encoding of a result's ``exc_string``: base64 of zlib."""
    return base64.b64encode(zlib.compress(text.encode())).decode()


def decode_exc_string(b64: bytes | str) -> str:
    return zlib.decompress(base64.b64decode(b64)).decode()


def decode_meta(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        meta = loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def clip(text: str, limit: int, *, keep_tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    marker = f"...[{len(text) - limit} chars cut]..."
    return marker + text[-limit:] if keep_tail else text[:limit] + marker


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as kept in the job's history (bounded in size)."""

    attempt: int
    exc_type: str
    message: str
    traceback: str
    started_at: str
    ended_at: str
    worker: str

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "exc_type": self.exc_type,
            "message": clip(self.message, MESSAGE_LIMIT),
            "traceback": clip(self.traceback, TRACEBACK_LIMIT, keep_tail=True),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "worker": self.worker,
        }


def append_failure(meta: dict[str, Any], failure: Failure) -> list[dict[str, Any]]:
    """The failure history with ``failure`` added; the first and latest entries survive the bound."""
    history = list(meta.get("failures") or [])
    history.append(failure.to_json())
    if len(history) > HISTORY_LIMIT:
        history = history[:1] + history[-(HISTORY_LIMIT - 1) :]
    return history


def history_text(history: list[dict[str, Any]]) -> str:
    """The failure history as one text, for rq's ``exc_string`` (what rq-dashboard shows)."""
    parts = []
    for entry in history:
        head = f"attempt {entry.get('attempt')} at {entry.get('ended_at')} on {entry.get('worker')}"
        parts.append(
            f"--- {head}: {entry.get('exc_type')}: {entry.get('message')}\n{entry.get('traceback', '')}"
        )
    return "\n".join(parts)
