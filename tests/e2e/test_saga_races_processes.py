"""The saga's late-answer races through real processes: a worker process and `chumon events`,
with the simulated parties slowed from the environment (CHUMON_SIMULATION__...), in both styles.

The step time-out is 1.5 s; the step's party takes 3.5 s to act; the compensation's answer
takes 2.5 s to come back. So the saga gives the step up, its compensation asks the party before the
step has acted and answers "nothing to undo" only after the step acted: the race of issue 11.
Whatever the order the answers land in, the order must end CANCELLED with nothing left: no
net charge, no live reservation, no live shipment, one cancellation email.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from orders.config import SagaConfig
from orders.keys import OrderKeys
from producer import Producer
from tests.chaos.orderchaos import skip_unless_chaos
from tests.e2e.test_order_processes import QUEUES, EventsProcess
from tests.flow import CATALOGUE, Flow, flow_settings, with_style
from tests.support import WorkerProcess, wait_until

pytestmark = pytest.mark.e2e

SLOW = {"saga__step_timeout": 1, "simulation__slow_for": 2.5}
VARIANTS = {
    "reserve": {
        **SLOW,
        "simulation__request_latency__reserve": 2.5,
        "simulation__response_latency__release": 2.0,
    },
    "charge-and-ship": {
        **SLOW,
        "simulation__response_latency__refund": 2.0,
        "simulation__response_latency__cancel": 2.0,
    },
    "charge-and-ship-without-voids": {
        **SLOW,
        "simulation__response_latency__refund": 2.0,
        "simulation__response_latency__cancel": 2.0,
        "simulation__voids": "false",
    },
}


@pytest.fixture(params=["orchestrated", "choreographed"])
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def processes(redis: Redis, redis_url: str, style: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    def start(variant: str) -> Flow:
        sink = SmtpSink(port=0, redis=redis, keys=OrderKeys())
        sink.start()
        request.addfinalizer(sink.stop)
        settings = with_style(flow_settings(redis_url, sink.port, saga=SagaConfig(step_timeout=1.5)), style)
        services = build_services(redis, settings)
        for sku, (on_hand, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, on_hand, price)
        env = {"smtp__port": sink.port, "saga__style": style, "events__claim_after": 1.0, **VARIANTS[variant]}
        procs = [
            WorkerProcess(redis_url, "--queues", *QUEUES, "--concurrency", "8", app="jobs:registry", **env),
            EventsProcess(redis_url, **env),
        ]
        for proc in procs:
            request.addfinalizer(proc.stop)
        ready(redis, style)
        producer = Producer(redis, settings, jobs.registry, services.orders)
        return Flow(redis, settings, services, producer, sink, OrderKeys())

    yield start


def ready(redis: Redis, style: str) -> None:
    """Wait until the worker serves its queues and every consumer group exists: a step time-out
    of 1.5 s must not be spent on starting Python."""
    groups = {"projector"} | (
        {f"reactor-{s}" for s in ("inventory", "payments", "shipping", "orders", "notifications")}
        if style == "choreographed"
        else set()
    )

    def up() -> bool:
        if not redis.exists("chumon:events"):
            return False
        found = {g["name"].decode() for g in redis.xinfo_groups("chumon:events")}
        return redis.scard("rq:workers") >= 1 and groups <= found

    wait_until(up, timeout=60, message="the worker and the event consumers to start")


def settled(flow: Flow, order_id: str) -> None:
    def done() -> bool:
        order = flow.order(order_id)
        saga = order.saga
        return (
            order.status.value != "PENDING"
            and bool(order.emails)
            and saga.compensating is None
            and not saga.pending_compensations
            and not saga.late
        )

    wait_until(done, timeout=60, message=f"order {order_id} to settle with nothing left to undo")


def late_answers(flow: Flow, order_id: str) -> list[str]:
    return [
        fields[b"type"].decode()
        for _, fields in flow.redis.xrange(flow.keys.events)
        if fields[b"order_id"].decode() == order_id and b'"late":true' in fields[b"data"]
    ]


def test_a_reservation_that_lands_late_holds_nothing(processes: Any) -> None:
    flow = processes("reserve")
    order_id = flow.place(("POT", 3))
    settled(flow, order_id)
    assert flow.order(order_id).status.value == "CANCELLED"
    reservation = flow.services.inventory.reservation(order_id)
    assert reservation is not None and reservation.state == "void"  # the release came first
    pot = flow.services.inventory.levels("POT")[0]
    assert (pot.reserved, pot.available) == (0, 10)
    report = flow.audit()
    assert report.ok, report.violations


@pytest.mark.parametrize(
    "voids",
    [True, pytest.param(False, marks=pytest.mark.chaos)],  # without voids: in `make chaos` (and, driven
    ids=["voids", "without-voids"],  # step by step, in tests/integration/test_saga_races.py)
)
def test_a_charge_and_a_shipment_that_land_late_leave_nothing(
    processes: Any, voids: bool, request: pytest.FixtureRequest
) -> None:
    if not voids:
        skip_unless_chaos(request.config)
    flow = processes("charge-and-ship" if voids else "charge-and-ship-without-voids")
    slow_charge = flow.place(("TEA", 1), payment_token="tok_slow")
    slow_ship = flow.place(("MUG", 1), ship_to="8 Slowboat Quay, Harbour")
    for order_id in (slow_charge, slow_ship):
        settled(flow, order_id)
        assert flow.order(order_id).status.value == "CANCELLED"
    gateway, carrier = flow.services.payments, flow.services.carrier
    for order_id in (slow_charge, slow_ship):
        charged = [ch for ch in gateway.charges_for(order_id) if ch.status == "succeeded"]  # type: ignore[attr-defined]
        assert len(charged) == len(gateway.refunds_for(order_id))  # type: ignore[attr-defined]
    arranged = [sh for sh in carrier.shipments_for(slow_ship) if sh.status == "arranged"]  # type: ignore[attr-defined]
    assert len(arranged) == len(carrier.cancellations_for(slow_ship))  # type: ignore[attr-defined]
    if voids:  # the late calls met a voided key: nothing was taken, nothing arranged
        assert gateway.charges_for(slow_charge) == [] and arranged == []  # type: ignore[attr-defined]
        assert f"charge:{slow_charge}" in gateway.voided()  # type: ignore[attr-defined]
        assert f"shipment:{slow_ship}" in carrier.voided()  # type: ignore[attr-defined]
    else:  # they acted, answered late, and were undone
        assert "PaymentCharged" in late_answers(flow, slow_charge)
        assert "ShipmentArranged" in late_answers(flow, slow_ship)
    report = flow.audit()
    assert report.ok, report.violations
