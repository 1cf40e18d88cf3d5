"""The worker against a real Redis: runs, retries, dead letters, idempotency, bad data."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from chumon.dashboard.reader import Reader
from tests.apps import sample
from tests.support import run_burst, wait_until, worker_thread
from workers import EnqueueOptions, Enqueuer, RuntimeSettings, load_job
from workers.codec import parse_iso
from workers.deadletter import DeadLetters
from workers.execution import Outcome
from workers.keys import Keys
from workers.listener import Listener
from workers.settle import Settler

KEYS = Keys()


def test_jobs_run_and_results_are_readable_by_rq(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    ids = enqueuer.enqueue_many(sample.echo, [{"text": f"m{i}"} for i in range(20)])
    worker = run_burst(redis, sample.registry, settings, concurrency=4)
    assert worker.stats["done"] == 20
    assert sorted(x.decode() for x in redis.lrange("test:echo", 0, -1)) == sorted(f"m{i}" for i in range(20))
    job = Job.fetch(ids[3], connection=redis, serializer=JSONSerializer)
    assert job.get_status() == "finished"
    assert job.return_value() == {"text": "m3", "attempt": 1}
    assert redis.zcard("rq:finished:q") == 20 and redis.zcard("rq:wip:q") == 0


def test_retries_follow_the_backoff_schedule(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.flaky, {"name": "f", "failures": 3})
    with worker_thread(redis, sample.registry, settings):
        info = wait_until(
            lambda: (i := load_job(redis, KEYS, job_id)) and i.status == "finished" and i, message="flaky job"
        )
    assert info.attempt == 4 and info.result == 4
    assert [f["attempt"] for f in info.failures] == [1, 2, 3]
    starts = [float(t) for t in redis.lrange("test:attempts:f", 0, -1)]
    # the policy of t.flaky: base 0.1, factor 2, jitter 0.5 -> delay n within [0.05, 0.1] * 2**(n-1)
    meta = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta
    assert meta["failures"] == info.failures
    for n, failure in enumerate(info.failures, start=1):
        raw = 0.1 * 2 ** (n - 1)
        ended = parse_iso(failure["ended_at"]).timestamp()
        # the next attempt never starts before its scheduled time
        assert starts[n] >= ended + raw * 0.5 - 0.002
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[2] > gaps[0]  # the schedule grows


def test_next_run_time_and_attempt_are_on_the_job(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.gated, {"name": "g"})
    with worker_thread(
        redis,
        sample.registry,
        settings.model_copy(update={"retry": settings.retry.model_copy(update={"base": 30.0, "cap": 30.0})}),
    ):
        info = wait_until(
            lambda: (i := load_job(redis, KEYS, job_id)) and i.status == "scheduled" and i, message="retry"
        )
    assert info.attempt == 1 and info.max_attempts == 3 and info.last_error.startswith("ConnectionError")
    due = parse_iso(info.next_run_at).timestamp()
    # the due time is decided by the server when the failure is settled, a moment after it was shown
    assert redis.zscore("rq:scheduled:q", job_id) == __import__("pytest").approx(due, abs=0.5)
    meta = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta
    assert meta["next_run_at"] == info.next_run_at and meta["attempt"] == 1


def test_retryable_error_may_set_its_own_delay(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.retry_later, {"text": "x"})
    with worker_thread(redis, sample.registry, settings):
        info = wait_until(
            lambda: (i := load_job(redis, KEYS, job_id)) and i.status == "finished" and i, message="retry"
        )
    assert info.result == "second time lucky"  # the policy's 60 s base was replaced by 0.2 s


def test_exhausted_attempts_dead_letter_with_history_and_hook(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.always_fails, {"text": "x"})
    with worker_thread(redis, sample.registry, settings, queues=["q", "hooks"]):
        wait_until(lambda: redis.llen("test:dead_letters") == 1, message="dead-letter hook")
    info = load_job(redis, KEYS, job_id)
    assert info.status == "failed" and info.attempt == 3
    assert [f["exc_type"] for f in info.failures] == ["ConnectionError"] * 3
    assert all("Traceback" in f["traceback"] for f in info.failures)
    assert info.dead_letter_reason == "attempts exhausted (3 of 3)"
    assert redis.lrange("rq:queue:q.dlq", 0, -1) == [job_id.encode()]
    assert b"rq:queue:q.dlq" in redis.smembers("rq:queues")
    assert redis.zscore("rq:failed:q", job_id) is not None
    notice = json.loads(redis.lindex("test:dead_letters", 0))
    assert (
        notice["job_id"] == job_id and notice["payload"] == {"text": "x", "n": 0} and notice["attempts"] == 3
    )
    rq_job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert "ConnectionError" in rq_job.latest_result().exc_string


def test_permanent_error_dead_letters_at_once(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.permanent, {"text": "card 4000"})
    run_burst(redis, sample.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info.attempt == 1 and info.dead_letter_reason == "permanent error"
    assert DeadLetters(redis, settings).ids("q") == [job_id]


def test_requeue_from_dead_letters_gets_a_fresh_budget(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.gated, {"name": "r"})
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: DeadLetters(redis, settings).ids("q") == [job_id], message="dead letter")
        redis.set("test:gate:r", 1)
        assert DeadLetters(redis, settings).requeue([job_id]) == [job_id]
        info = wait_until(
            lambda: (i := load_job(redis, KEYS, job_id)) and i.status == "finished" and i,
            message="requeued run",
        )
    assert info.attempt == 1 and info.result == "passed"
    assert DeadLetters(redis, settings).ids("q") == []
    assert redis.zscore("rq:failed:q", job_id) is None
    assert len(info.failures) == 3  # the history of the first round is kept


def test_purge_and_cap_count_what_they_remove(redis: Redis, settings: RuntimeSettings) -> None:
    capped = settings.model_copy(update={"dlq_max_length": 3})
    Enqueuer(redis, capped).enqueue_many(sample.permanent, [{"text": str(i)} for i in range(5)])
    run_burst(redis, sample.registry, capped)
    dead = DeadLetters(redis, capped)
    assert dead.count("q") == 3 and dead.dropped() == {"q": 2}
    assert dead.purge("q", older_than=3600) == 0
    assert dead.purge("q") == 3 and dead.count("q") == 0


def test_invalid_payload_in_redis_is_dead_lettered_without_retry(
    redis: Redis, settings: RuntimeSettings
) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "fine"})
    redis.hset(f"rq:job:{job_id}", "data", json.dumps(["t.echo", None, [{"text": ""}], {}]))
    worker = run_burst(redis, sample.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info.status == "failed" and info.attempt == 1 and worker.stats["dead"] == 1
    assert "text" in info.failures[0]["message"] and info.failures[0]["exc_type"] == "InvalidPayload"


def test_pickled_and_garbage_jobs_are_dead_lettered_and_the_worker_serves_on(
    redis: Redis, settings: RuntimeSettings
) -> None:
    pickled = Queue("q", connection=redis).enqueue(
        "tests.apps.sample.echo", "whatever"
    )  # rq's default: pickle
    redis.hset("rq:job:garbage", mapping={"data": b"\x00\xffnot json", "origin": "q", "status": "queued"})
    redis.rpush("rq:queue:q", "garbage")
    redis.set("rq:job:notahash", "x")
    redis.rpush("rq:queue:q", "notahash", "no-such-job")
    good = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "still served"})
    worker = run_burst(redis, sample.registry, settings)
    assert load_job(redis, KEYS, good).status == "finished"
    dead = DeadLetters(redis, settings).entries("q")
    reasons = {d.id: d.failures[0]["message"] for d in dead}
    assert "pickle" in reasons[pickled.id] and "never unpickles" in reasons[pickled.id]
    assert "not JSON" in reasons["garbage"]
    assert all(d.attempt == 1 for d in dead)
    assert worker.stats["stale"] == 1  # an id with no key
    assert worker.stats["quarantined"] == 1  # an id whose key is no job hash
    ((_id, entry),) = redis.xrange("chumon:quarantine")
    assert entry[b"id"] == b"notahash" and b"not a hash" in entry[b"reason"]


def test_a_run_whose_outcome_cannot_be_planned_is_dead_lettered_and_the_worker_serves_on(
    redis: Redis, settings: RuntimeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours while planning one outcome (here: building its done item raises) must end
    that run as a dead letter with the reason, not leave the outcome pending forever."""
    enqueuer = Enqueuer(redis, settings)
    cursed = enqueuer.enqueue(sample.echo, {"text": "cursed"})
    fine = enqueuer.enqueue_many(sample.echo, [{"text": f"fine {i}"} for i in range(5)])
    real = Settler.done_item

    def done_item(self: Settler, outcome: Outcome) -> list[Any]:
        if outcome.claimed.job_id == cursed:
            raise KeyError("a bug of ours")
        return real(self, outcome)

    monkeypatch.setattr(Settler, "done_item", done_item)
    worker = run_burst(redis, sample.registry, settings, concurrency=4)
    assert [load_job(redis, KEYS, i).status for i in fine] == ["finished"] * 5
    (dead,) = DeadLetters(redis, settings).entries("q")
    assert dead.id == cursed and dead.attempt == 1
    assert "the runtime could not settle this run: KeyError" in (dead.dead_letter_reason or "")
    assert worker.stats["done"] == 5 and worker.stats["dead"] == 1
    assert redis.zcard("rq:wip:q") == 0


