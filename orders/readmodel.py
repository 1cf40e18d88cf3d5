"""The read model: order summaries, projected from the event log, in generations.

Reads go to the *current* generation. The projector writes every *active* generation: the
current one, and during a rebuild the new one too. A rebuild (``rebuild``) replays the
whole retained log into a fresh generation while the system runs, then makes it current
in one atomic step. Readers move over without a gap: every read checks, in the same
MULTI/EXEC as the read itself, that the generation it read is still the current one, and
reads again from the new one if not; a generation is dropped only once it is no longer
current, so no reader ever reads a dropped one. The project script writes only to
generations still active, so a batch decided before a swap cannot bring back a dropped one.

Order-awareness: a summary records the sequence of the last event applied. The next event
of that order is applied; an older one is a duplicate and is skipped; a newer one (its
predecessor not seen yet: a redelivery, a rebuild racing the live projector) is *parked*
in Redis and applied as soon as the gap closes. So duplicates and reordering never corrupt
a summary, and the same history always gives the same summary.

An event that cannot be read (a type a newer writer added, during a rolling deploy) does not
freeze its order: the summary moves past it (``projection.skip``), noting the gap, and the
entry goes to the projector's dead-letter stream in the same script. From that moment until
the gap is filled, the summary as it stood before the gap (``base``) and every later event
(``view_history``) are kept, so when the event comes back readable (``chumon events dlq
retry`` after an upgrade) the summary is folded again from ``base``, with the event in its
place: exactly what a replay of the whole history would give.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis import Redis

from orders.events import Event, from_fields
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.projection import OrderSummary, apply, skip
from orders.scripts import order_scripts
from workers.codec import text, texts
from workers.streams import Entry, GroupReader, original_fields

log = logging.getLogger("chumon.projector")
MAX_CONFLICTS = 20
MAX_READS = 5
QUERY_PAGE = 100  # a customer's orders read per round trip when a status filters them


@dataclass
class _Order:
    """One order's state in one generation, as loaded for a batch."""

    gen: int
    order_id: str
    summary: OrderSummary | None
    version: int
    parked: dict[int, str] = field(default_factory=dict)  # seq -> event entry (JSON of its fields)
    base: OrderSummary | None = None  # the summary before its first unreadable event
    history: dict[int, str] = field(default_factory=dict)  # seq -> event, since base (when loaded)


@dataclass(frozen=True, slots=True)
class _Raw:
    """One event entry of a batch: its fields as JSON, and the event if it can be read."""

    json: str
    event: Event | None
    kind: str
    at: float | None


