"""The order saga, orchestrated: which step follows which, and what undoes what.

    reserve inventory ──▶ charge payment ──▶ arrange shipping ──▶ CONFIRMED
          │ fails              │ fails               │ fails          (+ confirmation email,
          ▼                    ▼                     ▼                   commit inventory)
      CANCELLED        release ▶ CANCELLED   refund ▶ release ▶ CANCELLED
                                                       (+ cancellation email)

Everything here is pure: a transition takes the order and its saga state as loaded and
returns the new state, the events that record the change, and the commands to send next.
``orders/service.py`` loads, calls, and commits the result in one atomic step.

Rules worth reading twice:

- A step that fails with a definite "no" (card declined, address refused, out of stock)
  did nothing, so only the steps before it are compensated. A step that fails without an
  answer (time-out, retries exhausted) may or may not have acted, so it is compensated too;
  compensations are idempotent and do nothing where there is nothing to undo.
- Compensations run one at a time, newest step first. Each is its own job with its own
  retries. One that cannot succeed is dead-lettered, and the order is flagged for a person
  (``attention``); requeueing that dead letter resumes the saga where it stopped.
- A success that arrives after its step was given up (a late answer) is not ignored: the
  effect exists, so it is compensated too, whatever the order of the answers. Its
  compensation may be running already and may have asked before the effect existed: the
  step is then marked ``late``, and a "nothing to undo" answer from that compensation sends
  it again (``CompensationRepeated``). Only an answer that did undo settles a late step.
- Every state that waits for something has a deadline (``SagaState.deadline``): a step's
  time-out plus ``stall_after``, or ``stall_after`` for a compensation and for the emails and
  the stock commit after the end. A saga past its deadline is flagged for a person by the
  watchdog (``stalled``); the flag clears itself when the saga moves again (``track``).
- Any message may arrive twice. A transition that finds the saga elsewhere returns None:
  nothing to do, nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orders import commands as c
from orders import events as e
from orders.messages import Message
from orders.model import LineRequest, Order, OrderStatus


class Step(StrEnum):
    RESERVE = "reserve_inventory"
    CHARGE = "charge_payment"
    SHIP = "arrange_shipping"


STEPS: tuple[Step, ...] = (Step.RESERVE, Step.CHARGE, Step.SHIP)

COMPENSATION_NAMES = {
    Step.RESERVE: "release_inventory",
    Step.CHARGE: "refund_payment",
    Step.SHIP: "cancel_shipment",
}


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"


class SagaState(BaseModel):
    """Where one order's saga stands. Stored next to the order, committed with it."""

    model_config = ConfigDict(extra="forbid")

    status: SagaStatus = SagaStatus.RUNNING
    current: Step | None = Step.RESERVE
    completed: list[Step] = Field(default_factory=list)
    pending_compensations: list[Step] = Field(default_factory=list)
    compensating: Step | None = None
    compensated: list[Step] = Field(default_factory=list)
    void_compensations: list[Step] = Field(
        default_factory=list, description="compensations that found nothing to undo (yet)"
    )
    late: list[Step] = Field(
        default_factory=list,
        description="steps that answered success after they were given up, not yet known undone",
    )
    repeats: dict[str, int] = Field(
        default_factory=dict, description="compensation -> times it was sent again for a late step"
    )
    failed_step: Step | None = None
    failure: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict, description="ids the steps returned")
    deadline: float | None = Field(
        default=None, description="when the saga must have moved on (None: it waits for nothing)"
    )
    stalled: str | None = Field(default=None, description="the flag the watchdog raised, while raised")
    history: list[tuple[float, str]] = Field(default_factory=list)

    @property
    def may_charge(self) -> bool:
        """Whether the charge step may still run: until then the payment token is kept (store.py)."""
        return self.status is SagaStatus.RUNNING and self.current in (Step.RESERVE, Step.CHARGE)

    def note(self, now: float, text: str) -> None:
        self.history.append((now, text))
        del self.history[:-30]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command to send, now or after ``delay`` seconds, optionally under a fixed job id."""

    command: c.Command
    delay: float | None = None
    job_id: str | None = None


@dataclass(slots=True)
class Transition:
    order: Order
    saga: SagaState
    events: list[e.Event] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    cancel_jobs: list[str] = field(default_factory=list)


MAX_REPEATS = 3
"""How often a compensation is sent again because its step answered late; then a person looks."""

EMAIL_FAILED = "{kind} email could not be delivered: {reason}"
COMMIT_FAILED = "inventory could not be committed: "
"""The beginnings of two flags, taken back when the email or the commit goes through at last
(its dead letter requeued by a person)."""


def timeout_job_id(order_id: str, step: Step) -> str:
    """The fixed id of a step's time-out check, so the step's answer can cancel it.

    Letters, digits, '-' and '_' only: the job id rule of rq and every tool on its data.
    """
    return f"{order_id}-timeout-{step.value}"


class Saga:
    """The saga definition with its tunables: how long a step may stay silent, and how long any
    state may go without progress before a person is asked to look."""

    def __init__(self, step_timeout: float, stall_after: float = 300.0) -> None:
        self.step_timeout = step_timeout
        self.stall_after = stall_after

    # -- starting -----------------------------------------------------------------------------
    def start(self, order: Order, now: float) -> tuple[SagaState, list[Outgoing]]:
        saga = SagaState()
        saga.note(now, "order placed; reserving inventory")
        saga.deadline = self.deadline_for(order, saga, now)
        msg = Messages(order, None, now)
        return saga, self._run_step(msg, order, Step.RESERVE)

    # -- answers from the steps ----------------------------------------------------------------------
    def step_succeeded(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], cause: str, now: float
    ) -> Transition | None:
        msg = Messages(order, cause, now)
        if step in saga.completed:
            return None
        if saga.status is not SagaStatus.RUNNING or saga.current is not step:
            return self._late_success(order, saga, step, facts, msg)
        t = Transition(order, saga)
        saga.completed.append(step)
        saga.facts.update(facts)
        t.events.append(_success_event(msg, order, step, facts))
        t.cancel_jobs.append(timeout_job_id(order.id, step))
        following = _next_step(step)
        if following is None:
            self._confirm(t, msg)
        else:
            saga.current = following
            saga.note(now, f"{step.value} done; {following.value}")
            t.outgoing += self._run_step(msg, order, following)
        return t

    def step_failed(
        self,
        order: Order,
        saga: SagaState,
        step: Step,
        reason: str,
        *,
        definite: bool,
        cause: str,
        now: float,
        shortage: list[dict[str, Any]] | None = None,
    ) -> Transition | None:
        if saga.status is not SagaStatus.RUNNING or saga.current is not step:
            return None
        msg = Messages(order, cause, now)
        t = Transition(order, saga)
        saga.current, saga.failed_step, saga.failure = None, step, reason
        t.events.append(_failure_event(msg, step, reason, definite, shortage or []))
        t.cancel_jobs.append(timeout_job_id(order.id, step))
        undo = list(reversed(saga.completed))
        if not definite:
            undo.insert(0, step)  # no answer: it may have acted
        saga.pending_compensations = undo
        saga.note(now, f"{step.value} failed: {reason}")
        self._compensate_next(t, msg)
        return t

    def step_timed_out(
        self, order: Order, saga: SagaState, step: Step, cause: str, now: float
    ) -> Transition | None:
        reason = f"no answer from {step.value} within {self.step_timeout:g} s"
        return self.step_failed(order, saga, step, reason, definite=False, cause=cause, now=now)

    # -- answers from the compensations ------------------------------------------------------------
    def compensated(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], cause: str, now: float
    ) -> Transition | None:
        """A compensation's answer; ``facts["undid"]`` False: it found nothing to undo."""
        if saga.compensating is not step:
            return None
        msg = Messages(order, cause, now)
        facts = dict(facts)
        undid = bool(facts.pop("undid", True))
        if not undid and step in saga.late:
            return self._compensate_again(order, saga, step, facts, msg)
        t = self._record_compensation(order, saga, step, facts, undid, msg)
        self._compensate_next(t, msg)
        return t

    def _record_compensation(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], undid: bool, msg: Messages
    ) -> Transition:
        """Book a compensation's answer: its event, and the flag it clears if it was stuck."""
        t = Transition(order, saga)
        saga.compensating = None
        saga.compensated.append(step)
        if step in saga.pending_compensations:
            saga.pending_compensations.remove(step)
        if undid:
            if step in saga.late:
                saga.late.remove(step)
        else:
            saga.void_compensations.append(step)
        saga.facts.update(facts)
        t.events.append(compensation_event(msg, step, facts))
        if saga.status is SagaStatus.NEEDS_ATTENTION:
            order.attention = None
            t.events.append(msg.make(e.AttentionCleared))
        saga.note(msg.now, f"{COMPENSATION_NAMES[step]} done" + ("" if undid else ": nothing to undo"))
        return t

    def _compensate_again(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], msg: Messages
    ) -> Transition:
        """The compensation found nothing, but its step answered late: it asked before the effect
        existed. Ask again (up to MAX_REPEATS times; then a person must look)."""
        name = COMPENSATION_NAMES[step]
        t = Transition(order, saga)
        saga.facts.update(facts)
        repeats = saga.repeats.get(name, 0) + 1
        saga.repeats[name] = repeats
        if repeats > MAX_REPEATS:
            saga.status = SagaStatus.NEEDS_ATTENTION
            order.attention = (
                f"{name} found nothing to undo {repeats} times although {step.value} answered late; "
                f"check {service_of(step)} by hand"
            )
            order.updated_at = msg.now
            t.events.append(msg.make(e.OrderNeedsAttention, reason=order.attention))
            saga.note(msg.now, f"{name}: nothing found again after a late answer: needs a person")
            return t
        reason = f"{name} found nothing to undo, but {step.value} answered late: asking again"
        t.events.append(msg.make(e.CompensationRepeated, step=step.value, reason=reason))
        saga.note(msg.now, reason)
        self._ask_again(t, msg, step)
        return t

    def _ask_again(self, t: Transition, msg: Messages, step: Step) -> None:
        t.outgoing.append(Outgoing(compensation_command(msg, step, t.saga.failure or "cancelled")))

    def compensation_dead(
        self, order: Order, saga: SagaState, step: Step, reason: str, cause: str, now: float
    ) -> Transition | None:
        if saga.compensating is not step or saga.status is SagaStatus.NEEDS_ATTENTION:
            return None
        msg = Messages(order, cause, now)
        t = Transition(order, saga)
        saga.status = SagaStatus.NEEDS_ATTENTION
        order.attention = (
            f"{COMPENSATION_NAMES[step]} could not be done ({reason}); "
            "fix the cause and requeue its dead letter: chumon dlq requeue --queue "
            f"{service_of(step)}"
        )
        order.updated_at = now
        t.events.append(msg.make(e.OrderNeedsAttention, reason=order.attention))
        saga.note(now, f"{COMPENSATION_NAMES[step]} dead-lettered: needs a person")
        return t

    def hold_expired(
        self, order: Order, saga: SagaState, held_for: float, cause: str, now: float
    ) -> Transition | None:
        """The order's stock has been held too long: give up the step the saga waits for."""
        if saga.status is not SagaStatus.RUNNING or saga.current is None:
            return None
        reason = f"stock held for {held_for:.0f} s without the order completing"
        return self.step_failed(order, saga, saga.current, reason, definite=False, cause=cause, now=now)

    # -- after the end -------------------------------------------------------------------------------
    def inventory_committed(self, order: Order, saga: SagaState, cause: str, now: float) -> Transition | None:
        if saga.facts.get("inventory_committed"):
            return None
        saga.facts["inventory_committed"] = True
        saga.note(now, "inventory committed")
        msg = Messages(order, cause, now)
        t = Transition(order, saga, events=[msg.make(e.InventoryCommitted)])
        _take_back(t, msg, COMMIT_FAILED)  # a requeued commit went through
        return t

    def email_sent(
        self, order: Order, saga: SagaState, kind: str, message_id: str, cause: str, now: float
    ) -> Transition | None:
        emails = saga.facts.setdefault("emails", {})
        if kind in emails:
            return None
        emails[kind] = message_id
        saga.facts.get("email_failures", {}).pop(kind, None)  # a requeued email went through
        saga.note(now, f"{kind} email sent")
        msg = Messages(order, cause, now)
        t = Transition(order, saga, events=[msg.make(e.EmailSent, kind=kind, message_id=message_id)])
        _take_back(t, msg, EMAIL_FAILED.format(kind=kind, reason=""))
        return t

    def email_failed(
        self, order: Order, saga: SagaState, kind: str, reason: str, cause: str, now: float
    ) -> Transition | None:
        failures = saga.facts.setdefault("email_failures", {})
        if kind in saga.facts.get("emails", {}) or kind in failures:
            return None
        failures[kind] = reason
        msg = Messages(order, cause, now)
        t = Transition(order, saga, events=[msg.make(e.EmailFailed, kind=kind, reason=reason)])
        if not order.attention:
            order.attention, order.updated_at = EMAIL_FAILED.format(kind=kind, reason=reason), now
            t.events.append(msg.make(e.OrderNeedsAttention, reason=order.attention))
        saga.note(now, f"{kind} email failed: {reason}")
        return t

    def flag(self, order: Order, saga: SagaState, reason: str, cause: str, now: float) -> Transition | None:
        """Ask a person to look at the order (something after its end could not be done)."""
        if order.attention == reason:
            return None
        order.attention, order.updated_at = reason, now
        saga.note(now, f"needs attention: {reason}")
        event = Messages(order, cause, now).make(e.OrderNeedsAttention, reason=reason)
        return Transition(order, saga, events=[event])

    def unflag(self, order: Order, saga: SagaState, reason: str, cause: str, now: float) -> Transition | None:
        """Take back a flag raised for ``reason`` (its cause was dealt with); another flag stays."""
        if order.attention != reason:
            return None
        order.attention, order.updated_at = None, now
        saga.note(now, "attention cleared")
        return Transition(order, saga, events=[Messages(order, cause, now).make(e.AttentionCleared)])

    def stale_hold_released(self, order: Order, saga: SagaState, cause: str, now: float) -> Transition:
        """Record the release of stock an order held although its saga no longer needed it."""
        saga.note(now, "stock held past its hold time after the saga let it go: released")
        return Transition(order, saga, events=[Messages(order, cause, now).make(e.InventoryReleased)])

    # -- deadlines ------------------------------------------------------------------------------------
    def deadline_for(self, order: Order, saga: SagaState, now: float) -> float | None:
        """When the saga must have moved on from where it stands, or None if it waits for nothing."""
        if saga.status is SagaStatus.NEEDS_ATTENTION:
            return None  # a person has been asked already
        if saga.status is SagaStatus.RUNNING:
            return now + self.step_timeout + self.stall_after
        if self.waiting_for(order, saga) is None:
            return None
        return now + self.stall_after

    def waiting_for(self, order: Order, saga: SagaState) -> str | None:
        """What the saga waits for, in words (None: nothing, it is over)."""
        if saga.status is SagaStatus.RUNNING and saga.current is not None:
            return f"waiting for {saga.current.value}"
        running = [saga.compensating] if saga.compensating else []
        undo = [COMPENSATION_NAMES[s] for s in [*running, *saga.pending_compensations]]
        if undo:
            queues = ", ".join(sorted({service_of(s) for s in [*running, *saga.pending_compensations]}))
            return f"compensating: {', '.join(undo)} (look at the queues and dead letters of {queues})"
        emails = {**saga.facts.get("emails", {}), **saga.facts.get("email_failures", {})}
        if order.status is OrderStatus.CONFIRMED:
            missing = [] if "confirmation" in emails else ["the confirmation email"]
            missing += [] if saga.facts.get("inventory_committed") else ["the stock commit"]
            return f"confirmed; waiting for {' and '.join(missing)}" if missing else None
        if order.status is OrderStatus.CANCELLED:
            return None if "cancellation" in emails else "cancelled; waiting for the cancellation email"
        return "waiting for the order to be cancelled"

    def stalled(self, order: Order, saga: SagaState, cause: str, now: float) -> Transition | None:
        """The watchdog: past its deadline, the saga is flagged for a person (once)."""
        if saga.deadline is None or now < saga.deadline:
            return None
        what = self.waiting_for(order, saga) or "nothing"
        reason = f"no progress for {self.stall_after:g} s: {what}"
        saga.stalled, saga.deadline = reason, None
        order.attention, order.updated_at = reason, now
        saga.note(now, f"stalled: {reason}")
        event = Messages(order, cause, now).make(e.OrderNeedsAttention, reason=reason)
        return Transition(order, saga, events=[event])

    def track(self, before: SagaState, t: Transition, now: float) -> None:
        """After any transition: if the saga moved, set its next deadline and take back the
        watchdog's flag. A transition that did not move it (a flag) leaves the deadline alone."""
        self.track_from(_progress(before), t, now)

    @staticmethod
    def progress(saga: SagaState) -> tuple[Any, ...]:
        """What changes when a saga moves: taken before a transition, for ``track_from``."""
        return _progress(saga)

    def track_from(self, before: tuple[Any, ...], t: Transition, now: float) -> None:
        """``track``, given ``progress(saga)`` as it was before the transition."""
        if before == _progress(t.saga):
            return
        t.saga.deadline = self.deadline_for(t.order, t.saga, now)
        if t.saga.stalled is not None:
            if t.order.attention == t.saga.stalled:
                t.order.attention = None
                t.events.append(Messages(t.order, None, now).make(e.AttentionCleared))
            t.saga.stalled = None

    # -- internals ---------------------------------------------------------------------------------
    def _run_step(self, msg: Messages, order: Order, step: Step) -> list[Outgoing]:
        check = msg.make(c.CheckStepTimeout, step=step.value)
        return [
            Outgoing(step_command(msg, order, step)),
            Outgoing(check, self.step_timeout, timeout_job_id(order.id, step)),
        ]

    def _confirm(self, t: Transition, msg: Messages) -> None:
        order, saga = t.order, t.saga
        saga.status, saga.current = SagaStatus.CONFIRMED, None
        order.status, order.updated_at = OrderStatus.CONFIRMED, msg.now
        saga.note(msg.now, "confirmed")
        t.events.append(msg.make(e.OrderConfirmed))
        t.outgoing += [Outgoing(msg.make(c.SendConfirmationEmail)), Outgoing(msg.make(c.CommitInventory))]

    def _compensate_next(self, t: Transition, msg: Messages) -> None:
        saga, cancelled = t.saga, t.order.status is OrderStatus.CANCELLED
        if saga.pending_compensations:
            step = saga.pending_compensations.pop(0)
            saga.compensating = step
            saga.status = SagaStatus.CANCELLED if cancelled else SagaStatus.COMPENSATING
            saga.note(msg.now, f"compensating: {COMPENSATION_NAMES[step]}")
            t.outgoing.append(Outgoing(compensation_command(msg, step, saga.failure or "cancelled")))
        elif cancelled:
            saga.status = SagaStatus.CANCELLED
        else:
            self._cancel(t, msg)

    def _cancel(self, t: Transition, msg: Messages) -> None:
        order, saga = t.order, t.saga
        reason = saga.failure or "cancelled"
        saga.status = SagaStatus.CANCELLED
        order.status, order.reason, order.updated_at = OrderStatus.CANCELLED, reason, msg.now
        saga.note(msg.now, f"cancelled: {reason}")
        t.events.append(msg.make(e.OrderCancelled, reason=reason))
        t.outgoing.append(Outgoing(msg.make(c.SendCancellationEmail, reason=reason)))

    def _late_success(
        self, order: Order, saga: SagaState, step: Step, facts: dict[str, Any], msg: Messages
    ) -> Transition | None:
        """A step answered after the saga gave it up: its effect exists, so undo it too.

        Recorded whatever the compensation's progress: if it is still to run, it will find the
        effect; if it is running, it may have asked before the effect existed, so the step is
        marked ``late`` and a "nothing to undo" answer sends it again; if it ran and found
        nothing, it runs again. Only a compensation that undid the effect settles the step.
        """
        if saga.status is SagaStatus.RUNNING or step in saga.late:
            return None  # not given up (an answer for a step never started), or told already
        if step in saga.compensated and step not in saga.void_compensations:
            return None  # undone for real: that was this very effect
        t = Transition(order, saga)
        saga.facts.update(facts)
        saga.late.append(step)
        t.events.append(_success_event(msg, order, step, facts, late=True))
        if step in saga.compensated:  # it found nothing, before the effect existed: again
            saga.compensated.remove(step)
            saga.void_compensations.remove(step)
            saga.pending_compensations.append(step)
        elif step != saga.compensating and step not in saga.pending_compensations:
            saga.pending_compensations.append(step)
        saga.note(msg.now, f"late answer from {step.value}: compensating it")
        if saga.compensating is None:
            self._compensate_next(t, msg)
        return t


