"""Isolated job types (``isolated=True``): each attempt in a child process, against real workers.

Whatever the child does (exit, segfault, run out of memory, run past its time limit), the
worker lives on, the attempt fails with a reason, and the retry policy decides the rest.
"""

from __future__ import annotations

import os

import pytest
from redis import Redis

from tests.apps import aio
from tests.support import WorkerProcess, run_burst, wait_until, worker_thread
from workers import Control, EnqueueOptions, Enqueuer, JobContext, JobRegistry, RuntimeSettings, load_job
from workers.deadletter import DeadLetters
from workers.keys import Keys

KEYS = Keys()


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


def pids(redis: Redis, how: str) -> list[int]:
    return [int(p) for p in redis.lrange(f"test:crunch:{how}", 0, -1)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_isolated_job_runs_in_a_child_process(redis: Redis, settings: RuntimeSettings) -> None:
    ids = Enqueuer(redis, settings).enqueue_many(aio.crunch, [{"n": 15} for _ in range(6)])
    worker = run_burst(redis, aio.registry, settings, concurrency=2)
    assert worker.stats["done"] == 6
    info = load_job(redis, KEYS, ids[0])
    assert info is not None and info.result["fib"] == 610 and info.result["pid"] != os.getpid()
    assert len(set(pids(redis, "ok"))) <= 2  # children are kept for the next job (one per slot)
    assert int(redis.get("test:crunched") or 0) == 6  # ctx.effects from the child, applied once each
    assert all(gone(pid) for pid in set(pids(redis, "ok")))  # the worker's children end with it


@pytest.mark.parametrize(
    ("how", "reason"),
    [("exit", "exited with status 3"), ("segv", "killed by SIGSEGV"), ("memory", "MemoryError")],
)
def test_a_child_that_dies_fails_the_attempt_not_the_worker(
    redis: Redis, settings: RuntimeSettings, how: str, reason: str
) -> None:
    enqueuer = Enqueuer(redis, settings)
    doomed = enqueuer.enqueue(aio.crunch, {"n": 1, "how": how})
    with worker_thread(redis, aio.registry, settings) as worker:
        # three fresh children, each a new interpreter: seconds each on a loaded two-core machine
        wait_until(lambda: status(redis, doomed) == "failed", timeout=120, message="the dead letter")
        fine = enqueuer.enqueue(aio.crunch, {"n": 10})
        wait_until(lambda: status(redis, fine) == "finished", timeout=60, message="the next job")
    entry = DeadLetters(redis, settings).show(doomed)
    assert entry is not None and len(entry.failures) == 3  # retried by the policy, then dead-lettered
    assert all(reason in f"{f['exc_type']}: {f['message']}" for f in entry.failures)
    assert len(set(pids(redis, how))) == 3  # a fresh child for each attempt
    assert worker.stats["dead"] == 1 and worker.stats["done"] == 1


def test_a_permanent_error_in_the_child_dead_letters_at_once(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.crunch, {"n": 1, "how": "permanent"})
    run_burst(redis, aio.registry, settings)
    entry = DeadLetters(redis, settings).show(job_id)
    assert entry is not None and [f["exc_type"] for f in entry.failures] == ["KeyError"]
    assert "no such thing" in entry.failures[0]["traceback"]  # the child's own traceback


def test_a_time_out_kills_the_child(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(
        aio.crunch, {"n": 1, "how": "slow"}, options=EnqueueOptions(timeout=0.5)
    )
    # a grace long enough that only a child the time-out failed to kill abandons its slot, even
    # when a loaded machine takes a while to reap it
    patient = settings.model_copy(update={"timeout_grace": 10.0})
    with worker_thread(redis, aio.registry, patient) as worker:
        wait_until(lambda: status(redis, job_id) == "failed", timeout=120, message="the dead letter")
    entry = DeadLetters(redis, settings).show(job_id)
    assert entry is not None and {f["exc_type"] for f in entry.failures} == {"JobTimeout"}
    assert all(gone(pid) for pid in pids(redis, "slow")) and worker.runners.abandoned == 0


def test_cancelling_an_isolated_job_stops_its_child(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.crunch, {"n": 1, "how": "slow"})
    with worker_thread(redis, aio.registry, settings) as worker:
        wait_until(lambda: pids(redis, "slow"), timeout=30, message="the child to start")
        assert Control(redis, settings).cancel(job_id).action == "asked"
        wait_until(lambda: status(redis, job_id) == "canceled", message="the job to stop")
    assert gone(pids(redis, "slow")[0]) and worker.stats["cancelled"] == 1


def test_slow_down_from_a_child_uses_no_attempt(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.crunch, {"n": 5, "how": "rate"})
    with worker_thread(redis, aio.registry, settings) as worker:
        wait_until(lambda: status(redis, job_id) == "finished", timeout=30, message="the job")
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.attempt == 1 and worker.stats["throttled"] == 1


def test_an_isolated_job_reports_progress_and_log_lines(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.crunch, {"n": 5, "how": "report"})
    run_burst(redis, aio.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.status == "finished" and info.progress == {"done": 50}
    assert len(info.logs) == 1 and f"half way in {pids(redis, 'report')[0]}" in info.logs[0]


def test_a_worker_process_survives_a_segfaulting_child(redis: Redis, redis_url: str) -> None:
    settings = RuntimeSettings(redis_url=redis_url)
    enqueuer = Enqueuer(redis, settings)
    crash = enqueuer.enqueue(aio.crunch, {"n": 1, "how": "segv"})
    process = WorkerProcess(redis_url, "--queues", "cpu", app="tests.apps.aio:registry")
    try:
        wait_until(lambda: status(redis, crash) == "failed", timeout=60, message="the dead letter")
        after = enqueuer.enqueue(aio.crunch, {"n": 12})
        wait_until(lambda: status(redis, after) == "finished", timeout=30, message="a job after the crash")
        assert process.proc.poll() is None
    finally:
        process.stop()
    assert process.proc.returncode == 0, process.output[-2000:]


def test_an_isolated_handler_must_be_importable_and_synchronous() -> None:
    registry = JobRegistry()

    def local(payload: aio.Crunch, ctx: JobContext) -> None: ...

    async def coroutine(payload: aio.Crunch, ctx: JobContext) -> None: ...

    with pytest.raises(ValueError, match="module level"):
        registry.job("x.local", isolated=True)(local)
    with pytest.raises(ValueError, match="not async"):
        registry.job("x.async", isolated=True)(coroutine)