class ReadModel:
    def __init__(self, redis: Redis, keys: OrderKeys, *, gen_cache: float = 1.0) -> None:
        self.redis = redis
        self.keys = keys
        self.gen_cache = gen_cache
        self._gen = (0, 0.0)  # (generation, read at)
        self._scripts = order_scripts(redis, keys.lua_keyspace)
        self.parked = 0  # entries this instance parked, since it was made

    # -- generations --------------------------------------------------------------------------
    def current(self, *, fresh: bool = False) -> int:
        gen, at = self._gen
        if fresh or not gen or time.monotonic() - at > self.gen_cache:
            gen = _gen(self.redis.get(self.keys.view_current))
            self._gen = (gen, time.monotonic())
        return gen

    def active(self) -> list[int]:
        """Generations the projector must keep up to date (read afresh: one round trip for the
        set and the current generation, which the projector asks for before every batch)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.view_generations)
            pipe.get(self.keys.view_current)
            members, current = pipe.execute()
        gen = _gen(current)
        self._gen = (gen, time.monotonic())
        return sorted({int(g) for g in texts(members)} | {gen})

    def _read(self, reads: Callable[[Any, int], object], gen: int | None = None) -> list[Any]:
        """Run ``reads(pipe, gen)`` in one MULTI/EXEC with a check of the current generation;
        again with the new one if it changed (a rebuild swapped it in)."""
        if gen is not None:  # a generation asked for by name: read it as it is
            with self.redis.pipeline(transaction=False) as pipe:
                reads(pipe, gen)
                return list(pipe.execute())
        gen = self.current()
        for _ in range(MAX_READS):
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.view_current)
                reads(pipe, gen)
                current, *replies = pipe.execute()
            if _gen(current) == gen:
                return replies
            gen = _gen(current)
            self._gen = (gen, time.monotonic())
        raise RuntimeError("read model: the current generation kept changing under the read")

    # -- reading ------------------------------------------------------------------------------------
    def get(self, order_id: str, *, gen: int | None = None) -> OrderSummary | None:
        (doc,) = self._read(lambda pipe, g: pipe.hget(self.keys.view_order(g, order_id), "doc"), gen)
        return OrderSummary.model_validate_json(doc) if doc else None

    def query(
        self, *, customer: str | None = None, status: OrderStatus | None = None, limit: int = 50
    ) -> list[OrderSummary]:
        """Newest first. Filters combine; each is served by its own index."""
        for _ in range(MAX_READS):
            gen = self.current()
            ids = self._ids(gen, customer, status, limit)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.view_current)
                for order_id in ids:
                    pipe.hget(self.keys.view_order(gen, order_id), "doc")
                current, *docs = pipe.execute()
            if _gen(current) == gen:
                return [OrderSummary.model_validate_json(doc) for doc in docs if doc]
            self._gen = (_gen(current), time.monotonic())
        raise RuntimeError("read model: the current generation kept changing under the query")

    def _ids(self, gen: int, customer: str | None, status: OrderStatus | None, limit: int) -> list[str]:
        keys = self.keys
        if customer and status:
            return self._customer_with_status(gen, customer, status, limit)
        index = (
            keys.view_customer(gen, customer)
            if customer
            else keys.view_status(gen, status.value)
            if status
            else keys.view_all(gen)
        )
        return texts(self.redis.zrevrange(index, 0, limit - 1))

    def _customer_with_status(self, gen: int, customer: str, status: OrderStatus, limit: int) -> list[str]:
        """The customer's orders, newest first, a page at a time, kept if the status index scores
        them (ZMSCORE). The status index holds every order of that status, so it is never read
        whole: the cost follows the customer's orders, not the orders kept."""
        customer_key, status_key = (
            self.keys.view_customer(gen, customer),
            self.keys.view_status(gen, status.value),
        )
        page, start, found = max(limit, QUERY_PAGE), 0, list[str]()
        while len(found) < limit:
            ids = texts(self.redis.zrevrange(customer_key, start, start + page - 1))
            if not ids:
                break
            scores: Any = self.redis.zmscore(status_key, ids)
            found += [order_id for order_id, score in zip(ids, scores, strict=True) if score is not None]
            if len(ids) < page:
                break
            start += page
        return found[:limit]

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
    def project(
        self,
        entries: list[Entry],
        *,
        gens: list[int],
        reader: GroupReader | None = None,
        give_up: dict[str, str] | None = None,
    ) -> int:
        """Apply stream entries to the given generations. Returns how many events were applied
        (in all generations).

        With ``reader`` (the live projector), the same script acknowledges the entries and parks
        in the group's dead-letter stream those that cannot be read, and those in ``give_up``
        (entry id -> reason: the consumer gave up on them), which are then skipped like
        unreadable ones. A rebuild passes no reader: it only writes its generation.
        """
        events: dict[str, dict[int, _Raw]] = defaultdict(dict)
        parked: list[list[str]] = []
        for entry in entries:
            raw, envelope, problem = _read_entry(entry, (give_up or {}).get(entry.id))
            if problem is not None:
                if reader is not None:
                    parked.append(reader.park_fields(entry, problem))
                order_id = envelope[0] if envelope else "?"
                log.error("event %s of order %s is skipped (and parked): %s", entry.id, order_id, problem)
            if envelope is not None:
                events[envelope[0]][envelope[1]] = raw
        for _ in range(MAX_CONFLICTS):
            states = self._load([(gen, order_id) for gen in gens for order_id in events], events)
            writes, applied = [], 0
            current = self.current()
            for state in states:
                write, count = self._advance(state, events[state.order_id], publish=state.gen == current)
                applied += count
                if write is not None:
                    writes.append(write)
            plan: dict[str, Any] = {
                "writes": writes,
                "generations": self.keys.view_generations,
                "current": self.keys.view_current,
            }
            if reader is not None:
                plan["acks"] = reader.ack_plan(entries)
                if parked and reader.parking is not None:
                    plan["park"] = {"stream": reader.parking.parked, "entries": parked}
            if not writes and reader is None:
                return 0
            keys = _keyed(plan)
            reply = self._scripts.run("project", plan, keys=keys)
            if int(reply[0]) == 1:
                self.parked += len(plan.get("park", {}).get("entries", []))
                return applied
        raise RuntimeError("projector: gave up after repeated concurrent changes")

    def _load(self, wanted: list[tuple[int, str]], incoming: dict[str, dict[int, _Raw]]) -> list[_Order]:
        with self.redis.pipeline(transaction=False) as pipe:
            for gen, order_id in wanted:
                pipe.hmget(self.keys.view_order(gen, order_id), ["doc", "version", "base"])
                pipe.hgetall(self.keys.view_parked(gen, order_id))
            replies = pipe.execute()
        states = []
        for (gen, order_id), (doc, version, base), parked in zip(
            wanted, replies[::2], replies[1::2], strict=True
        ):
            states.append(
                _Order(gen, order_id, OrderSummary.model_validate_json(doc) if doc else None,
                       int(version) if version else -1, {int(text(k)): text(v) for k, v in parked.items()},
                       OrderSummary.model_validate_json(base) if base else None)
            )  # fmt: skip
        repairing = [s for s in states if s.base is not None and _repairs(s, incoming[s.order_id])]
        if repairing:
            with self.redis.pipeline(transaction=False) as pipe:
                for state in repairing:
                    pipe.hgetall(self.keys.view_history(state.gen, state.order_id))
                for state, history in zip(repairing, pipe.execute(), strict=True):
                    state.history = {int(text(k)): text(v) for k, v in history.items()}
        return states

    def _advance(
        self, state: _Order, incoming: dict[int, _Raw], *, publish: bool
    ) -> tuple[dict[str, Any] | None, int]:
        """Fold the order's next events into its summary; park what cannot be applied yet."""
        summary, version, base = state.summary, state.version, state.base
        history_add: dict[int, str] = {}
        repairs = _repairs(state, incoming)
        if repairs and base is not None:  # events that could not be read before can be now
            history = {**state.history, **{seq: incoming[seq].json for seq in repairs}}
            refolded = _refold(base, history, version)
            if refolded is not None:
                summary = refolded
                history_add.update({seq: incoming[seq].json for seq in repairs})
        known = max(version, 0)
        waiting = {seq: raw for seq, raw in {**_raws(state.parked), **incoming}.items() if seq > known}
        used = []
        while (seq := max(version, 0) + 1) in waiting:
            raw = waiting[seq]
            if raw.event is None:
                if summary is None:  # its OrderPlaced cannot be read: nothing to show until it can
                    break
                if base is None:
                    base = summary
                summary = skip(summary, seq, raw.kind, raw.at)
            else:
                try:
                    summary = apply(summary, raw.event)
                except ValueError as exc:  # its history starts after the log was trimmed: see rebuild()
                    log.error("order %s: %s", state.order_id, exc)
                    break
            if base is not None:
                history_add[seq] = raw.json
            version = seq
            used.append(seq)
        settled = base is not None and summary is not None and not summary.unreadable
        park = [[seq, raw.json] for seq, raw in incoming.items() if seq > version and seq not in state.parked]
        unpark = [seq for seq in state.parked if seq <= version]
        if summary is state.summary and not park and not unpark and base is state.base:
            return None, 0
        keys, gen = self.keys, state.gen
        write: dict[str, Any] = {
            "gen": gen,
            "key": keys.view_order(gen, state.order_id),
            "expected": state.version,
            "id": state.order_id,
            "parked_key": keys.view_parked(gen, state.order_id),
            "park": park,
            "unpark": unpark,
            "all_key": keys.view_all(gen),
            "history_key": keys.view_history(gen, state.order_id),
            "history_add": [] if settled else [[seq, raw] for seq, raw in history_add.items()],
            "history_clear": settled,
        }
        if settled:
            write["base_clear"] = True
        elif base is not None and base is not state.base:
            write["base"] = base.model_dump_json()
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
        return write, len(used) + len(repairs)


