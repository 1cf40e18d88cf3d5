"""``python -m bench.slots``: async slots against thread slots, isolated against in-thread CPU work.

Two workloads, each variant a real ``chumon worker`` process on the benchmark's Redis, every
ratio against a baseline measured in the same invocation (docs/performance.md, "Async and
isolated jobs"):

- **I/O-bound**: N jobs that each wait 10 ms; thread slots (``time.sleep``) against the
  event loop (``await asyncio.sleep``) at equal concurrency (8, the thread default) and at the
  async default (100). Baseline: thread slots at the default 8.
- **CPU-bound beside I/O**: N of the same 10 ms thread-slot jobs drained while ``--cpu-jobs``
  jobs (default 1) burn CPU (pure Python, holding the GIL) in the same worker: in thread slots,
  or isolated in child processes. Baseline: the drain with no CPU job running.

Method: the jobs are enqueued on paused queues, the worker is started and registers, then
the queues are resumed (the clock starts) and the finished registry is polled every 5 ms
until it holds all N (the clock stops). So the rate excludes start-up; it is N over the time
from resume to the last completion, as seen in Redis. The CPU jobs are started before the
I/O queue is resumed and must still be running when the drain ends, else the run says so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from bench.machine import describe
from bench.redisenv import RedisEnv, redis_env
from bench.slotjobs import CPU_QUEUE, IO_QUEUE, burn, burn_isolated, sleep, wait
from workers import Control, Enqueuer, JobType, RuntimeSettings

WAIT_MS = 10.0
POLL = 0.005


@dataclass(frozen=True)
class Variant:
    workload: str
    name: str
    job: JobType[Any]
    args: tuple[str, ...]
    burner: JobType[Any] | None = None
    baseline: bool = False


VARIANTS = (
    Variant("io", "threads c=8 (default)", sleep, ("--concurrency", "8"), baseline=True),
    Variant("io", "async c=8", wait, ("--concurrency", "1", "--async-concurrency", "8")),
    Variant("io", "threads c=100", sleep, ("--concurrency", "100")),
    Variant("io", "async c=100 (default)", wait, ("--concurrency", "1")),
    Variant("cpu", "no CPU job running", sleep, ("--concurrency", "8"), baseline=True),
    Variant("cpu", "CPU job in a thread", sleep, ("--concurrency", "8"), burner=burn),
    Variant("cpu", "CPU job isolated", sleep, ("--concurrency", "8"), burner=burn_isolated),
)
TITLES = {
    "io": f"I/O-bound jobs ({WAIT_MS:g} ms waits), drained",
    "cpu": f"{WAIT_MS:g} ms thread-slot jobs drained beside CPU-bound jobs (c=8)",
}


@dataclass
class Report:
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for variant in VARIANTS:
            values = self.rates.get((variant.workload, variant.name), [])
            base = next(v for v in VARIANTS if v.workload == variant.workload and v.baseline)
            base_values = self.rates.get((base.workload, base.name), [])
            median = statistics.median(values) if values else None
            ratio = median / statistics.median(base_values) if median and base_values else None
            rows.append({
                "workload": variant.workload, "variant": variant.name, "unit": "jobs/s", "median": median,
                "min": min(values, default=None), "max": max(values, default=None), "values": values,
                "vs_baseline": ratio, "baseline": base.name,
            })  # fmt: skip
        return rows


def run_variant(
    env: RedisEnv, variant: Variant, jobs: int, burn_seconds: float, cpu_jobs: int
) -> tuple[float, str | None]:
    """One timed drain; returns (jobs per second, a problem or None)."""
    env.flush()
    settings = RuntimeSettings(redis_url=env.url)
    control, enqueuer = Control(env.redis, settings), Enqueuer(env.redis, settings)
    control.pause(IO_QUEUE)
    control.pause(CPU_QUEUE)
    enqueuer.enqueue_many(variant.job, [{"ms": WAIT_MS}] * jobs)
    if variant.burner is not None:
        enqueuer.enqueue_many(variant.burner, [{"seconds": burn_seconds}] * cpu_jobs)
    command = [sys.executable, "-m", "chumon", "worker", "--app", "bench.slotjobs:registry",
               "--queues", CPU_QUEUE, IO_QUEUE, *variant.args]  # fmt: skip
    with open(os.devnull, "w") as sink:
        worker = subprocess.Popen(command, env=env.child_env(), stdout=sink, stderr=sink)
        try:
            _wait(lambda: env.redis.scard("rq:workers") > 0, 30, "the worker to register")
            if variant.burner is not None:
                control.resume(CPU_QUEUE)
                _wait(lambda: _running(env.redis, CPU_QUEUE) == cpu_jobs, 60, "the CPU jobs to start")
                time.sleep(0.2)  # the isolated ones: their children start and burn
            start = time.time()
            control.resume(IO_QUEUE)
            _wait(lambda: env.redis.zcard(f"rq:finished:{IO_QUEUE}") >= jobs, 600, "the drain", POLL)
            elapsed = time.time() - start
            burning = _running(env.redis, CPU_QUEUE) if variant.burner is not None else cpu_jobs
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    problem = None
    if burning < cpu_jobs:
        problem = f"{variant.name}: a CPU job ended before the drain did; use a longer --burn"
    return jobs / elapsed, problem


def _running(redis: Redis, queue: str) -> int:
    return int(redis.zcard(f"rq:wip:{queue}"))


def _wait(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.slots: timed out waiting for {what}")
        time.sleep(poll)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'variant':<28} {'jobs/s':>8} {'min':>8} {'max':>8} {'ratio':>7}"]
    for workload, title in TITLES.items():
        lines.append(f"\n{title}")
        for row in (r for r in rows if r["workload"] == workload):
            if row["median"] is None:
                continue
            ratio = "baseline" if row["variant"] == row["baseline"] else f"{row['vs_baseline']:.2f}x"
            numbers = " ".join(f"{row[k]:>8,.0f}" for k in ("median", "min", "max"))
            lines.append(f"  {row['variant']:<26} {numbers} {ratio:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slots", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (default 3)")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per drain (default 3,000)")
    parser.add_argument("--burn", type=float, default=20.0, help="seconds each CPU job burns (default 20)")
    parser.add_argument(
        "--cpu-jobs", type=int, default=1, choices=range(1, 8), metavar="N",
        help="CPU-bound jobs running beside the drain (default 1: one core each for it and the rest)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one round of 1,000 jobs")
    parser.add_argument("--only", choices=sorted(TITLES), help="one workload")
    parser.add_argument("--redis-url", help="use this Redis; its database is FLUSHED before every run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = parser.parse_args(argv)
    rounds, jobs = (1, 1000) if args.quick else (max(1, args.rounds), max(100, args.jobs))
    variants = [v for v in VARIANTS if args.only in (None, v.workload)]
    report = Report()
    with redis_env(args.redis_url) as env:
        machine = describe(env)
        total, done = rounds * len(variants), 0
        for round_no in range(1, rounds + 1):
            for variant in variants:
                done += 1
                print(f"[{done}/{total}] round {round_no}: {variant.workload}: {variant.name} ...",
                      end="", file=sys.stderr, flush=True)  # fmt: skip
                rate, problem = run_variant(env, variant, jobs, args.burn, args.cpu_jobs)
                report.rates.setdefault((variant.workload, variant.name), []).append(rate)
                print(f" {rate:,.0f} jobs/s", file=sys.stderr, flush=True)
                if problem:
                    report.problems.append(problem)
    rows = [r for r in report.rows() if r["values"]]
    if args.json:
        out = {"machine": machine, "jobs": jobs, "cpu_jobs": args.cpu_jobs, "rounds": rounds,
               "wait_ms": WAIT_MS, "rows": rows, "problems": report.problems,
               "ok": not report.problems}  # fmt: skip
        print(json.dumps(out, indent=2, default=str))
    else:
        print(table(rows))
        for problem in report.problems:
            print(f"problem: {problem}")
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
