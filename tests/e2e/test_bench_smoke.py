"""The benchmark harness in its smallest mode: it completes and its correctness checks pass.

Never asserts on timing: the numbers of a smoke run on a busy test machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e


def test_bench_smoke_mode_completes_with_exact_counts(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", "--redis-url", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        results = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON from the benchmark (exit {done.returncode}): {done.stderr[-3000:]}")
    assert results["failures"] == [] and results["ok"]
    assert done.returncode == 0, done.stderr[-3000:]
    measured = {row["metric"] for row in results["rows"]}
    assert {"noop", "write", "enqueue_single", "enqueue_bulk", "memory", "client_commands"} <= measured
    assert {"orders_sustained", "latency_p99", "jobs_per_order"} <= measured
    assert {"latency_single_p50", "latency_single_p99", "redis_cpu"} <= measured
    systems = {row["system"] for row in results["rows"] if row["metric"] == "noop"}
    assert any(s.startswith("rq") for s in systems) and any(s.startswith("chumon") for s in systems)


def test_flow_control_bench_completes_and_never_exceeds_the_limit(redis_url: str) -> None:
    """4 worker processes at 20/s for 2 s: never more than the windows that fit allow (slowness
    cannot fail this; a limit that lets too many through can)."""
    argv = ["--workers", "4", "--rate", "20", "--seconds", "2", "--jobs", "200", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.flowcontrol", *argv, "--json", "--redis-url", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    rate = results["rate_limit"]
    assert 0 < rate["jobs_started"] <= 20 * 2 and rate["busiest_second"] <= 2 * 20
    assert {"plain_per_s", "all_prioritized_per_s", "tenth_prioritized_per_s"} <= set(results["priorities"])
