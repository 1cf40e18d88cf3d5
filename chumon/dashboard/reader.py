"""What the dashboard reads from Redis, decoded at this one boundary; nothing here raises on bad data.

rq-dashboard 0.9 reads every job through rq's ``Job.fetch``: it refuses ids outside
``[A-Za-z0-9_-]`` (a ValueError, so HTTP 500 for a whole list), unpickles ``meta`` with rq's
default serializer and raises on any garbled field. Here each key is read raw and every value
decoded on its own, so a bad field becomes a note on its job (``problems``) and a bad job a
row that says what is wrong; the page around it still answers. Redis errors (the server is
down) are the only exceptions that leave this module.

Keys: the runtime's through ``workers.keys.Keys``; rq's registries as rq's own registry
classes spell them (``key_template``), since chumon's ``Keys`` has no deferred or canceled
registry.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse

from workers.codec import BadJob, decode_data
from workers.keys import Keys, dead_letter_queue, is_dead_letter_queue, origin_of_dead_letter_queue

REGISTRIES: dict[str, str] = {
    "scheduled": ScheduledJobRegistry.key_template,
    "deferred": DeferredJobRegistry.key_template,
    "started": StartedJobRegistry.key_template,
    "finished": FinishedJobRegistry.key_template,
    "failed": FailedJobRegistry.key_template,
    "canceled": CanceledJobRegistry.key_template,
}
LISTS = ("queued", *REGISTRIES)  # the order of rq-dashboard's registry selector
PICKLE = b"\x80"  # the protocol header of every pickle since protocol 2


def text(raw: bytes | str | None) -> str | None:
    """A Redis value as text; bytes that are not UTF-8 are shown, not dropped."""
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "backslashreplace")


def iso_date(raw: bytes | str | None) -> str | None:
    """rq's timestamp as ISO 8601 with its offset (what rq-dashboard's pages parse); None if garbled."""
    value = text(raw)
    if not value:
        return None
    try:
        return utcparse(value).isoformat()
    except ValueError:
        return None


@dataclass(frozen=True)
class QueueCounts:
    name: str
    queued: int
    registries: dict[str, int]

    @property
    def dead_letter(self) -> bool:
        return is_dead_letter_queue(self.name)

    @property
    def origin(self) -> str | None:
        return origin_of_dead_letter_queue(self.name) if self.dead_letter else None


class Reader:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # -- queues -----------------------------------------------------------------------------
    def queue_names(self) -> list[str]:
        """Every queue rq knows (``rq:queues``), dead-letter queues included, sorted."""
        names = {text(member) or "" for member in self.redis.smembers(self.keys.RQ_QUEUES)}
        prefix = self.keys.RQ_QUEUE
        return sorted(name[len(prefix) :] if name.startswith(prefix) else name for name in names)

    def queues(self) -> list[QueueCounts]:
        names = self.queue_names()
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.keys.queue(name))
                for template in REGISTRIES.values():
                    pipe.zcard(template.format(name))
            counts = pipe.execute()
        width = 1 + len(REGISTRIES)
        return [
            QueueCounts(
                name,
                int(counts[i * width]),
                {r: int(counts[i * width + 1 + j]) for j, r in enumerate(REGISTRIES)},
            )
            for i, name in enumerate(names)
        ]

    def count(self, queue: str, registry: str) -> int:
        if registry == "queued":
            return int(self.redis.llen(self.keys.queue(queue)))
        return int(self.redis.zcard(REGISTRIES[registry].format(queue)))

    def job_ids(self, queue: str, registry: str, start: int, stop: int, *, descending: bool) -> list[str]:
        """Ids at positions [start, stop) of a queue (head first) or a registry (oldest score first)."""
        ids: list[Any]
        if registry == "queued":
            key = self.keys.queue(queue)
            if descending:  # counted from the tail
                ids = list(reversed(self.redis.lrange(key, -stop, -start - 1)))
            else:
                ids = list(self.redis.lrange(key, start, stop - 1))
        else:
            ids = list(
                self.redis.zrange(REGISTRIES[registry].format(queue), start, stop - 1, desc=descending)
            )
        found = [text(i) or "" for i in ids]
        if registry == "started":  # rq 2 keeps "<job id>:<execution id>" there
            found = [i.rpartition(":")[0] or i for i in found]
        return found

    # -- jobs -------------------------------------------------------------------------------
    def job(self, job_id: str) -> JobDocument | None:
        """The job as its hash and its latest result say; None if it has no hash."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.xrevrange(self.keys.results(job_id), count=1)
            pipe.lrange(self.keys.job_logs(job_id), 0, -1)
            raw, results, logs = pipe.execute()
        if not raw:
            return None
        fields = {(text(k) or ""): v for k, v in raw.items()}
        latest = {(text(k) or ""): v for k, v in results[0][1].items()} if results else {}
        if not latest and fields.get("return_value"):  # CHUMON_RESULT_STORE=hash: on the job hash
            latest = {"type": b"1", "return_value": fields["return_value"]}
        origin = text(fields.get("origin")) or ""
        dead_letter = False
        if origin and not is_dead_letter_queue(origin):
            dead_letter = self.redis.lpos(self.keys.queue(dead_letter_queue(origin)), job_id) is not None
        return JobDocument(job_id, fields, latest, dead_letter, [text(line) or "" for line in logs])

    def jobs(self, job_ids: list[str]) -> list[JobDocument | None]:
        return [self.job(job_id) for job_id in job_ids]

    # -- workers ----------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """rq's worker hashes, as rq-dashboard's Workers view expects them, sorted as it sorts."""
        names = sorted(text(member) or "" for member in self.redis.smembers(self.keys.RQ_WORKERS))
        with self.redis.pipeline(transaction=False) as pipe:
            for key in names:
                pipe.hgetall(key)
            hashes = pipe.execute()
        workers = []
        for key, raw in zip(names, hashes, strict=True):
            fields = {(text(k) or ""): v for k, v in raw.items()}
            name = key[len(self.keys.RQ_WORKER) :] if key.startswith(self.keys.RQ_WORKER) else key
            current = text(fields.get("current_job"))
            queues = text(fields.get("queues")) or ""
            workers.append(
                {
                    "name": name,
                    "pid": _int(fields.get("pid")),
                    "queues": [q for q in queues.split(",") if q],
                    "state": text(fields.get("state")) or "?",
                    "current_job": self._current_job(current) if current else "idle",
                    "last_heartbeat": iso_date(fields.get("last_heartbeat")),
                    "birth_date": iso_date(fields.get("birth")),
                    "successful_job_count": _int(fields.get("successful_job_count")),
                    "failed_job_count": _int(fields.get("failed_job_count")),
                    "total_working_time": _float(fields.get("total_working_time")),
                    "version": text(fields.get("version")) or "",
                    "python_version": text(fields.get("python_version")) or "",
                }
            )
        return sorted(workers, key=lambda w: (w["state"], w["queues"], w["name"]))

    def _current_job(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.hmget(self.keys.job(job_id), ["description", "created_at"])
        description = text(raw[0]) if raw[0] is not None else f"(job {job_id} is gone)"
        return {
            "job_id": job_id,
            "description": description,
            "created_at": iso_date(raw[1]),
            "call_string": description,
        }


class JobDocument:
    """One job's raw fields and latest result, decoded field by field on demand."""

    def __init__(
        self,
        job_id: str,
        fields: dict[str, bytes],
        latest: dict[str, bytes],
        dead_letter: bool,
        logs: list[str] | None = None,
    ):
        self.id = job_id
        self.logs = logs or []  # the job's last log lines (ctx.log), oldest first
        self.fields = fields
        self.latest = latest
        self.dead_letter = dead_letter
        self.problems: list[str] = []

    def field(self, name: str) -> str | None:
        return text(self.fields.get(name))

    @property
    def origin(self) -> str:
        return self.field("origin") or ""

    def summary(self) -> dict[str, Any]:
        """A row of rq-dashboard's job lists (its ``serialize_job``), plus chumon's markers."""
        return {
            "id": self.id,
            "created_at": iso_date(self.fields.get("created_at")),
            "started_at": iso_date(self.fields.get("started_at")),
            "ended_at": iso_date(self.fields.get("ended_at")),
            "exc_info": self.exc_info(),
            "description": self.field("description") or "(no description)",
            "status": self.field("status") or "?",
            "origin": self.origin,
            "dead_letter": self.dead_letter,
        }

    def details(self) -> dict[str, Any]:
        """The job page (rq-dashboard's ``job_info``), plus job type, payload and problems."""
        job_type, payload = self.data()
        document = {
            **self.summary(),
            "enqueued_at": iso_date(self.fields.get("enqueued_at")),
            "result": showable(self.result()),
            "metadata": self.metadata(),
            "job_type": job_type,
            "payload": showable(payload),
            "attempt": self.field("attempt"),
            "worker_name": self.field("worker_name"),
            "dead_lettered_at": self.field("dead_lettered_at"),
            "dead_letter_queue": dead_letter_queue(self.origin) if self.dead_letter else None,
            "progress": showable(self.progress()),
            "logs": self.logs,
        }
        document["problems"] = self.problems
        return document

    def progress(self) -> Any:
        """What the job last reported (ctx.progress), decoded; text if it is not JSON."""
        raw = self.fields.get("progress")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return text(raw)

    def data(self) -> tuple[str | None, Any]:
        try:
            return decode_data(self.fields.get("data"))
        except BadJob as exc:
            self.problems.append(str(exc))
        except RecursionError:
            self.problems.append("job data is nested too deeply to read")
        return None, None

    def metadata(self) -> str | None:
        """``meta`` as indented JSON text (as rq-dashboard shows it); a pickle is never loaded."""
        raw = self.fields.get("meta")
        if not raw:
            return None
        if raw.startswith(PICKLE):
            self.problems.append("meta is a pickle: chumon never unpickles, so it is not shown")
            return None
        try:
            return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self.problems.append(f"meta is not JSON ({exc.__class__.__name__}): shown as text")
            return text(raw)

    def exc_info(self) -> str | None:
        """The latest failure's text (rq keeps it base64 of zlib in the result stream)."""
        raw = self.latest.get("exc_string")
        if not raw:
            return None
        try:
            return zlib.decompress(base64.b64decode(raw, validate=True)).decode("utf-8", "backslashreplace")
        except (binascii.Error, zlib.error, ValueError):
            self.problems.append("the latest result's exc_string is garbled: shown raw")
            return text(raw)

    def result(self) -> Any:
        """The latest successful run's return value (base64 of JSON); the garbled text if garbled."""
        raw = self.latest.get("return_value")
        if self.latest.get("type") != b"1" or not raw:
            return None
        try:
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            self.problems.append("the result is not base64: shown raw")
            return text(raw)
        if decoded.startswith(PICKLE):
            self.problems.append("the result is a pickle: chumon never unpickles, so it is not shown")
            return None
        try:
            return json.loads(decoded)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            self.problems.append("the result is not JSON: shown as text")
            return text(decoded)


def showable(value: Any) -> Any:
    """``value`` if it can be written back as JSON; a note if it is nested too deeply for that."""
    try:
        json.dumps(value)
    except (RecursionError, ValueError):
        return "(nested too deeply to show)"
    return value


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _float(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
