"""The simulated gateway and carrier on a real Redis: idempotency under real races, state shared
between clients as between worker processes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from redis import Redis

from orders.config import SimulationConfig
from orders.errors import GatewayUnavailable
from orders.keys import OrderKeys
from orders.payments import ChargeResult, RefundResult, SimulatedGateway
from orders.shipping import Shipment, SimulatedCarrier

KEYS = OrderKeys()
RACERS = 12
T = TypeVar("T")


@pytest.fixture
def clients(redis: Redis, redis_url: str) -> Iterator[list[Redis]]:
    """One connection per racer, as each worker process has its own."""
    made = [Redis.from_url(redis_url) for _ in range(RACERS)]
    yield made
    for client in made:
        client.close()


def race(calls: list[Callable[[], T]]) -> list[T | Exception]:
    """Run ``calls`` at once in threads, released together by a barrier; results or exceptions."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | Exception:
        barrier.wait(timeout=10)
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def gateways(clients: list[Redis], config: SimulationConfig | None = None) -> list[SimulatedGateway]:
    return [SimulatedGateway(client, KEYS, config or SimulationConfig()) for client in clients]


def charge_call(gateway: SimulatedGateway, key: str) -> Callable[[], ChargeResult]:
    return lambda: gateway.charge(
        idempotency_key=key, order_id="o1", token="tok_ok", amount=500, currency="EUR"
    )


@pytest.mark.parametrize("round_", range(5))
def test_racing_charges_with_one_key_make_one_charge(clients: list[Redis], round_: int) -> None:
    racers = gateways(clients)
    results = race([charge_call(gateway, f"pay-{round_}") for gateway in racers])
    assert all(isinstance(r, ChargeResult) for r in results), results
    assert len({r.charge_id for r in results if isinstance(r, ChargeResult)}) == 1
    assert len(racers[0].charges()) == 1 and racers[0].calls("charge") == RACERS


def test_racing_refunds_under_different_keys_refund_once(clients: list[Redis]) -> None:
    racers = gateways(clients)
    charge_call(racers[0], "pay")()
    results = race(
        [
            lambda g=g, i=i: g.refund(idempotency_key=f"refund-{i}", charge_key="pay")
            for i, g in enumerate(racers)
        ]
    )
    refunds = [r for r in results if isinstance(r, RefundResult)]
    assert len(refunds) == 1 and racers[0].refunds() == refunds
    assert all(isinstance(r, ValueError) for r in results if r is not refunds[0])


def test_racing_arrangements_with_one_key_make_one_shipment(clients: list[Redis]) -> None:
    racers = [SimulatedCarrier(client, KEYS, SimulationConfig()) for client in clients]
    results = race(
        [
            lambda c=c: c.arrange(
                idempotency_key="ship", order_id="o1", address="1 Main St", items=[("A", 1)]
            )
            for c in racers
        ]
    )
    assert all(isinstance(r, Shipment) for r in results), results
    assert len({r.shipment_id for r in results if isinstance(r, Shipment)}) == 1
    assert len(racers[0].shipments()) == 1 and racers[0].calls("arrange") == RACERS


def test_a_lost_response_is_found_again_from_another_process(clients: list[Redis]) -> None:
    losing = SimulatedGateway(clients[0], KEYS, SimulationConfig(payment_fault_rate=1.0), rand=lambda: 0.9)
    with pytest.raises(GatewayUnavailable, match="lost"):
        charge_call(losing, "pay")()
    [recorded] = losing.charges()
    assert charge_call(gateways(clients[1:2])[0], "pay")() == recorded


def test_transient_token_counts_calls_across_processes(clients: list[Redis]) -> None:
    first, second, third = gateways(clients[:3])

    def call(gateway: SimulatedGateway) -> ChargeResult:
        return gateway.charge(
            idempotency_key="pay", order_id="o1", token="tok_transient_2", amount=500, currency="EUR"
        )

    for gateway in (first, second):
        with pytest.raises(GatewayUnavailable):
            call(gateway)
    assert call(third).status == "succeeded"
    assert len(first.charges()) == 1