class Messages:
    """Makes messages for one order, caused by one message, at one time."""

    def __init__(self, order: Order, cause: str | None, now: float) -> None:
        self.order, self.cause, self.now = order, cause, now

    def make(self, message_type: type[Any], /, **fields: Any) -> Any:
        base: dict[str, Any] = {
            "order_id": self.order.id,
            "correlation_id": self.order.correlation_id,
            "causation_id": self.cause,
            "at": self.now,
        }
        message: Message = message_type(**base, **fields)
        return message


def _take_back(t: Transition, msg: Messages, flag: str) -> None:
    """Clear the order's flag if it is the one beginning with ``flag``: its cause is dealt with."""
    if t.order.attention and t.order.attention.startswith(flag):
        t.order.attention = None
        t.events.append(msg.make(e.AttentionCleared))


def _progress(saga: SagaState) -> tuple[Any, ...]:
    """What changes when a saga moves (a flag, a note or a deadline do not count)."""
    return (
        saga.status,
        saga.current,
        saga.compensating,
        tuple(saga.completed),
        tuple(saga.pending_compensations),
        tuple(saga.compensated),
        tuple(saga.late),
        tuple(sorted(saga.repeats.items())),
        tuple(sorted(saga.facts.get("emails", {}))),
        tuple(sorted(saga.facts.get("email_failures", {}))),
        bool(saga.facts.get("inventory_committed")),
    )


