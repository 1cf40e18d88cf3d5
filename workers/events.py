"""Job lifecycle events, as BullMQ's QueueEvents: every state change of every job, in one
durable Redis stream (``Keys.events``) that app code reads from any process.

Events are opt-in (``CHUMON_JOB_EVENTS=1``): the scripts that change a job's state (enqueue,
step, recover, control; workers/lua) append the event in the same atomic call, so an event
is written if and only if its change is; with events off they write nothing. The stream is
capped at about ``job_events_max_length`` entries (XADD MAXLEN ~): a reader that falls further
behind than that misses the oldest.

Events (``event`` field), each with the job's ``id`` and ``queue``:

- ``queued``, ``delayed`` (enqueued for later); ``active`` (claimed by a worker: ``attempt``,
  ``worker``); ``progress`` (``progress``, the JSON the job reported);
- ``completed`` (``attempt``, or ``duplicate`` for a job whose idempotency key was done);
- ``failed`` (an attempt failed: ``attempt``, ``error``), then ``retrying`` (``delay``) or
  ``dead_lettered``;
- ``stalled`` (its worker died mid-run: ``worker``; then ``failed`` and ``retrying``);
- ``throttled`` (the other side asked to slow down: ``delay``), ``canceled``, ``released``
  (handed back unstarted by a worker that stopped).

Reading: ``JobEvents(redis, settings).read(after=...)`` returns what is there;
``follow(after=...)`` yields events as they come, blocking up to ``block`` seconds per read.
Every event carries its stream ``id``: pass the last one seen as ``after`` to resume exactly
there, in this process or another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from workers.connection import is_cluster
from workers.keys import Keys, tag_of
from workers.settings import RuntimeSettings

EVENTS = (
    "queued", "delayed", "active", "progress", "completed", "failed", "retrying", "dead_lettered",
    "stalled", "throttled", "canceled", "released",
)  # fmt: skip
_STREAM_ID = re.compile(r"^(0|\$|[0-9]{1,20}(-[0-9]{1,20})?)$")


def check_stream_id(text: str) -> str:
    """``text`` if it is an event id (``1733130000000-0``), ``0`` (the oldest kept) or ``$`` (now)."""
    if not _STREAM_ID.match(text):
        raise ValueError(f"{text!r} is not an event id like 1733130000000-0, nor 0 or $")
    return text


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event: its stream id (to resume after), what happened, to which job, and details."""

    id: str
    event: str
    job_id: str
    queue: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def at(self) -> float:
        """When it was written, by the server's clock (Unix time, from the stream id)."""
        return int(self.id.partition("-")[0]) / 1000

    @property
    def progress(self) -> Any:
        """The value a ``progress`` event carries, decoded (None for other events)."""
        raw = self.fields.get("progress")
        return json.loads(raw) if raw is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "job_id": self.job_id, "queue": self.queue, **self.fields}

    @classmethod
    def from_entry(cls, entry_id: bytes | str, raw: dict[Any, Any]) -> JobEvent:
        values = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            id=_text(entry_id),
            event=values.pop("event", ""),
            job_id=values.pop("id", ""),
            queue=values.pop("queue", ""),
            fields=values,
        )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class JobEvents:
    """A reader of the job event stream. Holds no state but the client: share it freely."""

    def __init__(self, redis: Redis, settings: RuntimeSettings, *, queue: str | None = None) -> None:
        """``queue``: on Redis Cluster, each queue's slot has its own stream: the one of ``queue``
        (which holds the events of its queue's group too); on one Redis, ignored."""
        self.redis = redis
        if is_cluster(redis):
            if queue is None:
                raise ValueError("on Redis Cluster each queue's slot has its own event stream: name a queue")
            self.key = Keys(settings.key_prefix, tag_of(queue)).events
        else:
            self.key = Keys(settings.key_prefix).events

    def last_id(self) -> str:
        """The id of the newest event kept, or ``0-0`` if there is none."""
        newest: Any = self.redis.xrevrange(self.key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def read(self, after: str = "0", *, count: int = 100, block: float | None = None) -> list[JobEvent]:
        """Up to ``count`` events after id ``after`` (``0``: from the oldest kept), oldest first;
        waiting up to ``block`` seconds for one if there is none yet."""
        start = self.last_id() if after == "$" else check_stream_id(after)
        ms = None if block is None else max(1, int(block * 1000))
        reply: Any = self.redis.xread({self.key: start}, count=count, block=ms)
        return [JobEvent.from_entry(i, raw) for _key, entries in reply or [] for i, raw in entries]

    def latest(self, count: int = 50) -> list[JobEvent]:
        """The newest ``count`` events, oldest first."""
        entries: Any = self.redis.xrevrange(self.key, count=count)
        return [JobEvent.from_entry(i, raw) for i, raw in reversed(entries)]

    def follow(
        self,
        after: str = "$",
        *,
        block: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
        count: int = 100,
    ) -> Iterator[JobEvent]:
        """Yield events after ``after`` (``$``: from now on) as they come, until ``stop()`` is true.

        Each read blocks at most ``block`` seconds, then ``stop`` is asked again. Resume later
        from the ``id`` of the last event handled: nothing in between is missed (unless the
        stream's cap dropped it).
        """
        position = self.last_id() if after == "$" else check_stream_id(after)
        while not stop():
            for event in self.read(position, count=count, block=block):
                position = event.id
                yield event
