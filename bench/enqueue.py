"""Enqueue from app code, timed in this process: one call per job, and bulk calls.

One by one: rq's ``queue.enqueue``, chumon's ``Enqueuer.enqueue``, bullmq's ``queue.add``,
dramatiq's ``actor.send``. Bulk, in batches: rq's ``enqueue_many`` on a pipeline, chumon's
``Enqueuer.enqueue_many``, bullmq's ``addBulk``; dramatiq has none (``Adapter.no_bulk``).
Payloads are plain dicts, as app code passes them (chumon validates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.drain import RunFailed
from bench.redisenv import RedisEnv
from bench.systems import Adapter


@dataclass
class EnqueueRates:
    single: float
    bulk: float | None  # None: the system has no bulk path


def timed_enqueue(env: RedisEnv, adapter: Adapter, jobs: int, batch: int | None) -> float:
    """Jobs/s of one enqueue run into an empty Redis; the queue length is checked."""
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


def run_enqueue(env: RedisEnv, adapter: Adapter, single: int, bulk: int, batch: int) -> EnqueueRates:
    adapter.add_each("noop", range(10))  # warm-up: scripts loaded, connections open
    return EnqueueRates(
        single=timed_enqueue(env, adapter, single, None),
        bulk=None if adapter.no_bulk else timed_enqueue(env, adapter, bulk, batch),
    )
