"""``python -m bench.cluster --smoke``: one Redis and a 2-primary cluster drain the same jobs and
run the same orders, and the rows say so as ratios. Never asserts on timing; the shape of the
rows, the slot balance, and the orders' own checks (the bench fails if one is not CONFIRMED,
charged once and emailed once)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e


def test_cluster_bench_runs_one_redis_and_a_cluster_side_by_side() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--smoke", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    rows = {row["primaries"]: row for row in found["jobs"]}
    assert sorted(rows) == [0, 2]
    assert rows[0]["vs_one_redis"] == 1.0 and rows[2]["vs_one_redis"] > 0
    assert all(row["jobs"] == 300 and row["redis_cpu_us_per_job"] > 0 for row in rows.values())
    assert len(rows[2]["keys_per_primary"]) == 2 and min(rows[2]["keys_per_primary"]) > 0  # both hold jobs
    assert "draining 300 jobs" in done.stderr  # progress, a line per run
    orders = {
        row["primaries"]: row for row in found["orders"]
    }  # each checked: confirmed, charged, emailed once
    assert sorted(orders) == [0, 2] and orders[0]["vs_one_redis"] == 1.0 and orders[2]["orders_per_s"] > 0
    assert min(orders[2]["keys_per_primary"]) > 0
    assert found["slot_balance_10000_orders"]["2"]["chumon"] == [0.333, 0.667]  # 3 shards on 2 primaries
