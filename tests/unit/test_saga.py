"""The saga's transitions, as pure functions: no Redis, no jobs."""

from __future__ import annotations

from typing import Any

import pytest

from orders import commands as c
from orders import events as e
from orders.model import Customer, Order, OrderLine, OrderStatus
from orders.saga import Saga, SagaState, SagaStatus, Step, Transition

SAGA = Saga(step_timeout=30)


def new_order() -> Order:
    return Order(
        id="o1",
        customer=Customer(name="Ada", email="ada@example.com"),
        ship_to="1 Analytical Lane",
        lines=[OrderLine(sku="A", quantity=2, unit_price=500)],
        currency="EUR",
        total=1000,
        payment_token="tok_ok",
        correlation_id="corr",
        placed_at=0,
        updated_at=0,
    )


class Run:
    """Drives one order through the saga, applying each transition like the service does."""

    def __init__(self) -> None:
        self.order = new_order()
        self.saga, outgoing = SAGA.start(self.order, 0)
        self.commands: list[Any] = [o.command for o in outgoing]
        self.events: list[e.Event] = []

    def apply(self, transition: Transition | None) -> Transition | None:
        if transition is not None:
            self.order, self.saga = transition.order, transition.saga
            self.events += transition.events
            self.commands += [o.command for o in transition.outgoing]
        return transition

    def ok(self, step: Step, **facts: Any) -> Transition | None:
        return self.apply(SAGA.step_succeeded(self.order, self.saga, step, facts, "cause", 1))

    def fail(self, step: Step, *, definite: bool = True) -> Transition | None:
        return self.apply(
            SAGA.step_failed(self.order, self.saga, step, "boom", definite=definite, cause="x", now=2)
        )

    def undone(self, step: Step, **facts: Any) -> Transition | None:
        return self.apply(SAGA.compensated(self.order, self.saga, step, facts, "cause", 3))

    def names(self, kind: type) -> list[str]:
        return [type(x).__name__ for x in (self.events if kind is e.Event else self.commands)]


def test_happy_path_confirms_and_sends_email_and_commit_together() -> None:
    run = Run()
    assert run.names(c.Message) == ["ReserveInventory", "CheckStepTimeout"]
    run.ok(Step.RESERVE)
    run.ok(Step.CHARGE, charge_id="ch_1")
    last = run.ok(Step.SHIP, shipment_id="sh_1")
    assert run.order.status is OrderStatus.CONFIRMED and run.saga.status is SagaStatus.CONFIRMED
    assert [type(o.command).__name__ for o in last.outgoing] == ["SendConfirmationEmail", "CommitInventory"]
    assert run.names(e.Event) == ["InventoryReserved", "PaymentCharged", "ShipmentArranged", "OrderConfirmed"]
    assert last.cancel_jobs == ["o1-timeout-arrange_shipping"]


@pytest.mark.parametrize(
    ("failing", "compensations"),
    [
        (Step.RESERVE, []),
        (Step.CHARGE, ["ReleaseInventory"]),
        (Step.SHIP, ["RefundPayment", "ReleaseInventory"]),
    ],
)
def test_definite_failure_compensates_completed_steps_newest_first(
    failing: Step, compensations: list[str]
) -> None:
    run = Run()
    for step in (Step.RESERVE, Step.CHARGE, Step.SHIP):
        if step is failing:
            run.fail(step)
            break
        run.ok(step, charge_id="ch", shipment_id="sh")
    issued: list[str] = []
    while run.saga.compensating is not None:
        issued.append(type(run.commands[-1]).__name__)
        run.undone(run.saga.compensating)
    assert issued == compensations
    assert run.order.status is OrderStatus.CANCELLED and run.order.reason == "boom"
    assert type(run.commands[-1]).__name__ == "SendCancellationEmail"
    assert run.names(e.Event)[-1] == "OrderCancelled"


def test_failure_without_an_answer_also_compensates_the_failed_step() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.fail(Step.CHARGE, definite=False)
    assert isinstance(run.commands[-1], c.RefundPayment)  # the charge may exist: refund it first
    run.undone(Step.CHARGE, refund_id=None)
    assert isinstance(run.commands[-1], c.ReleaseInventory)


def test_timeout_fails_only_the_step_still_waited_for() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    assert SAGA.step_timed_out(run.order, run.saga, Step.RESERVE, "t", 5) is None
    assert run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5)) is not None
    assert run.saga.failure == "no answer from charge_payment within 30 s"


def test_duplicates_change_nothing() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    assert run.ok(Step.RESERVE) is None
    run.fail(Step.CHARGE)
    assert run.fail(Step.CHARGE) is None
    run.undone(Step.RESERVE)
    assert run.undone(Step.RESERVE) is None
    assert run.names(e.Event).count("OrderCancelled") == 1


def test_late_success_after_give_up_is_compensated_even_after_cancel() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5))
    run.undone(Step.CHARGE, refund_id=None, undid=False)  # nothing to refund yet
    run.undone(Step.RESERVE)
    assert run.order.status is OrderStatus.CANCELLED
    run.ok(Step.CHARGE, charge_id="ch_late")  # the gateway answers at last
    assert isinstance(run.commands[-1], c.RefundPayment) and run.saga.status is SagaStatus.CANCELLED
    run.undone(Step.CHARGE, refund_id="re_1")
    assert run.names(e.Event).count("OrderCancelled") == 1
    assert run.names(c.Message).count("SendCancellationEmail") == 1


def test_dead_compensation_flags_the_order_and_requeue_resumes() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.ok(Step.CHARGE, charge_id="ch")
    run.fail(Step.SHIP)
    run.apply(SAGA.compensation_dead(run.order, run.saga, Step.CHARGE, "gateway down", "x", 4))
    assert run.saga.status is SagaStatus.NEEDS_ATTENTION and "refund_payment" in run.order.attention
    assert run.order.status is OrderStatus.PENDING
    run.undone(Step.CHARGE, refund_id="re")  # a person requeued the dead letter and it went through
    assert run.order.attention is None and isinstance(run.commands[-1], c.ReleaseInventory)
    run.undone(Step.RESERVE)
    assert run.order.status is OrderStatus.CANCELLED


def test_emails_are_recorded_once_and_failures_flag_the_order() -> None:
    run = Run()
    for step in (Step.RESERVE, Step.CHARGE, Step.SHIP):
        run.ok(step, charge_id="ch", shipment_id="sh")
    assert run.apply(SAGA.email_sent(run.order, run.saga, "confirmation", "<m>", "x", 5)) is not None
    assert SAGA.email_sent(run.order, run.saga, "confirmation", "<m>", "x", 6) is None
    run2 = Run()
    run2.fail(Step.RESERVE)
    run2.apply(SAGA.email_failed(run2.order, run2.saga, "cancellation", "550 no such user", "x", 5))
    assert "cancellation email" in run2.order.attention
    assert run2.names(e.Event)[-2:] == ["EmailFailed", "OrderNeedsAttention"]


def test_saga_state_round_trips_as_json() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    assert SagaState.model_validate_json(run.saga.model_dump_json()) == run.saga


def test_late_success_already_undone_or_about_to_be_is_ignored() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5))
    assert run.saga.compensating is Step.CHARGE  # the refund is under way and will find the charge
    assert run.ok(Step.CHARGE, charge_id="ch") is None
    run.undone(Step.CHARGE, refund_id="re", undid=True)
    assert run.ok(Step.CHARGE, charge_id="ch") is None  # undone for real: nothing more to do
