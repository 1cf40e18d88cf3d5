"""Payload and result sizes: bounded, so that no script call carries (and holds Redis for) more
than a few megabytes. Before these limits a 600 MB payload reset the connection (the caller saw
"Connection reset by peer", as if Redis were down), and a 400 MB return value held Redis for
seconds: heartbeats timed out and a live worker was presumed dead."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from tests.apps import sample
from tests.support import run_burst
from workers import Enqueuer, PayloadTooLarge, RuntimeSettings, load_job
from workers.deadletter import DeadLetters
from workers.keys import Keys

KEYS = Keys()


def keys_and_values(redis: Redis) -> dict[bytes, bytes]:
    return {key: redis.dump(key) or b"" for key in redis.scan_iter()}


def test_a_payload_over_the_default_limit_is_refused_and_nothing_is_written(
    redis: Redis, settings: RuntimeSettings
) -> None:
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue(sample.echo, {"text": "before"})
    before = keys_and_values(redis)
    with pytest.raises(
        PayloadTooLarge, match=r"'t.echo' is 1.0 MiB of JSON, more than CHUMON_MAX_PAYLOAD_BYTES"
    ):
        enqueuer.enqueue(sample.echo, {"text": "x" * (1024 * 1024)})
    with pytest.raises(PayloadTooLarge):  # one too large among many: none of them
        enqueuer.enqueue_many(sample.echo, [{"text": "small"}, {"text": "é" * 600_000}, {"text": "small"}])
    assert keys_and_values(redis) == before
    enqueuer.enqueue(sample.echo, {"text": "x" * 1_000_000})  # under 1 MiB: taken


def test_the_limits_are_settings(redis: Redis, settings: RuntimeSettings) -> None:
    small = settings.model_copy(update={"max_payload_bytes": 2048})
    with pytest.raises(PayloadTooLarge, match=r"more than CHUMON_MAX_PAYLOAD_BYTES \(2 KiB\)"):
        Enqueuer(redis, small).enqueue(sample.echo, {"text": "x" * 3000})
    with pytest.raises(ValueError, match="less than or equal to 67108864"):
        RuntimeSettings(redis_url=settings.redis_url, max_result_bytes=65 * 1024 * 1024)


def test_a_result_over_the_limit_dead_letters_its_job_and_the_worker_serves_on(
    redis: Redis, settings: RuntimeSettings
) -> None:
    tight = settings.model_copy(update={"max_result_bytes": 4096})
    enqueuer = Enqueuer(redis, tight)
    big = enqueuer.enqueue(sample.echo, {"text": "x" * 10_000})
    fine = enqueuer.enqueue(sample.echo, {"text": "fine"})
    run_burst(redis, sample.registry, tight, concurrency=2)
    info = load_job(redis, KEYS, big)
    assert info.status == "failed" and info.attempt == 1
    assert info.failures[-1]["exc_type"] == "ResultTooLarge"
    assert "more than CHUMON_MAX_RESULT_BYTES (4 KiB)" in info.failures[-1]["message"]
    assert DeadLetters(redis, tight).ids("q") == [big]
    assert load_job(redis, KEYS, fine).result == {"text": "fine", "attempt": 1}


def script_calls(redis: Redis) -> int:
    stats = redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("fcall", "evalsha", "eval"))


def test_a_bulk_enqueue_is_cut_by_bytes_too(redis: Redis, settings: RuntimeSettings) -> None:
    enqueuer = Enqueuer(redis, settings)
    enqueuer.enqueue(sample.echo, {"text": "warm"})  # the script is loaded
    before = script_calls(redis)
    ids = enqueuer.enqueue_many(sample.echo, [{"text": str(i) * 600_000} for i in range(10)])
    assert script_calls(redis) - before == 2  # 6 MB of data: two calls of at most 4 MiB
    assert len(set(ids)) == 10 and redis.llen("rq:queue:q") == 11


def test_a_dead_letter_notice_carries_the_payload_unless_it_is_over_the_limit(
    redis: Redis, settings: RuntimeSettings
) -> None:
    """The hook's notice carries the dead job's payload and its failures: with a payload near
    the limit the notice is over it, and must still go out, or the dead letter could never be
    settled; a payload over the limit (written under a larger one, or by hand) is left out."""
    tight = settings.model_copy(update={"max_payload_bytes": 4096})
    loose = settings.model_copy(update={"max_payload_bytes": 65536})
    near = Enqueuer(redis, tight).enqueue(sample.permanent, {"text": "n" * 4000})
    over = Enqueuer(redis, loose).enqueue(sample.permanent, {"text": "o" * 10_000})
    run_burst(redis, sample.registry, tight, queues=["q", "hooks"])
    assert sorted(DeadLetters(redis, tight).ids("q")) == sorted([near, over])
    notices = {n["job_id"]: n for n in map(json.loads, redis.lrange("test:dead_letters", 0, -1))}
    assert notices[near]["payload"]["text"] == "n" * 4000
    assert notices[over]["payload"] is None and "is on the dead letter" in notices[over]["reason"]
