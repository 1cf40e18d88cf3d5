"""The read model on a real Redis: order-aware projection, crash take-over, rebuild by replay, waiting."""

from __future__ import annotations

import random
import threading
import time

from redis import Redis

from orders import events as e
from orders.keys import OrderKeys
from orders.model import OrderStatus
from orders.projection import apply
from orders.projector import GROUP, Projector, rebuild
from orders.readmodel import ReadModel
from tests.flow import running_flow
from tests.support import wait_until
from tests.unit.test_bus_and_projection import ORDER
from workers.streams import Entry, GroupReader, entries

KEYS = OrderKeys()


def order_history(order_id: str, n_items: int = 1) -> list[e.Event]:
    base = {"order_id": order_id, "correlation_id": f"c-{order_id}", "at": time.time()}
    doc = {**ORDER, "lines": [{"sku": "TEA", "quantity": n_items, "unit_price": 100}], "total": 100 * n_items}
    return [
        e.OrderPlaced(**base, sequence=1, order=doc),
        e.InventoryReserved(**base, sequence=2, lines=[]),
        e.PaymentCharged(**base, sequence=3, charge_id="ch", amount=100 * n_items, currency="EUR"),
        e.ShipmentArranged(**base, sequence=4, shipment_id="sh"),
        e.OrderConfirmed(**base, sequence=5),
        e.EmailSent(**base, sequence=6, kind="confirmation", message_id=f"<c.{order_id}@x>"),
    ]


def as_entries(events: list[e.Event]) -> list[Entry]:
    return [
        Entry(f"{i + 1}-0", dict(zip(f[::2], f[1::2], strict=True)))
        for i, f in enumerate(map(e.to_fields, events))
    ]


def expected(events: list[e.Event]):
    summary = None
    for event in sorted(events, key=lambda ev: ev.sequence):
        summary = apply(summary, event)
    return summary


def test_duplicated_and_reordered_events_never_corrupt_a_summary(redis: Redis) -> None:
    view = ReadModel(redis, KEYS)
    histories = {f"o{i}": order_history(f"o{i}", n_items=i + 1) for i in range(8)}
    delivered = [entry for events in histories.values() for entry in as_entries(events)]
    rng = random.Random(5)
    delivered += rng.sample(delivered, 20)  # duplicates
    rng.shuffle(delivered)  # and any order, also across batches
    while delivered:
        size = rng.randint(1, 7)
        batch, delivered = delivered[:size], delivered[size:]
        view.project(batch, gens=[1])
    for order_id, events in histories.items():
        assert view.get(order_id) == expected(events), order_id
        assert redis.exists(KEYS.view_parked(1, order_id)) == 0  # every gap closed
    confirmed = view.query(status=OrderStatus.CONFIRMED, limit=100)
    assert len(confirmed) == 8 and view.query(status=OrderStatus.PENDING) == []
    assert [s.order_id for s in view.query(customer="ADA@example.com", limit=3)] == [
        s.order_id for s in confirmed[:3]
    ]


def test_a_query_by_customer_and_status_reads_the_customers_orders_not_the_whole_status(redis: Redis) -> None:
    """The status index holds every order of that status (100,000 confirmed orders kept: 100,000
    entries): a query for one customer's confirmed orders must not read it whole."""
    view = ReadModel(redis, KEYS)
    for i in range(3):  # Ada's orders: two confirmed, the newest still pending
        events = order_history(f"ada{i}")
        view.project(as_entries(events if i < 2 else events[:3]), gens=[1])
    others = {f"{i:032x}": float(i) for i in range(5_000)}  # other customers' confirmed orders
    redis.zadd(KEYS.view_status(1, OrderStatus.CONFIRMED.value), others)
    sent = int(redis.info("stats")["total_net_output_bytes"])
    found = view.query(customer="ADA@example.com", status=OrderStatus.CONFIRMED, limit=10)
    sent = int(redis.info("stats")["total_net_output_bytes"]) - sent
    assert [s.order_id for s in found] == ["ada1", "ada0"]
    assert [
        s.order_id for s in view.query(customer="ADA@example.com", status=OrderStatus.CONFIRMED, limit=1)
    ] == ["ada1"]
    # before: 198,000 bytes, every id of the status index
    assert sent < 20_000, f"{sent} bytes for 2 orders: the whole status index was read"


def test_an_early_event_waits_parked_until_its_predecessor_arrives(redis: Redis) -> None:
    view = ReadModel(redis, KEYS)
    history = as_entries(order_history("late"))
    view.project(history[2:], gens=[1])
    assert view.get("late") is None and redis.hlen(KEYS.view_parked(1, "late")) == 4
    view.project(history[:2], gens=[1])
    assert view.get("late").version == 6 and redis.hlen(KEYS.view_parked(1, "late")) == 0


def test_a_crashed_consumers_entries_are_taken_over(redis: Redis) -> None:
    for event in order_history("crash"):
        redis.xadd(KEYS.events, dict(zip(*[iter(e.to_fields(event))] * 2, strict=True)))
    crashed = GroupReader(redis, KEYS.events, GROUP, "crashed-consumer")
    crashed.ensure_group()
    assert len(crashed.read()) == 6  # delivered to it, never acknowledged: it "died"
    survivor = Projector(redis, KEYS, ReadModel(redis, KEYS), claim_after=0.3)
    survivor.reader.ensure_group()
    wait_until(
        lambda: survivor.step() or ReadModel(redis, KEYS).get("crash"), timeout=10, message="take-over"
    )
    assert ReadModel(redis, KEYS).get("crash").status is OrderStatus.CONFIRMED
    assert survivor.lag() == (0, 0.0)


