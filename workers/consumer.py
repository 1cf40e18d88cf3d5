"""Running a stream consumer for ever: one round at a time, through poison and Redis outages.

``consume(consumer)`` is one round: read a batch (``workers.streams.GroupReader``), park the
entries that passed the group's delivery cap, process the rest. A batch whose processing
fails is processed again entry by entry, so one poison entry holds back nobody else: it
stays unacknowledged, comes back after ``claim_after``, and is parked once over the cap.

``Outage`` is what a long-running loop needs to survive Redis going away: a capped backoff,
one log line when Redis stops answering and one when it answers again (not one per thread
per retry), and the few errors that are not outages but configuration (a wrong password, a
missing ACL permission, a server too old for a command): those are named, and the process
should stop on them, since waiting does not fix them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from workers.durability import NotReplicated
from workers.streams import Acks, Entry, GroupReader, read_new

TRANSIENT = (RedisError, OSError, NotReplicated)
"""Failures of the store, not of the entries: a round that meets one is retried as a whole."""


class StreamConsumer(Protocol):
    """What ``consume`` drives."""

    @property
    def reader(self) -> GroupReader: ...

    def process(self, entries: list[Entry]) -> None:
        """Process the entries and acknowledge them (all, or raise)."""

    def give_up(self, items: list[tuple[Entry, str]]) -> None:
        """Park these entries with their reasons (and acknowledge them), and log it."""


class Gathering:
    """Rounds that gather their reads: after a round that settled less than a full batch, the next
    waits ``gather`` seconds before it reads, so that read takes what was appended meanwhile as
    one batch. The wait comes before a read, not after one: a round that returns tells the
    process's outage log that Redis answers, which must be true when it returns. 0: no wait."""

    def __init__(self, gather: float, sleep: Callable[[float], object]) -> None:
        self.gather = gather
        self._sleep = sleep
        self._wait = False

    def round(self, consumer: StreamConsumer, log: logging.Logger) -> int:
        """One round of ``consume``, after the wait the last round asked for."""
        if self._wait:
            self._wait = False
            self._sleep(self.gather)
        settled = consume(consumer, log)
        self._wait = self.gather > 0 and 0 < settled < consumer.reader.batch
        return settled


class Together:
    """Several consumers of one stream in one thread: a round reads every group's batch in one
    round trip (``read_new``; abandoned entries first, as ``GroupReader.read`` takes them),
    settles each batch with its consumer in turn, then sends the acknowledgements they held
    (``Acks``) in one more. Apart, each consumer was a thread
    that every entry woke, for a read and an acknowledgement of its own, to find most entries
    none of its business; its threads shared one GIL.

    The consumers hold their plain acknowledgements in ``acks`` (theirs to use: a consumer
    that writes something with an acknowledgement sends both at once, as alone). A Redis error
    ends the round (``consume``'s rule): the entries read and not yet acknowledged stay pending
    and come back to the group after its ``claim_after``."""

    def __init__(self, consumers: Sequence[StreamConsumer], acks: Acks) -> None:
        self.consumers = list(consumers)
        self.acks = acks
        self._block = False  # the first round reads what is there without waiting

    def round(self, log: logging.Logger) -> int:
        """One round for all; returns how many entries they settled (processed or parked)."""
        readers = [consumer.reader for consumer in self.consumers]
        batches = [reader.claim() for reader in readers]
        fresh = not any(batches)
        if fresh:
            batches = read_new(readers, block=self._block)
        settled = 0
        try:
            for consumer, batch in zip(self.consumers, batches, strict=True):
                settled += settle(consumer, batch, log)
            self.acks.send()
        finally:
            self.acks.held = []
        # wait for the next entry only when every group has read all there was: none was
        # behind (a full batch) and this round read new entries at all (not abandoned ones)
        self._block = fresh and all(
            len(batch) < reader.batch for reader, batch in zip(readers, batches, strict=True)
        )
        return settled


def consume(consumer: StreamConsumer, log: logging.Logger) -> int:
    """One round; returns how many entries it settled (processed or parked)."""
    return settle(consumer, consumer.reader.read(), log)


def settle(consumer: StreamConsumer, batch: list[Entry], log: logging.Logger) -> int:
    """Process a batch the consumer's reader read (parking what passed the delivery cap); returns
    how many entries were settled."""
    reader = consumer.reader
    if not batch:
        return 0
    capped = [(entry, reader.give_up_reason(entry)) for entry in batch if reader.over_cap(entry)]
    if capped:
        consumer.give_up(capped)  # it says so in its log
    live = [entry for entry in batch if not reader.over_cap(entry)]
    if not live:
        return len(capped)
    try:
        consumer.process(live)
        return len(batch)
    except TRANSIENT:
        raise
    except Exception as exc:
        if len(live) == 1:
            _failed(reader, live[0], exc, log)
            return len(capped)
    done = len(capped)
    for entry in live:  # one by one: the poison stays, the others go through
        try:
            consumer.process([entry])
            done += 1
        except TRANSIENT:
            raise
        except Exception as exc:
            _failed(reader, entry, exc, log)
    return done


def _failed(reader: GroupReader, entry: Entry, exc: Exception, log: logging.Logger) -> None:
    reader.failed(entry, f"{type(exc).__name__}: {exc}")
    log.error(
        "%s: entry %s failed (delivery %d of %d; then it is parked): %s: %s",
        reader.group, entry.id, entry.deliveries, reader.max_deliveries, type(exc).__name__, exc,
    )  # fmt: skip


def configuration_error(exc: BaseException) -> str | None:
    """What is wrong, if ``exc`` says the configuration is (waiting will not fix it); else None."""
    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
        return f"Redis refuses these credentials or this user: {exc}"
    if isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
        return f"this Redis server lacks a command chumon needs: {exc}"
    return None


class Outage:
    """Capped backoff and one log line per Redis outage, shared by a process's loops."""

    def __init__(self, log: logging.Logger, *, cap: float = 5.0, remind_every: float = 60.0) -> None:
        self.log = log
        self.cap = cap
        self.remind_every = remind_every
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_line = 0.0
        self._pauses: dict[str, float] = {}

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, loop: str, exc: BaseException) -> float:
        """Note a failure of ``loop``; returns how long it should wait before trying again."""
        now = time.monotonic()
        with self._lock:
            pause = min(self.cap, max(0.1, self._pauses.get(loop, 0.0) * 2))
            self._pauses[loop] = pause
            if self._down_since is None:
                self._down_since, self._last_line = now, now
                self.log.error(
                    "redis unavailable (%s: %s); retrying with backoff up to %g s",
                    type(exc).__name__, exc, self.cap,
                )  # fmt: skip
            elif now - self._last_line >= self.remind_every:
                self._last_line = now
                self.log.error("redis still unavailable after %.0f s: %s", now - self._down_since, exc)
        return pause

    def ok(self, loop: str) -> None:
        """Note that ``loop`` got through to Redis."""
        if self._down_since is None and not self._pauses.get(loop):
            return
        with self._lock:
            self._pauses[loop] = 0.0
            if self._down_since is not None:
                self.log.warning("redis answers again after %.1f s", time.monotonic() - self._down_since)
                self._down_since = None
