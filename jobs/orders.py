"""The order flow's jobs: one job type per command, on its service's queue.

Thin adapters: the runtime decodes and validates the command, the adapter calls its
handler in ``orders/handlers.py``. Failures need no translation: the domain's "try again"
(``TransientError``) is retried like any unexpected error, and a mail server's final "no"
(``MailRejected``) is declared permanent on the email job types, so it is dead-lettered at
once.

| queue          | job type                      | command                  | retries |
|----------------|-------------------------------|--------------------------|---------|
| inventory      | inventory.reserve             | ReserveInventory         | step    |
| payments       | payments.charge               | ChargePayment            | step    |
| shipping       | shipping.arrange              | ArrangeShipping          | step    |
| inventory      | inventory.release             | ReleaseInventory         | compensation |
| payments       | payments.refund               | RefundPayment            | compensation |
| shipping       | shipping.cancel               | CancelShipment           | compensation |
| inventory      | inventory.commit              | CommitInventory          | compensation |
| notifications  | notifications.confirmation    | SendConfirmationEmail    | email   |
| notifications  | notifications.cancellation    | SendCancellationEmail    | email   |
| orders         | orders.check_timeout          | CheckStepTimeout         | step    |
| orders         | orders.dead_letter            | DeadLetterNotice (hook)  | compensation |

Every job type is keyed on its command's id (the runtime's effect key), so a duplicate
delivery of a command finishes as a duplicate without running; the services themselves are
called with keys derived from the order, so a retry gets the service's first answer. When a
job of the order flow is dead-lettered, ``orders.dead_letter`` tells the saga: a step
without an answer has failed, a compensation that cannot succeed needs a person. It is also
the registry-wide hook (jobs/__init__.py): a job of a type it does not know (a newer
version's, met during a rolling deploy) whose payload names an order flags that order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis

from orders import commands as c
from orders import handlers as h
from orders.errors import MailRejected, PartyBusy
from orders.messages import Message
from orders.privacy import mask_personal
from orders.saga import COMMIT_FAILED, Step
from workers import DeadLetterNotice, JobContext, JobRegistry, JobType, RateLimited, RetryPolicy
from workers.connection import is_cluster
from workers.durability import NotReplicated

registry = JobRegistry()
HOOK = "orders.dead_letter"

STEP_RETRY = RetryPolicy(max_attempts=6, base=0.5, factor=2.0, cap=10.0, jitter=0.2)
COMPENSATION_RETRY = RetryPolicy(max_attempts=8, base=0.5, factor=2.0, cap=30.0, jitter=0.2)
EMAIL_RETRY = RetryPolicy(max_attempts=6, base=1.0, factor=2.0, cap=60.0, jitter=0.2)

_services: h.Services | None = None


def configure(services: h.Services | None) -> None:
    """Set the services the handlers use (tests do; workers build them from settings on first use)."""
    global _services
    _services = services


def services(ctx: JobContext) -> h.Services:
    global _services
    if _services is None:
        from chumon.bootstrap import build_services
        from chumon.settings import load

        # ctx.redis holds one connection for its runner thread: the process's services share the
        # pool (a cluster client is shared as it is: it has a pool per node)
        shared = ctx.redis if is_cluster(ctx.redis) else Redis(connection_pool=ctx.redis.connection_pool)
        _services = build_services(shared, load())
    return _services


C = TypeVar("C", bound=Message)


def adapter(handler: Callable[[C, h.Services], Any]) -> Callable[[C, JobContext], Any]:
    """Run a domain handler as a job, with the process's services."""

    @functools.wraps(handler)
    def run(command: C, ctx: JobContext) -> Any:
        try:
            return handler(command, services(ctx))
        except PartyBusy as busy:  # a 429 or an SMTP 421: every worker slows down, no attempt used
            raise RateLimited(str(busy), delay=busy.retry_after) from None
        except NotReplicated as exc:  # replicas lag or are failing over: wait, no attempt used
            raise RateLimited(str(exc), delay=1.0) from None

    return run


def by_command(command: Message) -> str:
    """A command's own id: a second delivery of the same command finishes as a duplicate.

    Not the order id: the saga may legitimately send a second command of a kind (a refund
    again, after a late charge), and the saga itself decides what is a repeat.
    """
    return command.id


def _job(
    name: str,
    queue: str,
    payload: type[Message],
    handler: Callable[[Any, h.Services], Any],
    retry: RetryPolicy,
    *,
    timeout: float = 30.0,
    key: Callable[[Any], str] = by_command,
    permanent: tuple[type[BaseException], ...] = (),
) -> JobType[Any]:
    return registry.job(
        name,
        queue=queue,
        payload=payload,
        retry=retry,
        timeout=timeout,
        idempotency_key=key,
        on_dead_letter=HOOK,
        permanent=permanent,
        log_fields=("order_id",),
    )(adapter(handler))


