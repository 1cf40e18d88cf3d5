"""Real worker processes against a Redis of the test's own that is killed, restarted and frozen.

The promise: a worker never dies of the world around it, and no job is lost or run twice
because of an outage. Each test counts, from Redis, every start and finish of its jobs.
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest
from redis import Redis

from tests.apps import sample
from tests.redisproc import RedisServer
from tests.support import ChumonProcess, WorkerProcess, make_settings, wait_until
from workers import EnqueueOptions, Enqueuer, load_job
from workers.keys import Keys

pytestmark = pytest.mark.e2e
KEYS = Keys()


@pytest.fixture
def server() -> RedisServer:
    with RedisServer() as srv:
        yield srv


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


def alive(proc: ChumonProcess) -> bool:
    return proc.proc.poll() is None


def test_a_worker_rides_out_a_redis_restart_mid_job(server: RedisServer) -> None:
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    job_id = enqueuer.enqueue(sample.nap, {"name": "through", "seconds": 1.5})
    worker = WorkerProcess(server.url, "--queues", "q", "--concurrency", "2")
    try:
        wait_until(lambda: redis.llen("test:started:through") == 1, timeout=30, message="the job to start")
        server.kill()  # the job finishes while Redis is down: its outcome must wait, not vanish
        time.sleep(3)  # an outage of a few seconds (the scenario under test, not a wait for a condition)
        assert alive(worker), worker.output
        server.start()
        redis = server.client()
        wait_until(lambda: status(redis, job_id) == "finished", timeout=30, message="the job to settle")
        after = enqueuer.__class__(redis, make_settings(server.url)).enqueue(sample.echo, {"text": "after"})
        wait_until(
            lambda: status(redis, after) == "finished", timeout=30, message="new work after the outage"
        )
        assert alive(worker)
        assert redis.llen("test:started:through") == 1 and load_job(redis, KEYS, job_id).result == "through"
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.output
    assert "redis while serving" in worker.output and "redis answers again" in worker.output


def test_sigterm_during_an_outage_leaves_the_run_for_recovery(server: RedisServer) -> None:
    redis = server.client()
    job_id = Enqueuer(redis, make_settings(server.url)).enqueue(sample.sleep, {"name": "kept", "seconds": 2})
    first = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1", drain_timeout=0.3)
    wait_until(lambda: redis.llen("test:started:kept") == 1, timeout=30, message="the job to start")
    wait_until(lambda: load_job(redis, KEYS, job_id).attempt == 1, timeout=10, message="its start recorded")
    server.kill()
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, first.output
    assert "left for recovery" in first.output
    server.start()
    redis = server.client()
    second = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1")
    try:
        wait_until(lambda: status(redis, job_id) == "finished", timeout=60, message="the run to be recovered")
    finally:
        second.stop()
    info = load_job(redis, KEYS, job_id)
    assert info.attempt == 2 and info.failures[0]["exc_type"] == "WorkerLost"
    assert redis.zcard("rq:wip:q") == 0 and redis.llen("test:finished:kept") == 1


def test_a_frozen_redis_does_not_make_live_workers_look_dead(server: RedisServer) -> None:
    """SIGSTOP longer than worker_ttl: every heartbeat is late, nobody may be presumed dead."""
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    jobs = [enqueuer.enqueue(sample.sleep, {"name": f"f{i}", "seconds": 3}) for i in range(2)]
    workers = [WorkerProcess(server.url, "--queues", "q", "--concurrency", "1") for _ in range(2)]
    try:
        wait_until(
            lambda: all(redis.llen(f"test:started:f{i}") == 1 for i in range(2)),
            timeout=30,
            message="both starts",
        )
        server.freeze()
        time.sleep(7)  # the stall under test: longer than worker_ttl (2 s here) and the socket time-out (5 s)
        server.thaw()
        wait_until(lambda: all(status(redis, j) == "finished" for j in jobs), timeout=60, message="both jobs")
        assert all(alive(w) for w in workers)
    finally:
        for worker in workers:
            worker.stop()
    for i in range(2):
        assert redis.llen(f"test:started:f{i}") == 1, f"job f{i} ran twice"
    assert all("recovered" not in w.output.lower() for w in workers), workers[0].output + workers[1].output
    assert all(load_job(redis, KEYS, j).attempt == 1 for j in jobs)


def test_a_prefetched_job_costs_no_attempt_when_its_worker_dies(server: RedisServer) -> None:
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    running = enqueuer.enqueue(sample.sleep, {"name": "running", "seconds": 30})
    waiting = enqueuer.enqueue(sample.once, {"text": "in the buffer"})  # max_attempts=1
    victim = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1")
    wait_until(lambda: redis.llen("test:started:running") == 1, timeout=30, message="the first job to start")
    wait_until(lambda: load_job(redis, KEYS, running).attempt == 1, timeout=10, message="its start recorded")
    wait_until(lambda: status(redis, waiting) == "started", timeout=10, message="the second to be prefetched")
    victim.kill()
    rescuer = WorkerProcess(server.url, "--queues", "q", "--concurrency", "2")
    try:
        wait_until(
            lambda: status(redis, waiting) == "finished", timeout=60, message="the prefetched job to run"
        )
    finally:
        rescuer.stop()
    assert load_job(redis, KEYS, waiting).attempt == 1  # its only attempt was the one that ran
    assert load_job(redis, KEYS, running).failures[0]["exc_type"] == "WorkerLost"


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs libfaketime (apt-get install faketime)")
@pytest.mark.parametrize("skew", ["+30s", "-30s"])
def test_a_worker_whose_clock_is_off_presumes_nobody_dead(server: RedisServer, skew: str) -> None:
    """One worker's clock runs 30 s off (libfaketime, from outside): liveness and schedules use
    Redis's clock, so it neither recovers its healthy peer's runs nor runs a job early."""
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    jobs = [enqueuer.enqueue(sample.sleep, {"name": f"s{i}", "seconds": 3}) for i in range(2)]
    later = enqueuer.enqueue(sample.echo, {"text": "later"}, options=EnqueueOptions(delay=20))
    honest = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1")
    # the wall clock only, as a drifting host has it: libfaketime's monotonic clock would also
    # move the deadlines of every timed wait, which no real host does
    wrapper = ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", skew]
    skewed = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1", wrapper=wrapper)
    try:
        wait_until(lambda: all(status(redis, j) == "finished" for j in jobs), timeout=60, message="both jobs")
        time.sleep(1)  # recovery scans every 0.3 s in the tests' settings: give them rounds to misjudge
        assert status(redis, later) == "scheduled"
    finally:
        honest.stop()
        skewed.stop()
    for i in range(2):
        assert redis.llen(f"test:started:s{i}") == 1, (
            f"job s{i} started twice:\n{honest.output}\n{skewed.output}"
        )
    assert "recovered" not in (honest.output + skewed.output).lower()


def test_the_scheduler_rides_out_a_redis_restart(server: RedisServer) -> None:
    scheduler = ChumonProcess(server.url, "scheduler", "--interval", "0.2")
    try:
        redis = server.client()
        wait_until(lambda: redis.zcard("rq:scheduled:orders") >= 2, timeout=30, message="occurrences")
        server.kill()
        time.sleep(2)  # the outage under test
        assert alive(scheduler), scheduler.output
        server.start()
        wait_until(lambda: server.client().ping(), timeout=10, message="redis back")
        time.sleep(1)  # rounds of the scheduler against the restarted server
        assert alive(scheduler), scheduler.output
    finally:
        scheduler.stop()
    assert scheduler.proc.returncode == 0, scheduler.output


def test_the_metrics_exporter_rides_out_a_redis_outage(server: RedisServer) -> None:
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    from chumon.devredis import free_port

    port = free_port()
    exporter = ChumonProcess(server.url, "metrics", "--port", str(port))

    def scrape() -> int:
        try:
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                return int(reply.status)
        except HTTPError as exc:
            return int(exc.code)
        except (URLError, OSError):
            return 0

    try:
        wait_until(lambda: scrape() == 200, timeout=30, message="the exporter")
        server.kill()
        scrape()  # a scrape while Redis is down fails; the process must not
        assert alive(exporter), exporter.output
        server.start()
        wait_until(lambda: scrape() == 200, timeout=30, message="scrapes after the outage")
    finally:
        exporter.stop()


def test_a_black_holed_connection_times_out_and_the_worker_comes_back(server: RedisServer) -> None:
    """No RST, no reply: only the socket time-out notices. The cut-off worker's run is recovered by
    its peer; the cut-off worker does not hang, and serves again once the path is back."""
    from tests.blackhole import BlackholeProxy

    proxy = BlackholeProxy(server.port)
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    job_id = enqueuer.enqueue(sample.nap, {"name": "cut", "seconds": 4})
    cut = WorkerProcess(proxy.url, "--queues", "q", "--concurrency", "1", redis__socket_timeout=1)
    peer = None
    try:
        wait_until(lambda: redis.llen("test:started:cut") == 1, timeout=30, message="the job to start")
        wait_until(
            lambda: load_job(redis, KEYS, job_id).attempt == 1, timeout=10, message="its start recorded"
        )
        proxy.blackhole()
        peer = WorkerProcess(server.url, "--queues", "q", "--concurrency", "1")
        wait_until(lambda: status(redis, job_id) == "finished", timeout=60, message="the peer to recover it")
        assert load_job(redis, KEYS, job_id).failures[0]["exc_type"] == "WorkerLost"
        assert alive(cut), cut.output
        proxy.restore()
        peer.stop()
        after = enqueuer.enqueue(sample.echo, {"text": "after the cut"})
        wait_until(
            lambda: status(redis, after) == "finished", timeout=60, message="the cut-off worker to serve"
        )
    finally:
        cut.stop()
        if peer is not None:
            peer.stop()
        proxy.close()
    assert "TimeoutError" in cut.output and "redis answers again" in cut.output, cut.output


def oom_errors(redis: Redis) -> int:
    """Commands Redis refused for lack of memory so far (INFO errorstats, Redis 6.2 and later)."""
    return int(redis.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_a_full_redis_stalls_work_without_losing_or_doubling_it(server: RedisServer) -> None:
    """Redis at maxmemory (noeviction) refuses every write for longer than worker_ttl while jobs
    run. Nobody dies of it; when memory is freed every job finishes, each effect once, nothing
    in a dead-letter queue."""
    redis = server.client()
    enqueuer = Enqueuer(redis, make_settings(server.url))
    total = 120
    ids = enqueuer.enqueue_many(sample.tally, [{"n": n, "ms": 20} for n in range(total)])
    workers = [WorkerProcess(server.url, "--queues", "q", "--concurrency", "4") for _ in range(2)]
    try:
        wait_until(lambda: redis.zcard("rq:finished:q") >= 10, timeout=30, message="work under way")
        redis.config_set("maxmemory-policy", "noeviction")
        redis.config_set("maxmemory", "1")  # every command that may grow memory is refused
        refused = oom_errors(redis)
        wait_until(lambda: oom_errors(redis) >= refused + 20, timeout=30, message="writes refused")
        stalled = redis.zcard("rq:finished:q")
        time.sleep(3)  # longer than worker_ttl (2 s): the scenario under test, not a wait
        assert all(alive(w) for w in workers), [w.output for w in workers]
        assert redis.zcard("rq:finished:q") == stalled  # nothing settles while Redis refuses writes
        redis.config_set("maxmemory", "0")
        wait_until(
            lambda: redis.zcard("rq:finished:q") == total, timeout=60, message="every job finished after"
        )
        assert all(alive(w) for w in workers)
    finally:
        for worker in workers:
            worker.stop()
    assert all(w.proc.returncode == 0 for w in workers), [w.output for w in workers]
    effects = redis.hgetall("chaos:effects")
    assert sorted(int(n) for n in effects) == list(range(total))
    assert set(effects.values()) == {b"1"}, {k: v for k, v in effects.items() if v != b"1"}
    jobs = [load_job(redis, KEYS, job_id) for job_id in ids]
    assert [job.status for job in jobs] == ["finished"] * total
    # a run whose handler's own write was refused is retried; no live worker is presumed dead
    assert not [f for job in jobs for f in job.failures if f["exc_type"] == "WorkerLost"]
    assert redis.llen("rq:queue:q:dlq") == 0 and redis.zcard("rq:failed:q") == 0
    assert any("OutOfMemoryError" in w.output for w in workers)
