"""Keeping the read model up to date, and rebuilding it by replay.

The projector is a consumer group (``projector``) on the event stream: it reads a batch,
folds it into every active generation of the view, and acknowledges it in the same
script. Several projector processes may run; a crashed one's unacknowledged entries are
taken over by the others after ``claim_after`` seconds.

An entry it cannot read is parked in its dead-letter stream (``chumon events dlq``) in the
same script, and its order's summary moves past it, marked (orders/readmodel.py). One it
fails on again and again (a bug) is parked once delivered ``max_deliveries`` times
(workers/consumer.py). ``chumon events dlq retry`` sends parked entries back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from orders.keys import OrderKeys
from orders.readmodel import ReadModel
from workers.codec import texts
from workers.consumer import Gathering
from workers.streams import Entry, GroupReader, entries

log = logging.getLogger("chumon.projector")
GROUP = "projector"


class Projector:
    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys,
        view: ReadModel,
        *,
        claim_after: float = 5.0,
        max_deliveries: int = 5,
        gather: float = 0.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.view = view
        self.gather = gather
        self._rounds = Gathering(gather, sleep)
        self.reader = GroupReader(
            redis,
            keys.events,
            GROUP,
            claim_after=claim_after,
            parking=keys.parking(GROUP),
            max_deliveries=max_deliveries,
        )
        self.applied = 0

    def run(self, stop: threading.Event) -> None:
        self.reader.ensure_group()
        while not stop.is_set():
            self.step()

    def step(self) -> int:
        """One round: returns how many entries it settled (applied, skipped as duplicates, parked).

        After a round that found less than a full batch, the next one waits ``gather`` seconds
        before it reads, so that read takes what was appended meanwhile as one batch (a wait
        before a read, not after one: a round that returns tells the process's outage log that
        Redis answers, which must be true when it returns). The
        read model is on no order's path to CONFIRMED, and its cost is per round: each round
        reads, parses, folds and writes every order it touches once, whatever the number of
        its events. Read as they come at a steady rate, an order's seven events cost seven
        rounds; gathered, one or two, for up to ``gather`` seconds more lag of the view."""
        return self._rounds.round(self, log)

    def process(self, batch: list[Entry]) -> None:
        self.applied += self.view.project(batch, gens=self.view.active(), reader=self.reader)

    def give_up(self, items: list[tuple[Entry, str]]) -> None:
        reasons = {entry.id: reason for entry, reason in items}
        batch = [entry for entry, _ in items]
        self.view.project(batch, gens=self.view.active(), reader=self.reader, give_up=reasons)

    @property
    def parked(self) -> int:
        return self.view.parked

    def lag(self) -> tuple[int, float]:
        """(events not yet projected, seconds the oldest of them has waited)."""
        return self.reader.lag()


@dataclass
class RebuildReport:
    old: int
    new: int
    events: int
    orders: int
    carried_over: int
    seconds: float


def rebuild(
    redis: Redis,
    keys: OrderKeys,
    view: ReadModel,
    *,
    keep_old: bool = False,
    progress: Callable[[int], None] | None = None,
    batch: int = 1000,
) -> RebuildReport:
    """Replay the retained log into a new generation while the system runs; then swap it in.

    1. A new generation joins the active set: from now on the live projector writes it too.
    2. The whole retained stream is replayed into it (events the live projector wrote first
       are parked until their predecessors arrive; duplicates are skipped).
    3. Orders whose history begins after the log was trimmed cannot be replayed: their
       summaries are carried over from the old generation.
    4. One MULTI/EXEC makes the new generation current and drops the old one from the
       active set (unless ``keep_old``: then the live projector keeps both, for comparing).
    5. The old generation is deleted. No reader is left on it: every read checks the current
       generation in the same MULTI/EXEC (orders/readmodel.py), and the projector's script
       writes no generation that is not active any more.
    """
    started = time.monotonic()
    old = view.current(fresh=True)
    new = max(int(redis.incr(keys.view_counter)), old + 1)
    redis.set(keys.view_counter, new)
    redis.sadd(keys.view_generations, old, new)
    cursor, replayed = "-", 0
    while True:
        batch_entries = entries(redis.xrange(keys.events, min=cursor, max="+", count=batch))
        if not batch_entries:
            break
        view.project(batch_entries, gens=[new])
        replayed += len(batch_entries)
        cursor = "(" + batch_entries[-1].id
        if progress:
            progress(replayed)
    carried = _carry_over(redis, keys, view, old, new)
    with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.view_current, new)
        if not keep_old:
            pipe.srem(keys.view_generations, old)
        pipe.execute()
    view.current(fresh=True)
    orders = int(redis.zcard(keys.view_all(new)))
    if not keep_old:
        drop_generation(redis, keys, old)
    return RebuildReport(old, new, replayed, orders, carried, round(time.monotonic() - started, 2))


def _carry_over(redis: Redis, keys: OrderKeys, view: ReadModel, old: int, new: int) -> int:
    """Copy summaries the replay could not rebuild (history trimmed) from the old generation."""
    missing = [
        order_id
        for order_id in texts(redis.zrange(keys.view_all(old), 0, -1))
        if not redis.hexists(keys.view_order(new, order_id), "doc")
    ]
    for order_id in missing:
        summary = view.get(order_id, gen=old)
        if summary is None:
            continue
        with redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.view_order(new, order_id),
                mapping={"doc": summary.model_dump_json(), "version": summary.version},
            )
            pipe.zadd(keys.view_all(new), {order_id: summary.placed_at})
            pipe.zadd(keys.view_status(new, summary.status.value), {order_id: summary.placed_at})
            pipe.zadd(keys.view_customer(new, summary.customer_email), {order_id: summary.placed_at})
            pipe.execute()
    if missing:
        log.warning(
            "rebuild: %d order(s) carried over from generation %d (their history was trimmed)",
            len(missing),
            old,
        )
    return len(missing)


def drop_generation(redis: Redis, keys: OrderKeys, gen: int) -> int:
    """Delete every key of a generation no longer current (readers check, so none reads it)."""
    redis.srem(keys.view_generations, gen)
    removed = 0
    batch: list[str] = []
    for key in redis.scan_iter(match=keys.view_pattern(gen), count=1000):
        batch.append(key.decode() if isinstance(key, bytes) else key)
        if len(batch) >= 500:
            removed += int(redis.unlink(*batch))
            batch = []
    if batch:
        removed += int(redis.unlink(*batch))
    return removed
