"""The read model: order summaries, projected from the event log, in generations.

Reads go to the *current* generation. The projector writes every *active* generation: the
current one, and during a rebuild the new one too. A rebuild (``rebuild``) replays the
whole retained log into a fresh generation while the system runs, then makes it current
in one atomic step; readers move over without a gap.

Order-awareness: a summary records the sequence of the last event applied. The next event
of that order is applied; an older one is a duplicate and is skipped; a newer one (its
predecessor not seen yet: a redelivery, a rebuild racing the live projector) is *parked*
in Redis and applied as soon as the gap closes. So duplicates and reordering never corrupt
a summary, and the same history always gives the same summary.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.commands.core import Script

from orders.events import Event, from_fields
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.projection import OrderSummary, apply
from workers.codec import text, texts
from workers.scripts import dumps, source
from workers.streams import Entry

log = logging.getLogger("chumon.projector")
MAX_CONFLICTS = 20


@dataclass
class _Order:
    """One order's state in one generation, as loaded for a batch."""

    gen: int
    order_id: str
    summary: OrderSummary | None
    version: int
    parked: dict[int, str] = field(default_factory=dict)  # seq -> event entry (JSON of its fields)


class ReadModel:
    def __init__(self, redis: Redis, keys: OrderKeys, *, gen_cache: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.gen_cache = gen_cache
        self._gen = (0, 0.0)  # (generation, read at)
        self._project: Script = redis.register_script(source("project", "orders"))

    # -- generations --------------------------------------------------------------------------
    def current(self, *, fresh: bool = False) -> int:
        gen, at = self._gen
        if fresh or not gen or time.monotonic() - at > self.gen_cache:
            raw = self.redis.get(self.keys.view_current)
            gen = int(raw) if raw else 1
            self._gen = (gen, time.monotonic())
        return gen

    def active(self) -> list[int]:
        """Generations the projector must keep up to date."""
        building = {int(g) for g in texts(self.redis.smembers(self.keys.view_generations))}
        return sorted(building | {self.current(fresh=True)})

    # -- reading ------------------------------------------------------------------------------------
    def get(self, order_id: str, *, gen: int | None = None) -> OrderSummary | None:
        doc = self.redis.hget(self.keys.view_order(gen or self.current(), order_id), "doc")
        return OrderSummary.model_validate_json(doc) if doc else None

    def query(
        self, *, customer: str | None = None, status: OrderStatus | None = None, limit: int = 50
    ) -> list[OrderSummary]:
        """Newest first. Filters combine; each is served by its own index."""
        gen = self.current()
        if customer and status:
            candidates = texts(self.redis.zrevrange(self.keys.view_customer(gen, customer), 0, -1))
            wanted = set(texts(self.redis.zrevrange(self.keys.view_status(gen, status.value), 0, -1)))
            ids = [i for i in candidates if i in wanted][:limit]
        else:
            index = (
                self.keys.view_customer(gen, customer)
                if customer
                else self.keys.view_status(gen, status.value)
                if status
                else self.keys.view_all(gen)
            )
            ids = texts(self.redis.zrevrange(index, 0, limit - 1))
        with self.redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hget(self.keys.view_order(gen, order_id), "doc")
            docs = pipe.execute()
        return [OrderSummary.model_validate_json(doc) for doc in docs if doc]

    def wait_for(
        self,
        order_id: str,
        *,
        statuses: Iterable[OrderStatus] = (OrderStatus.CONFIRMED, OrderStatus.CANCELLED),
        version: int | None = None,
        timeout: float,
    ) -> OrderSummary | None:
        """Wait until the summary reaches one of ``statuses`` (or ``version``), woken by the
        projector's Pub/Sub notice rather than by polling. Returns the last summary seen."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.keys.view_changed(order_id))
        try:
            while True:
                summary = self.get(order_id)
                if summary is not None and (
                    (version is not None and summary.version >= version)
                    or (version is None and summary.status in wanted)
                ):
                    return summary
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return summary
                pubsub.get_message(timeout=min(remaining, 5.0))
        finally:
            pubsub.close()

    # -- projecting ---------------------------------------------------------------------------------
    def project(self, entries: list[Entry], *, gens: list[int], ack: tuple[str, str] | None = None) -> int:
        """Apply stream entries to the given generations; acknowledge them (stream, group) in the
        same script. Returns how many events were applied (in all generations)."""
        events: dict[str, dict[int, str]] = defaultdict(dict)
        for entry in entries:
            event = _decode(entry)
            if event is not None:
                events[event.order_id][event.sequence] = json.dumps(entry.fields)
        for _ in range(MAX_CONFLICTS):
            orders = self._load([(gen, order_id) for gen in gens for order_id in events])
            writes, applied = [], 0
            current = self.current()
            for state in orders:
                write, count = self._advance(state, events[state.order_id], publish=state.gen == current)
                applied += count
                if write is not None:
                    writes.append(write)
            plan: dict[str, Any] = {"writes": writes}
            if ack is not None:
                plan.update(stream=ack[0], group=ack[1], ack=[entry.id for entry in entries])
            if not writes and ack is None:
                return 0
            reply = self._project(keys=[], args=[self.keys.lua_keyspace, dumps(plan)])
            if int(reply[0]) == 1:
                return applied
        raise RuntimeError("projector: gave up after repeated concurrent changes")

    def _load(self, wanted: list[tuple[int, str]]) -> list[_Order]:
        with self.redis.pipeline(transaction=False) as pipe:
            for gen, order_id in wanted:
                pipe.hmget(self.keys.view_order(gen, order_id), ["doc", "version"])
                pipe.hgetall(self.keys.view_parked(gen, order_id))
            replies = pipe.execute()
        states = []
        for (gen, order_id), (doc, version), parked in zip(wanted, replies[::2], replies[1::2], strict=True):
            summary = OrderSummary.model_validate_json(doc) if doc else None
            states.append(
                _Order(gen, order_id, summary, int(version) if version else -1,
                       {int(text(k)): text(v) for k, v in parked.items()})
            )  # fmt: skip
        return states

    def _advance(
        self, state: _Order, incoming: dict[int, str], *, publish: bool
    ) -> tuple[dict[str, Any] | None, int]:
        """Fold the order's next events into its summary; park what cannot be applied yet."""
        known = max(state.version, 0)
        waiting = {seq: raw for seq, raw in {**state.parked, **incoming}.items() if seq > known}
        summary, version, used = state.summary, state.version, []
        while (seq := max(version, 0) + 1) in waiting:
            event = _decode(Entry("", json.loads(waiting[seq])))
            if event is None:
                break
            try:
                summary = apply(summary, event)
            except ValueError as exc:  # its history starts after the log was trimmed: see rebuild()
                log.error("order %s: %s", state.order_id, exc)
                break
            version = seq
            used.append(seq)
        park = [[seq, raw] for seq, raw in incoming.items() if seq > version and seq not in state.parked]
        unpark = [seq for seq in state.parked if seq <= version]
        if summary is state.summary and not park and not unpark:
            return None, 0
        keys, gen = self.keys, state.gen
        write: dict[str, Any] = {
            "key": keys.view_order(gen, state.order_id),
            "expected": state.version,
            "id": state.order_id,
            "parked_key": keys.view_parked(gen, state.order_id),
            "park": park,
            "unpark": unpark,
            "all_key": keys.view_all(gen),
        }
        if summary is not None and summary is not state.summary:
            write.update(
                doc=summary.model_dump_json(),
                version=version,
                status=summary.status.value,
                placed_at=summary.placed_at,
                status_key=keys.view_status(gen, summary.status.value),
                customer_key=keys.view_customer(gen, summary.customer_email),
            )
            if state.summary is not None:
                write["old_status_key"] = keys.view_status(gen, state.summary.status.value)
            if publish:
                write["channel"] = keys.view_changed(state.order_id)
        return write, len(used)


def _decode(entry: Entry) -> Event | None:
    try:
        return from_fields(entry.fields)
    except (KeyError, ValueError, ValidationError) as exc:
        log.error("event %s cannot be read, skipped: %s", entry.id or "(parked)", exc)
        return None
