"""Schedules declared by the app, through rq-scheduler: JSON only, idempotent, visible, removable,
and no occurrence enqueued or run twice however many schedulers tick."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from croniter import croniter
from pydantic import ValidationError
from redis import Redis

import jobs
from chumon import cli
from chumon.scheduling import AppScheduler, registered, template_id
from chumon.settings import load
from tests.apps import scheduled
from tests.support import ChumonProcess, WorkerProcess, run_burst, wait_until
from workers import Control, Enqueuer, JobRegistry, RuntimeSettings
from workers.codec import decode_data
from workers.joblog import set_sink

TEMPLATES = "rq:scheduler:scheduled_jobs"


@pytest.fixture
def cli_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For tests that call cli.main, which configures the process's logging: put it back after."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    load.cache_clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    load.cache_clear()
    root.handlers[:], root.level = handlers, level
    logging.getLogger("chumon.jobs").setLevel(logging.NOTSET)
    set_sink(None)


def scheduler(
    redis: Redis, settings: RuntimeSettings, registry: JobRegistry = scheduled.registry
) -> AppScheduler:
    control = Control(redis, settings)
    return AppScheduler(redis, Enqueuer(redis, settings), registry, interval=1, control=control)


def occurrences(redis: Redis, queue: str) -> list[tuple[str, str]]:
    """(job id, occurrence key) of every job of the queue's scheduled registry."""
    found = []
    for raw in redis.zrange(f"rq:scheduled:{queue}", 0, -1):
        job_id = raw.decode()
        found.append((job_id, redis.hget(f"rq:job:{job_id}", "effect_key").decode()))
    return found


def occurrence_jobs(redis: Redis) -> Counter[str]:
    """How many jobs each occurrence key has, from every job hash of the tick type in Redis."""
    found: Counter[str] = Counter()
    for key in redis.scan_iter("rq:job:*"):
        job_type, effect_key = redis.hmget(key, "job_type", "effect_key")
        if job_type == b"sched.tick":
            found[effect_key.decode()] += 1
    return found


def test_schedules_are_validated_when_declared() -> None:
    registry = JobRegistry()
    registry.include(scheduled.registry)
    with pytest.raises(ValidationError, match="cron= or every="):
        registry.schedule("both", "sched.tick", cron="* * * * *", every=5)
    with pytest.raises(ValidationError, match="five-field"):
        registry.schedule("bad-cron", "sched.tick", cron="every monday")
    with pytest.raises(ValidationError, match="label"):
        registry.schedule("bad-args", "sched.tick", every=5, args={"label": 7})
    with pytest.raises(ValueError, match="declared twice"):
        registry.schedule("every-second", "sched.tick", every=5)


def test_registering_again_and_again_never_doubles_anything(redis: Redis, settings: RuntimeSettings) -> None:
    first = scheduler(redis, settings).register()
    assert sorted(first) == ["every-second", "five-minutes"]
    nexts = dict(redis.zrange(TEMPLATES, 0, -1, withscores=True))
    for _ in range(3):  # the scheduler restarted, again and again
        assert scheduler(redis, settings).register() == []
    assert dict(redis.zrange(TEMPLATES, 0, -1, withscores=True)) == nexts  # unchanged: next times kept
    ahead = occurrences(redis, "ticks")
    assert len(ahead) == 2  # one next occurrence per schedule, in the Scheduled view
    cron_next = nexts[template_id("five-minutes").encode()]
    assert cron_next == croniter("*/5 * * * *", datetime.fromtimestamp(cron_next - 300, UTC)).get_next(float)
    assert f"sched.tick:schedule:five-minutes@{int(cron_next)}" in {key for _, key in ahead}


def test_a_changed_schedule_replaces_the_old_one_and_its_pending_occurrence(
    redis: Redis, settings: RuntimeSettings
) -> None:
    scheduler(redis, settings).register()
    old = dict(occurrences(redis, "ticks"))
    changed = JobRegistry()
    changed.include(JobRegistry())
    changed.add(scheduled.tick)
    changed.schedule("every-second", scheduled.tick, every=7, args={"label": "slow"})
    assert scheduler(redis, settings, changed).register() == ["every-second"]
    [(_, found)] = [r for r in registered(redis) if r[0] == "every-second"]
    assert found.schedule.every == 7 and found.schedule.args == {"label": "slow"}
    old_fast = [job_id for job_id, key in old.items() if "every-second" in key]
    assert [redis.hget(f"rq:job:{j}", "status") for j in old_fast] == [b"canceled"]


def test_a_due_template_runs_its_occurrence_once_and_schedules_the_next(
    redis: Redis, settings: RuntimeSettings
) -> None:
    sched = scheduler(redis, settings)
    sched.register()
    now = time.time()
    redis.zadd(TEMPLATES, {template_id("every-second"): now - 0.5})  # due (as if the clock had moved)
    fired = sched.enqueue_jobs()
    assert len(fired) == 1
    assert sched.enqueue_jobs() == []  # a second tick (or a second scheduler): nothing is due any more
    sched.fire(template_id("every-second"), now - 0.5, now)  # even one that fires it again changes nothing
    due_at = int(now - 0.5)
    keys = occurrence_jobs(redis)
    assert keys[f"sched.tick:schedule:every-second@{due_at}"] == 1
    assert max(keys.values()) == 1  # no occurrence twice
    assert redis.zscore(TEMPLATES, template_id("every-second")) > now - 0.5


