"""Retention per job type (keep_completed, keep_failed): the last N and/or those younger than an
age, enforced in the step that settles each job. Real Redis, real workers (burst mode)."""

from __future__ import annotations

import logging

import pytest
from redis import Redis

from tests.apps import reporting
from tests.support import run_burst, wait_until
from workers import Enqueuer, JobRegistry, Keep, RuntimeSettings, load_job
from workers.deadletter import DeadLetters
from workers.keys import Keys, dead_letter_queue
from workers.maintenance import Maintenance
from workers.scripts import Scripts

KEYS = Keys()


def ids(redis: Redis, key: str) -> set[str]:
    kind = redis.type(key)
    if kind == b"list":
        return {i.decode() for i in redis.lrange(key, 0, -1)}
    return {i.decode() for i in redis.zrange(key, 0, -1)}


def test_a_type_keeps_its_last_n_finished_jobs(redis: Redis, settings: RuntimeSettings) -> None:
    job_ids = Enqueuer(redis, settings).enqueue_many(reporting.keep3, [{"n": i} for i in range(7)])
    run_burst(redis, reporting.registry, settings, concurrency=1)
    kept = job_ids[-3:]
    assert [j for j in job_ids if redis.exists(KEYS.job(j))] == kept
    assert ids(redis, KEYS.finished("rq1")) == set(kept)
    assert ids(redis, KEYS.kept("completed", "r.keep3")) == set(kept)
    assert all(redis.ttl(KEYS.job(j)) == -1 for j in kept)  # kept by count, not by age
    info = load_job(redis, KEYS, kept[-1])
    assert info is not None and info.status == "finished" and info.result == 6


def test_a_type_keeps_finished_jobs_for_an_age(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(reporting.keep_young, {"n": 1})
    run_burst(redis, reporting.registry, settings)
    assert 0 < redis.ttl(KEYS.job(job_id)) <= 1
    assert redis.ttl(KEYS.results(job_id)) <= 1


def test_keep_zero_deletes_a_finished_job_at_once(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(reporting.forget, {"n": 1})
    run_burst(redis, reporting.registry, settings)
    assert not redis.exists(KEYS.job(job_id), KEYS.results(job_id))


def test_a_type_keeps_its_last_n_dead_letters(redis: Redis, settings: RuntimeSettings) -> None:
    job_ids = Enqueuer(redis, settings).enqueue_many(reporting.fail_keep2, [{"n": i} for i in range(5)])
    run_burst(redis, reporting.registry, settings, concurrency=1)
    kept = job_ids[-2:]
    assert [j for j in job_ids if redis.exists(KEYS.job(j))] == kept
    assert ids(redis, KEYS.queue(dead_letter_queue("rq1"))) == set(kept)
    assert ids(redis, KEYS.failed("rq1")) == set(kept)
    assert int(redis.hget(KEYS.dlq_dropped, "rq1") or 0) == 3  # counted, like the length cap's


def test_dead_letters_of_a_type_go_after_an_age(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    first = enqueuer.enqueue(reporting.fail_young, {"n": 1})
    run_burst(redis, reporting.registry, settings)
    info = load_job(redis, KEYS, first)
    assert info is not None and info.dead_lettered_at is not None
    expires = redis.zscore(KEYS.failed("rq1"), first)
    assert expires is not None and expires - redis.time()[0] <= 2  # rq's failed registry agrees
    dead_at = server_time(redis)
    wait_until(lambda: server_time(redis) > dead_at + 1.2, message="the age of 1 s to pass")
    second = enqueuer.enqueue(reporting.fail_young, {"n": 2})
    run_burst(redis, reporting.registry, settings)  # the next dead letter of the type trims
    assert ids(redis, KEYS.queue(dead_letter_queue("rq1"))) == {second}
    assert not redis.exists(KEYS.job(first)) and redis.exists(KEYS.job(second))
    # and housekeeping trims while none settles
    wait_until(lambda: server_time(redis) > dead_at + 2.5, message="the second one's age to pass")
    housekeeping = Maintenance(
        redis, KEYS, DeadLetters(redis, settings), "w", logging.getLogger("test"),
        kept=reporting.registry.kept(), scripts=Scripts(redis, KEYS.lua_keyspace),
    )  # fmt: skip
    redis.delete(KEYS.maintenance_lock)  # the burst worker did its housekeeping already
    assert housekeeping.run(server_time(redis))
    assert not redis.exists(KEYS.job(second)) and redis.llen(KEYS.queue(dead_letter_queue("rq1"))) == 0
    assert int(redis.hget(KEYS.dlq_dropped, "rq1") or 0) == 2


def server_time(redis: Redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1e6


def test_other_types_keep_the_global_settings(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 0})
    run_burst(redis, reporting.registry, settings)
    assert 0 < redis.ttl(KEYS.job(job_id)) <= settings.result_ttl
    assert not redis.keys(KEYS.kept("*", "*"))


def test_retention_options_are_checked_when_declared() -> None:
    registry = JobRegistry()
    with pytest.raises(ValueError, match="keep_completed or result_ttl"):
        registry.job("x.both", keep_completed=5, result_ttl=10)
    with pytest.raises(ValueError, match="keep_failed"):
        registry.job("x.bad", keep_failed="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count, an age"):
        Keep()
    with pytest.raises(ValueError):
        Keep(count=-1)
    assert Keep(count=0).ttl() == 0 and Keep(age=60).ttl() == 60 and Keep(count=3).ttl() == -1
