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
- notifications email on OrderConfirmed and OrderCancelled;
- each service undoes its step again on CompensationRepeated for it (its compensation found
  nothing, but the step had answered late).

A reactor reacts to a read batch at a time: the reactions that send commands are gathered
(``Outbox``), the orders they need are read in one round trip, every command of the batch goes
out in one enqueue call, each under the key it would have had alone, and the job index and
the batch's acknowledgements follow in one MULTI/EXEC. So the busier the stream, the larger a
batch and the less a reaction costs: one reaction per read cost a reactor four round trips.

An entry a reactor cannot read (a type a newer writer added) is parked in its group's
dead-letter stream, and the order is flagged for a person (the reaction it would have had
may be missing: the saga could wait for ever). One whose reaction fails every time is parked
once delivered ``max_deliveries`` times, and flagged the same way. ``chumon events dlq retry``
sends parked entries back; a reaction that then goes through takes the flag back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from orders import commands as c
from orders import events as e
from orders.bus import EventBus
from orders.errors import CorruptOrder
from orders.events import EVENT_TYPES, from_fields
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
from orders.service import Decide, OrderService
from orders.store import Loaded, UnknownOrder
from workers.consumer import Gathering
from workers.streams import Acks, Entry, GroupReader

log = logging.getLogger("chumon.reactors")
SERVICES = ("inventory", "payments", "shipping", "orders", "notifications")
AFTER_OUTCOME = frozenset({"notifications"})
"""Services that react only to an order's outcome (OrderConfirmed, OrderCancelled): no order waits
for them on its way there, so their reactors may gather their reads (``Reactor.gather``)."""


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


def repeated(step: Step) -> Callable[[e.CompensationRepeated], bool]:
    def of_step(event: e.CompensationRepeated) -> bool:
        return event.step == step.value

    return of_step


class Outbox:
    """The commands a reactor's batch of events sends, and the transitions of its orders, gathered
    so the batch costs one read of its orders, one enqueue call and one commit round trip, not
    one of each per reaction.

    A reaction that sends (``Reactions.step``, ``send``, ``undo``) is kept with its event until
    ``flush``: then the orders those reactions need are read in one round trip, each reaction
    builds its commands from its order as read, and every command goes out in one enqueue call
    (``OrderStore.send_many``) under the key it would have had alone (``<event id>.<n>``).

    A reaction that moves the order itself (the orders service's ``confirm`` and ``cancel``) is
    kept the same way (``transition``); at the flush each is decided on its order as read in
    that same round trip and all are committed in one more (``OrderService.apply_many``), each
    checked against the version it was decided on. Alone, each cost a read and a commit, one
    after the other: at 100 orders/s the orders reactor spent its time waiting on them and
    fell behind."""

    def __init__(self, orders: OrderService) -> None:
        self.orders = orders
        self.waiting: list[tuple[e.Event, Callable[[Loaded], list[Outgoing]]]] = []
        self.transitions: list[tuple[e.Event, Decide]] = []

    def later(self, event: e.Event, build: Callable[[Loaded], list[Outgoing]]) -> None:
        """Send what ``build`` makes of the event's order, at the flush (nothing if it is gone)."""
        self.waiting.append((event, build))

    def transition(self, event: e.Event, decide: Decide) -> None:
        """Apply ``decide`` to the event's order at the flush (``OrderService.apply``)."""
        self.transitions.append((event, decide))

    def flush(self) -> dict[str, list[str]]:
        """Send what the batch's reactions make and commit their transitions; returns the jobs
        by order, for the job index."""
        waiting, self.waiting = self.waiting, []
        transitions, self.transitions = self.transitions, []
        if not waiting and not transitions:
            return {}
        store = self.orders.store
        raw = store.read_many(event.order_id for event, _ in [*waiting, *transitions])
        self._apply(transitions, raw)
        if not waiting:
            return {}
        loaded = {order_id: store.parse(order_id, record) for order_id, record in raw.items()}
        sends = []
        for event, build in waiting:
            order = loaded[event.order_id]
            if order is not None:
                outgoing = build(order)
                if outgoing:
                    sends.append((event.id, outgoing))
        return store.send_many(sends, now=time.time()) if sends else {}

    def _apply(self, transitions: list[tuple[e.Event, Decide]], raw: dict[str, list[Any]]) -> None:
        """The batch's transitions, decided on the orders as read and committed together. Only an
        order's first transition of the batch uses that read (the decision changes it in place);
        a later one reads again after the first is committed. An order that is gone raises
        ``UnknownOrder``, as ``OrderService.apply`` does."""
        if not transitions:
            return
        store, items, used = self.orders.store, [], set()
        for event, decide in transitions:
            order_id = event.order_id
            first = order_id not in used
            used.add(order_id)
            items.append((order_id, decide, store.parse(order_id, raw[order_id]) if first else None))
        self.orders.apply_many(items)

    def drop(self) -> None:
        """Forget what a failed batch gathered (it is processed again)."""
        self.waiting = []
        self.transitions = []