def test_maintenance_schedules_are_the_order_apps_own(redis: Redis, settings: RuntimeSettings) -> None:
    names = {s.name: s for s in jobs.registry.schedules()}
    assert {"release-stale-holds", "housekeeping"} <= set(names)
    sched = scheduler(redis, settings, jobs.registry)
    redis.zadd(TEMPLATES, {"chumon-periodic-housekeeping": 0})  # a template of an earlier version
    sched.register()
    assert not redis.zscore(TEMPLATES, "chumon-periodic-housekeeping")
    for name in ("release-stale-holds", "housekeeping"):
        sched.occurrence(names[name], int(time.time()) - 1)  # due now
    worker = run_burst(redis, jobs.registry, settings, queues=["orders"])
    assert worker.stats["done"] == 2 and worker.stats["dead"] == 0


def test_nothing_the_scheduler_writes_is_a_pickle(redis: Redis, settings: RuntimeSettings) -> None:
    scheduler(redis, settings, jobs.registry).register()
    scheduler(redis, settings).register()
    for key in redis.scan_iter("rq:job:*"):
        fields = redis.hgetall(key)
        decode_data(fields[b"data"])  # raises BadJob on a pickle, compressed or not
        if b"meta" in fields:
            json.loads(fields[b"meta"])


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if "--json" in argv and code == 0 else out, err


def test_schedules_are_listed_and_removed_from_the_command_line(
    redis: Redis, settings: RuntimeSettings, capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    scheduler(redis, settings).register()
    code, rows, _ = cli_run(capsys, "schedules", "list", "--json")
    assert code == 0 and [r["name"] for r in rows] == ["every-second", "five-minutes"]
    cron = rows[1]
    assert (cron["cron"], cron["job_type"], cron["rule"]) == ("*/5 * * * *", "sched.tick", "cron */5 * * * *")
    assert cron["queue"] == "ticks"  # the job type's queue: the schedule names none
    assert redis.hget(f"rq:job:{cron['next_job']}", "status") == b"scheduled"
    code, text, _ = cli_run(capsys, "schedules", "list")
    assert code == 0 and "every 1 s" in text and "five-minutes" in text
    code, _, _ = cli_run(capsys, "schedules", "remove", "five-minutes")
    assert code == 0
    assert redis.hget(f"rq:job:{cron['next_job']}", "status") == b"canceled"  # its pending run too
    assert [name for name, _ in registered(redis)] == ["every-second"]
    code, _, err = cli_run(capsys, "schedules", "remove", "five-minutes")
    assert code == 1 and err.count("\n") == 1 and "no schedule" in err


def test_two_schedulers_never_enqueue_or_run_one_occurrence_twice(redis: Redis, redis_url: str) -> None:
    """Two scheduler processes ticking fast, one every-second schedule, a worker running it: every
    occurrence job and every run is counted from Redis's own records."""
    app = {"app": "tests.apps.scheduled:registry"}
    schedulers = [ChumonProcess(redis_url, "scheduler", "--interval", "0.1", **app) for _ in range(2)]
    worker = WorkerProcess(redis_url, "--queues", "ticks", app=app["app"])
    try:
        wait_until(lambda: redis.llen(scheduled.RUNS) >= 6, timeout=60, message="six runs of the schedule")
    finally:
        for proc in schedulers:
            proc.stop()

    def every_fast_job_ran() -> bool:
        fast_jobs = sum(n for key, n in occurrence_jobs(redis).items() if "every-second" in key)
        return bool(redis.llen(scheduled.RUNS) >= fast_jobs)

    wait_until(every_fast_job_ran, timeout=30, message="the occurrences enqueued ahead to run")
    worker.stop()
    jobs_by_occurrence = occurrence_jobs(redis)
    runs = Counter(raw.decode() for raw in redis.lrange(scheduled.RUNS, 0, -1))
    fast = {k: n for k, n in jobs_by_occurrence.items() if "every-second" in k}
    assert len(fast) >= 6 and max(fast.values()) == 1, jobs_by_occurrence  # one job per occurrence
    assert max(runs.values()) == 1, runs  # one run per occurrence
    # the five-minute cron fires too when the run spans a multiple of 300 s: only the
    # every-second schedule's occurrences must be consecutive
    slots = sorted(int(k.rsplit("@", 1)[1]) for k in runs if "every-second" in k)
    assert len(slots) >= 6 and slots == list(range(slots[0], slots[0] + len(slots)))  # none skipped


def test_a_schedule_of_a_missing_job_type_is_refused_at_start(
    capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    code = cli.main(["scheduler", "--app", "tests.apps.scheduled:broken", "--burst"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no.such.type" in err
