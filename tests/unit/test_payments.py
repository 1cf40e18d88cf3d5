"""The simulated payment gateway on fakeredis: test tokens, idempotency, faults, refunds."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import fakeredis
import pytest

from orders.config import SimulationConfig
from orders.errors import GatewayTimeout, GatewayUnavailable, TransientError
from orders.keys import OrderKeys
from orders.payments import ChargeResult, SimulatedGateway, transient_failures
from orders.simulation import draw_fault

KEYS = OrderKeys("t")
NO_FAULT = 0.99


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
def gateway(fake: fakeredis.FakeRedis, sleeps: list[float]) -> SimulatedGateway:
    return SimulatedGateway(fake, KEYS, SimulationConfig(), sleep=sleeps.append)


def faulty(fake: fakeredis.FakeRedis, *values: float) -> SimulatedGateway:
    """A gateway failing half its calls, with the draws scripted: < 0.25 before, < 0.5 after."""
    return SimulatedGateway(fake, KEYS, SimulationConfig(payment_fault_rate=0.5), rand=rolls(*values))


def pay(
    gateway: SimulatedGateway, key: str = "k1", token: str = "tok_ok", **overrides: object
) -> ChargeResult:
    request: dict = {"order_id": "o1", "amount": 1999, "currency": "EUR", **overrides}
    return gateway.charge(idempotency_key=key, token=token, **request)


# -- test tokens ----------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["tok_ok", "tok_visa", "tok_transient_0", "tok_transient_10"])
def test_ok_and_unlisted_tokens_succeed(gateway: SimulatedGateway, token: str) -> None:
    result = pay(gateway, token=token)
    assert result.status == "succeeded" and result.decline_reason is None
    assert (result.order_id, result.amount, result.currency) == ("o1", 1999, "EUR")
    assert result.idempotency_key == "k1" and result.charge_id.startswith("ch_")
    assert gateway.charges() == [result] and gateway.calls() == 1


def test_declined_token_declines_and_the_decline_is_recorded(gateway: SimulatedGateway) -> None:
    result = pay(gateway, token="tok_declined")
    assert result.status == "declined" and result.decline_reason == "insufficient_funds"
    assert pay(gateway, token="tok_ok") == result  # same key, same answer: a new attempt needs a new key
    assert gateway.charges() == [result]


@pytest.mark.parametrize("n", [1, 3, 9])
def test_transient_token_fails_n_times_per_key_then_succeeds(gateway: SimulatedGateway, n: int) -> None:
    for _ in range(n):
        with pytest.raises(GatewayUnavailable):
            pay(gateway, token=f"tok_transient_{n}")
        assert gateway.charges() == []
    result = pay(gateway, token=f"tok_transient_{n}")
    assert result.status == "succeeded"
    assert pay(gateway, token=f"tok_transient_{n}") == result
    assert gateway.calls("charge") == n + 2


def test_transient_failures_are_counted_per_key(gateway: SimulatedGateway) -> None:
    with pytest.raises(GatewayUnavailable):
        pay(gateway, "a", token="tok_transient_1")
    with pytest.raises(GatewayUnavailable):
        pay(gateway, "b", token="tok_transient_1")
    assert pay(gateway, "a", token="tok_transient_1").status == "succeeded"


def test_transient_failures_are_counted_across_processes(fake: fakeredis.FakeRedis) -> None:
    first, second = (SimulatedGateway(fake, KEYS, SimulationConfig()) for _ in range(2))
    with pytest.raises(GatewayUnavailable):
        pay(first, token="tok_transient_2")
    with pytest.raises(GatewayUnavailable):
        pay(second, token="tok_transient_2")
    assert pay(first, token="tok_transient_2") == pay(second, token="tok_transient_2")


def test_timeout_token_hangs_then_raises_and_never_charges(fake: fakeredis.FakeRedis) -> None:
    sleeps: list[float] = []
    gateway = SimulatedGateway(fake, KEYS, SimulationConfig(gateway_timeout=7.5), sleep=sleeps.append)
    with pytest.raises(GatewayTimeout) as err:
        pay(gateway, token="tok_timeout")
    assert isinstance(err.value, TransientError)
    assert sleeps == [7.5]
    assert gateway.charges() == [] and gateway.calls() == 1


def test_transient_failures_parses_only_one_to_nine() -> None:
    assert [transient_failures(f"tok_transient_{n}") for n in (1, 5, 9)] == [1, 5, 9]
    assert [transient_failures(t) for t in ("tok_transient_0", "tok_transient_10", "tok_ok")] == [0, 0, 0]


# -- idempotency ----------------------------------------------------------------------------------
def test_same_key_returns_the_same_charge(gateway: SimulatedGateway) -> None:
    first = pay(gateway)
    assert pay(gateway) == first
    assert len(gateway.charges()) == 1 and gateway.calls() == 2


def test_same_key_returns_the_same_charge_across_processes(fake: fakeredis.FakeRedis) -> None:
    first = pay(SimulatedGateway(fake, KEYS, SimulationConfig()))
    assert pay(SimulatedGateway(fake, KEYS, SimulationConfig())) == first


@pytest.mark.parametrize(
    "change", [{"amount": 2000}, {"order_id": "o2"}, {"currency": "USD"}], ids=["amount", "order", "currency"]
)
def test_reusing_a_key_for_another_request_is_refused(gateway: SimulatedGateway, change: dict) -> None:
    pay(gateway)
    with pytest.raises(ValueError, match="cannot be reused"):
        pay(gateway, **change)
    assert len(gateway.charges()) == 1


def test_distinct_keys_make_distinct_charges(gateway: SimulatedGateway) -> None:
    a, b = pay(gateway, "a"), pay(gateway, "b", order_id="o2")
    assert a.charge_id != b.charge_id
    assert gateway.charges_for("o2") == [b]


def test_invalid_request_is_refused_before_the_call(gateway: SimulatedGateway) -> None:
    with pytest.raises(ValueError, match="currency"):
        pay(gateway, currency="euro")
    with pytest.raises(ValueError, match="amount"):
        pay(gateway, amount=-1)
    assert gateway.calls() == 0


# -- random faults --------------------------------------------------------------------------------
def test_fault_before_processing_records_nothing(fake: fakeredis.FakeRedis) -> None:
    gateway = faulty(fake, 0.1)
    with pytest.raises(GatewayUnavailable, match="before"):
        pay(gateway)
    assert gateway.charges() == [] and gateway.calls() == 1
    assert pay(gateway).status == "succeeded"


def test_fault_after_processing_loses_only_the_response(fake: fakeredis.FakeRedis) -> None:
    gateway = faulty(fake, 0.3)
    with pytest.raises(GatewayUnavailable, match="lost"):
        pay(gateway)
    [recorded] = gateway.charges()
    assert pay(gateway) == recorded  # the retry with the same key gets the recorded charge


def test_faults_hit_refunds_too(fake: fakeredis.FakeRedis) -> None:
    gateway = faulty(fake, NO_FAULT, 0.1, 0.3)
    pay(gateway)
    with pytest.raises(GatewayUnavailable, match="before"):
        gateway.refund(idempotency_key="r1", charge_key="k1")
    assert gateway.refunds() == []
    with pytest.raises(GatewayUnavailable, match="lost"):
        gateway.refund(idempotency_key="r1", charge_key="k1")
    [recorded] = gateway.refunds()
    assert gateway.refund(idempotency_key="r1", charge_key="k1") == recorded


def test_draw_fault_splits_the_rate_in_halves() -> None:
    assert [draw_fault(lambda r=r: r, 0.5) for r in (0.0, 0.249, 0.25, 0.499, 0.5, 0.9)] == [
        "before",
        "before",
        "after",
        "after",
        None,
        None,
    ]
    assert draw_fault(lambda: 0.0, 0.0) is None


def test_seed_makes_the_faults_repeatable() -> None:
    config = SimulationConfig(payment_fault_rate=0.5, seed=42)

    def outcomes() -> list[str]:
        gateway = SimulatedGateway(fakeredis.FakeRedis(), KEYS, config)
        return [_outcome(lambda i=i: pay(gateway, f"k{i}")) for i in range(30)]

    first = outcomes()
    assert first == outcomes()
    assert {"ok", "fault"} <= set(first)


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except GatewayUnavailable:
        return "fault"
    return "ok"


# -- refunds --------------------------------------------------------------------------------------
def test_refund_is_full_and_idempotent(gateway: SimulatedGateway) -> None:
    charge = pay(gateway)
    refund = gateway.refund(idempotency_key="r1", charge_key="k1")
    assert refund is not None and refund.refund_id.startswith("re_")
    assert (refund.charge_id, refund.amount, refund.currency) == (charge.charge_id, 1999, "EUR")
    assert gateway.refund(idempotency_key="r1", charge_key="k1") == refund
    assert gateway.refunds() == [refund] and gateway.refunds_for("o1") == [refund]
    assert gateway.calls("refund") == 2 and gateway.calls() == 3


@pytest.mark.parametrize("token", ["tok_ok", "tok_visa", "tok_transient_3"])
def test_refunds_of_charges_made_with_any_token_succeed(gateway: SimulatedGateway, token: str) -> None:
    charge = pay_until_answered(gateway, token)
    refund = gateway.refund(idempotency_key="r1", charge_key="k1")
    assert refund is not None and refund.charge_id == charge.charge_id


def pay_until_answered(gateway: SimulatedGateway, token: str) -> ChargeResult:
    """Call as a job would: again, with the same key, while the outcome is unknown."""
    for _ in range(10):
        try:
            return pay(gateway, token=token)
        except GatewayUnavailable:
            continue
    raise AssertionError("no answer in 10 calls")


def test_refund_of_a_missing_charge_is_none_and_voids_its_key(
    fake: fakeredis.FakeRedis, gateway: SimulatedGateway
) -> None:
    assert gateway.refund(idempotency_key="r1", charge_key="never") is None
    assert gateway.refunds() == [] and gateway.voided() == {"never": "r1"}
    assert {k.decode() for k in fake.keys("*")} == {KEYS.sim("payments", n) for n in ("calls", "voided")}


def test_a_charge_that_arrives_after_its_key_was_voided_takes_no_money(gateway: SimulatedGateway) -> None:
    """The late charge: the order gave the charge up and refunded nothing; then it lands."""
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is None
    late = pay(gateway)
    assert late.status == "voided" and "r1" in (late.decline_reason or "")
    assert gateway.charges() == [] and gateway.find_charge("k1") is None
    assert pay(gateway).status == "voided"  # and so on every retry
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is None


def test_without_voids_a_late_charge_succeeds_and_the_refund_finds_it() -> None:
    gateway = SimulatedGateway(fakeredis.FakeRedis(), KEYS, SimulationConfig(voids=False))
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is None
    assert pay(gateway).status == "succeeded" and gateway.voided() == {}
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is not None


def test_tok_slow_succeeds_after_slow_for_and_latencies_are_taken(fake: fakeredis.FakeRedis) -> None:
    from orders.config import Latency

    sleeps: list[float] = []
    config = SimulationConfig(
        slow_for=1.5, request_latency=Latency(charge=0.25), response_latency=Latency(refund=0.75)
    )
    gateway = SimulatedGateway(fake, KEYS, config, sleep=sleeps.append)
    assert pay(gateway, token="tok_slow").status == "succeeded"
    assert sleeps == [0.25, 1.5]
    gateway.refund(idempotency_key="r1", charge_key="k1")
    assert sleeps == [0.25, 1.5, 0.75]


def test_refund_of_a_declined_charge_is_none(gateway: SimulatedGateway) -> None:
    pay(gateway, token="tok_declined")
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is None
    assert gateway.refunds() == []


def test_refund_after_a_timeout_is_none(gateway: SimulatedGateway) -> None:
    with pytest.raises(GatewayTimeout):
        pay(gateway, token="tok_timeout")
    assert gateway.refund(idempotency_key="r1", charge_key="k1") is None


def test_a_charge_is_refunded_once(gateway: SimulatedGateway) -> None:
    pay(gateway)
    gateway.refund(idempotency_key="r1", charge_key="k1")
    with pytest.raises(ValueError, match="already undone under idempotency key 'r1'"):
        gateway.refund(idempotency_key="r2", charge_key="k1")
    assert len(gateway.refunds()) == 1


def test_a_refund_key_is_not_reused_for_another_charge(gateway: SimulatedGateway) -> None:
    pay(gateway, "a")
    pay(gateway, "b", order_id="o2")
    gateway.refund(idempotency_key="r1", charge_key="a")
    with pytest.raises(ValueError, match="was used to refund"):
        gateway.refund(idempotency_key="r1", charge_key="b")
    assert gateway.refund(idempotency_key="r2", charge_key="b") is not None  # "b" was not blocked


# -- records --------------------------------------------------------------------------------------
def test_state_lives_under_the_simulation_prefix(
    fake: fakeredis.FakeRedis, gateway: SimulatedGateway
) -> None:
    with pytest.raises(GatewayUnavailable):
        pay(gateway, "t", token="tok_transient_1")
    pay(gateway)
    gateway.refund(idempotency_key="r1", charge_key="k1")
    assert {k.decode() for k in fake.keys("*")} == {
        KEYS.sim("payments", name) for name in ("calls", "attempts", "charges", "refunds", "refunded")
    }


def test_records_are_listed_oldest_first(fake: fakeredis.FakeRedis) -> None:
    times = iter([30.0, 10.0, 20.0])
    gateway = SimulatedGateway(fake, KEYS, SimulationConfig(), clock=lambda: next(times))
    made = [pay(gateway, key, order_id=key) for key in ("a", "b", "c")]
    assert [c.idempotency_key for c in gateway.charges()] == ["b", "c", "a"]
    assert gateway.recorded_charge("a") == made[0] and gateway.recorded_charge("zzz") is None
