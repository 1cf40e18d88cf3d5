"""Job lifecycle events (CHUMON_JOB_EVENTS): written atomically with each state change, read by
a subscriber in another process, resumable from an id, capped. Real Redis, real workers."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from redis import Redis

from tests.apps import reporting
from tests.support import ChumonProcess, WorkerProcess, make_settings, run_burst, wait_until, worker_thread
from workers import EnqueueOptions, Enqueuer, JobEvents, RuntimeSettings
from workers.keys import Keys

APP = "tests.apps.reporting:registry"


def by_job(lines: str) -> dict[str, list[str]]:
    """The events a `chumon job events --follow --json` process printed, per job, in order."""
    seen: dict[str, list[str]] = defaultdict(list)
    for line in lines.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            seen[event["job_id"]].append(event["event"])
    return seen


def test_a_subscriber_in_another_process_sees_every_lifecycle_event(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_events=True)
    subscriber = ChumonProcess(redis_url, "job", "events", "--follow", "--json", job_events=1)
    workers: list[ChumonProcess] = []
    try:
        enqueuer = Enqueuer(redis, settings)
        napping = enqueuer.enqueue(reporting.nap, {"seconds": 30})
        first = WorkerProcess(redis_url, "--queues", "rq1", "--concurrency", "1", app=APP, job_events=1)
        workers.append(first)
        wait_until(lambda: "active" in by_job(subscriber.output).get(napping, []), timeout=60,
                   message="the long job to start")  # fmt: skip
        wait_until(
            lambda: redis.hget(Keys().job(napping), "attempt") == b"1",
            timeout=60,
            message="its worker to record that the handler began",
        )  # else it is handed back unstarted
        first.kill()  # the long job stalls; the next worker recovers it and runs it again
        ok = enqueuer.enqueue(reporting.steps, {"steps": 2})
        flaky = enqueuer.enqueue(reporting.steps, {"steps": 0, "fail_attempts": 1})
        dead = enqueuer.enqueue(reporting.fail_keep2, {"n": 1})
        later = enqueuer.enqueue(reporting.keep3, {"n": 2}, options=EnqueueOptions(delay=0.3))
        workers += [WorkerProcess(redis_url, "--queues", "rq1", app=APP, job_events=1) for _ in range(2)]
        expected = {
            ok: ["queued", "active", "progress", "progress", "completed"],
            flaky: ["queued", "active", "failed", "retrying", "active", "completed"],
            dead: ["queued", "active", "failed", "dead_lettered"],
            later: ["delayed", "active", "completed"],
        }
        wait_until(lambda: all(by_job(subscriber.output).get(j) == e for j, e in expected.items()),
                   timeout=60, message="every event of the short jobs")  # fmt: skip
        wait_until(lambda: len(by_job(subscriber.output).get(napping, [])) >= 6, timeout=60,
                   message="the long job's recovery")  # fmt: skip
        assert by_job(subscriber.output)[napping][:6] == [
            "queued", "active", "stalled", "failed", "retrying", "active",
        ]  # fmt: skip
    finally:
        for process in workers:
            process.stop()
        subscriber.stop()
        print(subscriber.output[-3000:], *(p.output[-3000:] for p in workers), sep="\n")


def test_events_resume_from_an_id(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_events=True)
    events = JobEvents(redis, settings)
    enqueuer = Enqueuer(redis, settings)
    first = enqueuer.enqueue(reporting.keep3, {"n": 1})
    run_burst(redis, reporting.registry, settings)
    seen = events.read("0")
    assert [e.event for e in seen] == ["queued", "active", "completed"]
    assert all(e.job_id == first and e.queue == "rq1" for e in seen)
    resume_at = seen[-1].id
    second = enqueuer.enqueue(reporting.steps, {"steps": 1})
    run_burst(redis, reporting.registry, settings)
    after = events.read(resume_at)
    assert [(e.event, e.job_id) for e in after] == [
        ("queued", second), ("active", second), ("progress", second), ("completed", second),
    ]  # fmt: skip
    assert after[2].progress == {"step": 1, "of": 1}
    assert events.read(after[-1].id) == []


def test_follow_blocks_until_an_event_comes(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_events=True)
    events = JobEvents(redis, settings)
    got: list[Any] = []
    with worker_thread(redis, reporting.registry, settings):
        job_id = Enqueuer(redis, settings).enqueue(reporting.keep3, {"n": 1})
        for event in events.follow("0", block=0.2, stop=lambda: len(got) >= 3):
            got.append((event.event, event.job_id))
    assert got == [("queued", job_id), ("active", job_id), ("completed", job_id)]


def test_the_stream_is_capped(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, job_events=True, job_events_max_length=100)
    Enqueuer(redis, settings).enqueue_many(reporting.keep3, [{"n": i} for i in range(300)])
    run_burst(redis, reporting.registry, settings)
    length = redis.xlen(Keys().events)
    assert 100 <= length < 300 + 100, length  # about the cap: MAXLEN ~ trims whole nodes


def test_no_events_while_they_are_off(redis: Redis, settings: RuntimeSettings) -> None:
    Enqueuer(redis, settings).enqueue(reporting.steps, {"steps": 2})
    run_burst(redis, reporting.registry, settings)
    assert not redis.exists(Keys().events)


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_job_events_beside_the_order_flow_never_touch_its_domain_events(
    redis: Redis, redis_url: str, style: str
) -> None:
    """The order scripts enqueue through the runtime's code: with job events on, every job event
    goes to the job-events stream and the domain-event stream holds domain events only."""
    from orders.keys import OrderKeys
    from tests.flow import running_flow

    with running_flow(redis, redis_url, style=style, job_events=True) as flow:
        order_id = flow.place(("TEA", 1))
        assert flow.settled(order_id).status.value == "CONFIRMED"
    domain = redis.xrange(OrderKeys().events)
    assert domain and all(b"type" in fields and b"event" not in fields for _, fields in domain)
    job_events = JobEvents(redis, RuntimeSettings(redis_url=redis_url)).read("0-0", count=10_000)
    kinds = {event.event for event in job_events}
    assert {"queued", "active", "completed"} <= kinds
