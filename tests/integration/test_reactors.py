"""A reactor's batch: its reactions' commands go out in one enqueue call, each under the key it
would have had alone, so a redelivered event sends nothing twice whichever batch it comes in;
the orders service's own reactions (confirm, cancel) are decided on one read of the batch's
orders and committed in one round trip."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from redis.connection import AbstractConnection

import jobs
import jobs.orders
from chumon.bootstrap import build_services
from orders.commands import CheckStepTimeout
from orders.handlers import Services
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.reactors import Reactions, Reactor
from producer import Producer
from tests.flow import CATALOGUE, QUEUES, flow_settings, with_style
from tests.support import wait_until, worker_thread
from workers.consumer import Together
from workers.streams import Acks


@pytest.fixture
def services(redis: Redis, redis_url: str) -> Iterator[Services]:
    settings = with_style(flow_settings(redis_url, 2525), "choreographed")  # nothing is emailed here
    built = build_services(redis, settings)
    jobs.orders.configure(built)
    for sku, (on_hand, price) in CATALOGUE.items():
        built.inventory.set_stock(sku, on_hand, price)
    yield built
    jobs.orders.configure(None)


def test_a_batch_goes_out_in_one_enqueue_and_a_redelivery_sends_nothing_twice(
    redis: Redis, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = with_style(flow_settings("redis://unused", 2525), "choreographed")
    producer = Producer(redis, settings, jobs.registry, services.orders)
    customer = {"customer_name": "Ada", "customer_email": "ada@example.com", "ship_to": "12 Lane, London"}
    order_ids = [producer.place_order(items=[("TEA", 1)], **customer).order_id for _ in range(3)]
    reactor = Reactor("inventory", Reactions(services.orders, step_timeout=30), OrderKeys())
    reactor.reader.ensure_group()
    batch = reactor.reader.read()
    assert sorted(entry.fields["order_id"] for entry in batch) == sorted(order_ids)

    enqueuer = services.orders.store.enqueuer
    submit, calls = enqueuer.submit, []

    def counted(specs: list[dict[str, Any]], **kwargs: Any) -> list[str]:
        calls.append(len(specs))
        return submit(specs, **kwargs)

    monkeypatch.setattr(enqueuer, "submit", counted)
    reactor.process(batch)
    assert calls == [6]  # one call: a reservation and its time-out check per order

    runtime = services.orders.store.keys.runtime
    timeout_queue = services.orders.store.route(CheckStepTimeout).queue
    queued = (redis.llen(runtime.queue("inventory")), redis.zcard(runtime.scheduled(timeout_queue)))
    assert queued == (3, 3)
    for order_id in order_ids:  # each order's jobs are in its own index
        assert redis.scard(services.orders.store.keys.order_jobs(order_id)) == 2
    assert redis.xpending(reactor.reader.stream, reactor.group)["pending"] == 0  # acknowledged

    for entry in batch:  # delivered again, one by one (another batch): the same keys, nothing new
        reactor.process([entry])
    assert (redis.llen(runtime.queue("inventory")), redis.zcard(runtime.scheduled(timeout_queue))) == queued


def test_the_orders_reactor_confirms_a_batch_on_one_read_and_one_commit_round_trip(
    redis: Redis, redis_url: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = with_style(flow_settings(redis_url, 2525), "choreographed")
    producer = Producer(redis, settings, jobs.registry, services.orders)
    customer = {"customer_name": "Ada", "customer_email": "ada@example.com", "ship_to": "12 Lane, London"}
    order_ids = [producer.place_order(items=[("TEA", 1)], **customer).order_id for _ in range(3)]
    keys, store = OrderKeys(), services.orders.store
    others = [
        Reactor(service, Reactions(services.orders, step_timeout=30), keys)
        for service in ("inventory", "payments", "shipping")
    ]
    for reactor in others:
        reactor.reader.ensure_group()

    def arranged() -> bool:  # the three steps answered, by reactors stepped here and a real worker
        for reactor in others:
            reactor.step()
        kinds = [e[1][b"type"] for e in redis.xrange(keys.events)]
        return kinds.count(b"ShipmentArranged") == len(order_ids)

    with worker_thread(redis, jobs.registry, settings, queues=QUEUES, concurrency=4):
        wait_until(arranged, timeout=20, message="every order's shipment arranged")

    orders = Reactor("orders", Reactions(services.orders, step_timeout=30), keys)
    orders.reader.ensure_group()
    batch = orders.reader.read()  # the group starts at the stream's beginning: every event so far
    assert sum(entry.fields["type"] == "ShipmentArranged" for entry in batch) == len(order_ids)
    load, commit, commit_many = store.load, store.commit, store.commit_many
    loads: list[str] = []
    commits: list[int] = []
    monkeypatch.setattr(store, "load", lambda order_id: loads.append(order_id) or load(order_id))
    monkeypatch.setattr(store, "commit", lambda *a: commits.append(1) or commit(*a))
    monkeypatch.setattr(store, "commit_many", lambda c, now: commits.append(len(c)) or commit_many(c, now))
    orders.process(batch)
    assert (loads, commits) == ([], [3])  # alone: a read and a commit per order, one after the other
    for order_id in order_ids:
        loaded = services.orders.get(order_id)
        assert loaded is not None and loaded.order.status is OrderStatus.CONFIRMED
    assert redis.xpending(orders.reader.stream, orders.group)["pending"] == 0  # acknowledged

    for entry in batch:  # delivered again: each finds its order confirmed, and commits nothing
        orders.process([entry])
    kinds = [e[1][b"type"] for e in redis.xrange(keys.events)]
    assert kinds.count(b"OrderConfirmed") == len(order_ids)


def test_only_the_reactors_after_the_outcome_gather_their_reads(redis: Redis, services: Services) -> None:
    """The notifications reactor reacts to an order's outcome only: it waits ``gather`` seconds
    after a partial batch, as the projector does; the reactors on the orders' path never wait."""
    from orders.eventsproc import EventProcessors

    processors = EventProcessors(
        redis, OrderKeys(), services.orders, choreographed=True, step_timeout=30, gather=0.05
    )
    gathering = {reactor.service: reactor.gather for reactor in processors.reactors}
    assert gathering == {
        "inventory": 0.0,
        "payments": 0.0,
        "shipping": 0.0,
        "orders": 0.0,
        "notifications": 0.05,
    }
    assert processors.projector.gather == 0.05

    settings = with_style(flow_settings("redis://unused", 2525), "choreographed")
    producer = Producer(redis, settings, jobs.registry, services.orders)
    customer = {"customer_name": "Ada", "customer_email": "ada@example.com", "ship_to": "12 Lane, London"}
    producer.place_order(items=[("TEA", 1)], **customer)
    pauses: list[float] = []
    notifications = Reactor(
        "notifications",
        Reactions(services.orders, step_timeout=30),
        OrderKeys(),
        gather=0.05,
        sleep=pauses.append,
    )
    notifications.reader.ensure_group()
    assert notifications.step() == 1 and pauses == []  # OrderPlaced: nothing to send; acknowledged
    assert redis.xpending(notifications.reader.stream, notifications.group)["pending"] == 0
    notifications.reader.block_ms = 10
    assert notifications.step() == 0 and pauses == [0.05]  # the wait, then the next read


