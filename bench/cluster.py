"""``python -m bench.cluster``: the job runtime on Redis Cluster with 1, 2 and 3 primaries, beside
one Redis (rq's layout) measured in the same invocation (docs/performance.md, "Redis Cluster").

Each configuration drains the same N no-op jobs spread over the same queues, with the same worker
processes (``chumon worker --queues <all of them>``; on a cluster each process runs one worker per
queue, workers/crew.py). Method, as ``bench.slots``: the jobs are enqueued on paused queues, the
workers start and register, the queues are resumed (the clock starts) and every queue's finished
registry is polled until the total reaches N (the clock stops). Reported per configuration:

- jobs/s, and its ratio to one Redis's (the baseline);
- Redis CPU per job (``used_cpu_user + used_cpu_sys`` of every primary over the drain, over N),
  and each primary's share of the drain's wall time (how busy it was);
- the Redis-bound ceiling: N over the busiest primary's CPU seconds, the jobs/s the servers
  could take if each had a core of its own and the workers kept up (on a 2-core machine the
  workers and the servers share the cores, so the drain itself cannot show the gain);
- the keys on each primary once the jobs are queued (the slot balance).

The queues are chosen so they spread evenly over the primaries' slot ranges (the names
``workers.keys.sub_queues`` picks). The servers are local and keep nothing on disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from redis import Redis

from bench.clusterenv import CpuMeter, child_env, servers, wait
from bench.clusterorders import run_orders_config, slot_balance
from bench.jobs import noop
from bench.orderflow import stop_processes
from workers import EnqueueOptions, Enqueuer, RuntimeSettings
from workers.connection import connect
from workers.control import Control
from workers.keys import spread


def queue_names(count: int) -> list[str]:
    """``count`` queue names in evenly spaced slot ranges: an even share on every primary."""
    return list(spread(count, lambda n: f"bench-{n}"))


def run_config(
    primaries: int, jobs: int, queues: list[str], workers: int, concurrency: int
) -> dict[str, Any]:
    """One timed drain on a fresh server (or cluster) of ``primaries`` (0: one plain Redis)."""
    with servers(primaries) as (url, nodes):
        settings = RuntimeSettings(redis_url=url)
        redis = connect(url, settings.redis)
        control, enqueuer = Control(redis, settings), Enqueuer(redis, settings)
        layout = control.layout
        for queue in queues:
            control.pause(queue)
        per_queue = jobs // len(queues)
        for queue in queues:
            options = EnqueueOptions(queue=queue)
            for first in range(0, per_queue, 2000):
                enqueuer.enqueue_many(noop, [{"n": n} for n in range(first, min(per_queue, first + 2000))],
                                      options=options)  # fmt: skip
        total = per_queue * len(queues)
        finished = [layout.keys(q).finished(q) for q in queues]
        live = [layout.keys(q).live_workers for q in queues]
        command = [sys.executable, "-m", "chumon", "worker", "--app", "bench.jobs:registry",
                   "--concurrency", str(concurrency), "--queues", *queues]  # fmt: skip
        meter = CpuMeter(nodes)
        quiet = subprocess.DEVNULL
        env = child_env(url)
        procs = [subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet) for _ in range(workers)]
        try:
            wait(lambda: all(int(redis.zcard(key)) >= workers for key in live), 60, "the workers to register")
            meter.start()
            start = time.time()
            for queue in queues:
                control.resume(queue)
            wait(lambda: _done(redis, finished) >= total, 600, "the drain")
            elapsed = time.time() - start
            meter.stop()
        finally:
            stop_processes(procs)
        row = meter.row(total, elapsed, "job")
        redis.close()
    return {
        "primaries": primaries,
        "layout": "cluster" if primaries else "one Redis (rq's)",
        "jobs": total,
        **row,
    }


def _done(redis: Redis, finished: list[str]) -> int:
    with redis.pipeline(transaction=False) as pipe:
        for key in finished:
            pipe.zcard(key)
        return sum(int(n) for n in pipe.execute())


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: the median of its rounds, the ratio to one Redis's median."""
    rows = []
    for primaries in dict.fromkeys(r["primaries"] for r in runs):
        mine = [r for r in runs if r["primaries"] == primaries]
        row: dict[str, Any] = dict(mine[0])
        for key in ("jobs_per_s", "redis_cpu_us_per_job", "ceiling_jobs_per_s"):
            row[key] = statistics.median(r[key] for r in mine)
        row["jobs_per_s_each_round"] = [round(r["jobs_per_s"]) for r in mine]
        rows.append(row)
    base = next((r for r in rows if r["primaries"] == 0), None)
    for row in rows:
        row["vs_one_redis"] = row["jobs_per_s"] / base["jobs_per_s"] if base else None
        row["ceiling_vs_one_redis"] = row["ceiling_jobs_per_s"] / base["ceiling_jobs_per_s"] if base else None
    return rows


