"""The listener's connection: kept across reads on a plain pool, handed back to a Sentinel pool
after every read, so a connection to a primary a failover replaced is dropped by the pool
(redis-py's Sentinel pool does that when a connection comes back) instead of blocking on the
demoted primary, which keeps answering XREAD but never sees a new signal."""

from __future__ import annotations

import logging
from typing import Any

from redis.connection import ConnectionPool
from redis.sentinel import SentinelConnectionPool

from workers.keys import Keys
from workers.listener import Listener, _due, _named


class Conn:
    def __init__(self, listener: list[Listener], reads: int) -> None:
        self.listener, self.left = listener, reads

    def send_command(self, *args: Any) -> None:
        pass

    def read_response(self) -> Any:
        self.left -= 1
        if self.left <= 0:
            self.listener[0].stopped.set()
        return None  # the read timed out

    def disconnect(self) -> None:
        pass


def counting(base: type) -> Any:
    class Pool(base):  # type: ignore[misc,valid-type]
        def __init__(self, conn: Conn) -> None:  # no real pool: only check-outs are counted
            self.conn, self.taken, self.returned = conn, 0, 0

        def get_connection(self, *args: Any, **kwargs: Any) -> Conn:
            self.taken += 1
            return self.conn

        def release(self, connection: Any) -> None:
            self.returned += 1

    return Pool


class Client:
    def __init__(self, pool: Any) -> None:
        self.connection_pool = pool


def reads_through(base: type, reads: int = 5) -> Any:
    holder: list[Listener] = []
    pool = counting(base)(Conn(holder, reads))
    listener = Listener(lambda: Client(pool), Keys(), ["q"], lambda named: None, logging.getLogger("test"))  # type: ignore[arg-type,return-value]
    holder.append(listener)
    listener.run()  # in this thread: returns once the fake connection stops it
    return pool


def test_a_plain_pool_connection_is_kept_across_reads() -> None:
    pool = reads_through(ConnectionPool)
    assert (pool.taken, pool.returned) == (1, 1)  # taken once, handed back when the listener stops


def test_a_sentinel_pool_connection_goes_back_after_every_read() -> None:
    pool = reads_through(SentinelConnectionPool)
    assert (pool.taken, pool.returned) == (5, 5)


def test_a_signal_names_its_job_only_in_the_shape_enqueue_writes() -> None:
    assert _named([b"q", b"q1", b"id", b"j1", b"ek", b""]) == [(b"j1", b"")]
    assert _named([b"q", b"q1", b"id", b"j1", b"ek", b"t:k"]) == [(b"j1", b"t:k")]
    assert _named([b"q", b"q1"]) == []  # a retry, a requeue, a batch: no job named
    assert _named([b"q", b"q1", b"id", b"j1", b"xx", b""]) == []  # hand-written garbage
    assert _named(None) == [] and _named([b"q", b"q1", b"id", 5, b"ek", b""]) == []


def test_a_signal_says_when_a_scheduled_job_is_due_in_the_shape_enqueue_writes() -> None:
    assert _due([b"q", b"q1", b"due", b"1764754800.250000"]) == [1764754800.25]
    assert _due([b"q", b"q1"]) == [] and _due([b"q", b"q1", b"id", b"j1", b"ek", b""]) == []
    assert _due([b"q", b"q1", b"due", b"soon"]) == []  # hand-written garbage
