"""Pause and resume, numeric priorities, rate limits, a job told to slow down, cancellation.

Against a real Redis and real workers (in threads); each checks the order or the counts jobs ran
in, recorded by the jobs themselves.
"""

from __future__ import annotations

import time

from redis import Redis

from tests.apps import sample
from tests.support import run_burst, wait_until, worker_thread
from workers import Control, EnqueueOptions, Enqueuer, RateLimit, RuntimeSettings, load_job
from workers.codec import parse_iso
from workers.keys import Keys

KEYS = Keys()


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


def claim_times(redis: Redis, job_ids: list[str]) -> list[float]:
    """When each job was claimed, by the server's clock (the claim stamps ``last_heartbeat``)."""
    return sorted(
        parse_iso(redis.hget(KEYS.job(job_id), "last_heartbeat").decode()).timestamp() for job_id in job_ids
    )


def order(redis: Redis) -> list[str]:
    return [item.decode() for item in redis.lrange("test:order", 0, -1)]


# -- pause ---------------------------------------------------------------------------------------------
def test_a_paused_queue_gives_no_work_until_resumed(redis: Redis, settings: RuntimeSettings) -> None:
    control = Control(redis, settings)
    assert control.pause("q") and not control.pause("q")  # idempotent
    job_id = Enqueuer(redis, settings).enqueue(sample.record, {"name": "waited"})
    with worker_thread(redis, sample.registry, settings) as worker:
        wait_until(lambda: worker.heartbeat.is_alive(), message="the worker")
        time.sleep(5 * settings.recovery_interval)  # several rounds of a worker that must not claim
        assert status(redis, job_id) == "queued" and control.paused() == {"q"}
        assert control.resume("q") and not control.resume("q")
        wait_until(lambda: status(redis, job_id) == "finished", message="the job after resume")


# -- priorities -----------------------------------------------------------------------------------------
def test_priorities_order_a_queue_fifo_among_equals_after_jobs_without_one(
    redis: Redis, settings: RuntimeSettings
) -> None:
    control, enqueuer = Control(redis, settings), Enqueuer(redis, settings)
    control.pause("q")
    for name, priority in [
        ("p5", 5),
        ("p1-a", 1),
        ("none-a", None),
        ("p3", 3),
        ("p1-b", 1),
        ("none-b", None),
    ]:
        enqueuer.enqueue(sample.record, {"name": name}, options=EnqueueOptions(priority=priority))
    front = enqueuer.enqueue(
        sample.record, {"name": "p1-front"}, options=EnqueueOptions(priority=1, at_front=True)
    )
    control.resume("q")
    run_burst(redis, sample.registry, settings, concurrency=1)
    assert order(redis) == ["none-a", "none-b", "p1-front", "p1-a", "p1-b", "p3", "p5"]
    assert status(redis, front) == "finished"


