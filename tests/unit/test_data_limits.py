"""The byte budgets behind the payload and result limits (tests/integration/test_data_limits.py)."""

from __future__ import annotations

from workers.codec import megabytes, size_over
from workers.enqueue import CHUNK, CHUNK_BYTES, _chunks
from workers.execution import Claimed, Outcome
from workers.worker import SETTLE_BYTES, SETTLE_MAX, settle_count


def test_size_over_counts_utf8_bytes_and_only_above_the_limit() -> None:
    assert size_over("x" * 1000, 1000) is None
    assert size_over("x" * 1001, 1000) == 1001
    assert size_over("é" * 300, 1000) is None  # 600 bytes
    assert size_over("é" * 600, 1000) == 1200  # 600 characters, 1,200 bytes
    assert megabytes(3 * 1024 * 1024 // 2) == "1.5 MiB" and megabytes(2048) == "2 KiB"


def spec(size: int) -> dict[str, object]:
    return {"id": "x", "queue": "q", "fields": ["data", "d" * size]}


def test_chunks_hold_at_most_chunk_jobs_and_chunk_bytes() -> None:
    assert [len(c) for c in _chunks([spec(10) for _ in range(450)])] == [CHUNK, CHUNK, 50]
    third = CHUNK_BYTES // 3
    assert [len(c) for c in _chunks([spec(third) for _ in range(7)])] == [3, 3, 1]
    assert [len(c) for c in _chunks([spec(CHUNK_BYTES * 2), spec(1), spec(CHUNK_BYTES * 2)])] == [1, 1, 1]


def outcome(size: int) -> Outcome:
    claimed = Claimed(job_id="j", execution="e", attempt=1, queue="q", data=b"", meta=b"", timeout=1.0,
                      retry="", effect_key="", result_ttl=None)  # fmt: skip
    return Outcome(claimed, "done", result_b64="r" * size)


def test_a_step_settles_at_most_settle_max_outcomes_and_settle_bytes_of_results() -> None:
    assert settle_count([]) == 0
    assert settle_count([outcome(0) for _ in range(SETTLE_MAX + 5)]) == SETTLE_MAX
    half = SETTLE_BYTES // 2
    assert settle_count([outcome(half), outcome(half), outcome(1), outcome(1)]) == 2
    assert settle_count([outcome(SETTLE_BYTES * 3), outcome(1)]) == 1  # a large one goes alone