class Reactions:
    """What each service does when it sees an event. A reaction that sends commands adds them to
    ``outbox``, which the reactor flushes after its batch (one ``Reactions`` per reactor)."""

    def __init__(self, orders: OrderService, *, step_timeout: float) -> None:
        self.orders = orders
        self.step_timeout = step_timeout
        self.outbox = Outbox(orders)

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
                (e.CompensationRepeated, repeated(Step.RESERVE), self.undo(Step.RESERVE)),
                (e.OrderConfirmed, always, self.send(lambda msg, order: msg.make(c.CommitInventory))),
            ],
            "payments": [
                (e.InventoryReserved, on_time, self.step(Step.CHARGE)),
                (e.PaymentFailed, uncertain, self.undo(Step.CHARGE)),
                (e.ShipmentFailed, definite, self.undo(Step.CHARGE)),
                (e.ShipmentCancelled, always, self.undo(Step.CHARGE)),
                (e.PaymentCharged, late, self.undo(Step.CHARGE)),
                (e.CompensationRepeated, repeated(Step.CHARGE), self.undo(Step.CHARGE)),
            ],
            "shipping": [
                (e.PaymentCharged, on_time, self.step(Step.SHIP)),
                (e.ShipmentFailed, uncertain, self.undo(Step.SHIP)),
                (e.ShipmentArranged, late, self.undo(Step.SHIP)),
                (e.CompensationRepeated, repeated(Step.SHIP), self.undo(Step.SHIP)),
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
        flow = self.orders.choreography()
        self.outbox.transition(event, lambda o, s, now: flow.confirm(o, s, event.id, now))

    def cancel(self, event: e.Event) -> None:
        flow = self.orders.choreography()
        self.outbox.transition(event, lambda o, s, now: flow.cancel(o, s, event.id, now))

    def step(self, step: Step) -> Callable[[e.Event], None]:
        """Start a step (with its time-out check), if the order still runs."""

        def react(event: e.Event) -> None:
            def build(loaded: Loaded) -> list[Outgoing]:
                order, saga = loaded.order, loaded.saga
                if order.status is not OrderStatus.PENDING or saga.status is not SagaStatus.RUNNING:
                    return []
                msg = Messages(loaded.order, event.id, time.time())
                check = msg.make(c.CheckStepTimeout, step=step.value)
                return [
                    Outgoing(step_command(msg, loaded.order, step)),
                    Outgoing(check, self.step_timeout, timeout_job_id(loaded.order.id, step)),
                ]

            self.outbox.later(event, build)

        return react

    def undo(self, step: Step) -> Callable[[e.Event], None]:
        def react(event: e.Event) -> None:
            reason = getattr(event, "reason", None) or "compensating"
            self.send(lambda msg, order: compensation_command(msg, step, reason))(event)

        return react

    def send(self, make: Callable[[Messages, Order], c.Command]) -> Callable[[e.Event], None]:
        def react(event: e.Event) -> None:
            def build(loaded: Loaded) -> list[Outgoing]:
                return [Outgoing(make(Messages(loaded.order, event.id, time.time()), loaded.order))]

            self.outbox.later(event, build)

        return react


def _guarded(when: Callable[[Any], bool], act: Callable[[Any], Any]) -> Callable[[Any], None]:
    def handler(event: Any) -> None:
        if when(event):
            act(event)

    return handler


class Reactor:
    """One service's consumer group on the event stream."""

    def __init__(
        self,
        service: str,
        reactions: Reactions,
        keys: OrderKeys,
        *,
        claim_after: float = 5.0,
        max_deliveries: int = 5,
        gather: float = 0.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.service = service
        self.group = f"reactor-{service}"
        self.gather = gather
        self._rounds = Gathering(gather, sleep)
        self.orders = reactions.orders
        self.outbox = reactions.outbox
        self.bus = reactions.bus(service)
        self.reader = GroupReader(
            reactions.orders.store.redis,
            keys.events,
            self.group,
            claim_after=claim_after,
            parking=keys.parking(self.group),
            max_deliveries=max_deliveries,
        )
        self.reacted = 0
        self.parked = 0
        self.acks: Acks | None = None
        """Set when the reactor shares its thread with others (``workers.consumer.Together``): its
        plain acknowledgements then go with theirs, at the end of the round."""

    def run(self, stop: threading.Event) -> None:
        self.reader.ensure_group()
        while not stop.is_set():
            self.step()

    def step(self) -> int:
        """One round: returns how many entries it settled (reacted to, or parked).

        With ``gather`` (a service in ``AFTER_OUTCOME`` only), the round after one that found
        less than a full batch waits that many seconds before it reads (as ``Projector.step``),
        so that read takes what was appended meanwhile: such a reactor reads every event of
        every order and reacts to one of them, each read a round trip and a wake-up of a thread
        that shares its process's GIL with the reactors on the orders' path."""
        return self._rounds.round(self, log)

    def process(self, batch: list[Entry]) -> None:
        """React to a batch: its reactions' commands go out together (``Outbox``), then the job
        index and the acknowledgements in one MULTI/EXEC. A failure anywhere acknowledges
        nothing: ``consume`` processes the entries again one by one, and the enqueue keys make
        what went out before the failure go out once."""
        done, unreadable, replayed = [], [], []
        try:
            for entry in batch:
                if self._ignored(entry):
                    done.append(entry)  # a known type this service has no reaction to: not even parsed
                    continue
                try:
                    event = from_fields(entry.fields)
                except Exception as exc:  # a type this version does not know, or a broken entry
                    unreadable.append((entry, f"cannot be read: {_why(exc)}"))
                    continue
                self.reacted += self.bus.publish(event)
                done.append(entry)
                if self._replayed(entry):
                    replayed.append((entry, event))
            jobs = self.outbox.flush()
        finally:
            self.outbox.drop()
        for entry, event in replayed:  # its reaction went through: done at last
            if self.orders.get(event.order_id) is not None:
                self.orders.unflag(event.order_id, self.flag_reason(entry), cause=event.id)
        self._index_and_ack(jobs, done)
        self.give_up(unreadable)

    def _index_and_ack(self, jobs: dict[str, list[str]], done: list[Entry]) -> None:
        """The sent jobs' order index and the batch's acknowledgements, in one round trip. An
        index write that fails (a key of another type) costs a trace its jobs, as alone; a
        failed acknowledgement raises: the entries come back, and send nothing twice."""
        if not jobs and self.acks is not None:
            self.acks.later(self.reader, done)  # nothing to write with them: sent with the round's
            return
        plan = self.reader.ack_plan(done)
        if not jobs and not plan:
            return
        with self.orders.store.redis.pipeline(transaction=True) as pipe:
            for stream, group, ids, delete in plan:
                pipe.xack(stream, group, *ids)
                if delete:
                    pipe.xdel(stream, *ids)
            acks = len(pipe.command_stack)
            self.orders.store.index(jobs, pipe=pipe)
            replies = pipe.execute(raise_on_error=False)
        failed = next((r for r in replies[:acks] if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        for entry in done:
            self.reader.errors.pop(entry.id, None)

    def give_up(self, items: list[tuple[Entry, str]]) -> None:
        """Flag each entry's order, then park the entry (flag first: a crash in between flags
        again on redelivery, and never leaves a parked entry without its flag)."""
        for entry, reason in items:
            order_id = entry.fields.get("order_id")
            log.error("%s: event %s (order %s) parked: %s", self.group, entry.id, order_id, reason)
            if order_id:
                with suppress(UnknownOrder, CorruptOrder):  # no order to flag
                    self.orders.flag(
                        order_id, self.flag_reason(entry), cause=entry.fields.get("id") or entry.id
                    )
        self.reader.dead_letter(items)
        self.parked += len(items)

    def _ignored(self, entry: Entry) -> bool:
        """A known event type none of this service's reactions subscribes to. Most entries are
        (each service reacts to one or two of an order's seven events), and reading one into
        its model costs more than the rest of a reactor's round. An unknown type is still read
        (and parked, flagging the order), and so is a replayed entry (it may take a flag back)."""
        kind = EVENT_TYPES.get(entry.fields.get("type", ""))
        return kind is not None and not self.bus.handles(kind) and not self._replayed(entry)

    def _replayed(self, entry: Entry) -> bool:
        return self.reader.parking is not None and entry.stream == self.reader.parking.replay

    def flag_reason(self, entry: Entry) -> str:
        """The flag an entry raises on its order: the same for the entry wherever it comes from."""
        kind = entry.fields.get("type", "?")
        return (
            f"{self.group} could not process event {kind} ({entry.origin}); it is parked: fix or "
            f"upgrade, then chumon events dlq retry --group {self.group}"
        )


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"unknown event type or missing field {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]
