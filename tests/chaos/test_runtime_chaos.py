"""The runtime's fault tier (tests/chaos/harness.py): lost, duplicated and stuck must all be 0.

The short run belongs to ``make test``; the long one (``-m chaos``) to ``make chaos``.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import Plan, outputs, run


def check(plan: Plan, capsys: pytest.CaptureFixture[str]) -> None:
    report, chaos = run(plan)
    detail = "\n".join(report.lines()) + "\n" + outputs(chaos)
    assert report.enqueued == plan.jobs
    assert report.lost == [], detail
    assert report.duplicated == [], detail
    assert report.stuck == [], detail
    assert report.poison_not_dead == [], detail
    assert report.presumed_dead == 0, detail
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing_and_repeats_no_effect(capsys: pytest.CaptureFixture[str]) -> None:
    check(
        Plan(jobs=200, workers=2, kills=2, freezes=1, restarts=1, poison=5, seed=11, job_ms=(50, 400)), capsys
    )


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_chaos_run_loses_nothing_and_repeats_no_effect(
    seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = Plan(jobs=2000, workers=4, concurrency=4, kills=10, freezes=2, restarts=2, poison=30, seed=seed,
                job_ms=(20.0, 400.0), deadline=420.0)  # fmt: skip
    check(plan, capsys)
