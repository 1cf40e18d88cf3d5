"""Machinery shared by the simulated external systems (payment gateway, carrier).

Records are hashes under ``OrderKeys.sim(system, name)``, written once (HSETNX: the first
writer wins, as a real provider's idempotency store). Every call is counted, and a share of
calls fails at random: before the call is processed (nothing recorded) or after (the record
exists, the response is "lost"). Every call takes its operation's configured latency:
``request_latency`` before it acts, ``response_latency`` after (``SimulationConfig``).

``SlowInventory`` gives the shop's own inventory the same latencies, so the order flow's
races with a slow reservation can be played from outside too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, TypeVar

from pydantic import BaseModel
from redis import Redis

from orders.config import Latency
from orders.errors import PartyBusy, TransientError
from orders.inventory import Inventory, ReservationResult, ReservationState
from orders.keys import OrderKeys
from orders.model import LineRequest
from orders.scripts import order_scripts
from workers.codec import text as _text
from workers.limits import RateLimit
from workers.policy import RandomSource

Fault = Literal["before", "after"]
M = TypeVar("M", bound=BaseModel)


def draw_fault(rand: RandomSource, rate: float) -> Fault | None:
    """One draw per call: below ``rate / 2`` the call fails before processing, below ``rate`` after."""
    roll = rand()
    if roll >= rate:
        return None
    return "before" if roll < rate / 2 else "after"


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class SimulatedSystem:
    """What a simulated external system keeps in Redis, and how it fails.

    Records are hashes under ``OrderKeys.sim(system, name)``, written once (HSETNX: the first
    writer wins). ``call`` counts a call and injects the random faults around it.
    """

    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys,
        system: str,
        *,
        fault_rate: float,
        unavailable: type[TransientError],
        rand: RandomSource,
        sleep: Callable[[float], None],
        hang_for: float,
        clock: Callable[[], float],
        request_latency: Latency | None = None,
        response_latency: Latency | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.system = system
        self.fault_rate = fault_rate
        self.unavailable = unavailable
        self.rand = rand
        self.sleep = sleep
        self.hang_for = hang_for
        self.clock = clock
        self.request_latency = request_latency or Latency()
        self.response_latency = response_latency or Latency()
        self.rate_limit = rate_limit
        self._scripts = order_scripts(redis, keys.lua_keyspace)

    def key(self, name: str) -> str:
        return self.keys.sim(self.system, name)

    @contextmanager
    def call(self, operation: str, idempotency_key: str) -> Iterator[None]:
        """Count a call to ``operation``; take its latencies; fail it at random before or after
        its body runs."""
        self.redis.hincrby(self.key("calls"), operation, 1)
        self._refuse_if_busy(operation)
        self._wait(self.request_latency.of(operation))
        fault = draw_fault(self.rand, self.fault_rate)
        if fault == "before":
            raise self.unavailable(f"simulated {self.system} fault before {operation} {idempotency_key!r}")
        yield
        self._wait(self.response_latency.of(operation))
        if fault == "after":
            raise self.unavailable(f"simulated {self.system} fault: response to {operation} lost")

    def _refuse_if_busy(self, operation: str) -> None:
        """A party with a rate limit answers "429: slow down" to calls beyond it (a fixed window)."""
        limit = self.rate_limit
        if limit is None:
            return
        key = self.key("rate-window")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, px=max(1, round(limit.per * 1000)), nx=True)
            pipe.incr(key)
            pipe.pttl(key)
            _, calls, left_ms = pipe.execute()
        if int(calls) > limit.max:
            self.redis.hincrby(self.key("calls"), "refused_busy", 1)
            retry_after = max(0.05, int(left_ms) / 1000)
            raise PartyBusy(f"simulated {self.system}: 429 slow down ({operation})", retry_after=retry_after)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)

    def hang(self) -> None:
        """Take as long as a provider that does not answer."""
        self.sleep(self.hang_for)

    def put_once(self, name: str, field: str, value: str) -> str:
        """Store ``value`` under ``field`` unless something is there; return what is stored."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(self.key(name), field, value)
        pipe.hget(self.key(name), field)
        _, stored = pipe.execute()
        return _text(stored)

    def put_first(self, name: str, rival: str, field: str, value: str) -> tuple[bool, str]:
        """Store ``value`` under ``field`` in ``name`` unless ``name`` or ``rival`` has the field
        (orders/lua/put_first.lua). Returns (True, what ``name`` holds) or (False, what
        ``rival`` holds): the first of the two to be written wins for good."""
        plan = {"field": field, "value": value}
        where, stored = self._scripts.run("put_first", plan, keys=[self.key(name), self.key(rival)])
        return _text(where) == "target", _text(stored)

    def get(self, name: str, field: str) -> str | None:
        value = self.redis.hget(self.key(name), field)
        return None if value is None else _text(value)

    def records(self, name: str, model: type[M]) -> list[M]:
        """Every record of ``name`` as ``model``, oldest first."""
        found = [model.model_validate_json(value) for value in self.values(name)]
        return sorted(found, key=lambda record: float(getattr(record, "created_at", 0.0)))

    def record(self, name: str, field: str, model: type[M]) -> M | None:
        raw = self.get(name, field)
        return None if raw is None else model.model_validate_json(raw)

    def items(self, name: str) -> list[tuple[str, str]]:
        return [(_text(k), _text(v)) for k, v in self.redis.hgetall(self.key(name)).items()]

    def values(self, name: str) -> list[str]:
        return [_text(value) for value in self.redis.hvals(self.key(name))]

    def bump(self, name: str, field: str) -> int:
        return int(self.redis.hincrby(self.key(name), field, 1))

    def claim(self, name: str, target: str, owner: str) -> None:
        """Make ``owner`` the one key that may undo ``target``; ValueError if another key has."""
        holder = self.put_once(name, target, owner)
        if holder != owner:
            raise ValueError(f"{target!r} was already undone under idempotency key {holder!r}")

    def calls(self, operation: str | None = None) -> int:
        counts = {_text(k): int(v) for k, v in self.redis.hgetall(self.key("calls")).items()}
        return counts.get(operation, 0) if operation else sum(counts.values())


class SlowInventory(Inventory):
    """The inventory, with ``reserve`` and ``release`` taking the configured latencies.

    Built by ``chumon.bootstrap`` only when a latency for them is set (tests and the demo use it
    to play a reservation that lands after its order gave it up).
    """

    def __init__(
        self,
        redis: Redis,
        keys: OrderKeys,
        request_latency: Latency,
        response_latency: Latency,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(redis, keys)
        self.request_latency = request_latency
        self.response_latency = response_latency
        self.sleep = sleep

    def reserve(
        self, order_id: str, lines: Sequence[LineRequest] | Sequence[tuple[str, int]]
    ) -> ReservationResult:
        self._wait(self.request_latency.reserve)
        result = super().reserve(order_id, lines)
        self._wait(self.response_latency.reserve)
        return result

    def release(self, order_id: str) -> ReservationState | None:
        self._wait(self.request_latency.release)
        state = super().release(order_id)
        self._wait(self.response_latency.release)
        return state

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)
