"""Redis writes a job commits together with its own completion: effects that happen exactly once.

A handler that changes Redis directly (``ctx.redis.hincrby(...)``) and then dies before the
worker settles the attempt has its write applied, and the retry writes again: at least once.
Written through ``ctx.effects`` instead, the writes are only recorded while the handler
runs; the script that marks the attempt completed applies them in the same atomic call. A
run that crashes, times out, fails, or was presumed dead and settled elsewhere applies
nothing, and a job completes once, so its effects happen exactly once::

    @registry.job("accounts.deposit", queue="accounts", idempotency_key=lambda p: p.reference)
    def deposit(payload: Deposit, ctx: JobContext) -> None:
        ctx.effects.hincrby("balances", payload.account, payload.amount)

The script checks every effect before it writes anything (each key absent or of the type its
command needs, every counter an integer that stays below 2**53). An attempt whose effects
cannot be applied is dead-lettered, with the reason, and nothing of it is written.

Only the commands below are allowed, at most ``MAX_EFFECTS`` per attempt; keys the runtime
keeps for itself (``rq:...``, chumon's liveness, signal and idempotency keys) are refused. On
Redis Cluster an effect's key must be in its queue's slot (``balances:{accounts}`` for a job of
queue ``accounts``): the completion and its effects are one script, which stays in one slot.
Effects are not read back while the handler runs: it sees Redis as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from workers.errors import Permanent

MAX_EFFECTS = 64
MAX_ARGUMENT = 512 * 1024  # bytes of one key or value
MAX_COUNTER = 2**53


class EffectError(Permanent, ValueError):
    """An effect that can never be applied (bad command or arguments): raised in the handler, and
    permanent, since retrying the same code cannot mend it."""


def _key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_ARGUMENT:
        raise EffectError(f"an effect's key must be a non-empty string, not {key!r}")
    return key


def _value(value: str | bytes | int | float) -> str:
    if isinstance(value, bool):
        raise EffectError("an effect's value may not be a bool: use 0 or 1, or a string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EffectError(f"an effect's value must be finite, not {value!r}")
        return repr(value)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise EffectError("an effect's bytes value must be UTF-8 (scripts carry text)") from None
    if not isinstance(value, str) or len(value.encode()) > MAX_ARGUMENT:
        raise EffectError("an effect's value must be a string, bytes or a number, at most 512 KiB")
    return value


def _integer(amount: int) -> str:
    if isinstance(amount, bool) or not isinstance(amount, int) or abs(amount) >= MAX_COUNTER:
        raise EffectError(f"an increment must be an integer below 2**53, not {amount!r}")
    return str(amount)


def _score(score: float) -> str:
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise EffectError(f"a score must be a finite number, not {score!r}")
    return repr(float(score))


def _seconds(seconds: int) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 10 * 365 * 86400:
        raise EffectError(f"an expiry must be a whole number of seconds from 1 to ten years, not {seconds!r}")
    return str(seconds)


class Effects:
    """The Redis writes of one attempt, applied with its completion (see the module docstring)."""

    def __init__(self, owned: Callable[[str], bool | str] = lambda key: False) -> None:
        """``owned(key)``: whether ``key`` is refused (True: the runtime's own; a string: why)."""
        self._owned = owned
        self.commands: list[list[str]] = []

    def __len__(self) -> int:
        return len(self.commands)

    def _add(self, command: str, key: str, *args: str) -> None:
        if len(self.commands) >= MAX_EFFECTS:
            raise EffectError(f"at most {MAX_EFFECTS} effects per attempt")
        key = _key(key)
        refused = self._owned(key)
        if refused:
            raise EffectError(
                refused
                if isinstance(refused, str)
                else f"{key!r} is one of the runtime's own keys; a job's effects may not write it"
            )
        self.commands.append([command, key, *args])

    # strings and counters
    def set(self, key: str, value: str | bytes | int | float) -> None:
        self._add("SET", key, _value(value))

    def incrby(self, key: str, amount: int) -> None:
        self._add("INCRBY", key, _integer(amount))

    def delete(self, key: str) -> None:
        self._add("DEL", key)

    def expire(self, key: str, seconds: int) -> None:
        self._add("EXPIRE", key, _seconds(seconds))

    # hashes
    def hset(self, key: str, mapping: dict[str, Any]) -> None:
        if not mapping:
            raise EffectError("hset needs at least one field")
        self._add("HSET", key, *(part for f, v in mapping.items() for part in (_value(f), _value(v))))

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._add("HINCRBY", key, _value(field), _integer(amount))

    def hdel(self, key: str, *fields: str) -> None:
        if not fields:
            raise EffectError("hdel needs at least one field")
        self._add("HDEL", key, *(_value(f) for f in fields))

    # sets, sorted sets, lists, streams
    def sadd(self, key: str, *members: str) -> None:
        if not members:
            raise EffectError("sadd needs at least one member")
        self._add("SADD", key, *(_value(m) for m in members))

    def srem(self, key: str, *members: str) -> None:
        if not members:
            raise EffectError("srem needs at least one member")
        self._add("SREM", key, *(_value(m) for m in members))

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        if not mapping:
            raise EffectError("zadd needs at least one member")
        self._add("ZADD", key, *(part for m, s in mapping.items() for part in (_score(s), _value(m))))

    def zincrby(self, key: str, amount: float, member: str) -> None:
        self._add("ZINCRBY", key, _score(amount), _value(member))

    def zrem(self, key: str, *members: str) -> None:
        if not members:
            raise EffectError("zrem needs at least one member")
        self._add("ZREM", key, *(_value(m) for m in members))

    def rpush(self, key: str, *values: str | bytes | int | float) -> None:
        if not values:
            raise EffectError("rpush needs at least one value")
        self._add("RPUSH", key, *(_value(v) for v in values))

    def lpush(self, key: str, *values: str | bytes | int | float) -> None:
        if not values:
            raise EffectError("lpush needs at least one value")
        self._add("LPUSH", key, *(_value(v) for v in values))

    def xadd(self, key: str, fields: dict[str, Any]) -> None:
        if not fields:
            raise EffectError("xadd needs at least one field")
        self._add("XADD", key, "*", *(part for f, v in fields.items() for part in (_value(f), _value(v))))
