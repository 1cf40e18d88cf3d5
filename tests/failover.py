"""A Sentinel failover while orders flow, counted from the producer's side.

A primary, its replicas and three Sentinels (tests/sentinelproc.py), one worker and the
events process (real processes, given the Sentinel URL), and a producer in this process that
places orders at a steady rate, each with its own idempotency key, retrying a failed call with
the same key until it is acknowledged, and recording every acknowledged order id. Mid-run the
primary fails over (``planned``: ``SENTINEL FAILOVER``; ``kill``: SIGKILL, then the operator
restarts it, and it rejoins as a replica). Then every acknowledged order must exist on the
new primary and end CONFIRMED or CANCELLED, and no email may name an order that does not exist.

Used by tests/e2e/test_failover.py (the recommended configuration) and bench/failover.py
(every configuration, with the figures docs/operations.md quotes).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

import jobs
from chumon.bootstrap import build_services
from chumon.smtpsink import SmtpSink
from producer import Producer
from tests.flow import CATALOGUE, flow_settings
from tests.sentinelproc import SentinelCluster
from tests.support import ChumonProcess, WorkerProcess
from workers.connection import RedisOptions, connect

QUEUES = ["orders", "inventory", "payments", "shipping", "notifications"]


@dataclass(frozen=True)
class Config:
    """One way to run Redis and chumon; ``replicas`` 0 means a lone primary (no failover possible)."""

    name: str
    replicas: int = 1
    replicas_ack: int = 0
    min_replicas_to_write: int = 0

    def server_args(self) -> list[str]:
        if not self.min_replicas_to_write:
            return []
        return ["--min-replicas-to-write", str(self.min_replicas_to_write), "--min-replicas-max-lag", "10"]


CONFIGS = {
    "no-replica": Config("no replica", replicas=0),
    "replica": Config("replica without WAIT"),
    "min-replicas": Config("min-replicas-to-write 1", min_replicas_to_write=1),
    "wait": Config("REPLICAS_ACK=1 (WAIT)", replicas_ack=1),
    "recommended": Config(
        "REPLICAS_ACK=1 + min-replicas-to-write 1", replicas_ack=1, min_replicas_to_write=1
    ),
    "2-replicas-min": Config("2 replicas, min-replicas-to-write 1", replicas=2, min_replicas_to_write=1),
    "2-replicas-wait-1": Config("2 replicas, REPLICAS_ACK=1", replicas=2, replicas_ack=1),
    "2-replicas-wait-2": Config("2 replicas, REPLICAS_ACK=2", replicas=2, replicas_ack=2),
}


@dataclass
class Outcome:
    config: str
    fault: str
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    emails_for_missing_orders: list[str] = field(default_factory=list)
    refused_calls: int = 0
    exited: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            lost=len(self.lost),
            stuck=len(self.stuck),
            emails_for_missing_orders=len(self.emails_for_missing_orders),
        )
        return data


class Placer:
    """Places ``total`` orders at ``rate`` per second; a failed call is retried with the same key."""

    def __init__(self, producer: Producer, total: int, rate: float) -> None:
        self.producer = producer
        self.total = total
        self.interval = 1.0 / rate
        self.acknowledged: list[str] = []
        self.refused = 0
        self.errors: Counter[str] = Counter()  # what the refused calls raised, for a failure's message
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="placer", daemon=True)

    def _run(self) -> None:
        for i in range(self.total):
            started = time.monotonic()
            while not self.stop.is_set():
                try:
                    placed = self.producer.place_order(
                        customer_name=f"Customer {i}",
                        customer_email=f"c{i}@example.com",
                        items=[("TEA", 1)],
                        ship_to=f"{i} Test Street",
                        idempotency_key=f"checkout-{i}",
                    )
                except Exception as exc:  # NotReplicated, NOREPLICAS, a connection error, READONLY: retry
                    self.refused += 1
                    self.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                    self.stop.wait(0.1)
                    continue
                self.acknowledged.append(placed.order_id)
                break
            if self.stop.is_set():
                return
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def run(config: Config, fault: str, *, total: int = 120, rate: float = 20.0, fault_after: int = 40,
        deadline: float = 120.0) -> Outcome:  # fmt: skip
    """Run the scenario once; ``fault`` is ``planned`` or ``kill``."""
    began = time.monotonic()
    outcome = Outcome(config.name, fault)
    with ExitStack() as stack:
        cluster = stack.enter_context(SentinelCluster(replicas=config.replicas, extra=config.server_args()))
        sink = stack.enter_context(SmtpSink(port=0))  # in memory: a failover cannot erase what it saw
        options = RedisOptions(replicas_ack=config.replicas_ack, replicas_timeout_ms=1000, socket_timeout=5)
        settings = flow_settings(cluster.url, sink.port, redis=options)
        redis = connect(cluster.url, options)
        stack.callback(redis.close)
        services = build_services(redis, settings)
        for sku, (_, price) in CATALOGUE.items():
            services.inventory.set_stock(sku, 100_000, price)
        env: dict[str, Any] = {
            "smtp__port": sink.port,
            "redis__replicas_ack": config.replicas_ack,
            "redis__replicas_timeout_ms": 1000,
            "events__claim_after": 1.0,
        }
        processes: list[ChumonProcess] = [
            WorkerProcess(cluster.url, "--queues", *QUEUES, "--concurrency", "4", app="jobs:registry", **env),
            ChumonProcess(cluster.url, "events", **env),
        ]
        for process in processes:
            stack.callback(process.stop)
        placer = Placer(Producer(redis, settings, jobs.registry, services.orders), total, rate)
        stack.callback(placer.stop.set)
        placer.thread.start()
        cluster.wait_for(lambda: len(placer.acknowledged) >= fault_after, "orders before the fault", deadline)
        fail_over(cluster, fault if config.replicas else "restart")
        placer.thread.join(timeout=deadline)
        assert not placer.thread.is_alive(), f"the producer did not finish in {deadline} s"
        outcome.exited = [" ".join(p.proc.args[3:5]) for p in processes if p.proc.poll() is not None]
        outcome.acknowledged = len(placer.acknowledged)
        outcome.refused_calls = placer.refused
        settle(cluster, redis, placer.acknowledged, outcome, deadline)
        known = set(placer.acknowledged) - set(outcome.lost)
        outcome.emails_for_missing_orders = sorted(
            {m["order_id"] for m in sink.messages() if m.get("order_id") and m["order_id"] not in known}
        )
    outcome.seconds = round(time.monotonic() - began, 1)
    return outcome


def fail_over(cluster: SentinelCluster, fault: str) -> None:
    old = cluster.primary_port()
    if fault == "restart":  # nothing to fail over to: the lone primary is killed and restarted
        cluster.server(old).restart()
        return
    if fault == "planned":
        cluster.failover()
    else:
        cluster.server(old).kill()
    cluster.wait_for(lambda: cluster.primary_port() != old, "the Sentinels to promote a replica")
    if fault == "kill":
        cluster.server(old).start()  # what a supervisor does; Sentinel makes it a replica of the new one


def settle(cluster: SentinelCluster, redis: Any, ids: list[str], outcome: Outcome, deadline: float) -> None:
    """Wait until every acknowledged order that exists has ended; record the missing and the stuck."""
    from orders.keys import OrderKeys

    keys = OrderKeys()

    def statuses() -> list[Any]:
        with redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hget(keys.order(order_id), "status")
            return list(pipe.execute())

    def ended() -> bool:
        return all(s is None or s in (b"CONFIRMED", b"CANCELLED") for s in statuses())

    with suppress(AssertionError):  # what did not end is reported, not raised
        cluster.wait_for(ended, "every acknowledged order to end", deadline)
    final = statuses()
    outcome.lost = [order_id for order_id, s in zip(ids, final, strict=True) if s is None]
    outcome.stuck = [
        order_id
        for order_id, s in zip(ids, final, strict=True)
        if s not in (None, b"CONFIRMED", b"CANCELLED")
    ]