def _next_step(step: Step) -> Step | None:
    index = STEPS.index(step)
    return STEPS[index + 1] if index + 1 < len(STEPS) else None


def service_of(step: Step) -> str:
    return {Step.RESERVE: "inventory", Step.CHARGE: "payments", Step.SHIP: "shipping"}[step]


def _requests(order: Order) -> list[LineRequest]:
    return [LineRequest(sku=line.sku, quantity=line.quantity) for line in order.lines]


def step_command(msg: Messages, order: Order, step: Step) -> c.Command:
    if step is Step.RESERVE:
        command: c.Command = msg.make(c.ReserveInventory, lines=_requests(order))
    elif step is Step.CHARGE:
        command = msg.make(
            c.ChargePayment, amount=order.total, currency=order.currency, payment_hint=order.payment_hint
        )
    else:
        command = msg.make(c.ArrangeShipping, ship_to=order.ship_to, lines=_requests(order))
    return command


def compensation_command(msg: Messages, step: Step, reason: str) -> c.Command:
    kind = {Step.RESERVE: c.ReleaseInventory, Step.CHARGE: c.RefundPayment, Step.SHIP: c.CancelShipment}[step]
    command: c.Command = msg.make(kind, reason=reason)
    return command


def _success_event(
    msg: Messages, order: Order, step: Step, facts: dict[str, Any], *, late: bool = False
) -> e.Event:
    if step is Step.RESERVE:
        event: e.Event = msg.make(e.InventoryReserved, lines=_requests(order), late=late)
    elif step is Step.CHARGE:
        event = msg.make(
            e.PaymentCharged,
            charge_id=facts["charge_id"],
            amount=order.total,
            currency=order.currency,
            late=late,
        )
    else:
        event = msg.make(e.ShipmentArranged, shipment_id=facts["shipment_id"], late=late)
    return event


def _failure_event(
    msg: Messages, step: Step, reason: str, definite: bool, shortage: list[dict[str, Any]]
) -> e.Event:
    if step is Step.RESERVE:
        event: e.Event = msg.make(
            e.InventoryReservationFailed, reason=reason, definite=definite, shortage=shortage
        )
    elif step is Step.CHARGE:
        event = msg.make(e.PaymentFailed, reason=reason, definite=definite)
    else:
        event = msg.make(e.ShipmentFailed, reason=reason, definite=definite)
    return event


def compensation_event(msg: Messages, step: Step, facts: dict[str, Any]) -> e.Event:
    if step is Step.RESERVE:
        event: e.Event = msg.make(e.InventoryReleased)
    elif step is Step.CHARGE:
        event = msg.make(e.PaymentRefunded, refund_id=facts.get("refund_id"))
    else:
        event = msg.make(e.ShipmentCancelled, cancellation_id=facts.get("cancellation_id"))
    return event