def test_a_prioritized_job_keeps_its_priority_when_it_is_put_back(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """A retry due at once, a hand-back and a requeued dead letter go back to the prioritized set."""
    from workers.deadletter import DeadLetters

    job_id = Enqueuer(redis, settings).enqueue(
        sample.permanent, {"text": "x"}, options=EnqueueOptions(priority=4)
    )
    run_burst(redis, sample.registry, settings)
    assert status(redis, job_id) == "failed"
    Control(redis, settings).pause("q")
    assert DeadLetters(redis, settings).requeue([job_id]) == [job_id]
    assert redis.zscore(KEYS.prioritized("q"), job_id) // 2**32 == 4 and redis.llen("rq:queue:q") == 0


# -- rate limits --------------------------------------------------------------------------------------------
def test_a_queue_rate_limit_holds_across_four_workers(redis: Redis, settings: RuntimeSettings) -> None:
    """20 jobs per 0.5 s for the queue, 4 workers of 4 slots: 100 jobs cannot all start in less than
    4 windows (2 s). Slowness cannot fail this test: only a limit that lets too many through can."""
    limited = settings.model_copy(update={"queue_rate_limits": {"q": RateLimit(max=20, per=0.5)}})
    Enqueuer(redis, limited).enqueue_many(sample.echo, [{"text": str(i)} for i in range(100)])
    workers = [worker_thread(redis, sample.registry, limited, concurrency=4) for _ in range(4)]
    for w in workers:
        w.__enter__()
    try:
        wait_until(lambda: redis.llen("test:echo") == 100, timeout=60, message="every job")
    finally:
        for w in workers:
            w.__exit__(None, None, None)
    claims = claim_times(redis, [i.decode() for i in redis.zrange("rq:finished:q", 0, -1)])
    assert len(claims) == 100
    # five windows of 20: the fifth opened at least four windows after the first
    assert claims[-1] - claims[0] >= 4 * 0.5 - 0.01, f"100 jobs claimed within {claims[-1] - claims[0]:.2f} s"


def test_a_job_type_rate_limit_holds_its_jobs_back_without_attempts(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """t.limited allows 5 jobs per second: 15 of them span at least 2 s, and none used an attempt waiting."""
    ids = Enqueuer(redis, settings).enqueue_many(sample.limited, [{"name": str(i)} for i in range(15)])
    with worker_thread(redis, sample.registry, settings, queues=["limited"], concurrency=8):
        wait_until(lambda: redis.llen("test:limited") == 15, timeout=60, message="every job")
    claims = claim_times(redis, ids)
    assert claims[-1] - claims[0] >= 2 * 1.0 - 0.01  # three windows of 5
    assert all(load_job(redis, KEYS, job_id).attempt == 1 for job_id in ids)


def test_a_job_told_to_slow_down_pauses_its_queue_and_uses_no_attempt(
    redis: Redis, settings: RuntimeSettings
) -> None:
    enqueuer = Enqueuer(redis, settings)
    busy = enqueuer.enqueue(sample.busy_peer, {"name": "busy", "seconds": 1.5})
    with worker_thread(redis, sample.registry, settings, concurrency=1) as worker:
        wait_until(lambda: worker.stats["throttled"] == 1, message="the 429")
        assert redis.pttl(KEYS.throttle("queue", "q")) > 0
        other = enqueuer.enqueue(sample.record, {"name": "other"})
        time.sleep(0.5)  # well within the pause: the queue gives nothing
        assert status(redis, other) == "queued"
        wait_until(lambda: status(redis, busy) == "finished", message="the job after its pause")
        wait_until(lambda: status(redis, other) == "finished", message="the queue after the pause")
    info = load_job(redis, KEYS, busy)
    assert info.attempt == 1 and info.failures == [] and info.result == "passed on attempt 1"


# -- cancellation ------------------------------------------------------------------------------
def test_cancel_removes_waiting_jobs_and_stops_a_running_one(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer, control = Enqueuer(redis, settings), Control(redis, settings)
    control.pause("q")
    queued = enqueuer.enqueue(sample.record, {"name": "queued"})
    ranked = enqueuer.enqueue(sample.record, {"name": "ranked"}, options=EnqueueOptions(priority=3))
    later = enqueuer.enqueue(sample.record, {"name": "later"}, options=EnqueueOptions(delay=60))
    long = enqueuer.enqueue(sample.cancellable, {"name": "long", "seconds": 20})
    assert [control.cancel(j).action for j in (queued, ranked, later)] == ["removed"] * 3
    assert control.cancel(queued).action == "nothing"  # idempotent: it is canceled already
    control.resume("q")
    with worker_thread(redis, sample.registry, settings, concurrency=2) as worker:
        wait_until(lambda: redis.llen("test:started:long") == 1, message="the long job")
        assert control.cancel(long).action == "asked"
        wait_until(lambda: status(redis, long) == "canceled", message="the long job to stop")
        assert worker.stats["cancelled"] == 1
    assert order(redis) == []  # none of the waiting ones ever ran
    for job_id in (queued, ranked, later, long):
        assert status(redis, job_id) == "canceled"
        assert redis.zscore("rq:canceled:q", job_id) is not None
    assert control.cancel("no-such-job").action == "missing"
    assert redis.scard(KEYS.cancel_requests()) == 0
