"""The simulated carrier on fakeredis: test addresses, idempotency, faults, cancellations."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import fakeredis
import pytest

from orders.config import SimulationConfig
from orders.errors import CarrierUnavailable
from orders.keys import OrderKeys
from orders.shipping import Shipment, ShipmentItem, SimulatedCarrier

KEYS = OrderKeys("t")
NO_FAULT = 0.99
ITEMS = [("SKU-1", 2), ("SKU-2", 1)]


def rolls(*values: float) -> Callable[[], float]:
    """A random source that returns ``values`` in turn, then never injects a fault."""
    it: Iterator[float] = iter(values)
    return lambda: next(it, NO_FAULT)


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def carrier(fake: fakeredis.FakeRedis, sleeps: list[float]) -> SimulatedCarrier:
    return SimulatedCarrier(fake, KEYS, SimulationConfig(gateway_timeout=4.0), sleep=sleeps.append)


def faulty(fake: fakeredis.FakeRedis, *values: float) -> SimulatedCarrier:
    """A carrier failing half its calls, with the draws scripted: < 0.25 before, < 0.5 after."""
    return SimulatedCarrier(fake, KEYS, SimulationConfig(carrier_fault_rate=0.5), rand=rolls(*values))


def ship(
    carrier: SimulatedCarrier,
    key: str = "s1",
    *,
    order_id: str = "o1",
    address: str = "1 Main St, Springfield",
    items: Sequence[tuple[str, int]] = ITEMS,
) -> Shipment:
    return carrier.arrange(idempotency_key=key, order_id=order_id, address=address, items=items)


# -- test addresses -------------------------------------------------------------------------------
def test_an_ordinary_address_is_arranged(carrier: SimulatedCarrier) -> None:
    shipment = ship(carrier)
    assert shipment.status == "arranged" and shipment.refusal_reason is None
    assert shipment.shipment_id.startswith("shp_") and shipment.idempotency_key == "s1"
    assert shipment.items == [ShipmentItem(sku="SKU-1", quantity=2), ShipmentItem(sku="SKU-2", quantity=1)]
    assert carrier.shipments() == [shipment] and carrier.calls() == 1


@pytest.mark.parametrize("address", ["1 Road to Nowhere", "NOWHERE 9", "nowhere land"])
def test_nowhere_is_refused_and_the_refusal_is_recorded(carrier: SimulatedCarrier, address: str) -> None:
    shipment = ship(carrier, address=address)
    assert shipment.status == "refused" and shipment.refusal_reason == "undeliverable address"
    assert ship(carrier, address=address) == shipment
    assert carrier.shipments() == [shipment]


@pytest.mark.parametrize("address", ["7 Slowpoke Lane", "slowpoke corner"])
def test_slowpoke_hangs_then_fails_and_never_arranges(
    carrier: SimulatedCarrier, sleeps: list[float], address: str
) -> None:
    with pytest.raises(CarrierUnavailable, match="in time"):
        ship(carrier, address=address)
    assert sleeps == [4.0]
    assert carrier.shipments() == [] and carrier.calls("arrange") == 1


# -- idempotency ----------------------------------------------------------------------------------
def test_same_key_returns_the_same_shipment(fake: fakeredis.FakeRedis, carrier: SimulatedCarrier) -> None:
    first = ship(carrier)
    assert ship(carrier) == first
    assert ship(SimulatedCarrier(fake, KEYS, SimulationConfig())) == first  # another process
    assert len(carrier.shipments()) == 1 and carrier.calls() == 3


@pytest.mark.parametrize(
    "change",
    [{"order_id": "o2"}, {"address": "2 Other St"}, {"items": [("SKU-1", 3)]}],
    ids=["order", "address", "items"],
)
def test_reusing_a_key_for_another_request_is_refused(carrier: SimulatedCarrier, change: dict) -> None:
    ship(carrier)
    with pytest.raises(ValueError, match="cannot be reused"):
        ship(carrier, **change)
    assert len(carrier.shipments()) == 1


def test_invalid_request_is_refused_before_the_call(carrier: SimulatedCarrier) -> None:
    with pytest.raises(ValueError, match="items"):
        ship(carrier, items=[])
    with pytest.raises(ValueError, match="quantity"):
        ship(carrier, items=[("SKU-1", 0)])
    assert carrier.calls() == 0


# -- random faults --------------------------------------------------------------------------------
def test_fault_before_processing_records_nothing(fake: fakeredis.FakeRedis) -> None:
    carrier = faulty(fake, 0.2)
    with pytest.raises(CarrierUnavailable, match="before"):
        ship(carrier)
    assert carrier.shipments() == [] and carrier.calls() == 1
    assert ship(carrier).status == "arranged"


def test_fault_after_processing_loses_only_the_response(fake: fakeredis.FakeRedis) -> None:
    carrier = faulty(fake, 0.4)
    with pytest.raises(CarrierUnavailable, match="lost"):
        ship(carrier)
    [recorded] = carrier.shipments()
    assert ship(carrier) == recorded


def test_faults_hit_cancellations_too(fake: fakeredis.FakeRedis) -> None:
    carrier = faulty(fake, NO_FAULT, 0.0, 0.25)
    ship(carrier)
    with pytest.raises(CarrierUnavailable, match="before"):
        carrier.cancel(idempotency_key="c1", arrange_key="s1")
    assert carrier.cancellations() == []
    with pytest.raises(CarrierUnavailable, match="lost"):
        carrier.cancel(idempotency_key="c1", arrange_key="s1")
    [recorded] = carrier.cancellations()
    assert carrier.cancel(idempotency_key="c1", arrange_key="s1") == recorded


def test_seed_makes_the_faults_repeatable() -> None:
    config = SimulationConfig(carrier_fault_rate=0.5, seed=7)

    def outcomes() -> list[bool]:
        carrier = SimulatedCarrier(fakeredis.FakeRedis(), KEYS, config)
        return [_arranged(carrier, f"s{i}") for i in range(30)]

    first = outcomes()
    assert first == outcomes() and True in first and False in first


def _arranged(carrier: SimulatedCarrier, key: str) -> bool:
    try:
        ship(carrier, key)
    except CarrierUnavailable:
        return False
    return True


# -- cancellations --------------------------------------------------------------------------------
def test_cancellation_is_idempotent(carrier: SimulatedCarrier) -> None:
    shipment = ship(carrier)
    cancellation = carrier.cancel(idempotency_key="c1", arrange_key="s1")
    assert cancellation is not None and cancellation.cancellation_id.startswith("cnl_")
    assert cancellation.shipment_id == shipment.shipment_id and cancellation.idempotency_key == "c1"
    assert carrier.cancel(idempotency_key="c1", arrange_key="s1") == cancellation
    assert carrier.cancellations() == [cancellation] and carrier.cancellations_for("o1") == [cancellation]
    assert carrier.calls("cancel") == 2 and carrier.calls() == 3


def test_cancel_of_a_missing_shipment_is_none_and_voids_its_key(
    fake: fakeredis.FakeRedis, carrier: SimulatedCarrier
) -> None:
    assert carrier.cancel(idempotency_key="c1", arrange_key="never") is None
    assert carrier.cancellations() == [] and carrier.voided() == {"never": "c1"}
    assert {k.decode() for k in fake.keys("*")} == {KEYS.sim("carrier", n) for n in ("calls", "voided")}


def test_an_arrangement_after_its_key_was_voided_arranges_nothing(carrier: SimulatedCarrier) -> None:
    assert carrier.cancel(idempotency_key="c1", arrange_key="s1") is None
    late = ship(carrier)
    assert late.status == "voided" and carrier.shipments() == [] and carrier.find_shipment("s1") is None


def test_a_slowboat_address_is_arranged_after_slow_for(fake: fakeredis.FakeRedis) -> None:
    sleeps: list[float] = []
    carrier = SimulatedCarrier(fake, KEYS, SimulationConfig(slow_for=2.5), sleep=sleeps.append)
    assert ship(carrier, address="1 Slowboat Quay").status == "arranged" and sleeps == [2.5]


def test_cancel_of_a_refused_shipment_is_none(carrier: SimulatedCarrier) -> None:
    ship(carrier, address="Nowhere")
    assert carrier.cancel(idempotency_key="c1", arrange_key="s1") is None


def test_cancel_after_a_slowpoke_is_none(carrier: SimulatedCarrier) -> None:
    with pytest.raises(CarrierUnavailable):
        ship(carrier, address="Slowpoke")
    assert carrier.cancel(idempotency_key="c1", arrange_key="s1") is None


def test_a_shipment_is_cancelled_once(carrier: SimulatedCarrier) -> None:
    ship(carrier)
    carrier.cancel(idempotency_key="c1", arrange_key="s1")
    with pytest.raises(ValueError, match="already undone under idempotency key 'c1'"):
        carrier.cancel(idempotency_key="c2", arrange_key="s1")
    assert len(carrier.cancellations()) == 1


def test_a_cancellation_key_is_not_reused_for_another_shipment(carrier: SimulatedCarrier) -> None:
    ship(carrier, "a")
    ship(carrier, "b", order_id="o2")
    carrier.cancel(idempotency_key="c1", arrange_key="a")
    with pytest.raises(ValueError, match="was used to cancel"):
        carrier.cancel(idempotency_key="c1", arrange_key="b")
    assert carrier.cancel(idempotency_key="c2", arrange_key="b") is not None


# -- records --------------------------------------------------------------------------------------
def test_state_lives_under_the_simulation_prefix(
    fake: fakeredis.FakeRedis, carrier: SimulatedCarrier
) -> None:
    ship(carrier)
    carrier.cancel(idempotency_key="c1", arrange_key="s1")
    assert {k.decode() for k in fake.keys("*")} == {
        KEYS.sim("carrier", name) for name in ("calls", "shipments", "cancellations", "cancelled")
    }


def test_records_are_listed_oldest_first(fake: fakeredis.FakeRedis) -> None:
    times = iter([30.0, 10.0, 20.0])
    carrier = SimulatedCarrier(fake, KEYS, SimulationConfig(), clock=lambda: next(times))
    made = [ship(carrier, key, order_id=key) for key in ("a", "b", "c")]
    assert [s.idempotency_key for s in carrier.shipments()] == ["b", "c", "a"]
    assert carrier.shipments_for("a") == [made[0]]
    assert carrier.recorded_shipment("a") == made[0] and carrier.recorded_shipment("zzz") is None
