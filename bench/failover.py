"""``python -m bench.failover [--configs a,b] [--faults planned,kill] [--orders N] [--rate R] [--json]``.

What a Sentinel failover costs in acknowledged orders, for each way of running Redis
(tests/failover.py runs the scenario: a primary, replicas, three Sentinels, a worker and the
events process; orders placed at a steady rate, each with its own idempotency key; a planned
failover or a SIGKILL of the primary mid-run). ``lost`` counts orders the producer was told
were placed that the new primary does not have. docs/operations.md quotes the figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

# the scenario is the test suite's (tests/failover.py): imported by name, it stays out of mypy's run
scenario: Any = importlib.import_module("tests.failover")
CONFIGS: dict[str, Any] = scenario.CONFIGS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=(__doc__ or "").split("\n\n")[1]
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}"
    )
    parser.add_argument("--faults", default="planned,kill", help="planned, kill or both (comma-separated)")
    parser.add_argument("--orders", type=int, default=200, help="orders per run (default 200, at 20/s)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders placed per second (default 20)")
    parser.add_argument(
        "--fault-after", type=int, help="orders acknowledged before the fault (default a third)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each configuration and fault")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.configs.split(",")
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        print(
            f"unknown configuration(s): {', '.join(unknown)} (known: {', '.join(CONFIGS)})", file=sys.stderr
        )
        return 2
    rows = []
    for name in names:
        for fault in args.faults.split(","):
            for _ in range(args.rounds):
                after = args.fault_after if args.fault_after is not None else args.orders // 3
                outcome = scenario.run(
                    CONFIGS[name], fault, total=args.orders, rate=args.rate, fault_after=after
                )
                rows.append({"key": name, **outcome.as_dict()})
                if not args.json:
                    print(_line(rows[-1]), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _line(row: dict[str, object]) -> str:
    return (
        f"{row['config']:<40} {row['fault']:<8} acked {row['acknowledged']:>4}  lost {row['lost']:>4}  "
        f"stuck {row['stuck']:>3}  emails for missing orders {row['emails_for_missing_orders']:>3}  "
        f"refused calls {row['refused_calls']:>4}  {row['seconds']} s"
    )


if __name__ == "__main__":
    sys.exit(main())
