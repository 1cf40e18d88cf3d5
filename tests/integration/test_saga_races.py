"""The saga's races with its parties, driven in the failing order, in both styles.

Each test takes the very jobs the saga (or, choreographed, the reactors) queued, and runs
them by hand, holding the parties' calls at the points where the race happens (a request
on its way, an answer on its way): the saga gives the step up, then the calls land in the
worst order. Then real workers run whatever the saga queued meanwhile, and the audit counts
every charge, refund, reservation, shipment and email from the raw records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis import Redis

import jobs
import jobs.orders
from jobs.maintenance import settle_stale_hold
from orders import handlers as h
from orders.config import SagaConfig, SimulationConfig
from orders.handlers import Services
from orders.saga import SagaStatus, Step
from tests.flow import QUEUES, Flow, running_flow
from tests.support import wait_until, worker_thread
from workers.codec import decode_data


@pytest.fixture(params=["orchestrated", "choreographed"])
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Gate:
    """A point a call stops at until the test opens it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> None:
        self.reached.set()
        assert self.opened.wait(30), "the test never opened the gate"

    def wait_reached(self) -> None:
        assert self.reached.wait(30), "the call never reached the gate"


class Held:
    """A party whose named operations stop at gates: ``before`` it acts, or ``after`` it acted
    (its answer on the way back)."""

    def __init__(
        self, inner: Any, *, before: dict[str, Gate] | None = None, after: dict[str, Gate] | None = None
    ):
        self._inner, self._before, self._after = inner, before or {}, after or {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._before and name not in self._after:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in self._before:
                self._before[name]()
            result = attribute(*args, **kwargs)
            if name in self._after:
                self._after[name]()
            return result

        return call


class Background:
    """A handler call in a thread; ``join`` re-raises what it raised."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[], Any]) -> None:
        try:
            run()
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]


def take(flow: Flow, job_name: str, order_id: str, **match: Any) -> Any:
    """The command a queued (or scheduled) job of ``job_name`` carries for the order, taken out
    of Redis so that nothing else runs it: the test runs it instead."""
    job_type = jobs.registry.get(job_name)
    redis, keys = flow.redis, flow.settings

    def find() -> Any:
        queue, scheduled = f"rq:queue:{job_type.queue}", f"rq:scheduled:{job_type.queue}"
        for job_id in [*redis.lrange(queue, 0, -1), *redis.zrange(scheduled, 0, -1)]:
            name, payload = decode_data(redis.hget(b"rq:job:" + job_id, "data"))
            if name != job_name or payload.get("order_id") != order_id:
                continue
            if any(payload.get(k) != v for k, v in match.items()):
                continue
            redis.lrem(queue, 0, job_id)
            redis.zrem(scheduled, job_id)
            redis.delete(b"rq:job:" + job_id)
            return job_type.payload.model_validate(payload)
        return None

    del keys
    return wait_until(find, timeout=15, message=f"a {job_name} job for order {order_id}")


def settle_with_workers(flow: Flow, services: Services, order_id: str) -> None:
    """Let real workers run whatever the saga (or the reactors) queued meanwhile."""
    jobs.orders.configure(services)
    with worker_thread(flow.redis, jobs.registry, flow.settings, queues=QUEUES, concurrency=8):
        flow.settled(order_id, timeout=30)
        wait_until(lambda: _quiet(flow, order_id), timeout=30, message=f"order {order_id} to be quiet")


def _quiet(flow: Flow, order_id: str) -> bool:
    """Nothing left to undo, and the email sent."""
    saga = flow.order(order_id).saga
    return saga.compensating is None and not saga.pending_compensations and not saga.late


def charged_minus_refunded(flow: Flow, order_id: str) -> int:
    gateway = flow.services.payments
    charged = [ch for ch in gateway.charges_for(order_id) if ch.status == "succeeded"]  # type: ignore[attr-defined]
    return len(charged) - len(gateway.refunds_for(order_id))  # type: ignore[attr-defined]


@pytest.fixture
def flow_factory(redis: Redis, redis_url: str) -> Iterator[Callable[..., Any]]:
    def make(style: str, voids: bool = True) -> Any:
        return running_flow(
            redis,
            redis_url,
            style=style,
            workers=0,
            simulation=SimulationConfig(gateway_timeout=0.2, seed=7, voids=voids),
            saga=SagaConfig(step_timeout=30),
        )

    yield make


@pytest.mark.parametrize("voids", [True, False], ids=["gateway-voids", "gateway-without-voids"])
def test_a_charge_landing_while_its_refund_answers_nothing_is_refunded(
    flow_factory: Callable[..., Any], style: str, voids: bool
) -> None:
    """Issue 11, race 1: the charge passes awaits(); its time-out fires; the refund finds no
    charge and its answer is on its way; the charge lands and reports; the refund's "nothing
    to refund" arrives. Without the fix: CANCELLED with a live charge."""
    with flow_factory(style, voids) as flow:
        charge_lands, refund_answers = Gate(), Gate()
        s = replace(
            flow.services, payments=Held(flow.services.payments, before={"charge": charge_lands},
                                         after={"refund": refund_answers})
        )  # fmt: skip
        order_id = flow.place(("TEA", 1))
        h.reserve_inventory(take(flow, "inventory.reserve", order_id), s)
        charge = take(flow, "payments.charge", order_id)
        charging = Background(lambda: h.charge_payment(charge, s))
        charge_lands.wait_reached()  # it passed awaits(): its request is on its way
        h.check_step_timeout(take(flow, "orders.check_timeout", order_id, step=Step.CHARGE.value), s)
        refund = take(flow, "payments.refund", order_id)
        refunding = Background(lambda: h.refund_payment(refund, s))
        refund_answers.wait_reached()  # the gateway had nothing to refund; the answer is on its way
        charge_lands.opened.set()
        charging.join()  # the charge landed (or was voided) and reported
        refund_answers.opened.set()
        refunding.join()  # "nothing to refund" is booked
        settle_with_workers(flow, s, order_id)
        done = flow.order(order_id)
        assert done.status.value == "CANCELLED" and charged_minus_refunded(flow, order_id) == 0
        if voids:  # the charge came after the void: it took no money at all
            assert flow.services.payments.charges_for(order_id) == []  # type: ignore[attr-defined]
        else:  # it took money, reported late, and the refund was sent again
            assert Step.CHARGE in done.saga.compensated and Step.CHARGE not in done.saga.void_compensations
            assert len(flow.services.payments.refunds_for(order_id)) == 1  # type: ignore[attr-defined]
        report = flow.audit()
        assert report.ok, report.violations


def test_a_reservation_landing_after_its_release_holds_nothing(
    flow_factory: Callable[..., Any], style: str
) -> None:
    """Race 1, reserve variant: the reserve passes awaits(); its time-out fires; the release
    finds nothing; then the reserve lands. Without the fix: the stock stays reserved for ever."""
    with flow_factory(style) as flow:
        reserve_lands, release_answers = Gate(), Gate()
        s = replace(
            flow.services,
            inventory=Held(
                flow.services.inventory, before={"reserve": reserve_lands}, after={"release": release_answers}
            ),
        )
        order_id = flow.place(("POT", 2))
        reserve = take(flow, "inventory.reserve", order_id)
        reserving = Background(lambda: h.reserve_inventory(reserve, s))
        reserve_lands.wait_reached()
        h.check_step_timeout(take(flow, "orders.check_timeout", order_id, step=Step.RESERVE.value), s)
        release = take(flow, "inventory.release", order_id)
        releasing = Background(lambda: h.release_inventory(release, s))
        release_answers.wait_reached()
        reserve_lands.opened.set()
        reserving.join()
        release_answers.opened.set()
        releasing.join()
        settle_with_workers(flow, s, order_id)
        assert flow.order(order_id).status.value == "CANCELLED"
        pot = flow.services.inventory.levels("POT")[0]
        assert (pot.reserved, pot.available) == (0, 10) and flow.services.inventory.stale_holds(-1) == []
        assert flow.audit().ok, flow.audit().violations


@pytest.mark.parametrize("voids", [True, False], ids=["carrier-voids", "carrier-without-voids"])
def test_a_shipment_landing_while_its_cancellation_answers_nothing_is_cancelled(
    flow_factory: Callable[..., Any], style: str, voids: bool
) -> None:
    with flow_factory(style, voids) as flow:
        arrange_lands, cancel_answers = Gate(), Gate()
        s = replace(
            flow.services,
            carrier=Held(
                flow.services.carrier, before={"arrange": arrange_lands}, after={"cancel": cancel_answers}
            ),
        )
        order_id = flow.place(("MUG", 1))
        h.reserve_inventory(take(flow, "inventory.reserve", order_id), s)
        h.charge_payment(take(flow, "payments.charge", order_id), s)
        arrange = take(flow, "shipping.arrange", order_id)
        arranging = Background(lambda: h.arrange_shipping(arrange, s))
        arrange_lands.wait_reached()
        h.check_step_timeout(take(flow, "orders.check_timeout", order_id, step=Step.SHIP.value), s)
        cancel = take(flow, "shipping.cancel", order_id)
        cancelling = Background(lambda: h.cancel_shipment(cancel, s))
        cancel_answers.wait_reached()
        arrange_lands.opened.set()
        arranging.join()
        cancel_answers.opened.set()
        cancelling.join()
        settle_with_workers(flow, s, order_id)
        assert flow.order(order_id).status.value == "CANCELLED"
        carrier = flow.services.carrier
        arranged = [sh for sh in carrier.shipments_for(order_id) if sh.status == "arranged"]  # type: ignore[attr-defined]
        assert len(arranged) == len(carrier.cancellations_for(order_id))  # type: ignore[attr-defined]
        assert charged_minus_refunded(flow, order_id) == 0
        assert flow.audit().ok, flow.audit().violations


@pytest.mark.parametrize("voids", [True, False], ids=["gateway-voids", "gateway-without-voids"])
def test_a_charge_whose_worker_died_before_reporting_is_found_by_its_retry(
    flow_factory: Callable[..., Any], style: str, voids: bool
) -> None:
    """The charge job's worker dies after the gateway charged, before the answer was reported;
    meanwhile the saga gave the step up, found nothing to refund, and cancelled. The retry of the
    job is no longer awaited: it must look, find the charge, and report it late."""
    with flow_factory(style, voids) as flow:
        s = flow.services
        order_id = flow.place(("TEA", 1))
        h.reserve_inventory(take(flow, "inventory.reserve", order_id), s)
        charge = take(flow, "payments.charge", order_id)  # its worker takes it, and will die
        h.check_step_timeout(take(flow, "orders.check_timeout", order_id, step=Step.CHARGE.value), s)
        h.refund_payment(take(flow, "payments.refund", order_id), s)
        h.release_inventory(take(flow, "inventory.release", order_id), s)
        # the killed attempt's call, which reached the gateway after all
        s.payments.charge(idempotency_key=h.charge_key(order_id), order_id=order_id, token="tok_ok",
                          amount=charge.amount, currency="EUR")  # fmt: skip
        assert h.charge_payment(charge, s).startswith("skipped")  # the retry: not awaited, but it looks
        settle_with_workers(flow, s, order_id)
        assert flow.order(order_id).status.value == "CANCELLED"
        assert charged_minus_refunded(flow, order_id) == 0
        assert flow.audit().ok, flow.audit().violations


def test_stale_holds_of_sagas_that_let_go_are_released_or_committed(
    redis: Redis, redis_url: str, style: str
) -> None:
    with running_flow(redis, redis_url, style=style) as flow:
        cancelled = flow.place(("TEA", 3), payment_token="tok_declined")
        confirmed = flow.place(("MUG", 1))
        flow.settled(cancelled)
        flow.settled(confirmed)
        inventory = flow.services.inventory
        for order_id in (cancelled, confirmed):  # leaked holds, as before this fix could leave them
            redis.delete(flow.keys.reservation(order_id))
            inventory.reserve(order_id, [(line.sku, line.quantity) for line in flow.order(order_id).lines])
        assert sorted(inventory.stale_holds(-1)) == sorted([cancelled, confirmed])
        assert settle_stale_hold(flow.services, cancelled, "test") == "released"
        assert settle_stale_hold(flow.services, confirmed, "test") == "committed"
        assert inventory.stale_holds(-1) == [] and flow.audit().ok, flow.audit().violations
        assert "stock held past its hold time" in flow.order(cancelled).saga.history[-1][1]
        tea = inventory.levels("TEA")[0]
        assert tea.reserved == 0


def test_a_job_of_a_type_this_worker_does_not_know_flags_its_order(redis: Redis, redis_url: str) -> None:
    """A rolling deploy: a newer version queued a job type this worker lacks. Once the runtime
    gives up on it, the registry-wide dead-letter hook (the order flow's) flags the order it names."""
    from workers import DeadLetterNotice

    assert jobs.registry.on_dead_letter == jobs.orders.HOOK
    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(("TEA", 1))
        flow.settled(order_id)
        notice = DeadLetterNotice(
            job_id="j1", job_type="shipping.gift_wrap", queue="shipping", payload={"order_id": order_id},
            reason="no job type named 'shipping.gift_wrap' is registered with this worker", attempts=5,
        )  # fmt: skip
        assert jobs.orders.on_dead_letter(notice, None).startswith("reported")  # type: ignore[arg-type]
        flagged = flow.order(order_id).attention or ""
        assert "shipping.gift_wrap" in flagged and "unknown to this worker" in flagged
        assert flow.order(order_id).saga.status is SagaStatus.CONFIRMED
        foreign = notice.model_copy(update={"payload": {"order_id": "no-such-order"}})
        assert jobs.orders.on_dead_letter(foreign, None) == "no order no-such-order"  # type: ignore[arg-type]


def test_a_compensation_that_makes_no_progress_flags_the_order_until_it_moves(
    redis: Redis, redis_url: str, style: str
) -> None:
    """Issue 11, 9: the refund's job is lost (dead-lettered without its hook, or gone): the
    order is not left compensating for ever, unflagged. When it moves again, the flag goes."""
    with running_flow(
        redis, redis_url, style=style, workers=0,
        saga=SagaConfig(step_timeout=30, stall_after=1.0, watchdog_interval=0.1),
    ) as flow:  # fmt: skip
        s = flow.services
        order_id = flow.place(("MUG", 1), ship_to="4 Nowhere Row")
        h.reserve_inventory(take(flow, "inventory.reserve", order_id), s)
        h.charge_payment(take(flow, "payments.charge", order_id), s)
        h.arrange_shipping(take(flow, "shipping.arrange", order_id), s)  # refused: refund, release
        lost = take(flow, "payments.refund", order_id)  # and its job is lost
        flagged = wait_until(
            lambda: flow.order(order_id).attention, timeout=20, message="the watchdog's flag"
        )
        assert flagged.startswith("no progress for 1 s: compensating: refund_payment")
        assert "payments" in flagged and flow.order(order_id).saga.stalled == flagged
        assert flow.producer.get_order_summary(order_id) is not None
        h.refund_payment(lost, s)  # someone found it and ran it: the saga moves
        assert flow.order(order_id).attention is None
        settle_with_workers(flow, s, order_id)
        assert flow.order(order_id).status.value == "CANCELLED" and flow.audit().ok


def test_a_step_whose_job_and_time_out_are_both_lost_flags_the_order(
    redis: Redis, redis_url: str, style: str
) -> None:
    with running_flow(
        redis, redis_url, style=style, workers=0,
        saga=SagaConfig(step_timeout=0.5, stall_after=1.0, watchdog_interval=0.1),
    ) as flow:  # fmt: skip
        order_id = flow.place(("TEA", 1))
        take(flow, "inventory.reserve", order_id)
        take(flow, "orders.check_timeout", order_id, step=Step.RESERVE.value)
        flagged = wait_until(
            lambda: flow.order(order_id).attention, timeout=20, message="the watchdog's flag"
        )
        assert flagged == "no progress for 1 s: waiting for reserve_inventory"
        assert flow.order(order_id).saga.status is SagaStatus.RUNNING  # flagged, not given up
        summary = wait_until(
            lambda: (v := flow.producer.get_order_summary(order_id)) and v.attention and v,
            timeout=20,
            message="the flag in the read model",
        )
        assert summary.attention == flagged


def test_an_email_on_record_is_not_sent_again_and_a_second_copy_is_counted(
    redis: Redis, redis_url: str
) -> None:
    """Issue 11, 2: the retry of an email job whose EmailSent was committed (its worker died
    before the job settled) does not send again; and the audit counts raw messages, so a second
    copy (the crash window) is seen, not hidden behind the Message-ID it shares."""
    from orders.commands import SendConfirmationEmail
    from orders.notifications import confirmation_email

    with running_flow(redis, redis_url) as flow:
        order_id = flow.place(("TEA", 1))
        order = flow.settled(order_id)
        command = SendConfirmationEmail(order_id=order_id, correlation_id="c", at=0.0)  # the retry
        assert h.send_confirmation_email(command, flow.services).startswith("skipped")
        assert len(flow.sink.messages()) == 1 and flow.audit().ok
        loaded = flow.services.orders.get(order_id)
        assert loaded is not None and order.emails
        flow.services.mailer.send(confirmation_email(loaded.order, "chumon.example"))  # the window hit
        report = flow.audit()
        assert report.duplicate_emails == {f"{order_id} confirmation": 2} and report.emails_unique == 1
        assert [v for v in report.violations if "confirmation emails: 2 received" in v]
