"""Single-job latency with an idle worker, measured from outside, the same way for every system.

One worker process per system serves its queue (``bench.child --serve``: no burst, stopped by
SIGTERM), all at once, rq on a queue of its own (``RQ_QUEUE``: rq and chumon share rq's key
layout). For the run the harness turns on keyspace notifications (``CONFIG SET
notify-keyspace-events`` with ``K``, ``z`` and ``h`` added; the old value is restored
afterwards) and subscribes to the key whose command records a job's completion, for each
system (``Adapter.done_key`` and ``done_event``: a ZADD to rq's or chumon's finished registry
or bullmq's ``completed`` set, dramatiq's HDEL of the acked message).

Then job after job, the systems taking turns in an order that rotates: sleep a random gap
(uniform, a few milliseconds, so that every worker is idle when its job comes), note the time,
enqueue one no-op job with the system's one-by-one call, and wait for its notification.
Latency = the notification's arrival minus the time noted before the enqueue call: the
enqueue call, the worker's wake-up, claim, run and completion, and the notification's
delivery (the same for every system). Taking turns job by job puts a slow spell of a shared
machine on every system alike. Warm-up jobs first, not counted; they also show that each
worker is serving.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from redis import Redis

from bench.drain import Case, Child, RunFailed
from bench.eventlog import percentile
from bench.redisenv import RedisEnv
from bench.systems import Adapter
from chumon.progress import Progress

NOTIFY_FLAGS = "Kzh"  # keyspace channel, sorted-set and hash commands
RQ_QUEUE = "bench-rq"
WARMUP = 10
JOB_TIMEOUT = 10.0
START_TIMEOUT = 60.0  # the first warm-up job waits for its worker to start


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
    """Keyspace notifications for some keys, on for as long as the block lasts."""

    def __init__(self, env: RedisEnv, keys: list[str]) -> None:
        self.env = env
        self.old = str(env.redis.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
        wanted = self.old + "".join(flag for flag in NOTIFY_FLAGS if flag not in self.old)
        env.redis.config_set("notify-keyspace-events", wanted)
        db = env.redis.connection_pool.connection_kwargs.get("db", 0)
        self.channels = {key: f"__keyspace@{db}__:{key}".encode() for key in keys}
        self.client = Redis.from_url(env.url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(*self.channels.values())

    def wait_for(self, key: str, event: str, timeout: float) -> float:
        """The perf_counter time at which ``event`` on ``key`` arrived; RunFailed after ``timeout``."""
        deadline = time.monotonic() + timeout
        channel, wanted = self.channels[key], event.encode()
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["channel"] == channel and message["data"] == wanted:
                return time.perf_counter()
        raise RunFailed(f"no {event} notification on {key} within {timeout:g} s")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()
        self.env.redis.config_set("notify-keyspace-events", self.old)


def one_job(notifications: Notifications, adapter: Adapter, child: Child, n: int, timeout: float) -> float:
    """Milliseconds from enqueueing job ``n`` to the notification that it is done."""
    started = time.perf_counter()
    adapter.add_each("noop", range(n, n + 1))
    try:
        arrived = notifications.wait_for(adapter.done_key, adapter.done_event, timeout)
    except RunFailed as exc:
        raise RunFailed(f"{child.case.label}: job {n}: {exc}; worker: {child.stderr_tail()}") from None
    return (arrived - started) * 1000


def run_latencies(
    env: RedisEnv, runs: list[tuple[Adapter, Case]], jobs: int, gap: tuple[float, float], label: str
) -> list[Latencies]:
    """``jobs`` single no-op jobs per system through idle serving workers, systems taking turns."""
    env.flush()
    children = [
        Child(case, env, 0, 600.0, serve=True, queue=RQ_QUEUE if case.system == "rq" else "")
        for _, case in runs
    ]
    notifications: Notifications | None = None
    progress = Progress(jobs * len(runs), label)
    measured: list[list[float]] = [[] for _ in runs]
    try:
        notifications = Notifications(env, [adapter.done_key for adapter, _ in runs])
        for (adapter, _), child in zip(runs, children, strict=True):
            for n in range(WARMUP):
                one_job(notifications, adapter, child, n, START_TIMEOUT if n == 0 else JOB_TIMEOUT)
        for n in range(WARMUP, WARMUP + jobs):
            shift = n % len(runs)
            for index in [*range(shift, len(runs)), *range(shift)]:
                time.sleep(random.uniform(*gap))
                adapter, child = runs[index][0], children[index]
                measured[index].append(one_job(notifications, adapter, child, n, JOB_TIMEOUT))
            progress.update((n - WARMUP + 1) * len(runs))
        for child in children:
            child.terminate()
        for child in children:
            child.finish()
    finally:
        progress.close()
        if notifications is not None:
            notifications.close()
        for child in children:
            child.close()
    return [Latencies(case, ms) for (_, case), ms in zip(runs, measured, strict=True)]