reserve = _job("inventory.reserve", "inventory", c.ReserveInventory, h.reserve_inventory, STEP_RETRY)
charge = _job("payments.charge", "payments", c.ChargePayment, h.charge_payment, STEP_RETRY)
arrange = _job("shipping.arrange", "shipping", c.ArrangeShipping, h.arrange_shipping, STEP_RETRY)
release = _job("inventory.release", "inventory", c.ReleaseInventory, h.release_inventory, COMPENSATION_RETRY)
refund = _job("payments.refund", "payments", c.RefundPayment, h.refund_payment, COMPENSATION_RETRY)
cancel = _job("shipping.cancel", "shipping", c.CancelShipment, h.cancel_shipment, COMPENSATION_RETRY)
commit = _job("inventory.commit", "inventory", c.CommitInventory, h.commit_inventory, COMPENSATION_RETRY)
confirmation = _job(
    "notifications.confirmation",
    "notifications",
    c.SendConfirmationEmail,
    h.send_confirmation_email,
    EMAIL_RETRY,
    permanent=(MailRejected,),
)
cancellation = _job(
    "notifications.cancellation",
    "notifications",
    c.SendCancellationEmail,
    h.send_cancellation_email,
    EMAIL_RETRY,
    permanent=(MailRejected,),
)
check_timeout = _job("orders.check_timeout", "orders", c.CheckStepTimeout, h.check_step_timeout, STEP_RETRY)

ROUTES: dict[type[Any], JobType[Any]] = {job_type.payload: job_type for job_type in registry}
# on Redis Cluster each order's jobs go to its shard's copy of these queues (orders/shards.py)
registry.shard(*sorted({job_type.queue for job_type in registry}))


def route(command_type: type[Any]) -> JobType[Any]:
    """The job type that carries a kind of command."""
    return ROUTES[command_type]


STEP_JOBS = {"inventory.reserve": Step.RESERVE, "payments.charge": Step.CHARGE, "shipping.arrange": Step.SHIP}
COMPENSATION_JOBS = {
    "inventory.release": Step.RESERVE,
    "payments.refund": Step.CHARGE,
    "shipping.cancel": Step.SHIP,
}
EMAIL_JOBS = {"notifications.confirmation": "confirmation", "notifications.cancellation": "cancellation"}


@registry.job(HOOK, queue="orders", retry=COMPENSATION_RETRY)
def on_dead_letter(notice: DeadLetterNotice, ctx: JobContext) -> str:
    """A job of the order flow was dead-lettered: tell the saga, so no order is stuck silently."""
    order_id = (notice.payload or {}).get("order_id")
    if not order_id or not isinstance(order_id, str):
        return "not an order job"
    s, cause = services(ctx), str((notice.payload or {}).get("id") or notice.job_id)
    if s.orders.get(order_id) is None:
        return f"no order {order_id}"
    if ctx is not None:  # run by a worker (tests call the hook directly): the trace shows it
        s.orders.store.index({order_id: [ctx.job_id]})
    last = notice.failures[-1] if notice.failures else {}
    why = f"{notice.reason}; last error {last.get('exc_type', '?')}: {last.get('message', '')}"
    why = mask_personal(why)[:300]  # a mail server's refusal quotes the address: kept with the order
    if notice.job_type in STEP_JOBS:
        step = STEP_JOBS[notice.job_type]
        s.orders.step_failed(
            order_id, step, f"no answer from {step.value}: {why}", definite=False, cause=cause
        )
    elif notice.job_type in COMPENSATION_JOBS:
        s.orders.compensation_dead(order_id, COMPENSATION_JOBS[notice.job_type], why, cause=cause)
    elif notice.job_type in EMAIL_JOBS:
        s.orders.email_failed(order_id, EMAIL_JOBS[notice.job_type], why, cause=cause)
    elif notice.job_type == "inventory.commit":
        s.orders.flag(order_id, COMMIT_FAILED + why, cause=cause)
    elif notice.job_type in KNOWN_WITHOUT_CONSEQUENCE:
        return f"nothing to do for {notice.job_type}"
    else:  # a type this version does not know: a person must see what it was for
        reason = (
            f"job {notice.job_id} of type {notice.job_type or '(unreadable)'} (unknown to this worker) "
            f"was dead-lettered from queue {notice.queue}: {why}"
        )[:400]
        s.orders.flag(order_id, reason, cause=cause)
    return f"reported to the saga of order {order_id}"


KNOWN_WITHOUT_CONSEQUENCE = frozenset({"orders.check_timeout", HOOK})
"""Order jobs whose death needs no report: a lost time-out check is covered by the saga's
deadline (the watchdog flags the order), and the hook does not report on itself."""
