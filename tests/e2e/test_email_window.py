"""The crash window of an email, measured with real processes (docs/orders.md, "Emails: at most
once, except in one crash window").

The window opens when the mail server has the whole message and closes when EmailSent is
committed. The sink is told to be slow at one point or the other (tests only: chumon/smtpsink.py):

- ``slowack``: it records the message, then takes 1 s to say 250: a kill in that second is a
  kill inside the window, and the retry sends the message again: one duplicate per kill;
- ``slowrcpt``: it takes 1 s to accept the recipient, before any of the message is sent: a
  kill there is a kill during a send but before the window: no duplicate.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.keys import OrderKeys
from producer import Producer
from tests.e2e.test_order_processes import EventsProcess
from tests.flow import CATALOGUE, Flow, flow_settings
from tests.support import ChumonProcess, WorkerProcess, wait_until
from workers.codec import decode_data

pytestmark = pytest.mark.e2e
PER_SIDE = 2


def sent(flow: Any, order_id: str) -> None:
    """Wait for the order's EmailSent (its retry, after the kill, done)."""
    wait_until(lambda: flow.order(order_id).emails, timeout=60, message="EmailSent, after the retry")


def copies(flow: Flow, order_id: str) -> int:
    return sum(1 for m in flow.sink.messages() if m["order_id"] == order_id)


def email_job_running(redis: Redis, order_id: str) -> bool:
    """The order's email job has been started by a worker (rq's started-job registry, whose
    members are ``<job id>:<execution>``)."""
    for member in redis.zrange("rq:wip:notifications", 0, -1):
        data = redis.hget(b"rq:job:" + member.split(b":")[0], "data")
        if data and decode_data(data)[1].get("order_id") == order_id:
            return True
    return False


def test_kills_inside_the_window_duplicate_an_email_and_kills_before_it_do_not(
    redis: Redis, redis_url: str
) -> None:
    with SmtpSink(port=0, redis=redis, keys=OrderKeys(), slow_reply=1.0) as sink:
        settings = flow_settings(redis_url, sink.port)
        services = build_services(redis, settings)
        for sku, (on_hand, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, on_hand, price)
        env: dict[str, Any] = {"smtp__port": sink.port}
        steady = WorkerProcess(redis_url, "--queues", "orders", "inventory", "payments", "shipping",
                               app="jobs:registry", **env)  # fmt: skip
        events = EventsProcess(redis_url, **env)
        mail: list[ChumonProcess] = []
        producer = Producer(redis, settings, jobs.registry, services.orders)
        flow = Flow(redis, settings, services, producer, sink, OrderKeys())

        def mail_worker() -> ChumonProcess:
            mail.append(WorkerProcess(redis_url, "--queues", "notifications", app="jobs:registry", **env))
            return mail[-1]

        try:
            worker = mail_worker()
            inside, before = [], []
            for i in range(PER_SIDE):
                order_id = flow.place(("TEA", 1), customer_email=f"slowack-{i}@example.com")
                wait_until(
                    lambda o=order_id: copies(flow, o) == 1, timeout=60, message="the server to have it"
                )
                worker.kill()  # the server has the message; its 250 is a second away: inside the window
                worker = mail_worker()
                inside.append(order_id)
                sent(flow, order_id)  # its retry done: the next kill cannot land inside the retry's window
            for i in range(PER_SIDE):
                order_id = flow.place(("TEA", 1), customer_email=f"slowrcpt-{i}@example.com")
                wait_until(
                    lambda o=order_id: email_job_running(redis, o), timeout=60, message="the send to start"
                )
                worker.kill()  # the job runs, the server has nothing of the message yet: before the window
                worker = mail_worker()
                before.append(order_id)
                sent(flow, order_id)
            duplicates = {order_id: copies(flow, order_id) - 1 for order_id in inside + before}
            seen_inside, seen_before = (sum(duplicates[o] for o in side) for side in (inside, before))
            print(
                f"\nkills inside the window: {len(inside)}, duplicates {seen_inside}; "
                f"kills during a send before it: {len(before)}, duplicates {seen_before}"
            )
            assert [duplicates[o] for o in inside] == [1] * PER_SIDE  # one more copy per kill inside
            assert [duplicates[o] for o in before] == [0] * PER_SIDE  # none for a kill before it
            ids = {m["message_id"] for m in sink.messages() if m["order_id"] in inside}
            assert len(ids) == PER_SIDE  # the copy carries the same Message-ID: a receiver can drop it
        finally:
            for process in [steady, events, *mail]:
                process.stop()
