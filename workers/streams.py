"""Reading a Redis stream as a consumer group: at-least-once, with a delivery cap and a
dead-letter stream of the group's own.

A ``GroupReader`` belongs to one consumer of one group. Each ``read()`` takes over entries
that another consumer of the group received but did not acknowledge for ``claim_after``
seconds (XAUTOCLAIM: that consumer crashed, or processing failed), then reads new entries
(XREADGROUP, blocking up to ``block`` seconds). The caller processes the batch and
acknowledges it, ideally in the same atomic step as its own writes (``ack_plan``).

Every entry carries how often the group has delivered it (``Entry.deliveries``, from the
group's pending list). An entry that nobody manages to process is not retried for ever:
once its deliveries pass ``max_deliveries`` the consumer parks it (``dead_letter``) in the
group's dead-letter stream (``Parking.parked``), with the reason, in one MULTI/EXEC with
its acknowledgement: it is never acknowledged and forgotten. An entry the consumer cannot
even read (a type a newer writer added) is parked at once.

``ParkedEntries`` is the operator's side: list, show, and ``retry``, which sends parked
entries back to their group through its replay stream (``Parking.replay``), read by the
group like the main stream: after an upgrade or a fix, the group processes them again.

Which keys a group uses is decided by the caller (the key modules build them); nothing here
knows what the entries mean.
"""

from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis
from redis.exceptions import ResponseError

from workers.codec import text

META = "dlq."
"""Prefix of the fields a parked entry carries about itself, beside the entry's own fields."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    fields: dict[str, str]
    stream: str = ""
    deliveries: int = 1

    @property
    def origin(self) -> str:
        """The id the entry had in its group's main stream (a replayed entry carries it along)."""
        return self.fields.get(META + "id", self.id)


@dataclass(frozen=True, slots=True)
class Parking:
    """The two streams of one group's dead letters: where they wait, and where retry sends them."""

    parked: str
    replay: str


def consumer_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def entries(raw: Any, stream: str = "") -> list[Entry]:
    """Entries of an XRANGE / XREADGROUP reply (deleted entries, which have no fields, left out)."""
    return [
        Entry(text(entry_id), {text(k): text(v) for k, v in fields.items()}, stream)
        for entry_id, fields in raw
        if fields
    ]


