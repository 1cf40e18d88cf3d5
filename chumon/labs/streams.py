"""Queue vs stream: who sees a message, and for how long.

A queue (a Redis list: LPUSH, then RPOP by each consumer, as rq's queues are) hands each
message to exactly one consumer and forgets it: two consumers split the work, and a
consumer that comes later finds nothing. A stream (XADD; XREADGROUP per consumer group, as
chumon's event log is read by the projector and each service's reactor) keeps its entries:
every group sees every entry, consumers inside one group split them, a group created later
replays from the start, and only trimming (XTRIM, chumon's ``events.retention_days``) takes
entries away, also from a slow group that had not read them yet.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from pydantic import BaseModel
from redis import Redis

HELP = "a queue splits messages between consumers; a stream shows every group every entry"


class Result(BaseModel):
    messages: int
    queue_consumer_a: int
    queue_consumer_b: int
    queue_seen_by_both: int
    queue_late_consumer: int
    stream_group_projector: int
    stream_group_billing: int
    stream_in_group_consumer_1: int
    stream_in_group_consumer_2: int
    stream_late_group_replayed: int
    trim_kept: int
    slow_group_read_before_trim: int
    slow_group_read_after_trim: int
    slow_group_lost: int


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=100, help="messages to send (default 100)")
    parser.add_argument("--keep", type=int, default=20, help="entries XTRIM keeps (default 20)")


def run(redis: Redis, prefix: str, args: argparse.Namespace) -> Result:
    n, keep = args.messages, min(args.keep, args.messages)
    queue, stream = prefix + "queue", prefix + "stream"
    redis.lpush(queue, *[f"m{i}" for i in range(n)])
    taken: dict[str, set[str]] = {"a": set(), "b": set()}
    consumers = [threading.Thread(target=_consume, args=(redis, queue, taken[c])) for c in taken]
    for thread in consumers:  # two consumers at once, as two workers on one queue
        thread.start()
    for thread in consumers:
        thread.join()
    late_queue = _drain_queue(redis, queue)
    for i in range(n):
        redis.xadd(stream, {"n": str(i)})
    for group in ("projector", "billing", "shared"):
        redis.xgroup_create(stream, group, id="0")
    projector = _read_group(redis, stream, "projector", ["p1"])
    billing = _read_group(redis, stream, "billing", ["b1"])
    shared = _read_group(redis, stream, "shared", ["c1", "c2"])
    redis.xgroup_create(stream, "late", id="0")  # created after every entry was written
    late = _read_group(redis, stream, "late", ["l1"])
    slow_before, slow_after = _trim_under_a_slow_group(redis, prefix + "trimmed", n, keep)
    return Result(
        messages=n,
        queue_consumer_a=len(taken["a"]),
        queue_consumer_b=len(taken["b"]),
        queue_seen_by_both=len(taken["a"] & taken["b"]),
        queue_late_consumer=late_queue,
        stream_group_projector=sum(projector.values()),
        stream_group_billing=sum(billing.values()),
        stream_in_group_consumer_1=shared["c1"],
        stream_in_group_consumer_2=shared["c2"],
        stream_late_group_replayed=sum(late.values()),
        trim_kept=keep,
        slow_group_read_before_trim=slow_before,
        slow_group_read_after_trim=slow_after,
        slow_group_lost=n - slow_before - slow_after,
    )


def _consume(redis: Redis, queue: str, into: set[str]) -> None:
    while (item := redis.rpop(queue)) is not None:
        into.add(item.decode() if isinstance(item, bytes) else str(item))


def _drain_queue(redis: Redis, queue: str) -> int:
    count = 0
    while redis.rpop(queue) is not None:
        count += 1
    return count


def _read_group(redis: Redis, stream: str, group: str, consumers: list[str]) -> dict[str, int]:
    """Every consumer reads in turn, ten entries at a time, acknowledging, until none is left."""
    counts = dict.fromkeys(consumers, 0)
    while True:
        got = 0
        for consumer in consumers:
            reply: Any = redis.xreadgroup(group, consumer, {stream: ">"}, count=10)
            for _stream, entries in reply or []:
                redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
                counts[consumer] += len(entries)
                got += len(entries)
        if not got:
            return counts


def _trim_under_a_slow_group(redis: Redis, stream: str, n: int, keep: int) -> tuple[int, int]:
    """A slow group reads a tenth, the stream is trimmed to ``keep``, the group reads on."""
    for i in range(n):
        redis.xadd(stream, {"n": str(i)})
    redis.xgroup_create(stream, "slow", id="0")
    reply: Any = redis.xreadgroup("slow", "s1", {stream: ">"}, count=max(1, n // 10))
    before = sum(len(entries) for _stream, entries in reply or [])
    redis.xtrim(stream, maxlen=keep, approximate=False)
    after = sum(_read_group(redis, stream, "slow", ["s1"]).values())
    return before, after


def render(r: Result) -> str:
    return "\n".join([
        f"queue (a list; RPOP): {r.messages} messages, two consumers",
        f"  consumer A got {r.queue_consumer_a}, consumer B got {r.queue_consumer_b}; "
        f"seen by both: {r.queue_seen_by_both}",
        f"  a consumer that comes afterwards gets {r.queue_late_consumer}: "
        "a queue forgets what it handed out",
        f"stream (XADD; XREADGROUP): {r.messages} entries",
        f"  group 'projector' read {r.stream_group_projector}, group 'billing' read {r.stream_group_billing}:"
        " every group sees every entry",
        "  two consumers in one group split it: "
        f"{r.stream_in_group_consumer_1} + {r.stream_in_group_consumer_2}",
        f"  a group created after the fact replays from the start: {r.stream_late_group_replayed} entries",
        f"trim (XTRIM MAXLEN {r.trim_kept}) under a slow group: it had read {r.slow_group_read_before_trim},"
        f" then read {r.slow_group_read_after_trim}; lost {r.slow_group_lost} it never saw",
    ])  # fmt: skip
