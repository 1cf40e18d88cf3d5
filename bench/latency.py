"""Single-job latency with an idle worker, measured from outside, the same way for every system.

One worker process serves the queue (``bench.child --serve``: no burst, stopped by SIGTERM).
For the run the harness turns on keyspace notifications (``CONFIG SET notify-keyspace-events``
with ``K``, ``z`` and ``h`` added; the old value is restored afterwards) and subscribes to the
key whose command records a job's completion (``Adapter.done_key`` and ``done_event``: a ZADD
to rq's or chumon's finished registry or bullmq's ``completed`` set, dramatiq's HDEL of the
acked message). Then, job after job: sleep a random gap (uniform, a few milliseconds, so the
worker is idle when the job comes), note the time, enqueue one no-op job with the system's
one-by-one call, and wait for the notification. Latency = arrival of the notification minus
the time noted before the enqueue call: the enqueue call, the worker's wake-up, claim, run
and completion, and the notification's delivery (the same for every system). Warm-up jobs
first, not counted; they also show that the worker is serving.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from redis import Redis

from bench import T0_KEY
from bench.drain import Case, Child, RunFailed
from bench.eventlog import percentile
from bench.redisenv import RedisEnv
from bench.systems import Adapter
from chumon.progress import Progress

NOTIFY_FLAGS = "Kzh"  # keyspace channel, sorted-set and hash commands
WARMUP = 10
JOB_TIMEOUT = 10.0


@dataclass
class Latencies:
    case: Case
    ms: list[float]

    def percentile(self, p: float) -> float:
        return percentile(sorted(self.ms), p)

    def as_dict(self) -> dict[str, object]:
        return {
            "system": self.case.label,
            "jobs": len(self.ms),
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.ms), 3),
        }


class Notifications:
    """Keyspace notifications for one key, on for as long as the block lasts."""

    def __init__(self, env: RedisEnv, key: str) -> None:
        self.env = env
        self.old = str(env.redis.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
        wanted = self.old + "".join(flag for flag in NOTIFY_FLAGS if flag not in self.old)
        env.redis.config_set("notify-keyspace-events", wanted)
        db = env.redis.connection_pool.connection_kwargs.get("db", 0)
        self.client = Redis.from_url(env.url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(f"__keyspace@{db}__:{key}")

    def wait_for(self, event: str, timeout: float) -> float:
        """The perf_counter time at which ``event`` on the key arrived; RunFailed after ``timeout``."""
        deadline = time.monotonic() + timeout
        wanted = event.encode()
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message.get("data") == wanted:
                return time.perf_counter()
        raise RunFailed(f"no {event} notification within {timeout:g} s")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()
        self.env.redis.config_set("notify-keyspace-events", self.old)


def wait_until_serving(env: RedisEnv, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while env.redis.get(T0_KEY) is None:
        if child.exited():
            raise RunFailed(f"{child.case.label}: the worker exited at start: {child.stderr_tail()}")
        if time.monotonic() > deadline:
            raise RunFailed(f"{child.case.label}: the worker did not start within {timeout:g} s")
        time.sleep(0.01)


def run_latency(
    env: RedisEnv, adapter: Adapter, case: Case, jobs: int, gap: tuple[float, float], label: str
) -> Latencies:
    """``jobs`` single no-op jobs, one at a time, through an idle serving worker."""
    env.flush()
    child = Child(case, env, 0, 600.0, serve=True)
    notifications: Notifications | None = None
    progress = Progress(jobs, label)
    ms: list[float] = []
    try:
        wait_until_serving(env, child)
        notifications = Notifications(env, adapter.done_key)
        for i in range(WARMUP + jobs):
            time.sleep(random.uniform(*gap))
            started = time.perf_counter()
            adapter.add_each("noop", range(i, i + 1))
            try:
                arrived = notifications.wait_for(adapter.done_event, JOB_TIMEOUT)
            except RunFailed as exc:
                raise RunFailed(f"{case.label}: job {i}: {exc}; worker: {child.stderr_tail()}") from None
            if i >= WARMUP:
                ms.append((arrived - started) * 1000)
                progress.update(len(ms))
        child.terminate()
        child.finish()
    finally:
        progress.close()
        if notifications is not None:
            notifications.close()
        child.close()
    return Latencies(case, ms)
