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


def test_late_success_during_its_own_compensation_is_never_dropped() -> None:
    """The race of issue 11: the refund asked before the charge landed, the charge reports while
    the refund's "nothing to refund" is on its way. The refund must be sent again."""
    run = Run()
    run.ok(Step.RESERVE)
    run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5))
    assert run.saga.compensating is Step.CHARGE and isinstance(run.commands[-1], c.RefundPayment)
    assert run.ok(Step.CHARGE, charge_id="ch_late") is not None  # recorded, not dropped
    assert run.saga.late == [Step.CHARGE] and run.names(e.Event)[-1] == "PaymentCharged"
    assert run.ok(Step.CHARGE, charge_id="ch_late") is None  # told twice: once is enough
    refunds = run.names(c.Message).count("RefundPayment")
    run.undone(Step.CHARGE, refund_id=None, undid=False)  # the answer that asked too early
    assert run.names(c.Message).count("RefundPayment") == refunds + 1  # asked again
    assert run.names(e.Event)[-1] == "CompensationRepeated" and run.saga.compensating is Step.CHARGE
    run.undone(Step.CHARGE, refund_id="re_1", undid=True)
    assert run.saga.late == [] and isinstance(run.commands[-1], c.ReleaseInventory)
    run.undone(Step.RESERVE)
    assert run.order.status is OrderStatus.CANCELLED and run.saga.facts["refund_id"] == "re_1"


def test_late_success_whose_compensation_did_undo_it_is_settled() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5))
    run.ok(Step.CHARGE, charge_id="ch")  # landed before the refund asked: the refund finds it
    run.undone(Step.CHARGE, refund_id="re", undid=True)
    assert run.saga.late == [] and isinstance(run.commands[-1], c.ReleaseInventory)
    assert run.ok(Step.CHARGE, charge_id="ch") is None  # undone for real: nothing more to do


def test_a_compensation_that_keeps_finding_nothing_after_a_late_answer_asks_a_person() -> None:
    run = Run()
    run.ok(Step.RESERVE)
    run.apply(SAGA.step_timed_out(run.order, run.saga, Step.CHARGE, "t", 5))
    run.ok(Step.CHARGE, charge_id="ch")
    for _ in range(3):
        run.undone(Step.CHARGE, refund_id=None, undid=False)
        assert run.saga.status is SagaStatus.COMPENSATING
    run.undone(Step.CHARGE, refund_id=None, undid=False)
    assert (
        run.saga.status is SagaStatus.NEEDS_ATTENTION
        and "found nothing to undo 4 times" in run.order.attention
    )


@pytest.mark.parametrize("flow", ["orchestrated", "choreographed"])
def test_late_success_in_every_order_of_answers_ends_undone(flow: str) -> None:
    """Every interleaving of the charge's late answer with its refund's two possible answers."""
    from itertools import permutations

    from orders.choreography import Choreography

    saga = Choreography(step_timeout=30) if flow == "choreographed" else SAGA
    events = ("late", "void", "undid")
    for order in permutations(events):
        order_ = new_order()
        state, _ = saga.start(order_, 0)
        state = saga.step_succeeded(order_, state, Step.RESERVE, {}, "x", 1).saga
        t = saga.step_timed_out(order_, state, Step.CHARGE, "t", 2)
        order_, state = t.order, t.saga
        for what in order:
            if what == "late":
                t = saga.step_succeeded(order_, state, Step.CHARGE, {"charge_id": "ch"}, "x", 3)
            else:
                facts = {"undid": what == "undid", "refund_id": "re" if what == "undid" else None}
                t = saga.compensated(order_, state, Step.CHARGE, facts, "x", 3)
            if t is not None:
                order_, state = t.order, t.saga
        for _ in range(5):  # then whatever the saga still asks for is done: the charge exists now
            step = state.compensating or (state.pending_compensations or [None])[0]
            if step is None:
                break
            t = saga.compensated(order_, state, step, {"undid": True, "refund_id": "re"}, "x", 4)
            order_, state = t.order, t.saga
        if isinstance(saga, Choreography):  # the orders service reacts to InventoryReleased
            t = saga.cancel(order_, state, "x", 5)
            order_, state = (t.order, t.saga) if t else (order_, state)
        assert Step.CHARGE not in state.late, order  # the last word on the charge: undone
        assert Step.CHARGE in state.compensated and Step.CHARGE not in state.void_compensations, order
        assert order_.status is OrderStatus.CANCELLED, order


def test_every_waiting_state_has_a_deadline_and_the_watchdog_flags_it_once() -> None:
    saga = Saga(step_timeout=30, stall_after=60)
    run = Run()
    run.saga.deadline = saga.deadline_for(run.order, run.saga, 0)
    assert run.saga.deadline == 90  # a step: its time-out, then stall_after
    run.fail(Step.RESERVE, definite=False)  # a compensation runs: release
    before = run.saga.model_copy(deep=True)
    assert saga.stalled(run.order, run.saga, "w", 10) is None  # not yet
    t = saga.step_failed(run.order, run.saga, Step.RESERVE, "x", definite=False, cause="x", now=11)
    assert t is None
    run.saga.deadline = saga.deadline_for(run.order, run.saga, 2)
    assert run.saga.deadline == 62
    t = run.apply(saga.stalled(run.order, run.saga, "w", 70))
    assert t is not None and "no progress for 60 s: compensating: release_inventory" in run.order.attention
    assert run.saga.deadline is None and saga.stalled(run.order, run.saga, "w", 80) is None  # once
    t = saga.compensated(run.order, run.saga, Step.RESERVE, {"undid": True}, "x", 90)  # it moves again
    saga.track(before, t, 90)
    assert (
        t.order.attention is None
        and t.saga.stalled is None
        and "AttentionCleared" in [type(ev).__name__ for ev in t.events]
    )
    assert t.order.status is OrderStatus.CANCELLED and t.saga.deadline == 150  # the cancellation email


def test_a_finished_saga_waits_for_nothing() -> None:
    run = Run()
    for step in (Step.RESERVE, Step.CHARGE, Step.SHIP):
        run.ok(step, charge_id="ch", shipment_id="sh")
    assert SAGA.deadline_for(run.order, run.saga, 0) is not None  # email and stock commit to come
    run.apply(SAGA.email_sent(run.order, run.saga, "confirmation", "<m>", "x", 5))
    run.apply(SAGA.inventory_committed(run.order, run.saga, "x", 6))
    assert SAGA.deadline_for(run.order, run.saga, 7) is None


def test_a_requeued_email_or_commit_that_goes_through_takes_its_flag_back() -> None:
    run = Run()
    for step in (Step.RESERVE, Step.CHARGE, Step.SHIP):
        run.ok(step, charge_id="ch", shipment_id="sh")
    run.apply(SAGA.email_failed(run.order, run.saga, "confirmation", "attempts exhausted", "x", 5))
    assert run.order.attention == "confirmation email could not be delivered: attempts exhausted"
    run.apply(SAGA.email_sent(run.order, run.saga, "confirmation", "<m>", "x", 6))  # a person requeued it
    assert run.order.attention is None and run.names(e.Event)[-1] == "AttentionCleared"
    assert "confirmation" not in run.saga.facts["email_failures"]
    run.apply(SAGA.flag(run.order, run.saga, "inventory could not be committed: gone", "x", 7))
    run.apply(SAGA.inventory_committed(run.order, run.saga, "x", 8))
    assert run.order.attention is None
