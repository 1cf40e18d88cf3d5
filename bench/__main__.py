"""``python -m bench [--quick | --smoke] [--rounds N] [--jobs N] [--redis-url URL] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from bench.plan import MODES, WORKLOADS, Plan
from bench.redisenv import redis_env
from bench.report import as_json, summary, write
from bench.results import Results
from bench.runner import run
from bench.systems import PEERS, SYSTEMS, Adapter, adapter, unavailable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="chumon's worker beside rq's SimpleWorker, bullmq and dramatiq; see docs/performance.md",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller runs, one round (a smoke check)")
    size.add_argument("--smoke", action="store_true", help="the smallest runs (the test suite's check)")
    parser.add_argument("--rounds", type=int, help="rounds of every workload (default 3; quick and smoke 1)")
    parser.add_argument("--jobs", type=int, help="jobs per drain and memory run (default 20,000)")
    parser.add_argument(
        "--only", type=lambda s: tuple(s.split(",")), help=f"comma-separated subset of {','.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--saga-style",
        choices=["orchestrated", "choreographed"],
        help="run the order flow in this style only (default: both, one after the other)",
    )
    parser.add_argument("--no-bullmq", action="store_true", help="leave bullmq out even if it is installed")
    parser.add_argument(
        "--no-dramatiq", action="store_true", help="leave dramatiq out even if it is installed"
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis instead of a private server; its database is FLUSHED before every run",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = MODES["quick" if args.quick else "smoke" if args.smoke else "full"]
    if args.rounds is not None:
        plan = replace(plan, rounds=max(1, args.rounds))
    if args.jobs is not None:
        plan = replace(plan, jobs=max(10, args.jobs))
    if args.only:
        unknown = set(args.only) - set(WORKLOADS)
        if unknown:
            raise SystemExit(f"bench: unknown workload(s) {sorted(unknown)}; choose from {WORKLOADS}")
        plan = replace(plan, workloads=tuple(w for w in WORKLOADS if w in args.only))
    if args.saga_style:
        plan = replace(plan, saga_styles=(args.saga_style,))
    if args.no_bullmq:
        plan = replace(plan, bullmq=False)
    if args.no_dramatiq:
        plan = replace(plan, dramatiq=False)
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    results = Results()
    for peer in PEERS:
        why_not = f"left out (--no-{peer})" if not getattr(plan, peer) else unavailable(peer)
        if why_not:
            results.unavailable[peer] = why_not
    with redis_env(args.redis_url) as env:
        adapters: dict[str, Adapter] = {
            name: adapter(name, env.redis, env.url) for name in SYSTEMS if name not in results.unavailable
        }
        try:
            run(plan, env, adapters, results)
        finally:
            for each in adapters.values():
                each.close()
    path = write(results)
    if args.json:
        print(json.dumps(as_json(results), indent=2, default=str))
    else:
        print(summary(results))
        print(f"\nresults: {path}")
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