_WRITE_KEYS = ("key", "parked_key", "all_key", "history_key", "status_key", "old_status_key", "customer_key")


def _keyed(plan: dict[str, Any]) -> list[str]:
    """The KEYS of project.lua for ``plan``: every key the plan names, each once; the plan is
    changed to name each by its index in KEYS (1-based, as Lua counts). A write's channel is a
    Pub/Sub channel, not a key."""
    keys: dict[str, int] = {}

    def index(key: str) -> int:
        return keys.setdefault(key, len(keys) + 1)

    plan["current"], plan["generations"] = index(plan["current"]), index(plan["generations"])
    for write in plan["writes"]:
        for name in _WRITE_KEYS:
            if name in write:
                write[name] = index(write[name])
    if "park" in plan:
        plan["park"]["stream"] = index(plan["park"]["stream"])
    if "acks" in plan:
        plan["acks"] = [[index(stream), *rest] for stream, *rest in plan["acks"]]
    return list(keys)


def _gen(raw: bytes | str | None) -> int:
    return int(raw) if raw else 1


def _read_entry(entry: Entry, give_up: str | None) -> tuple[_Raw, tuple[str, int] | None, str | None]:
    """The entry as the projector keeps it, its (order, seq) if those can be read, and why it must
    be parked (None: it can be applied)."""
    fields = original_fields(entry.fields)
    raw_json = json.dumps(fields)
    kind = fields.get("type") or "(no type)"
    try:
        at: float | None = float(fields["at"])
    except (KeyError, ValueError):
        at = None
    try:
        envelope: tuple[str, int] | None = (fields["order_id"], int(fields["seq"]))
    except (KeyError, ValueError):
        envelope = None
    if give_up is not None:
        return _Raw(raw_json, None, kind, at), envelope, give_up
    try:
        event = from_fields(fields)
    except (KeyError, ValueError, ValidationError) as exc:
        problem = (
            f"cannot be read: {'unknown event type ' + repr(kind) if isinstance(exc, KeyError) else exc}"
        )
        return _Raw(raw_json, None, kind, at), envelope, problem[:500]
    return _Raw(raw_json, event, kind, at), (event.order_id, event.sequence), None


