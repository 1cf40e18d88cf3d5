"""Periodic maintenance through rq-scheduler: JSON only, idempotent across restarts, visible."""

from __future__ import annotations

import json
import time
from unittest import mock

from redis import Redis

import jobs
from chumon.scheduling import PERIODIC, PeriodicScheduler
from tests.support import run_burst
from workers import Enqueuer, RuntimeSettings
from workers.codec import decode_data


def scheduler(redis: Redis, settings: RuntimeSettings) -> PeriodicScheduler:
    return PeriodicScheduler(redis, Enqueuer(redis, settings), jobs.registry, interval=1)


def scheduled(redis: Redis) -> list[bytes]:
    return redis.zrange("rq:scheduled:orders", 0, -1)


def test_registering_again_and_again_never_doubles_anything(redis: Redis, settings: RuntimeSettings) -> None:
    for _ in range(3):  # the scheduler started, restarted, restarted
        scheduler(redis, settings).register()
    assert redis.zcard("rq:scheduler:scheduled_jobs") == len(PERIODIC)
    assert len(scheduled(redis)) == len(PERIODIC)  # one next occurrence each, in the Scheduled view
    for job_id in scheduled(redis):
        name, payload = decode_data(redis.hget(f"rq:job:{job_id.decode()}", "data"))
        assert name.startswith("maintenance.") and payload == {}


def test_a_due_template_runs_its_slot_once_and_schedules_the_next(
    redis: Redis, settings: RuntimeSettings
) -> None:
    sched = scheduler(redis, settings)
    sched.register()
    slot_end = PERIODIC[0].slot(time.time()) + PERIODIC[0].every
    later = slot_end + 1  # as if the clock had reached the pre-scheduled slot
    with mock.patch("chumon.scheduling.time.time", return_value=later):
        redis.zadd("rq:scheduler:scheduled_jobs", {p.job_id: 0 for p in PERIODIC})  # due now
        sched.enqueue_jobs()
        sched.enqueue_jobs()  # a second tick (or a second scheduler) changes nothing
    occurrences = [decode_data(redis.hget(f"rq:job:{j.decode()}", "data"))[0] for j in scheduled(redis)]
    assert sorted(occurrences) == sorted(
        p.job_type for p in PERIODIC for _ in range(2)
    )  # this slot and the next
    for template in PERIODIC:
        assert redis.zscore("rq:scheduler:scheduled_jobs", template.job_id) == slot_end + template.every


def test_maintenance_jobs_run_on_chumon_workers(redis: Redis, settings: RuntimeSettings) -> None:
    sched = scheduler(redis, settings)
    for periodic in PERIODIC:
        sched.occurrence(periodic, int(time.time()) - 1)  # due
    worker = run_burst(redis, jobs.registry, settings, queues=["orders"])
    assert worker.stats["done"] == len(PERIODIC) and worker.stats["dead"] == 0


def test_nothing_the_scheduler_writes_is_a_pickle(redis: Redis, settings: RuntimeSettings) -> None:
    scheduler(redis, settings).register()
    for key in redis.scan_iter("rq:job:*"):
        fields = redis.hgetall(key)
        decode_data(fields[b"data"])  # raises BadJob on a pickle, compressed or not
        if b"meta" in fields:
            json.loads(fields[b"meta"])
