"""Enqueue from app code, timed in this process: one call per job, and bulk calls.

One by one: rq's ``queue.enqueue``, chumon's ``Enqueuer.enqueue``, bullmq's ``queue.add``,
dramatiq's ``actor.send``. Bulk, in batches: rq's ``enqueue_many`` on a pipeline, chumon's
``Enqueuer.enqueue_many``, bullmq's ``addBulk``; dramatiq has none (``Adapter.no_bulk``).
Payloads are plain dicts, as app code passes them (chumon validates).

The systems take turns: a run's jobs are cut into slices (``SLICES``, or fewer for bulk: a
slice is whole batches), and slice after slice every system enqueues one into an emptied
Redis, so a slow spell of a shared machine falls on all of them alike. A system's rate is
the median of its slices' rates; each slice's queue length is checked.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

from bench.drain import RunFailed
from bench.redisenv import RedisEnv
from bench.systems import Adapter

SLICES = 10


def timed_slice(env: RedisEnv, adapter: Adapter, jobs: int, batch: int | None) -> float:
    """Jobs/s of one slice into an empty Redis; the queue length is checked."""
    env.flush()
    started = time.perf_counter()
    if batch is None:
        adapter.add_each("noop", range(jobs))
    else:
        adapter.add_bulk("noop", range(jobs), batch)
    elapsed = time.perf_counter() - started
    if adapter.queued() != jobs:
        raise RunFailed(f"{adapter.system} enqueue: {adapter.queued()} jobs queued, expected {jobs}")
    return jobs / elapsed


def run_enqueues(
    env: RedisEnv, adapters: list[Adapter], single: int, bulk: int, batch: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Each system's one-by-one and bulk rates (systems without a bulk path have none)."""
    for adapter in adapters:
        adapter.add_each("noop", range(10))  # warm-up: scripts loaded, connections open
    each: defaultdict[str, list[float]] = defaultdict(list)
    bulked: defaultdict[str, list[float]] = defaultdict(list)
    for _ in range(SLICES):
        for adapter in adapters:
            each[adapter.system].append(timed_slice(env, adapter, max(1, single // SLICES), None))
    bulk_slices = max(1, min(SLICES, bulk // batch))
    for _ in range(bulk_slices):
        for adapter in adapters:
            if not adapter.no_bulk:
                bulked[adapter.system].append(timed_slice(env, adapter, bulk // bulk_slices, batch))
    median = statistics.median
    return {s: median(r) for s, r in each.items()}, {s: median(r) for s, r in bulked.items()}