def _raws(parked: dict[int, str]) -> dict[int, _Raw]:
    """Parked entries, read again (one that could not be read then may be readable now)."""
    return {seq: _decode_json(raw) for seq, raw in parked.items()}


def _decode_json(raw: str) -> _Raw:
    fields = json.loads(raw)
    read, _, problem = _read_entry(Entry("", fields), None)
    return read if problem is None else _Raw(raw, None, read.kind, read.at)


def _repairs(state: _Order, incoming: dict[int, _Raw]) -> list[int]:
    """Incoming events, readable now, that the summary had to skip."""
    if state.summary is None:
        return []
    skipped = {u.seq for u in state.summary.unreadable}
    return sorted(seq for seq, raw in incoming.items() if seq in skipped and raw.event is not None)


def _refold(base: OrderSummary, history: dict[int, str], upto: int) -> OrderSummary | None:
    """The summary again from ``base``, through every event up to ``upto`` (None if one is missing)."""
    summary = base
    for seq in range(base.version + 1, upto + 1):
        if seq not in history:
            log.error(
                "order %s: event %d missing from the kept history: not folded again", base.order_id, seq
            )
            return None
        raw = _decode_json(history[seq])
        summary = apply(summary, raw.event) if raw.event is not None else skip(summary, seq, raw.kind, raw.at)
    return summary
