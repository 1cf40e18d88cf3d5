"""The orchestrator's service layer: load an order, apply a saga transition, commit it atomically.

After a commit, the transition's events go to the process's in-process bus (``self.bus``),
for listeners inside the process: the saga-outcome metrics subscribe there.

Idempotency of ``place``: a client's key is scoped to the customer (their email, lower-cased)
and bound to a fingerprint of the request. Why the customer: the key comes from a checkout
page, and a checkout belongs to one customer; scoped so, another customer who happens to use
the same key (or guesses it) gets an order of their own and never learns someone else's
order id. The same key with the same request returns the first order (``created=False``); the
same key with a different request is refused (``IdempotencyConflict``: an HTTP front answers
409 Conflict), because answering it with the first order would silently drop what was asked.

Every answer a step or a compensation gives comes through here. ``apply`` reads the order
(one round trip), lets the pure saga decide, and commits with optimistic concurrency (one
script call): if another answer for the same order committed in between, it reads again
and decides again. The decision is a pure function of the state, so deciding twice is safe.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from orders.bus import EventBus
from orders.choreography import Choreography
from orders.commands import PlaceOrder
from orders.messages import new_id
from orders.model import Order, OrderLine, payment_hint
from orders.saga import Saga, SagaState, SagaStatus, Step, Transition
from orders.shards import ShardedStore
from orders.store import Loaded, OrderStore, Placed, UnknownOrder

Decide = Callable[[Order, SagaState, float], Transition | None]
MAX_CONFLICTS = 20


class OrderService:
    def __init__(
        self,
        store: OrderStore | ShardedStore,
        saga: Saga,
        *,
        currency: str,
        idempotency_ttl: int,
        saga_hold: float = 900.0,
        payment_ttl: int = 86_400,
        smtputf8: bool = True,
        clock: Callable[[], float] = time.time,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        self.saga = saga
        self.currency = currency
        self.idempotency_ttl = idempotency_ttl
        self.saga_hold = saga_hold
        self.payment_ttl = payment_ttl
        self.smtputf8 = smtputf8
        self.clock = clock
        self.bus = bus or EventBus()

    # -- the customer's side ------------------------------------------------------------------
    def place(self, request: PlaceOrder) -> Placed:
        """Store the order and start its saga in one round trip. Idempotent on the request's key."""
        now = self.clock()
        key = request.idempotency_key
        scope = None if key is None else f"{request.customer.email.lower()}:{key}"
        order = Order(
            id=self.store.new_order_id(scope),  # on Redis Cluster, in the shard the key picks
            customer=request.customer,
            ship_to=request.ship_to,
            lines=[OrderLine(sku=line.sku, quantity=line.quantity, unit_price=0) for line in request.lines],
            currency=self.currency,
            total=0,
            payment_hint=payment_hint(request.payment_token),
            correlation_id=new_id(),
            placed_at=now,
            updated_at=now,
        )
        saga, outgoing = self.saga.start(order, now)
        return self.store.place(
            order,
            saga,
            outgoing,
            idempotency=None if key is None else (request.customer.email.lower(), key, fingerprint(request)),
            idempotency_ttl=self.idempotency_ttl,
            payment_token=request.payment_token,
            payment_ttl=self.payment_ttl,
            now=now,
        )

    @property
    def validation_context(self) -> dict[str, Any]:
        """What validating a PlaceOrder must know of the shop (see ``Customer._deliverable``)."""
        return {"smtputf8": self.smtputf8}

    def payment_method(self, order_id: str) -> str | None:
        """The order's payment token, while its charge step may still need it (never stored elsewhere)."""
        return self.store.payment_method(order_id)

    def get(self, order_id: str) -> Loaded | None:
        return self.store.load(order_id)

    def awaits(self, order_id: str, step: Step) -> bool:
        """Whether the saga still waits for ``step``: a step job checks before acting."""
        return self.awaiting(order_id, step) is not None

    def awaiting(self, order_id: str, step: Step) -> Loaded | None:
        """The order as read, if its saga still waits for ``step``; else None.

        A step job checks this before acting, and hands what it read to its answer
        (``step_succeeded(..., loaded=...)``): the answer is decided on it and committed only
        if the order is still at that version, else read again (one read per step, not two)."""
        loaded = self.store.load(order_id)
        if loaded is None or loaded.saga.status is not SagaStatus.RUNNING or loaded.saga.current is not step:
            return None
        return loaded

    # -- answers --------------------------------------------------------------------------------
    def apply(self, order_id: str, decide: Decide, loaded: Loaded | None = None) -> Transition | None:
        """Decide and commit one transition; None if the saga had nothing to do (a duplicate).

        ``loaded``: the order as the caller read it, to decide on first (it is changed in
        place; the caller must not use it afterwards). It is committed only if the order is
        still at that version, so a stale read costs one more round, never a wrong commit.
        A decision of "nothing to do" is only trusted on a fresh read.
        """
        given = loaded
        for _ in range(MAX_CONFLICTS):
            if given is not None:
                loaded, given = given, None
                fresh = False
            else:
                loaded, fresh = self.store.load(order_id), True
            if loaded is None:
                raise UnknownOrder(order_id)
            now = self.clock()
            before = self.saga.progress(loaded.saga)  # decided on in place: read once, never copied
            transition = decide(loaded.order, loaded.saga, now)
            if transition is None:
                if not fresh:
                    continue  # nothing to do on what the caller read: make sure on a fresh read
                self.store.settle(order_id)  # what we found must outlive a failover too
                return None
            self.saga.track_from(before, transition, now)
            if self.store.commit(loaded, transition, now):
                for event in transition.events:  # committed: tell this process's listeners
                    self.bus.publish(event)
                return transition
        raise RuntimeError(f"order {order_id}: gave up after {MAX_CONFLICTS} concurrent changes")

    def apply_many(self, items: list[tuple[str, Decide, Loaded | None]]) -> list[Transition | None]:
        """``apply`` for several orders, their commits in one round trip: each is decided on the
        order as the caller read it (``Loaded``, changed in place as with ``apply``) and all are
        committed together (``OrderStore.commit_many``); one that met a newer version, found
        nothing to do on that read, or had no read goes through ``apply`` alone (a fresh read).
        At most one item per order may carry a read: a second decision on the same order must
        see the first one's commit."""
        results: list[Transition | None] = [None] * len(items)
        batch: list[tuple[int, Loaded, Transition]] = []
        alone: list[int] = []
        now = self.clock()
        for i, (_, decide, loaded) in enumerate(items):
            if loaded is None:
                alone.append(i)
                continue
            before = self.saga.progress(loaded.saga)
            transition = decide(loaded.order, loaded.saga, now)
            if transition is None:
                alone.append(i)  # nothing to do on what the caller read: make sure on a fresh read
                continue
            self.saga.track_from(before, transition, now)
            batch.append((i, loaded, transition))
        committed = self.store.commit_many([(loaded, t) for _, loaded, t in batch], now)
        for (i, _, transition), ok in zip(batch, committed, strict=True):
            if ok:
                for event in transition.events:  # committed: tell this process's listeners
                    self.bus.publish(event)
                results[i] = transition
            else:
                alone.append(i)  # the order moved on since the read: decide again on a fresh one
        for i in sorted(alone):
            order_id, decide, _ = items[i]
            results[i] = self.apply(order_id, decide)
        return results

    def step_succeeded(
        self, order_id: str, step: Step, facts: dict[str, Any], cause: str, *, loaded: Loaded | None = None
    ) -> Transition | None:
        return self.apply(
            order_id, lambda o, s, now: self.saga.step_succeeded(o, s, step, facts, cause, now), loaded
        )

    def step_failed(
        self,
        order_id: str,
        step: Step,
        reason: str,
        *,
        definite: bool,
        cause: str,
        shortage: list[dict[str, Any]] | None = None,
        loaded: Loaded | None = None,
    ) -> Transition | None:
        return self.apply(
            order_id,
            lambda o, s, now: self.saga.step_failed(
                o, s, step, reason, definite=definite, cause=cause, now=now, shortage=shortage
            ),
            loaded,
        )

    def step_timed_out(self, order_id: str, step: Step, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.step_timed_out(o, s, step, cause, now))

    def compensated(self, order_id: str, step: Step, facts: dict[str, Any], cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.compensated(o, s, step, facts, cause, now))

    def compensation_dead(self, order_id: str, step: Step, reason: str, cause: str) -> Transition | None:
        return self.apply(
            order_id, lambda o, s, now: self.saga.compensation_dead(o, s, step, reason, cause, now)
        )

    def inventory_committed(self, order_id: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.inventory_committed(o, s, cause, now))

    def email_sent(
        self, order_id: str, kind: str, message_id: str, cause: str, *, loaded: Loaded | None = None
    ) -> Transition | None:
        return self.apply(
            order_id, lambda o, s, now: self.saga.email_sent(o, s, kind, message_id, cause, now), loaded
        )

    def email_failed(self, order_id: str, kind: str, reason: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.email_failed(o, s, kind, reason, cause, now))

    def hold_expired(self, order_id: str, held_for: float, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.hold_expired(o, s, held_for, cause, now))

    # -- the orders service's own reactions (choreographed style) --------------------------------
    def confirm(self, order_id: str, cause: str) -> Transition | None:
        flow = self.choreography()
        return self.apply(order_id, lambda o, s, now: flow.confirm(o, s, cause, now))

    def cancel(self, order_id: str, cause: str) -> Transition | None:
        flow = self.choreography()
        return self.apply(order_id, lambda o, s, now: flow.cancel(o, s, cause, now))

    def choreography(self) -> Choreography:
        """The saga, as the choreographed style's (its confirm and cancel are the orders
        service's own reactions); RuntimeError in the orchestrated style."""
        if not isinstance(self.saga, Choreography):
            raise RuntimeError("confirm and cancel are reactions of the choreographed style")
        return self.saga

    def flag(self, order_id: str, reason: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.flag(o, s, reason, cause, now))

    def unflag(self, order_id: str, reason: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.unflag(o, s, reason, cause, now))

    def stalled(self, order_id: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.stalled(o, s, cause, now))

    def stale_hold_released(self, order_id: str, cause: str) -> Transition | None:
        return self.apply(order_id, lambda o, s, now: self.saga.stale_hold_released(o, s, cause, now))

    def overdue(self, *, limit: int = 100) -> list[str]:
        """Orders whose saga is past its deadline (the watchdog's work list)."""
        return self.store.overdue(self.clock(), limit=limit)


def fingerprint(request: PlaceOrder) -> str:
    """What an idempotency key is bound to: the request, without the key (sha256 of its JSON)."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    body["customer"]["email"] = body["customer"]["email"].lower()  # the scope is case-blind too
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
