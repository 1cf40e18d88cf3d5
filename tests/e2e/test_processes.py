"""Real worker processes: SIGKILL recovery, SIGTERM drain, producers racing in processes."""

from __future__ import annotations

import multiprocessing
import signal
import time

import pytest
from redis import Redis

from tests.apps import sample
from tests.support import WorkerProcess, make_settings, wait_until
from workers import EnqueueOptions, Enqueuer, RuntimeSettings, load_job
from workers.keys import Keys, dead_letter_queue

pytestmark = pytest.mark.e2e
KEYS = Keys()


def status(redis: Redis, job_id: str) -> str:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else "missing"


def test_sigkill_mid_job_is_recovered_and_completes_once(redis: Redis, redis_url: str) -> None:
    """Default recovery settings: the job must be running again well within 15 s of the kill."""
    settings = RuntimeSettings(redis_url=redis_url)  # defaults: worker_ttl 10 s, recovery every 2 s
    job_id = Enqueuer(redis, settings).enqueue(sample.keyed, {"key": "crash", "sleep": 3.0})
    victim = WorkerProcess(
        redis_url,
        "--queues",
        "q",
        "--name",
        "victim",
        worker_ttl=10,
        recovery_interval=2,
        heartbeat_interval=1,
    )
    try:

        def begun() -> bool:
            # the handler ran its first line, and the worker recorded that the attempt began (the
            # record follows the handler's start by a round trip: a kill in between loses a run
            # that never counted, which recovery hands back without using an attempt)
            ran, execution = redis.hmget(f"rq:job:{job_id}", "ran", "execution")
            return redis.llen("test:keyed:started") == 1 and ran is not None and ran == execution

        wait_until(begun, timeout=15, message="the job to start")
        assert redis.hget(f"rq:job:{job_id}", "worker_name") == b"victim"
        victim.kill()
        killed_at = time.time()
        survivor = WorkerProcess(
            redis_url,
            "--queues",
            "q",
            "--name",
            "survivor",
            worker_ttl=10,
            recovery_interval=2,
            heartbeat_interval=1,
        )
        try:
            wait_until(
                lambda: redis.llen("test:keyed:started") == 2, timeout=15, message="recovery within 15 s"
            )
            recovered_in = time.time() - killed_at
            wait_until(lambda: status(redis, job_id) == "finished", timeout=15, message="the job to finish")
        finally:
            survivor.stop()
    finally:
        victim.stop()
    print(f"\nrecovered {recovered_in:.1f} s after SIGKILL")
    assert redis.lrange("test:effects", 0, -1) == [b"crash"]  # effect once
    info = load_job(redis, KEYS, job_id)
    assert info.attempt == 2 and info.failures[0]["exc_type"] == "WorkerLost"
    assert info.worker == "survivor"
    assert redis.zscore("chumon:workers", "victim") is None
    assert redis.exists("rq:worker:victim") == 0 and redis.smembers("chumon:worker:victim:inflight") == set()


def test_a_job_that_kills_its_worker_at_once_still_ends_dead_lettered(redis: Redis, redis_url: str) -> None:
    """The handler ends the process before its begin is recorded (workers/worker.py BEGAN_DELAY):
    each loss is handed back without an attempt until the third, then counted, so the job's two
    attempts end it in the dead-letter queue after five runs, each one killing its worker."""
    job_id = Enqueuer(redis, make_settings(redis_url)).enqueue(sample.exit_at_once, {"text": "boom"})
    fast = {"worker_ttl": 1.0, "recovery_interval": 0.2, "heartbeat_interval": 0.2}
    # a worker of another queue recovers each dead victim's run (and runs nothing of it)
    recoverer = WorkerProcess(redis_url, "--queues", "elsewhere", "--name", "recoverer", **fast)
    try:
        for n in range(8):
            if status(redis, job_id) == "failed":
                break
            victim = WorkerProcess(redis_url, "--queues", "crash", "--name", f"victim{n}", **fast)
            try:
                assert victim.wait(timeout=30) != 0, "the job ends its worker"
            finally:
                victim.stop()
            assert redis.llen("test:exit_at_once") == n + 1
            wait_until(
                lambda: status(redis, job_id) != "started", timeout=20, message=f"run {n + 1} recovered"
            )
    finally:
        recoverer.stop()
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.status == "failed" and info.attempt == 2, info
    assert redis.llen("test:exit_at_once") == 5  # three losses handed back, then the two attempts
    assert redis.lrange(KEYS.queue(dead_letter_queue("crash")), 0, -1) == [job_id.encode()]


