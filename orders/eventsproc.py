"""The event log's consumers in one process (``chumon events``): the projector, and in the
choreographed style the five services' reactors, each in its own thread and consumer group.

Each can as well run in a process of its own; several copies of one consumer share its
group's work, and take over each other's unacknowledged entries when one dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from orders.keys import OrderKeys
from orders.projector import Projector
from orders.reactors import SERVICES, Reactions, Reactor
from orders.readmodel import ReadModel
from orders.service import OrderService

log = logging.getLogger("chumon.events")


class EventProcessors:
    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys,
        orders: OrderService,
        *,
        choreographed: bool,
        step_timeout: float,
        claim_after: float = 5.0,
    ) -> None:
        self.view = ReadModel(redis, keys)
        self.projector = Projector(redis, keys, self.view, claim_after=claim_after)
        reactions = Reactions(orders, step_timeout=step_timeout)
        self.reactors = (
            [Reactor(service, reactions, keys, claim_after=claim_after) for service in SERVICES]
            if choreographed
            else []
        )
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        loops: list[tuple[str, Callable[[], int]]] = [("projector", self.projector.step)]
        loops += [(f"reactor-{r.service}", r.step) for r in self.reactors]
        self.projector.reader.ensure_group()
        for reactor in self.reactors:
            reactor.reader.ensure_group()
        for name, step in loops:
            thread = threading.Thread(target=self._loop, args=(name, step), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout)

    def _loop(self, name: str, step: Callable[[], int]) -> None:
        pause = 0.0
        while not self.stopped.is_set():
            try:
                step()
                pause = 0.0
            except (RedisError, OSError, ValueError) as exc:
                if self.stopped.is_set():
                    return
                pause = min(5.0, max(0.1, pause * 2))
                log.error("%s: %s; retrying in %.1f s", name, exc, pause)
                time.sleep(pause)
            except Exception:
                pause = min(5.0, max(0.1, pause * 2))
                log.exception("%s failed; retrying in %.1f s", name, pause)
                time.sleep(pause)
