"""Waiting for replicas before saying "done" (opt-in: ``CHUMON_REDIS__REPLICAS_ACK=N``).

Redis replicates asynchronously: a primary answers a write before any replica has it, so a
failover (planned or not) can lose the last writes the old primary acknowledged. With
``replicas_ack`` N > 0, each write that must survive a failover (``place_order``, an
enqueue, a saga transition) is sent in one pipeline with:

- a **fence**: a one-key write (``Keys.replication_fence``), so the wait below covers every
  write before it, also when the script itself wrote nothing (a repeated ``place_order``
  whose first call was not replicated finds the order and must still wait for it);
- ``WAIT N timeout``: Redis answers once N replicas hold everything up to the fence, or after
  ``replicas_timeout_ms`` with how many do.

Fewer than N raises ``NotReplicated``: the write is on the primary but may not survive a
failover. It is not undone; the caller retries with the same idempotency key, which finds
the first write (or, if it was lost, makes it again) and waits again. Everything in one
pipeline runs on one connection, so the wait is on the server that took the write. On Redis
Cluster the fence is the write's own tag's (workers/keys.py), sent with the WAIT to the primary
of that slot on one connection of its own after the write.

With ``replicas_ack`` 0 (the default) nothing changes: the write is sent alone, as before,
with no extra round trip. ``WAIT`` does not make Redis strongly consistent (a write that
timed out stays on the primary and may still be replicated later); it makes an
acknowledged write one that a replica has, which is what a failover keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from workers.connection import RedisOptions, cluster_node_client, is_cluster, slot_trouble
from workers.errors import RuntimeFault


class NotReplicated(RuntimeFault):
    """A write reached the primary but not enough replicas in time: retry it with the same key."""

    def __init__(self, acked: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"only {acked} of {wanted} replica(s) acknowledged the write within {timeout_ms} ms: "
            "it may be lost in a failover; retry it (with the same idempotency key)"
        )
        self.acked = acked
        self.wanted = wanted


class Durability:
    """Runs writes so that they are replicated before they count (see the module's docstring)."""

    def __init__(self, options: RedisOptions, fence_key: str) -> None:
        self.wanted = options.replicas_ack
        self.timeout_ms = options.replicas_timeout_ms
        self.fence_key = fence_key

    @property
    def enabled(self) -> bool:
        return self.wanted > 0

    def write(self, redis: Redis, send: Callable[[Redis | Pipeline], Any]) -> Any:
        """``send(client)`` and its reply; with waiting on, raises NotReplicated after the write."""
        if not self.enabled:
            return send(redis)
        if is_cluster(redis):
            reply = send(redis)
            self._check(self._fence_on_node(redis))
            return reply
        with redis.pipeline(transaction=False) as pipe:
            send(pipe)
            self._fence(pipe)
            replies = pipe.execute()
        self._check(replies[-1])
        return replies[0]

    def write_all(self, redis: Redis, send: Callable[[Pipeline], Any]) -> list[Any]:
        """``send(pipe)`` queues writes on one pipeline; their replies, waited for like ``write``."""
        cluster = is_cluster(redis)
        with redis.pipeline(transaction=False) as pipe:
            send(pipe)
            if self.enabled and not cluster:
                self._fence(pipe)
            replies = pipe.execute()
        if not self.enabled:
            return replies
        if cluster:
            self._check(self._fence_on_node(redis))
            return replies
        self._check(replies[-1])
        return replies[:-2]

    def settle(self, redis: Redis) -> None:
        """Wait until everything written so far is replicated (after a write that found its work done)."""
        if not self.enabled:
            return
        if is_cluster(redis):
            self._check(self._fence_on_node(redis))
            return
        with redis.pipeline(transaction=False) as pipe:
            self._fence(pipe)
            replies = pipe.execute()
        self._check(replies[-1])

    def _fence_on_node(self, redis: Redis) -> Any:
        """On a cluster: the fence and WAIT on one connection to the primary of the fence's slot,
        which is the slot of every key the write touched (the cluster layout tags them alike)."""
        try:
            with cluster_node_client(redis, self.fence_key).pipeline(transaction=False) as pipe:
                self._fence(pipe)
                return pipe.execute()[-1]
        except (RedisError, OSError) as exc:  # a slot that moved, a primary gone: learn it
            slot_trouble(redis, exc)
            raise

    def _fence(self, pipe: Pipeline) -> None:
        pipe.set(self.fence_key, "1")
        pipe.execute_command("WAIT", self.wanted, self.timeout_ms)  # type: ignore[no-untyped-call]

    def _check(self, acked: Any) -> None:
        if int(acked) < self.wanted:
            raise NotReplicated(int(acked), self.wanted, self.timeout_ms)
