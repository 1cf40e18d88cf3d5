"""What application code imports to start work and read results.

    from producer import Producer
    from workers import EnqueueOptions

    producer = Producer.connect()                      # settings from the environment
    placed = producer.place_order(customer_name="Ada", customer_email="ada@example.com",
                                  items=[("SKU-1", 2)], ship_to="1 Analytical Lane",
                                  idempotency_key="checkout-7f3a")
    producer.get_order(placed.order_id).status         # PENDING, then CONFIRMED or CANCELLED

    job_id = producer.enqueue("demo.work", {"item": 1},
                              options=EnqueueOptions(delay=5, idempotency_key="req-42"))
    producer.get_job(job_id).status

Every call is one Redis round trip (bulk enqueue included).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from orders.commands import PlaceOrder
from orders.keys import OrderKeys
from orders.model import LineRequest, OrderStatus
from orders.projection import OrderSummary
from orders.readmodel import ReadModel
from orders.service import OrderService
from orders.shards import ShardedView, Shards
from orders.store import Placed
from orders.views import OrderDetails
from workers import EnqueueOptions, Enqueuer, JobInfo, JobRegistry, JobType, RuntimeSettings, load_job
from workers.connection import check_server, is_cluster
from workers.errors import UnknownJobType
from workers.keys import Keys

Item = tuple[str, int] | Mapping[str, Any] | LineRequest

TERMINAL = frozenset({"finished", "failed"})


class Producer:
    def __init__(
        self,
        redis: Redis,
        settings: RuntimeSettings,
        registry: JobRegistry,
        orders: OrderService | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.registry = registry
        self.keys = Keys(settings.key_prefix)
        self.enqueuer = Enqueuer(redis, settings)
        self._orders = orders
        self._view: ReadModel | ShardedView | None = None
        self.registry_name: str | None = None  # CHUMON_APP, when connect() loaded it

    @classmethod
    def connect(cls) -> Producer:
        """A producer from the environment's settings, the app's registry and the order flow."""
        from chumon.app import load_registry, redis_client
        from chumon.bootstrap import order_service
        from chumon.settings import load

        settings = load()
        redis = redis_client(settings.redis_url, settings.redis)
        # a server chumon cannot serve is refused before anything is written (ServerUnsupported);
        # one that does not answer yet is not an error here: the first call says so
        with contextlib.suppress(RedisError, OSError):
            check_server(redis)
        producer = cls(redis, settings, load_registry(settings.app), order_service(redis, settings))
        producer.registry_name = f"CHUMON_APP={settings.app!r}"
        return producer

    @property
    def orders(self) -> OrderService:
        if self._orders is None:
            raise RuntimeError("this producer was built without the order flow (pass orders=...)")
        return self._orders

    # -- orders -------------------------------------------------------------------------------------
    def place_order(
        self,
        *,
        customer_name: str,
        customer_email: str,
        items: Sequence[Item],
        ship_to: str,
        payment_token: str = "tok_ok",
        idempotency_key: str | None = None,
    ) -> Placed:
        """Validate, store the order and start its saga in one round trip.

        Raises pydantic's ValidationError naming the field, ``orders.errors.UnknownSku``
        naming the SKU, or ``orders.errors.OrderTooLarge`` (the total would pass the largest
        amount the shop stores), and then nothing is written.

        ``idempotency_key`` is scoped to the customer (their email) and bound to the request: a
        repeated call with the same request (a double submit) returns the first order, with
        ``created=False``; the same key with a different request raises
        ``orders.errors.IdempotencyConflict`` naming the key, and nothing is written.

        With ``CHUMON_REDIS__REPLICAS_ACK`` set, it returns once that many replicas hold the
        order, and raises ``workers.durability.NotReplicated`` otherwise: call again with the
        same ``idempotency_key`` (docs/operations.md, "Failover with Redis Sentinel").
        """
        request = PlaceOrder.model_validate(
            {
                "customer": {"name": customer_name, "email": customer_email},
                "lines": [_line(item) for item in items],
                "ship_to": ship_to,
                "payment_token": payment_token,
                "idempotency_key": idempotency_key,
            },
            context=self.orders.validation_context,
        )
        return self.orders.place(request)

    def get_order(self, order_id: str) -> OrderDetails | None:
        """The order as the write side has it now (strongly consistent)."""
        loaded = self.orders.get(order_id)
        return OrderDetails.of(loaded) if loaded else None

    # -- the read model (eventually consistent) -------------------------------------------------
    @property
    def view(self) -> ReadModel | ShardedView:
        if self._view is None:
            if is_cluster(self.redis):  # every shard's read model (orders/shards.py)
                self._view = ShardedView(self.redis, Shards(self.settings.key_prefix, self.settings.shards))
            else:
                self._view = ReadModel(self.redis, OrderKeys(self.settings.key_prefix))
        return self._view

    def get_order_summary(self, order_id: str) -> OrderSummary | None:
        """The order's summary from the read model: eventually consistent, usually within ms."""
        return self.view.get(order_id)

    def list_orders(
        self, *, customer: str | None = None, status: OrderStatus | None = None, limit: int = 50
    ) -> list[OrderSummary]:
        """Orders from the read model, newest first (the write side is never scanned for lists)."""
        return self.view.query(customer=customer, status=status, limit=limit)

    def wait_for_order(
        self,
        order_id: str,
        *,
        statuses: Iterable[OrderStatus] = (OrderStatus.CONFIRMED, OrderStatus.CANCELLED),
        version: int | None = None,
        timeout: float = 30.0,
    ) -> OrderSummary | None:
        """Block until the read model shows one of ``statuses`` (or at least ``version``), woken
        by a notification, not by polling; None or the last summary seen if ``timeout`` passes."""
        return self.view.wait_for(order_id, statuses=statuses, version=version, timeout=timeout)

    # -- jobs ---------------------------------------------------------------------------------------
    def job_type(self, job_type: JobType[Any] | str) -> JobType[Any]:
        if not isinstance(job_type, str):
            return job_type
        try:
            return self.registry.get(job_type)
        except UnknownJobType as exc:
            raise UnknownJobType(
                f"{exc}: this producer knows the job types of {self.registry_name or 'its registry'} "
                "(set CHUMON_APP=module:registry, or pass the job function instead of its name)"
            ) from None

    def enqueue(
        self,
        job_type: JobType[Any] | str,
        payload: BaseModel | Mapping[str, Any],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Validate and enqueue one job; returns its id. See ``workers.enqueue`` for the rules."""
        return self.enqueuer.enqueue(self.job_type(job_type), payload, options=options, pipeline=pipeline)

    def enqueue_many(
        self,
        job_type: JobType[Any] | str,
        payloads: Iterable[BaseModel | Mapping[str, Any]],
        *,
        options: EnqueueOptions | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[str]:
        """Validate every payload, then enqueue them all in one round trip."""
        return self.enqueuer.enqueue_many(
            self.job_type(job_type), payloads, options=options, pipeline=pipeline
        )

    def get_job(self, job_id: str) -> JobInfo | None:
        return load_job(self.redis, self.keys, job_id)

    def wait_for_job(self, job_id: str, *, timeout: float, poll: float = 0.05) -> JobInfo:
        """Wait until the job finished or failed for good; raises TimeoutError with its last state."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_job(job_id)
            if info is not None and info.status in TERMINAL:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {info.status if info else 'missing'} after {timeout} s"
                )
            time.sleep(poll)


def _line(item: Item) -> Any:
    """An item as PlaceOrder validates it (so errors name ``lines.0.quantity``)."""
    if isinstance(item, tuple):
        sku, quantity = item
        return {"sku": sku, "quantity": quantity}
    return item
