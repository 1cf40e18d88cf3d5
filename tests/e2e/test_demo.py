"""``make demo`` on a Redis that holds someone's data: it works in a database of its own,
reports only its own orders and dead letters, fits 100 columns, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from redis import Redis

from chumon.demo import url_with_db
from tests.support import ROOT
from workers import Enqueuer, JobRegistry, Permanent, RuntimeSettings, Worker

pytestmark = pytest.mark.e2e


class Nothing(BaseModel):
    pass


def someone_elses_dead_letter(redis: Redis, redis_url: str) -> str:
    registry = JobRegistry()

    @registry.job("theirs.fail", queue="theirs")
    def fail(payload: Nothing, ctx: object) -> None:
        raise Permanent("their own failure")

    settings = RuntimeSettings(redis_url=redis_url)
    job_id = Enqueuer(redis, settings).enqueue(fail, {})
    Worker(redis, registry, settings, queues=["theirs"]).run(burst=True)
    return job_id


def lasting_keys(redis: Redis) -> list[bytes]:
    """The keys without an expiry (locks and heartbeats come and go on their own)."""
    return sorted(k for k in redis.keys("*") if redis.ttl(k) == -1)


@pytest.mark.timeout(300)
def test_the_demo_keeps_to_itself_and_reports_cleanly(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    redis.set("theirs:marker", "1")
    theirs = someone_elses_dead_letter(redis, redis_url)
    before = lasting_keys(redis)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUMON_")}
    env.update(REDIS_URL=redis_url, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "chumon.demo"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert [line for line in out.splitlines() if len(line) > 100] == []
    assert theirs not in out and "their own failure" not in out and "theirs" not in out
    assert "notifications.dlq" in out  # its own bounced email
    assert " 1 refunds" not in out and "honcho exit" not in done.stderr
    assert "database 15 of REDIS_URL" in done.stderr
    assert "--keep" in done.stderr  # says how to keep the dashboard and metrics up
    assert lasting_keys(redis) == before  # nothing of ours touched, nothing of its own left here
    assert redis.get("theirs:marker") == b"1" and redis.llen("rq:queue:theirs.dlq") == 1
    assert list(tmp_path.iterdir()) == []  # no chumon-demo-* folder left
    databases = [Redis.from_url(url_with_db(redis_url, n)) for n in range(1, 16)]
    assert all(db.dbsize() == 0 for db in databases)  # its own database emptied again
