"""The order flow end to end, on a real Redis with a real SMTP sink and workers in threads."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace

import pytest
from pydantic import ValidationError
from redis import Redis

import jobs
from orders.config import SagaConfig, SimulationConfig
from orders.errors import UnknownSku
from orders.saga import SagaStatus, Step
from tests.flow import Flow, running_flow
from tests.support import wait_until
from workers import Permanent
from workers.deadletter import DeadLetters


@pytest.fixture(params=["orchestrated", "choreographed"])
def style(request: pytest.FixtureRequest) -> str:
    """Every scenario runs in both styles and must end the same way."""
    return str(request.param)


@pytest.fixture
def flow(redis: Redis, redis_url: str, style: str):
    with running_flow(redis, redis_url, style=style) as running:
        yield running


def stock(flow: Flow, sku: str):
    return flow.services.inventory.levels(sku)[0]


def test_happy_path_confirms_charges_ships_emails_and_commits(flow: Flow) -> None:
    order_id = flow.place(("TEA", 2), ("MUG", 1))
    order = flow.settled(order_id)
    assert order.status.value == "CONFIRMED" and order.total == 2 * 450 + 1299
    assert order.saga.completed == [Step.RESERVE, Step.CHARGE, Step.SHIP]
    assert [m["message_id"] for m in flow.sink.messages()] == [f"<confirmation.{order_id}@chumon.example>"]
    tea = stock(flow, "TEA")
    assert (tea.on_hand, tea.reserved, tea.committed) == (98, 0, 2)
    events = [e["type"] for _, e in _events(flow, order_id)]
    assert events[:5] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentCharged",
        "ShipmentArranged",
        "OrderConfirmed",
    ]
    assert sorted(events[5:]) == ["EmailSent", "InventoryCommitted"]
    assert flow.audit().ok


def _events(flow: Flow, order_id: str) -> list[tuple[int, dict[str, str]]]:
    entries = flow.redis.xrange(flow.keys.events)
    found = [
        (int(f[b"seq"]), {k.decode(): v.decode() for k, v in f.items()})
        for _, f in entries
        if f[b"order_id"].decode() == order_id
    ]
    assert [seq for seq, _ in found] == list(range(1, len(found) + 1))  # gapless per-order sequence
    return found


def test_out_of_stock_cancels_without_touching_payment(flow: Flow) -> None:
    order_id = flow.place(("POT", 11))
    order = flow.settled(order_id)
    assert order.status.value == "CANCELLED" and order.reason.startswith("out of stock: POT")
    assert order.saga.compensated == [] and flow.services.payments.charges() == []
    assert stock(flow, "POT").available == 10
    assert flow.sink.messages()[0]["kind"] == "cancellation"
    assert flow.audit().ok


def test_declined_payment_releases_stock(flow: Flow) -> None:
    order_id = flow.place(("TEA", 3), payment_token="tok_declined")
    order = flow.settled(order_id)
    assert order.status.value == "CANCELLED" and "declined" in order.reason
    assert order.saga.compensated == [Step.RESERVE]
    assert flow.services.payments.refunds() == []
    assert stock(flow, "TEA").reserved == 0 and stock(flow, "TEA").on_hand == 100
    assert flow.audit().ok


def test_refused_address_refunds_then_releases(flow: Flow) -> None:
    order_id = flow.place(("MUG", 1), ship_to="7 Nowhere Road, Atlantis")
    order = flow.settled(order_id)
    assert order.status.value == "CANCELLED" and "carrier refused" in order.reason
    assert order.saga.compensated == [Step.CHARGE, Step.RESERVE]  # newest first
    assert len(flow.services.payments.refunds()) == 1
    assert flow.audit().ok


def test_transient_payment_failures_are_retried_to_success(flow: Flow) -> None:
    order_id = flow.place(("TEA", 1), payment_token="tok_transient_2")
    assert flow.settled(order_id).status.value == "CONFIRMED"
    assert flow.services.payments.calls("charge") == 3
    assert flow.audit().ok


def test_greylisted_email_is_retried_and_sent_once(flow: Flow) -> None:
    order_id = flow.place(("TEA", 1), customer_email="tempfail@example.com")
    order = flow.settled(order_id)
    assert order.emails == {"confirmation": f"<confirmation.{order_id}@chumon.example>"}
    assert len(flow.sink.messages()) == 1
    assert flow.audit().ok


def test_bounced_email_is_dead_lettered_and_flags_the_order(flow: Flow) -> None:
    order_id = flow.place(("TEA", 1), customer_email="bounce@example.com")
    order = flow.settled(order_id)
    assert order.status.value == "CONFIRMED" and "confirmation email" in order.attention
    dead = DeadLetters(flow.redis, flow.settings).entries("notifications")
    assert [d.job_type for d in dead] == ["notifications.confirmation"] and dead[0].attempt == 1


def test_invalid_orders_are_refused_and_nothing_is_written(flow: Flow) -> None:
    def written() -> tuple:
        """What placing an order writes (the running workers' own housekeeping keys aside)."""
        r, k = flow.redis, flow.keys
        return (
            sorted(r.scan_iter(k.order("*"))), r.zcard(k.orders_by_time), r.xlen(k.events),
            sorted(r.scan_iter("rq:job:*")), r.llen("rq:queue:inventory"), r.zcard("rq:scheduled:orders"),
        )  # fmt: skip

    before = written()
    with pytest.raises(ValidationError, match="email"):
        flow.place(("TEA", 1), customer_email="not-an-email")
    with pytest.raises(ValidationError, match="quantity"):
        flow.place(("TEA", 0))
    with pytest.raises(UnknownSku, match="NOPE"):
        flow.place(("TEA", 1), ("NOPE", 1))
    assert written() == before


def test_double_submit_gives_the_same_order(flow: Flow) -> None:
    first = flow.producer.place_order(
        customer_name="Ada", customer_email="ada@example.com", items=[("TEA", 1)], ship_to="1 Lane St",
        idempotency_key="checkout-1",
    )  # fmt: skip
    second = flow.producer.place_order(
        customer_name="Ada", customer_email="ada@example.com", items=[("TEA", 1)], ship_to="1 Lane St",
        idempotency_key="checkout-1",
    )  # fmt: skip
    assert first.order_id == second.order_id and first.created and not second.created
    flow.settled(first.order_id)
    assert flow.redis.zcard(flow.keys.orders_by_time) == 1 and stock(flow, "TEA").committed == 1


def test_fifty_concurrent_orders_for_ten_units(flow: Flow) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(50)

    def place() -> None:
        barrier.wait()
        ids.append(flow.place(("POT", 1)))

    threads = [threading.Thread(target=place) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(flow.settled(order_id, timeout=60).status.value for order_id in ids)
    assert statuses == {"CONFIRMED": 10, "CANCELLED": 40}
    pot = stock(flow, "POT")
    assert (pot.on_hand, pot.reserved, pot.committed, pot.available) == (0, 0, 10, 0)
    cancelled = [flow.order(i) for i in ids if flow.order(i).status.value == "CANCELLED"]
    assert all(o.reason.startswith("out of stock") for o in cancelled)
    assert flow.audit().ok


def test_redelivered_step_and_compensation_jobs_change_nothing(flow: Flow) -> None:
    confirmed = flow.place(("TEA", 1))
    refused = flow.place(("MUG", 1), ship_to="9 Nowhere Close")
    flow.settled(confirmed)
    flow.settled(refused)
    before = (flow.audit(), flow.redis.xlen(flow.keys.events))
    jobs = [
        key.decode().removeprefix("rq:job:")
        for key in flow.redis.scan_iter("rq:job:*")
        if flow.redis.hget(key, "origin") in (b"inventory", b"payments", b"shipping")
    ]
    assert len(jobs) >= 8
    for job_id in jobs:  # deliver every step and compensation job a second time
        flow.redis.hset(f"rq:job:{job_id}", mapping={"status": "queued"})
        flow.redis.rpush(f"rq:queue:{flow.redis.hget(f'rq:job:{job_id}', 'origin').decode()}", job_id)
    wait_until(
        lambda: all(flow.redis.hget(f"rq:job:{j}", "status") == b"finished" for j in jobs),
        message="redelivery",
    )
    after = (flow.audit(), flow.redis.xlen(flow.keys.events))
    assert after == before and after[0].ok


def test_handlers_called_again_directly_change_nothing(flow: Flow) -> None:
    """Past the runtime's keys (as after a crash between the effect and the job's completion)."""
    from orders import handlers
    from orders.commands import ChargePayment, RefundPayment, ReleaseInventory

    order_id = flow.place(("MUG", 2), ship_to="9 Nowhere Close")
    order = flow.settled(order_id)
    version = order.version
    common = {"order_id": order_id, "correlation_id": "c", "at": 0.0}
    handlers.charge_payment(ChargePayment(**common, amount=order.total, currency="EUR"), flow.services)
    handlers.refund_payment(RefundPayment(**common, reason="again"), flow.services)
    handlers.release_inventory(ReleaseInventory(**common, reason="again"), flow.services)
    assert flow.order(order_id).version == version
    assert flow.audit().ok


def test_step_timeout_gives_up_and_compensates(redis: Redis, redis_url: str, style: str) -> None:
    with running_flow(redis, redis_url, style=style, saga=SagaConfig(step_timeout=0.5),
                      simulation=SimulationConfig(gateway_timeout=1.0)) as flow:  # fmt: skip
        order_id = flow.place(("TEA", 1), payment_token="tok_timeout")
        order = flow.settled(order_id, timeout=30)
        assert (
            order.status.value == "CANCELLED" and "no answer from charge_payment within 0.5 s" in order.reason
        )
        assert order.saga.compensated[-1] is Step.RESERVE
        assert flow.audit().ok


def test_exhausted_step_retries_cancel_the_order(
    redis: Redis, redis_url: str, style: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the charge step's own policy (6 attempts), with back-offs of 0.05 s to 0.8 s instead of
    # 0.5 s to 8 s: the same exhaustion, a tenth of the wait
    charge = jobs.registry.find("payments.charge")
    assert charge is not None and charge.retry is not None
    fast = charge.retry.model_copy(update={"base": 0.05, "cap": 1.0})
    monkeypatch.setitem(jobs.registry._types, "payments.charge", replace(charge, retry=fast))
    with running_flow(
        redis, redis_url, style=style, simulation=SimulationConfig(gateway_timeout=0.05)
    ) as flow:
        order_id = flow.place(("TEA", 1), payment_token="tok_timeout")
        order = flow.settled(order_id, timeout=40)
        assert order.status.value == "CANCELLED" and "no answer from charge_payment" in order.reason
        assert "attempts exhausted" in order.reason
        assert order.saga.compensated == [Step.CHARGE, Step.RESERVE]
        assert flow.audit().ok


def test_dead_compensation_flags_the_order_until_requeued(redis: Redis, redis_url: str, style: str) -> None:
    with running_flow(redis, redis_url, style=style) as flow:
        flow.redis.set("test:break-refunds", 1)
        original = flow.services.payments.refund

        def broken_refund(**kwargs):
            if flow.redis.exists("test:break-refunds"):
                raise Permanent("refund endpoint misconfigured")
            return original(**kwargs)

        flow.services.payments.refund = broken_refund  # type: ignore[method-assign]
        order_id = flow.place(("MUG", 1), ship_to="3 Nowhere Street")
        order = wait_until(
            lambda: (o := flow.order(order_id)).attention and o, timeout=60, message="attention"
        )
        assert order.status.value == "PENDING" and order.saga.status is SagaStatus.NEEDS_ATTENTION
        assert "refund_payment could not be done" in order.attention
        flow.redis.delete("test:break-refunds")
        dead = DeadLetters(flow.redis, flow.settings)
        assert dead.requeue(all_=True, queue="payments")
        wait_until(lambda: flow.order(order_id).status.value == "CANCELLED", timeout=30, message="resumed")
        order = flow.settled(order_id)
        assert order.attention is None and order.saga.compensated == [Step.CHARGE, Step.RESERVE]
        assert flow.audit().ok