def original_fields(fields: dict[str, str]) -> dict[str, str]:
    """A parked or replayed entry's own fields, without what parking added."""
    return {k: v for k, v in fields.items() if not k.startswith(META)}


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
        parking: Parking | None = None,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.block_ms = int(block * 1000)
        self.claim_after = claim_after
        self.start = start
        self.parking = parking
        self.max_deliveries = max_deliveries
        self.streams = [stream] + ([parking.replay] if parking else [])
        self._cursors = dict.fromkeys(self.streams, "0-0")
        self._next_claim = 0.0
        self.errors: OrderedDict[str, str] = OrderedDict()  # entry id -> last error seen here

    def ensure_group(self) -> None:
        """Create the group on its streams (reading from ``start``: '0' is all that is retained)."""
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id=self.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self) -> list[Entry]:
        """Entries to process: abandoned ones (of crashed consumers, or that failed) first, then
        new ones. A Redis that lost the group (restarted without its data) gets it again."""
        try:
            claimed = self._claim()
            if claimed:
                return claimed
            reply: Any = self.redis.xreadgroup(
                self.group,
                self.consumer,
                dict.fromkeys(self.streams, ">"),
                count=self.batch,
                block=self.block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        return [entry for stream, raw in reply or [] for entry in entries(raw, text(stream))]

    def over_cap(self, entry: Entry) -> bool:
        """Delivered more often than ``max_deliveries``: the consumer should give up on it."""
        return entry.deliveries > self.max_deliveries

    def failed(self, entry: Entry, error: str) -> None:
        """Remember why processing ``entry`` failed (for the reason it is parked with, if it is)."""
        self.errors[entry.id] = error[:500]
        self.errors.move_to_end(entry.id)
        while len(self.errors) > 1000:
            self.errors.popitem(last=False)

    def ack(self, done: Iterable[Entry]) -> None:
        plan = self.ack_plan(done)
        if not plan:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            for stream, group, ids, delete in plan:
                pipe.xack(stream, group, *ids)
                if delete:
                    pipe.xdel(stream, *ids)
            pipe.execute()
        self._forget(done)

    def ack_plan(self, done: Iterable[Entry]) -> list[tuple[str, str, list[str], bool]]:
        """(stream, group, ids, delete) per stream, to acknowledge inside the caller's own script.
        Replayed entries are deleted once acknowledged: the replay stream keeps nothing done."""
        by_stream: dict[str, list[str]] = {}
        for entry in done:
            by_stream.setdefault(entry.stream or self.stream, []).append(entry.id)
        return [(stream, self.group, ids, stream != self.stream) for stream, ids in by_stream.items()]

    def park_fields(self, entry: Entry, reason: str, now: float | None = None) -> list[str]:
        """The parked entry as a flat field list: its own fields, then what parking adds."""
        meta = {
            META + "id": entry.origin,
            META + "stream": self.stream,
            META + "group": self.group,
            META + "deliveries": str(entry.deliveries),
            META + "reason": reason[:1000],
            META + "at": repr(time.time() if now is None else now),
        }
        flat: list[str] = []
        for key, value in {**original_fields(entry.fields), **meta}.items():
            flat += [key, value]
        return flat

    def dead_letter(self, items: list[tuple[Entry, str]]) -> None:
        """Park each entry with its reason and acknowledge it, in one MULTI/EXEC."""
        if not items:
            return
        if self.parking is None:
            raise RuntimeError(f"group {self.group} has no dead-letter stream to park entries in")
        with self.redis.pipeline(transaction=True) as pipe:
            for entry, reason in items:
                pipe.xadd(self.parking.parked, cast(Any, _pairs(self.park_fields(entry, reason))))
            for stream, group, ids, delete in self.ack_plan(entry for entry, _ in items):
                pipe.xack(stream, group, *ids)
                if delete:
                    pipe.xdel(stream, *ids)
            pipe.execute()
        self._forget(entry for entry, _ in items)

    def give_up_reason(self, entry: Entry) -> str:
        last = self.errors.get(entry.id)
        return f"delivered {entry.deliveries} times without being processed" + (
            f"; last error: {last}" if last else ""
        )

    def _forget(self, done: Iterable[Entry]) -> None:
        for entry in done:
            self.errors.pop(entry.id, None)

    def claim(self) -> list[Entry]:
        """Entries other consumers of the group abandoned (``read`` takes these first). A Redis
        that lost the group gets it again, as in ``read``."""
        try:
            return self._claim()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []

    def _claim(self) -> list[Entry]:
        """XAUTOCLAIM on each stream, at most every claim_after / 4 s (nothing is claimable
        sooner) unless the last pass stopped short; with each entry's delivery count."""
        now = time.monotonic()
        if now < self._next_claim and all(c == "0-0" for c in self._cursors.values()):
            return []
        self._next_claim = now + self.claim_after / 4
        claimed: list[Entry] = []
        for stream in self.streams:
            reply: Any = self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                int(self.claim_after * 1000),
                start_id=self._cursors[stream],
                count=self.batch,
            )
            self._cursors[stream] = text(reply[0])
            claimed += entries(reply[1], stream)
        return self._with_deliveries(claimed) if claimed else []

    def _with_deliveries(self, claimed: list[Entry]) -> list[Entry]:
        counts: dict[str, int] = {}
        for stream in {entry.stream for entry in claimed}:
            ids = [entry.id for entry in claimed if entry.stream == stream]
            pending: Any = self.redis.xpending_range(
                stream, self.group, min=min(ids, key=_order), max=max(ids, key=_order), count=len(ids) + 100,
                consumername=self.consumer,
            )  # fmt: skip
            counts.update({text(p["message_id"]): int(p["times_delivered"]) for p in pending})
        return [
            Entry(entry.id, entry.fields, entry.stream, counts.get(entry.id, entry.deliveries))
            for entry in claimed
        ]

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


