"""How big each workload is in each mode, and which systems and concurrencies run."""

from __future__ import annotations

from dataclasses import dataclass, replace

WORKLOADS = ("noop", "write", "enqueue", "latency", "memory", "roundtrips", "orders")


@dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int
    jobs: int  # N: jobs drained per run (no-op and idempotent write)
    memory_jobs: int  # jobs queued to measure memory (many: fixed costs must not count)
    enqueue_single: int  # jobs enqueued one by one per run
    enqueue_bulk: int  # jobs enqueued in bulk per run
    batch: int  # jobs per bulk call
    roundtrip_jobs: int  # jobs drained under MONITOR
    noop_concurrency: tuple[int | None, ...]  # chumon's; None is the default
    write_concurrency: tuple[int | None, ...]
    bullmq_concurrency: tuple[int, ...]
    dramatiq_threads: int  # one worker process with this many threads
    latency_jobs: int  # single jobs through an idle worker, one at a time
    latency_gap: tuple[float, float]  # seconds of idleness before each (uniform)
    burst_orders: int  # orders placed as fast as possible
    placing_threads: int
    offered_rate: float  # orders/s of the fixed offered load (the latency target is at 100/s)
    offered_seconds: float
    warmup_orders: int
    saga_styles: tuple[str, ...] = ("orchestrated", "choreographed")  # the order flow runs once per style
    workloads: tuple[str, ...] = WORKLOADS
    bullmq: bool = True
    dramatiq: bool = True


FULL = Plan(
    mode="full",
    rounds=3,
    jobs=20_000,
    memory_jobs=20_000,
    enqueue_single=5_000,
    enqueue_bulk=20_000,
    batch=1_000,
    roundtrip_jobs=3_000,
    noop_concurrency=(None, 1, 16),
    write_concurrency=(None, 16),
    bullmq_concurrency=(1, 10),
    dramatiq_threads=8,
    latency_jobs=200,
    latency_gap=(0.005, 0.02),
    burst_orders=3_000,
    placing_threads=4,
    offered_rate=100.0,
    offered_seconds=20.0,
    warmup_orders=20,
)

QUICK = replace(
    FULL,
    mode="quick",
    rounds=1,
    jobs=2_000,
    memory_jobs=10_000,
    enqueue_single=1_000,
    enqueue_bulk=2_000,
    roundtrip_jobs=1_000,
    burst_orders=300,
    offered_seconds=5.0,
)

SMOKE = replace(
    FULL,
    mode="smoke",
    rounds=1,
    jobs=200,
    memory_jobs=2_000,
    enqueue_single=200,
    enqueue_bulk=500,
    batch=250,
    roundtrip_jobs=200,
    noop_concurrency=(None,),
    write_concurrency=(None,),
    bullmq_concurrency=(10,),
    latency_jobs=20,
    burst_orders=40,
    placing_threads=2,
    offered_seconds=2.0,
    saga_styles=("orchestrated",),
    warmup_orders=5,
)

MODES = {plan.mode: plan for plan in (FULL, QUICK, SMOKE)}