def test_sigkill_of_one_worker_among_several_under_load(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url)
    ids = Enqueuer(redis, settings).enqueue_many(
        sample.keyed, [{"key": f"k{i}", "sleep": 0.05} for i in range(200)]
    )
    workers = [WorkerProcess(redis_url, "--queues", "q", "--concurrency", "4") for _ in range(3)]
    try:
        wait_until(lambda: redis.llen("test:effects") >= 40, timeout=20, message="work under way")
        workers[0].kill()
        wait_until(lambda: all(status(redis, j) == "finished" for j in ids), timeout=60, message="all jobs")
    finally:
        for w in workers:
            w.stop()
    effects = [e.decode() for e in redis.lrange("test:effects", 0, -1)]
    # every job's effect, and (a job killed after its effect but before completion aside) once
    assert set(effects) == {f"k{i}" for i in range(200)}
    extra = len(effects) - 200
    assert extra <= 8, f"{extra} effects repeated: more than the killed worker could have had in flight"


def test_sigterm_lets_running_jobs_finish(redis: Redis, redis_url: str) -> None:
    job_id = Enqueuer(redis, make_settings(redis_url)).enqueue(
        sample.sleep, {"name": "drain", "seconds": 0.5}
    )
    worker = WorkerProcess(redis_url, "--queues", "q", drain_timeout=4)
    wait_until(lambda: redis.llen("test:started:drain") == 1, timeout=15, message="start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert status(redis, job_id) == "finished"
    assert redis.smembers("rq:workers") == set()


def test_sigterm_puts_unfinished_jobs_back_without_using_an_attempt(redis: Redis, redis_url: str) -> None:
    enqueuer = Enqueuer(redis, make_settings(redis_url))
    long_job = enqueuer.enqueue(sample.sleep, {"name": "long", "seconds": 30})
    waiting = enqueuer.enqueue_many(sample.sleep, [{"name": f"w{i}", "seconds": 30} for i in range(3)])
    worker = WorkerProcess(redis_url, "--queues", "q", "--concurrency", "1", drain_timeout=0.5)
    wait_until(lambda: redis.llen("test:started:long") == 1, timeout=15, message="start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert redis.llen("test:finished:long") == 0
    assert redis.lrange("rq:queue:q", 0, -1)[0] == long_job.encode()  # back at the head
    for job_id in [long_job, *waiting]:
        assert status(redis, job_id) == "queued"
        assert int(redis.hget(f"rq:job:{job_id}", "attempt") or 0) == 0
    assert redis.zcard("rq:wip:q") == 0


def test_second_signal_stops_at_once(redis: Redis, redis_url: str) -> None:
    job_id = Enqueuer(redis, make_settings(redis_url)).enqueue(sample.sleep, {"name": "hard", "seconds": 30})
    worker = WorkerProcess(redis_url, "--queues", "q", drain_timeout=4)
    wait_until(lambda: redis.llen("test:started:hard") == 1, timeout=15, message="start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping: 1 job(s) running" in worker.output, message="the first signal to land")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=3.5) == 0  # well before the 4 s drain
    assert status(redis, job_id) == "queued"


def _enqueue_with_key(redis_url: str, barrier, results) -> None:  # runs in a child process
    redis = Redis.from_url(redis_url)
    enqueuer = Enqueuer(redis, make_settings(redis_url))
    barrier.wait()
    results.put(
        enqueuer.enqueue(sample.echo, {"text": "once"}, options=EnqueueOptions(idempotency_key="race"))
    )


def test_producer_idempotency_holds_when_processes_race(redis: Redis, redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_enqueue_with_key, args=(redis_url, barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    ids = {results.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(timeout=30)
    assert len(ids) == 1
    assert redis.llen("rq:queue:q") == 1
    assert len(redis.keys("rq:job:*")) == 1
