"""What a benchmark invocation collected: a value per round for each (metric, system)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    title: str
    unit: str
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {
    "noop": Metric("no-op jobs, drained", "jobs/s"),
    "write": Metric("idempotent writes, drained", "jobs/s"),
    "enqueue_single": Metric("enqueue one by one", "jobs/s"),
    "enqueue_bulk": Metric("enqueue in bulk", "jobs/s"),
    "client_commands": Metric("client commands per job (MONITOR)", "cmds/job", higher_is_better=False),
    "all_commands": Metric("all commands per job, in scripts too", "cmds/job", higher_is_better=False),
    "redis_cpu": Metric("Redis CPU per no-op job (drain)", "us/job", higher_is_better=False),
    "latency_single_p50": Metric("single job, idle worker: p50", "ms", higher_is_better=False),
    "latency_single_p99": Metric("single job, idle worker: p99", "ms", higher_is_better=False),
    "memory": Metric("Redis memory per queued job", "bytes", higher_is_better=False),
    "orders_sustained": Metric("orders end to end, sustained", "orders/s"),
    "latency_p50": Metric("place -> CONFIRMED p50 at 100 orders/s", "ms", higher_is_better=False),
    "latency_p99": Metric("place -> CONFIRMED p99 at 100 orders/s", "ms", higher_is_better=False),
    "jobs_per_order": Metric("saga: jobs per order", "jobs", higher_is_better=False),
    "events_per_order": Metric("saga: events per order", "events", higher_is_better=False),
}


@dataclass
class Results:
    values: defaultdict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    missing: dict[tuple[str, str], str] = field(default_factory=dict)  # (metric, system): why no row
    details: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, system: str, value: float) -> None:
        if metric not in METRICS:
            raise KeyError(metric)
        self.values[(metric, system)].append(value)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def note(self, **detail: Any) -> None:
        self.details.append(detail)

    @property
    def ok(self) -> bool:
        return not self.failures

    def systems(self, metric: str) -> list[str]:
        return [system for (m, system) in self.values if m == metric]

    def median(self, metric: str, system: str) -> float | None:
        values = self.values.get((metric, system))
        return statistics.median(values) if values else None
