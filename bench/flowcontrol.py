"""Flow control measured from outside: a global rate limit across worker processes, and the
cost of numeric priorities on the claim.

``python -m bench.flowcontrol [--workers 4] [--rate 20] [--seconds 10] [--jobs 5000] [--json]``

- **Rate limit.** ``--workers`` worker processes (4 slots each) serve one queue limited to
  ``--rate`` jobs per second (``CHUMON_QUEUE_RATE_LIMITS``), with more jobs queued than the
  limit lets through in ``--seconds``. The rate is counted from the jobs' own start times
  (written by the server's clock): jobs started in ``[first start, first start + seconds)``
  divided by the seconds, and reported as a ratio to the limit (1.00 = exactly the limit).
- **Priorities.** One worker process drains ``--jobs`` no-op jobs three ways in the same
  invocation: every job plain (rq's list, the baseline), every job with a random priority
  (1..1000), and one in ten prioritized. Reported as jobs/s and as a ratio to the baseline.

Starts its own redis-server unless ``--redis-url`` is given (whose database is FLUSHED).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis

from bench import QUEUE, ROOT
from bench.jobs import noop
from bench.redisenv import RedisEnv, redis_env
from chumon.progress import Progress
from workers import EnqueueOptions, Enqueuer, RuntimeSettings
from workers.codec import parse_iso
from workers.keys import Keys

KEYS = Keys()
CHUNK = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.flowcontrol", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workers", type=int, default=4, help="worker processes for the rate limit (default 4)"
    )
    parser.add_argument(
        "--rate", type=int, default=20, help="the queue's limit, jobs per second (default 20)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long the rate is measured (default 10)"
    )
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per priority drain (default 5,000)")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each kind, median kept (default 3)")
    parser.add_argument("--redis-url", help="use this Redis instead of a private server (FLUSHED)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


@contextmanager
def workers(env: RedisEnv, count: int, **extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    command = [sys.executable, "-m", "chumon", "worker", "--app", "bench.jobs:registry"]
    command += ["--queues", QUEUE, "--concurrency", "4"]
    # the workers' logs go to a file: a pipe nobody reads would fill and stall them
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env.child_env(**extra), stdout=log, stderr=log)
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def start_times(redis: Redis, ids: list[str], field: str = "started_at") -> list[float]:
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(KEYS.job(job_id), field)
        raw = pipe.execute()
    return sorted(parse_iso(value.decode()).timestamp() for value in raw if value)


def wait_finished(redis: Redis, count: int, label: str, deadline: float) -> None:
    progress = Progress(count, label)
    try:
        while (done := int(redis.zcard(KEYS.finished(QUEUE)))) < count:
            progress.update(done)
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {label}: {done} of {count} jobs finished before the deadline")
            time.sleep(0.05)
        progress.update(done)
    finally:
        progress.close()


def measure_rate(env: RedisEnv, args: argparse.Namespace) -> dict[str, Any]:
    env.flush()
    settings = RuntimeSettings(redis_url=env.url)
    wanted = int(args.rate * args.seconds)
    total = wanted + 2 * args.rate  # more than the limit lets through in the measured span
    ids = Enqueuer(env.redis, settings).enqueue_many(noop, [{"n": i} for i in range(total)])
    with workers(env, args.workers, CHUMON_QUEUE_RATE_LIMITS=f"{QUEUE}={args.rate}/s"):
        label = f"jobs at {args.rate}/s over {args.workers} workers"
        wait_finished(env.redis, total, label, time.monotonic() + 3 * total / args.rate + 60)
    starts = start_times(env.redis, ids)
    first = starts[0]
    inside = sum(1 for t in starts if t < first + args.seconds)
    per_second = [sum(1 for t in starts if first + s <= t < first + s + 1) for s in range(int(args.seconds))]
    rate = inside / args.seconds
    return {
        "workers": args.workers,
        "limit_per_s": args.rate,
        "seconds": args.seconds,
        "jobs_started": inside,
        "measured_per_s": round(rate, 2),
        "ratio_to_limit": round(rate / args.rate, 3),
        "busiest_second": max(per_second),
        "quietest_second": min(per_second),
    }


def drain(env: RedisEnv, jobs: int, prioritized_share: float, label: str) -> float:
    """Jobs per second for one worker process draining ``jobs`` no-ops, from the server's stamps."""
    env.flush()
    settings = RuntimeSettings(redis_url=env.url)
    enqueuer, rng = Enqueuer(env.redis, settings), random.Random(7)
    ids: list[str] = []
    for start in range(0, jobs, CHUNK):
        for i in range(start, min(start + CHUNK, jobs)):
            options = (
                EnqueueOptions(priority=rng.randint(1, 1000)) if rng.random() < prioritized_share else None
            )
            ids.append(enqueuer.enqueue(noop, {"n": i}, options=options))
    with workers(env, 1):
        wait_finished(env.redis, jobs, label, time.monotonic() + 600)
    starts, ends = start_times(env.redis, ids), start_times(env.redis, ids, "ended_at")
    return jobs / max(ends[-1] - starts[0], 1e-6)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (1 <= args.workers <= 64 and 1 <= args.rate <= 10_000 and 1 <= args.seconds <= 600):
        raise SystemExit("bench: --workers 1-64, --rate 1-10000, --seconds 1-600")
    if not (1 <= args.rounds <= 20 and 100 <= args.jobs <= 1_000_000):
        raise SystemExit("bench: --rounds 1-20, --jobs 100-1000000")
    with redis_env(args.redis_url) as env:
        rate = measure_rate(env, args)
        runs: dict[float, list[float]] = {0.0: [], 1.0: [], 0.1: []}
        for round_ in range(1, args.rounds + 1):  # interleaved, so a busy moment hits every case
            for share, label in ((0.0, "plain jobs (baseline)"), (1.0, "every job prioritized"),
                                 (0.1, "one in ten prioritized")):  # fmt: skip
                runs[share].append(drain(env, args.jobs, share, f"{label}, round {round_}"))
        plain, every, tenth = (statistics.median(runs[share]) for share in (0.0, 1.0, 0.1))
    priorities = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "plain_per_s": round(plain),
        "all_prioritized_per_s": round(every),
        "tenth_prioritized_per_s": round(tenth),
        "all_prioritized_ratio": round(every / plain, 3),
        "tenth_prioritized_ratio": round(tenth / plain, 3),
    }
    if args.json:
        print(json.dumps({"rate_limit": rate, "priorities": priorities}, indent=2))
        return 0
    print(
        f"rate limit {rate['limit_per_s']}/s over {rate['workers']} worker processes: "
        f"{rate['jobs_started']} jobs started in {rate['seconds']:g} s = {rate['measured_per_s']}/s "
        f"(x{rate['ratio_to_limit']} of the limit; a clock second held {rate['quietest_second']} to "
        f"{rate['busiest_second']} jobs: fixed windows, so one second can straddle two)"
    )
    print(
        f"priorities, one worker, {args.jobs} no-op jobs, median of {args.rounds}: "
        f"plain {priorities['plain_per_s']}/s (baseline); "
        f"every job prioritized {priorities['all_prioritized_per_s']}/s "
        f"(x{priorities['all_prioritized_ratio']}); one in ten {priorities['tenth_prioritized_per_s']}/s "
        f"(x{priorities['tenth_prioritized_ratio']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