def test_rebuild_while_running_equals_the_live_view(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url, concurrency=16) as flow:
        first = [flow.place(("TEA", 1 + i % 3)) for i in range(15)]
        wait_until(lambda: flow.producer.get_order_summary(first[-1]), timeout=20, message="projection")
        report: dict = {}
        rebuilding = threading.Thread(
            target=lambda: report.update(vars(rebuild(redis, KEYS, ReadModel(redis, KEYS), keep_old=True)))
        )
        rebuilding.start()
        more = [
            flow.place(("MUG", 1), payment_token="tok_declined" if i % 4 == 0 else "tok_ok")
            for i in range(15)
        ]
        rebuilding.join(timeout=60)
        for order_id in first + more:
            flow.settled(order_id)
        live, rebuilt = report["old"], report["new"]
        assert ReadModel(redis, KEYS).current(fresh=True) == rebuilt
        view = ReadModel(redis, KEYS)
        wait_until(
            lambda: all(
                view.get(i, gen=live) is not None and view.get(i, gen=live) == view.get(i, gen=rebuilt)
                for i in first + more
            ),
            timeout=20,
            message="the rebuilt generation to equal the live one",
        )
        assert redis.zcard(KEYS.view_all(rebuilt)) == redis.zcard(KEYS.view_all(live)) == 30
        assert report["events"] > 0 and report["carried_over"] == 0


def test_rebuild_after_trimming_carries_over_what_cannot_be_replayed(redis: Redis) -> None:
    view = ReadModel(redis, KEYS)
    histories = {order_id: order_history(order_id) for order_id in ("old", "new")}
    for events in histories.values():
        for event in events:
            redis.xadd(KEYS.events, dict(zip(*[iter(e.to_fields(event))] * 2, strict=True)))
    view.project(entries(redis.xrange(KEYS.events)), gens=[1])
    redis.xtrim(KEYS.events, maxlen=6, approximate=False)  # "old"'s history is gone from the log
    report = rebuild(redis, KEYS, view)
    assert report.carried_over == 1 and report.events == 6
    assert view.get("old") == expected(histories["old"]) and view.get("new") == expected(histories["new"])


def test_wait_for_is_woken_by_the_projector(redis: Redis, redis_url: str) -> None:
    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(("TEA", 1))
        reads = []
        original = flow.producer.view.get
        flow.producer.view.get = lambda *a, **k: reads.append(1) or original(*a, **k)  # type: ignore[method-assign]
        summary = flow.producer.wait_for_order(order_id, timeout=20)
        assert summary is not None and summary.status is OrderStatus.CONFIRMED
        assert len(reads) <= summary.version + 2  # one read per notification, no polling loop
        pending = flow.producer.wait_for_order(order_id, statuses=[OrderStatus.CANCELLED], timeout=0.2)
        assert pending is not None and pending.status is OrderStatus.CONFIRMED  # timed out, last seen


def test_retention_trims_old_events_only(redis: Redis) -> None:
    from jobs.maintenance import trim_events

    now = time.time()
    old_ms, new_ms = int((now - 3 * 86400) * 1000), int((now - 3600) * 1000)
    for i, event in enumerate(order_history("aged")):
        fields = dict(zip(*[iter(e.to_fields(event))] * 2, strict=True))
        redis.xadd(KEYS.events, fields, id=f"{(old_ms if i < 3 else new_ms)}-{i}")
    assert trim_events(redis, KEYS, None, now) == 0
    assert trim_events(redis, KEYS, 2.0, now) == 3
    assert [int(entry.fields["seq"]) for entry in entries(redis.xrange(KEYS.events))] == [4, 5, 6]


def test_after_a_partial_batch_the_projector_gathers_before_reading_again(redis: Redis) -> None:
    """The round after one that found less than a full batch waits ``gather`` seconds before it
    reads (the events appended meanwhile then come as one batch, one round for several of an
    order's events); after a full batch, or an empty read, the next round reads at once."""
    history = [dict(zip(*[iter(e.to_fields(event))] * 2, strict=True)) for event in order_history("g")]
    pauses: list[float] = []
    projector = Projector(redis, KEYS, ReadModel(redis, KEYS), gather=0.05, sleep=pauses.append)
    projector.reader.ensure_group()
    projector.reader.batch = 4
    projector.reader.block_ms = 10
    redis.xadd(KEYS.events, history[0])
    assert projector.step() == 1 and pauses == []  # the wait comes before the next round's read
    for fields in history[1:]:  # appended meanwhile: the next read takes them together
        redis.xadd(KEYS.events, fields)
    assert projector.step() == 4 and pauses == [0.05]
    assert projector.step() == 1 and pauses == [0.05]  # after a full batch: more may be waiting
    assert projector.step() == 0 and pauses == [0.05, 0.05]
    assert projector.step() == 0 and pauses == [0.05, 0.05]  # after an empty read: no wait either
    assert ReadModel(redis, KEYS).get("g").version == 6
