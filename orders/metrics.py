"""Saga outcomes as Prometheus counters, fed by the in-process event bus after each commit.

``chumon_saga_outcomes_total{outcome, reason}``: outcome is confirmed, cancelled or
needs_attention; reason is the kind of a cancellation ("out of stock", "payment declined",
"carrier refused", "no answer from charge_payment", ...). Each process counts the
transitions it committed; sum over processes in Prometheus.

``chumon_events_parked_total{group}``: entries a consumer group of the event log parked in
its dead-letter stream, counted by the ``chumon events`` process that parked them (the
exporter's ``chumon_events_dead_letters{group}`` says how many are parked now).
"""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from orders import events as e
from orders.bus import EventBus


def reason_kind(reason: str | None) -> str:
    return (reason or "").split(":")[0].strip()[:60]


class SagaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "chumon_saga_outcomes", "How orders ended, by reason.", ["outcome", "reason"], registry=registry
        )

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(e.OrderConfirmed, lambda ev: self.outcomes.labels("confirmed", "").inc())
        bus.subscribe(
            e.OrderCancelled, lambda ev: self.outcomes.labels("cancelled", reason_kind(ev.reason)).inc()
        )
        bus.subscribe(
            e.OrderNeedsAttention,
            lambda ev: self.outcomes.labels("needs_attention", reason_kind(ev.reason)).inc(),
        )


@cache
def process_saga_metrics() -> SagaMetrics:
    return SagaMetrics(REGISTRY)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.parked = Counter(
            "chumon_events_parked",
            "Entries a consumer group of the event log parked in its dead-letter stream.",
            ["group"],
            registry=registry,
        )


@cache
def process_consumer_metrics() -> ConsumerMetrics:
    return ConsumerMetrics(REGISTRY)