ON_PATH = ("inventory", "payments", "shipping", "orders")


def together(services: Services) -> tuple[list[Reactor], Together]:
    """The reactors on an order's path sharing one thread, as ``chumon consumers`` runs them."""
    reactors = [Reactor(s, Reactions(services.orders, step_timeout=30), OrderKeys()) for s in ON_PATH]
    acks = Acks(services.orders.store.redis)
    for reactor in reactors:
        reactor.reader.ensure_group()
        reactor.acks = acks
    return reactors, Together(reactors, acks)


def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to a Redis socket from now on: one per round trip (a pipeline is one)."""
    writes: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        writes.append(b"".join(command) if isinstance(command, list) else bytes(command))
        send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return writes


def place_one(redis: Redis, services: Services) -> str:
    settings = with_style(flow_settings("redis://unused", 2525), "choreographed")
    producer = Producer(redis, settings, jobs.registry, services.orders)
    customer = {"customer_name": "Ada", "customer_email": "ada@example.com", "ship_to": "12 Lane, London"}
    return producer.place_order(items=[("TEA", 1)], **customer).order_id


def test_the_reactors_on_the_path_read_in_one_round_trip_and_acknowledge_in_one_more(
    redis: Redis, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four groups, one event that one of them reacts to: one read for all four, the reaction's
    own round trips, and one for the acknowledgements of the three with nothing to do (apart:
    four reads and four acknowledgements, from four threads)."""
    reactors, shared = together(services)
    assert shared.round(logging.getLogger("test")) == 0  # nothing yet: abandoned entries looked for
    place_one(redis, services)
    assert shared.round(logging.getLogger("test")) == 4  # the scripts are loaded (Redis 6.2: EVALSHA)
    place_one(redis, services)
    writes = sent(monkeypatch)
    assert shared.round(logging.getLogger("test")) == 4  # OrderPlaced, settled by each group
    assert sum(b"XREADGROUP" in w for w in writes) == 1
    assert sum(w.count(b"XREADGROUP") for w in writes) == 4  # pipelined
    assert [w.count(b"XACK") for w in writes if b"XACK" in w] == [1, 3]  # inventory's own, then the rest
    names = [[part for part in w.split(b"\r\n") if part.isalpha() and part.isupper()] for w in writes]
    assert len(writes) == 5, names  # read; inventory reads its order, enqueues, indexes + acks; the acks
    for reactor in reactors:
        assert redis.xpending(reactor.reader.stream, reactor.group)["pending"] == 0
    assert redis.llen(services.orders.store.keys.runtime.queue("inventory")) == 2


