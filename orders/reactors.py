"""The services' reactions to events: the choreographed style's wiring.

Each service is a consumer group on the event stream (``reactor-<service>``) with its own
table of reactions. A reaction enqueues the service's command as a job (the same job types
and handlers as the orchestrated style) under an idempotent enqueue key derived from the
event, so a redelivered event sends nothing twice; the orders service's reactions are
transitions of the order itself. Entries are acknowledged after their reactions succeed.

- inventory reserves on OrderPlaced; releases on PaymentFailed (definite), PaymentRefunded,
  a reservation failure without answer, or a late reservation; commits on OrderConfirmed;
- payments charge on InventoryReserved; refund on PaymentFailed (no answer), ShipmentFailed
  (definite), ShipmentCancelled, or a late charge;
- shipping arranges on PaymentCharged; cancels on ShipmentFailed (no answer) or a late shipment;
- orders confirm on ShipmentArranged; cancel on InventoryReservationFailed (definite) or
  InventoryReleased;
- notifications email on OrderConfirmed and OrderCancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from orders import commands as c
from orders import events as e
from orders.bus import EventBus
from orders.events import from_fields
from orders.keys import OrderKeys
from orders.model import Order, OrderStatus
from orders.saga import (
    Messages,
    Outgoing,
    SagaStatus,
    Step,
    compensation_command,
    step_command,
    timeout_job_id,
)
from orders.service import OrderService
from workers.streams import GroupReader

log = logging.getLogger("chumon.reactors")
SERVICES = ("inventory", "payments", "shipping", "orders", "notifications")


def definite(event: e.StepFailed) -> bool:
    return event.definite


def uncertain(event: e.StepFailed) -> bool:
    return not event.definite


def on_time(event: e.StepAnswered) -> bool:
    return not event.late


def late(event: e.StepAnswered) -> bool:
    return event.late


def always(event: e.Event) -> bool:
    return True


class Reactions:
    """What each service does when it sees an event."""

    def __init__(self, orders: OrderService, *, step_timeout: float) -> None:
        self.orders = orders
        self.step_timeout = step_timeout

    def bus(self, service: str) -> EventBus:
        bus = EventBus()
        for event_type, when, act in self.table()[service]:
            bus.subscribe(event_type, _guarded(when, act))
        return bus

    def table(self) -> dict[str, list[tuple[type[Any], Callable[[Any], bool], Callable[[Any], None]]]]:
        return {
            "inventory": [
                (e.OrderPlaced, always, self.step(Step.RESERVE)),
                (e.PaymentFailed, definite, self.undo(Step.RESERVE)),
                (e.PaymentRefunded, always, self.undo(Step.RESERVE)),
                (e.InventoryReservationFailed, uncertain, self.undo(Step.RESERVE)),
                (e.InventoryReserved, late, self.undo(Step.RESERVE)),
                (e.OrderConfirmed, always, self.send(lambda msg, order: msg.make(c.CommitInventory))),
            ],
            "payments": [
                (e.InventoryReserved, on_time, self.step(Step.CHARGE)),
                (e.PaymentFailed, uncertain, self.undo(Step.CHARGE)),
                (e.ShipmentFailed, definite, self.undo(Step.CHARGE)),
                (e.ShipmentCancelled, always, self.undo(Step.CHARGE)),
                (e.PaymentCharged, late, self.undo(Step.CHARGE)),
            ],
            "shipping": [
                (e.PaymentCharged, on_time, self.step(Step.SHIP)),
                (e.ShipmentFailed, uncertain, self.undo(Step.SHIP)),
                (e.ShipmentArranged, late, self.undo(Step.SHIP)),
            ],
            "orders": [
                (e.ShipmentArranged, on_time, self.confirm),
                (e.InventoryReservationFailed, definite, self.cancel),
                (e.InventoryReleased, always, self.cancel),
            ],
            "notifications": [
                (e.OrderConfirmed, always, self.send(lambda msg, order: msg.make(c.SendConfirmationEmail))),
                (e.OrderCancelled, always, self.send(
                    lambda msg, order: msg.make(c.SendCancellationEmail, reason=order.reason or "cancelled"),
                )),
            ],
        }  # fmt: skip

    def confirm(self, event: e.Event) -> None:
        self.orders.confirm(event.order_id, cause=event.id)

    def cancel(self, event: e.Event) -> None:
        self.orders.cancel(event.order_id, cause=event.id)

    def step(self, step: Step) -> Callable[[e.Event], None]:
        """Start a step (with its time-out check), if the order still runs."""

        def react(event: e.Event) -> None:
            loaded = self.orders.get(event.order_id)
            if loaded is None or loaded.order.status is not OrderStatus.PENDING:
                return
            if loaded.saga.status is not SagaStatus.RUNNING:
                return
            msg = Messages(loaded.order, event.id, time.time())
            check = msg.make(c.CheckStepTimeout, step=step.value)
            self._send(event, [
                Outgoing(step_command(msg, loaded.order, step)),
                Outgoing(check, self.step_timeout, timeout_job_id(loaded.order.id, step)),
            ])  # fmt: skip

        return react

    def undo(self, step: Step) -> Callable[[e.Event], None]:
        def react(event: e.Event) -> None:
            reason = getattr(event, "reason", None) or "compensating"
            self.send(lambda msg, order: compensation_command(msg, step, reason))(event)

        return react

    def send(self, make: Callable[[Messages, Order], c.Command]) -> Callable[[e.Event], None]:
        def react(event: e.Event) -> None:
            loaded = self.orders.get(event.order_id)
            if loaded is None:
                return
            msg = Messages(loaded.order, event.id, time.time())
            self._send(event, [Outgoing(make(msg, loaded.order))])

        return react

    def _send(self, event: e.Event, outgoing: list[Outgoing]) -> None:
        self.orders.store.send(outgoing, dedupe=event.id, now=time.time())


def _guarded(when: Callable[[Any], bool], act: Callable[[Any], Any]) -> Callable[[Any], None]:
    def handler(event: Any) -> None:
        if when(event):
            act(event)

    return handler


class Reactor:
    """One service's consumer group on the event stream."""

    def __init__(
        self, service: str, reactions: Reactions, keys: OrderKeys, *, claim_after: float = 5.0
    ) -> None:
        self.service = service
        self.bus = reactions.bus(service)
        self.reader = GroupReader(
            reactions.orders.store.redis, keys.events, f"reactor-{service}", claim_after=claim_after
        )
        self.reacted = 0

    def run(self, stop: threading.Event) -> None:
        self.reader.ensure_group()
        while not stop.is_set():
            self.step()

    def step(self) -> int:
        done = []
        for entry in self.reader.read():
            try:
                event = from_fields(entry.fields)
            except Exception as exc:  # an unreadable event: nothing any service can do with it
                log.error("%s: event %s cannot be read, skipped: %s", self.service, entry.id, exc)
                done.append(entry.id)
                continue
            try:
                self.reacted += self.bus.publish(event)
                done.append(entry.id)
            except Exception:
                log.exception("%s: reacting to %s of order %s failed; it will be retried",
                              self.service, type(event).__name__, event.order_id)  # fmt: skip
        self.reader.ack(done)
        return len(done)
