"""The same saga, choreographed: no orchestrator decides what comes next.

Each service reacts to the events it cares about (``REACTIONS``) and its answer is recorded
as an event on the order, which the next service reacts to in turn. The order's progress
record here keeps track of what happened, so a step can tell whether it is still wanted
(``awaits``), timeouts and late answers work as in the orchestrated style, and
``chumon order show`` reads the same way; but it sends no command. The orders service
itself reacts too: it confirms on ``ShipmentArranged`` and cancels once the stock is
released (or was never reserved).

    OrderPlaced ─▶ inventory reserves ─▶ InventoryReserved ─▶ payments charge ─▶ PaymentCharged
      ─▶ shipping arranges ─▶ ShipmentArranged ─▶ orders confirm ─▶ OrderConfirmed
           ─▶ notifications email, inventory commits

    ShipmentFailed ─▶ payments refund ─▶ PaymentRefunded ─▶ inventory releases
      ─▶ InventoryReleased ─▶ orders cancel ─▶ OrderCancelled ─▶ notifications email

The step logic (orders/handlers.py) and the jobs are the same in both styles; only who
decides the next command differs. ``CHUMON_SAGA__STYLE=choreographed`` selects this one.
"""

from __future__ import annotations

from typing import Any

from orders import events as e
from orders.model import Order, OrderStatus
from orders.saga import (
    STEPS,
    Messages,
    Outgoing,
    Saga,
    SagaState,
    SagaStatus,
    Step,
    Transition,
)


class Choreography(Saga):
    """The progress record of a choreographed order: the saga's bookkeeping, without commands."""

    def start(self, order: Order, now: float) -> tuple[SagaState, list[Outgoing]]:
        saga = SagaState()
        saga.note(now, "order placed; the inventory service reacts")
        saga.deadline = self.deadline_for(order, saga, now)
        return saga, []

    def confirm(self, order: Order, saga: SagaState, cause: str, now: float) -> Transition | None:
        """The orders service, on ShipmentArranged: every step answered, so the order stands."""
        if order.status is not OrderStatus.PENDING or saga.status is not SagaStatus.RUNNING:
            return None
        if saga.completed != list(STEPS):
            return None
        msg = Messages(order, cause, now)
        saga.status, saga.current = SagaStatus.CONFIRMED, None
        order.status, order.updated_at = OrderStatus.CONFIRMED, now
        saga.note(now, "confirmed")
        return Transition(order, saga, events=[msg.make(e.OrderConfirmed)])

    def cancel(self, order: Order, saga: SagaState, cause: str, now: float) -> Transition | None:
        """The orders service, once no stock is held: the order is off."""
        if order.status is not OrderStatus.PENDING or saga.status is not SagaStatus.COMPENSATING:
            return None
        msg = Messages(order, cause, now)
        reason = saga.failure or "cancelled"
        saga.status = SagaStatus.CANCELLED
        order.status, order.reason, order.updated_at = OrderStatus.CANCELLED, reason, now
        saga.note(now, f"cancelled: {reason}")
        return Transition(order, saga, events=[msg.make(e.OrderCancelled, reason=reason)])

    def compensated(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], cause: str, now: float
    ) -> Transition | None:
        """A compensation's answer. Several may arrive for one step (its failure and its late
        answer each make the service undo it): the first that undid settles it."""
        facts = dict(facts)
        undid = bool(facts.pop("undid", True))
        if step in saga.compensated and step not in saga.void_compensations:
            return None
        msg = Messages(order, cause, now)
        if step in saga.compensated:
            if not undid:
                return None  # nothing found, again: already booked so
            saga.compensated.remove(step)  # it found nothing before; now it undid a late effect
            saga.void_compensations.remove(step)
        elif not undid and step in saga.late:
            return self._compensate_again(order, saga, step, facts, msg)
        t = self._record_compensation(order, saga, step, facts, undid, msg)
        self._compensate_next(t, msg)  # here: only the saga's status, no command
        return t

    def compensation_dead(
        self, order: Order, saga: SagaState, step: Step, reason: str, cause: str, now: float
    ) -> Transition | None:
        if step in saga.compensated or saga.status is SagaStatus.NEEDS_ATTENTION:
            return None
        saga.compensating = step
        return super().compensation_dead(order, saga, step, reason, cause, now)

    # the saga's internals, reduced to bookkeeping
    def _run_step(self, msg: Messages, order: Order, step: Step) -> list[Outgoing]:
        return []

    def _ask_again(self, t: Transition, msg: Messages, step: Step) -> None:
        """Nothing to send: the service reacts to the CompensationRepeated event itself."""

    def _confirm(self, t: Transition, msg: Messages) -> None:
        t.saga.current = None
        t.saga.note(msg.now, "every step answered; the orders service confirms")

    def _compensate_next(self, t: Transition, msg: Messages) -> None:
        cancelled = t.order.status is OrderStatus.CANCELLED
        t.saga.status = SagaStatus.CANCELLED if cancelled else SagaStatus.COMPENSATING
        t.saga.compensating = None
