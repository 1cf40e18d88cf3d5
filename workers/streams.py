"""Reading a Redis stream as a consumer group: at-least-once, acknowledged after processing.

A ``GroupReader`` belongs to one consumer of one group. Each ``read()`` first takes over
entries that another consumer of the group received but did not acknowledge for
``claim_after`` seconds (XAUTOCLAIM: that consumer crashed or hangs), then reads new entries
(XREADGROUP, blocking up to ``block`` seconds). The caller processes the batch and
acknowledges it, ideally in the same atomic step as its own writes (``ack_args``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import text


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    fields: dict[str, str]


def consumer_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def entries(raw: Any) -> list[Entry]:
    """Entries of an XRANGE / XREADGROUP reply (deleted entries, which have no fields, left out)."""
    return [
        Entry(text(entry_id), {text(k): text(v) for k, v in fields.items()})
        for entry_id, fields in raw
        if fields
    ]


class GroupReader:
    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str | None = None,
        *,
        batch: int = 200,
        block: float = 1.0,
        claim_after: float = 5.0,
        start: str = "0",
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.block_ms = int(block * 1000)
        self.claim_after_ms = int(claim_after * 1000)
        self.start = start
        self._claim_cursor = "0-0"

    def ensure_group(self) -> None:
        """Create the group (reading from ``start``: '0' is the whole retained stream) if missing."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self) -> list[Entry]:
        """Entries to process: abandoned ones of crashed consumers first, then new ones."""
        claimed = self._claim()
        if claimed:
            return claimed
        reply: Any = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms
        )
        return entries(reply[0][1]) if reply else []

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.redis.xack(self.stream, self.group, *ids)

    def _claim(self) -> list[Entry]:
        reply: Any = self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.claim_after_ms,
            start_id=self._claim_cursor,
            count=self.batch,
        )
        self._claim_cursor = text(reply[0])
        return entries(reply[1])

    def lag(self) -> tuple[int, float]:
        """(entries not yet acknowledged by the group, seconds since the oldest of them was added)."""
        try:
            info: Any = self.redis.xinfo_groups(self.stream)
        except ResponseError:  # no stream yet: nothing to lag behind
            return 0, 0.0
        group = next((g for g in info if text(g["name"]) == self.group), None)
        if group is None:
            return 0, 0.0
        last = text(group["last-delivered-id"])
        pending: Any = self.redis.xpending(self.stream, self.group)
        oldest = text(pending["min"]) if pending and pending.get("pending") else None
        undelivered: Any = self.redis.xrange(self.stream, min=f"({last}", max="+", count=10_000)
        behind = int(pending.get("pending", 0) if pending else 0) + len(undelivered)
        first = oldest or (text(undelivered[0][0]) if undelivered else None)
        if first is None:
            return behind, 0.0
        return behind, max(0.0, time.time() - int(first.split("-")[0]) / 1000)
