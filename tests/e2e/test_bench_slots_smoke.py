"""``python -m bench.slots`` in its smallest form: every variant runs and is reported as a ratio.

Never asserts on timing: on a busy test machine the numbers mean nothing; the harness's own
check (the CPU-bound job still running when the drain ends) and the shape of its JSON do.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e


def test_slots_bench_runs_every_variant_against_its_baseline(redis_url: str) -> None:
    argv = ["--rounds", "1", "--jobs", "200", "--burn", "8", "--json", "--redis-url", redis_url]
    done = subprocess.run(
        [sys.executable, "-m", "bench.slots", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["ok"] and results["problems"] == []
    rows = {(r["workload"], r["variant"]): r for r in results["rows"]}
    assert len(rows) == 7 and all(r["median"] > 0 and r["vs_baseline"] > 0 for r in rows.values())
    assert rows[("io", "threads c=8 (default)")]["vs_baseline"] == 1.0
    assert "[7/7]" in done.stderr  # progress, one line per run
