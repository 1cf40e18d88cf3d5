"""``async def`` job types on the worker's event loop, against a real Redis and real workers.

Each test enqueues with the producer API, runs a worker (in burst mode or in a thread), and
reads the outcome from Redis: results, attempts, dead letters, effects counted once.
"""

from __future__ import annotations

from redis import Redis

from tests.apps import aio
from tests.support import WorkerProcess, run_burst, wait_until, worker_thread
from workers import Control, Enqueuer, RuntimeSettings, load_job
from workers.deadletter import DeadLetters
from workers.keys import Keys

KEYS = Keys()


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


def test_async_jobs_run_and_settle_like_any_job(redis: Redis, settings: RuntimeSettings) -> None:
    ids = Enqueuer(redis, settings).enqueue_many(aio.nap, [{"name": f"n{i}"} for i in range(20)])
    worker = run_burst(redis, aio.registry, settings)
    assert worker.stats["done"] == 20 and worker.runners.aio is not None
    info = load_job(redis, KEYS, ids[7])
    assert info is not None and info.status == "finished" and info.result == {"name": "n7", "attempt": 1}
    assert int(redis.get("test:naps") or 0) == 20  # ctx.effects applied with each completion
    assert redis.zcard("rq:finished:aio") == 20 and redis.zcard("rq:wip:aio") == 0


def test_many_awaits_run_at_once_up_to_the_async_limit(redis: Redis, settings: RuntimeSettings) -> None:
    """300 jobs that each await 0.5 s, 100 at a time: every one has started before the first
    batch could have ended one after another (counted from Redis, not timed)."""
    Enqueuer(redis, settings).enqueue_many(aio.nap, [{"name": f"c{i}", "seconds": 0.5} for i in range(300)])
    with worker_thread(redis, aio.registry, settings, concurrency=1, async_concurrency=100) as worker:
        wait_until(lambda: len(worker.runners.running()) == 100, timeout=30, message="100 awaits at once")
        assert len(worker.runners.running()) <= 100
        wait_until(lambda: int(redis.get("test:naps") or 0) == 300, timeout=60, message="every job")
    assert worker.stats["done"] == 300


def test_a_failed_async_attempt_is_retried_then_succeeds(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.nap, {"name": "flaky", "failures": 2})
    with worker_thread(redis, aio.registry, settings):
        wait_until(lambda: status(redis, job_id) == "finished", message="the flaky job")
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.attempt == 3 and info.result == {"name": "flaky", "attempt": 3}
    assert [f["exc_type"] for f in info.failures] == ["RuntimeError", "RuntimeError"]
    assert "failure 1" in info.failures[0]["traceback"]
    assert int(redis.get("test:naps") or 0) == 1


def test_an_async_job_past_its_time_limit_is_cancelled_and_dead_lettered(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.stuck, {"name": "s"})
    with worker_thread(redis, aio.registry, settings) as worker:
        wait_until(lambda: status(redis, job_id) == "failed", timeout=20, message="the dead letter")
    entry = DeadLetters(redis, settings).show(job_id)
    assert entry is not None and [f["exc_type"] for f in entry.failures] == ["JobTimeout", "JobTimeout"]
    assert redis.llen("test:stuck:s") == 2 and worker.runners.abandoned == 0  # cancelled, not abandoned


def test_an_async_job_that_always_fails_is_dead_lettered(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(aio.nap, {"name": "doomed", "failures": 9})
    with worker_thread(redis, aio.registry, settings):
        wait_until(lambda: status(redis, job_id) == "failed", message="the dead letter")
    entry = DeadLetters(redis, settings).show(job_id)
    assert entry is not None and len(entry.failures) == 3
    assert redis.llen("test:nap:doomed") == 3 and redis.get("test:naps") is None  # no effect applied


def test_async_jobs_keep_their_effect_key(redis: Redis, settings: RuntimeSettings) -> None:
    """The type's effect key (the name): a second job with the same key finishes as a duplicate."""
    enqueuer = Enqueuer(redis, settings)
    first = enqueuer.enqueue(aio.nap, {"name": "once"})
    run_burst(redis, aio.registry, settings)
    second = enqueuer.enqueue(aio.nap, {"name": "once"})
    worker = run_burst(redis, aio.registry, settings)
    assert status(redis, first) == status(redis, second) == "finished"
    assert worker.stats["duplicate"] == 1 and redis.llen("test:nap:once") == 1


def test_rate_limited_and_cancelled_async_jobs(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer, control = Enqueuer(redis, settings), Control(redis, settings)
    told = enqueuer.enqueue(aio.polite, {"name": "told", "failures": 1})
    long = enqueuer.enqueue(aio.polite, {"name": "long", "seconds": 1})
    with worker_thread(redis, aio.registry, settings) as worker:
        wait_until(lambda: status(redis, told) == "finished", message="the throttled job")
        wait_until(lambda: status(redis, long) == "started", message="the long job")
        assert control.cancel(long).action == "asked"
        wait_until(lambda: status(redis, long) == "canceled", message="the long job to stop")
    info = load_job(redis, KEYS, told)
    assert info is not None and info.attempt == 1  # slowing down used no attempt
    assert worker.stats["throttled"] == 1 and worker.stats["cancelled"] == 1


def test_a_worker_process_runs_async_jobs_and_stops_cleanly(redis: Redis, redis_url: str) -> None:
    settings_ = RuntimeSettings(redis_url=redis_url)
    Enqueuer(redis, settings_).enqueue_many(aio.nap, [{"name": f"p{i}", "seconds": 0.2} for i in range(50)])
    process = WorkerProcess(redis_url, "--async-concurrency", "20", app="tests.apps.aio:registry")
    try:
        wait_until(lambda: int(redis.get("test:naps") or 0) == 50, timeout=30, message="every job")
    finally:
        process.stop()
    assert process.proc.returncode == 0, process.output[-2000:]


def test_an_async_job_without_its_type_field_still_runs_in_a_thread_slot(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """A job written by another producer (no ``job_type`` field) is routed to the threads, where
    its coroutine is run to completion: slower, but the job is not lost."""
    job_id = Enqueuer(redis, settings).enqueue(aio.nap, {"name": "untyped"})
    redis.hdel(KEYS.job(job_id), "job_type")
    worker = run_burst(redis, aio.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.result == {"name": "untyped", "attempt": 1}
    assert worker.stats["done"] == 1 and int(redis.get("test:naps") or 0) == 1
