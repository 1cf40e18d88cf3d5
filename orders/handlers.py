"""One handler per command: do the service's part, then report to the orchestrator.

Each handler is small on purpose: ask whether the saga still wants this (a step that was
given up does not act), call the service with an idempotency key derived from the order
(so a retry gets the service's first answer instead of acting twice), and pass the answer
to the saga. A transient failure (``orders.errors.TransientError``) propagates: the job
runtime retries it with backoff; when retries run out, the dead-letter hook reports the
step as failed without an answer.

A step the saga gave up does not act, but it still looks (a lookup, not a call that acts):
if an earlier attempt of it did act (its worker died after the service took it, before the
answer was reported), that effect is reported now, as a late answer, so it is undone.

An email is sent only if the order's saga has not recorded it yet. What is left is the crash
window of docs/orders.md: from the moment the mail server has the whole message to the
commit of ``EmailSent``, a worker that dies (or a reply that is lost) means the same
Message-ID is sent once more on retry. A commit that Redis refuses for a while (out of memory,
a failover's read-only moment, a dropped connection, another client's long script) does not
open that window: once the message is out, the handler keeps trying to record it for up to
``RECORD_PATIENCE`` seconds, well inside the email job's time-out, instead of failing into a
retry that would send again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orders import commands as c
from orders.inventory import Inventory, ReservationState
from orders.notifications import Email, Mailer, cancellation_email, confirmation_email
from orders.payments import PaymentGateway
from orders.saga import Step
from orders.service import OrderService
from orders.shipping import Carrier
from orders.store import Loaded, UnknownOrder
from workers.durability import NotReplicated

RECORD_PATIENCE = 20.0  # seconds; the email jobs' time-out is 30 s (jobs/orders.py)
# Redis refusing or missing a write for a while: worth waiting out once an email is out
PASSING = (
    OutOfMemoryError, ReadOnlyError, BusyLoadingError, RedisConnectionError, RedisTimeoutError, NotReplicated,
)  # fmt: skip
# the same refusals as plain replies: BUSY (another client's script holds Redis) has no class of
# its own in redis-py, and Redis 6.2 runs a script until its first write, whose refusal comes back
# inside "Error running script ...: -OOM command not allowed ..."
PASSING_REPLY = re.compile(r"(^|-)(BUSY|OOM|READONLY|LOADING|MASTERDOWN) ")


def _passing(exc: BaseException) -> bool:
    return isinstance(exc, PASSING) or (
        isinstance(exc, ResponseError) and PASSING_REPLY.search(str(exc)) is not None
    )


@dataclass(frozen=True)
class Services:
    """Everything a handler may call. Built once per process by ``chumon.bootstrap``."""

    orders: OrderService
    inventory: Inventory
    payments: PaymentGateway
    carrier: Carrier
    mailer: Mailer
    message_id_domain: str


def charge_key(order_id: str) -> str:
    return f"charge:{order_id}"


def shipment_key(order_id: str) -> str:
    return f"shipment:{order_id}"


# -- steps --------------------------------------------------------------------------------------
def reserve_inventory(cmd: c.ReserveInventory, s: Services) -> str:
    loaded = s.orders.awaiting(cmd.order_id, Step.RESERVE)
    if loaded is None:
        held = s.inventory.reservation(cmd.order_id)
        if held is not None and held.state in (ReservationState.RESERVED, ReservationState.COMMITTED):
            s.orders.step_succeeded(cmd.order_id, Step.RESERVE, {}, cause=cmd.id)
        return "skipped: the saga no longer waits for the reservation"
    result = s.inventory.reserve(cmd.order_id, cmd.lines)
    if result.state is ReservationState.VOID:
        reason = "reservation void: the order let go of its stock before it was reserved"
        s.orders.step_failed(cmd.order_id, Step.RESERVE, reason, definite=True, cause=cmd.id, loaded=loaded)
        return "void"
    if result.state is ReservationState.REJECTED:
        shortage = [item.model_dump() for item in result.shortage]
        short = ", ".join(f"{i['sku']} (asked {i['requested']}, {i['available']} left)" for i in shortage)
        s.orders.step_failed(
            cmd.order_id,
            Step.RESERVE,
            f"out of stock: {short}",
            definite=True,
            cause=cmd.id,
            shortage=shortage,
            loaded=loaded,
        )
        return "out of stock"
    s.orders.step_succeeded(cmd.order_id, Step.RESERVE, {}, cause=cmd.id, loaded=loaded)
    return result.state


def charge_payment(cmd: c.ChargePayment, s: Services) -> str:
    loaded = s.orders.awaiting(cmd.order_id, Step.CHARGE)
    if loaded is None:
        found = s.payments.find_charge(charge_key(cmd.order_id))
        if found is not None and found.status == "succeeded":
            s.orders.step_succeeded(cmd.order_id, Step.CHARGE, {"charge_id": found.charge_id}, cause=cmd.id)
        return "skipped: the saga no longer waits for the payment"
    token = s.orders.payment_method(cmd.order_id)
    if token is None:  # kept only while the charge may run: it expired, or the saga moved on meanwhile
        reason = "payment declined: the payment method is no longer on file"
        s.orders.step_failed(cmd.order_id, Step.CHARGE, reason, definite=True, cause=cmd.id, loaded=loaded)
        return "no payment method"
    charge = s.payments.charge(
        idempotency_key=charge_key(cmd.order_id),
        order_id=cmd.order_id,
        token=token,
        amount=cmd.amount,
        currency=cmd.currency,
    )
    if charge.status != "succeeded":
        reason = f"payment declined: {charge.decline_reason or 'declined'}"
        s.orders.step_failed(cmd.order_id, Step.CHARGE, reason, definite=True, cause=cmd.id, loaded=loaded)
        return "declined"
    facts = {"charge_id": charge.charge_id}
    s.orders.step_succeeded(cmd.order_id, Step.CHARGE, facts, cause=cmd.id, loaded=loaded)
    return charge.charge_id


def arrange_shipping(cmd: c.ArrangeShipping, s: Services) -> str:
    loaded = s.orders.awaiting(cmd.order_id, Step.SHIP)
    if loaded is None:
        found = s.carrier.find_shipment(shipment_key(cmd.order_id))
        if found is not None and found.status == "arranged":
            facts = {"shipment_id": found.shipment_id}
            s.orders.step_succeeded(cmd.order_id, Step.SHIP, facts, cause=cmd.id)
        return "skipped: the saga no longer waits for the shipment"
    items = [(line.sku, line.quantity) for line in cmd.lines]
    shipment = s.carrier.arrange(
        idempotency_key=shipment_key(cmd.order_id), order_id=cmd.order_id, address=cmd.ship_to, items=items
    )
    if shipment.status != "arranged":
        reason = f"carrier refused: {shipment.refusal_reason or 'refused'}"
        s.orders.step_failed(cmd.order_id, Step.SHIP, reason, definite=True, cause=cmd.id, loaded=loaded)
        return "refused"
    facts = {"shipment_id": shipment.shipment_id}
    s.orders.step_succeeded(cmd.order_id, Step.SHIP, facts, cause=cmd.id, loaded=loaded)
    return shipment.shipment_id


def check_step_timeout(cmd: c.CheckStepTimeout, s: Services) -> str:
    done = s.orders.step_timed_out(cmd.order_id, Step(cmd.step), cause=cmd.id)
    return "step timed out" if done else "step had answered"


# -- compensations --------------------------------------------------------------------------------
def release_inventory(cmd: c.ReleaseInventory, s: Services) -> str | None:
    state = s.inventory.release(cmd.order_id)
    s.orders.compensated(cmd.order_id, Step.RESERVE, {"undid": state == "released"}, cause=cmd.id)
    return state


def refund_payment(cmd: c.RefundPayment, s: Services) -> str | None:
    refund = s.payments.refund(idempotency_key=f"refund:{cmd.order_id}", charge_key=charge_key(cmd.order_id))
    refund_id = refund.refund_id if refund else None
    facts = {"refund_id": refund_id, "undid": refund is not None}
    s.orders.compensated(cmd.order_id, Step.CHARGE, facts, cause=cmd.id)
    return refund_id


def cancel_shipment(cmd: c.CancelShipment, s: Services) -> str | None:
    cancellation = s.carrier.cancel(
        idempotency_key=f"cancel-shipment:{cmd.order_id}", arrange_key=shipment_key(cmd.order_id)
    )
    cancellation_id = cancellation.cancellation_id if cancellation else None
    facts = {"cancellation_id": cancellation_id, "undid": cancellation is not None}
    s.orders.compensated(cmd.order_id, Step.SHIP, facts, cause=cmd.id)
    return cancellation_id


# -- after the end ----------------------------------------------------------------------------------
def commit_inventory(cmd: c.CommitInventory, s: Services) -> str | None:
    state = s.inventory.commit(cmd.order_id)
    s.orders.inventory_committed(cmd.order_id, cause=cmd.id)
    return state


def send_confirmation_email(cmd: c.SendConfirmationEmail, s: Services) -> str:
    return _send_once(cmd, s, lambda loaded: confirmation_email(loaded.order, s.message_id_domain))


def send_cancellation_email(cmd: c.SendCancellationEmail, s: Services) -> str:
    return _send_once(
        cmd, s, lambda loaded: cancellation_email(loaded.order, cmd.reason, s.message_id_domain)
    )


def _send_once(cmd: c.Command, s: Services, render: Callable[[Loaded], Email]) -> str:
    """Send the email unless the saga has it on record as sent. (One on record as refused is
    sent: only a person requeueing its dead letter sends it again, the cause fixed.)"""
    loaded = s.orders.get(cmd.order_id)
    if loaded is None:
        raise UnknownOrder(cmd.order_id)
    email = render(loaded)
    if email.kind in loaded.saga.facts.get("emails", {}):
        return f"skipped: the {email.kind} email is on record already"
    # -- the crash window opens when the server has the whole message (docs/orders.md) --
    sent = s.mailer.send(email)
    _record_sent(s.orders, cmd, email.kind, sent.message_id, loaded)
    # -- and closes here, with EmailSent committed --
    return sent.message_id


def _record_sent(orders: OrderService, cmd: c.Command, kind: str, message_id: str, loaded: Loaded) -> None:
    """Commit EmailSent, waiting out a Redis that refuses or misses writes (``PASSING``) for up
    to ``RECORD_PATIENCE`` seconds. A retry reads the order afresh: if the first commit landed
    and only its reply was lost, the saga finds the email on record and does nothing."""
    deadline = time.monotonic() + RECORD_PATIENCE
    delay = 0.05
    given: Loaded | None = loaded
    while True:
        try:
            orders.email_sent(cmd.order_id, kind, message_id, cause=cmd.id, loaded=given)
            return
        except Exception as exc:
            if not _passing(exc) or time.monotonic() + delay > deadline:
                raise
        given = None  # changed in place by the failed attempt: never decided on again
        time.sleep(delay)  # Redis refused the write: wait, then try again
        delay = min(delay * 2, 1.0)