def table(rows: list[dict[str, Any]], what: str = "job") -> str:
    """The rows of ``what`` (job or order) as a table, ratios against one Redis's row."""
    per = f"Redis us/{what}"
    head = (f"{what + 's':<22} {what + 's/s':>9} {'ratio':>8} {per:>15} {'ceiling/s':>10} {'ratio':>8}"
            "  busy per primary    keys per primary")  # fmt: skip
    lines = [head]
    for row in rows:
        first = not row["primaries"]
        name = "one Redis (rq's)" if first else f"cluster, {row['primaries']} primaries"
        ratio = "baseline" if first else f"{row['vs_one_redis']:.2f}x"
        ceiling = "baseline" if first else f"{row['ceiling_vs_one_redis']:.2f}x"
        busy = ",".join(f"{b:.0%}" for b in row["busy_per_primary"])
        lines.append(
            f"{name:<22} {row[what + 's_per_s']:>9,.0f} {ratio:>8} {row[f'redis_cpu_us_per_{what}']:>15,.1f} "
            f"{row[f'ceiling_{what}s_per_s']:>10,.0f} {ceiling:>8}  {busy:<19} {row['keys_per_primary']}"
        )
    return "\n".join(lines)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12_000, help="no-op jobs per drain (default 12,000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every configuration (default 2)")
    parser.add_argument("--primaries", default="1,2,3", help="cluster sizes to run (default 1,2,3)")
    parser.add_argument("--queues", type=int, default=6, help="queues the jobs spread over (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2, one per core)")
    parser.add_argument("--concurrency", type=int, default=4, help="slots of each worker (default 4)")
    parser.add_argument(
        "--orders", type=int, default=1000, help="orders per configuration (default 1,000; 0: none)"
    )
    parser.add_argument("--threads", type=int, default=4, help="threads placing the orders (default 4)")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (the test suite's check)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.rounds, args.primaries, args.queues, args.workers = 300, 1, "2", 2, 1
        args.orders, args.threads = 30, 2
    sizes = [0] + [int(p) for p in args.primaries.split(",") if p.strip()]
    queues = queue_names(args.queues)
    runs = []
    for round_ in range(1, args.rounds + 1):
        for primaries in sizes:
            label = "one Redis" if not primaries else f"{primaries} primaries"
            say(f"round {round_}/{args.rounds}: {label}: draining {args.jobs:,} jobs ...")
            run = run_config(primaries, args.jobs, queues, args.workers, args.concurrency)
            say(f"  {run['jobs_per_s']:,.0f} jobs/s, {run['redis_cpu_us_per_job']:.1f} us of Redis CPU a job")
            runs.append(run)
    rows = summarize(runs)
    order_rows = []
    for primaries in sizes if args.orders else []:  # one round: the orders take longer
        label = "one Redis" if not primaries else f"{primaries} primaries"
        say(f"orders: {label}: {args.orders:,} orders from {args.threads} threads ...")
        run = run_orders_config(primaries, args.orders, args.threads)
        say(f"  {run['orders_per_s']:,.0f} orders/s, {run['redis_cpu_us_per_order']:.0f} us of Redis CPU")
        order_rows.append(run)
    for row in order_rows:
        base = order_rows[0]
        row["vs_one_redis"] = row["orders_per_s"] / base["orders_per_s"]
        row["ceiling_vs_one_redis"] = row["ceiling_orders_per_s"] / base["ceiling_orders_per_s"]
    balance = {str(p): slot_balance(p) for p in sizes if p}
    if args.json:
        print(
            json.dumps({"jobs": rows, "orders": order_rows, "slot_balance_10000_orders": balance}, indent=2)
        )
    else:
        print(table(rows))
        if order_rows:
            print("\n" + table(order_rows, "order"))
        print("\nshare of 10,000 orders per primary (chumon's shard tags / naive {o0},{o1},{o2}):")
        for size, shares in balance.items():
            print(f"  {size} primaries: {shares['chumon']}  /  {shares['naive']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
