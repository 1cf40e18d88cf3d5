"""Progress and job logs (ctx.progress, ctx.log): kept on the job, bounded, expiring with it,
readable by `chumon job show`. Against the real Redis, with real workers (burst mode)."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from tests.apps import reporting
from tests.support import make_settings, run_burst, wait_until, worker_thread
from workers import Enqueuer, RuntimeSettings, load_job
from workers.cli import render_job
from workers.keys import Keys
from workers.reporting import MAX_LINE_BYTES, Reporter, log_line, progress_json
from workers.scripts import Scripts

KEYS = Keys()


def test_a_job_keeps_its_progress_and_log_lines(redis: Redis, settings: RuntimeSettings) -> None:
    job_id = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 3})
    run_burst(redis, reporting.registry, settings)
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.status == "finished"
    assert info.progress == {"step": 3, "of": 3}
    assert info.logs == ["step 1", "step 2", "step 3"]
    shown = render_job(info)
    assert 'progress {"step": 3, "of": 3}' in shown and "    step 3" in shown
    assert info.model_dump(mode="json")["logs"] == ["step 1", "step 2", "step 3"]


def status(redis: Redis, job_id: str) -> str | None:
    info = load_job(redis, KEYS, job_id)
    return info.status if info else None


def test_logs_survive_retries_and_keep_only_the_last_lines(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_log_lines=5)
    job_id = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 4, "fail_attempts": 1})
    with worker_thread(redis, reporting.registry, settings):
        wait_until(lambda: status(redis, job_id) == "finished", message="the job's second attempt")
    info = load_job(redis, KEYS, job_id)
    assert info is not None and info.status == "finished" and info.attempt == 2
    # attempt 1 logged steps 1-4, attempt 2 steps 1-4 again: the last 5 are kept
    assert info.logs == ["step 4", "step 1", "step 2", "step 3", "step 4"]


def test_lines_are_cut_and_stay_one_line(redis: Redis, settings: RuntimeSettings) -> None:
    long = "x" * 5000
    job_id = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 1, "line": long})
    evil = Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 1, "line": "a\nb\x1b[31m"})
    run_burst(redis, reporting.registry, settings)
    kept = load_job(redis, KEYS, job_id)
    assert kept is not None and len(kept.logs[0].encode()) <= MAX_LINE_BYTES
    assert kept.logs[0].endswith("...")
    escaped = load_job(redis, KEYS, evil)
    assert escaped is not None and escaped.logs == ["a\\x0ab\\x1b[31m 1"]
    assert len(log_line("é" * 2000).encode()) <= MAX_LINE_BYTES


def test_the_log_expires_with_its_job(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    kept = enqueuer.enqueue(reporting.steps, {"steps": 2})
    run_burst(redis, reporting.registry, settings)
    job_ttl, log_ttl = redis.ttl(KEYS.job(kept)), redis.ttl(KEYS.job_logs(kept))
    assert 0 < log_ttl <= settings.result_ttl and abs(job_ttl - log_ttl) <= 1


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), True, "half", {"big": "x" * 5000}, {"bad": {1, 2}}, None],
)
def test_progress_is_validated(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        progress_json(value)


def test_progress_takes_numbers_and_small_json() -> None:
    assert progress_json(42) == "42" and progress_json(0.5) == "0.5"
    assert json.loads(progress_json({"done": 3, "of": 10})) == {"done": 3, "of": 10}


def test_a_run_that_lost_its_job_writes_nothing(redis: Redis, settings: RuntimeSettings) -> None:
    redis.hset(KEYS.job("j1"), mapping={"status": "started", "execution": "theirs"})
    reporter = Reporter(Scripts(redis, KEYS.lua_keyspace), redis, settings, "j1", "mine", "q")
    assert reporter.progress(1) is False and reporter.log("hello") is False
    assert redis.hget(KEYS.job("j1"), "progress") is None and not redis.exists(KEYS.job_logs("j1"))
    owner = Reporter(Scripts(redis, KEYS.lua_keyspace), redis, settings, "j1", "theirs", "q")
    assert owner.progress(1) is True and owner.log("hello") is True
    assert redis.lrange(KEYS.job_logs("j1"), 0, -1) == [b"hello"]