def read_new(readers: Sequence[GroupReader], *, block: bool) -> list[list[Entry]]:
    """New entries for several groups of one stream, one batch per reader, in one round trip:
    what each ``read`` would read after its claim, without a thread and a connection waiting
    per group.

    One pipeline sends an XREADGROUP per group; with ``block`` the first of them blocks (up to
    its reader's ``block``): an entry appended to the stream is new to every group reading it,
    so the first returns when any group has something new, and the others then read without
    waiting. Pass ``block=False`` when a group may be behind the first (its last batch was
    full); an entry retried into a group's replay stream, which only that group reads, may wait
    up to one ``block``."""
    with readers[0].redis.pipeline(transaction=False) as pipe:
        for n, reader in enumerate(readers):
            pipe.xreadgroup(
                reader.group,
                reader.consumer,
                dict.fromkeys(reader.streams, ">"),
                count=reader.batch,
                block=reader.block_ms if block and n == 0 else None,
            )
        replies = pipe.execute(raise_on_error=False)
    batches: list[list[Entry]] = []
    for reader, reply in zip(readers, replies, strict=True):
        if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
            reader.ensure_group()  # a Redis that lost the group gets it again, as in ``read``
            reply = None
        elif isinstance(reply, Exception):
            raise reply
        batches.append([entry for stream, raw in reply or [] for entry in entries(raw, text(stream))])
    return batches


class Acks:
    """Acknowledgements held until the end of a round of several groups (``read_new``) and
    sent in one round trip: those of entries whose processing wrote nothing else to make atomic
    with them (most entries, for a group that reacts to a few of a stream's types). Until they
    are sent the entries stay pending: a consumer that dies before comes back to them, as after
    any crash, and processes them again."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.held: list[tuple[GroupReader, list[Entry]]] = []

    def later(self, reader: GroupReader, done: Iterable[Entry]) -> None:
        self.held.append((reader, list(done)))

    def send(self) -> None:
        held, self.held = self.held, []  # sent or not, never held twice: what fails comes back
        plans = [(reader, reader.ack_plan(done), done) for reader, done in held]
        if not any(plan for _, plan, _ in plans):
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for _, plan, _ in plans:
                for stream, group, ids, delete in plan:
                    pipe.xack(stream, group, *ids)
                    if delete:
                        pipe.xdel(stream, *ids)
            pipe.execute()
        for reader, _, done in plans:
            reader._forget(done)


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked entry, as the operator sees it."""

    id: str
    group: str
    stream: str
    entry_id: str
    deliveries: int
    reason: str
    at: float
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, entry: Entry) -> Parked:
        meta = entry.fields
        return cls(
            id=entry.id,
            group=meta.get(META + "group", ""),
            stream=meta.get(META + "stream", ""),
            entry_id=meta.get(META + "id", ""),
            deliveries=_int(meta.get(META + "deliveries")),
            reason=meta.get(META + "reason", ""),
            at=_float(meta.get(META + "at")),
            fields=original_fields(meta),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "deliveries": self.deliveries,
            "reason": self.reason,
            "at": self.at,
            "fields": dict(self.fields),
        }


class ParkedEntries:
    """One group's dead-letter stream, for the operator: list, show, retry."""

    def __init__(self, redis: Redis, group: str, parking: Parking) -> None:
        self.redis = redis
        self.group = group
        self.parking = parking

    def count(self) -> int:
        return int(self.redis.xlen(self.parking.parked))

    def read(self, limit: int = 100) -> list[Parked]:
        """Oldest first."""
        raw: Any = self.redis.xrange(self.parking.parked, count=limit)
        return [Parked.of(entry) for entry in entries(raw, self.parking.parked)]

    def get(self, parked_id: str) -> Parked | None:
        raw: Any = self.redis.xrange(self.parking.parked, min=parked_id, max=parked_id)
        found = entries(raw, self.parking.parked)
        return Parked.of(found[0]) if found else None

    def retry(self, parked_ids: list[str]) -> list[str]:
        """Send these parked entries back to the group (its replay stream); returns the ids sent.
        Each moves in one MULTI/EXEC: it is parked or on its way back, never both, never neither."""
        sent = []
        for parked_id in parked_ids:
            parked = self.get(parked_id)
            if parked is None:
                continue
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.parking.replay, cast(Any, {**parked.fields, META + "id": parked.entry_id}))
                pipe.xdel(self.parking.parked, parked_id)
                pipe.execute()
            sent.append(parked_id)
        return sent


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