def test_a_shared_round_waits_for_the_next_event_and_recreates_a_lost_group(
    redis: Redis, services: Services
) -> None:
    reactors, shared = together(services)
    log = logging.getLogger("test")
    place_one(redis, services)
    assert shared.round(log) == 4
    for reactor in reactors:
        reactor.reader.block_ms = 10_000
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(shared.round(log)))
    thread.start()
    try:
        time.sleep(0.2)
        assert thread.is_alive() and not done  # caught up: it waits on the stream
        place_one(redis, services)
        wait_until(lambda: done == [4], timeout=10, message="the round to return with the new event")
    finally:
        thread.join(15)

    redis.xgroup_destroy(reactors[1].reader.stream, reactors[1].group)  # a Redis that lost a group
    for reactor in reactors:
        reactor.reader.block_ms = 10
    shared.round(log)
    groups = {g["name"].decode() for g in redis.xinfo_groups(reactors[1].reader.stream)}
    assert reactors[1].group in groups


def test_a_shared_round_after_a_full_batch_reads_on_without_waiting(redis: Redis, services: Services) -> None:
    """A group whose batch was full is behind: the next round must not block on the first group
    (which may have nothing new) while the others have entries waiting."""
    reactors, shared = together(services)
    log = logging.getLogger("test")
    for reactor in reactors:
        reactor.reader.batch = 1 if reactor.service != "inventory" else 200
        reactor.reader.block_ms = 30_000
    place_one(redis, services)
    place_one(redis, services)
    assert shared.round(log) == 2 + 1 + 1 + 1  # inventory read both; the other three one each (full)
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(shared.round(log)), daemon=True)
    thread.start()  # inventory, read first, has nothing new: blocking on it would wait 30 s
    wait_until(lambda: done == [3], timeout=10, message="the other groups' second entry, without waiting")
    thread.join(5)


def test_held_acknowledgements_that_fail_leave_their_entries_to_come_back_and_send_nothing_twice(
    redis: Redis, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    reactors, shared = together(services)
    log = logging.getLogger("test")
    for reactor in reactors:
        reactor.reader.claim_after = 0.05
    place_one(redis, services)

    def down() -> None:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(shared.acks, "send", down)
    with pytest.raises(ConnectionError):
        shared.round(log)
    pending = {r.service: redis.xpending(r.reader.stream, r.group)["pending"] for r in reactors}
    assert pending == {"inventory": 0, "payments": 1, "shipping": 1, "orders": 1}
    assert shared.acks.held == []  # nothing held over into the next round
    monkeypatch.undo()

    def settled() -> bool:
        shared.round(log)
        return all(redis.xpending(r.reader.stream, r.group)["pending"] == 0 for r in reactors)

    wait_until(settled, timeout=10, message="the entries taken back and acknowledged")
    assert redis.llen(services.orders.store.keys.runtime.queue("inventory")) == 1


def test_chumon_consumers_runs_the_path_reactors_in_one_thread(redis: Redis, services: Services) -> None:
    """The reactors that never wait share a thread; one that gathers its reads keeps its own."""
    from orders.eventsproc import EventProcessors

    def threads(gather: float) -> list[str]:
        processors = EventProcessors(
            redis, OrderKeys(), services.orders, choreographed=True, step_timeout=30, gather=gather
        )
        processors.start()
        try:
            return sorted(thread.name for thread in processors.threads)
        finally:
            processors.stop()

    assert threads(0.05) == ["projector", "reactor-notifications", "reactors", "watchdog"]
    assert threads(0.0) == ["projector", "reactors", "watchdog"]
