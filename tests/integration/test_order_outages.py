"""The order flow against a Redis of the test's own that refuses writes for a while.

The one effect no idempotency key can take back is an email: once the mail server has it, a
retry sends it again. So a commit of EmailSent that Redis refuses (out of memory here) must be
waited out by the handler, not turned into a retry. Counted from the sink's raw records.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from redis import Redis

import jobs.orders
from orders.notifications import Email, Mailer, SentEmail
from tests.flow import running_flow
from tests.redisproc import RedisServer
from tests.support import wait_until


def oom_errors(redis: Redis) -> int:
    """Commands Redis refused for lack of memory so far (INFO errorstats, Redis 6.2 and later)."""
    return int(redis.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


class FullAfterSend:
    """A mailer whose first send is followed by Redis refusing every write for `seconds`: the
    worst moment, between the mail server taking the message and EmailSent's commit."""

    def __init__(self, inner: Mailer, redis: Redis, seconds: float) -> None:
        self.inner, self.redis, self.seconds = inner, redis, seconds
        self.tripped = threading.Event()
        self.lifted = threading.Event()

    def send(self, email: Email) -> SentEmail:
        sent = self.inner.send(email)
        if not self.tripped.is_set():
            self.tripped.set()
            self.redis.config_set("maxmemory-policy", "noeviction")
            self.redis.config_set("maxmemory", "1")  # every write that may grow memory is refused
            threading.Timer(self.seconds, self._lift).start()
        return sent

    def _lift(self) -> None:
        self.redis.config_set("maxmemory", "0")
        self.lifted.set()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=False) as srv:
        yield srv


def test_an_email_whose_record_redis_refuses_for_a_while_is_sent_once(server: RedisServer) -> None:
    redis = server.client()
    with running_flow(redis, server.url) as flow:
        admin = server.client()
        mailer = FullAfterSend(flow.services.mailer, admin, seconds=1.5)
        jobs.orders.configure(dataclasses.replace(flow.services, mailer=mailer))
        refused = oom_errors(redis)
        order_id = flow.place(("TEA", 1))
        wait_until(mailer.lifted.is_set, timeout=30, message="the email sent and Redis full for a while")
        assert oom_errors(redis) > refused  # the record of the email was refused at least once
        details = flow.settled(order_id, timeout=30)
        assert details.status.value == "CONFIRMED"
        sent = [m for m in flow.sink.messages() if m["order_id"] == order_id]
        assert [m["kind"] for m in sent] == ["confirmation"], sent  # every message the sink got
        assert flow.audit().ok
        admin.close()
    redis.close()