def test_a_burst_worker_runs_the_hook_job_its_own_last_settle_enqueued(
    redis: Redis, settings: RuntimeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settle that dead-letters the last job claims nothing (nothing was left to claim) but
    puts a hook job on a queue the worker serves. With no wake-up from the listener (here it
    never starts: the slowest it can be), the burst must still run that job before it stops."""
    monkeypatch.setattr(Listener, "start", lambda self: None)
    job_id = Enqueuer(redis, settings).enqueue(sample.permanent, {"text": "last"})
    run_burst(redis, sample.registry, settings, queues=["q", "hooks"], concurrency=1)
    assert DeadLetters(redis, settings).ids("q") == [job_id]
    assert redis.llen("test:dead_letters") == 1 and redis.llen("rq:queue:hooks") == 0


def test_unknown_job_type_is_retried_then_dead_lettered_through_the_hook(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """A rolling deploy: an old worker meets a new job type. It may be known soon, so it is retried
    with backoff like any failure; once attempts run out, the registry's hook hears of it."""
    queue = Queue("q", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("some.module.function", kwargs={"a": 1})
    with worker_thread(redis, sample.registry, settings, queues=["q", "hooks"]):
        wait_until(lambda: redis.llen("test:dead_letters") == 1, message="the dead-letter hook")
    info = load_job(redis, KEYS, job.id)
    assert info.status == "failed" and info.attempt == settings.retry.max_attempts
    assert [f["exc_type"] for f in info.failures] == ["UnknownJobType"] * settings.retry.max_attempts
    assert "no job type named 'some.module.function'" in info.failures[0]["message"]
    notice = json.loads(redis.lindex("test:dead_letters", 0))
    assert notice["job_id"] == job.id and notice["payload"] == {"a": 1} and notice["job_type"] is None


def test_same_effect_key_runs_once_and_duplicates_get_its_result(
    redis: Redis, settings: RuntimeSettings
) -> None:
    enqueuer = Enqueuer(redis, settings)
    first = enqueuer.enqueue(sample.keyed, {"key": "k1"})
    worker = run_burst(redis, sample.registry, settings)
    second = enqueuer.enqueue(sample.keyed, {"key": "k1"})
    worker = run_burst(redis, sample.registry, settings)
    assert redis.lrange("test:effects", 0, -1) == [b"k1"]
    assert worker.stats["duplicate"] == 1
    assert load_job(redis, KEYS, second).result == load_job(redis, KEYS, first).result == 1


def test_a_job_delivered_twice_has_its_effect_once(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(sample.keyed, {"key": "twice", "sleep": 0.3})
    redis.rpush("rq:queue:q", job_id)  # a second delivery of the same job
    with worker_thread(redis, sample.registry, settings, concurrency=4):
        wait_until(lambda: load_job(redis, KEYS, job_id).status == "finished", message="job")
    assert redis.lrange("test:effects", 0, -1) == [b"twice"]


def test_live_claim_defers_a_concurrent_duplicate(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    first = enqueuer.enqueue(sample.keyed, {"key": "slow", "sleep": 0.6})
    second = enqueuer.enqueue(sample.keyed, {"key": "slow", "sleep": 0.6})
    with worker_thread(redis, sample.registry, settings, concurrency=4) as worker:
        wait_until(
            lambda: {load_job(redis, KEYS, j).status for j in (first, second)} == {"finished"},
            message="both jobs",
        )
    assert redis.lrange("test:keyed:started", 0, -1) == [b"slow"]  # the duplicate never started
    assert redis.lrange("test:effects", 0, -1) == [b"slow"]
    assert worker.stats["deferred"] >= 1 and worker.stats["duplicate"] == 1
    assert int(redis.hget(f"rq:job:{second}", "deferred")) >= 1


def test_failed_run_frees_its_effect_key_for_the_retry(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(
        sample.gated, {"name": "k"}, options=EnqueueOptions(idempotency_key="gate-k")
    )
    with worker_thread(redis, sample.registry, settings):
        wait_until(lambda: load_job(redis, KEYS, job_id).status == "scheduled", message="first failure")
        assert redis.get("chumon:idem:effect:t.gated:gate-k") is None
        redis.set("test:gate:k", 1)
        wait_until(lambda: load_job(redis, KEYS, job_id).status == "finished", message="retry")
    assert redis.get("chumon:idem:effect:t.gated:gate-k").startswith(b"d")


def test_time_limit_counts_as_a_failed_attempt(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(
        sample.sleep, {"name": "slow", "seconds": 5}, options=EnqueueOptions(timeout=1)
    )
    with worker_thread(redis, sample.registry, settings) as worker:
        info = wait_until(
            lambda: (i := load_job(redis, KEYS, job_id)) and i.status == "failed" and i, message="timeouts"
        )
    assert [f["exc_type"] for f in info.failures] == ["JobTimeout"] * 3
    assert redis.llen("test:finished:slow") == 0  # the exception stopped the job mid-way
    assert worker.runners.abandoned == 0


def test_stuck_job_thread_is_abandoned_and_replaced(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    stuck = enqueuer.enqueue(sample.stuck, {"name": "s", "seconds": 3}, options=EnqueueOptions(retry=None))
    with worker_thread(redis, sample.registry, settings, concurrency=1) as worker:
        wait_until(lambda: load_job(redis, KEYS, stuck).attempt >= 1, message="start")
        wait_until(lambda: worker.runners.abandoned >= 1, message="abandon")
        after = enqueuer.enqueue(sample.echo, {"text": "after"})
        wait_until(lambda: load_job(redis, KEYS, after).status == "finished", message="slot replaced")
    assert load_job(redis, KEYS, stuck).failures[0]["exc_type"] == "JobTimeout"


def test_a_jobs_times_are_its_handlers_own_not_its_batchs(redis: Redis, settings: RuntimeSettings) -> None:
    """Jobs claimed in one batch by a one-slot worker run one after the other: each job's
    started_at and ended_at are when its handler began and returned (not the claim's time, nor
    when the worker got round to recording the outcome), so they never overlap, and each span
    covers the handler's nap."""
    ids = Enqueuer(redis, settings).enqueue_many(
        sample.nap, [{"name": f"n{i}", "seconds": 0.2} for i in range(3)]
    )
    worker = run_burst(redis, sample.registry, settings, concurrency=1)
    assert worker.stats["done"] == 3
    spans = []
    for job_id in ids:
        started, ended = redis.hmget(KEYS.job(job_id), "started_at", "ended_at")
        spans.append((parse_iso(started.decode()).timestamp(), parse_iso(ended.decode()).timestamp()))
    spans.sort()
    for begin, end in spans:
        assert end - begin >= 0.2  # the handler's nap is inside its span
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert end <= begin  # one slot: a job's span ends before the next one's begins
    assert all(redis.hget(KEYS.job(i), "execution") in (None, b"") for i in ids)  # no run owns them


def test_a_result_key_holding_garbage_is_replaced_by_the_jobs_result(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """rq:results:<id> is the job's own: something else in its place gives way to the result."""
    job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "kept"})
    redis.set(f"rq:results:{job_id}", "not a stream")
    worker = run_burst(redis, sample.registry, settings)
    assert worker.stats["done"] == 1
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == "finished" and job.return_value() == {"text": "kept", "attempt": 1}
    assert redis.xlen(f"rq:results:{job_id}") == 1 and redis.ttl(f"rq:results:{job_id}") > 0


def test_results_kept_in_the_job_hash_cost_no_stream(redis: Redis, settings: RuntimeSettings) -> None:
    """CHUMON_RESULT_STORE=hash: a return value lands on the job hash (return_value), no result
    stream is created (Redis allocates about 4.7 KB for each), and chumon's readers show it; a
    duplicate of a done effect key gets the stored result the same way."""
    hashed = settings.model_copy(update={"result_store": "hash"})
    enqueuer = Enqueuer(redis, hashed)
    ids = enqueuer.enqueue_many(sample.echo, [{"text": f"m{i}"} for i in range(5)])
    first = enqueuer.enqueue(sample.keyed, {"key": "once"})
    worker = run_burst(redis, sample.registry, hashed)
    again = enqueuer.enqueue(sample.keyed, {"key": "once"})  # finished as a duplicate of the first
    run_burst(redis, sample.registry, hashed)
    assert worker.stats["done"] == 6
    assert not list(redis.scan_iter("rq:results:*"))  # no stream at all
    info = load_job(redis, KEYS, ids[2])
    assert info is not None and info.result == {"text": "m2", "attempt": 1}
    shown = Reader(redis, KEYS).job(ids[2])  # the dashboard's view of it
    assert shown is not None and shown.result() == {"text": "m2", "attempt": 1}
    assert load_job(redis, KEYS, first).result == load_job(redis, KEYS, again).result == 1
    with_stream = Enqueuer(redis, settings).enqueue(sample.echo, {"text": "streamed"})
    run_burst(redis, sample.registry, settings)
    assert redis.exists(f"rq:results:{with_stream}")  # the default: rq's result stream
    assert redis.memory_usage(KEYS.job(ids[2])) < 1000 < redis.memory_usage(f"rq:results:{with_stream}")


def test_an_idle_worker_sleeps_until_its_next_timer(redis: Redis, settings: RuntimeSettings) -> None:
    """Between jobs the loop sleeps until its first timer (recovery, housekeeping, a job due, a
    running job's deadline). A timer that no task moves on (the relay's, which only a cluster
    worker has) kept it waking every millisecond: 4 % of a core for an idle worker."""
    import time

    with worker_thread(redis, sample.registry, settings) as worker:
        wait_until(lambda: worker.heartbeat.is_alive(), timeout=10, message="the worker started")
        waits: list[float] = []
        measured = worker._wait_time

        def noted(now: float) -> float:
            waits.append(measured(now))
            return waits[-1]

        worker._wait_time = noted  # type: ignore[method-assign]
        time.sleep(0.5)  # idle: no job queued
    floor = [w for w in waits if w <= 0.001]
    assert waits and len(floor) <= 2, (len(waits), len(floor))  # with the stuck timer: ~450 of ~450
