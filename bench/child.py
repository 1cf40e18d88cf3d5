"""One measured worker process: ``python -m bench.child SYSTEM WORKLOAD --redis-url URL ...``.

It builds its worker, writes the time it starts working to ``bench:t0``, drains the queue
and prints one JSON line with its own counts. chumon's is ``chumon worker --burst`` itself,
run through its command line's entry point in this process. The parent measures the end from Redis.
rq and chumon run in burst mode and stop when the queue is empty; bullmq and dramatiq have no
burst mode, so their processes stop once they have seen ``--expect`` jobs complete or fail.

With ``--serve`` every worker runs as a service instead (no burst) until SIGTERM: the idle
worker of the single-job latency run (bench/latency.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

from redis import Redis

from bench import QUEUE, T0_KEY


def mark_start(redis: Redis) -> None:
    redis.set(T0_KEY, repr(time.time()))


def run_rq(url: str, serve: bool, queue_name: str) -> dict[str, Any]:
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    counts: Counter[str] = Counter()

    class CountingWorker(SimpleWorker):
        """rq's SimpleWorker, counting outcomes in memory (rq keeps its counts in Redis only)."""

        def handle_job_success(self, *args: Any, **kwargs: Any) -> None:
            counts["done"] += 1
            super().handle_job_success(*args, **kwargs)

        def handle_job_failure(self, *args: Any, **kwargs: Any) -> None:
            counts["failed"] += 1
            super().handle_job_failure(*args, **kwargs)

    redis = Redis.from_url(url)
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    worker = CountingWorker([queue], connection=redis, serializer=JSONSerializer)
    mark_start(redis)
    # rq's default logging: INFO lines per job (to a file, see drain.Child); SIGTERM stops it
    worker.work(burst=not serve)
    return dict(counts)


def run_chumon(url: str, concurrency: int | None, serve: bool) -> dict[str, Any]:
    """``chumon worker --burst`` itself (chumon.cli.main), with the worker's stats kept."""
    from chumon import cli
    from workers import cli as runtime_cli
    from workers.worker import Worker

    stats: Counter[str] = Counter()

    class RecordingWorker(Worker):
        def run(self, *, burst: bool = False) -> Counter[str]:
            stats.update(super().run(burst=burst))
            return stats

    runtime_cli.Worker = RecordingWorker  # type: ignore[attr-defined]  # the name cmd_worker builds
    argv = ["worker", "--app", "bench.jobs:registry", "--queues", QUEUE] + ([] if serve else ["--burst"])
    argv += ["--concurrency", str(concurrency)] if concurrency else []
    mark_start(Redis.from_url(url))  # REDIS_URL in the environment names the same server
    code = cli.main(argv)
    if code:
        raise SystemExit(code)
    return dict(stats)


def run_bullmq(
    url: str, workload: str, concurrency: int, expect: int, timeout: float, serve: bool
) -> dict[str, Any]:
    return asyncio.run(_bullmq(url, workload, concurrency, expect, timeout, serve))


async def _bullmq(
    url: str, workload: str, concurrency: int, expect: int, timeout: float, serve: bool
) -> dict[str, Any]:
    from bullmq import Worker
    from redis.asyncio import Redis as AsyncRedis

    from bench.jobs import bullmq_processor

    redis = AsyncRedis.from_url(url)
    counts: Counter[str] = Counter()
    enough = asyncio.Event()

    def count(kind: str) -> Any:
        def on_event(*args: Any) -> None:
            counts[kind] += 1
            if counts["done"] + counts["failed"] >= expect and not serve:
                enough.set()

        return on_event

    worker = Worker(
        QUEUE,
        bullmq_processor(workload, redis),
        {"connection": url, "concurrency": concurrency, "autorun": False},
    )
    worker.on("completed", count("done"))
    worker.on("failed", count("failed"))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, enough.set)
    await redis.set(T0_KEY, repr(time.time()))
    running = asyncio.ensure_future(worker.run())
    try:
        await asyncio.wait_for(enough.wait(), timeout)
    finally:
        await worker.close()
        await running
        await redis.aclose()
    return dict(counts)


def run_dramatiq(
    url: str, workload: str, threads: int, expect: int, timeout: float, serve: bool
) -> dict[str, Any]:
    """One dramatiq ``Worker`` (the process the ``dramatiq`` command forks per ``--processes``)
    with ``threads`` worker threads on the Redis broker, counting outcomes in a middleware."""
    from dramatiq import Middleware, Worker

    from bench.jobs import dramatiq_actors
    from bench.systems import broker

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    enough = threading.Event()

    class Counting(Middleware):  # type: ignore[misc,unused-ignore]
        def after_process_message(
            self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
        ) -> None:
            with lock:
                counts["failed" if exception is not None else "done"] += 1
                if counts["done"] + counts["failed"] >= expect and not serve:
                    enough.set()

    redis_broker = broker(url)
    redis_broker.add_middleware(Counting())
    dramatiq_actors(redis_broker, Redis.from_url(url))
    worker = Worker(redis_broker, worker_threads=threads)  # every declared queue, as `dramatiq` does
    signal.signal(signal.SIGTERM, lambda signum, frame: enough.set())
    mark_start(Redis.from_url(url))
    worker.start()
    try:
        enough.wait(timeout)
    finally:
        worker.stop()
        redis_broker.close()
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("system", choices=["rq", "chumon", "bullmq", "dramatiq"])
    parser.add_argument("workload", choices=["noop", "write", "value"])  # value: chumon only
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--serve", action="store_true", help="serve until SIGTERM (no burst)")
    parser.add_argument("--queue", default=QUEUE, help="rq's queue (chumon's is the job types')")
    args = parser.parse_args(argv)
    if args.system == "rq":
        summary = run_rq(args.redis_url, args.serve, args.queue)
    elif args.system == "chumon":
        summary = run_chumon(args.redis_url, args.concurrency, args.serve)
    elif args.system == "bullmq":
        summary = run_bullmq(
            args.redis_url, args.workload, args.concurrency or 1, args.expect, args.timeout, args.serve
        )
    else:
        summary = run_dramatiq(
            args.redis_url, args.workload, args.concurrency or 8, args.expect, args.timeout, args.serve
        )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
