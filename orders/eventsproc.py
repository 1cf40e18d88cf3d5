"""The event log's consumers in one process (``chumon events``): the projector, in the
choreographed style the five services' reactors, and the saga watchdog.

The projector, the notifications reactor and the watchdog each run in a thread. The reactors
on an order's path (inventory, payments, shipping, orders) share one thread per stream
(``workers.consumer.Together``): a round reads all four groups in one round trip and sends the
acknowledgements of what none reacted to in one more. Each event concerns one or two of them;
apart, every event woke four threads under one GIL, for a read and an acknowledgement each.

Each consumer can as well run in a process of its own; several copies of one consumer share
its group's work, and take over each other's unacknowledged entries when one dies.

The process outlives Redis: every loop catches every Redis error, backs off (capped at 5 s)
and tries again, and the process logs one line when Redis goes away and one when it answers
again (``workers.consumer.Outage``). A group that Redis lost (restarted without its data) is
created again. Only a configuration error (refused credentials, a missing ACL permission, a
command the server lacks) stops it: ``fatal`` names it, and ``chumon events`` exits with it.

The watchdog looks every ``saga.watchdog_interval`` seconds for sagas past their deadline
(``OrderService.overdue``) and flags each for a person (``Saga.stalled``): a step or a
compensation whose job was lost, dead-lettered without its hook, or stuck anywhere else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from redis import Redis

from orders.keys import OrderKeys
from orders.metrics import process_consumer_metrics
from orders.projector import Projector
from orders.reactors import AFTER_OUTCOME, SERVICES, Reactions, Reactor
from orders.readmodel import ReadModel
from orders.service import OrderService
from workers.consumer import TRANSIENT, Outage, Together, configuration_error
from workers.streams import Acks

log = logging.getLogger("chumon.events")


class Watchdog:
    """Flags the orders whose saga is past its deadline."""

    def __init__(self, orders: OrderService, *, interval: float) -> None:
        self.orders = orders
        self.interval = interval
        self.flagged = 0

    def step(self) -> int:
        """One look; returns how many orders it flagged."""
        flagged = 0
        for order_id in self.orders.overdue():
            try:
                if self.orders.stalled(order_id, cause="watchdog"):
                    flagged += 1
                    log.warning("order %s: saga past its deadline: flagged for a person", order_id)
            except LookupError as exc:  # the order is gone: nothing to watch
                log.error("watchdog: %s", exc)
        self.flagged += flagged
        return flagged


def _name(consumer: Projector | Reactor) -> str:
    """A consumer thread's name: its group, and its shard's on Redis Cluster."""
    shard = consumer.reader.stream.split("{")[1].split("}")[0] if "{" in consumer.reader.stream else ""
    return f"{consumer.reader.group}@{shard}" if shard else consumer.reader.group


class EventProcessors:
    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys | Sequence[OrderKeys],
        orders: OrderService,
        *,
        choreographed: bool,
        step_timeout: float,
        claim_after: float = 5.0,
        max_deliveries: int = 5,
        watchdog_interval: float = 5.0,
        gather: float = 0.0,
    ) -> None:
        # on Redis Cluster, ``keys`` is every shard's: each shard's stream has its own consumers
        shards = [keys] if isinstance(keys, OrderKeys) else list(keys)
        self.views = [ReadModel(redis, shard) for shard in shards]
        self.view = self.views[0]
        self.projectors = [
            Projector(
                redis, shard, view, claim_after=claim_after, max_deliveries=max_deliveries, gather=gather
            )
            for shard, view in zip(shards, self.views, strict=True)
        ]
        self.projector = self.projectors[0]
        self.reactors = (
            [
                Reactor(
                    service,
                    Reactions(orders, step_timeout=step_timeout),  # its own: the outbox is per thread
                    shard,
                    claim_after=claim_after,
                    max_deliveries=max_deliveries,
                    gather=gather if service in AFTER_OUTCOME else 0.0,
                )
                for shard in shards
                for service in SERVICES
            ]
            if choreographed
            else []
        )
        self.watchdog = Watchdog(orders, interval=watchdog_interval)
        self.outage = Outage(log)
        self.stopped = threading.Event()
        self.fatal: str | None = None
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        alone: list[Projector | Reactor] = [*self.projectors]
        on_path: dict[str, list[Reactor]] = {}  # by stream
        for reactor in self.reactors:
            if reactor.gather:
                alone.append(reactor)
            else:
                on_path.setdefault(reactor.reader.stream, []).append(reactor)
        for consumer in alone:
            self._spawn(_name(consumer), self._consumer_loop(consumer))
        for reactors in on_path.values():
            name = _name(reactors[0]).replace(reactors[0].reader.group, "reactors")
            self._spawn(name, self._shared_loop(reactors))
        self._spawn("watchdog", self._watchdog_loop)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout)

    def parked(self) -> dict[str, int]:
        """Entries each consumer parked since the process started."""
        consumers: list[Projector | Reactor] = [*self.projectors, *self.reactors]
        parked: dict[str, int] = {}
        for consumer in consumers:  # a group's count over every shard
            parked[consumer.reader.group] = parked.get(consumer.reader.group, 0) + consumer.parked
        return parked

    def _spawn(self, name: str, loop: Callable[[], None]) -> None:
        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _consumer_loop(self, consumer: Projector | Reactor) -> Callable[[], None]:
        return self._loop(consumer.reader.group, [consumer], consumer.step)

    def _shared_loop(self, reactors: list[Reactor]) -> Callable[[], None]:
        """One thread for several reactors of one stream (``Together``)."""
        acks = Acks(reactors[0].reader.redis)
        for reactor in reactors:
            reactor.acks = acks
        together = Together(reactors, acks)
        return self._loop("reactors", reactors, lambda: together.round(log))

    def _loop(
        self, name: str, consumers: Sequence[Projector | Reactor], step: Callable[[], object]
    ) -> Callable[[], None]:
        """Make the consumers' groups, then run ``step`` until stopped, counting what each parks."""
        counters = [process_consumer_metrics().parked.labels(c.reader.group) for c in consumers]

        def ensure() -> None:
            for consumer in consumers:
                consumer.reader.ensure_group()

        def loop() -> None:
            ready, parked = False, [0] * len(consumers)
            while not self.stopped.is_set():
                if not ready:
                    ready = self._guarded(name, ensure)
                    continue
                if self._guarded(name, step):
                    for n, consumer in enumerate(consumers):
                        if consumer.parked != parked[n]:
                            counters[n].inc(consumer.parked - parked[n])
                            parked[n] = consumer.parked

        return loop

    def _watchdog_loop(self) -> None:
        while not self.stopped.wait(self.watchdog.interval):
            self._guarded("watchdog", self.watchdog.step)

    def _guarded(self, name: str, step: Callable[[], object]) -> bool:
        """Run one step; on a failure, log it, wait the backoff, and return False."""
        try:
            step()
        except TRANSIENT as exc:
            if self.stopped.is_set():
                return False
            problem = configuration_error(exc)
            if problem is not None:
                self.fatal = self.fatal or problem
                log.error("%s: %s", name, problem)
                self.stopped.set()
                return False
            self.stopped.wait(self.outage.failed(name, exc))
            return False
        except Exception:
            log.exception("%s failed; retrying", name)
            self.stopped.wait(1.0)
            return False
        self.outage.ok(name)
        return True
