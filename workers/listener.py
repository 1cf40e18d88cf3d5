"""Wakes an idle worker the moment one of its queues gets work.

Every enqueue, retry and requeue appends an entry to its queue's signal stream (see
``includes/common.lua``). This thread blocks on those streams with XREAD from the last entry
it saw, so no signal falls between "the queues were empty" and "start waiting". It also
wakes the worker when a read times out, a safety poll that catches jobs pushed by tools that
do not signal (rq's own ``enqueue``, rq-dashboard's requeue). An entry that names the job an
enqueue put in line (its id and effect key) is passed on with the wake-up: an idle worker claims
it without reading the head of the queue first (workers/stepkeys.py). Entries that only say a job
was scheduled for later (``due``) do not wake the worker: they tell it when to look.

The thread keeps one connection of the client's pool for itself and sends XREAD on it as
redis-py's ``execute_command`` would, without the pool check-out and per-command wrappers each
time: on an idle worker this read is on the path of every job, and the conductor waits for
this thread to be blocked again before it can claim (one GIL). Any error closes the
connection; the next read reconnects. A Sentinel client's connection goes back to its pool
after every read and is taken again: the pool drops one that still points at a primary a
failover replaced (a demoted primary keeps answering XREAD, so nothing else would notice).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from redis import ConnectionPool, Redis
from redis.exceptions import RedisError
from redis.sentinel import SentinelConnectionPool

from workers.codec import text
from workers.connection import cluster_node_client, is_cluster
from workers.keys import Keys


class Listener(threading.Thread):
    def __init__(
        self,
        connect: Callable[[], Redis],
        keys: Keys,
        queues: list[str],
        wake: Callable[[list[tuple[bytes, bytes]]], None],
        log: logging.Logger,
        wake_at: Callable[[float], None] | None = None,
        *,
        block_ms: int = 1000,
    ) -> None:
        super().__init__(name="chumon-listener", daemon=True)
        self.connect = connect
        self.streams: dict[str, str] = {keys.signal(queue): "0-0" for queue in queues}
        self.wake = wake
        self.wake_at = wake_at or (lambda due: wake([]))
        self.log = log
        self.block_ms = block_ms
        self.stopped = threading.Event()

    def run(self) -> None:
        pool: ConnectionPool | None = None
        conn: Any = None
        try:
            while not self.stopped.is_set():
                try:
                    if conn is None:
                        pool = self._pool()
                        conn = pool.get_connection()
                    elif isinstance(pool, SentinelConnectionPool):  # see the module's docstring
                        pool.release(conn)
                        conn = None
                        conn = pool.get_connection()
                    reply = self._read(conn)
                except (RedisError, OSError, ValueError) as exc:  # ValueError: socket closed under us
                    if conn is not None:
                        conn.disconnect()
                        if pool is not None:
                            pool.release(conn)
                        conn = None  # on a cluster, the slot may have moved: look it up again
                    if self.stopped.is_set():
                        return
                    self.log.warning("listener: %s; retrying", exc)
                    self.stopped.wait(0.5)
                    continue
                named: list[tuple[bytes, bytes]] = []
                dues: list[float] = []
                plain = not reply  # a read that timed out: the safety poll
                for stream, entries in reply.items() if isinstance(reply, dict) else reply or ():
                    entry_id, fields = entries[-1]
                    self.streams[text(stream)] = text(entry_id)
                    job, due = _named(fields), _due(fields)
                    named += job
                    dues += due
                    plain = plain or not (job or due)
                if dues and not (named or plain):
                    self.wake_at(min(dues))  # only jobs scheduled for later: nothing to claim now
                else:
                    self.wake(named)
        finally:
            if pool is not None and conn is not None:
                pool.release(conn)

    def _pool(self) -> Any:
        """The pool to read from: the client's own; on a cluster, that of the primary now serving
        the signals' slot (one worker's queues share one tag, workers/keys.py)."""
        client = self.connect()
        if not is_cluster(client):
            return client.connection_pool
        cluster: Any = client
        with contextlib.suppress(RedisError, OSError):
            cluster.nodes_manager.initialize()  # after a failover, learn who serves the slot now
        return cluster_node_client(cluster, next(iter(self.streams))).connection_pool

    def _read(self, conn: Any) -> Any:
        """XREAD COUNT 1 BLOCK ms STREAMS ... on ``conn``: the raw reply (RESP2 list or RESP3 map)."""
        streams = self.streams
        conn.send_command("XREAD", "COUNT", 1, "BLOCK", self.block_ms, "STREAMS", *streams, *streams.values())
        return conn.read_response()

    def stop(self) -> None:
        self.stopped.set()


def _due(fields: Any) -> list[float]:
    """When the job a signal entry says was scheduled is due (server time), if it says so."""
    if not isinstance(fields, list) or len(fields) != 4 or fields[2] != b"due":
        return []
    try:
        return [float(fields[3])]
    except (TypeError, ValueError):
        return []


def _named(fields: Any) -> list[tuple[bytes, bytes]]:
    """The job a signal entry names, as (id, effect key), if it names one (includes/common.lua hint)."""
    if not isinstance(fields, list) or len(fields) != 6 or fields[2] != b"id" or fields[4] != b"ek":
        return []
    job_id, effect_key = fields[3], fields[5]
    return [(job_id, effect_key)] if isinstance(job_id, bytes) and isinstance(effect_key, bytes) else []
