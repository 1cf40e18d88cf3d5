"""Prometheus metrics of a worker process (prometheus-client).

- ``chumon_jobs_total{queue, job_type, outcome}``: counter; outcome is started, succeeded,
  retried, dead_lettered, released, duplicate or deferred;
- ``chumon_job_duration_seconds{queue, job_type}``: histogram of attempts that ran to an end;
- ``chumon_recovered_runs_total{queue}``: runs of dead workers this worker recovered;
- ``chumon_lost_runs_total``: attempts settled elsewhere while this worker ran them.

Counters live in the process: scrape each worker (``chumon worker --metrics-port``), and read
rates with ``rate()``, which copes with restarts. State that lives in Redis (queue depths,
dead letters, workers) comes from the one exporter, ``chumon metrics`` (chumon/exporter.py).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "chumon_jobs",
            "Job attempts and their outcomes.",
            ["queue", "job_type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "chumon_job_duration_seconds",
            "Time one attempt ran.",
            ["queue", "job_type"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.recovered = Counter(
            "chumon_recovered_runs",
            "Runs of dead workers recovered by this worker.",
            ["queue"],
            registry=registry,
        )
        self.lost = Counter(
            "chumon_lost_runs",
            "Attempts settled elsewhere while this worker ran them.",
            [],
            registry=registry,
        )

        self._children: dict[tuple[str, ...], Any] = {}  # labelled children: labels() is slow per job

    def count(self, queue: str, job_type: str, outcome: str, n: int = 1) -> None:
        if n:
            key = (queue, job_type, outcome)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.jobs.labels(queue, job_type, outcome)
            child.inc(n)

    def observe(self, queue: str, job_type: str, seconds: float) -> None:
        key = (queue, job_type)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(queue, job_type)
        child.observe(seconds)


@cache
def process_metrics() -> RuntimeMetrics:
    """The process's metrics, on prometheus-client's default registry (created on first use)."""
    return RuntimeMetrics(REGISTRY)
