"""Scripts and the listener's XREAD sent on a pooled connection directly (workers/scripts.py,
workers/listener.py): same replies and errors as through redis-py's client, and a script cache
emptied under them is refilled."""

from __future__ import annotations

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from tests.apps import sample
from tests.support import wait_until, worker_thread
from workers import Enqueuer, RuntimeSettings, load_job
from workers.connection import connect
from workers.keys import Keys


def test_an_enqueue_after_script_flush_loads_the_script_again(
    redis: Redis, settings: RuntimeSettings
) -> None:
    client = connect(settings.redis_url)
    enqueuer = Enqueuer(client, settings)
    assert enqueuer.scripts._direct
    first = enqueuer.enqueue(sample.echo, {"text": "a"})
    redis.script_flush()
    second = enqueuer.enqueue(sample.echo, {"text": "b"})
    assert redis.lrange(Keys().queue("q"), 0, -1) == [first.encode(), second.encode()]


def test_a_script_error_is_raised_and_the_connection_serves_on(
    redis: Redis, settings: RuntimeSettings
) -> None:
    client = connect(settings.redis_url)
    enqueuer = Enqueuer(client, settings)
    with pytest.raises(ResponseError):
        enqueuer.scripts.run("enqueue", "not a plan")
    assert enqueuer.enqueue(sample.echo, {"text": "after"})


def test_a_client_that_retries_goes_through_redis_py(redis_url: str, settings: RuntimeSettings) -> None:
    retrying = Redis.from_url(redis_url, retry_on_timeout=True)  # redis-py's default client retries
    enqueuer = Enqueuer(retrying, settings)
    job_id = enqueuer.enqueue(sample.echo, {"text": "x"})
    assert not enqueuer.scripts._direct
    assert load_job(retrying, Keys(), job_id) is not None


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_listener_reads_each_signal_on_either_protocol(
    redis: Redis, redis_url: str, settings: RuntimeSettings, protocol: int
) -> None:
    """The listener follows the signal stream entry by entry (RESP2 replies are lists, RESP3's maps)."""
    client = Redis.from_url(redis_url, protocol=protocol)
    signal = Keys().signal("q")
    with worker_thread(client, sample.registry, settings, queues=["q"]) as worker:
        for text in ("one", "two"):
            job_id = Enqueuer(redis, settings).enqueue(sample.echo, {"text": text})
            last = redis.xrevrange(signal, count=1)[0][0].decode()
            wait_until(lambda last=last: worker.listener.streams[signal] == last, message="the signal read")
            wait_until(
                lambda job_id=job_id: (job := load_job(redis, Keys(), job_id)) and job.status == "finished",
                message=f"job {text} finished",
            )
